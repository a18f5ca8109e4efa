"""The audio side: a polyphonic mixer run by one output stream.

`Mixer.render(out)` fills one block. It is the whole audio callback: it takes commands posted
by other threads from a `collections.deque` (append/popleft are atomic in CPython, so no lock
is shared with rendering), starts, releases and steals voices at the exact sample a command
asks for, mixes the voices, applies the master gain (ramped per sample from the last block's
value, so no zipper) and a peak limiter with a hard clip at full scale. Every buffer and the
voice table are numpy arrays allocated up front; the callback creates no arrays, takes no
lock, calls no generator and logs nothing (counters are read by other threads).

Time: the mixer counts samples (`block_start`). Outputs publish, per block, the pair
(block_start, the block's DAC time in the output's clock), from which `sample_at(t)` maps a
wall-clock time (an OSC timetag) to the sample that reaches the DAC then. With PortAudio the
clock is the stream's time, read when the timetag is converted (`stream.time` plus the timetag's
distance from now), and the pair comes from `outputBufferDacTime`, which follows the hardware,
not the callback's jitter; on JACK both are the frame clock, so a jump of it after an xrun moves
both together.

Outputs: `SoundDeviceOutput` (one sounddevice stream), `ClockOutput` (no sound card: an
internal real-time clock, optionally writing the stream to a WAV file).
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import threading
import time
from collections import deque
from enum import IntEnum

import numpy as np

log = logging.getLogger("osc_server.audio")

IMMEDIATE = -1
NEVER = np.iinfo(np.int64).max // 4

# Event kinds posted to the mixer.
EV_ON, EV_OFF, EV_PANIC, EV_GAIN, EV_ONS, EV_HEAD = 0, 1, 2, 3, 4, 5
HEAD_FADE_IN_S = 0.001  # a head (see `Mixer.head_on`) fades in over its first millisecond

# Room in the event table for immediate (and late) events on top of `max_pending` scheduled ones:
# they run within the block that takes them, so they never accumulate, and a schedule full of
# future notes can never keep out /panic or a live note. More in one block wait for the next.
IMMEDIATE_ROOM = 4096
_SEQ_MOD = 1_000_000  # an event's sort key: target sample * _SEQ_MOD + arrival order


class Stat(IntEnum):
    """Indices of `Mixer.stats` (counters read by other threads)."""

    NOTES_STARTED = 0
    NOTES_STOLEN = 1
    EVENTS_DROPPED = 2  # scheduled events refused because max_pending were pending
    UNDERRUNS = 3
    VOICES = 4  # voices sounding after the last block (a gauge, not a counter)
    CLIPPED_BLOCKS = 5
    EVENTS_DONE = 6
    SKIPPED_NOTES = 7  # note-ons whose release came before their start
    STREAM_LATE = 8  # blocks the live voices' ring did not cover in full (their process was late)


class Mixer:
    """Voices and the mix; `render(out)` is the audio callback's body.

    Other threads call `note_on`, `note_off`, `panic`, `set_gain_db`; each posts one event.
    `target` is an absolute sample index (see `sample_at`), or IMMEDIATE for the next block.
    At most `max_pending` scheduled events (beyond the block being rendered) are held; more are
    refused (`Stat.EVENTS_DROPPED`; `n_scheduled` lets the sender refuse them first). Immediate
    and late events are never refused: they have `IMMEDIATE_ROOM` of their own per block.
    """

    def __init__(self, sample_rate: int, max_block: int = 8192, max_voices: int = 32,
                 release_ms: float = 20.0, steal_ms: float = 5.0, limit: float = 0.95,
                 limiter_release_s: float = 0.2, max_pending: int = 8192):
        self.sample_rate = int(sample_rate)
        self.max_voices = int(max_voices)
        slots = 2 * self.max_voices  # room for voices fading out after a steal
        self.n_slots = slots
        self.release_len = max(1, int(round(release_ms * 1e-3 * sample_rate)))
        self.steal_len = max(1, int(round(steal_ms * 1e-3 * sample_rate)))
        self.limit = float(limit)
        self.limiter_release_s = limiter_release_s

        # Voice table.
        self.active = np.zeros(slots, dtype=bool)
        self.pitch = np.zeros(slots, dtype=np.int64)
        self.start = np.zeros(slots, dtype=np.int64)
        self.release = np.full(slots, NEVER, dtype=np.int64)
        self.fade = np.ones(slots, dtype=np.int64)
        self.vgain = np.zeros(slots, dtype=np.float32)
        self.order = np.zeros(slots, dtype=np.int64)
        self.fade_in_at = np.full(slots, -NEVER, dtype=np.int64)  # heads: where their fade-in starts
        self.audio: list = [None] * slots
        self._order_seq = 0

        # Events taken from the inbox: sort keys in a preallocated array, the posted tuples
        # (kind, target, seq, payload) in a preallocated list; `max_pending` scheduled events plus
        # IMMEDIATE_ROOM for the ones due in the block being rendered.
        self.max_pending = int(max_pending)
        self._ev_cap = self.max_pending + IMMEDIATE_ROOM
        self._ev_key = np.zeros(self._ev_cap, dtype=np.int64)
        self._ev: list = [None] * self._ev_cap
        self._n_ev = 0
        self._n_sched = 0  # events in the table beyond the current block (audio thread only)
        self._panic_seq = 0  # seq of the last panic taken: anything posted before it is cleared
        self.inbox: deque = deque()
        # Events posted with a target (not IMMEDIATE) and not yet taken from the inbox: counted by
        # the posting threads (itertools.count: atomic under the GIL) and by the callback.
        self._seq = itertools.count(1)
        self._sched_count = itertools.count(1)
        self._sched_posted = 0
        self._sched_taken = 0

        # Release envelopes, 1 -> 0 as a raised cosine (0.5 + 0.5 cos(pi k / fade)), by length.
        self._fades = {n: (0.5 + 0.5 * np.cos(np.pi * np.arange(n) / n)).astype(np.float32)
                       for n in (self.release_len, self.steal_len)}
        self.fade_in_len = max(1, int(HEAD_FADE_IN_S * sample_rate))
        self._fade_in = np.linspace(0.0, 1.0, self.fade_in_len, endpoint=False, dtype=np.float32)

        # Scratch.
        self._mix = np.zeros(max_block, dtype=np.float32)
        self._seg = np.zeros(max_block, dtype=np.float32)
        self._ramp = np.arange(max_block, dtype=np.float32)
        self._tmp = np.zeros(max_block, dtype=np.float32)

        self.block_start = 0
        self.block_frames = 0  # the last block's length
        self.busy = False
        self._gain = 1.0
        self._gain_target = 1.0
        self._lim = 1.0

        # Counters (read by other threads): indexed by `Stat`, names in STAT_NAMES.
        self.stats = np.zeros(len(Stat), dtype=np.int64)
        self.cpu = np.zeros(3, dtype=np.float64)  # total s, max s, blocks
        self.block_times = np.zeros(4096, dtype=np.float64)  # the last blocks' durations (s), a ring
        # Live voices (osc_server.voices): a ring of samples another process writes ahead of us.
        self._ring: np.ndarray | None = None
        self._ring_control: np.ndarray | None = None

    def attach_ring(self, ring: np.ndarray, control: np.ndarray) -> None:
        """Mix `ring` (float32, indexed by absolute sample modulo its size) into every block: the
        voice process writes it up to control[0] and the callback publishes in control[1] how far
        it reads (before reading), so the writer never touches samples being read."""
        self._ring_control = control
        self._ring = ring

    def add_fade(self, n: int) -> None:
        """Make release fades of `n` samples available (before the stream starts: the callback
        only looks them up)."""
        n = int(n)
        if n not in self._fades:
            self._fades[n] = (0.5 + 0.5 * np.cos(np.pi * np.arange(n) / n)).astype(np.float32)

    STAT_NAMES = tuple(s.name.lower() for s in Stat)

    # ---- producer side (any thread) -----------------------------------------------------
    def post(self, kind: int, target: int, payload) -> None:
        target = int(target)
        if target >= 0:  # scheduled (IMMEDIATE is negative): counted until the callback takes it
            n = next(self._sched_count)
            if n > self._sched_posted:
                self._sched_posted = n
        self.inbox.append((kind, target, next(self._seq), payload))

    def note_on(self, audio: np.ndarray, gain: float, pitch: int, target: int = IMMEDIATE,
                release_at: int = NEVER) -> None:
        self.post(EV_ON, target, (audio, float(gain), int(pitch), int(release_at)))

    def head_on(self, audio: np.ndarray, gain: float, pitch: int, start: int, release_at: int,
                fade: int) -> None:
        """Play `audio` from absolute sample `start` (the next block, or one already begun: a late
        event then skips what it missed), fading in over HEAD_FADE_IN_S from the first sample it
        plays, and out over `fade` samples (`add_fade`) from `release_at`. The live voices' known
        notes start like this (`osc_server.voices`): the voice process takes over at the fade."""
        self.post(EV_HEAD, start, (audio, float(gain), int(pitch), int(start), int(release_at), int(fade)))

    def notes_on(self, notes: list) -> None:
        """Start several voices in the same block, immediately: [(audio, gain, pitch, release_at)]
        (one event, so a callback between two posts cannot split them a block apart)."""
        self.post(EV_ONS, IMMEDIATE, [(a, float(g), int(p), int(r)) for a, g, p, r in notes])

    def note_off(self, pitch: int, target: int = IMMEDIATE) -> None:
        self.post(EV_OFF, target, int(pitch))

    def panic(self) -> None:
        self.post(EV_PANIC, IMMEDIATE, None)

    def set_gain_db(self, db: float) -> None:
        self.post(EV_GAIN, IMMEDIATE, 10.0 ** (db / 20.0))

    @property
    def n_voices(self) -> int:
        return int(self.stats[Stat.VOICES])

    @property
    def n_pending(self) -> int:
        """Events not yet run: in the table and still in the inbox, immediate ones included."""
        return self._n_ev + len(self.inbox)

    @property
    def n_scheduled(self) -> int:
        """Scheduled events pending: in the table beyond the current block, plus those posted with a
        target and still in the inbox. Read without a lock: approximately right, which is enough
        for a sender to refuse new scheduled events once it reaches `max_pending`."""
        return self._n_sched + max(0, self._sched_posted - self._sched_taken)

    # ---- the callback -------------------------------------------------------------------
    def render(self, out: np.ndarray) -> None:
        """Fill `out` ([frames, channels] float32) with the next block."""
        # Other Python threads that would take the GIL back mid-block look at this and wait
        # (CPython otherwise hands the GIL to a waiting thread every switch interval).
        self.busy = True
        t_cpu = time.perf_counter()
        n = out.shape[0]
        t0 = self.block_start
        t1 = t0 + n
        self._take_inbox(t0, t1)
        self._run_events(t0, t1)

        mix = self._mix[:n]
        mix.fill(0.0)
        seg_all, ramp = self._seg, self._ramp
        voices = 0
        for v in range(self.n_slots):
            if not self.active[v]:
                continue
            audio = self.audio[v]
            start = int(self.start[v])
            end = min(start + audio.shape[0], int(self.release[v]) + int(self.fade[v]))
            j0 = max(0, start - t0)
            j1 = min(n, end - t0)
            if j1 > j0:
                a0 = t0 + j0 - start
                seg = seg_all[j0:j1]
                np.multiply(audio[a0:a0 + (j1 - j0)], self.vgain[v], out=seg)
                fade_in = int(self.fade_in_at[v])
                if fade_in + self.fade_in_len > t0 + j0:  # a head fading in
                    k0 = max(j0, fade_in - t0)
                    pos = t0 + k0 - fade_in
                    m = min(self.fade_in_len - pos, j1 - k0)
                    if m > 0:
                        seg[k0 - j0:k0 - j0 + m] *= self._fade_in[pos:pos + m]
                rel = int(self.release[v])
                if rel < t0 + j1:
                    # Raised-cosine fade from `rel` over `fade` samples, from a precomputed table.
                    k0 = max(j0, rel - t0)  # first sample of this block inside the fade
                    pos = t0 + k0 - rel
                    seg[k0 - j0:] *= self._fades[int(self.fade[v])][pos:pos + (j1 - k0)]
                mix[j0:j1] += seg
            if end <= t1:
                self.active[v] = False
                self.audio[v] = None
            else:
                voices += 1
        self.stats[Stat.VOICES] = voices

        ring = self._ring
        if ring is not None:
            control = self._ring_control
            control[8] = 1  # (C_IN_CALLBACK) reading: a new voice starts after t1, not at t0
            control[1] = t1  # (C_READ) the writer keeps off [.., t1) from now on
            if control[2]:  # (C_RUNNING)
                k = min(n, int(control[0]) - t0)  # (C_WRITE) samples written for this block
                if k < n:
                    self.stats[Stat.STREAM_LATE] += 1
                if k > 0:
                    size = ring.shape[0]
                    i = t0 % size
                    first = min(k, size - i)
                    mix[:first] += ring[i:i + first]
                    if first < k:
                        mix[first:k] += ring[:k - first]
            control[8] = 0

        # Master gain, latched per block and ramped per sample.
        g0, g1 = self._gain, self._gain_target
        tmp = self._tmp[:n]
        if g0 != g1:
            np.multiply(ramp[:n], (g1 - g0) / n, out=tmp)
            tmp += g0
            mix *= tmp
            self._gain = g1
        elif g1 != 1.0:
            mix *= g1

        # Peak limiter: instant attack, smooth release; then a hard clip as a safety net.
        np.abs(mix, out=tmp)
        peak = float(tmp.max()) if n else 0.0
        target = self.limit / peak if peak > self.limit else 1.0
        lim0 = self._lim
        if target < lim0:
            lim0 = lim1 = target
        else:
            coef = 1.0 - math.exp(-n / (self.limiter_release_s * self.sample_rate))
            lim1 = min(target, lim0 + (1.0 - lim0) * coef)
        if lim0 != 1.0 or lim1 != 1.0:
            np.multiply(ramp[:n], (lim1 - lim0) / n, out=tmp)
            tmp += lim0
            mix *= tmp
        self._lim = lim1
        if peak * max(lim0, lim1) > 1.0:
            self.stats[Stat.CLIPPED_BLOCKS] += 1
        np.clip(mix, -1.0, 1.0, out=mix)

        for c in range(out.shape[1]):
            out[:, c] = mix
        self.block_start = t1
        self.block_frames = n
        dt = time.perf_counter() - t_cpu
        self.cpu[0] += dt
        if dt > self.cpu[1]:
            self.cpu[1] = dt
        self.block_times[int(self.cpu[2]) % self.block_times.size] = dt
        self.cpu[2] += 1
        self.busy = False

    def _take_inbox(self, t0: int, t1: int) -> None:
        """Move posted events into the table. Scheduled ones (at or past t1) are refused past
        `max_pending`; due ones (immediate, late, or inside this block) always have room, and if
        more arrive in one block than IMMEDIATE_ROOM the rest wait in the inbox (in order).
        A panic clears the schedule as it is taken, so the events posted after it find room."""
        inbox = self.inbox
        while inbox:
            item = inbox[0]  # only this thread pops: it stays the head until popped
            target = item[1]
            seq = item[2]
            due = target < t1
            if item[0] == EV_PANIC:
                self._clear_before(seq)
            elif due and self._n_ev >= self._ev_cap:
                return  # no room this block: it (and what follows it) waits for the next
            inbox.popleft()
            if target >= 0:
                self._sched_taken += 1
            if seq < self._panic_seq:
                continue  # posted before a panic (out of order): cleared with the schedule
            if due:
                if target < t0:
                    target = t0  # immediate, or late: now
            elif self._n_sched >= self.max_pending:
                self.stats[Stat.EVENTS_DROPPED] += 1
                continue
            else:
                self._n_sched += 1
            i = self._n_ev
            # Order by target sample, then by arrival.
            self._ev_key[i] = target * _SEQ_MOD + seq % _SEQ_MOD
            self._ev[i] = item
            self._n_ev = i + 1

    def _run_events(self, t0: int, t1: int) -> None:
        limit = t1 * _SEQ_MOD
        while self._n_ev:
            keys = self._ev_key[: self._n_ev]
            i = int(keys.argmin())
            key = int(keys[i])
            if key >= limit:
                break
            kind, _, seq, payload = self._ev[i]
            target = key // _SEQ_MOD  # late events run at t0
            last = self._n_ev - 1
            self._ev_key[i] = self._ev_key[last]
            self._ev[i] = self._ev[last]
            self._ev[last] = None
            self._n_ev = last
            self.stats[Stat.EVENTS_DONE] += 1
            if kind == EV_ON:
                self._start_voice(target, *payload)
            elif kind == EV_ONS:
                for note in payload:
                    self._start_voice(target, *note)
            elif kind == EV_OFF:
                self._release_pitch(payload, target)
            elif kind == EV_PANIC:
                for v in range(self.n_slots):
                    if self.active[v]:
                        self._release_voice(v, target, self.steal_len)
                # (the events posted before it were cleared when it was taken)
            elif kind == EV_HEAD:
                audio, gain, pitch, start, release_at, fade = payload
                v = self._start_voice(target, audio, gain, pitch, release_at)
                if v >= 0:
                    self.start[v] = start  # (before `target` when late: it plays on from there)
                    self.fade[v] = fade
                    self.fade_in_at[v] = target
            elif kind == EV_GAIN:
                self._gain_target = payload
        # What is left lies beyond this block: the schedule.
        self._n_sched = self._n_ev

    def _clear_before(self, seq: int) -> None:
        """Drop every event posted before `seq` (a panic's): those in the table now, and those
        still in the inbox as they are taken; events posted after it stay (compacted in place:
        nothing allocated)."""
        if seq > self._panic_seq:
            self._panic_seq = seq
        ev, keys = self._ev, self._ev_key
        n = self._n_ev
        j = 0
        for k in range(n):
            item = ev[k]
            if item[2] > seq:
                if j != k:
                    keys[j] = keys[k]
                    ev[j] = item
                j += 1
        for k in range(j, n):
            ev[k] = None
        self._n_ev = j
        self._n_sched = j  # what is left was posted after the panic (a race): count it as scheduled

    def _start_voice(self, target: int, audio, gain: float, pitch: int, release_at: int) -> int:
        """Start a voice at `target`; its slot (-1 if skipped)."""
        if release_at <= target:
            self.stats[Stat.SKIPPED_NOTES] += 1
            return -1
        sounding = 0
        oldest, oldest_order = -1, NEVER
        free = -1
        for v in range(self.n_slots):
            if not self.active[v]:
                if free < 0:
                    free = v
            elif self.release[v] > target:
                sounding += 1
                if self.order[v] < oldest_order:
                    oldest, oldest_order = v, int(self.order[v])
        if sounding >= self.max_voices and oldest >= 0:
            self._release_voice(oldest, target, self.steal_len)
            self.stats[Stat.NOTES_STOLEN] += 1
        if free < 0:
            # Every slot busy (many fading voices): take the one that started first.
            free = int(np.argmin(self.order))
        self._order_seq += 1
        self.active[free] = True
        self.audio[free] = audio
        self.vgain[free] = gain
        self.pitch[free] = pitch
        self.start[free] = target
        self.release[free] = release_at
        self.fade[free] = self.release_len
        self.order[free] = self._order_seq
        self.fade_in_at[free] = -NEVER
        self.stats[Stat.NOTES_STARTED] += 1
        return free

    def _release_voice(self, v: int, at: int, fade: int) -> None:
        at = max(at, int(self.start[v]))
        if at + fade < self.release[v] + self.fade[v]:  # whichever release ends first wins
            self.release[v] = at
            self.fade[v] = fade

    def _release_pitch(self, pitch: int, at: int) -> None:
        for v in range(self.n_slots):
            if self.active[v] and self.pitch[v] == pitch and self.start[v] <= at and self.release[v] > at:
                self._release_voice(v, at, self.release_len)


class _Clock:
    """Maps wall-clock/monotonic times to sample indices from the last block's (sample, DAC time)."""

    def __init__(self, sample_rate: int):
        self.sample_rate = sample_rate
        self.anchor = np.zeros(2, dtype=np.float64)  # [block_start, dac_time in output clock]
        self.valid = False
        self.output_minus_monotonic = 0.0

    def sample_at_monotonic(self, t_mono: float) -> int:
        if not self.valid:
            return IMMEDIATE
        block_start, dac = self.anchor.tolist()  # one call: a consistent pair
        t_out = t_mono + self.output_minus_monotonic
        return int(round(block_start + (t_out - dac) * self.sample_rate))


RT_PRIORITY_AUDIO = 70  # SCHED_FIFO priorities, as JACK uses for its own threads
RT_PRIORITY_OSC = 60
# Every other thread of the audio process that takes the GIL (render threads, the engine's control
# thread, the HTTP server's threads) runs at this SCHED_FIFO priority where allowed: below the
# callback and the OSC thread, above every ordinary process. A thread at normal priority that
# another process preempts while it holds the GIL would stall the callback until it runs again
# (priority inversion); that is what a busy laptop does. Processes they start reset themselves to
# normal scheduling (`normal_priority`).
RT_PRIORITY_HELPERS = 50
# CPython hands the GIL to a waiting thread after this long (default 5 ms, close to a 256-frame
# block): the audio process and the voice process both set it (sys.setswitchinterval).
SWITCH_INTERVAL_S = 0.0005


def normal_priority() -> None:
    """SCHED_OTHER for the calling thread: children started from a real-time thread inherit its
    policy, and a render or encoder process must never compete with the audio callback."""
    if hasattr(os, "sched_setscheduler"):
        try:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        except (PermissionError, OSError):
            pass


def try_realtime(priority: int) -> bool:
    """Give the calling thread SCHED_FIFO `priority` if the system allows it (root, or rtprio
    in limits.conf as audio users have); False otherwise. Never raises."""
    if not hasattr(os, "sched_setscheduler"):
        return False
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (PermissionError, OSError):
        return False
    return True


def wall_to_monotonic(t_wall: float) -> float:
    return t_wall - (time.time() - time.monotonic())


class SoundDeviceOutput:
    """One sounddevice OutputStream whose callback is `Mixer.render`."""

    kind = "sounddevice"

    def __init__(self, mixer: Mixer, device=None, blocksize: int = 256, channels: int | None = None,
                 realtime: bool = True):
        import sounddevice as sd

        self.realtime = realtime
        self.realtime_ok: bool | None = None  # set by the first callback

        self.sd = sd
        self.mixer = mixer
        self.clock = _Clock(mixer.sample_rate)
        info = sd.query_devices(device, "output")
        self.device_name = f"{info['name']} ({sd.query_hostapis(info['hostapi'])['name']})"
        ch = channels or min(2, int(info["max_output_channels"]))
        self.stream = sd.OutputStream(
            samplerate=mixer.sample_rate, blocksize=blocksize, device=device, channels=ch,
            dtype="float32", latency="low", callback=self._callback,
        )
        self.blocksize = blocksize

    def _callback(self, outdata, frames, time_info, status) -> None:
        if self.realtime_ok is None:
            # The host API's thread: raise it to real-time priority once (reported by `start`).
            self.realtime_ok = try_realtime(RT_PRIORITY_AUDIO) if self.realtime else False
        if status.output_underflow:
            self.mixer.stats[Stat.UNDERRUNS] += 1
        # One numpy call (atomic under the GIL): readers never see a block start with another's time.
        self.clock.anchor[:] = (self.mixer.block_start, time_info.outputBufferDacTime)
        self.clock.valid = True
        self.mixer.render(outdata)

    def start(self) -> None:
        self.stream.start()

    def sample_at(self, t_wall: float) -> int:
        # The stream clock read now (not an offset measured once): on JACK it is the frame clock,
        # which can jump against time.monotonic() after an xrun; the last block's DAC time moves with it.
        if not self.clock.valid:
            return IMMEDIATE
        t_out = self.stream.time + (t_wall - time.time())
        block_start, dac = self.clock.anchor.tolist()  # one call: a consistent pair
        return int(round(block_start + (t_out - dac) * self.mixer.sample_rate))

    @property
    def latency_s(self) -> float:
        return float(self.stream.latency)

    def close(self) -> None:
        self.stream.stop()
        self.stream.close()


class ClockOutput:
    """No sound card: run the mixer on an internal real-time clock; optionally write a WAV."""

    kind = "clock"

    def __init__(self, mixer: Mixer, blocksize: int = 256, record: str | None = None, channels: int = 2,
                 realtime: bool = True):
        self.mixer = mixer
        self.realtime = realtime
        self.realtime_ok: bool | None = None
        self.blocksize = blocksize
        self.clock = _Clock(mixer.sample_rate)
        self.record = record
        self.channels = channels
        self.device_name = f"internal clock, writing {record}" if record else "internal clock (silent)"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audio-clock", daemon=True)
        self._file = None

    def start(self) -> None:
        if self.record:
            import soundfile

            self._file = soundfile.SoundFile(self.record, "w", samplerate=self.mixer.sample_rate,
                                             channels=self.channels, subtype="FLOAT")
        self._t0 = time.monotonic()
        self.clock.output_minus_monotonic = 0.0
        self._thread.start()

    def _run(self) -> None:
        self.realtime_ok = try_realtime(RT_PRIORITY_AUDIO) if self.realtime else False
        out = np.zeros((self.blocksize, self.channels), dtype=np.float32)
        sr = self.mixer.sample_rate
        while not self._stop.is_set():
            start = self.mixer.block_start
            due = self._t0 + start / sr
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            elif now - due > 4 * self.blocksize / sr:
                self.mixer.stats[Stat.UNDERRUNS] += 1  # late: an under-run of the internal clock
                self._t0 = now - start / sr
            self.clock.anchor[:] = (start, self._t0 + start / sr + self.blocksize / sr)
            self.clock.valid = True
            self.mixer.render(out)
            if self._file is not None:
                self._file.write(out)

    def sample_at(self, t_wall: float) -> int:
        return self.clock.sample_at_monotonic(wall_to_monotonic(t_wall))

    @property
    def latency_s(self) -> float:
        return self.blocksize / self.mixer.sample_rate

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        if self._file is not None:
            self._file.close()
