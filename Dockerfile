# sound-generator in a container: the HTTP API (POST /sound, as the original shipped) on port 80
# and the live OSC server on 9000/udp, with the trained weights in checkpoints/.
#
#   docker build -t sound-generator .
#   docker run --rm -it -p 80:80 -p 9000:9000/udp --name sound-generator sound-generator
#
# Exposed: 80/tcp (HTTP API) and 9000/udp (OSC). In a container the server must listen on 0.0.0.0,
# so anyone who reaches the published ports can play notes, change the timbre, fill the cache and
# request renders (serve logs a warning). Limit the senders with --allow (keep 127.0.0.1 for the
# HEALTHCHECK), or publish on the host's loopback only (-p 127.0.0.1:80:80 ...):
#
#   docker run --rm -it -p 80:80 -p 9000:9000/udp sound-generator \
#       sound-generator serve --host 0.0.0.0 --http-host 0.0.0.0 --http-port 80 \
#       --allow 127.0.0.1 172.17.0.0/16 192.168.1.0/24
#
# A container has no sound card: `serve` then starts a JACK dummy server (jackd2, installed
# below) and says so in its log, so OSC notes are rendered, cached and mixed but not heard; the
# HTTP API is unaffected. OSC replies go to the sender's address as Docker's NAT presents it.
FROM python:3.11-slim

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2

# The system libraries scripts/setup.sh installs for serving: PortAudio (sounddevice), JACK
# (its dummy driver is the fallback "sound card"), libsndfile (soundfile). jackd2 asks about
# real-time priority through debconf unless told not to, exactly as in setup.sh.
RUN echo "jackd2 jackd/tweak_rt_limits boolean false" | debconf-set-selections \
 && apt-get update \
 && apt-get install -y --no-install-recommends libportaudio2 jackd2 libsndfile1 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Dependencies first, from pyproject.toml alone, so code changes do not reinstall TensorFlow.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# The package and its weights. Installed editable, as scripts/setup.sh does, because the
# generator finds checkpoints/ next to the synth/ package. The last step fails the build if the
# weights are missing or do not load.
COPY synth ./synth
COPY osc_server ./osc_server
COPY bench ./bench
COPY checkpoints ./checkpoints
RUN pip install --no-deps -e . \
 && sound-generator --help > /dev/null \
 && python -c "from synth.generator import get_generator; print('model', get_generator().model_version)"

EXPOSE 80 9000/udp

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1/health', timeout=4)"

CMD ["sound-generator", "serve", "--host", "0.0.0.0", "--http-host", "0.0.0.0", "--http-port", "80"]
