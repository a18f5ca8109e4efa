"""The tests' OSC helpers (`msg`, `bundle`, a `Client` that collects replies), and the numpy
generator they play (`ToneGenerator`, `make`, `midi_hz`: bench/tone.py, shared with the benchmark)."""

from __future__ import annotations

import socket
import threading
import time

from pythonosc.osc_bundle_builder import OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from bench.tone import ToneGenerator, make, midi_hz  # noqa: F401 (the tests import them from here)


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
