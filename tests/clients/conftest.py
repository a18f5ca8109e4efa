"""Fixtures for the client tests: a private JACK server (dummy driver) and an OSC catcher."""

from __future__ import annotations

import socket
import time

import pytest
from pythonosc.osc_message import OscMessage

from bench.jack import JackDummy


@pytest.fixture
def jack_server():
    """A JACK server with the dummy driver under a private name; JACK clients of this process
    (and of subprocesses that inherit the environment) talk to it through JACK_DEFAULT_SERVER."""
    with JackDummy(48000, 256, prefix="sg-clients") as name:
        yield name


class OscCatcher:
    """A UDP socket on a loopback port that collects OSC messages (and can answer the sender)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def receive(self, count: int, timeout: float = 10.0) -> list[tuple[OscMessage, tuple[str, int]]]:
        """The next `count` messages with their senders; fails if they do not come in time."""
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            left = deadline - time.monotonic()
            assert left > 0, f"only {len(got)} of {count} OSC messages arrived: {[m.address for m, _ in got]}"
            self.sock.settimeout(left)
            try:
                data, sender = self.sock.recvfrom(65536)
            except socket.timeout:
                continue
            got.append((OscMessage(data), sender))
        return got

    def nothing_more(self, wait: float = 0.3) -> bool:
        self.sock.settimeout(wait)
        try:
            self.sock.recvfrom(65536)
        except socket.timeout:
            return True
        return False

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def osc_catcher():
    catcher = OscCatcher()
    yield catcher
    catcher.close()
