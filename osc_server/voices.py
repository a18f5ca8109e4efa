"""Live voices: a note sounds while its key is held, releases the way its timbre does, and
follows bend, pressure, the pedal and the timbre knobs while it sounds (`--voices stream`).

    server process (audio)                    voice process (this module's `_voice_main`)
    ----------------------                    -------------------------------------------
    engine --commands (pipe)--------------->  VoiceEngine: one HeldNote per voice (controls),
                                              one StreamingSynthBank for all voices, one
                                              StreamingReverb on their mix
    Mixer.render (the callback) <--ring-----  writes the mix into a shared-memory ring, a little
      adds ring[t0:t1] to its mix              ahead of what the callback reads

The voice process never shares a GIL with the callback: the callback copies samples that are
already there (`Mixer.attach_ring`) and publishes how far it has read; if the voice process is
late, the callback plays what is there and counts `Stat.STREAM_LATE`.

Timing. The ring is indexed by the mixer's absolute sample. The voice process keeps its writing
position LEAD samples (default: a frame and a block, `default_lead`) ahead of the reading position,
one decoder frame (8 ms) at a time. A note-on does not wait for that lead: the new voice's first frames are
rendered at once in a bank of their own, written into the part of the ring the callback has not
reached yet (from the next block on), with their reverb, and the voice is then handed over to the
main bank, phase and all (`StreamingSynthBank.copy_voice`). So a note starts in the next audio
block once its controls are known. They are kept per note (`NoteStart`, an LRU of
START_CACHE notes): a note played before starts without the networks; a new one waits for them
(tens of ms) on a worker thread, while the other voices play on.

Heads. Even a known note's start crosses two processes (the server's OSC thread, the pipe, the
voice process's next turn) before its samples are in the ring. So the voice process also keeps,
for the HEAD_SLOTS notes played last, the note's first HEAD_FRAMES frames (32 ms, dry, gain 1)
in a second shared-memory table, and tells the server which row holds which note. At a note-on
of such a note the server has the mixer play that row itself from its next block (`play_head`,
`Mixer.head_on`), from the sample within the first frame where the block falls, and sends the
voice process that start. The voice process renders the voice from the same sample, as it would
have anyway: the reverb hears all of it, and its dry samples come in as the head goes out
(complementary raised cosines over HEAD_XFADE_S), so the sum is the note the voice process alone
would have played, sample for sample, and a knob or note-off in those 32 ms is cross-faded in.
In poly mode, with no bend or pressure on. A note keeps one head per place in the pattern of
frame lengths (one at 48 kHz; five at 44.1 kHz, where frames are 353 or 352 samples).

Control changes (bend, pressure, timbre) take effect at the next frame the voice process
renders: within LEAD + one frame. A bend or pressure that reaches at most RETAKE_MAX_VOICES voices
goes a frame sooner: into the frame written last, rendered again (`VoiceEngine.retake`), which
has not been played yet. A timbre change runs the networks for every sounding note on the
worker thread, then cross-fades each note into it (`HeldNote.prepare_timbre`/`apply_timbre`).

A new voice's first frames, rendered at once into frames written already, go into the main
reverb as if they had come in their time (`StreamingReverb.add_past`): the live note is what
`sound-generator render --hold` writes, to -72 dB or better.

The voice's life lives here: note-on/off, the sustain pedal, stealing (the oldest voice fades out
over STEAL_FRAMES), `/panic`, mono mode with its note stack and glide. How a note sustains,
releases and follows bend, pressure and timbre is `synth.hold.HeldNote`'s, shared with
`sound-generator render --hold`.
"""

from __future__ import annotations

import gc
import logging
import math
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any

import numpy as np

from osc_server.audio import RT_PRIORITY_HELPERS, SWITCH_INTERVAL_S, normal_priority, try_realtime
from osc_server.render_pool import WORKER_THREADS, load_factory
from synth.fast_render import limit_compute_threads
from synth.models import DECODER_FRAME_RATE as FRAME_RATE

log = logging.getLogger("osc_server.voices")

RING_SAMPLES = 1 << 16  # 1.4 s at 48 kHz: far more than the lead
# Control words shared with the callback (int64): where the voice process has written up to,
# where the callback reads up to (set before it reads), whether the voice process runs, and
# figures for /status and the bench.
C_WRITE, C_READ, C_RUNNING, C_VOICES, C_LATE, C_FRAMES, C_BUSY_US, C_MAX_US, C_IN_CALLBACK, C_TORN, C_ORIGIN, \
    C_HEADS, C_RETAKES = range(13)
N_CONTROL = 16
# Default lead: the samples the voice process keeps written ahead of the callback (default_lead).
LEAD_FRAMES = 1.0
LEAD_EXTRA_FRAMES = 1.0  # more while timbre changes are worked on, and LATE_EXTRA_S after a late block
LATE_EXTRA_S = 2.0
STEAL_FRAMES = 2  # a stolen or panicked voice fades out over this many frames (16 ms)
STEAL_ROOM = 8  # bank slots beyond max_voices, for voices fading out
FADE_IN_S = 0.001  # a new voice's first samples, which may start inside its first frame
START_CACHE = 2048  # NoteStarts kept by the voice process (about 40 KB each)
# A voice's next decoder block is decoded up to PREFETCH_FRAMES frames before it is needed, for at
# most PREFETCH_PER_FRAME voices a frame (so 32 voices whose blocks fall due at the same frame are
# decoded over the 8 frames before it).
PREFETCH_FRAMES = 20
PREFETCH_PER_FRAME = 2
# Decoder windows of live voices: small, so that a note-off replans and re-decodes little.
LIVE_DECODE_BLOCK = 16
# Timbre changes applied per frame: applying one replans the note (0.2 ms; its level compensation
# comes computed from the networks process), and its re-decoding is spread like any urgent one
# (URGENT_PER_FRAME). One a frame made a 6-note chord's knob move take 180 ms to reach every
# note on the slow host; four, 143 ms.
TIMBRE_APPLY_PER_FRAME = 4
TIMBRE_EXTRA_S = 1.0  # (the re-decoding of the notes a timbre change moved, after it is applied)
# Fast playing: more than BUSY_STARTS voices started within BUSY_WINDOW_S keep the extra lead for
# BUSY_WINDOW_S more (a chord of 12-32 notes every 100 ms: frames of 12-28 ms of starts, commands
# and rendering, one after another; a frame of control latency is the better price than a gap).
BUSY_STARTS = 12
BUSY_WINDOW_S = 0.5
TIMBRE_JOB_TIMEOUT_S = 5.0  # a timbre change whose networks never answered (an error) stops holding later ones
URGENT_PER_FRAME = 4
# Work that can wait a frame (timbre changes, planning and decoding ahead) is done only while the
# frame's work so far has taken less than this, and not at all while the ring is short of its
# lead: what the next frame must have always comes first.
OPTIONAL_WORK_S = 0.003
# Voices started in one frame: more wait for the next once the frame's work has taken this long.
START_WORK_S = 0.004
# Commands handled before a frame that is due: the rest wait until it is written.
COMMAND_WORK_S = 0.0015
# Plan each voice's decoder inputs this far ahead, a frame at a time: what a prefetch decodes
# (PREFETCH_FRAMES + a block + the decoder's context) is then planned already.
PLAN_AHEAD_FRAMES = PREFETCH_FRAMES + LIVE_DECODE_BLOCK + 8
PLAN_BUDGET_FRAMES = 64  # frames planned a frame, all voices together (about 2 ms)
POLL_S = 0.0005
# `/prerender` in the voice process: its notes go to the networks this many at a time, the next
# once the last came back. All at once (440 notes for `/prerender 36 96`), the answer was 34 MB,
# and unpickling it held the GIL from the playing thread for 20-90 ms (slow frames, late blocks,
# under fast chords); and a note-on's own job waited behind all of them (2 s).
WARM_JOB_NOTES = 8
WARM_JOB_TIMEOUT_S = 5.0  # a chunk whose answer never came (an error) stops holding the next
# Retakes (`VoiceEngine.retake`): a bend or pressure that reaches at most RETAKE_MAX_VOICES
# voices renders the frame written last again, when that frame starts RETAKE_MARGIN_S or a block
# (the larger) past what the callback reads, at most RETAKES_PER_FRAME times a frame.
RETAKE_MAX_VOICES = 8
RETAKE_MARGIN_S = 0.003
RETAKES_PER_FRAME = 2
GC_EVERY_S = 0.05  # the voice process collects its young objects this often, between frames
SLOW_FRAME_S = 0.012  # a frame's work past this is reported (LiveVoices.errors, the server's log)
# The voice process's threads: SCHED_FIFO below the audio process's helpers (RT_PRIORITY_HELPERS,
# 50), above every ordinary process. At 55, above the helpers, it preempted a helper that held
# the audio process's GIL, and the callback waited for it (under-runs under fast chords: 26 in a
# minute against 7 of the one-shot server).
RT_PRIORITY_VOICES = 45
START_TIMEOUT_S = 120.0
# Heads: a known note's first HEAD_FRAMES frames (dry, gain 1), kept in shared memory, which the
# audio process's mixer plays itself at a note-on, in the next block, while the voice process
# starts the voice; the voice process's own samples of it come in over HEAD_XFADE_S before the
# head ends (complementary raised cosines, so that the sum is the voice as it would have been).
# At most HEAD_SLOTS notes, the most recently played (`head_geometry`: how many heads a note has).
HEAD_FRAMES = 4
HEAD_XFADE_S = 0.004
HEAD_SLOTS = 512
HEAD_REUSE_S = 1.0  # a dropped head's slot is reused after this (a note-on may still be reading it)
WET_FADE_S = 0.002  # a head voice's reverb, when the voice process starts it late, fades in


def head_geometry(sample_rate: int) -> tuple[int, int, int]:
    """(heads a note has, samples a head holds at most, samples of its cross-fade) at this rate.
    A note has one head for each place in the pattern of frame lengths (one at 48 kHz, where a
    frame is 384 samples; five at 44.1 kHz, frames of 353, 353, 353, 353 and 352 samples): the
    synthesis of a frame depends on its place (`synth.streaming.chunk_geometry`)."""
    sample_rate = int(sample_rate)
    return (FRAME_RATE // math.gcd(sample_rate, FRAME_RATE), HEAD_FRAMES * -(-sample_rate // FRAME_RATE),
            max(1, int(round(HEAD_XFADE_S * sample_rate))))


class VoiceProcessError(RuntimeError):
    """The voice process could not start (its generator failed to load)."""


# ---------------------------------------------------------------------------------------------
# Server side.


def default_lead(sample_rate: int, blocksize: int) -> int:
    """The samples the voice process keeps written ahead of the callback's reading position: a
    frame and a block (640 at 48 kHz with 256-sample blocks).

    The writer renders the next frame as soon as fewer than `lead` samples are written ahead. A
    lead rounded down to whole blocks (512) gives the frame due soonest the same two blocks to be
    rendered in and brings every control change 2.7 ms nearer, but it was tried and taken back:
    the other half of the frames lose a block of slack, and the idle server then had late blocks
    (3 a minute in one run of two; BENCHMARKS.md, "A shorter lead")."""
    return math.ceil(LEAD_FRAMES * sample_rate / FRAME_RATE) + int(blocksize)


class LiveVoices:
    """The server's handle on the voice process: starts it, owns the ring, sends commands.

    Any thread may call the command methods (a lock serialises the pipe); the callback reads the
    ring through `Mixer.attach_ring(self.ring, self.control)`.
    """

    def __init__(self, factory: str, sample_rate: int, max_voices: int = 32, blocksize: int = 256,
                 lead_samples: int | None = None, realtime: bool = False, threads: int = WORKER_THREADS):
        self.sample_rate = int(sample_rate)
        self.max_voices = int(max_voices)
        frame = self.sample_rate / FRAME_RATE
        self.lead_samples = int(lead_samples if lead_samples is not None else default_lead(self.sample_rate, blocksize))
        self.lead_extra = int(math.ceil(LEAD_EXTRA_FRAMES * frame))
        self._shm = shared_memory.SharedMemory(create=True, size=RING_SAMPLES * 4 + N_CONTROL * 8)
        self.ring = np.ndarray((RING_SAMPLES,), np.float32, buffer=self._shm.buf)
        self.ring.fill(0.0)
        self.control = np.ndarray((N_CONTROL,), np.int64, buffer=self._shm.buf, offset=RING_SAMPLES * 4)
        self.control.fill(0)
        # Heads (see HEAD_FRAMES): the table the voice process fills, and which note is in which row.
        self.heads: dict[str, int] = {}
        places, samples, self.head_xfade = head_geometry(self.sample_rate)
        shape = (HEAD_SLOTS, places, samples)
        self._head_shm = shared_memory.SharedMemory(create=True, size=int(np.prod(shape)) * 4)
        self.head_table = np.ndarray(shape, np.float32, buffer=self._head_shm.buf)
        self._mixer = None
        self._plain = {"bend": 0.0, "pressure": 0.0, "mono": False}  # what a head assumes
        self._lock = threading.Lock()
        self._args = (self._shm.name, factory, self.sample_rate, self.max_voices, self.lead_samples, blocksize,
                      bool(realtime), int(threads), self._head_shm.name, self.lead_extra)
        self.errors: deque = deque(maxlen=64)
        self.restarts = 0
        self.on_warm = None  # (warm_id, done, total, ok): a pre-render's progress (on the reader thread)
        self.on_restart = None  # a new voice process replaced one that died (on the reader thread)
        self.on_ready = None  # (key): a note-on's own controls were computed (on the reader thread)
        self._closing = False
        self._realtime = bool(realtime)
        try:
            self._start_process()
        except VoiceProcessError:
            self.close()
            raise
        self._reader = threading.Thread(target=self._read, name="voices-reader", daemon=True)
        self._reader.start()

    def _start_process(self) -> None:
        """Start the voice process and wait for its hello (VoiceProcessError if none comes)."""
        ctx = mp.get_context("spawn")
        conn, child = ctx.Pipe()
        self.heads.clear()  # (a new process has none yet)
        # Not a daemon: it starts the networks process; it ends when our end of the pipe closes,
        # whatever ends this process.
        process = ctx.Process(target=_voice_main, name="sound-generator-voices", args=(child, *self._args),
                              daemon=False)
        process.start()
        child.close()
        with self._lock:
            self._conn, self.process = conn, process
        if not conn.poll(START_TIMEOUT_S):
            raise VoiceProcessError(f"the voice process did not start within {START_TIMEOUT_S:g} s")
        try:
            hello = conn.recv()
        except (EOFError, OSError):
            hello = ("dead", f"it exited (code {process.exitcode})")
        if hello[0] != "hello":
            raise VoiceProcessError(f"the voice process could not load the generator: {hello[1]}")
        self.model_version = hello[1]

    def _read(self) -> None:
        """Replies of the voice process; if it dies, a new one is started (its sounding notes are
        lost; the ring is silent meanwhile, and every block counts as late)."""
        if self._realtime:  # (it takes the GIL: as the audio process's other helpers, audio.RT_PRIORITY_HELPERS)
            try_realtime(RT_PRIORITY_HELPERS)
        while True:
            try:
                msg = self._conn.recv()
            except (EOFError, OSError):
                if self._closing:
                    return
                log.error("the voice process died (exit code %s): starting a new one", self.process.exitcode)
                self.process.join(timeout=5)
                try:
                    self._start_process()
                except VoiceProcessError as e:
                    log.error("%s; live voices are silent", e)
                    return
                self.restarts += 1
                if self.on_restart is not None:
                    self.on_restart()
                continue
            if msg[0] == "head":
                self.heads[msg[1]] = msg[2]
            elif msg[0] == "head_drop":
                self.heads.pop(msg[1], None)
            elif msg[0] == "warm":
                if self.on_warm is not None:
                    self.on_warm(*msg[1:])
            elif msg[0] == "ready":
                if self.on_ready is not None:
                    self.on_ready(msg[1])
            elif msg[0] == "error":
                log.warning("voice process: %s", msg[1])
                self.errors.append(msg[1])

    def _ask_to_stop(self) -> None:
        with self._lock:
            self._conn.send(None)

    def send(self, *message: Any) -> None:
        with self._lock:
            try:
                self._conn.send(message)
            except (BrokenPipeError, OSError):
                log.error("the voice process is gone")

    def attach(self, mixer) -> None:
        """Play through `mixer`: it mixes the ring into every block, and plays known notes' heads."""
        mixer.attach_ring(self.ring, self.control)
        mixer.add_fade(self.head_xfade)
        self._mixer = mixer

    # Commands (pitch ints, values already range-checked by the address table).
    def note_on(self, pitch: int, params, gain: float, target: int = -1) -> None:
        head = None
        if target < 0 and self._mixer is not None and not any(self._plain.values()):
            row = self.heads.get(params.key)
            if row is not None:
                head = self._play_head(row, pitch, gain)
        self.send("on", int(pitch), params, float(gain), int(target), head)

    def _play_head(self, row: int, pitch: int, gain: float) -> tuple[int, int] | None:
        return play_head(self._mixer, self.control, self.head_table[row], pitch, gain)

    def note_off(self, pitch: int, target: int = -1) -> None:
        self.send("off", int(pitch), int(target))

    def bend(self, cents: float) -> None:
        self._plain["bend"] = float(cents)
        self.send("bend", float(cents))

    def note_bend(self, pitch: int, cents: float) -> None:
        self.send("nbend", int(pitch), float(cents))

    def pressure(self, value: float) -> None:
        self._plain["pressure"] = float(value)
        self.send("pressure", float(value))

    def note_pressure(self, pitch: int, value: float) -> None:
        self.send("npressure", int(pitch), float(value))

    def sustain(self, down: bool) -> None:
        self.send("sustain", bool(down))

    def mode(self, mode: str) -> None:
        self._plain["mono"] = mode == "mono"
        self.send("mode", str(mode))

    def glide(self, ms: float) -> None:
        self.send("glide", float(ms))

    def timbre(self, params) -> None:
        """The timbre for later notes, and for every sounding note (cross-faded)."""
        self.send("timbre", params)

    def warm(self, notes: list, warm_id=None) -> None:
        """Compute and keep the NoteStarts of these notes (pre-rendering for live voices); with
        `warm_id`, its progress comes back to `on_warm(warm_id, done, total, ok)`. A newer one
        supersedes the rest of this one."""
        self.send("warm", list(notes), warm_id)

    def panic(self) -> None:
        self.send("panic")

    @property
    def sounding(self) -> int:
        return int(self.control[C_VOICES])

    def close(self) -> None:
        self._closing = True
        _stop(self.process, self._ask_to_stop)
        self._conn.close()
        del self.ring, self.control
        self.head_table = None
        for shm in (self._shm, self._head_shm):
            shm.close()
            try:
                shm.unlink()
            except FileNotFoundError:
                pass


def play_head(mixer, control: np.ndarray, heads: np.ndarray, pitch: int, gain: float) -> tuple[int, int] | None:
    """Have `mixer` play a known note's head (`heads`: its row of the head table) from its next
    block; (start, end) of the head in absolute samples, for the voice process, or None (no head
    now)."""
    from synth.streaming import frame_start_sample

    if not control[C_RUNNING]:
        return None
    busy = mixer.busy  # (first: a block that ends between the two reads only costs a block)
    start = mixer.block_start + (mixer.block_frames if busy else 0)
    origin = int(control[C_ORIGIN])
    if start < origin:
        return None
    rate = mixer.sample_rate
    first = (start - origin) * FRAME_RATE // rate  # the voice's first frame, on the writer's clock
    at = origin + int(frame_start_sample(first, rate, FRAME_RATE))
    end = origin + int(frame_start_sample(first + HEAD_FRAMES, rate, FRAME_RATE))
    xfade = head_geometry(rate)[2]
    head = heads[first % heads.shape[0]]
    mixer.head_on(head[start - at : end - at], gain, pitch, start, end - xfade, xfade)
    return start, end


# ---------------------------------------------------------------------------------------------
# The voice process.


def _voice_main(conn, shm_name: str, factory: str, sample_rate: int, max_voices: int, lead: int,
                blocksize: int, realtime: bool, threads: int, head_shm_name: str, lead_extra: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    normal_priority()
    limit_compute_threads(threads)  # before a factory that uses TensorFlow imports it
    shm = shared_memory.SharedMemory(name=shm_name)
    ring = np.ndarray((RING_SAMPLES,), np.float32, buffer=shm.buf)
    control = np.ndarray((N_CONTROL,), np.int64, buffer=shm.buf, offset=RING_SAMPLES * 4)
    head_shm = shared_memory.SharedMemory(name=head_shm_name)
    try:
        generator = load_factory(factory)()
        networks = NetworksProcess(factory, threads, realtime_priority=RT_PRIORITY_VOICES if realtime else None)
        engine = VoiceEngine(generator, sample_rate, max_voices, networks=networks)
        engine.head_table = np.ndarray((HEAD_SLOTS, *head_geometry(sample_rate)[:2]), np.float32,
                                       buffer=head_shm.buf)
        engine.warm_up()
        conn.send(("hello", str(generator.model_version), os.getpid()))
    except Exception as e:  # noqa: BLE001 - reported to the parent, which refuses to start
        conn.send(("dead", f"{type(e).__name__}: {e}", os.getpid()))
        return
    if realtime:
        try_realtime(RT_PRIORITY_VOICES)
    send_lock = threading.Lock()

    def notify(*message) -> None:
        with send_lock:
            try:
                conn.send(message)
            except (BrokenPipeError, OSError):
                pass

    engine.report = lambda text: notify("error", text)
    engine.notify = notify
    # The generator and TensorFlow are long-lived: out of the collector's full scans, which hold
    # the GIL for milliseconds (as the server process does, server.LiveServer.start).
    gc.collect()
    gc.freeze()
    # The playing thread shares the GIL with the threads that read the pipes: hand it back
    # within half a millisecond, not CPython's default 5 ms.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    writer = RingWriter(engine, ring, control, lead, blocksize, lead_extra)
    writer.manage_gc = True
    try:
        writer.run(conn)
    finally:
        engine.stop()
        engine.head_table = None
        del ring, control
        shm.close()
        head_shm.close()


class RingWriter:
    """Runs a `VoiceEngine` against the ring: commands in, one frame at a time out, paced by the
    callback's reading position."""

    def __init__(self, engine: "VoiceEngine", ring: np.ndarray, control: np.ndarray, lead: int, blocksize: int,
                 extra: int = 0):
        self.engine = engine
        self.ring = ring
        self.control = control
        self.lead = int(lead)
        # While the voices' heavy work runs (a timbre change: a replan and re-decoding of every
        # note it moves), and for a while after a late block, a frame more is kept written
        # ahead: a stall then costs a frame of control latency instead of a gap in the sound.
        self.extra = int(extra)
        self.blocksize = int(blocksize)
        self.write = 0  # absolute sample the next frame starts at
        self.origin = 0  # absolute sample of the bank's frame 0
        self._slow_reported = 0.0
        self._gc_at = 0.0
        self.manage_gc = False  # collect_garbage while ahead (the voice process sets it)

    def _put(self, start: int, audio: np.ndarray, add: bool) -> None:
        n = audio.size
        i = start % RING_SAMPLES
        first = min(n, RING_SAMPLES - i)
        if add:
            self.ring[i : i + first] += audio[:first]
            if first < n:
                self.ring[: n - first] += audio[first:]
        else:
            self.ring[i : i + first] = audio[:first]
            if first < n:
                self.ring[: n - first] = audio[first:]

    def run(self, conn) -> None:
        control = self.control
        engine = self.engine
        self.start()
        while True:
            # Commands first: a note-on may start in the part of the ring not yet read. But past
            # COMMAND_WORK_S of them with a frame due, the frame first (a 32-note chord's note-ons
            # and note-offs took 3-9 ms on a slow host): the rest wait for the next turn.
            t_commands = time.perf_counter()
            handled = 0
            while conn.poll():
                if handled and time.perf_counter() - t_commands > COMMAND_WORK_S \
                        and self.write - int(control[C_READ]) < self.lead:
                    break
                handled += 1
                try:
                    msg = conn.recv()
                except (EOFError, OSError):
                    return
                if msg is None:
                    return
                try:
                    engine.command(msg)
                except Exception as e:  # noqa: BLE001 - one bad command never stops the voices
                    engine.report(f"{msg[0]}: {type(e).__name__}: {e}")
            engine.retake(self)  # (a bend into the frame written last, if it has not been played)
            read = int(control[C_READ])
            engine.frame_started = t_starts = time.perf_counter()
            engine.hurry = self.write - read < self.lead - engine.frame_samples
            engine.start_ready(self)
            t_render = time.perf_counter()
            read = int(control[C_READ])
            if self.write < read:  # late: skip ahead (what was not written is not played)
                control[C_LATE] += 1
                engine.heavy_until = time.monotonic() + LATE_EXTRA_S
                # The first frame that starts at or after read + lead: the one after the frame
                # holding the sample before it (frames differ in length at 44.1 kHz).
                j = engine.frame_at(read + self.lead - self.origin - 1) + 1
                frames = max(1, j - engine.bank.frame_index)
                skipped = self.origin + engine.frame_start(engine.bank.frame_index + frames) - self.write
                self.write += skipped
                engine.skip_frames(frames)
            if self.write - read >= self.lead + (self.extra if engine.heavy() else 0):
                if self.manage_gc:
                    self.collect_garbage()
                conn.poll(POLL_S)  # (wakes at once for a command: a note-on does not wait the poll out)
                continue
            t0 = time.perf_counter()
            self.write_frame()
            t_end = time.perf_counter()
            us = int((t_end - t0) * 1e6)
            control[C_BUSY_US] += us
            if us > control[C_MAX_US]:
                control[C_MAX_US] = us
            if t_end - t_commands > SLOW_FRAME_S and t_end - self._slow_reported > 0.2:
                self._slow_reported = t_end  # (at most once a second: a diagnosis, not a flood)
                engine.report(f"slow frame: {1e3 * (t_end - t_commands):.1f} ms (commands "
                              f"{1e3 * (t_starts - t_commands):.1f}, note starts and timbre changes "
                              f"{1e3 * (t_render - t_starts):.1f}, rendering {1e3 * (t_end - t0):.1f}) with "
                              f"{engine.n_sounding} voices")

    def collect_garbage(self) -> None:
        """(The voice process, `manage_gc`.) Every GC_EVERY_S, while the ring is written ahead,
        collect the young generations and freeze what survives.

        Frozen objects are never scanned again, so the collector's automatic runs, which fall
        inside frames, only walk what was allocated since the last freeze. Under fast chords
        they were full collections of 12-66 ms walking every live note's objects (none of them
        garbage), and young ones of 4-9 ms. What is frozen is freed by reference counting only,
        which is how a note's objects go: a test plays, moves and releases notes and finds no
        reference cycle left (`tests/synth/test_hold.py`)."""
        now = time.monotonic()
        if now - self._gc_at >= GC_EVERY_S:
            self._gc_at = now
            gc.collect(1)
            gc.freeze()

    def start(self) -> None:
        """Begin writing `lead` samples ahead of where the callback reads now."""
        control = self.control
        self.write = self.origin = int(control[C_READ]) + self.lead
        control[C_ORIGIN] = self.origin
        control[C_WRITE] = self.write
        control[C_RUNNING] = 1
        # (The engine gets the clock, not the writer: no reference cycle between the two.)
        self.engine.ring_clock = (control, self.origin, self.blocksize)

    def write_frame(self) -> None:
        """Render the next frame of every voice into the ring."""
        audio = self.engine.render_frame()
        self._put(self.write, audio, add=False)
        self.write += audio.size
        control = self.control
        control[C_WRITE] = self.write  # after the samples: the callback reads up to here
        control[C_VOICES] = self.engine.n_sounding
        control[C_FRAMES] += 1

    def add(self, audio_from: int, audio: np.ndarray) -> None:
        """Add `audio` into the frames written already, from absolute sample `audio_from` (a new
        voice's first frames, rendered at once; a retake's difference)."""
        self._put(audio_from, audio, add=True)


class NetworksThread:
    """Runs `prepare_notes` on a thread of this process (tests and offline tools; the voice
    process uses `NetworksProcess`). submit(notes, peak_gain, done): done(list of NoteStart)."""

    def __init__(self, generator):
        self.generator = generator
        self._jobs: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="voice-networks", daemon=True)
        self._thread.start()

    def submit(self, notes: list, peak_gain: bool, done, levels: list | None = None) -> None:
        self._jobs.put((list(notes), peak_gain, done, levels))

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            notes, peak_gain, done, levels = job
            try:
                done(_networks_job(self.generator, notes, peak_gain, levels))
            except Exception:  # noqa: BLE001 - one job fails, the thread goes on
                log.exception("networks")

    def close(self) -> None:
        self._jobs.put(None)


def _networks_job(generator, notes: list, peak_gain: bool, levels: list | None):
    """NoteStarts for `notes`; with `levels` (one `TimbreChangeInputs` per note: a timbre change
    of sounding notes), (NoteStarts, the level compensation of each note into its new timbre), so
    that the voice process's playing thread only applies them (`HeldNote.apply_timbre`)."""
    from synth.hold import level_compensations, prepare_notes

    starts = prepare_notes(generator, notes, peak_gain)
    if levels is None:
        return starts
    return starts, level_compensations(generator, levels, [start.timbre for start in starts])


def _networks_main(conn, factory: str, threads: int) -> None:
    """The voice process's networks process: NoteParams in, NoteStarts out."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    normal_priority()
    limit_compute_threads(threads)  # before a factory that uses TensorFlow imports it
    try:
        generator = load_factory(factory)()
        conn.send(("hello",))
    except Exception as e:  # noqa: BLE001
        conn.send(("dead", f"{type(e).__name__}: {e}"))
        return
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        job_id, notes, peak_gain, levels = msg
        try:
            conn.send((job_id, _networks_job(generator, notes, peak_gain, levels), None))
        except Exception as e:  # noqa: BLE001
            conn.send((job_id, None, f"{type(e).__name__}: {e}"))


class NetworksProcess:
    """`NetworksThread`'s interface, with the networks in a process of their own: the voice
    process's playing thread never waits for the GIL while they run."""

    def __init__(self, factory: str, threads: int = WORKER_THREADS, report=None, realtime_priority: int | None = None):
        ctx = mp.get_context("spawn")
        # Its threads take the voice process's GIL: at the playing thread's priority, so that no
        # ordinary process preempts one of them while the playing thread waits for the GIL.
        self._priority = realtime_priority
        self._conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_networks_main, args=(child, factory, threads), daemon=True,
                                   name="sound-generator-networks")
        self.process.start()
        child.close()
        hello = self._conn.recv() if self._conn.poll(START_TIMEOUT_S) else ("dead", "no answer")
        if hello[0] != "hello":
            raise VoiceProcessError(f"the networks process could not load the generator: {hello[1]}")
        self.report = report or (lambda text: log.warning("%s", text))
        self._done: dict[int, Any] = {}
        self._ids = iter(range(1, 1 << 62))
        # The pipe is written by a thread of its own. The caller (the voice process's playing
        # thread) only queues a job: when the networks process is behind, the pipe fills and a
        # send blocks, which must never hold up a frame. And `_lock` (the callbacks) is never held
        # across a send: the reader needs it to drain the results, and the networks process
        # blocks on sending them until it does (holding it across the send deadlocked all three
        # under 12- to 32-note chords every 100 ms: `tests/osc_server/test_osc_voice_networks.py`).
        self._lock = threading.Lock()
        self._outbox: queue.Queue = queue.Queue()  # jobs for `_send_jobs`; None: stop
        self._reader = threading.Thread(target=self._read, name="networks-reader", daemon=True)
        self._reader.start()
        self._sender = threading.Thread(target=self._send_jobs, name="networks-sender", daemon=True)
        self._sender.start()

    def submit(self, notes: list, peak_gain: bool, done, levels: list | None = None) -> None:
        """Queue a job and return at once; `done(result)` is called on the reader thread."""
        with self._lock:
            job_id = next(self._ids)
            self._done[job_id] = done
        self._outbox.put((job_id, list(notes), bool(peak_gain), levels))

    def pending(self) -> int:
        """Jobs submitted and not answered yet."""
        with self._lock:
            return len(self._done)

    def _send_jobs(self) -> None:
        if self._priority is not None:
            try_realtime(self._priority)
        while True:
            job = self._outbox.get()
            try:
                self._conn.send(job)
            except (BrokenPipeError, OSError):
                return
            if job is None:
                return

    def _read(self) -> None:
        if self._priority is not None:
            try_realtime(self._priority)
        while True:
            try:
                job_id, starts, error = self._conn.recv()
            except (EOFError, OSError):
                return
            with self._lock:
                done = self._done.pop(job_id, None)
            if error is not None:
                self.report(f"networks: {error}")
            elif done is not None:
                done(starts)

    def close(self) -> None:
        _stop(self.process, lambda: self._outbox.put(None))  # (after the jobs queued)


def _stop(process, ask) -> None:
    """Ask a child process to stop (`ask()` puts None on its pipe), then kill it if it has not
    within 5 s."""
    try:
        ask()
    except (BrokenPipeError, OSError):
        pass
    process.join(timeout=5)
    if process.is_alive():
        process.kill()
        process.join(timeout=5)


@dataclass
class _Voice:
    pitch: int
    note: Any  # HeldNote
    gain: float
    slot: int
    order: int
    key_down: bool = True
    sustained: bool = False  # released while the pedal was down
    bend: float = 0.0  # per-note bend (cents), on top of the global one and a legato offset
    legato: float = 0.0  # mono mode: cents from the voice's own pitch to the key it now plays
    fade: int | None = None  # frames left of a steal/panic fade
    timbre_epoch: int = 0
    target: int = -1
    proxy: bool = False
    head_end: int | None = None  # started by the mixer's head: where it ends (from the writer's origin)


class _LastFrame:
    """The frame `VoiceEngine.render_frame` rendered last, for a retake: its first sample (from
    the writer's origin) and length, its voices (and slot -> row), their controls and dry
    samples, and what it handed the writer."""

    __slots__ = ("begin", "n", "active", "rows", "f0", "amp", "dist", "noise", "dry", "out", "retakes")

    def __init__(self, begin, n, active, rows, f0, amp, dist, noise, dry, out):
        self.begin, self.n, self.active, self.rows = begin, n, active, rows
        self.f0, self.amp, self.dist, self.noise, self.dry, self.out = f0, amp, dist, noise, dry, out
        self.retakes = 0


@dataclass
class _StartRequest:
    pitch: int
    params: Any
    gain: float
    released: bool = False
    mono: bool = False
    target: int = -1  # absolute sample to start at (a timetag), or -1: at once
    proxy: bool = False  # started with a neighbour's controls, moved to its own when they come
    voice: Any = None  # the _Voice, once started
    head: tuple[int, int] | None = None  # (start, end), absolute samples: the mixer plays its head


class VoiceEngine:
    """The voices of the voice process (not thread-safe apart from its worker thread, which only
    runs the networks and hands results back through a queue)."""

    def __init__(self, generator, sample_rate: int, max_voices: int = 32, networks=None):
        from synth.hold import model_constants
        from synth.streaming import StreamingReverb, StreamingSynthBank, frame_start_sample

        self.generator = generator
        self.sample_rate = int(sample_rate)
        self.max_voices = int(max_voices)
        cfg = generator.config
        constants = model_constants(generator)
        # Slots: the voices, and room for the ones fading out after a steal.
        self.n_slots = self.max_voices + STEAL_ROOM
        self.bank = StreamingSynthBank(self.n_slots, self.sample_rate, n_harmonics=cfg.n_harmonics,
                                       n_noise_bands=cfg.n_noise_bands)
        self._bank_args = dict(n_voices=1, sample_rate=self.sample_rate, n_harmonics=cfg.n_harmonics,
                               n_noise_bands=cfg.n_noise_bands)
        self._head_bank = StreamingSynthBank(**self._bank_args)  # renders new voices' first frames
        self.reverb = StreamingReverb(constants["ir"], self.sample_rate)
        self.meter = constants["meter"]
        self.ir = self.reverb.impulse_response
        self._frame_start = frame_start_sample
        # Frame j covers samples [frame_start(j), frame_start(j + 1)) from the writer's origin:
        # 384 each at 48 kHz; at 44.1 kHz (352.8) four of 353 and one of 352 in every five.
        # frame_samples is the longest.
        self.frame_samples = -(-self.sample_rate // FRAME_RATE)
        self.voices: list[_Voice | None] = [None] * self.n_slots
        self._order = 0
        self.report = lambda text: log.warning("%s", text)
        # Performance state.
        self.global_bend = 0.0
        self.global_pressure = 0.0
        self.pedal = False
        self.mono = False
        self.glide_s = 0.0
        self.stack: list[int] = []  # mono: keys held, newest last
        self.timbre = None  # NoteParams of the current timbre (velocity and pitch unused)
        self.timbre_epoch = 0
        self._starts: OrderedDict = OrderedDict()  # note key -> NoteStart
        self._first_blocks: OrderedDict = OrderedDict()  # note key -> its first decoded block
        self._recent: dict = {}  # (pitch, velocity) -> the most recent NoteStart (proxies)
        self._done: queue.Queue = queue.Queue()  # results of the networks, for the playing thread
        self._waiting: dict[str, list[_StartRequest]] = {}  # note key -> requests waiting for its start
        # The networks run elsewhere (`NetworksProcess` in the voice process: their Python would
        # otherwise take the GIL from the thread that renders the frames).
        self.networks = networks if networks is not None else NetworksThread(generator)
        self._ready: list = []  # (request, NoteStart) to start at the next frame
        # `/prerender` (warm): notes waiting for the networks, sent WARM_JOB_NOTES at a time, and
        # when the chunk out was sent (None: none out).
        self._warm: deque = deque()
        self._warming: float | None = None
        # The pre-render being worked on (`warm`): its id, notes in all, notes done, ok, and the
        # size of the chunk at the networks. Its progress goes to the server (notify "warm").
        self._warm_id = None
        self._warm_counts = [0, 0, 0]  # total, done, ok
        self._warm_chunk = (None, 0)  # (its pre-render's id, notes)
        self._offs: list = []  # (sample, pitch): timetagged note-offs
        self._timbre_ready: list = []  # (epoch, slot, note, HeldNote.prepare_timbre's result) to apply
        # Timbre changes run the networks one at a time: while one runs, later ones only mark that
        # the notes must move again (to the timbre then current), so a knob swept at 100 messages a
        # second costs the networks no more than one held still would.
        self._timbre_sent: float | None = None  # when the change running now was sent
        self._timbre_again = False  # the timbre changed since
        self._timbre_result_epoch = 0  # the newest change whose result came back
        self.heavy_until = 0.0  # (monotonic) until then, `heavy` (the writer keeps more ahead)
        self._recent_starts: deque = deque()  # when the voices of the last BUSY_WINDOW_S started
        self.frame_started = time.perf_counter()  # set by the writer before each frame's work
        self.hurry = False  # the writer is short of its lead: no optional work
        self.starts_skipped = 0  # notes not started: more started in the same frame than voices
        self._unreleased: dict[int, list[_StartRequest]] = {}  # pitch -> requests since its last note-off
        self._skipped = 0
        # Heads (HEAD_FRAMES): the table in shared memory (set by `_voice_main`; None: no heads),
        # note key -> its row (least recently played first), free rows, rows dropped lately
        # (time, row), and the notes that want one (key -> NoteStart).
        self.head_table: np.ndarray | None = None
        self.notify = lambda *message: None  # tells the server which rows hold which notes
        _, _, self.head_xfade = head_geometry(self.sample_rate)
        self._head_rise = (0.5 - 0.5 * np.cos(np.pi * np.arange(self.head_xfade) / self.head_xfade)).astype(np.float32)
        self._head_rows: OrderedDict = OrderedDict()
        self._head_free = list(range(HEAD_SLOTS - 1, -1, -1))
        self._head_cooling: deque = deque()
        self._heads_wanted: OrderedDict = OrderedDict()
        self._head_job: list | None = None  # [key, row, its controls, the next place to render]
        self._spare_bank = StreamingSynthBank(**self._bank_args)
        # Retakes: the frame rendered last, the bank's and the reverb's state before it, the
        # voices whose bend or pressure goes into it, and the ring's clock (RingWriter.start).
        self._last: _LastFrame | None = None
        self._bank_saved = self.bank.save_state()
        self._reverb_saved = self.reverb.checkpoint()
        self._retake_voices: list[_Voice] = []
        self.ring_clock: tuple | None = None

    def frame_start(self, j: int) -> int:
        """First sample of frame j, counted from the writer's origin."""
        return int(self._frame_start(j, self.sample_rate, FRAME_RATE))

    def frame_at(self, offset: int) -> int:
        """The frame that sample `offset` (from the writer's origin, >= 0) falls in."""
        return int(offset) * FRAME_RATE // self.sample_rate

    # ---- the networks (z and f0/loudness generators): in another process --------------------
    def _started(self, starts: list) -> None:
        for start in starts:
            self._done.put(("start", start))

    def _warmed(self, starts: list) -> None:
        self._started(starts)
        self._done.put(("warmed", len(starts)))

    def warm(self, notes: list, warm_id=None) -> None:
        """Compute and keep the NoteStarts of `notes` (a `/prerender`), WARM_JOB_NOTES at a time.
        A newer one supersedes what is left of this one: the server hears of it as done (`notify`
        "warm": id, done, total, ok)."""
        self._warm_finish()
        self._warm.clear()
        total = len(notes)
        todo = [p for p in notes if p.key not in self._starts]
        self._warm.extend(todo)
        self._warm_id = warm_id
        self._warm_counts = [total, total - len(todo), total - len(todo)]
        self._warm_progress()

    def _warm_progress(self, count: int = 0, ok: int = 0) -> None:
        counts = self._warm_counts
        counts[1] = min(counts[0], counts[1] + count)
        counts[2] = min(counts[1], counts[2] + ok)
        if self._warm_id is not None:
            self.notify("warm", self._warm_id, counts[1], counts[0], counts[2])
            if counts[1] >= counts[0]:
                self._warm_id = None

    def _warm_finish(self) -> None:
        """The pre-render being worked on ends here (superseded): the rest counts as done, not ok."""
        if self._warm_id is not None:
            self._warm_progress(self._warm_counts[0])

    def _warm_next(self) -> None:
        """The next WARM_JOB_NOTES notes of a `/prerender` to the networks, once the last have
        come back (or WARM_JOB_TIMEOUT_S passed: an error, its notes done but not ok)."""
        if self._warming is not None:
            if time.monotonic() - self._warming < WARM_JOB_TIMEOUT_S:
                return
            self._warming = None
            self._warm_chunk_done(0)
        if not self._warm:
            return
        chunk = []
        known = 0
        while self._warm and len(chunk) < WARM_JOB_NOTES:
            params = self._warm.popleft()
            if params.key not in self._starts:
                chunk.append(params)
            else:
                known += 1
        if known:
            self._warm_progress(known, known)
        if chunk:
            self._warming = time.monotonic()
            self._warm_chunk = (self._warm_id, len(chunk))
            self.networks.submit(chunk, True, self._warmed)

    def _warm_chunk_done(self, ok: int) -> None:
        """The chunk at the networks came back with `ok` notes computed (or timed out: 0); it
        counts if its pre-render is still the one worked on."""
        warm_id, n = self._warm_chunk
        self._warm_chunk = (None, 0)
        if warm_id is not None and warm_id == self._warm_id:
            self._warm_progress(n, ok)

    def _prefetch(self, notes: list) -> None:
        """Decode the next blocks of at most PREFETCH_PER_FRAME voices, the most urgent first,
        among those due within PREFETCH_FRAMES whose inputs are planned, in one batch (numpy,
        `decode_controls_batch`). A chord's voices all reach a block boundary at the same frame;
        fetched ahead like this, their decoding is spread over the frames before it."""
        due = []
        for note in notes:
            b = note.block_needed(1, PREFETCH_FRAMES)
            if b is not None and note.block_planned(b):
                due.append((b * note.decode_block - note.frame, note))
        if due:
            due.sort(key=lambda item: item[0])
            self._decode([note for _, note in due[:PREFETCH_PER_FRAME]], 1, PREFETCH_FRAMES)

    def stop(self) -> None:
        self.networks.close()

    def warm_up(self) -> None:
        """Run every path once (networks, decoder, synthesis) so the first note is not slow."""
        from synth.hold import HeldNote, prepare_notes
        from synth.params import NoteParams

        start = prepare_notes(self.generator, [NoteParams()])[0]
        note = HeldNote(self.generator, start.params, self.sample_rate, start=start, synth=False,
                        decode_block=LIVE_DECODE_BLOCK)
        self._decode([note], 1)
        note.controls_frames(1)
        self._remember(start)

    def _proxy_start(self, params):
        """A NoteStart for `params` made of the most recent known note of that key and velocity,
        else of the nearest key (up to an octave away), else None."""
        from synth.hold import NoteStart

        recent = self._recent
        found = recent.get((params.pitch, params.velocity))
        for d in range(1, 13):
            if found is not None:
                break
            found = recent.get((params.pitch - d, params.velocity)) or recent.get((params.pitch + d, params.velocity))
        if found is None:
            return None
        return NoteStart(params, found.timbre, found.peak_gain)

    def _remember(self, start) -> None:
        self._recent[(start.params.pitch, start.params.velocity)] = start
        self._starts[start.params.key] = start
        self._starts.move_to_end(start.params.key)
        while len(self._starts) > START_CACHE:
            self._drop_head(self._starts.popitem(last=False)[0])

    # ---- heads ---------------------------------------------------------------------------------
    def _drop_head(self, key: str) -> None:
        row = self._head_rows.pop(key, None)
        if row is not None:
            self.notify("head_drop", key)
            self._head_cooling.append((time.monotonic(), row))

    def _head_row(self) -> int | None:
        """A free row: never used, or dropped HEAD_REUSE_S ago; else the least recently played
        note's is dropped (free later) and None."""
        if self._head_free:
            return self._head_free.pop()
        if self._head_cooling and time.monotonic() - self._head_cooling[0][0] >= HEAD_REUSE_S:
            return self._head_cooling.popleft()[1]
        if self._head_rows:
            self._drop_head(next(iter(self._head_rows)))
        return None

    def _want_head(self, start) -> None:
        """Give this known note a head when there is time (`_make_head`): the most recent 64 wait."""
        key = start.params.key
        if self.head_table is not None and key not in self._head_rows:
            self._heads_wanted[key] = start
            self._heads_wanted.move_to_end(key)
            while len(self._heads_wanted) > 64:
                self._heads_wanted.popitem(last=False)

    def _make_head(self) -> None:
        """One step of making a head for a note that wants one (its first HEAD_FRAMES frames, dry,
        gain 1, as `_catch_up` and the main bank render them): its controls (decoding its first
        block if no start did), then one place in the frame pattern a step, then the server is
        told. One step a frame, as optional work: a step costs 1-3 ms on the 2-core machine."""
        from synth.hold import HeldNote

        job = self._head_job
        if job is None:
            key, start = next(iter(self._heads_wanted.items()))
            if key in self._head_rows or key not in self._starts:
                del self._heads_wanted[key]
                return
            row = self._head_row()
            if row is None:
                return
            del self._heads_wanted[key]
            note = HeldNote(self.generator, start.params, self.sample_rate, start=start, synth=False,
                            decode_block=LIVE_DECODE_BLOCK)
            block = self._first_blocks.get(key)
            if block is not None:
                note.put_block(0, block)
            self._decode([note], HEAD_FRAMES)
            if block is None:  # (kept: the note's first start will not decode it again)
                self._first_blocks[key] = note.decoded_block(0)
                while len(self._first_blocks) > START_CACHE:
                    self._first_blocks.popitem(last=False)
            self._head_job = [key, row, note.controls_frames(HEAD_FRAMES), 0]
            return
        key, row, c, place = job
        bank = self._spare_bank
        bank.reset(0, seeds=[int(key[:16], 16)])
        bank.frame_index = place  # (its place in the pattern of frame lengths)
        dry = bank.render_chunk(c["f0_hz"][None], c["amplitude"][None], c["harmonic_distribution"][None],
                                c["noise_magnitudes"][None])[0]
        self.head_table[row, place, : dry.size] = dry
        job[3] = place = place + 1
        if place < self.head_table.shape[1]:
            return
        self._head_job = None
        self._head_rows[key] = row
        self.notify("head", key, row)

    def _head_gain(self, v: _Voice, begin: int, n: int) -> np.ndarray:
        """The voice process's share of a head voice's samples [begin, begin + n) (from the
        writer's origin): 0 while the mixer plays the head, rising over its fade-out, then 1."""
        k = np.arange(begin, begin + n) - (v.head_end - self.head_xfade)
        gain = np.ones(n, np.float32)
        gain[k < 0] = 0.0
        inside = (k >= 0) & (k < self.head_xfade)
        gain[inside] = self._head_rise[k[inside]]
        return gain

    # ---- commands ----------------------------------------------------------------------------
    def command(self, msg: tuple) -> None:
        kind = msg[0]
        if kind == "on":
            _, pitch, params, gain, target, *head = msg
            self.note_on(pitch, params, gain, target, head[0] if head else None)
        elif kind == "off":
            if msg[2] >= 0:
                self._offs.append((msg[2], msg[1]))  # at its sample's frame (`start_ready`)
            else:
                self.note_off(msg[1])
        elif kind == "bend":
            self.global_bend = msg[1]
            voices = self._sounding()
            retake = self._retakable(voices)
            for v in voices:
                self._apply_bend(v, frame=retake.get(v.slot))
        elif kind == "nbend":
            voices = [v for v in self._sounding() if v.pitch == msg[1] and v.key_down]
            retake = self._retakable(voices)
            for v in voices:
                v.bend = msg[2]
                self._apply_bend(v, frame=retake.get(v.slot))
        elif kind == "pressure":
            self.global_pressure = msg[1]
            voices = self._sounding()
            retake = self._retakable(voices)
            for v in voices:
                v.note.set_pressure(self.global_pressure, replan=False, frame=retake.get(v.slot))
        elif kind == "npressure":
            voices = [v for v in self._sounding() if v.pitch == msg[1] and v.key_down]
            retake = self._retakable(voices)
            for v in voices:
                v.note.set_pressure(msg[2], replan=False, frame=retake.get(v.slot))
        elif kind == "sustain":
            self.sustain(msg[1])
        elif kind == "mode":
            self.mono = msg[1] == "mono"
            self.stack = []
        elif kind == "glide":
            self.glide_s = msg[1] / 1000.0
        elif kind == "timbre":
            self.set_timbre(msg[1])
        elif kind == "warm":
            self.warm(msg[1], msg[2] if len(msg) > 2 else None)
        elif kind == "panic":
            self.panic()
        else:
            raise ValueError(f"unknown command {kind!r}")

    def _sounding(self):
        return [v for v in self.voices if v is not None and v.fade is None]

    def _apply_bend(self, v: _Voice, ease_s: float | None = None, frame: int | None = None) -> None:
        from synth.hold import BEND_EASE_S, MAX_BEND_CENTS

        cents = max(-MAX_BEND_CENTS, min(MAX_BEND_CENTS, self.global_bend + v.bend + v.legato))
        v.note.set_bend(cents, BEND_EASE_S if ease_s is None else ease_s, replan=False, frame=frame)

    # ---- retakes: a bend or pressure in the frame written last --------------------------------
    # The ring holds up to a frame and a block more than the callback has read (the lead), so a
    # control that waited for the next frame reached the output 17 ms later on average. The
    # frame written last starts at least a block past the callback when the writer keeps its
    # lead: when a bend or pressure reaches few voices, that frame is rendered again for them,
    # from the bank's and the reverb's state before it (saved every frame, 30 us), and the
    # difference is added into the ring. A frame sooner, with the same ease (the bank ramps f0
    # and amplitude within the frame from the frame before).

    def _retakable(self, voices: list) -> dict[int, int]:
        """slot -> the note frame to retake, for each of `voices` (all of them or none) whose
        bend or pressure can go into the frame written last."""
        if not voices or not self._last_frame_open():
            return {}
        wanted = {v.slot: v for v in self._retake_voices}
        for v in voices:
            if not self._in_last_frame(v):
                return {}
            wanted[v.slot] = v
        if len(wanted) > RETAKE_MAX_VOICES or not self._retake_safe(self._last):
            return {}
        self._retake_voices = list(wanted.values())
        return {v.slot: v.note.frame - 1 for v in voices}

    def _last_frame_open(self) -> bool:
        """True if the frame written last may be rendered again once more (a ring clock to
        check it against, fewer than RETAKES_PER_FRAME retakes of it so far)."""
        last = self._last
        return last is not None and self.ring_clock is not None and last.retakes < RETAKES_PER_FRAME

    def _in_last_frame(self, v: _Voice) -> bool:
        """True if v is the voice one of the frame written last's rows was rendered for."""
        i = self._last.rows.get(v.slot)
        return i is not None and self._last.active[i] is v

    def _retake_safe(self, last: "_LastFrame") -> bool:
        control, origin, blocksize = self.ring_clock
        margin = max(blocksize, int(RETAKE_MARGIN_S * self.sample_rate))
        return origin + last.begin >= int(control[C_READ]) + margin

    def _timbre_retakable(self, v: _Voice, taken: int) -> bool:
        """True if a timbre change of v can go into the frame written last, with `taken` voices
        retaken there already (`start_ready`): as a bend's (`_retakable`), and the note's last
        frame is as it was rendered (no note-off or replan since)."""
        if taken >= RETAKE_MAX_VOICES or v.fade is not None or not self._last_frame_open():
            return False
        return self._in_last_frame(v) and v.note.last_frame_retakable and self._retake_safe(self._last)

    def retake(self, writer: RingWriter) -> None:
        """Render the frame written last again for the voices whose bend or pressure was moved
        into it (`_retakable`), and add the difference into the ring."""
        voices, self._retake_voices = self._retake_voices, []
        last = self._last
        if not voices or last is None or not self._retake_safe(last):
            return  # (their notes' changes then start at the next frame, the one they would have anyway)
        self._retake_rows(writer, sorted(last.rows[v.slot] for v in voices))

    def _retake_rows(self, writer: RingWriter, rows: list, rerender: bool = False) -> None:
        """Render rows `rows` of the frame written last again and add the difference into the
        ring: with their live factors now (a bend, a pressure), or (`rerender`: a timbre change
        applied from that frame, `HeldNote.apply_timbre(frame=...)`) with their controls
        rendered again."""
        last = self._last
        for i in rows:
            v = last.active[i]
            if rerender:
                v.note.controls_frame_into(last.f0, last.amp, last.dist, last.noise, i, v.gain)
                continue
            gain, f0_factor = v.note.retake_factors()
            last.f0[i] *= f0_factor
            last.amp[i] *= gain
            last.noise[i] *= gain
        index = np.asarray(rows)
        last.dry[index] = self.bank.retake(self._bank_saved, [last.active[i].slot for i in rows],
                                           last.f0[index], last.amp[index], last.dist[index], last.noise[index])
        self.reverb.restore(self._reverb_saved)
        out = self._mix(last.active, last.dry, last.begin, last.n)
        at = writer.origin + last.begin
        writer.add(at, out - last.out)
        last.out = out
        last.retakes += 1
        writer.control[C_RETAKES] += 1
        if int(writer.control[C_READ]) > at:  # (the callback reached it meanwhile: counted, never seen yet)
            writer.control[C_TORN] += 1

    def note_on(self, pitch: int, params, gain: float, target: int = -1, head=None) -> None:
        if head is not None and params.key in self._head_rows:
            self._head_rows.move_to_end(params.key)
        if self.mono:
            held = [v for v in self._sounding() if v.key_down]
            if held:  # legato: the sounding voice moves to the new key, no new attack
                self.stack = [p for p in self.stack if p != pitch] + [pitch]
                v = held[-1]
                v.legato = 100.0 * (pitch - v.pitch)
                self._apply_bend(v, ease_s=max(self.glide_s, 0.0) or None)
                return
            self.stack = [pitch]
        request = _StartRequest(pitch, params, gain, mono=self.mono, target=target, head=head)
        self._unreleased.setdefault(pitch, []).append(request)
        start = self._starts.get(params.key)
        if start is not None:
            self._starts.move_to_end(params.key)
            self._ready.append((request, start))
            return
        waiting = self._waiting.setdefault(params.key, [])
        waiting.append(request)
        if len(waiting) == 1:
            self.networks.submit([params], True, self._started)
        # Not known yet: start now with a neighbour's controls (the same key and velocity in the
        # timbre before, or the nearest key), and cross-fade to its own when the networks bring
        # them (`set_timbre`, 50 ms, level kept), rather than wait for them in silence.
        proxy = self._proxy_start(params)
        if proxy is not None:
            request.proxy = True
            self._ready.append((request, proxy))

    def note_off(self, pitch: int) -> None:
        # (Indexed by pitch: under fast chords after a timbre change, thousands of requests can
        # wait for the networks, and a scan of them all per note-off took 10 ms a chord.)
        for r in self._unreleased.pop(pitch, ()):
            r.released = True
        if self.mono and pitch in self.stack:
            top = self.stack[-1] == pitch
            self.stack.remove(pitch)
            held = [v for v in self._sounding() if v.key_down]
            if top and self.stack and held:  # back to the previous key, legato
                v = held[-1]
                v.legato = 100.0 * (self.stack[-1] - v.pitch)
                self._apply_bend(v, ease_s=max(self.glide_s, 0.0) or None)
                return
            if self.stack:
                return
            for v in held:
                self._release(v)
            return
        for v in self._sounding():
            if v.pitch == pitch and v.key_down:
                self._release(v)

    def _release(self, v: _Voice) -> None:
        v.key_down = False
        if self.pedal:
            v.sustained = True
        else:
            v.note.note_off()

    def sustain(self, down: bool) -> None:
        self.pedal = bool(down)
        if not self.pedal:
            for v in self._sounding():
                if v.sustained:
                    v.sustained = False
                    v.note.note_off()

    def panic(self) -> None:
        for v in self._sounding():
            v.fade = STEAL_FRAMES
        for requests in self._waiting.values():
            requests.clear()
        self._ready.clear()
        self._unreleased.clear()
        self.stack = []
        self.pedal = False

    def set_timbre(self, params) -> None:
        self.timbre = params
        self.timbre_epoch += 1
        if self._timbre_sent is not None and time.monotonic() - self._timbre_sent < TIMBRE_JOB_TIMEOUT_S:
            self._timbre_again = True
            return
        self._submit_timbre()

    def heavy(self) -> bool:
        """True while a timbre change is applied to the notes (and their re-decoding,
        TIMBRE_EXTRA_S), while many notes start (BUSY_STARTS), or the writer was late lately.

        Not while its networks run: they run in the networks process, below the playing
        thread's priority, and a frame written ahead then would only delay the change (it is
        applied from the next frame not written yet: 8 ms later at the sound card)."""
        now = time.monotonic()
        if self._timbre_ready:
            self.heavy_until = max(self.heavy_until, now + TIMBRE_EXTRA_S)
            return True
        return now < self.heavy_until

    def _submit_timbre(self) -> None:
        """Run the networks for every sounding note whose timbre is not the current one."""
        self._timbre_again = False
        self._timbre_sent = None
        params = self.timbre
        targets = []
        for v in self._sounding():
            new = v.note.params.replace(source=params.source, qualities=params.qualities,
                                        latent_sample=params.latent_sample)
            if new != v.note.params:
                targets.append((v.slot, v.note, new))
        if targets:
            epoch = self.timbre_epoch
            self._timbre_sent = time.monotonic()
            # Each note's level compensation is computed with the networks, from the note as it is
            # now (the decoder on its old and new z; 2-5 ms a note on the 2-core machine), not in
            # the playing thread when the change is applied a few frames later.
            self.networks.submit([p for _, _, p in targets], False,
                                 lambda out: self._done.put(("timbre", epoch, targets, *out)),
                                 levels=[note.timbre_change_inputs() for _, note, _ in targets])

    # ---- starting voices ---------------------------------------------------------------------
    def start_ready(self, writer: RingWriter) -> None:
        """Start the notes whose controls are ready; apply finished timbre changes."""
        while True:
            try:
                done = self._done.get_nowait()
            except queue.Empty:
                break
            if done[0] == "start":
                start = done[1]
                self._remember(start)
                self._want_head(start)
                waiting = self._waiting.pop(start.params.key, [])
                if waiting:  # a note-on's own controls came: the server answers /ready
                    self.notify("ready", start.params.key)
                for request in waiting:
                    if not request.proxy:
                        self._ready.append((request, start))
                        continue
                    v = request.voice  # started with a proxy: move it to its own controls
                    if v is not None and self.voices[v.slot] is v and v.fade is None:
                        # Its own level, not the stand-in's: as loud as if it had started with
                        # its own controls.
                        prepared = v.note.prepare_timbre(request.params, start.timbre,
                                                         gain_db=20.0 * math.log10(start.peak_gain))
                        self._timbre_ready.insert(0, (self.timbre_epoch, v.slot, v.note, prepared))
            elif done[0] == "warmed":
                if self._warming is not None:  # (not timed out meanwhile: counted then)
                    self._warming = None
                    self._warm_chunk_done(done[1])
            elif done[0] == "timbre":
                _, epoch, targets, starts, comps = done
                self._timbre_sent = None
                if epoch > self._timbre_result_epoch:  # (a step towards the current timbre at least)
                    self._timbre_result_epoch = epoch
                    # What it supersedes goes; a proxy's move to its own controls, made since, stays.
                    self._timbre_ready = [x for x in self._timbre_ready if x[0] >= epoch] + [
                        (epoch, slot, note, note.prepare_timbre(params, start.timbre, compensation_db=comp))
                        for (slot, note, params), start, comp in zip(targets, starts, comps)]
                if self._timbre_again:
                    self._submit_timbre()
        if self._timbre_again and time.monotonic() - (self._timbre_sent or 0.0) >= TIMBRE_JOB_TIMEOUT_S:
            self._submit_timbre()  # (the change before never came back)
        self._warm_next()
        # A timbre change replans and re-decodes a note: at most TIMBRE_APPLY_PER_FRAME notes a
        # frame, so that moving many notes cannot overrun one frame's time.
        applied = 0
        retaken: list[_Voice] = []
        while self._timbre_ready and applied < TIMBRE_APPLY_PER_FRAME and not self._busy():
            epoch, slot, note, prepared = self._timbre_ready.pop(0)
            v = self.voices[slot]
            if epoch >= self._timbre_result_epoch and v is not None and v.note is note:
                if self._timbre_retakable(v, len(retaken)):  # into the frame written last
                    note.apply_timbre(prepared, frame=note.frame - 1)
                    retaken.append(v)
                else:
                    note.apply_timbre(prepared)
                applied += 1
                self.heavy_until = max(self.heavy_until, time.monotonic() + TIMBRE_EXTRA_S)
        if retaken:
            self._retake_rows(writer, sorted(self._last.rows[v.slot] for v in retaken), rerender=True)
        ready, self._ready = self._ready, []
        due = []
        for request, start in ready:
            if request.target >= writer.write:  # a timetag not reached yet
                self._ready.append((request, start))
            else:
                due.append((request, start))
        # More notes starting at once than there are voices (a 32-note chord, 12 voices): the
        # first would be stolen by the last within this very frame, each after a whole start's
        # work (its first frames decoded and rendered) for a 16 ms blip. Only the last ones start.
        room = 1 if any(request.mono for request, _ in due) else self.max_voices
        if len(due) > room:
            self.starts_skipped += len(due) - room
            due = due[len(due) - room:]
        # A start costs about 1 ms (its first frames decoded and rendered): past START_WORK_S of
        # this frame's work, the rest start in the next frame (a 12-note chord over two or three
        # frames, its heads already sounding) rather than this frame coming late.
        for i, (request, start) in enumerate(due):
            if i and (self.hurry or time.perf_counter() - self.frame_started > START_WORK_S):
                self._ready.extend(due[i:])
                break
            self._start(request, start, writer)
        if (self._heads_wanted or self._head_job) and self.head_table is not None and not self._busy():
            self._make_head()
        if self._offs:
            due = [o for o in self._offs if o[0] < writer.write + self.frame_samples]
            if due:
                self._offs = [o for o in self._offs if o not in due]
                for _, pitch in sorted(due):
                    self.note_off(pitch)

    def _busy(self) -> bool:
        """True when work that can wait should wait (see OPTIONAL_WORK_S)."""
        return self.hurry or time.perf_counter() - self.frame_started > OPTIONAL_WORK_S

    def _free_slot(self) -> int:
        free = [i for i, v in enumerate(self.voices) if v is None]
        if free:
            return free[0]
        # Steal: the oldest voice not already fading out fades now; its slot is taken after.
        sounding = self._sounding()
        victim = min(sounding or [v for v in self.voices if v is not None], key=lambda v: v.order)
        self._retire(victim.slot)
        return victim.slot

    def _start(self, request: _StartRequest, start, writer: RingWriter) -> None:
        from synth.hold import HeldNote

        if request.mono:
            for v in self._sounding():  # a new attack in mono mode replaces the voice
                v.fade = STEAL_FRAMES
        sounding = self._sounding()
        if len(sounding) >= self.max_voices:
            min(sounding, key=lambda v: v.order).fade = STEAL_FRAMES
        slot = self._free_slot()
        now = time.monotonic()
        recent = self._recent_starts
        recent.append(now)
        while recent[0] < now - BUSY_WINDOW_S:
            recent.popleft()
        if len(recent) > BUSY_STARTS:
            self.heavy_until = max(self.heavy_until, now + BUSY_WINDOW_S)
        note = HeldNote(self.generator, start.params, self.sample_rate, start=start, synth=False,
                        decode_block=LIVE_DECODE_BLOCK)
        self._order += 1
        voice = _Voice(request.pitch, note, request.gain, slot, self._order, target=request.target,
                       proxy=request.proxy)
        if request.head is not None:
            voice.head_end = request.head[1] - writer.origin
            writer.control[C_HEADS] += 1
        request.voice = voice
        if self.global_bend:
            self._apply_bend(voice)
        if self.global_pressure:
            note.set_pressure(self.global_pressure, replan=False)
        self._catch_up(voice, writer, request.head[0] if request.head is not None else None)
        self.voices[slot] = voice
        if not request.proxy:
            self._want_head(start)
        if request.released:
            self._release(voice)

    def _catch_up(self, voice: _Voice, writer: RingWriter, head_start: int | None = None) -> None:
        """Render the voice's first frames from the next block the callback has not started, in
        a bank of its own, into the ring, and hand the voice to the main bank. A voice whose head
        the mixer plays from `head_start` is rendered from there (its reverb from that block), and
        its dry samples come in as the head goes out (`_head_gain`)."""
        control = writer.control
        # The work first (from the earliest block it could start in), then where it starts: the
        # later the callback's position is read, the less likely a block starts while we write.
        earliest = max(int(control[C_READ]), voice.target) if head_start is None else head_start
        first = self.frame_at(max(0, earliest - writer.origin))
        frames = self.bank.frame_index - first
        key = voice.note.params.key
        if frames <= 0:
            self.bank.reset(voice.slot, seeds=[int(key[:16], 16)])
            return
        bank = self._head_bank  # (one, reused: a bank's tables take a while to build)
        bank.reset(0, seeds=[int(key[:16], 16)])
        bank.frame_index = first
        # A note's first decoder block depends on nothing but the note (unless a bend or pressure
        # is on): kept, a known note starts without the decoder.
        plain = not (self.global_bend or self.global_pressure or voice.proxy)
        head = self._first_blocks.get(key) if plain else None
        if head is not None:
            voice.note.put_block(0, head)
        self._decode([voice.note], frames)
        if plain and head is None:
            self._first_blocks[key] = voice.note.decoded_block(0)
            while len(self._first_blocks) > START_CACHE:
                self._first_blocks.popitem(last=False)
        c = voice.note.controls_frames(frames)
        dry = bank.render_chunk(c["f0_hz"][None], c["amplitude"][None] * voice.gain,
                                c["harmonic_distribution"][None], c["noise_magnitudes"][None] * voice.gain)[0]
        read = int(control[C_READ])
        # The next block the callback has not started (it publishes C_READ before it reads).
        begin = max(read + (writer.blocksize if control[C_IN_CALLBACK] else 0), voice.target)
        at = writer.origin + self.frame_start(first)
        lead_in = max(0, begin - at)
        if lead_in >= dry.size:  # (slow: the callback has passed these frames) from the main bank on
            self.bank.copy_voice(bank, 0, voice.slot)
            return
        onset = lead_in if head_start is None else min(max(0, head_start - at), dry.size - 1)
        self._fade_in(dry, onset, FADE_IN_S)
        # Their reverb: the main reverb takes them as if they had come in their time (the wet
        # over the frames written is returned, the rest comes out of it from the next frame on).
        wet = self.reverb.add_past(dry)
        self._last = None  # (a retake would restore the reverb from before it)
        if head_start is None:
            wet += dry
        else:
            if lead_in > onset:  # the callback is past the head's start: its reverb from here
                self._fade_in(wet, lead_in, WET_FADE_S)
            wet += dry * self._head_gain(voice, at - writer.origin, dry.size)
        writer.add(at, wet)
        if head_start is not None and begin > writer.origin + voice.head_end - self.head_xfade:
            control[C_TORN] += 1  # (too late for the cross-fade: a gap after the head)
        if int(control[C_READ]) > begin:  # a block started while we wrote: its start may be torn
            control[C_TORN] += 1
        self.bank.copy_voice(bank, 0, voice.slot)

    def _fade_in(self, x: np.ndarray, at: int, seconds: float) -> None:
        """Silence x before `at`, and fade it in linearly over `seconds` from there (in place)."""
        x[:at] = 0.0
        fade = min(x.size - at, max(1, int(seconds * self.sample_rate)))
        x[at : at + fade] *= np.linspace(0.0, 1.0, fade, endpoint=False, dtype=np.float32)

    def _retire(self, slot: int) -> None:
        self.voices[slot] = None

    def skip_frames(self, frames: int) -> None:
        """The writer fell behind by `frames` frames: the voices skip them too (a gap, counted)."""
        self._skipped += frames
        self._last = None
        for v in self.voices:
            if v is not None:
                self._decode([v.note], frames)
                v.note.controls_frames(frames)
        # The reverb keeps the bank's clock (a new voice's first frames go into it by time,
        # `_catch_up`): silence for the frames skipped, its tail rings on through the gap.
        n = self.frame_start(self.bank.frame_index + frames) - self.frame_start(self.bank.frame_index)
        if self.reverb.is_silent():
            self.reverb.time += n
        else:
            self.reverb.process(np.zeros(n, np.float32))
        self.bank.frame_index += frames

    # ---- rendering ---------------------------------------------------------------------------
    @property
    def n_sounding(self) -> int:
        return sum(1 for v in self.voices if v is not None)

    def _decode(self, notes: list, n_frames: int, ahead: int = 0, limit: int | None = None) -> None:
        """Decode, in one batched call per window length, the blocks these notes need next (for
        at most `limit` notes)."""
        from synth.hold import control_level_db, decode_controls_batch

        groups: dict[int, list] = {}
        taken = 0
        for note in notes:
            if limit is not None and taken >= limit:
                break
            b = note.block_needed(n_frames, ahead)
            if b is None:
                continue
            taken += 1
            f0, ld, z, offset = note.block_inputs(b)
            groups.setdefault(len(f0), []).append((note, b, f0, ld, z, offset))
        for items in groups.values():
            out = decode_controls_batch(self.generator, np.stack([i[2] for i in items]),
                                        np.stack([i[3] for i in items]), np.stack([i[4] for i in items]))
            n = out["f0_hz"].shape[1]
            out["level_db"] = control_level_db(  # every window's levels in one call
                out["amplitude"].reshape(-1), out["harmonic_distribution"].reshape(len(items) * n, -1),
                out["noise_magnitudes"].reshape(len(items) * n, -1), out["f0_hz"].reshape(-1),
                self.meter).reshape(len(items), n)
            for row, (note, b, _, _, _, offset) in enumerate(items):
                note.put_block(b, {k: v[row, offset:] for k, v in out.items()})

    def render_frame(self) -> np.ndarray:
        """One frame of every voice, mixed, with the reverb: float32 [its samples]."""
        active = [v for v in self.voices if v is not None]
        j = self.bank.frame_index
        n = self.frame_start(j + 1) - self.frame_start(j)
        self._last = None
        if not active:
            self.bank.frame_index += 1
            if self.reverb.is_silent():
                self.reverb.time += n
                return np.zeros(n, np.float32)
            return self.reverb.process(np.zeros(n, np.float32))
        notes = [v.note for v in active]
        # Planning, within a budget a frame: a note-off of a whole chord replans every voice, and
        # that is spread over a few frames (the voices play their old plan meanwhile). Voices that
        # play an old plan go first.
        budget = PLAN_BUDGET_FRAMES
        for note in sorted(notes, key=lambda note: not note.playable_stale()):
            if budget <= 0 or self._busy():
                break
            budget -= note.plan_ahead(PLAN_AHEAD_FRAMES, budget)
        if not self._busy():
            self._prefetch(notes)  # the next blocks, ahead of time
        # What this frame needs: a note whose plan just changed (note-off, timbre) plays its old
        # plan's block until the new one is decoded; one with neither holds its last frame's
        # controls for up to HOLD_FRAMES_MAX frames, while the decoding of many such notes is
        # spread over frames (URGENT_PER_FRAME a frame when there is time); past that, now.
        urgent = [note for note in notes if note.urgent()]
        if urgent:
            must = [note for note in urgent if note.must_decode()]
            rest = [note for note in urgent if not note.must_decode()][:URGENT_PER_FRAME]
            self._decode(must + ([] if self._busy() else rest), 1)
        k = len(active)
        cfg = self.generator.config
        f0 = np.empty((k, 1), np.float32)
        amp = np.empty((k, 1), np.float32)
        dist = np.empty((k, 1, cfg.n_harmonics), np.float32)
        noise = np.empty((k, 1, cfg.n_noise_bands), np.float32)
        for i, v in enumerate(active):
            g = v.gain
            if v.fade is not None:  # linear to 0 over STEAL_FRAMES frames (the bank ramps within each)
                v.fade -= 1
                g *= v.fade / STEAL_FRAMES
            v.note.controls_frame_into(f0, amp, dist, noise, i, g, stale_ok=True, hold_ok=True)
        self.bank.save_state(self._bank_saved)  # (for a retake of this frame)
        self.reverb.checkpoint(self._reverb_saved)
        dry = self.bank.render_chunk(f0, amp, dist, noise, voices=[v.slot for v in active])
        begin = self.frame_start(j)
        out = self._mix(active, dry, begin, n)
        self._last = _LastFrame(begin, n, active, {v.slot: i for i, v in enumerate(active)}, f0, amp, dist,
                                noise, dry, out)
        for v in active:  # over: a finished fade, or a note whose controls ended for good
            if v.note.ended or v.fade == 0:
                self._retire(v.slot)
        return out

    def _mix(self, active: list, dry: np.ndarray, begin: int, n: int) -> np.ndarray:
        """The frame's voices (dry [k, n]) mixed, through the reverb, less the dry part of the
        heads the mixer still plays."""
        out = self.reverb.process(dry.sum(axis=0) if len(active) > 1 else dry[0])
        for i, v in enumerate(active):  # heads the mixer still plays: the reverb has the voice, the dry fades in
            if v.head_end is not None:
                if begin >= v.head_end:
                    v.head_end = None
                else:
                    out = out - dry[i] * (1.0 - self._head_gain(v, begin, n))
        return out
