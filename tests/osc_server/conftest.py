"""Fixtures for the live server's tests.

`jack_dummy`  (module): a private JACK server with the dummy driver at 48 kHz / 256 frames
              (bench/jack.py: JackDummy); yields its name.
`live`        (module): a LiveServer with the numpy ToneGenerator, its sounddevice stream on that
              JACK server, a `Capture` client wired to the stream's output ports, and an OSC
              `Client`; see `Live`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.jack import Capture, JackDummy, portaudio_jack_device  # noqa: E402
from tone import Client, ToneGenerator  # noqa: E402

SR, BLOCK = 48000, 256
TEST_RT_PRIORITY = 40


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

    def wait_silence(self, max_s: float = 3.0) -> int:
        """Wait until the output has been silent for 100 ms; returns the frame it was checked at."""
        deadline = time.monotonic() + max_s
        while True:
            f = self.capture.end_frame  # frames really captured (JACK's now() is an estimate)
            if np.max(np.abs(self.capture.read(f - 4800, f))) < 1e-5:
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
    """The server shares this process's GIL with the test: a test thread preempted by other work
    on the machine while holding it would stall the audio callback. So, where allowed, the test's
    threads that take the GIL run at a real-time priority below the server's (as the server's
    own threads do); on an idle machine this changes nothing."""
    from osc_server.audio import try_realtime

    main_rt = try_realtime(TEST_RT_PRIORITY)

    from osc_server.server import LiveServer, ServerConfig

    jack_device = portaudio_jack_device()
    cap = Capture(jack_dummy)
    before = {p.name for p in cap.client.get_ports(is_audio=True, is_output=True)}
    gen = ToneGenerator()
    server = LiveServer(gen, ServerConfig(port=0, device=jack_device, sample_rate=SR, blocksize=BLOCK,
                                          cache_mb=256, jack_fallback=False)).start()
    assert server.output.kind == "sounddevice"
    new_ports = [p.name for p in cap.client.get_ports(is_audio=True, is_output=True) if p.name not in before]
    assert new_ports, "the server's stream registered no JACK output port"
    for p in new_ports:
        cap.client.connect(p, cap.port)
    client = Client(server.address, realtime_priority=TEST_RT_PRIORITY)
    yield Live(server, gen, cap, client)
    client.close()
    server.close()
    cap.close()
    if main_rt:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
