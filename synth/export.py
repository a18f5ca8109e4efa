"""Export a preset as a sample instrument: WAV samples plus an `.sfz` file any SFZ player plays.

    export_instrument(preset, out_dir, generator, keys, velocities) -> ExportReport

Two steps, shared with the bulk export (`synth.export_bank`, many presets, on local processes or
a Ray cluster): `render_samples(generator, notes, rate)` turns each note into its sample (the WAV
bytes and its loop and release; a pure function of the note, the rate and the model), and
`sfz_text(preset, model_version, options, samples)` writes the instrument around them.

One sample per (sampled key, velocity layer), rendered by the generator at EXPORT_SAMPLE_RATE
(48 kHz: the rate most players and interfaces run at, so no resampling on playback of the
sampled keys) and written as 24-bit PCM WAV. The `.sfz` maps them:

* keys: each region covers the keys nearest its sampled key (a tie goes to the upper sample,
  which then plays transposed down), the outer regions reach the ends of the exported range;
* velocity: each layer covers the velocities nearest it (ties to the louder layer, as
  `NoteParams.velocity_layer`), and inside a layer the level follows velocity / layer like the
  live server (`NoteParams.velocity_gain`): `amp_velcurve` is the straight line v / hivel
  through the region's two ends and `volume` adds 20 log10(hivel / layer) dB;
* sustain: the model's notes are held 3 s (`NOTE_OFF_S`) and released for 1 s, so each sample
  gets a `loop_sustain` loop inside the held part (`find_loop`), with the end of the loop
  crossfaded into its start in the sample data itself, so the seam is clean in any player;
* release: `ampeg_release` fitted to the model's own release, measured per sample
  (`fit_release`). Chosen over release samples (`trigger=release`) because a release sample
  starts at the level of the note at 3.0 s whatever the loop is doing when the key goes up,
  doubles the regions and needs a second crossfade; an envelope fitted to the measured decay
  rate follows the held loop from wherever it is. The data after the loop's end is more copies
  of the loop, so the release envelope shapes the held sound (not the model's release, which
  would decay twice);
* pitch bend: `bend_up` / `bend_down` in cents (default 200 / -200).

No OSC here; the command line is `synth.export_cli`.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from scipy.signal import correlate

from synth.envelope import NOTE_OFF_S, level_db
# BLAS threads while rendering samples: fixed, because the sums of a matrix product depend on it.
from synth.fast_render import BLAS_THREADS, midi_to_hz
from synth.params import PITCH_MAX, PITCH_MIN, VELOCITY_LAYERS, VELOCITY_MAX, VELOCITY_MIN
from synth.presets import Preset

log = logging.getLogger("synth.export")

EXPORT_SAMPLE_RATE = 48000
WAV_SUBTYPE = "PCM_24"
SAMPLES_DIR = "samples"
DEFAULT_KEYS = (21, 108)
DEFAULT_EVERY = 3
DEFAULT_VELOCITIES = VELOCITY_LAYERS
DEFAULT_BEND_CENTS = 200

# Loop search (all inside the held part, before note-off).
LOOP_SEARCH_FROM_S = 1.0       # after the attack of every factory preset
LOOP_GUARD_S = 0.05            # keep the loop's end this far before note-off
LOOP_LENGTHS_S = (1.0, 0.5, 0.25, 0.1)  # candidate loop lengths (rounded to whole periods)
LOOP_ENDS = 12                 # candidate end positions per length, spread over the search window
SEAM_WINDOW_PERIODS = 3        # correlation window around the seam: this many periods ...
SEAM_WINDOW_MIN_S = 0.01       # ... and at least this long
CROSSFADE_S = 0.02             # crossfade length (at least 2 periods, at most half the loop)
LEVEL_FRAME_S = 0.02           # level frames for the loop's level checks
FLATTEN_WINDOW_S = 0.01        # the loop's level is held from its start: RMS over whole periods
FLATTEN_MAX_DB = 3.0           # ... of at least this, gain within +-this
# A note whose held level before note-off is this far below its peak has decayed: no loop.
DECAYED_DB = 40.0
# Cost of a candidate loop: (1 - seam correlation) * SEAM_WEIGHT + level range inside the loop
# (dB, the periodic wobble the loop would make) + LEVEL_STEP_WEIGHT * level step at the seam (dB)
# + EARLY_WEIGHT per second that the loop ends before the latest end searched: the later the
# loop, the more of the model's held note the sample plays before it repeats.
SEAM_WEIGHT = 20.0
LEVEL_STEP_WEIGHT = 2.0
EARLY_WEIGHT = 0.5

# Release. sfizz's release stage is exponential and falls exp(-9) (78.2 dB) in `ampeg_release`
# seconds (measured: ampeg_release=1 takes 0.77 s to fall 60 dB on a steady sine, 2 -> 1.53 s).
PLAYER_RELEASE_DB = 20.0 * math.log10(math.exp(9.0))
RELEASE_MIN_S, RELEASE_MAX_S = 0.03, 20.0
RELEASE_TAIL_MAX_S = 4.0       # loop copies after the loop's end: at most this long


def sampled_keys(lo: int, hi: int, every: int) -> list[int]:
    """lo, lo + every, ... and hi (always sampled, so the top of the range plays untransposed)."""
    if not PITCH_MIN <= lo <= hi <= PITCH_MAX:
        raise ValueError(f"pitches: expected LO-HI within {PITCH_MIN}..{PITCH_MAX}, got {lo}-{hi}")
    if every < 1:
        raise ValueError(f"every: expected an integer >= 1, got {every}")
    keys = list(range(lo, hi + 1, every))
    if keys[-1] != hi:
        keys.append(hi)
    return keys


def key_ranges(keys: Sequence[int], lo: int, hi: int) -> list[tuple[int, int]]:
    """(lokey, hikey) of each sampled key: the keys nearest it (ties to the upper sample)."""
    keys = sorted(keys)
    ranges = []
    for i, k in enumerate(keys):
        lokey = lo if i == 0 else (keys[i - 1] + k - 1) // 2 + 1
        hikey = hi if i == len(keys) - 1 else (k + keys[i + 1] - 1) // 2
        ranges.append((lokey, hikey))
    return ranges


def nearest_layer(velocity: int, layers: Sequence[int]) -> int:
    """The nearest layer (ties to the louder), as `NoteParams.velocity_layer` for NSynth's five."""
    return min(layers, key=lambda layer: (abs(layer - velocity), -layer))


def velocity_ranges(layers: Sequence[int]) -> list[tuple[int, int, int]]:
    """(layer, lovel, hivel) for each layer: the MIDI velocities whose nearest layer it is."""
    layers = sorted(set(layers))
    for v in layers:
        if not VELOCITY_MIN <= v <= VELOCITY_MAX:
            raise ValueError(f"velocities: expected integers {VELOCITY_MIN}..{VELOCITY_MAX}, got {v}")
    out = []
    for layer in layers:
        vels = [v for v in range(VELOCITY_MIN, VELOCITY_MAX + 1) if nearest_layer(v, layers) == layer]
        out.append((layer, vels[0], vels[-1]))
    return out


@dataclass(frozen=True)
class Loop:
    """A sustain loop: playback jumps from `end` (exclusive) back to `start` (sample indices)."""

    start: int
    end: int
    crossfade: int
    correlation: float      # normalised correlation of the audio around start and around end
    level_range_db: float   # max - min of the level (LEVEL_FRAME_S frames) inside the loop
    level_step_db: float    # level just before end minus level just before start

    @property
    def length(self) -> int:
        return self.end - self.start


def _frame_db(x: np.ndarray, frame: int) -> np.ndarray:
    n = len(x) // frame
    rms = np.sqrt(np.mean(np.square(x[: n * frame].reshape(n, frame)), axis=1))
    return 20.0 * np.log10(np.maximum(rms, 1e-9))


def _upward_zero_crossing(x: np.ndarray, near: int, span: int) -> int | None:
    """The upward zero crossing (x[i-1] < 0 <= x[i]) nearest `near` within +-span, or None."""
    lo, hi = max(1, near - span), min(len(x) - 1, near + span)
    seg = x[lo - 1 : hi + 1]
    idx = np.nonzero((seg[:-1] < 0) & (seg[1:] >= 0))[0] + lo
    if len(idx) == 0:
        return None
    return int(idx[np.argmin(np.abs(idx - near))])


def _best_start(x: np.ndarray, end: int, nominal_start: int, window: int, search: int) -> tuple[int, float]:
    """The start within +-search of nominal_start whose surroundings best match those of `end`
    (normalised correlation of `window` samples centred on each): (start, correlation)."""
    half = window // 2
    ref = x[end - half : end + half]
    lo = nominal_start - search - half
    seg = x[lo : nominal_start + search + half]
    num = correlate(seg, ref, mode="valid", method="fft")
    energy = np.convolve(np.square(seg), np.ones(len(ref)), mode="valid")
    den = np.sqrt(np.maximum(energy * float(np.dot(ref, ref)), 1e-30))
    corr = num / den
    i = int(np.argmax(corr))
    return lo + half + i, float(corr[i])


def find_loop(audio: np.ndarray, sample_rate: int, f0_hz: float) -> Loop | None:
    """The least audible sustain loop in the held part of a note, or None for a decayed note.

    Loop lengths are whole numbers of the note's period near each of LOOP_LENGTHS_S; ends are
    upward zero crossings spread over the late held part; for each, the start is the position
    (within half a period of end - length) whose surroundings correlate best with those of the
    end, which lines up both waveform and slope. The cheapest by the cost above wins.
    """
    x = np.asarray(audio, np.float64)
    off = int(round(NOTE_OFF_S * sample_rate))
    frame = int(LEVEL_FRAME_S * sample_rate)
    held_db = _frame_db(x[:off], frame)
    if held_db[-int(0.5 / LEVEL_FRAME_S):].max() < held_db.max() - DECAYED_DB:
        return None
    period = sample_rate / f0_hz
    window = max(int(SEAM_WINDOW_PERIODS * period), int(SEAM_WINDOW_MIN_S * sample_rate))
    search = int(math.ceil(period / 2)) + 1
    last_end = off - int(LOOP_GUARD_S * sample_rate) - window
    first = int(LOOP_SEARCH_FROM_S * sample_rate)
    best: tuple[float, Loop] | None = None
    for length_s in LOOP_LENGTHS_S:
        length = int(round(max(1, round(length_s * f0_hz)) * period))
        crossfade = min(max(int(CROSSFADE_S * sample_rate), int(2 * period)), length // 2)
        first_end = first + length + search + window + crossfade
        if first_end >= last_end:
            continue
        for nominal_end in np.linspace(last_end, first_end, LOOP_ENDS).astype(int):
            end = _upward_zero_crossing(x, int(nominal_end), int(period) + 1)
            if end is None or not first_end <= end <= last_end + window // 2:
                continue
            start, corr = _best_start(x, end, end - length, window, search)
            inside = _frame_db(x[start:end], min(frame, (end - start) // 2))
            level_range = float(inside.max() - inside.min())
            step = float(_frame_db(x[end - frame : end], frame)[0] - _frame_db(x[start - frame : start], frame)[0])
            cost = ((1.0 - corr) * SEAM_WEIGHT + level_range + LEVEL_STEP_WEIGHT * abs(step)
                    + EARLY_WEIGHT * max(0, last_end - end) / sample_rate)
            loop = Loop(start, end, crossfade, corr, level_range, step)
            if best is None or cost < best[0]:
                best = (cost, loop)
    return None if best is None else best[1]


def crossfade_gains(n: int, correlation: float) -> tuple[np.ndarray, np.ndarray]:
    """Fade-out and fade-in gains over n samples that keep the power constant for two signals of
    this correlation: a^2 + b^2 + 2 r a b = 1 (r = 0: the equal-power fade; r = 1: equal gain.
    A sin/cos fade of two nearly identical waveforms would swell by up to 3 dB at its middle)."""
    r = float(np.clip(correlation, 0.0, 1.0))
    t = (np.arange(n) + 0.5) / n
    norm = np.sqrt((1 - t) ** 2 + t**2 + 2 * r * t * (1 - t))
    return (1 - t) / norm, t / norm


def flatten_loop(x: np.ndarray, loop: Loop, sample_rate: int, f0_hz: float) -> None:
    """Hold the level inside the loop at its level where the loop starts (in place): the loop
    repeats, so whatever the level does inside it becomes a periodic wobble (the model's held
    notes move by about a dB within 0.1 s). Levels are RMS over whole periods (at least
    FLATTEN_WINDOW_S), every half window; the gain is interpolated between them and kept within
    +-FLATTEN_MAX_DB."""
    s, e = loop.start, loop.end
    period = sample_rate / f0_hz
    w = int(round(max(1, math.ceil(FLATTEN_WINDOW_S * f0_hz)) * period))
    hop = max(1, w // 2)
    starts = np.arange(s, max(s + 1, e - w + 1), hop)
    if len(starts) < 2:
        return
    rms = np.array([math.sqrt(float(np.mean(x[i : i + w] ** 2)) + 1e-30) for i in starts])
    centres = starts + w / 2.0
    level = np.interp(np.arange(s, e), centres, rms)
    limit = 10.0 ** (FLATTEN_MAX_DB / 20.0)
    x[s:e] *= np.clip(level[0] / level, 1.0 / limit, limit)


def loop_sample(audio: np.ndarray, loop: Loop, tail_s: float, sample_rate: int,
                f0_hz: float | None = None) -> np.ndarray:
    """The sample data: the note up to the loop's end with the end of the loop crossfaded into
    the audio just before its start (so end-1 -> start continues the waveform exactly), then
    copies of the loop for `tail_s` (played under the release envelope after note-off).
    f0_hz given: the loop's level is held first (`flatten_loop`)."""
    x = np.asarray(audio, np.float64).copy()
    if f0_hz is not None:
        flatten_loop(x, loop, sample_rate, f0_hz)
    s, e, c = loop.start, loop.end, loop.crossfade
    a, b = x[e - c : e], x[s - c : s]
    r = float(np.dot(a, b) / max(math.sqrt(float(np.dot(a, a)) * float(np.dot(b, b))), 1e-30))
    fade_out, fade_in = crossfade_gains(c, r)
    x[e - c : e] = x[e - c : e] * fade_out + x[s - c : s] * fade_in
    body = x[:e]
    copies = int(math.ceil(tail_s * sample_rate / loop.length)) + 1
    return np.concatenate([body] + [body[s:e]] * copies).astype(np.float32)


@dataclass(frozen=True)
class Release:
    """The model's release after note-off, measured on one note."""

    t60_s: float     # time to fall 60 dB below the note-off level (measured, 2 x t30, or fitted)
    how: str         # "60 dB", "30 dB x 2" or "slope"


def fit_release(audio: np.ndarray, sample_rate: int) -> Release:
    """The time the note takes to fall 60 dB after note-off: measured if it does within the
    note, else twice the 30 dB time, else extrapolated from the slope over the release."""
    db = level_db(np.asarray(audio, np.float64), sample_rate)
    hop = len(audio) / sample_rate / len(db)
    # 50 ms running mean of the 10 ms levels: steady against the model's small wobbles.
    smooth = np.convolve(db, np.ones(5) / 5, mode="same")
    off = int(round(NOTE_OFF_S / hop))
    ref = float(np.mean(db[off - 10 : off]))
    after = smooth[off:-2]
    for drop, scale, how in ((60.0, 1.0, "60 dB"), (30.0, 2.0, "30 dB x 2")):
        below = np.nonzero(after < ref - drop)[0]
        if len(below):
            return Release(float(np.clip((below[0] + 1) * hop * scale, RELEASE_MIN_S, RELEASE_MAX_S)), how)
    # The release may swell before it falls: fit the fall from its loudest point on.
    after = after[int(np.argmax(after[: len(after) // 2])):]
    t = np.arange(len(after)) * hop
    slope = -float(np.polyfit(t, after, 1)[0])  # dB/s of fall
    t60 = 60.0 / slope if slope > 0 else RELEASE_MAX_S
    return Release(float(np.clip(t60, RELEASE_MIN_S, RELEASE_MAX_S)), "slope")


def ampeg_release_for(release: Release) -> float:
    """The `ampeg_release` that makes sfizz fall 60 dB in the model's time (see PLAYER_RELEASE_DB)."""
    return release.t60_s * PLAYER_RELEASE_DB / 60.0


# What a sample's bytes depend on besides the note, the sample rate and the model: bump it whenever
# the code here changes what a sample holds (loop search, crossfade, release fit, WAV format), so a
# resumed bulk export (synth.export_bank) renders such samples again instead of reusing them.
SAMPLE_FORMAT = "1: 24-bit WAV, loop_sustain crossfaded into the data, tail of loop copies, fitted release"


def sample_file_name(key: int, layer: int) -> str:
    return f"{key:03d}_v{layer:03d}.wav"


@dataclass(frozen=True)
class Region:
    """Where one sample plays in the .sfz: its key and layer, the keys and velocities it covers."""

    key: int
    layer: int
    lokey: int
    hikey: int
    lovel: int
    hivel: int

    @property
    def file(self) -> str:
        return sample_file_name(self.key, self.layer)


@dataclass(frozen=True)
class ExportOptions:
    """What an export covers: sampled `keys` over the range lo..hi, velocity `layers`, the
    pitch-bend range and the sample rate. `regions()` lists one Region per sample, key-major."""

    keys: tuple[int, ...]
    lo: int
    hi: int
    layers: tuple[int, ...]
    bend_cents: int = DEFAULT_BEND_CENTS
    sample_rate: int = EXPORT_SAMPLE_RATE

    @classmethod
    def make(cls, keys: Sequence[int], velocities: Sequence[int] = DEFAULT_VELOCITIES, lo: int | None = None,
             hi: int | None = None, bend_cents: int = DEFAULT_BEND_CENTS,
             sample_rate: int = EXPORT_SAMPLE_RATE) -> "ExportOptions":
        keys = tuple(sorted(set(int(k) for k in keys)))
        if not keys:
            raise ValueError("pitches: no key to sample")
        layers = tuple(layer for layer, _, _ in velocity_ranges(velocities))
        return cls(keys, keys[0] if lo is None else int(lo), keys[-1] if hi is None else int(hi), layers,
                   int(bend_cents), int(sample_rate))

    def regions(self) -> list[Region]:
        vel_ranges = velocity_ranges(self.layers)
        return [Region(key, layer, lokey, hikey, lovel, hivel)
                for key, (lokey, hikey) in zip(self.keys, key_ranges(self.keys, self.lo, self.hi))
                for layer, lovel, hivel in vel_ranges]


@dataclass(frozen=True)
class RenderedSample:
    """One note's sample: the WAV file's bytes and what the .sfz region needs to know of it.
    A pure function of the note, the sample rate and the model (`render_samples`)."""

    key: int
    layer: int
    data: bytes
    loop: Loop | None
    release: Release
    ampeg_release: float

    @property
    def file(self) -> str:
        return sample_file_name(self.key, self.layer)

    def meta(self) -> dict:
        """The region's facts as JSON values (floats round-trip exactly through json)."""
        return {"loop": None if self.loop is None else asdict(self.loop), "release": asdict(self.release),
                "ampeg_release": self.ampeg_release}


def sample_from_meta(region: Region, meta: Mapping) -> "SampleInfo":
    loop = None if meta["loop"] is None else Loop(**meta["loop"])
    return SampleInfo(region.key, region.layer, region.lokey, region.hikey, region.lovel, region.hivel,
                      loop, Release(**meta["release"]), float(meta["ampeg_release"]))


def sample_id(note, sample_rate: int, model_version: str) -> str:
    """A key for the bytes of one note's sample: the note (timbre, pitch, velocity layer; its
    `NoteParams.key`), the sample rate, the model version and SAMPLE_FORMAT."""
    blob = json.dumps([note.key, int(sample_rate), str(model_version), SAMPLE_FORMAT]).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def make_sample(key: int, layer: int, audio: np.ndarray, sample_rate: int) -> RenderedSample:
    """The sample of one rendered note (4 s, note-off at 3 s): release fitted, loop found and
    crossfaded (or none for a decayed note), encoded as a 24-bit WAV."""
    import soundfile as sf

    release = fit_release(audio, sample_rate)
    amp_release = ampeg_release_for(release)
    loop = find_loop(audio, sample_rate, float(midi_to_hz(key)))
    if loop is None:
        data = np.asarray(audio, np.float32)
    else:
        data = loop_sample(audio, loop, min(amp_release, RELEASE_TAIL_MAX_S), sample_rate, float(midi_to_hz(key)))
    buf = io.BytesIO()
    sf.write(buf, data, sample_rate, subtype=WAV_SUBTYPE, format="WAV")
    return RenderedSample(int(key), int(layer), buf.getvalue(), loop, release, float(amp_release))


def render_samples(generator, notes: Sequence, sample_rate: int = EXPORT_SAMPLE_RATE) -> list[RenderedSample]:
    """The sample of each note (a NoteParams rendered at its velocity, which is its layer).

    The same note gives the same bytes whatever else is in the call, in any process and with any
    number of threads (on the same kind of CPU):
    * the noise is seeded by the note (`Generator.render_controls`);
    * the networks run one note at a time (`synth.numpy_nets.NOTES_PER_PASS`), so a note's floats
      never depend on the other notes of a batch;
    * the networks and the numpy synthesis run with one BLAS thread (BLAS_THREADS): matrix
      products sum in another order with another number of OpenBLAS threads (measured: a Ray
      actor, which gets OMP_NUM_THREADS=1, rendered other bits than this process with two).
    """
    from threadpoolctl import threadpool_limits

    from synth.generator import BATCH_CHUNK

    sample_rate = generator._check_rate(sample_rate)
    notes = list(notes)
    out: list[RenderedSample] = []
    with threadpool_limits(limits=BLAS_THREADS, user_api="blas"):
        for i in range(0, len(notes), BATCH_CHUNK):
            chunk = notes[i : i + BATCH_CHUNK]
            neural = generator.run_neural(chunk)
            for j, note in enumerate(chunk):
                controls = {k: v[j] for k, v in neural["controls"].items()}
                audio = generator.render_controls(controls, sample_rate, note)
                out.append(make_sample(note.pitch, note.velocity, audio, sample_rate))
    return out


def write_atomic(path: str | os.PathLike, data: bytes | str) -> None:
    """Write `path` whole or not at all: a temporary file beside it, then `os.replace`. An
    interrupted write (Ctrl-C, kill) leaves the old file or none, never half a file; a leftover
    temporary (kill -9) is `.<name>.tmp`, overwritten by the next write of that file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class SampleInfo(Region):
    """A written sample: its region, and what the .sfz says of its loop and release."""

    loop: Loop | None = None
    release: Release | None = None
    ampeg_release: float = 0.0


@dataclass
class ExportReport:
    sfz_path: Path
    samples: list[SampleInfo] = field(default_factory=list)


def check_out_dir(out_dir: str | os.PathLike, force: bool = False) -> Path:
    """Create `out_dir`; a non-empty one is refused (FileExistsError) unless `force`."""
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"out: {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise FileExistsError(f"out: {out} is not empty (use --force to write into it)")
    (out / SAMPLES_DIR).mkdir(parents=True, exist_ok=True)
    return out


def _header(preset: Preset, model_version: str, keys: Sequence[int], lo: int, hi: int,
            layers: Sequence[int], bend_cents: int, sample_rate: int) -> list[str]:
    return [
        f"// {preset.name}: a sample instrument exported by sound-generator",
        f"// preset: {preset.name}" + (f" ({preset.description})" if preset.description else ""),
        f"//   source {preset.source}; qualities {', '.join(preset.qualities) or 'none'}; "
        f"latent_sample {', '.join(f'{v:g}' for v in preset.latent_sample)}",
        f"// model version: {model_version}",
        f"// made by: sound-generator export: keys {lo}-{hi} sampled at {' '.join(map(str, keys))}; "
        f"velocity layers {' '.join(map(str, layers))}; pitch bend +-{bend_cents} cents",
        f"// samples: one note per sampled key and velocity layer, rendered by the generator at "
        f"{sample_rate} Hz, 24-bit WAV",
        "// regions: each covers the keys nearest its sample and the velocities nearest its layer;",
        "//   level follows velocity / layer inside a layer (amp_velcurve + volume), as the live server",
        "// loops: loop_sustain inside the held part (before the model's note-off at 3 s), a whole number",
        "//   of periods, the seam chosen by correlation and crossfaded into the sample data",
        "// release: ampeg_release fitted to the model's own release, measured on each note",
    ]


def sfz_text(preset: Preset, model_version: str, options: ExportOptions, samples: Sequence[SampleInfo]) -> str:
    """The .sfz of an instrument whose samples (one per region of `options`) are `samples`."""
    sr = options.sample_rate
    lines = _header(preset, model_version, options.keys, options.lo, options.hi, options.layers,
                    options.bend_cents, sr)
    lines += ["", "<control>", f"default_path={SAMPLES_DIR}/", "", "<global>",
              f"bend_up={options.bend_cents} bend_down={-options.bend_cents}", "amp_veltrack=100", ""]
    for s in samples:
        if s.loop is None:
            loop_text = ["// no loop: the note has decayed before note-off (held level "
                         f">{DECAYED_DB:g} dB below its peak); it plays out as rendered",
                         "loop_mode=no_loop"]
        else:
            loop = s.loop
            loop_text = [f"// loop {loop.start / sr:.3f}-{loop.end / sr:.3f} s "
                         f"({loop.length / sr:.3f} s), seam correlation {loop.correlation:.4f}, "
                         f"level range inside {loop.level_range_db:.2f} dB, step {loop.level_step_db:+.2f} dB",
                         f"loop_mode=loop_sustain loop_start={loop.start} loop_end={loop.end - 1}"]
        gain_db = 20.0 * math.log10(s.hivel / s.layer)
        lines += [f"// key {s.key} velocity layer {s.layer}: model release 60 dB in {s.release.t60_s:.2f} s "
                  f"({s.release.how})"]
        lines += loop_text[:-1]
        lines += [f"<region> sample={s.file} lokey={s.lokey} hikey={s.hikey} pitch_keycenter={s.key} "
                  f"lovel={s.lovel} hivel={s.hivel}",
                  f" amp_velcurve_{s.lovel}={s.lovel / s.hivel:.6f} amp_velcurve_{s.hivel}=1 volume={gain_db:.3f}",
                  f" {loop_text[-1]} ampeg_release={s.ampeg_release:.3f}", ""]
    return "\n".join(lines)


def sfz_path(out_dir: str | os.PathLike, preset: Preset) -> Path:
    return Path(out_dir) / f"{preset.name}.sfz"


def export_instrument(preset: Preset, out_dir: str | os.PathLike, generator, keys: Sequence[int],
                      velocities: Sequence[int] = DEFAULT_VELOCITIES, lo: int | None = None,
                      hi: int | None = None, bend_cents: int = DEFAULT_BEND_CENTS, force: bool = False,
                      sample_rate: int = EXPORT_SAMPLE_RATE) -> ExportReport:
    """Render `preset` at `keys` x `velocities` with `generator` and write the instrument into
    `out_dir` (created; non-empty refused unless `force`). Returns what was written.

    The same two steps as the bulk export (synth.export_bank), which writes the same bytes:
    `render_samples` (one note's sample, a pure function of note, rate and model) and `sfz_text`."""
    options = ExportOptions.make(keys, velocities, lo, hi, bend_cents, sample_rate)
    out = check_out_dir(out_dir, force)
    regions = options.regions()
    log.info("rendering %d notes of %r at %d Hz", len(regions), preset.name, sample_rate)
    rendered = render_samples(generator, [preset.note(r.key, r.layer) for r in regions], options.sample_rate)
    report = ExportReport(sfz_path(out, preset))
    for region, sample in zip(regions, rendered):
        write_atomic(out / SAMPLES_DIR / region.file, sample.data)
        report.samples.append(sample_from_meta(region, sample.meta()))
    write_atomic(report.sfz_path, sfz_text(preset, generator.model_version, options, report.samples))
    log.info("wrote %s (%d samples)", report.sfz_path, len(report.samples))
    return report
