"""Logging for the live server: short, rate-limited, and never blocking the threads that play.

- `clip(text)`: echoed text (an address, a reason, a bad packet) cut to 200 characters.
- `RepeatFilter`: the first few identical lines per window pass, the rest are counted and
  summed up in one line ("... (N similar lines suppressed)") when the window ends.
- `install_nonblocking_logging()`: the root logger's handlers move behind a bounded queue and a
  listener thread. Logging from the OSC, render or audio threads only formats the message and
  puts it on the queue (never waiting: when the queue is full the record is dropped and counted),
  so a stderr nobody reads (a full pipe) stalls only the listener thread, not the server.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import threading
import time
from typing import Callable

ELLIPSIS = "..."


def clip(text, limit: int = 200) -> str:
    """`text` (str() of anything) cut to `limit` characters, with an ellipsis when cut."""
    text = text if isinstance(text, str) else str(text)
    return text if len(text) <= limit else text[:limit] + ELLIPSIS


class RepeatFilter(logging.Filter):
    """Lets through the first `burst` records per (logger, level, message template) in a window of
    `window_s` seconds, then drops them; when that window ends, one record at the same logger and
    level says how many were dropped ("<template> ... (N similar lines suppressed)"), handed to
    `sink` (else dropped). Windows end when a later record or `flush()` sees their time is up.

    At most `max_keys` templates are tracked (the oldest is flushed first beyond it).
    """

    def __init__(self, burst: int = 5, window_s: float = 10.0, clock: Callable[[], float] = time.monotonic,
                 sink: Callable[[logging.LogRecord], None] | None = None, max_keys: int = 1024):
        super().__init__()
        self.burst = burst
        self.window_s = window_s
        self.clock = clock
        self.sink = sink
        self.max_keys = max_keys
        self.suppressed = 0  # in all, since start
        self._windows: dict[tuple, list] = {}  # key -> [start, passed, suppressed, logger name, level, template]
        self._next_end = float("inf")
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        now = self.clock()
        template = record.msg if isinstance(record.msg, str) else str(record.msg)
        key = (record.name, record.levelno, template)
        with self._lock:
            ended = self._ended(now) if now >= self._next_end else []
            w = self._windows.get(key)
            if w is None:
                if len(self._windows) >= self.max_keys:
                    ended.append(self._windows.pop(next(iter(self._windows))))
                self._windows[key] = [now, 1, 0, record.name, record.levelno, template]
                self._next_end = min(self._next_end, now + self.window_s)
                keep = True
            elif w[1] < self.burst:
                w[1] += 1
                keep = True
            else:
                w[2] += 1
                self.suppressed += 1
                keep = False
        self._emit(ended)
        return keep

    def flush(self, now: float | None = None) -> None:
        """Close the windows whose time is up (all of them with now=inf), reporting their drops."""
        now = self.clock() if now is None else now
        with self._lock:
            ended = self._ended(now) if now >= self._next_end else []
        self._emit(ended)

    def _ended(self, now: float) -> list:
        ended = [w for w in self._windows.values() if now - w[0] >= self.window_s]
        for w in ended:
            del self._windows[(w[3], w[4], w[5])]
        self._next_end = min((w[0] + self.window_s for w in self._windows.values()), default=float("inf"))
        return ended

    def _emit(self, ended: list) -> None:
        if self.sink is None:
            return
        for _, _, dropped, name, level, template in ended:
            if dropped:
                record = logging.LogRecord(name, level, __file__, 0, "%s ... (%d similar lines suppressed)",
                                           (clip(template), dropped), None)
                self.sink(record)


class DroppingQueueHandler(logging.handlers.QueueHandler):
    """A QueueHandler that never waits: a record that finds the queue full is dropped and counted."""

    def __init__(self, q: queue.Queue):
        super().__init__(q)
        self.dropped = 0

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1

    def put(self, record: logging.LogRecord) -> None:
        """Queue a record past this handler's filters (the repeat filter's summaries)."""
        self.enqueue(self.prepare(record))


class _Listener(logging.handlers.QueueListener):
    """Writes queued records to the original handlers; while idle it closes ended repeat windows
    and reports records dropped on a full queue."""

    IDLE_S = 0.5

    def __init__(self, q: queue.Queue, handler: DroppingQueueHandler, repeats: RepeatFilter, *handlers):
        super().__init__(q, *handlers, respect_handler_level=True)
        self.queue_handler = handler
        self.repeats = repeats
        self._reported_drops = 0

    def dequeue(self, block: bool):
        while True:
            try:
                return self.queue.get(timeout=self.IDLE_S)
            except queue.Empty:
                self.repeats.flush()
                dropped = self.queue_handler.dropped
                if dropped > self._reported_drops:
                    self.handle(logging.LogRecord(
                        "osc_server.logs", logging.WARNING, __file__, 0,
                        "%d log lines dropped: the log output could not keep up", (dropped - self._reported_drops,), None))
                    self._reported_drops = dropped

    def stop(self, timeout: float = 2.0) -> None:
        """Write what is queued and stop; gives up after `timeout` if the output is blocked."""
        if self._thread is None:
            return
        self.repeats.flush(float("inf"))
        try:
            self.queue.put(self._sentinel, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)
        self._thread = None


class NonBlockingLogging:
    """What `install_nonblocking_logging` set up; `stop()` puts the original handlers back."""

    def __init__(self, root: logging.Logger, original: list[logging.Handler], handler: DroppingQueueHandler,
                 repeats: RepeatFilter, listener: _Listener):
        self.root, self.original, self.handler, self.repeats, self.listener = root, original, handler, repeats, listener

    @property
    def dropped(self) -> int:
        return self.handler.dropped

    def stop(self, timeout: float = 2.0) -> None:
        self.listener.stop(timeout)
        if self.handler in self.root.handlers:
            self.root.removeHandler(self.handler)
            for h in self.original:
                self.root.addHandler(h)


def install_nonblocking_logging(capacity: int = 10000, burst: int = 5, window_s: float = 10.0) -> NonBlockingLogging:
    """Move the root logger's handlers (e.g. basicConfig's stderr stream) behind a bounded queue
    of `capacity` records written by a listener thread, with a RepeatFilter on the way in."""
    root = logging.getLogger()
    original = list(root.handlers)
    q: queue.Queue = queue.Queue(capacity)
    handler = DroppingQueueHandler(q)
    repeats = RepeatFilter(burst, window_s, sink=handler.put)
    handler.addFilter(repeats)
    listener = _Listener(q, handler, repeats, *original)
    for h in original:
        root.removeHandler(h)
    root.addHandler(handler)
    listener.start()
    return NonBlockingLogging(root, original, handler, repeats, listener)
