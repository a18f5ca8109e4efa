"""The OSC transport facing the network: replies per sender, echoed text clipped, logs that are
rate-limited and never block the server, and `allow` (which senders are served at all)."""

from __future__ import annotations

import ipaddress
import io
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from pythonosc.osc_message import OscMessage

from osc_server import addresses as A
from osc_server.logs import ELLIPSIS, RepeatFilter, clip, install_nonblocking_logging
from osc_server.transport import OscTransport
from tone import msg

ROOT = Path(__file__).resolve().parents[2]


class StubEngine:
    """Answers every command with `/ok <command type>`."""

    def __init__(self):
        self.commands = []

    def handle(self, command, when, reply):
        self.commands.append(command)
        reply("/ok", type(command).__name__)


def udp_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(2.0)
    return s


def receive(s: socket.socket, timeout: float = 2.0) -> tuple[str, list] | None:
    s.settimeout(timeout)
    try:
        m = OscMessage(s.recv(65536))
    except socket.timeout:
        return None
    return m.address, list(m.params)


@pytest.fixture
def transport():
    engines = []

    def make(**kw) -> OscTransport:
        t = OscTransport(StubEngine(), "127.0.0.1", 0, realtime=False, **kw)
        engines.append(t)
        return t

    yield make
    for t in engines:
        t.sock.close()


# ---- a: /reply/port is per sender ------------------------------------------------------------------


def test_reply_port_applies_to_the_sender_not_to_its_whole_host(transport):
    t = transport()
    a, b, a_replies = udp_socket(), udp_socket(), udp_socket()
    try:
        t.handle_datagram(msg("/reply/port", a_replies.getsockname()[1]), a.getsockname())
        t.handle_datagram(msg("/status"), a.getsockname())
        t.handle_datagram(msg("/status"), b.getsockname())
        assert receive(a_replies) == ("/ok", ["Status"])  # a's replies go where a asked
        assert receive(b) == ("/ok", ["Status"])  # b, same host, still gets its own on its port
        assert receive(a_replies, 0.2) is None and receive(a, 0.2) is None
        assert t.reply_ports == {a.getsockname(): a_replies.getsockname()[1]}
        t.handle_datagram(msg("/reply/port", 0), a.getsockname())  # 0: back to the sending port
        t.handle_datagram(msg("/status"), a.getsockname())
        assert receive(a) == ("/ok", ["Status"])
        assert t.reply_ports == {}
    finally:
        for s in (a, b, a_replies):
            s.close()


def test_reply_ports_are_bounded(transport, monkeypatch):
    import osc_server.transport as T

    monkeypatch.setattr(T, "MAX_SENDERS", 8)
    t = transport()
    for i in range(20):
        t.handle_message("/reply/port", [9001], None, ("127.0.0.1", 20000 + i), lambda *a: None)
    assert len(t.reply_ports) == 8
    assert ("127.0.0.1", 20019) in t.reply_ports and ("127.0.0.1", 20000) not in t.reply_ports


# ---- b: echoed text is clipped ---------------------------------------------------------------------


def test_clip():
    assert clip("short") == "short"
    assert clip("x" * 200) == "x" * 200
    assert clip("x" * 60000) == "x" * 200 + ELLIPSIS
    assert clip(b"\x00" * 10, limit=5) == "b'\\x0" + ELLIPSIS


@pytest.mark.parametrize("packet", [
    pytest.param(msg("/" + "q" * 60000, 1), id="60KB-unknown-address"),
    pytest.param(msg("/source", "z" * 60000), id="60KB-string-argument"),
    pytest.param(b"garbage" * 8500, id="60KB-garbage"),
    pytest.param(b"/" + b"x" * 60000, id="60KB-unterminated-address"),
])
def test_error_replies_and_log_lines_echo_at_most_200_characters(transport, caplog, packet):
    t = transport()
    c = udp_socket()
    try:
        with caplog.at_level(logging.INFO, logger="osc_server.osc"):
            t.handle_datagram(packet, c.getsockname())
        address, args = receive(c)
        assert address == "/error" and len(args) == 2
        assert all(len(a) <= 200 + len(ELLIPSIS) for a in args), [len(a) for a in args]
        assert caplog.records and all(len(r.getMessage()) < 500 for r in caplog.records)
    finally:
        c.close()


# ---- c: repeated lines are rate-limited ------------------------------------------------------------


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def record(text: str, *args, level=logging.INFO, name="osc_server.osc") -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, text, args, None)


def test_repeat_filter_passes_the_first_five_then_sums_up_the_rest_when_the_window_ends():
    clock, summaries = FakeClock(), []
    f = RepeatFilter(burst=5, window_s=10.0, clock=clock, sink=summaries.append)
    passed = [f.filter(record("-> %s:%d /error %s", "127.0.0.1", 9000 + i, "? bad")) for i in range(100)]
    assert passed == [True] * 5 + [False] * 95
    # Other templates, levels and loggers are counted on their own.
    assert f.filter(record("another line %d", 1))
    assert f.filter(record("-> %s:%d /error %s", "h", 1, "x", level=logging.WARNING))
    assert f.filter(record("-> %s:%d /error %s", "h", 1, "x", name="other"))
    clock.t += 9.9
    assert not f.filter(record("-> %s:%d /error %s", "h", 1, "x"))  # same window
    assert summaries == []
    clock.t += 0.2
    f.flush()
    assert len(summaries) == 1
    s = summaries[0]
    assert (s.name, s.levelno) == ("osc_server.osc", logging.INFO)
    assert s.getMessage() == "-> %s:%d /error %s ... (96 similar lines suppressed)"
    assert f.suppressed == 96
    # A new window: five more pass.
    assert [f.filter(record("-> %s:%d /error %s", "h", 1, "x")) for _ in range(6)] == [True] * 5 + [False]
    f.flush()
    assert len(summaries) == 1  # this window has not ended
    clock.t += 10
    assert f.filter(record("something else"))  # a later record also closes ended windows
    assert summaries[-1].getMessage().endswith("... (1 similar lines suppressed)")
    assert len(summaries) == 2  # the templates that lost nothing are not summed up


def test_repeat_filter_tracks_a_bounded_number_of_templates():
    clock, summaries = FakeClock(), []
    f = RepeatFilter(burst=1, window_s=10.0, clock=clock, sink=summaries.append, max_keys=10)
    f.filter(record("first"))
    f.filter(record("first"))
    for i in range(100):
        f.filter(record(f"unique {i}"))
    assert len(f._windows) <= 10
    assert [s.getMessage() for s in summaries] == ["first ... (1 similar lines suppressed)"]


# ---- d: logging never blocks -----------------------------------------------------------------------


class BlockedHandler(logging.Handler):
    """A handler whose output is stuck (like a full pipe) until released."""

    def __init__(self):
        super().__init__()
        self.gate = threading.Event()
        self.lines: list[str] = []

    def emit(self, record):
        self.gate.wait()
        self.lines.append(self.format(record))


@pytest.fixture
def bare_root():
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    root.handlers = []
    root.setLevel(logging.INFO)
    yield root
    root.handlers = saved
    root.setLevel(level)


def test_nonblocking_logging_drops_instead_of_waiting_and_puts_the_handlers_back(bare_root):
    stuck = BlockedHandler()
    bare_root.addHandler(stuck)
    installed = install_nonblocking_logging(capacity=100, burst=5, window_s=10.0)
    try:
        log = logging.getLogger("osc_server.test")
        start = time.perf_counter()
        for i in range(20000):
            log.info("one template, line %d", i)  # the repeat filter lets a few through
            log.info(f"distinct template {i}")  # these all pass it, and fill the queue
        elapsed = time.perf_counter() - start
        assert elapsed < 5.0  # 40 000 records, never waiting on the stuck output
        assert installed.dropped > 19000
        assert installed.repeats.suppressed > 19000
    finally:
        stuck.gate.set()
        installed.stop()
    assert stuck in bare_root.handlers and installed.handler not in bare_root.handlers
    assert 5 <= len(stuck.lines) <= 102


def test_nonblocking_logging_writes_through_the_original_handler_with_repeats_summed_up(bare_root):
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s: %(message)s"))
    bare_root.addHandler(handler)
    installed = install_nonblocking_logging()
    log = logging.getLogger("osc_server.osc")
    for i in range(50):
        log.info("-> %s:%d /error %s", "127.0.0.1", i, "? not an OSC packet")
    installed.stop()  # flushes the queue and closes every window
    lines = out.getvalue().splitlines()
    assert lines[:5] == [f"osc_server.osc INFO: -> 127.0.0.1:{i} /error ? not an OSC packet" for i in range(5)]
    assert lines[5:] == ["osc_server.osc INFO: -> %s:%d /error %s ... (45 similar lines suppressed)"]
    assert handler in bare_root.handlers and installed.handler not in bare_root.handlers


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def osc_request(port: int, address: str, timeout: float) -> tuple[str, list] | None:
    s = udp_socket()
    try:
        s.sendto(msg(address), ("127.0.0.1", port))
        return receive(s, timeout)
    finally:
        s.close()


@pytest.mark.slow
def test_a_stderr_nobody_reads_never_stalls_the_osc_thread():
    """serve with stdout and stderr on pipes that are never read (64 KB each): 20 000 bad packets
    (each refused with an /error and, before the logs went through a queue, an INFO line written
    by the OSC thread itself), then /status must still be answered within 1 s."""
    port = free_udp_port()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{Path(__file__).parent}",
           "JACK_DEFAULT_SERVER": f"sg-none-{uuid.uuid4().hex[:8]}", "JACK_NO_START_SERVER": "1",
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "synth.cli", "serve", "--port", str(port), "--generator-factory", "tone:make",
         "--voice-mode", "oneshot", "--no-jack-fallback"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while osc_request(port, "/status", 0.5) is None:
            assert proc.poll() is None, f"serve exited ({proc.returncode})"
            assert time.monotonic() < deadline, "serve never answered /status"
        flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        flood.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 2**20)
        flood.bind(("127.0.0.1", 0))
        flood.settimeout(0.3)
        answered = 0

        def count_errors():  # the flood's /error replies: they show how far the server got
            nonlocal answered
            while True:
                try:
                    flood.recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    return
                answered += 1

        counter = threading.Thread(target=count_errors, daemon=True)
        counter.start()
        for i in range(20000):
            flood.sendto(b"garbage", ("127.0.0.1", port))
            if i % 250 == 249:
                time.sleep(0.005)  # a steady flood, mostly kept by the kernel's buffer rather than dropped
        # Wait for the server to work through the datagrams still queued in its socket (else the
        # kernel could drop /status for want of room): until its /error replies stop for 0.3 s.
        deadline, seen = time.monotonic() + 30, -1
        while answered != seen and time.monotonic() < deadline:
            seen = answered
            time.sleep(0.3)
        start = time.monotonic()
        reply = osc_request(port, "/status", 1.0)
        waited = time.monotonic() - start
        flood.close()
        assert reply is not None and reply[0] == "/status", \
            f"no /status reply within 1 s (waited {waited:.2f} s; {answered} of the 20000 bad packets answered)"
        assert answered > 1000
    finally:
        proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()


# ---- f: allow -------------------------------------------------------------------------------------


def test_allow_drops_senders_outside_the_networks_without_a_reply_and_logs_each_once(transport, caplog):
    t = transport(allow=(ipaddress.ip_network("127.0.0.0/8"), "10.1.0.0/16"))
    inside = udp_socket()
    try:
        t.handle_datagram(msg("/status"), inside.getsockname())
        assert receive(inside) == ("/ok", ["Status"])
        t.handle_datagram(msg("/status"), ("10.1.2.3", 40000))
        assert len(t.engine.commands) == 2
        with caplog.at_level(logging.INFO, logger="osc_server.osc"):
            for port in range(100):
                t.handle_datagram(msg("/note", 60, 100), ("192.168.1.7", 50000 + port))
                t.handle_datagram(b"garbage", ("192.168.1.8", 50000))
        assert len(t.engine.commands) == 2  # nothing reached the engine
        assert t.refused_senders == 200
        assert t.errors == 0 and t.received == 2  # no /error sent; only the served datagrams counted
        assert not t._repliers.get(("192.168.1.7", 50000))
        refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert len(refused) == 2 and "192.168.1.7" in refused[0] and "192.168.1.8" in refused[1]
    finally:
        inside.close()


def test_allow_empty_serves_everyone(transport):
    t = transport()
    t.handle_datagram(msg("/status"), ("192.168.1.7", 50000))  # reply sent to nowhere that answers
    assert len(t.engine.commands) == 1 and t.refused_senders == 0


def test_allow_refuses_the_real_socket_sender(transport):
    t = transport(allow=("10.0.0.0/8",))
    t.start()
    c = udp_socket()
    try:
        c.sendto(msg("/status"), t.address)
        assert receive(c, 0.5) is None
        deadline = time.monotonic() + 2
        while t.refused_senders == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert t.refused_senders == 1 and t.engine.commands == []
    finally:
        c.close()
        t._stop.set()
        t._thread.join(timeout=2)


def test_reply_error_arguments_are_strings(transport):
    """/error always carries (address, reason) strings: clip leaves non-strings alone."""
    t = transport()
    c = udp_socket()
    try:
        t.replier(c.getsockname())("/error", A.MALFORMED, "x" * 300)
        assert receive(c) == ("/error", ["?", "x" * 200 + ELLIPSIS])
    finally:
        c.close()
