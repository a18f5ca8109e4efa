"""Fixtures for the client tests: a private JACK server (dummy driver) and an OSC catcher."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid

import pytest
from pythonosc.osc_message import OscMessage


@pytest.fixture
def jack_server(monkeypatch: pytest.MonkeyPatch):
    """A JACK server with the dummy driver under a private name; JACK clients of this process
    (and of subprocesses that inherit the environment) talk to it through JACK_DEFAULT_SERVER."""
    assert shutil.which("jackd"), "jackd is not installed (scripts/setup.sh installs jackd2)"
    name = f"sg-clients-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen(
        ["jackd", "-n", name, "--no-realtime", "-d", "dummy", "-r", "48000", "-p", "256"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "JACK_NO_AUDIO_RESERVATION": "1"},
    )
    waited = subprocess.run(["jack_wait", "-s", name, "-w", "-t", "10"], capture_output=True, text=True)
    assert waited.returncode == 0 and proc.poll() is None, f"jackd did not start: {waited.stdout}{waited.stderr}"
    monkeypatch.setenv("JACK_DEFAULT_SERVER", name)
    monkeypatch.setenv("JACK_NO_START_SERVER", "1")
    yield name
    proc.terminate()
    proc.wait(timeout=10)


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
