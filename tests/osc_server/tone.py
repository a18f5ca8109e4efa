"""Test doubles: a numpy generator with the real generator's shape, and a small OSC client."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter

import numpy as np
from pythonosc.osc_bundle_builder import OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from synth.params import NoteParams


def midi_hz(pitch: float) -> float:
    return 440.0 * 2.0 ** ((pitch - 69) / 12)


class ToneGenerator:
    """4 s of a harmonic tone at the note's pitch: 1 ms attack, slow decay, level velocity/127.

    The latent knob 0 shifts the level a little so that timbres differ; `renders` counts calls.
    """

    model_version = "test-tone-1"

    def __init__(self, delay_s: float = 0.02):
        self.delay_s = delay_s
        self.renders: Counter = Counter()
        self._lock = threading.Lock()

    def render(self, params: NoteParams, sample_rate: int) -> np.ndarray:
        with self._lock:
            self.renders[params.key] += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        n = 4 * sample_rate
        t = np.arange(n) / sample_rate
        f0 = midi_hz(params.pitch)
        tone = np.zeros(n)
        for k, a in ((1, 1.0), (2, 0.3), (3, 0.15)):
            if k * f0 < sample_rate / 2:
                tone += a * np.sin(2 * np.pi * k * f0 * t)
        env = np.minimum(1.0, t / 0.001) * np.exp(-t / 3.0)
        level = 0.5 * params.velocity / 127 * (1 - 0.02 * params.latent_sample[0])
        return (level * env * tone / 1.45).astype(np.float32)


def make() -> ToneGenerator:
    """For `serve --generator-factory tone:make` in subprocess tests."""
    return ToneGenerator(delay_s=0.0)


def msg(address: str, *args) -> bytes:
    b = OscMessageBuilder(address=address)
    for a in args:
        b.add_arg(a)
    return b.build().dgram


def bundle(when: float, *messages: bytes) -> bytes:
    """A bundle with Unix-time timetag `when` holding already-built messages."""
    b = OscBundleBuilder(when)
    for m in messages:
        b.add_content(OscMessage(m))
    return b.build().dgram


class Client:
    """A UDP socket that sends to the server and collects its replies on a thread."""

    def __init__(self, server: tuple[str, int], realtime_priority: int | None = None):
        self.server = server
        self.realtime_priority = realtime_priority
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 2**20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.replies: list[tuple[str, list]] = []
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self):
        if self.realtime_priority is not None:
            from osc_server.audio import try_realtime

            self.realtime = try_realtime(self.realtime_priority)
        while not self._stop:
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, OSError):
                continue
            m = OscMessage(data)
            with self._cond:
                self.replies.append((m.address, list(m.params)))
                self._cond.notify_all()

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, self.server)

    def send_msg(self, address: str, *args) -> None:
        self.send(msg(address, *args))

    def wait_for(self, address: str, predicate=lambda args: True, timeout: float = 5.0) -> list:
        """Args of the first reply at `address` matching `predicate` (consumed); fails on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i, (a, args) in enumerate(self.replies):
                    if a == address and predicate(args):
                        del self.replies[i]
                        return args
                left = deadline - time.monotonic()
                assert left > 0, f"no {address} reply within {timeout} s; got {self.replies[-10:]}"
                self._cond.wait(left)

    def sync(self, timeout: float = 20.0) -> None:
        token = f"s{time.monotonic_ns()}"
        self.send_msg("/sync", token)
        self.wait_for("/synced", lambda a: a == [token], timeout)

    def take(self, address: str) -> list[list]:
        with self._cond:
            got = [args for a, args in self.replies if a == address]
            self.replies = [(a, args) for a, args in self.replies if a != address]
        return got

    def close(self):
        self._stop = True
        self._thread.join(timeout=1)
        self.sock.close()
