"""The engine: timbre state, the note cache, render workers, and the bridge to the mixer.

    command (from the receiving thread) -> Engine.handle
        note on, cached  -> Mixer.note_on (sounds at the next block, or at its timetag's sample)
        note on, missing -> render queue -> worker -> generator.render -> cache -> Mixer.note_on

The generator is injected: any object with `model_version: str` and
`render(params: NoteParams, sample_rate: int) -> np.ndarray` (1-D float32, peak <= 1,
thread-safe). The server injects a `render_pool.RenderPool`, whose renders run in worker
processes, so no render holds this process's GIL; unit tests inject a numpy generator. Render
threads (one per worker) take jobs from a priority queue (live notes before pre-rendering); a
note already queued or rendering is never rendered twice: later requests wait on the same job.
The audio callback never sees any of this: it only receives finished arrays through the
mixer's deque.

Faults cost one note at most: whatever goes wrong while reading, rendering or writing a note is
caught for that note (its senders get one `/error`; a note rendered but not written to a
failing disk still plays from memory), and a render thread never dies.

Bounded work: `/prerender` requests go to one control thread, which runs one at a time; a newer
request (or a timbre change) supersedes the jobs of older ones that nobody plays. The same
thread answers `/sync` with an `/error` when its renders take longer than SYNC_TIMEOUT_S, and
runs the debounced auto pre-render. No thread is started per message.

`render_blocking(params, sample_rate)` is the same path for callers that want to wait (the
HTTP API): cache, then the shared queue, with a timeout.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

from osc_server import addresses as A
from osc_server.audio import IMMEDIATE, NEVER, RT_PRIORITY_HELPERS, Mixer, Stat, try_realtime
from osc_server.cache import NoteCache, note_key
from synth.params import VELOCITY_LAYERS, NoteParams
from synth.presets import Preset, PresetStore, morph

log = logging.getLogger("osc_server.engine")
render_log = logging.getLogger("osc_server.render")

Reply = Callable[..., None]  # reply(address, *args)
LIVE, PRERENDER = 0, 1
# MIDI velocity -> (the NSynth layer a note is rendered at, the gain that scales it to the velocity).
_VELOCITY = {v: (NoteParams(velocity=v).velocity_layer, NoteParams(velocity=v).velocity_gain) for v in range(1, 128)}
AUTO_PRERENDER_DELAY_S = 0.5
SYNC_TIMEOUT_S = 30.0  # /sync is answered with /error when earlier renders take longer than this
RENDER_WAIT_S = 90.0  # render_blocking (HTTP) gives up after this long: TimeoutError
CONTROL_TICK_S = 0.1  # the control thread's wake-up period when idle
SUPERSEDED = "superseded by a timbre change or a newer pre-render"
LIVE_READY_KEPT = 1024  # live note-ons remembered for their /ready


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
    epoch: int = -1  # the pre-render request that wants it; -1: a live request (never superseded)
    started: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    audio: np.ndarray | None = None
    error: str | None = None
    waiters: list = field(default_factory=list)
    callbacks: list = field(default_factory=list)
    reply_ready: Any = None


class Engine:
    def __init__(self, generator: Generator, mixer: Mixer, output: Any, cache: NoteCache,
                 workers: int = 2, realtime: bool = False, voices: Any = None):
        self.generator = generator
        # Live voices (osc_server.voices.LiveVoices): notes sound while held and follow bend,
        # pressure, the pedal and the timbre. None: 4 s one-shots from the cache.
        self.voices = voices
        # Live voices' pre-renders, by id: (reply, progress step, last done, last ok).
        self._warms: dict[int, list] = {}
        # Live note-ons by key, for /ready when the voice process computed a note's controls
        # (the newest LIVE_READY_KEPT; a note it knew already sends none, and its entry ages out).
        self._live_asked: OrderedDict[str, tuple] = OrderedDict()
        # (Their own lock, for both: not the render threads', which a note-on must not wait for.)
        self._live_lock = threading.Lock()
        if voices is not None:
            voices.on_warm = self._warm_progress
            voices.on_restart = self._warms_lost
            voices.on_ready = self._live_ready
        self.mixer = mixer
        self.output = output  # has sample_at(t_wall) -> sample index
        self.sample_rate = mixer.sample_rate
        self.cache = cache
        self.realtime = realtime  # render and control threads at RT_PRIORITY_HELPERS where allowed
        self.timbre = NoteParams()
        self._keys: dict[tuple[int, int], str] = {}  # (pitch, layer) -> cache key for the current timbre
        # (pitch, layer) -> NoteParams of the current timbre, its key computed (live voices: 0.1 ms
        # a note-on saved on the 2-core machine, in the path of a known note's first sound).
        self._voice_params: dict[tuple[int, int], NoteParams] = {}
        self._lock = threading.Lock()  # jobs, waiters, timbre epoch; never taken by the callback
        self._jobs: dict[str, _Job] = {}
        self._queue: queue.PriorityQueue = queue.PriorityQueue()
        self._seq = itertools.count()
        self._outstanding: set[int] = set()
        self._syncs: list[tuple[int, Any, Reply, float]] = []  # (seq, id, reply, deadline)
        self._waiting: dict[int, list[_Waiter]] = {}  # pitch -> notes waiting for a render
        # Bumped on each timbre change and each pre-render request: pre-render jobs of an older
        # epoch that nobody plays are skipped.
        self.epoch = 0
        self.rendering = 0
        self.renders_done = 0
        self.render_errors = 0
        self.superseded = 0
        self.gain_db = 0.0
        self.auto_prerender: tuple[int, int] | None = None  # (lo, hi): pre-render after timbre changes
        # Set by the server (--presets-dir); None: /preset/... messages are answered with /error.
        self.presets: PresetStore | None = None
        # The control thread's inputs: the newest pre-render request, and when the timbre settles.
        self._control = threading.Condition(threading.Lock())
        self._prerender_request: tuple[int, int, Reply, int] | None = None
        self._auto_due: float | None = None
        self._stop = threading.Event()
        self._workers = [threading.Thread(target=self._work, name=f"render-{i}", daemon=True)
                         for i in range(max(1, workers))]
        for w in self._workers:
            w.start()
        self._control_thread = threading.Thread(target=self._control_loop, name="engine-control", daemon=True)
        self._control_thread.start()
        self._handlers: dict[type, Callable[[Any, float | None, Reply], None]] = {
            A.NoteOn: lambda c, when, reply: self.note_on(c.pitch, c.velocity, when, reply),
            A.NoteOff: lambda c, when, reply: self.note_off(c.pitch, when),
            A.SetLatent: lambda c, when, reply: self._set_timbre(latent_sample=c.values),
            A.SetLatentOne: lambda c, when, reply: self._set_latent_one(c.index, c.value),
            A.SetSource: lambda c, when, reply: self._set_timbre(source=c.source),
            A.SetQualities: lambda c, when, reply: self._set_timbre(qualities=c.qualities),
            A.SetQuality: lambda c, when, reply: self._set_quality(c.quality, c.on),
            A.Prerender: lambda c, when, reply: self.request_prerender(c.lo, c.hi, reply),
            A.Panic: lambda c, when, reply: self.panic(),
            A.SetGain: lambda c, when, reply: self.set_gain_db(c.db),
            A.Status: lambda c, when, reply: reply("/status", *self.status_values()),
            A.Sync: lambda c, when, reply: self.sync(c.id, reply),
            A.PresetSave: lambda c, when, reply: self._preset_save(c.name, reply),
            A.PresetLoad: lambda c, when, reply: self._preset_load(c.name, reply),
            A.PresetList: lambda c, when, reply: self._preset_list(reply),
            A.PresetMorph: lambda c, when, reply: self._preset_morph(c.a, c.b, c.t, reply),
            A.Bend: lambda c, when, reply: self._live("/bend").bend(c.cents),
            A.NoteBend: lambda c, when, reply: self._live("/note/bend").note_bend(c.pitch, c.cents),
            A.Pressure: lambda c, when, reply: self._live("/pressure").pressure(c.value),
            A.NotePressure: lambda c, when, reply: self._live("/note/pressure").note_pressure(c.pitch, c.value),
            A.Sustain: lambda c, when, reply: self._live("/sustain").sustain(c.down),
            A.Mode: lambda c, when, reply: self._live("/mode").mode(c.mode),
            A.Glide: lambda c, when, reply: self._live("/glide").glide(c.ms),
        }

    def _live(self, address: str) -> Any:
        if self.voices is None:
            raise A.CommandError(address, "voice_mode: live control of sounding notes needs live voices "
                                          "(`serve`'s default); this server plays one-shots (--voice-mode oneshot)")
        return self.voices

    # ---- commands -----------------------------------------------------------------------
    def handle(self, command: Any, when: float | None, reply: Reply) -> None:
        """Act on one typed command; `when` is the bundle's Unix time (None: at once)."""
        handler = self._handlers.get(type(command))
        if handler is None:
            raise TypeError(f"no handler for {command!r}")
        handler(command, when, reply)

    def _target(self, when: float | None) -> int:
        if when is None:
            return IMMEDIATE
        ahead = when - time.time()
        if ahead > A.SCHEDULE_HORIZON_S:
            raise A.CommandError("", f"timetag: at most {A.SCHEDULE_HORIZON_S:g} s ahead, got {ahead:.1f} s")
        if ahead > 0 and self.mixer.n_scheduled >= self.mixer.max_pending:
            raise A.CommandError("", f"timetag: too many scheduled events (at most {self.mixer.max_pending})")
        target = self.output.sample_at(when)
        return target if target > self.mixer.block_start else IMMEDIATE

    def _set_latent_one(self, index: int, value: float) -> None:
        latent = list(self.timbre.latent_sample)
        latent[index] = value
        self._set_timbre(latent_sample=latent)

    def _set_quality(self, quality: str, on: bool) -> None:
        q = set(self.timbre.qualities)
        q.add(quality) if on else q.discard(quality)
        self._set_timbre(qualities=sorted(q))

    def _set_timbre(self, **changes: Any) -> None:
        timbre = self.timbre.replace(**changes)
        with self._lock:
            changed = timbre != self.timbre
            if changed:
                self.timbre = timbre
                self._keys = {}
                self._voice_params = {}
                self.epoch += 1
        if changed and self.voices is not None:
            self.voices.timbre(timbre)
        if changed and self.auto_prerender is not None:
            # Debounced: a knob sweep sends many messages; pre-render once it settles.
            with self._control:
                self._auto_due = time.monotonic() + AUTO_PRERENDER_DELAY_S
                self._control.notify()

    # ---- presets: small JSON files read and written on the receiving thread (< 1 KB each), never
    # on the audio callback; a refusal or a file error is a CommandError (-> /error).
    def _preset_call(self, address: str, action: Callable[[PresetStore], Any]) -> Any:
        if self.presets is None:
            raise A.CommandError(address, "presets: this server has no presets folder")
        try:
            return action(self.presets)
        except ValueError as e:  # PresetError: names the field
            raise A.CommandError(address, str(e)) from None
        except OSError as e:
            where = e.filename or self.presets.directory
            raise A.CommandError(address, f"presets_dir: {where}: {e.strerror or e}") from None

    def _preset_save(self, name: str, reply: Reply) -> None:
        timbre = self.timbre
        self._preset_call("/preset/save", lambda store: store.save(Preset.from_timbre(name, timbre)))
        log.info("saved preset %r", name)
        reply("/preset/saved", name)

    def _apply_preset(self, preset: Preset) -> None:
        self._set_timbre(source=preset.source, qualities=preset.qualities, latent_sample=preset.latent_sample)

    def _preset_load(self, name: str, reply: Reply) -> None:
        self._apply_preset(self._preset_call("/preset/load", lambda store: store.load(name)))
        reply("/preset/loaded", name)

    def _preset_list(self, reply: Reply) -> None:
        for args in A.preset_list_replies(self._preset_call("/preset/list", lambda store: store.list())):
            reply("/preset/list", *args)

    def _preset_morph(self, a: str, b: str, t: float, reply: Reply) -> None:
        ends = []
        for field_name, name in (("a", a), ("b", b)):
            try:
                ends.append(self._preset_call("/preset/morph", lambda store: store.load(name)))
            except A.CommandError as e:  # "name: no preset ..." -> "b: no preset ..."
                if e.reason.startswith("name:"):
                    raise A.CommandError(e.address, field_name + e.reason[len("name"):]) from None
                raise
        mixed = morph(ends[0], ends[1], t)
        self._apply_preset(mixed)
        reply("/preset/loaded", mixed.name)

    def _note(self, pitch: int, layer: int, timbre: NoteParams | None = None) -> tuple[str, NoteParams]:
        t = self.timbre if timbre is None else timbre
        params = NoteParams(pitch, layer, t.source, t.qualities, t.latent_sample)
        return note_key(params, self.sample_rate, self.generator.model_version), params

    def note_on(self, pitch: int, velocity: int, when: float | None, reply: Reply) -> None:
        target = self._target(when)
        layer, gain = _VELOCITY[velocity]
        if self.voices is not None:
            known = self._voice_params  # (before the timbre: a change replaces the timbre first)
            params = known.get((pitch, layer))
            if params is None:
                t = self.timbre
                params = known[(pitch, layer)] = NoteParams(pitch, layer, t.source, t.qualities, t.latent_sample)
                params.key  # noqa: B018 - computed now, kept with it
            with self._live_lock:
                asked = self._live_asked
                asked[params.key] = (pitch, layer, reply)
                asked.move_to_end(params.key)
                if len(asked) > LIVE_READY_KEPT:
                    asked.popitem(last=False)
            self.voices.note_on(pitch, params, gain, target)
            return
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
        if self.voices is not None:
            self.voices.note_off(pitch, target)
            return
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
        if self.voices is not None:
            self.voices.panic()

    def sync(self, sync_id: Any, reply: Reply) -> None:
        with self._lock:
            if self._outstanding:
                self._syncs.append((next(self._seq), sync_id, reply, time.monotonic() + SYNC_TIMEOUT_S))
                return
        reply("/synced", sync_id)

    def request_prerender(self, lo: int, hi: int, reply: Reply) -> None:
        """Pre-render the current timbre on the control thread; a newer request supersedes this one."""
        request = self._new_prerender(lo, hi, reply)
        with self._control:
            superseded, self._prerender_request = self._prerender_request, request
            self._control.notify()
        if superseded is not None:
            _safe_reply(superseded[2], "/prerender/done", 0)

    def _new_prerender(self, lo: int, hi: int, reply: Reply) -> tuple:
        with self._lock:
            self.epoch += 1
            return lo, hi, reply, self.timbre, self.epoch

    def _control_loop(self) -> None:
        if self.realtime:
            try_realtime(RT_PRIORITY_HELPERS)
        while not self._stop.is_set():
            with self._control:
                now = time.monotonic()
                if self._prerender_request is None and (self._auto_due is None or self._auto_due > now):
                    wait = CONTROL_TICK_S if self._auto_due is None else min(CONTROL_TICK_S, self._auto_due - now)
                    self._control.wait(max(0.0, wait))
                request, self._prerender_request = self._prerender_request, None
                auto = self._auto_due is not None and self._auto_due <= time.monotonic()
                if auto:
                    self._auto_due = None
            try:
                if request is not None:
                    self._prerender(*request)
                elif auto and self.auto_prerender is not None:
                    lo, hi = self.auto_prerender
                    self.prerender(lo, hi, lambda address, *args: render_log.debug("%s %s", address, args))
                self._expire_syncs()
            except Exception:  # noqa: BLE001 - the control thread must outlive any one request
                log.exception("engine control thread")

    def _expire_syncs(self) -> None:
        now = time.monotonic()
        with self._lock:
            expired = [s for s in self._syncs if s[3] <= now]
            if expired:
                self._syncs = [s for s in self._syncs if s[3] > now]
            pending = len(self._outstanding)
        for _, sync_id, reply, _ in expired:
            _safe_reply(reply, "/error", "/sync", f"id {sync_id}: timed out after {SYNC_TIMEOUT_S:g} s "
                                                  f"({pending} renders still outstanding)")

    def prerender(self, lo: int, hi: int, reply: Reply) -> None:
        """Queue the keyboard lo..hi x five velocity layers for the current timbre (superseding
        the jobs of earlier pre-renders that nobody plays), on the calling thread."""
        self._prerender(*self._new_prerender(lo, hi, reply))

    def _prerender(self, lo: int, hi: int, reply: Reply, timbre: NoteParams, epoch: int) -> None:
        with self._lock:
            stale = self._take_superseded_locked()
        for job in stale:
            self._finish(job, None, SUPERSEDED)
        notes = [self._note(p, layer, timbre) for p in range(lo, hi + 1) for layer in VELOCITY_LAYERS]
        total = len(notes)
        if self.voices is not None:
            # Live voices play no one-shots: a pre-render is each note's controls, computed in the
            # voice process (its networks), which reports the progress. (The one-shots rendered
            # too, before: 440 notes of 4 s for nobody, two cores' worth for seconds.)
            with self._live_lock:
                warm_id = next(self._seq)  # (a newer one supersedes it: the voice process ends it)
                self._warms[warm_id] = [reply, max(1, total // 20), -1, 0]
            render_log.info("pre-rendering %d notes for the live voices", total)
            self.voices.warm([params for _, params in notes], warm_id)
            return
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
            self._submit(key, params, self.sample_rate, PRERENDER, callback=landed, epoch=epoch,
                         ready_reply=reply)

    def _warm_progress(self, warm_id: int, done: int, total: int, ok: int) -> None:
        """A live pre-render's progress (the voice process's reader thread): /prerender/progress
        about every 5 %, and /prerender/done with the notes it computed."""
        with self._live_lock:
            entry = self._warms.get(warm_id)
            if entry is None:
                return
            reply, step, last, _ = entry
            entry[2], entry[3] = done, ok
            finished = done >= total
            if finished:
                del self._warms[warm_id]
        if finished:
            _safe_reply(reply, "/prerender/progress", total, total)
            _safe_reply(reply, "/prerender/done", ok)
        elif last < 0 or done // step != last // step:
            _safe_reply(reply, "/prerender/progress", done, total)

    def _live_ready(self, key: str) -> None:
        """The voice process computed the controls of a note played with this key: /ready."""
        with self._live_lock:
            asked = self._live_asked.pop(key, None)
        if asked is not None and asked[2] is not None:
            _safe_reply(asked[2], "/ready", asked[0], asked[1])

    def _warms_lost(self) -> None:
        """The voice process died: its pre-renders end with what they had computed."""
        with self._live_lock:
            lost, self._warms = self._warms, {}
        for reply, _, _, ok in lost.values():
            _safe_reply(reply, "/prerender/done", ok)

    def _take_superseded_locked(self) -> list[_Job]:
        """The queued pre-render jobs of older epochs that nobody waits for, marked started so
        that a render thread meeting their queue entries skips them; the caller finishes them
        (outside the lock) as superseded."""
        stale = [j for j in self._jobs.values() if not j.started and 0 <= j.epoch < self.epoch and not j.waiters]
        for j in stale:
            j.started = True
            del self._jobs[j.key]  # a note played from now on starts a job of its own
        return stale

    # ---- rendering ----------------------------------------------------------------------
    def _submit(self, key: str, params: NoteParams, sample_rate: int, priority: int, waiter=None,
                callback=None, epoch: int = -1, ready_reply: Reply | None = None) -> _Job:
        with self._lock:
            job = self._jobs.get(key)
            new = job is None
            if new:
                job = _Job(key, params, sample_rate, next(self._seq), priority, epoch)
                job.reply_ready = ready_reply
                self._jobs[key] = job
                self._outstanding.add(job.seq)
            if waiter is not None:
                job.waiters.append(waiter)
            if callback is not None:
                job.callbacks.append(callback)
            if epoch < 0 or priority < job.priority:
                job.epoch = -1  # a live request keeps the job alive whatever comes next
            elif job.epoch >= 0:
                job.epoch = max(job.epoch, epoch)  # wanted by the newest pre-render too
            requeue = new or priority < job.priority
            job.priority = min(job.priority, priority)
        if requeue:
            # The entry names the note, not the job: an entry left behind by a priority upgrade
            # must not keep a finished job's audio alive while it waits its turn.
            self._queue.put((priority, next(self._seq), key))
        return job

    def _work(self) -> None:
        if self.realtime:
            try_realtime(RT_PRIORITY_HELPERS)
        while not self._stop.is_set():
            key = self._queue.get()[2]
            if key is None:
                return
            with self._lock:
                job = self._jobs.get(key)
                if job is None or job.started:
                    continue  # a duplicate entry after a priority upgrade, or superseded
                job.started = True
                stale = 0 <= job.epoch < self.epoch and not job.waiters
                if stale:
                    del self._jobs[job.key]  # a note played from now on starts a job of its own
                else:
                    self.rendering += 1
            if stale:
                self._finish(job, None, SUPERSEDED)
                continue
            audio, error = None, None
            try:
                audio, error = self._render_job(job)
            except Exception as e:  # noqa: BLE001 - one note fails; the render thread goes on
                error = f"internal error: {type(e).__name__}: {e}"
                render_log.exception("render of %s failed", job.params)
            finally:
                with self._lock:
                    self.rendering -= 1
            try:
                self._finish(job, audio, error)
            except Exception:  # noqa: BLE001 - a reply or callback failed; the thread goes on
                render_log.exception("finishing the render of %s failed", job.params)

    def _render_job(self, job: _Job) -> tuple[np.ndarray | None, str | None]:
        """(audio, None) or (None, error text); the disk is only a cache: its faults never cost
        the note (the cache logs them and keeps the note in memory)."""
        t = time.perf_counter()
        try:
            cached = self.cache.get(job.key, count=False)
        except Exception:  # noqa: BLE001 - an unreadable cache is a miss
            render_log.exception("cache read of %s failed", job.params)
            cached = None
        if cached is not None:
            return cached, None
        try:
            audio = self._check(self.generator.render(job.params, job.sample_rate))
        except TimeoutError as e:
            return None, f"render timed out: {e}"
        except Exception as e:  # noqa: BLE001 - reported to the waiters and the log
            render_log.error("render of %s failed: %s: %s", job.params, type(e).__name__, e)
            return None, f"render failed: {type(e).__name__}: {e}"
        try:
            audio = self.cache.put(job.key, audio)
        except Exception:  # noqa: BLE001 - not stored: it still plays, from this array
            render_log.exception("cache write of %s failed", job.params)
            audio = np.array(audio, dtype=np.float32)
            audio.setflags(write=False)
        render_log.debug("rendered pitch %d vel %d in %.1f ms", job.params.pitch, job.params.velocity,
                         1e3 * (time.perf_counter() - t))
        return audio, None

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
            if self._jobs.get(job.key) is job:
                del self._jobs[job.key]
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
                self.render_errors += error is not None and error != SUPERSEDED
                self.superseded += error == SUPERSEDED
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
                    _safe_reply(w.reply, "/ready", w.pitch, w.velocity)
            elif w.reply is not None and error and id(w.reply) not in replied:
                replied.add(id(w.reply))  # one /error per sender and note
                _safe_reply(w.reply, "/error", "/note", f"pitch {w.pitch}: {error}")
        ready_reply = job.reply_ready
        if audio is not None and ready_reply is not None and id(ready_reply) not in replied:
            _safe_reply(ready_reply, "/ready", job.params.pitch, job.params.velocity)
        for cb in job.callbacks:
            try:
                cb(job)
            except Exception:  # noqa: BLE001 - one caller's callback must not cost the others
                log.exception("render callback failed")
        for _, sync_id, reply, _ in syncs:
            _safe_reply(reply, "/synced", sync_id)

    def render_blocking(self, params: NoteParams, sample_rate: int, timeout: float | None = None) -> np.ndarray:
        """Thread-safe: the note at exactly these parameters and rate, through the cache.
        Raises TimeoutError after `timeout` s (default RENDER_WAIT_S), RuntimeError if it failed."""
        timeout = RENDER_WAIT_S if timeout is None else timeout
        key = note_key(params, sample_rate, self.generator.model_version)
        audio = self.cache.get(key)
        if audio is not None:
            return audio
        job = self._submit(key, params, int(sample_rate), LIVE)
        if not job.done.wait(timeout):
            raise TimeoutError(f"the note was not rendered within {timeout:g} s "
                               f"({self.queued} renders queued)")
        if job.audio is None:
            raise RuntimeError(job.error or "render failed")
        return job.audio

    # ---- figures ------------------------------------------------------------------------
    def status_values(self) -> tuple:
        c = self.cache
        voices = self.mixer.n_voices + (self.voices.sounding if self.voices is not None else 0)
        return (voices, c.n_notes, round(c.n_bytes / 2**20, 3), c.hits, c.misses,
                self.queued, int(self.mixer.stats[Stat.UNDERRUNS]), float(self.gain_db), self.rendering)

    @property
    def queued(self) -> int:
        with self._lock:
            return sum(1 for j in self._jobs.values() if not j.started)

    def close(self) -> None:
        self._stop.set()
        with self._control:
            self._control.notify()
        for _ in self._workers:
            self._queue.put((99, next(self._seq), None))
        for w in self._workers:
            w.join(timeout=5)
        self._control_thread.join(timeout=5)


def _safe_reply(reply: Reply, address: str, *args: Any) -> None:
    """A reply that cannot fail the caller (a closed socket, a bad port: logged by the transport)."""
    try:
        reply(address, *args)
    except Exception:  # noqa: BLE001 - the note or sync is done either way
        log.exception("reply %s failed", address)
