"""Render processes: the generator runs outside the audio process, so no render can hold the GIL
that the audio callback needs.

    Engine render thread i --pipe: (job, params, rate)--> worker process i
                                                           generator.render(params, rate)
                                                           audio -> its shared-memory slot
                           <--pipe: ("ok", job, n) | ("error", job, text)--
    the thread copies n samples out of the slot (one memcpy, ~0.1 ms for a 4 s note at 48 kHz)

Why processes: a render thread in the audio process shares its GIL. TensorFlow and the numpy
synthesis release it in their kernels, but not in the Python between them, and on a busy 2-core
machine that cost whole blocks (the reliability issue measured 10-37 under-runs a minute while
playing chords during a pre-render). A process has its own interpreter; the audio process only
copies finished arrays.

- `RenderPool(factory, workers)`: `factory` is "module:function" returning a generator (an object
  with `model_version` and `render(params, sample_rate) -> 1-D float32`); each worker calls it
  once. The pool's `model_version` is the workers' (they must agree), and `render` has the
  generator's signature, so the engine takes a pool wherever it takes a generator.
- Workers start with the "spawn" method (a fresh interpreter: no TensorFlow state, no threads
  copied by fork), at a lower CPU priority than the audio process (`os.nice(WORKER_NICE)`), and
  ignore SIGINT (Ctrl-C reaches the whole process group; the server stops them itself).
- One job per worker at a time: the worker's slot is free whenever the parent sends it a job.
- A worker that dies (crash, OOM kill) is started again; the note it held is retried once, then
  `RenderCrashed` is raised (the engine answers `/error`). A render that takes longer than
  `render_timeout_s` kills the worker (`RenderTimeout`), which is then restarted.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
from multiprocessing import shared_memory
from typing import Any

import numpy as np

from osc_server.audio import normal_priority
from synth.fast_render import limit_compute_threads

log = logging.getLogger("osc_server.render")

DEFAULT_FACTORY = "synth.generator:get_generator"
WORKER_NICE = 10  # below the audio process: on a 2-core machine the mixer must win the CPU
# The largest note a slot holds: 8 s at 192 kHz (notes today are 4 s; rates up to 192 kHz).
SLOT_SAMPLES = 8 * 192_000
START_TIMEOUT_S = 180.0  # a factory may load TensorFlow (the shipped one: about 1 s, numpy only)
RENDER_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 5.0
# Compute threads per worker (TensorFlow's and OpenMP's pools; an environment variable already set
# wins). TensorFlow's default, one per core in each worker, kept both cores of the 2-core box busy
# during pre-renders and cost audio blocks (see BENCHMARKS.md).
WORKER_THREADS = 1


class RenderError(RuntimeError):
    """A render failed in the worker (the generator raised): the text says why."""


class RenderCrashed(RuntimeError):
    """The worker process died while rendering, twice."""


class RenderTimeout(TimeoutError):
    """The worker took longer than the pool's render timeout (it was killed and restarted)."""


def check_factory(spec: str) -> tuple[str, str]:
    """'module:function' -> (module, function); ValueError for anything else."""
    module, sep, name = str(spec).partition(":")
    if not sep or not module or not name:
        raise ValueError(f"generator factory: expected 'module:function', got {spec!r}")
    return module, name


def load_factory(spec: str):
    """'module:function' -> the function."""
    module, name = check_factory(spec)
    return getattr(importlib.import_module(module), name)


def _worker_main(conn, slot_name: str, slot_samples: int, factory: str, nice: int, threads: int) -> None:
    """A worker process: load the generator once, then render jobs into the slot."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    normal_priority()  # a restart is started from a real-time render thread: not inherited
    if nice:
        try:
            os.nice(nice)
        except OSError:
            pass  # not permitted: run at the parent's priority
    slot = shared_memory.SharedMemory(name=slot_name)
    # Attaching registers the segment with the resource tracker again; spawned children share
    # the parent's tracker, so that is a no-op, and the parent unlinks it at close.
    out = np.ndarray((slot_samples,), dtype=np.float32, buffer=slot.buf)
    limit_compute_threads(threads)  # before a factory that uses TensorFlow imports it
    try:
        generator = load_factory(factory)()
        conn.send(("hello", str(generator.model_version), os.getpid()))
    except Exception as e:  # noqa: BLE001 - reported to the parent, which refuses to start
        conn.send(("dead", f"{type(e).__name__}: {e}", os.getpid()))
        return
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            break  # the parent is gone
        if msg is None:
            break
        job_id, params, sample_rate = msg
        try:
            audio = np.asarray(generator.render(params, sample_rate), dtype=np.float32).reshape(-1)
            if audio.size > slot_samples:
                raise ValueError(f"note of {audio.size} samples is longer than the slot ({slot_samples})")
            out[: audio.size] = audio
            reply = ("ok", job_id, int(audio.size))
        except Exception as e:  # noqa: BLE001 - one note fails, the worker goes on
            reply = ("error", job_id, f"{type(e).__name__}: {e}")
        try:
            conn.send(reply)
        except (BrokenPipeError, OSError):
            break
    del out
    slot.close()


class _Worker:
    """One process, its pipe and its slot; used by one thread at a time."""

    def __init__(self, pool: "RenderPool", index: int):
        self.pool = pool
        self.index = index
        self.slot = shared_memory.SharedMemory(create=True, size=pool.slot_samples * 4)
        self.view = np.ndarray((pool.slot_samples,), dtype=np.float32, buffer=self.slot.buf)
        self.proc: Any = None
        self.conn: Any = None
        self.model_version: str | None = None
        self._job = 0
        self.restarts = 0

    def start(self) -> None:
        ctx = self.pool.ctx
        parent, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker_main, name=f"sound-generator-render-{self.index}",
                                args=(child, self.slot.name, self.pool.slot_samples, self.pool.factory,
                                      self.pool.nice, self.pool.threads), daemon=True)
        self.proc.start()
        child.close()
        self.conn = parent

    def wait_ready(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while not self.conn.poll(0.2):
            if not self.proc.is_alive():
                raise RuntimeError(f"render worker {self.index} exited while starting (code {self.proc.exitcode})")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"render worker {self.index} did not start within {timeout:g} s")
        try:
            kind, text, _pid = self.conn.recv()
        except (EOFError, OSError) as e:
            raise RuntimeError(f"render worker {self.index} exited while starting ({e})") from None
        if kind != "hello":
            raise RuntimeError(f"render worker {self.index} could not load the generator: {text}")
        self.model_version = text
        return text

    def restart(self) -> None:
        self.kill()
        self.restarts += 1
        log.warning("render worker %d restarted (%d so far)", self.index, self.restarts)
        self.start()
        version = self.wait_ready(self.pool.start_timeout_s)
        if version != self.pool.model_version:
            raise RuntimeError(f"render worker {self.index} came back with model {version}, "
                               f"expected {self.pool.model_version}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.pid is not None:
            if self.proc.is_alive():
                self.proc.kill()
            self.proc.join(timeout=STOP_TIMEOUT_S)
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def render(self, params: Any, sample_rate: int, timeout: float) -> np.ndarray:
        """One note; raises RenderError, RenderTimeout, or _Died (the caller restarts)."""
        self._job += 1
        job = self._job
        try:
            self.conn.send((job, params, int(sample_rate)))
        except (BrokenPipeError, OSError, AttributeError) as e:
            raise _Died(f"worker {self.index} is gone ({e})") from None
        deadline = time.monotonic() + timeout
        while True:
            try:
                ready = self.conn.poll(0.5)
            except (EOFError, OSError) as e:
                raise _Died(f"worker {self.index} is gone ({e})") from None
            if ready:
                break
            if not self.proc.is_alive():
                raise _Died(f"worker {self.index} died (exit code {self.proc.exitcode})")
            if time.monotonic() > deadline:
                self.kill()
                raise RenderTimeout(f"render took longer than {timeout:g} s")
        try:
            kind, got_job, value = self.conn.recv()
        except (EOFError, OSError) as e:
            raise _Died(f"worker {self.index} died (exit code {self.proc.exitcode}, {e})") from None
        if got_job != job:
            raise _Died(f"worker {self.index} answered job {got_job}, expected {job}")
        if kind == "error":
            raise RenderError(value)
        return self.view[:value].copy()

    def stop(self) -> None:
        if self.conn is not None:
            try:
                self.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        if self.proc is not None and self.proc.pid is not None:
            self.proc.join(timeout=STOP_TIMEOUT_S)
        self.kill()
        self.view = None
        self.slot.close()
        try:
            self.slot.unlink()
        except FileNotFoundError:
            pass


class _Died(Exception):
    pass


class RenderPool:
    """`workers` render processes behind the generator interface (module doc)."""

    def __init__(self, factory: str = DEFAULT_FACTORY, workers: int = 2, *,
                 start_timeout_s: float = START_TIMEOUT_S, render_timeout_s: float = RENDER_TIMEOUT_S,
                 nice: int = WORKER_NICE, slot_samples: int = SLOT_SAMPLES, threads: int = WORKER_THREADS):
        check_factory(factory)
        self.factory = factory
        self.n_workers = max(1, int(workers))
        self.start_timeout_s = start_timeout_s
        self.render_timeout_s = render_timeout_s
        self.nice = nice
        self.threads = int(threads)
        self.slot_samples = int(slot_samples)
        self.ctx = mp.get_context("spawn")
        self.model_version: str | None = None
        self.crashes = 0
        self._idle: queue.Queue = queue.Queue()
        self._workers: list[_Worker] = []
        self._closed = False
        try:
            for i in range(self.n_workers):
                w = _Worker(self, i)
                self._workers.append(w)
                w.start()
            versions = {w.wait_ready(start_timeout_s) for w in self._workers}
        except BaseException:
            self.close()
            raise
        if len(versions) != 1:
            self.close()
            raise RuntimeError(f"render workers disagree on the model version: {sorted(versions)}")
        self.model_version = versions.pop()
        for w in self._workers:
            self._idle.put(w)

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers if w.proc is not None]

    @property
    def restarts(self) -> int:
        return sum(w.restarts for w in self._workers)

    def render(self, params: Any, sample_rate: int) -> np.ndarray:
        """The note, rendered in a worker process (blocks this thread, not the GIL)."""
        if self._closed:
            raise RuntimeError("render pool is closed")
        worker = self._idle.get()
        try:
            for attempt in (1, 2):
                try:
                    return worker.render(params, sample_rate, self.render_timeout_s)
                except _Died as e:
                    self.crashes += 1
                    log.error("render worker %d crashed on %s (attempt %d): %s", worker.index, params, attempt, e)
                    if self._closed:
                        raise RenderCrashed("render pool closed") from None
                    worker.restart()
                except RenderTimeout:
                    worker.restart()
                    raise
            raise RenderCrashed("the render worker crashed twice on this note")
        finally:
            self._idle.put(worker)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        threads = [threading.Thread(target=w.stop, daemon=True) for w in self._workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=2 * STOP_TIMEOUT_S)
