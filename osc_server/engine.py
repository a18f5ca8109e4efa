"""The engine: timbre state, the note cache, render workers, and the bridge to the mixer.

    command (from the receiving thread) -> Engine.handle
        note on, cached  -> Mixer.note_on (sounds at the next block, or at its timetag's sample)
        note on, missing -> render queue -> worker -> generator.render -> cache -> Mixer.note_on

The generator is injected: any object with `model_version: str` and
`render(params: NoteParams, sample_rate: int) -> np.ndarray` (1-D float32, peak <= 1,
thread-safe). Renders run on worker threads behind a priority queue (live notes before
pre-rendering); a note already queued or rendering is never rendered twice: later requests
wait on the same job. The audio callback never sees any of this: it only receives finished
arrays through the mixer's deque.

`render_blocking(params, sample_rate)` is the same path for callers that want to wait (the
HTTP API): cache, then the shared queue.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

from osc_server import addresses as A
from osc_server.audio import IMMEDIATE, NEVER, Mixer
from osc_server.cache import NoteCache, note_key
from synth.params import VELOCITY_LAYERS, NoteParams

log = logging.getLogger("osc_server.engine")
render_log = logging.getLogger("osc_server.render")

Reply = Callable[..., None]  # reply(address, *args)
LIVE, PRERENDER = 0, 1
# MIDI velocity -> (the NSynth layer a note is rendered at, the gain that scales it to the velocity).
_VELOCITY = {v: (NoteParams(velocity=v).velocity_layer, NoteParams(velocity=v).velocity_gain) for v in range(1, 128)}
AUTO_PRERENDER_DELAY_S = 0.5


class Generator(Protocol):
    model_version: str

    def render(self, params: NoteParams, sample_rate: int) -> np.ndarray: ...


@dataclass
class _Waiter:
    pitch: int
    gain: float
    target: int  # sample, or IMMEDIATE
    release_at: int = NEVER
    cancelled: bool = False
    reply: Reply | None = None
    velocity: int = 0


@dataclass
class _Job:
    key: str
    params: NoteParams
    sample_rate: int
    seq: int
    priority: int
    generation: int = -1
    started: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    audio: np.ndarray | None = None
    error: str | None = None
    waiters: list = field(default_factory=list)
    callbacks: list = field(default_factory=list)
    reply_ready: Any = None


class Engine:
    def __init__(self, generator: Generator, mixer: Mixer, output: Any, cache: NoteCache,
                 workers: int = 2):
        self.generator = generator
        self.mixer = mixer
        self.output = output  # has sample_at(t_wall) -> sample index
        self.sample_rate = mixer.sample_rate
        self.cache = cache
        self.timbre = NoteParams()
        self._keys: dict[tuple[int, int], str] = {}  # (pitch, layer) -> cache key for the current timbre
        self._lock = threading.Lock()  # jobs, waiters, timbre generation; never taken by the callback
        self._jobs: dict[str, _Job] = {}
        self._queue: queue.PriorityQueue = queue.PriorityQueue()
        self._seq = itertools.count()
        self._outstanding: set[int] = set()
        self._syncs: list[tuple[int, Any, Reply]] = []
        self._waiting: dict[int, list[_Waiter]] = {}  # pitch -> notes waiting for a render
        self.generation = 0  # bumped on each timbre change: stale pre-renders are skipped
        self.rendering = 0
        self.renders_done = 0
        self.render_errors = 0
        self.gain_db = 0.0
        self.auto_prerender: tuple[int, int] | None = None  # (lo, hi): pre-render after timbre changes
        self._auto_timer: threading.Timer | None = None
        self._stop = threading.Event()
        self._workers = [threading.Thread(target=self._work, name=f"render-{i}", daemon=True)
                         for i in range(max(1, workers))]
        for w in self._workers:
            w.start()

    # ---- commands -----------------------------------------------------------------------
    def handle(self, command: Any, when: float | None, reply: Reply) -> None:
        """Act on one typed command; `when` is the bundle's Unix time (None: at once)."""
        if isinstance(command, A.NoteOn):
            self.note_on(command.pitch, command.velocity, when, reply)
        elif isinstance(command, A.NoteOff):
            self.note_off(command.pitch, when)
        elif isinstance(command, A.SetLatent):
            self._set_timbre(latent_sample=command.values)
        elif isinstance(command, A.SetLatentOne):
            latent = list(self.timbre.latent_sample)
            latent[command.index] = command.value
            self._set_timbre(latent_sample=latent)
        elif isinstance(command, A.SetSource):
            self._set_timbre(source=command.source)
        elif isinstance(command, A.SetQualities):
            self._set_timbre(qualities=command.qualities)
        elif isinstance(command, A.SetQuality):
            q = set(self.timbre.qualities)
            q.add(command.quality) if command.on else q.discard(command.quality)
            self._set_timbre(qualities=sorted(q))
        elif isinstance(command, A.Prerender):
            # Listing and queueing hundreds of notes takes milliseconds: not on the receiving thread.
            threading.Thread(target=self.prerender, args=(command.lo, command.hi, reply), name="prerender",
                             daemon=True).start()
        elif isinstance(command, A.Panic):
            self.panic()
        elif isinstance(command, A.SetGain):
            self.set_gain_db(command.db)
        elif isinstance(command, A.Status):
            reply("/status", *self.status_values())
        elif isinstance(command, A.Sync):
            self.sync(command.id, reply)
        else:
            raise TypeError(f"no handler for {command!r}")

    def _target(self, when: float | None) -> int:
        if when is None:
            return IMMEDIATE
        ahead = when - time.time()
        if ahead > A.SCHEDULE_HORIZON_S:
            raise A.CommandError("", f"timetag: at most {A.SCHEDULE_HORIZON_S:g} s ahead, got {ahead:.1f} s")
        if ahead > 0 and self.mixer.n_pending >= self.mixer.max_pending:
            raise A.CommandError("", f"timetag: too many scheduled events (at most {self.mixer.max_pending})")
        target = self.output.sample_at(when)
        return target if target > self.mixer.block_start else IMMEDIATE

    def _set_timbre(self, **changes: Any) -> None:
        timbre = self.timbre.replace(**changes)
        with self._lock:
            changed = timbre != self.timbre
            if changed:
                self.timbre = timbre
                self._keys = {}
                self.generation += 1
        if changed and self.auto_prerender is not None:
            # Debounced: a knob sweep sends many messages; pre-render once it settles.
            if self._auto_timer is not None:
                self._auto_timer.cancel()
            self._auto_timer = threading.Timer(AUTO_PRERENDER_DELAY_S, self._auto_prerender)
            self._auto_timer.daemon = True
            self._auto_timer.start()

    def _auto_prerender(self) -> None:
        lo, hi = self.auto_prerender
        self.prerender(lo, hi, lambda address, *args: render_log.debug("%s %s", address, args))

    def _note(self, pitch: int, layer: int) -> tuple[str, NoteParams]:
        params = NoteParams(pitch, layer, self.timbre.source, self.timbre.qualities, self.timbre.latent_sample)
        return note_key(params, self.sample_rate, self.generator.model_version), params

    def note_on(self, pitch: int, velocity: int, when: float | None, reply: Reply) -> None:
        target = self._target(when)
        layer, gain = _VELOCITY[velocity]
        key = self._keys.get((pitch, layer))
        if key is None:
            key = self._note(pitch, layer)[0]
            self._keys[(pitch, layer)] = key
        audio = self.cache.get(key)
        if audio is not None:
            self.mixer.note_on(audio, gain, pitch, target)
            return
        params = self._note(pitch, layer)[1]
        waiter = _Waiter(pitch, gain, target, reply=reply, velocity=layer)
        with self._lock:
            self._waiting.setdefault(pitch, []).append(waiter)
        self._submit(key, params, self.sample_rate, LIVE, waiter=waiter)

    def note_off(self, pitch: int, when: float | None) -> None:
        target = self._target(when)
        with self._lock:
            now = self.mixer.block_start
            for w in self._waiting.get(pitch, ()):
                started = w.target == IMMEDIATE or w.target <= now  # a later scheduled note-on is not ours
                if target == IMMEDIATE:
                    w.cancelled = w.cancelled or started
                elif started or w.target <= target:
                    w.release_at = min(w.release_at, target)
        self.mixer.note_off(pitch, target)

    def set_gain_db(self, db: float) -> None:
        """The master gain (smoothed in the mixer; reported by /status)."""
        self.gain_db = float(db)
        self.mixer.set_gain_db(self.gain_db)

    def panic(self) -> None:
        with self._lock:
            for ws in self._waiting.values():
                for w in ws:
                    w.cancelled = True
            self._waiting.clear()
        self.mixer.panic()

    def sync(self, sync_id: Any, reply: Reply) -> None:
        with self._lock:
            if self._outstanding:
                self._syncs.append((next(self._seq), sync_id, reply))
                return
        reply("/synced", sync_id)

    def prerender(self, lo: int, hi: int, reply: Reply) -> None:
        """Queue the keyboard lo..hi x five velocity layers for the current timbre."""
        with self._lock:
            generation = self.generation
        notes = [self._note(p, layer) for p in range(lo, hi + 1) for layer in VELOCITY_LAYERS]
        total = len(notes)
        state = {"done": 0, "failed": 0}
        step = max(1, total // 20)
        state_lock = threading.Lock()

        def landed(job: _Job) -> None:
            with state_lock:
                state["done"] += 1
                state["failed"] += job.audio is None
                done, failed = state["done"], state["failed"]
            if done == total:
                reply("/prerender/progress", done, total)
                reply("/prerender/done", total - failed)
            elif done % step == 0:
                reply("/prerender/progress", done, total)

        todo = []
        for key, params in notes:
            if self.cache.contains(key):
                state["done"] += 1
            else:
                todo.append((key, params))
        render_log.info("pre-rendering %d notes (%d already cached)", len(todo), total - len(todo))
        reply("/prerender/progress", state["done"], total)
        if not todo:
            reply("/prerender/done", total)
            return
        for key, params in todo:
            self._submit(key, params, self.sample_rate, PRERENDER, callback=landed, generation=generation,
                         ready_reply=reply)

    # ---- rendering ----------------------------------------------------------------------
    def _submit(self, key: str, params: NoteParams, sample_rate: int, priority: int, waiter=None,
                callback=None, generation: int = -1, ready_reply: Reply | None = None) -> _Job:
        with self._lock:
            job = self._jobs.get(key)
            new = job is None
            if new:
                job = _Job(key, params, sample_rate, next(self._seq), priority, generation)
                job.reply_ready = ready_reply
                self._jobs[key] = job
                self._outstanding.add(job.seq)
            if waiter is not None:
                job.waiters.append(waiter)
            if callback is not None:
                job.callbacks.append(callback)
            if priority < job.priority or generation < 0:
                job.generation = -1  # a live request keeps the job alive whatever the timbre
            requeue = new or priority < job.priority
            job.priority = min(job.priority, priority)
        if requeue:
            self._queue.put((priority, next(self._seq), job))
        return job

    def _work(self) -> None:
        while not self._stop.is_set():
            item = self._queue.get()
            if item is None:
                return
            _, _, job = item
            if job is None:
                return
            with self._lock:
                if job.started:
                    continue  # a duplicate entry after a priority upgrade
                job.started = True
                stale = 0 <= job.generation != self.generation and not job.waiters
                if not stale:
                    self.rendering += 1
            if stale:
                self._finish(job, None, "superseded by a timbre change")
                continue
            audio, error = None, None
            t = time.perf_counter()
            cached = self.cache.get(job.key, count=False)
            if cached is not None:
                audio = cached
            else:
                try:
                    raw = self.generator.render(job.params, job.sample_rate)
                    audio = self._check(raw)
                except Exception as e:  # noqa: BLE001 - reported to the waiters and the log
                    error = f"render failed: {type(e).__name__}: {e}"
                    render_log.exception("render of %s failed", job.params)
                if audio is not None:
                    audio = self.cache.put(job.key, audio)
                    render_log.debug("rendered pitch %d vel %d in %.1f ms", job.params.pitch,
                                     job.params.velocity, 1e3 * (time.perf_counter() - t))
            with self._lock:
                self.rendering -= 1
            self._finish(job, audio, error)

    @staticmethod
    def _check(raw: Any) -> np.ndarray:
        audio = np.asarray(raw, dtype=np.float32)
        if audio.ndim != 1 or audio.size == 0:
            raise ValueError(f"generator returned shape {audio.shape}, expected 1-D audio")
        if not np.all(np.isfinite(audio)):
            raise ValueError("generator returned non-finite samples")
        peak = float(np.max(np.abs(audio)))
        if peak > 1.0:
            audio = audio / peak
        return audio

    def _finish(self, job: _Job, audio: np.ndarray | None, error: str | None) -> None:
        with self._lock:
            self._jobs.pop(job.key, None)
            self._outstanding.discard(job.seq)
            waiters, job.waiters = job.waiters, []
            for w in waiters:
                ws = self._waiting.get(w.pitch)
                if ws:
                    ws[:] = [x for x in ws if x is not w]
            first = min(self._outstanding, default=None)
            syncs = [s for s in self._syncs if first is None or s[0] < first]
            self._syncs = [s for s in self._syncs if not (first is None or s[0] < first)]
            if audio is not None or error:
                self.renders_done += audio is not None
                self.render_errors += error is not None and not error.startswith("superseded")
        job.audio, job.error = audio, error
        job.done.set()
        replied = set()
        now = [(audio, w.gain, w.pitch, w.release_at) for w in waiters
               if audio is not None and not w.cancelled and w.target == IMMEDIATE]
        if now:
            self.mixer.notes_on(now)  # together: the same note twice must start on the same sample
        for w in waiters:
            if audio is not None:
                if not w.cancelled and w.target != IMMEDIATE:
                    self.mixer.note_on(audio, w.gain, w.pitch, w.target, w.release_at)
                if w.reply is not None and id(w.reply) not in replied:
                    replied.add(id(w.reply))
                    w.reply("/ready", w.pitch, w.velocity)
            elif w.reply is not None and error:
                w.reply("/error", "/note", f"pitch {w.pitch}: {error}")
        ready_reply = getattr(job, "reply_ready", None)
        if audio is not None and ready_reply is not None and id(ready_reply) not in replied:
            ready_reply("/ready", job.params.pitch, job.params.velocity)
        for cb in job.callbacks:
            cb(job)
        for _, sync_id, reply in syncs:
            reply("/synced", sync_id)

    def render_blocking(self, params: NoteParams, sample_rate: int) -> np.ndarray:
        """Thread-safe: the note at exactly these parameters and rate, through the cache."""
        key = note_key(params, sample_rate, self.generator.model_version)
        audio = self.cache.get(key)
        if audio is not None:
            return audio
        job = self._submit(key, params, int(sample_rate), LIVE)
        job.done.wait()
        if job.audio is None:
            raise RuntimeError(job.error or "render failed")
        return job.audio

    # ---- figures ------------------------------------------------------------------------
    def status_values(self) -> tuple:
        c = self.cache
        return (self.mixer.n_voices, c.n_notes, round(c.n_bytes / 2**20, 3), c.hits, c.misses,
                self.queued, int(self.mixer.stats[3]), float(self.gain_db), self.rendering)

    @property
    def queued(self) -> int:
        with self._lock:
            return sum(1 for j in self._jobs.values() if not j.started)

    def close(self) -> None:
        if self._auto_timer is not None:
            self._auto_timer.cancel()
        self._stop.set()
        for _ in self._workers:
            self._queue.put((99, next(self._seq), None))
        for w in self._workers:
            w.join(timeout=5)
