#!/usr/bin/env bash
# Sets up sound-generator on a fresh Debian/Ubuntu machine. Idempotent: run it as often as you like.
#
# Installs (as root, or through sudo):
#   jackd2            JACK audio server (its dummy driver stands in for a sound card in tests)
#   libportaudio2     PortAudio, the audio I/O library under sounddevice
#   libfluidsynth3    FluidSynth, used to render the training data set
#   fluid-soundfont-gm  FluidR3_GM.sf2, the General MIDI SoundFont the data set is rendered from (MIT)
#   opl3-soundfont, csound-soundfont, fluidr3mono-gm-soundfont  the other General MIDI sets of the
#                     multi-set data set (`dataset build --sets debian`): OPL-3_FM_128M.sf2
#                     (CC-BY-SA-4.0), sf_GMbank.sf2 (public domain), FluidR3Mono_GM.sf3 (MIT).
#                     Never timgm6mb-soundfont or musescore-general-soundfont*: reserved for
#                     independent evaluation (the builder refuses them)
#   puredata-core     Pure Data (pd), to run the shipped patch headless in tests
#   puredata-gui, xvfb  Pd's GUI on a virtual X display: the patch's screenshot test
#   libsndfile1       WAV reading/writing under soundfile
#   python3-venv      to make the virtualenv
# and a virtualenv in .venv with this package and its Python dependencies (pip install -e '.[test]').
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="jackd2 libportaudio2 libfluidsynth3 fluid-soundfont-gm opl3-soundfont csound-soundfont fluidr3mono-gm-soundfont puredata-core puredata-gui xvfb libsndfile1 python3-venv"

missing=""
for p in $APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "setup: installing system packages:$missing"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    # jackd2 asks about real-time priority through debconf unless told not to.
    echo "jackd2 jackd/tweak_rt_limits boolean false" | $SUDO debconf-set-selections
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
else
    echo "setup: system packages already installed"
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating virtualenv .venv"
    "$PY" -m venv .venv
fi
stamp=".venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
    echo "setup: installing sound-generator and its Python dependencies into .venv"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[test,ray]'
    rm -f .venv/.installed-*
    touch "$stamp"
else
    echo "setup: .venv is up to date"
fi
echo "setup: done (activate with: source .venv/bin/activate)"
