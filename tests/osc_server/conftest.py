"""Fixtures for the live server's tests.

`jack_dummy`  (module): a private JACK server with the dummy driver at 48 kHz / 256 frames
              (tests/jack_support.py: JackDummy); yields its name.
`live`        (module): a LiveServer with the numpy ToneGenerator, its sounddevice stream on that
              JACK server, a `Capture` client wired to the stream's output ports, and an OSC
              `Client`; see `Live`.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: jack_support
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from jack_support import Capture, JackDummy  # noqa: E402
from tone import Client, ToneGenerator  # noqa: E402

SR, BLOCK = 48000, 256


@pytest.fixture(scope="module")
def jack_dummy():
    with JackDummy(SR, BLOCK) as name:
        yield name


@dataclass
class Live:
    server: object
    generator: ToneGenerator
    capture: Capture
    client: Client

    def level_db(self, audio: np.ndarray) -> float:
        rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
        return 20 * np.log10(max(rms, 1e-12))

    def wait_silence(self, max_s: float = 3.0) -> int:
        """Wait until the output has been silent for 20 ms; returns the frame it was checked at."""
        deadline = time.monotonic() + max_s
        while True:
            f = self.capture.now()
            if np.max(np.abs(self.capture.read(f - 960, f))) < 1e-5:
                return f
            assert time.monotonic() < deadline, "output never went silent"
            time.sleep(0.02)

    def reset(self) -> None:
        c = self.client
        for m in (("/panic",), ("/gain", 0.0), ("/source", "acoustic"), ("/qualities",), ("/latent", *[0.0] * 16)):
            c.send_msg(*m)
        c.sync()
        self.wait_silence()
        with c._cond:
            c.replies.clear()


@pytest.fixture(scope="module")
def live(jack_dummy):
    import sounddevice as sd

    from osc_server.server import LiveServer, ServerConfig

    jack_devices = [i for i, d in enumerate(sd.query_devices())
                    if "JACK" in sd.query_hostapis(d["hostapi"])["name"] and d["max_output_channels"] > 0]
    assert jack_devices, f"PortAudio does not see the JACK server: {sd.query_hostapis()}"
    before = set()
    cap = Capture(jack_dummy)
    before = {p.name for p in cap.client.get_ports(is_audio=True, is_output=True)}
    gen = ToneGenerator()
    server = LiveServer(gen, ServerConfig(port=0, device=jack_devices[0], sample_rate=SR, blocksize=BLOCK,
                                          cache_mb=256, jack_fallback=False)).start()
    assert server.output.kind == "sounddevice"
    new_ports = [p.name for p in cap.client.get_ports(is_audio=True, is_output=True) if p.name not in before]
    assert new_ports, "the server's stream registered no JACK output port"
    for p in new_ports:
        cap.client.connect(p, cap.port)
    client = Client(server.address)
    yield Live(server, gen, cap, client)
    client.close()
    server.close()
    cap.close()
