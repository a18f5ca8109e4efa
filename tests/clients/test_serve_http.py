"""`sound-generator serve --http-port P`: the seed README's HTTP call against the real server
process, whose note cache is the one the OSC side uses.

The server runs as a subprocess with a numpy tone generator (`bench.tone:make_sine`, no TensorFlow)
and `--record` (an internal clock instead of a sound card), so the test needs neither models
nor audio hardware. The OSC `/status` reply shows the HTTP notes in the shared cache.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import soundfile as sf
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

REPO = Path(__file__).resolve().parents[2]


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def osc_status(port: int) -> list:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        s.sendto(OscMessageBuilder("/status").build().dgram, ("127.0.0.1", port))
        reply = OscMessage(s.recvfrom(65536)[0])
    assert reply.address == "/status"
    return list(reply.params)


@pytest.mark.slow
def test_serve_answers_the_seed_readme_call_from_the_shared_cache(tmp_path: Path) -> None:
    http_port = free_tcp_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    server = subprocess.Popen(
        [sys.executable, "-m", "synth.cli", "serve", "--port", "0", "--http-port", str(http_port),
         "--record", str(tmp_path / "stream.wav"), "--generator-factory", "bench.tone:make_sine",
         "--voice-mode", "oneshot"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(l.rstrip() for l in server.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, "serve exited:\n" + "\n".join(lines)
            assert time.monotonic() < deadline, "serve did not come up:\n" + "\n".join(lines)
            osc = [m for l in lines if (m := re.search(r"listening for OSC on udp://[\d.]+:(\d+)", l))]
            if osc and any("Application startup complete" in l for l in lines):  # uvicorn's own log line
                break
            time.sleep(0.1)
        assert requests.get(f"http://127.0.0.1:{http_port}/health").json() == {"status": "ok"}
        osc_port = int(osc[0].group(1))

        # The seed README's call, with this server's URL.
        URL = f"http://127.0.0.1:{http_port}/sound"
        res = requests.post(URL, json={
            'velocity': 75,
            'pitch': 60,
            'source': 'acoustic',
            'qualities': ['bright', 'percussive'],
            'latent_sample': [0.] * 16
        })
        audio = json.loads(res.text)['audio']
        audio = np.squeeze(audio)

        assert res.status_code == 200
        assert audio.shape == (64000,)
        spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.size)))
        assert np.argmax(spectrum) * 16000 / audio.size == pytest.approx(261.63, abs=0.5)
        assert np.max(np.abs(audio)) == pytest.approx(0.5 * 75 / 127, rel=1e-3)

        voices, cache_notes, _, hits, misses, *_ = osc_status(osc_port)
        assert (cache_notes, misses) == (1, 1)  # the HTTP note sits in the OSC server's cache
        wav = requests.post(f"http://127.0.0.1:{http_port}/sound.wav", json={
            'velocity': 75, 'pitch': 60, 'source': 'acoustic', 'qualities': ['percussive', 'bright']})
        assert wav.status_code == 200
        from_wav, sample_rate = sf.read(io.BytesIO(wav.content), dtype="float32")
        assert sample_rate == 16000
        np.testing.assert_allclose(from_wav, audio, atol=1 / 32767 + 1e-6)
        _, cache_notes_after, _, hits_after, misses_after, *_ = osc_status(osc_port)
        assert (cache_notes_after, hits_after, misses_after) == (1, hits + 1, 1)  # served from the cache

        bad = requests.post(URL, json={"pitch": 60, "source": "brass"})
        assert (bad.status_code, bad.json()["field"]) == (422, "source")
        # Loopback by default: the HTTP API is not on the machine's other addresses.
        assert any("HTTP API on http://127.0.0.1:" in l for l in lines)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=20)
        reader.join(timeout=5)
    assert server.returncode == 0, "\n".join(lines)


@pytest.mark.slow
def test_a_taken_http_port_is_a_startup_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        http_port = taken.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
        done = subprocess.run(
            [sys.executable, "-m", "synth.cli", "serve", "--port", "0", "--http-port", str(http_port),
             "--record", str(tmp_path / "stream.wav"), "--generator-factory", "bench.tone:make_sine",
             "--voice-mode", "oneshot"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60,
        )
    assert done.returncode == 2, done.stdout
    assert f"--http-port: cannot listen on http://127.0.0.1:{http_port}" in done.stdout, done.stdout
    assert "HTTP API on" not in done.stdout  # only said once the port is ours
    assert "Traceback" not in done.stdout, done.stdout
