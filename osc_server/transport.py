"""UDP transport: one receiving thread that parses each datagram and drives the engine.

Not python-osc's ThreadingOSCUDPServer (a thread per message) nor its Dispatcher (which sleeps
until a bundle's timetag): packets are decoded by `addresses.decode_packet`, timetags become
sample positions in the engine, and every refused message or malformed packet is answered
with `/error <address> <reason>` to the sender (or to the port it asked for with /reply/port,
which applies to that sender: its host and port). Echoed text (in /error and in the log) is cut
to 200 characters. With `allow` (IP networks), a datagram from any other address is dropped
unanswered, counted in `refused_senders`, and logged once per address.
Datagrams up to 64 KiB are read whole.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

from osc_server import addresses as A
from osc_server.access import address_allowed, networks
from osc_server.audio import RT_PRIORITY_OSC, try_realtime
from osc_server.logs import clip

log = logging.getLogger("osc_server.osc")

MAX_DATAGRAM = 65536
RECEIVE_BUFFER_BYTES = 4 * 2**20  # a burst of ~5000 small packets waits here, not dropped by the kernel
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux: above net.core.rmem_max, if permitted
# The receiving thread may run at real-time priority: after this long busy without a pause it
# sleeps briefly, so that a flood cannot trip the kernel's real-time throttling (which would
# stall the audio callback too).
MAX_BUSY_S, PAUSE_S = 0.05, 0.002
MAX_SENDERS = 4096  # bound of the per-sender tables (repliers, reply ports, allow decisions, refusals logged)


def _big_receive_buffer(sock: socket.socket, size: int) -> int:
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    if got < size:
        log.info("UDP receive buffer is %d KiB (raise net.core.rmem_max for bigger bursts)", got // 1024)
    return got


class OscTransport:
    def __init__(self, engine: Any, host: str = "127.0.0.1", port: int = 9000, realtime: bool = True,
                 allow: tuple = ()):
        self.engine = engine
        # Empty: every sender. Else ip networks (or their text); other senders are dropped.
        self.allow = networks(allow)
        self._allowed: dict[str, bool] = {}
        self._refused_logged: set[str] = set()
        self.refused_senders = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        _big_receive_buffer(self.sock, RECEIVE_BUFFER_BYTES)
        self.sock.bind((host, port))
        self.sock.settimeout(0.2)
        self.address = self.sock.getsockname()
        self.realtime = realtime
        self.realtime_ok: bool | None = None
        self.reply_ports: dict[tuple[str, int], int] = {}  # sender (host, port) -> its reply port
        self._repliers: dict[tuple[str, int], object] = {}
        self.received = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="osc-receive", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()

    def replier(self, sender: tuple[str, int]):
        """The reply function of one sender (the same object for every packet it sends)."""
        reply = self._repliers.get(sender)
        if reply is None:
            if len(self._repliers) > MAX_SENDERS:
                self._repliers.clear()
            reply = self._repliers[sender] = self._make_replier(sender)
        return reply

    def _make_replier(self, sender: tuple[str, int]):
        host, port = key = sender[0], sender[1]

        def reply(address: str, *args: Any) -> None:
            dest = (host, self.reply_ports.get(key) or port)
            if address == "/error":
                self.errors += 1
                args = tuple(clip(a) if isinstance(a, str) else a for a in args)
                log.info("-> %s:%d /error %s", dest[0], dest[1], " ".join(map(str, args)))
            try:
                self.sock.sendto(A.build(address, *args), dest)
            except OSError as e:
                log.warning("cannot reply %s to %s:%d: %s", address, dest[0], dest[1], e)

        return reply

    def _run(self) -> None:
        # A note's path to the sound card starts here: above ordinary processes when allowed.
        self.realtime_ok = try_realtime(RT_PRIORITY_OSC) if self.realtime else False
        busy_since = time.perf_counter()
        while not self._stop.is_set():
            t = time.perf_counter()
            if t - busy_since > MAX_BUSY_S:
                time.sleep(PAUSE_S)
                busy_since = time.perf_counter()
            try:
                data, sender = self.sock.recvfrom(MAX_DATAGRAM)
            except socket.timeout:
                busy_since = time.perf_counter()
                continue
            except ConnectionRefusedError:
                continue  # an ICMP error about an earlier reply: not ours to act on
            except OSError:
                if self._stop.is_set():
                    return
                raise
            if time.perf_counter() - t > 1e-4:  # recvfrom waited: the thread was idle
                busy_since = time.perf_counter()
            self._yield_to_audio()
            self.handle_datagram(data, sender)

    def _yield_to_audio(self) -> None:
        """While the audio callback is mid-block, let it keep the GIL (at most ~2 ms)."""
        mixer = getattr(self.engine, "mixer", None)
        for _ in range(40):
            if mixer is None or not mixer.busy:
                return
            time.sleep(0.00005)

    def allowed(self, host: str) -> bool:
        """Whether `allow` lets this sender's address in (decisions cached, bounded)."""
        ok = self._allowed.get(host)
        if ok is None:
            ok = address_allowed(host, self.allow)
            if len(self._allowed) >= MAX_SENDERS:
                self._allowed.clear()
            self._allowed[host] = ok
        return ok

    def handle_datagram(self, data: bytes, sender: tuple[str, int]) -> None:
        if self.allow and not self.allowed(sender[0]):
            self.refused_senders += 1
            if sender[0] not in self._refused_logged and len(self._refused_logged) < MAX_SENDERS:
                self._refused_logged.add(sender[0])
                log.warning("refused OSC from %s (not in --allow %s); further datagrams from it are dropped "
                            "silently", sender[0], clip(" ".join(map(str, self.allow))))
            return
        self.received += 1
        reply = self.replier(sender)
        try:
            items = A.decode_packet(data)
        except A.MalformedPacket as e:
            reply("/error", A.MALFORMED, str(e))
            return
        for item in items:
            self.handle_message(item.address, item.args, item.time, sender, reply)

    def handle_message(self, address: str, args: list, when: float | None, sender, reply) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("<- %s:%d %s %s%s", sender[0], sender[1], clip(address), clip(args),
                      "" if when is None else f" @{when:.6f}")
        try:
            command = A.parse_message(address, args)
            if isinstance(command, A.ReplyPort):
                key = (sender[0], sender[1])
                if command.port:
                    if key not in self.reply_ports and len(self.reply_ports) >= MAX_SENDERS:
                        self.reply_ports.pop(next(iter(self.reply_ports)))  # the oldest
                    self.reply_ports[key] = command.port
                else:
                    self.reply_ports.pop(key, None)
                return
            self.engine.handle(command, when, reply)
        except A.CommandError as e:
            reply("/error", e.address or address, e.reason)
        except Exception as e:  # noqa: BLE001 - a bug must not stop the receiving thread; it is logged and answered
            log.exception("error handling %s %s", clip(address), clip(repr(args)))
            reply("/error", address, f"internal error: {type(e).__name__}: {e}")
