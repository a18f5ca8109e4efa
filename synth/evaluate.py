"""`sound-generator evaluate`: measure the generator against its targets on the test split.

    sound-generator evaluate --data data/nsynth_fluidr3 [--checkpoints DIR] [--json] [--out DIR]
        [--figures DIR] [--model-card PATH]

The test split's instruments are never trained on (the data set splits by instrument). Every
figure is measured on the audio the generator renders, with the pure functions of
`synth.metrics`; nothing trusts the model's own f0 or loudness curves.

==============  ===========================================================================
target          what is measured (defaults; see the options to sample more or less)
==============  ===========================================================================
pitch           two notes per MIDI pitch 24..96 (each with the source, velocity and qualities
                of a random test note, latent 0); `metrics.measure_pitch_hz` of the sustained
                part vs the requested pitch. Pass: median |error| <= 5 cents, none over 25 (nor
                unmeasurable)
velocity        32 (pitch, source, qualities) combinations of test notes, each rendered at
                velocities 25, 50, 75, 100, 127 (latent 0); mean A-weighted loudness of the
                held part (0-3 s). Pass: loudness rises in >= 95 % of the steps
dynamics        levels against the data: for each pitch 36, 48, 60, 72, 84 and velocity layer, the
                median peak (dBFS) of the split's notes there, and of up to 8 of them generated
                with their attributes (latent 0) before the output calibration (its gain taken
                off: the model's own level, at the data's scale). Pass: every cell within 3 dB
tags            per quality, 32 test notes: the note without the tag vs with it (the opposite
                tag of bright/dark removed from both; all else equal, one random latent per
                pair); the tag's analyzer score (`synth.data.qualities`, higher = more) must
                rise (a tie is no rise). Pass: >= 80 % of the defined pairs for bright, dark,
                percussive, fast_decay and long_release (the other five are reported); pairs
                whose note without the tag already scores at the analyzer's ceiling (a release
                lasting to the end of the file) cannot rise and are counted apart; for such a
                tag more pairs are drawn until 32 are defined (at most 8 x 32 drawn)
latent          each of the 16 dimensions swept -7..+7 in 29 steps around pitch 60, velocity
                100, acoustic, no tags; log-mel distance (dB) between neighbouring steps, noise
                drawn with one seed for the whole sweep. Pass: all finite, peak <= 1, every
                dimension moves the sound (endpoints >= 1 dB apart) without a jump (no step
                over 3x the mean of its neighbours: `metrics.smoothness` local_jump_ratio)
knobs           1000 random knob settings (--knob-points; half uniform in [-7, 7]^16, half corners
                of the cube, each knob at -7 or +7), each with a random tag set (every tag with
                probability 0.2), a random source and pitch 24..96, velocity 100; each against
                the same note at latent 0. Pass: every note audible (peak >= -50 dBFS and within
                24 dB of its latent-0 twin), >= 99 % within 25 cents of pitch, none non-finite
                or clipped (|sample| > 1)
level           the output calibration (`synth.calibrate`): velocity 127, latent 0, no tags,
                pitches 36..84, every source. Pass: the median peak and each pitch's median
                (over the sources) within -6 +- 3 dBFS
releases        timbres at latent 0, velocity 100: 3 sources x 8 tag sets without long_release x
                pitches 48, 60, 72; each with and without long_release added. Release time: from
                the note-off (3 s) until the level (10 ms RMS) is 30 dB below the note-off level.
                Pass: >= 90 % of the timbres without the tag within 1 s, and in >= 80 % of the
                pairs the tag makes it >= 1.5x longer with the held level (0.05-3 s) <= 3 dB lower
realism         256 random test notes (--max-notes; 0 = all) generated with their attributes
                (latent 0, the output calibration's gain taken off: the model's own level, at
                the data's scale) vs the real note: loudness-envelope error (dB, floored at
                -80), spectral-centroid error (octaves) and log-mel error (dB). Baselines: a
                random instrument (a note of another test instrument at the same pitch and
                velocity, picked at random; notes without one are counted) for all three, and
                the training set's mean envelope and centroid for that pitch and velocity.
                Pass: the generator's mean error beats the random instrument's on each measure
                and the mean baseline's on envelope and centroid
reach           48 test notes (--reach-notes; at most one per instrument while instruments
                last), each rendered with 16 random knob settings (--reach-draws; uniform in
                [-7, 7]^16; its pitch, velocity, source and qualities; gain off as for realism)
                and compared (log-mel distance, dB) with up to 16 other test instruments' notes
                at the same pitch and velocity. Pass: the mean over notes of the closest draw's
                distance <= the mean of the nearest other instrument's, with >= 16 draws
reconstruction  encoder + DDSP decoder autoencoding real notes (full 4 s, the data's f0 and
                loudness): multi-scale spectral loss on 64 test vs 64 training notes (and, as
                a scale, the loss of silence against the test notes). Pass: test loss <= 1.5 x
                training loss (unseen instruments generalise)
==============  ===========================================================================

Output: a table, or with --json one JSON object on the last line of stdout (every metric, and
``pass`` per target: true, false or null where a target was skipped, e.g. no train split);
--out DIR also writes DIR/eval.json with per-note details. --figures DIR writes spectrogram
PNGs (`synth.figures`), and from the realism and reach details the loudness envelopes and the
timbre map; --model-card PATH writes the model card from these results (or from
--from-json FILE without evaluating again). The exit status is 0 when the evaluation ran,
whatever the verdicts (--strict: 1 when a target fails).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import sys
import time
from typing import Any, Sequence

import numpy as np

from synth import metrics
from synth.cli import int_at_least
from synth.params import LATENT_DIM, LATENT_MAX, LATENT_MIN, QUALITIES, SOURCES, VELOCITY_LAYERS, NoteParams
from synth.report import format_table
from synth.units import SAMPLE_RATE

log = logging.getLogger("synth.evaluate")

TARGETS = ("pitch", "velocity", "dynamics", "tags", "latent", "knobs", "level", "releases", "realism",
           "reach", "reconstruction")
# Each target's random stream, in the order the targets were added: a new target does not change
# the notes another target samples.
RNG_STREAMS = ("pitch", "velocity", "dynamics", "tags", "latent", "knobs", "level", "releases", "realism",
               "reconstruction", "reach")
# Targets that render from the model alone (no --data needed).
DATA_FREE_TARGETS = ("latent", "knobs", "level", "releases")
TARGET_TAGS = ("bright", "dark", "percussive", "fast_decay", "long_release")
OPPOSITE_TAG = {"bright": "dark", "dark": "bright"}
# Scores an analyzer cannot exceed: long_release is capped at the end of the file, 1 s after the
# note-off (to within one 10 ms envelope hop). A pair whose note without the tag is already
# there cannot show a rise and is counted apart.
SCORE_CEILINGS = {"long_release": 1.0 - 0.5 * 0.01}
MAX_DRAW_FACTOR = 8  # tags with a ceiling: draw up to this many times --tag-pairs pairs
PITCH_MEDIAN_CENTS, PITCH_MAX_CENTS = 5.0, 25.0
VELOCITY_MIN_FRACTION = 0.95
TAG_MIN_FRACTION = 0.80
LATENT_MIN_EFFECT_DB = 1.0
LATENT_MAX_JUMP = 3.0
RECON_MAX_RATIO = 1.5
BASELINE_NOTES_PER_KEY = 32
LATENT_BASE = NoteParams(pitch=60, velocity=100, source="acoustic")
KNOB_MIN_PEAK_DBFS = -50.0
KNOB_MAX_DROP_DB = 24.0
KNOB_PITCH_CENTS = 25.0
KNOB_PITCH_FRACTION = 0.99
KNOB_TAG_PROBABILITY = 0.2
KNOB_PITCHES = (24, 96)
# dynamics: (pitch, velocity layer) cells; generated notes per cell; the largest allowed difference.
DYNAMICS_PITCHES = (36, 48, 60, 72, 84)
DYNAMICS_NOTES_PER_CELL = 8
DYNAMICS_MAX_DB = 3.0
# releases: timbres at latent 0 = every source x these tag sets (none asks long_release) x pitches.
RELEASE_TAG_SETS = ((), ("bright",), ("dark",), ("percussive",), ("distortion",), ("multiphonic",),
                    ("nonlinear_env",), ("reverb",))
RELEASE_PITCHES = (48, 60, 72)
RELEASE_DROP_DB = 30.0
RELEASE_WITHIN_S = 1.0
RELEASE_MIN_FRACTION = 0.90
LONG_RELEASE_GROWTH = 1.5
LONG_RELEASE_MAX_HELD_DROP_DB = 3.0
LONG_RELEASE_MIN_FRACTION = 0.80
# realism: the baselines each measure must beat (mean errors); loudness curves kept for the
# envelope picture (this many notes, every REALISM_CURVE_STEP-th frame).
REALISM_MUST_BEAT = {"envelope_error": ("random instrument", "mean baseline"),
                     "centroid_error": ("random instrument", "mean baseline"),
                     "log_mel_error": ("random instrument",)}
REALISM_CURVE_NOTES = 8
REALISM_CURVE_STEP = 5
# reach: knob draws per note (a verdict needs at least REACH_MIN_DRAWS), and the pass rule: mean
# closest draw <= REACH_MAX_RATIO x mean nearest other real instrument (log-mel distance, dB).
REACH_DRAWS = 16
REACH_MIN_DRAWS = 16
REACH_NOTES = 48
REACH_MAX_RATIO = 1.0


def _pitch_range(text: str) -> tuple[int, int]:
    try:
        lo, hi = (int(v) for v in text.split("-", 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--pitch-range: expected A-B, e.g. 24-96, got {text!r}") from None
    if not 9 <= lo <= hi <= 120:
        raise argparse.ArgumentTypeError(f"--pitch-range: expected 9 <= A <= B <= 120, got {text!r}")
    return lo, hi


def _targets(text: str) -> tuple[str, ...]:
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [t for t in names if t not in TARGETS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"--only: expected names from {', '.join(TARGETS)}, got {text!r}")
    return names


def _dims(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--latent-dims: expected e.g. 0,3,7, got {text!r}") from None
    if not dims or any(not 0 <= d < LATENT_DIM for d in dims):
        raise argparse.ArgumentTypeError(f"--latent-dims: each must be 0..{LATENT_DIM - 1}, got {text!r}")
    return dims


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n")[0]
    parser.epilog = "\n\n".join(__doc__.split("\n\n")[1:])
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--data", default=None, metavar="DIR",
                        help="NSynth-format data set (with test/ and, for baselines, train/)")
    parser.add_argument("--split", default="test", help="split to evaluate on (default test)")
    parser.add_argument("--checkpoints", default=None, metavar="DIR",
                        help="checkpoint directory (default: the shipped checkpoints/)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--out", default=None, metavar="DIR", help="also write DIR/eval.json with per-note details")
    parser.add_argument("--only", type=_targets, default=TARGETS, metavar="LIST",
                        help=f"comma-separated targets to run (default all: {','.join(TARGETS)})")
    parser.add_argument("--max-notes", type=int_at_least("--max-notes", 0), default=256, metavar="N",
                        help="realism: test notes compared with their generated twin (0 = all; default 256)")
    parser.add_argument("--reach-notes", type=int_at_least("--reach-notes", 1), default=REACH_NOTES, metavar="N",
                        help=f"reach: test notes (default {REACH_NOTES})")
    parser.add_argument("--reach-draws", type=int_at_least("--reach-draws", 1), default=REACH_DRAWS, metavar="N",
                        help=f"reach: random knob settings per note, and other instruments compared (default "
                             f"{REACH_DRAWS}; fewer than {REACH_MIN_DRAWS} runs but cannot pass)")
    parser.add_argument("--recon-notes", type=int_at_least("--recon-notes", 0), default=64, metavar="N",
                        help="reconstruction: notes per split (default 64)")
    parser.add_argument("--pitch-range", type=_pitch_range, default=(24, 96), metavar="A-B",
                        help="pitch: MIDI pitches to render (default 24-96)")
    parser.add_argument("--pitch-step", type=int, default=1, metavar="N", help="pitch: every N-th pitch (default 1)")
    parser.add_argument("--pitch-repeats", type=int, default=2, metavar="N",
                        help="pitch: notes per pitch, each with another test note's attributes (default 2)")
    parser.add_argument("--velocity-combos", type=int_at_least("--velocity-combos", 0), default=32, metavar="N",
                        help="velocity: (pitch, source, qualities) combinations (default 32)")
    parser.add_argument("--tag-pairs", type=int_at_least("--tag-pairs", 0), default=32, metavar="N",
                        help="tags: with/without pairs per quality (default 32)")
    parser.add_argument("--latent-dims", type=_dims, default=tuple(range(LATENT_DIM)), metavar="LIST",
                        help="latent: dimensions to sweep (default all 16)")
    parser.add_argument("--latent-steps", type=int, default=29, metavar="N",
                        help="latent: values from -7 to +7 per sweep (default 29: steps of 0.5)")
    parser.add_argument("--dynamics-notes", type=int_at_least("--dynamics-notes", 1),
                        default=DYNAMICS_NOTES_PER_CELL, metavar="N",
                        help=f"dynamics: generated notes per (pitch, velocity) cell (default {DYNAMICS_NOTES_PER_CELL})")
    parser.add_argument("--knob-points", type=int_at_least("--knob-points", 1), default=1000, metavar="N",
                        help="knobs: random knob settings (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when a target fails")
    parser.add_argument("--figures", default=None, metavar="DIR", help="write spectrogram PNGs into DIR")
    parser.add_argument("--model-card", default=None, metavar="PATH", help="write the model card (Markdown)")
    parser.add_argument("--from-json", default=None, metavar="FILE",
                        help="with --model-card/--figures/--out: use these results (an eval.json) instead of "
                             "evaluating; with --checkpoints, for the same weights in another directory")


# ---------------------------------------------------------------------------------------------
# Helpers.


def note_of(data: dict, i: int, latent: Sequence[float] | None = None, **changes) -> NoteParams:
    """NoteParams of data-set note i (its pitch, velocity, source, qualities), with changes."""
    d = {
        "pitch": int(data["pitch"][i]),
        "velocity": int(data["velocity"][i]),
        "source": SOURCES[int(data["source"][i])],
        "qualities": [q for q, v in zip(QUALITIES, data["qualities"][i]) if v > 0.5],
        "latent_sample": list(latent) if latent is not None else [0.0] * LATENT_DIM,
    }
    d.update(changes)
    return NoteParams.from_dict(d)


def render_checked(gen, notes: Sequence[NoteParams]) -> list[np.ndarray | None]:
    """Render notes in one batch; a note the generator refuses as non-finite comes back None.

    The generator raises FloatingPointError for non-finite audio; the batch is then rendered
    note by note so that the failure is counted per note (as NaN metrics), not lost.
    """
    notes = list(notes)
    if not notes:
        return []
    try:
        return list(gen.render_batch(notes, SAMPLE_RATE))
    except FloatingPointError:
        log.warning("non-finite audio in a batch of %d notes: rendering them one by one", len(notes))
    out: list[np.ndarray | None] = []
    for p in notes:
        try:
            out.append(gen.render(p, SAMPLE_RATE))
        except FloatingPointError:
            log.warning("non-finite audio for %s", p.to_dict())
            out.append(None)
    return out


def render_seeded(gen, params: NoteParams, seed: int) -> np.ndarray:
    """The note's raw synthesis (before the generator's peak limiter) with a fixed noise seed,
    so that two notes of a sweep differ only by what the model changed."""
    c = gen.controls(params)
    controls = {k[len("synth_"):]: v for k, v in c.items() if k.startswith("synth_")}
    audio = gen.render_numpy(controls, SAMPLE_RATE, rng=np.random.default_rng(seed))
    return np.asarray(audio, np.float32).reshape(-1)


def _sample(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """k indices out of n without replacement (all of them, sorted, when k == 0 or k >= n)."""
    if k == 0 or k >= n:
        return np.arange(n)
    return np.sort(rng.choice(n, size=k, replace=False))


def key_groups(data: dict) -> dict[tuple[int, int], np.ndarray]:
    """Indices of the split's notes per (pitch, velocity)."""
    groups: dict[tuple[int, int], list[int]] = {}
    for j, key in enumerate(zip(np.asarray(data["pitch"]).tolist(), np.asarray(data["velocity"]).tolist())):
        groups.setdefault(key, []).append(j)
    return {k: np.asarray(v, np.int64) for k, v in groups.items()}


def other_instruments(data: dict, groups: dict, i: int, n: int, rng: np.random.Generator) -> tuple[list[int], int]:
    """Notes of up to n other instruments at note i's pitch and velocity, the instruments picked at
    random (one note each, at random where an instrument has several); and how many there were."""
    inst = np.asarray(data["instrument"])
    pool = groups[(int(data["pitch"][i]), int(data["velocity"][i]))]
    pool = pool[inst[pool] != inst[i]]
    others = np.unique(inst[pool])
    chosen = []
    for k in rng.permutation(len(others))[:n]:
        cand = pool[inst[pool] == others[k]]
        chosen.append(int(cand[rng.integers(len(cand))]) if len(cand) > 1 else int(cand[0]))
    return chosen, len(others)


def spread_notes(data: dict, groups: dict, n: int, rng: np.random.Generator) -> list[int]:
    """n random notes that have another instrument at their pitch and velocity, at most one per
    instrument until every instrument has one, then a second each, and so on."""
    inst = np.asarray(data["instrument"])
    has_other = np.zeros(len(inst), bool)
    for idx in groups.values():
        if len(np.unique(inst[idx])) > 1:
            has_other[idx] = True
    per_inst = {int(k): list(rng.permutation(np.flatnonzero(has_other & (inst == k))))
                for k in rng.permutation(np.unique(inst[has_other]))}
    out: list[int] = []
    while len(out) < n and any(per_inst.values()):
        for notes in per_inst.values():
            if notes and len(out) < n:
                out.append(int(notes.pop()))
    return out


def at_data_scale(gen, audio: np.ndarray | None) -> np.ndarray | None:
    """A rendered note with the output calibration's gain taken off: the model's own level, at
    the data's scale (the data set's notes are compared with it)."""
    return None if audio is None else np.asarray(audio, np.float64) * 10.0 ** (-gen.output_gain_db / 20.0)


def _rounded(x: Any, digits: int = 5) -> Any:
    """Floats to `digits` significant digits (for the bulky per-note details)."""
    if isinstance(x, dict):
        return {k: _rounded(v, digits) for k, v in x.items()}
    if isinstance(x, list):
        return [_rounded(v, digits) for v in x]
    if isinstance(x, float):
        return float(f"{x:.{digits}g}")
    return x


def _clean(x: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(float(x)) else None
    return x


# ---------------------------------------------------------------------------------------------
# The targets. Each returns (summary dict with "pass", details dict).


def knob_notes(rng: np.random.Generator, n: int) -> list[NoteParams]:
    """The knobs target's notes: even i uniform in the cube, odd i a corner (see module doc)."""
    notes = []
    for i in range(n):
        lat = rng.choice([LATENT_MIN, LATENT_MAX], LATENT_DIM) if i % 2 else rng.uniform(LATENT_MIN, LATENT_MAX, LATENT_DIM)
        tags = [q for q in QUALITIES if rng.random() < KNOB_TAG_PROBABILITY]
        notes.append(NoteParams(pitch=int(rng.integers(KNOB_PITCHES[0], KNOB_PITCHES[1] + 1)), velocity=100,
                                source=str(rng.choice(SOURCES)), qualities=tags,
                                latent_sample=[float(x) for x in lat]))
    return notes


def eval_knobs(gen, rng: np.random.Generator, n_points: int) -> tuple[dict, dict]:
    notes = knob_notes(rng, n_points)
    refs = [p.replace(latent_sample=[0.0] * LATENT_DIM) for p in notes]
    audio, ref_audio = render_checked(gen, notes), render_checked(gen, refs)

    def peak_db(a):
        return 20.0 * math.log10(max(float(np.max(np.abs(a))), 1e-12)) if a is not None else float("nan")

    peak = np.array([peak_db(a) for a in audio])
    ref = np.array([peak_db(a) for a in ref_audio])
    finite = np.array([a is not None and bool(np.all(np.isfinite(a))) for a in audio])
    clipped = np.array([a is not None and float(np.max(np.abs(a))) > 1.0 for a in audio])
    cents = np.array([metrics.pitch_error_cents(a, SAMPLE_RATE, p.pitch) if ok else float("nan")
                      for a, p, ok in zip(audio, notes, finite)])
    quiet = ~(peak >= KNOB_MIN_PEAK_DBFS)
    dropped = ~(peak >= ref - KNOB_MAX_DROP_DB)
    on_pitch = np.abs(cents) <= KNOB_PITCH_CENTS
    corner = np.arange(len(notes)) % 2 == 1
    order = np.argsort(np.nan_to_num(peak - ref, nan=-np.inf))
    summary = {
        "n_notes": len(notes),
        "n_inaudible": int(np.sum(quiet | dropped)),
        "n_below_min_peak": int(np.sum(quiet)),
        "n_dropped_vs_latent0": int(np.sum(dropped)),
        "n_inaudible_corners": int(np.sum((quiet | dropped) & corner)),
        "fraction_on_pitch": float(np.mean(on_pitch)),
        "n_non_finite": int(np.sum(~finite)),
        "n_clipped": int(np.sum(clipped)),
        "min_peak_dbfs": float(np.nanmin(peak)) if np.any(finite) else float("nan"),
        "median_peak_dbfs": float(np.nanmedian(peak)) if np.any(finite) else float("nan"),
        "max_drop_vs_latent0_db": float(np.nanmax(ref - peak)) if np.any(finite) else float("nan"),
        "worst": [{"pitch": notes[i].pitch, "source": notes[i].source, "qualities": list(notes[i].qualities),
                   "corner": bool(corner[i]), "peak_dbfs": float(peak[i]), "latent0_peak_dbfs": float(ref[i]),
                   "error_cents": float(cents[i])} for i in order[:5]],
        "limits": {"min_peak_dbfs": KNOB_MIN_PEAK_DBFS, "max_drop_db": KNOB_MAX_DROP_DB,
                   "pitch_cents": KNOB_PITCH_CENTS, "min_fraction_on_pitch": KNOB_PITCH_FRACTION},
        "pass": bool(not np.any(quiet | dropped) and np.mean(on_pitch) >= KNOB_PITCH_FRACTION
                     and finite.all() and not clipped.any()),
    }
    return summary, {"notes": [{**notes[i].to_dict(), "peak_dbfs": float(peak[i]), "latent0_peak_dbfs": float(ref[i]),
                                "error_cents": float(cents[i])} for i in range(len(notes))]}


def eval_releases(gen) -> tuple[dict, dict]:
    plain = [NoteParams(pitch=p, velocity=100, source=src, qualities=list(tags))
             for src in SOURCES for tags in RELEASE_TAG_SETS for p in RELEASE_PITCHES]
    tagged = [p.replace(qualities=list(p.qualities) + ["long_release"]) for p in plain]
    audio, audio_lr = render_checked(gen, plain), render_checked(gen, tagged)

    def measure(a):
        if a is None:
            return float("nan"), float("nan")
        held = a[int(0.05 * SAMPLE_RATE) : int(3.0 * SAMPLE_RATE)].astype(np.float64)
        return metrics.release_time_s(a, SAMPLE_RATE), 10.0 * math.log10(float(np.mean(held**2)) + 1e-20)

    t, held = np.array([measure(a) for a in audio]).T
    t_lr, held_lr = np.array([measure(a) for a in audio_lr]).T
    ends = t <= RELEASE_WITHIN_S
    # A release that never falls 30 dB within the file is longer than any that does.
    grows = np.where(np.isinf(t), False, np.isinf(t_lr) | (t_lr >= LONG_RELEASE_GROWTH * t))
    kept = held - held_lr <= LONG_RELEASE_MAX_HELD_DROP_DB
    finite_t = t[np.isfinite(t)]
    summary = {
        "n_timbres": len(plain),
        "fraction_ending": float(np.mean(ends)),
        "median_release_s": float(np.median(finite_t)) if len(finite_t) else float("inf"),
        "n_never_falling": int(np.sum(np.isinf(t))),
        "long_release": {"fraction_pass": float(np.mean(grows & kept)), "fraction_longer": float(np.mean(grows)),
                         "fraction_held_kept": float(np.mean(kept)),
                         "median_held_drop_db": float(np.nanmedian(held - held_lr))},
        "limits": {"drop_db": RELEASE_DROP_DB, "within_s": RELEASE_WITHIN_S, "min_fraction": RELEASE_MIN_FRACTION,
                   "long_release_growth": LONG_RELEASE_GROWTH, "long_release_max_held_drop_db": LONG_RELEASE_MAX_HELD_DROP_DB,
                   "long_release_min_fraction": LONG_RELEASE_MIN_FRACTION},
        "pass": bool(np.mean(ends) >= RELEASE_MIN_FRACTION and np.mean(grows & kept) >= LONG_RELEASE_MIN_FRACTION),
    }
    return summary, {"notes": [{**p.to_dict(), "release_s": float(a), "release_s_long_release": float(b),
                                "held_db": float(c), "held_db_long_release": float(d)}
                               for p, a, b, c, d in zip(plain, t, t_lr, held, held_lr)]}


def eval_level(gen) -> tuple[dict, dict]:
    from synth.calibrate import measure_level

    summary = measure_level(gen)
    per_pitch = summary.pop("per_pitch_median_dbfs")
    return summary, {"per_pitch_median_dbfs": per_pitch}


def eval_pitch(gen, test: dict, rng: np.random.Generator, pitches: Sequence[int]) -> tuple[dict, dict]:
    idx = rng.integers(0, len(test["pitch"]), size=len(pitches))
    notes = [note_of(test, int(i), pitch=int(p)) for i, p in zip(idx, pitches)]
    audio = render_checked(gen, notes)
    errors = [metrics.pitch_error_cents(a, SAMPLE_RATE, p.pitch) if a is not None else float("nan")
              for a, p in zip(audio, notes)]
    summary = metrics.pitch_summary(errors, PITCH_MEDIAN_CENTS, PITCH_MAX_CENTS)
    order = np.argsort(-np.nan_to_num(np.abs(errors), nan=np.inf))
    summary["worst"] = [{"pitch": notes[i].pitch, "velocity": notes[i].velocity, "source": notes[i].source,
                         "qualities": list(notes[i].qualities), "error_cents": errors[i]} for i in order[:5]]
    summary["limits"] = {"median_abs_cents": PITCH_MEDIAN_CENTS, "max_abs_cents": PITCH_MAX_CENTS}
    return summary, {"notes": [{**notes[i].to_dict(), "error_cents": errors[i]} for i in range(len(notes))]}


def eval_velocity(gen, test: dict, rng: np.random.Generator, n_combos: int) -> tuple[dict, dict]:
    combos: dict[tuple, int] = {}
    for i in rng.permutation(len(test["pitch"])):
        key = (int(test["pitch"][i]), int(test["source"][i]), tuple(test["qualities"][i] > 0.5))
        combos.setdefault(key, int(i))
        if len(combos) >= n_combos:
            break
    rows, details = [], []
    for i in combos.values():
        notes = [note_of(test, i, velocity=v) for v in VELOCITY_LAYERS]
        audio = render_checked(gen, notes)
        levels = [metrics.held_loudness_db(a, SAMPLE_RATE) if a is not None else float("nan") for a in audio]
        rows.append(levels)
        details.append({**notes[0].to_dict(), "velocity": list(VELOCITY_LAYERS), "loudness_db": levels})
    up, steps = metrics.rising_steps(rows) if rows else (0, 0)
    frac = up / steps if steps else float("nan")
    mean_levels = np.nanmean(np.asarray(rows, np.float64), axis=0) if rows else [float("nan")] * 5
    summary = {
        "n_combos": len(rows), "n_steps": steps, "n_rising": up, "fraction_rising": frac,
        "mean_loudness_db_per_velocity": dict(zip(map(str, VELOCITY_LAYERS), map(float, mean_levels))),
        "limit": VELOCITY_MIN_FRACTION, "pass": bool(steps > 0 and frac >= VELOCITY_MIN_FRACTION),
    }
    return summary, {"combos": details}


def eval_dynamics(gen, test: dict, rng: np.random.Generator, per_cell: int) -> tuple[dict, dict]:
    def peak_db(a) -> float:
        return 20.0 * math.log10(max(float(np.max(np.abs(a))), 1e-12)) if a is not None else float("nan")

    cells = []
    for pitch in DYNAMICS_PITCHES:
        for v in VELOCITY_LAYERS:
            idx = np.nonzero((test["pitch"] == pitch) & (test["velocity"] == v))[0]
            if not len(idx):
                continue
            data_db = float(np.median([peak_db(np.asarray(test["audio"][i], np.float32)) for i in idx]))
            pick = idx if len(idx) <= per_cell else rng.choice(idx, per_cell, replace=False)
            audio = render_checked(gen, [note_of(test, int(i)) for i in pick])
            gen_db = float(np.nanmedian([peak_db(a) for a in audio])) - gen.output_gain_db
            cells.append({"pitch": pitch, "velocity": v, "n_data": len(idx), "n_generated": len(pick),
                          "data_peak_dbfs": data_db, "generated_peak_dbfs": gen_db, "difference_db": gen_db - data_db})
    diffs = np.array([c["difference_db"] for c in cells]) if cells else np.zeros(0)

    def span(key: str) -> float:  # velocity 127 minus velocity 25, median over pitches
        by = {}
        for c in cells:
            by.setdefault(c["pitch"], {})[c["velocity"]] = c[key]
        spans = [d[VELOCITY_LAYERS[-1]] - d[VELOCITY_LAYERS[0]] for d in by.values()
                 if VELOCITY_LAYERS[0] in d and VELOCITY_LAYERS[-1] in d]
        return float(np.median(spans)) if spans else float("nan")

    summary = {
        "n_cells": len(cells),
        "n_within": int(np.sum(np.abs(diffs) <= DYNAMICS_MAX_DB)),
        "max_abs_difference_db": float(np.nanmax(np.abs(diffs))) if len(diffs) else float("nan"),
        "median_difference_db": float(np.nanmedian(diffs)) if len(diffs) else float("nan"),
        "data_velocity_span_db": span("data_peak_dbfs"),
        "generated_velocity_span_db": span("generated_peak_dbfs"),
        "output_gain_db": float(gen.output_gain_db),
        "limits": {"max_abs_difference_db": DYNAMICS_MAX_DB},
        "pass": bool(len(cells) > 0 and np.all(np.abs(diffs) <= DYNAMICS_MAX_DB)),
    }
    return summary, {"cells": cells}


def eval_tags(gen, test: dict, rng: np.random.Generator, n_pairs: int) -> tuple[dict, dict]:
    from synth.data.qualities import score_note

    def pairs(q: str, gen_rng: np.random.Generator):
        idx = gen_rng.integers(0, len(test["pitch"]), size=n_pairs)
        latents = np.clip(gen_rng.standard_normal((n_pairs, LATENT_DIM)), LATENT_MIN, LATENT_MAX)
        drop = {q, OPPOSITE_TAG.get(q, q)}
        without, with_ = [], []
        for i, lat in zip(idx, latents):
            base = [t for t, v in zip(QUALITIES, test["qualities"][i]) if v > 0.5 and t not in drop]
            without.append(note_of(test, int(i), latent=lat, qualities=base))
            with_.append(note_of(test, int(i), latent=lat, qualities=base + [q]))
        audio = render_checked(gen, without + with_)
        scores = [score_note(a, SAMPLE_RATE, p.pitch)[q] if a is not None else float("nan")
                  for a, p in zip(audio, without + with_)]
        return without, scores[:n_pairs], scores[n_pairs:]

    per_tag, details = {}, {}
    for q in QUALITIES:
        without, s0, s1 = pairs(q, rng)
        ceiling = SCORE_CEILINGS.get(q)
        r = metrics.moved_up(s0, s1, ceiling)
        # A tag whose score saturates (long_release: many notes already ring past the end of the
        # file) leaves few pairs that can show a rise: draw more, from a stream of their own (the
        # other tags' pairs stay the same), until n_pairs are defined or 8 x n_pairs are drawn.
        extra = rng.spawn(1)[0] if ceiling is not None else None
        while extra is not None and r["n_defined"] < n_pairs and len(s0) < MAX_DRAW_FACTOR * n_pairs:
            w, a0, a1 = pairs(q, extra)
            without, s0, s1 = without + w, s0 + a0, s1 + a1
            r = metrics.moved_up(s0, s1, ceiling)
        r["target"] = q in TARGET_TAGS
        per_tag[q] = r
        details[q] = [{"pitch": p.pitch, "velocity": p.velocity, "source": p.source,
                       "qualities_without": list(p.qualities), "score_without": a, "score_with": b}
                      for p, a, b in zip(without, s0, s1)]
    ok = all(per_tag[q]["n_defined"] > 0 and per_tag[q]["fraction"] >= TAG_MIN_FRACTION for q in TARGET_TAGS)
    summary = {"per_tag": per_tag, "target_tags": list(TARGET_TAGS), "limit": TAG_MIN_FRACTION,
               "n_pairs_per_tag": n_pairs, "pass": bool(ok)}
    return summary, {"pairs": details}


def eval_latent(gen, dims: Sequence[int], n_steps: int, seed: int) -> tuple[dict, dict]:
    values = np.linspace(LATENT_MIN, LATENT_MAX, n_steps)
    per_dim, details = {}, {}
    all_finite, peak_max, raw_peak_max = True, 0.0, 0.0
    for d in dims:
        notes = []
        for v in values:
            lat = [0.0] * LATENT_DIM
            lat[d] = float(v)
            notes.append(LATENT_BASE.replace(latent_sample=lat))
        final = render_checked(gen, notes)
        finite = all(a is not None and np.all(np.isfinite(a)) for a in final)
        peak = max((float(np.max(np.abs(a))) for a in final if a is not None), default=float("nan"))
        raw = [render_seeded(gen, p, seed) for p in notes]
        raw_finite = all(np.all(np.isfinite(a)) for a in raw)
        raw_peak = max(float(np.max(np.abs(a))) for a in raw) if raw_finite else float("nan")
        feats = [metrics.log_mel_db(a, SAMPLE_RATE) for a in raw] if raw_finite else []
        dist = metrics.step_distances(feats) if feats else np.full(n_steps - 1, np.nan)
        effect = metrics.spectral_distance_db(feats[0], feats[-1]) if feats else float("nan")
        smooth = metrics.smoothness(dist) if feats else {"max_over_median": float("nan"),
                                                         "local_jump_ratio": float("nan"), "argmax_jump": -1}
        ok = bool(finite and raw_finite and peak <= 1.0 and effect >= LATENT_MIN_EFFECT_DB
                  and smooth["local_jump_ratio"] <= LATENT_MAX_JUMP)
        per_dim[str(d)] = {"endpoint_distance_db": effect, "path_length_db": float(np.sum(dist)),
                           **smooth, "peak": peak, "raw_peak": raw_peak, "finite": finite and raw_finite,
                           "pass": ok}
        details[str(d)] = {"values": values.tolist(), "step_distances_db": dist.tolist()}
        all_finite &= finite and raw_finite
        peak_max = max(peak_max, peak) if math.isfinite(peak) else peak_max
        raw_peak_max = max(raw_peak_max, raw_peak) if math.isfinite(raw_peak) else raw_peak_max
    n_moving = sum(r["endpoint_distance_db"] >= LATENT_MIN_EFFECT_DB for r in per_dim.values())
    summary = {
        "base_note": {k: v for k, v in LATENT_BASE.to_dict().items() if k != "latent_sample"},
        "n_dims": len(per_dim), "n_steps": n_steps, "all_finite": bool(all_finite),
        "peak_max": peak_max, "raw_peak_max": raw_peak_max,
        "n_dims_moving": int(n_moving),
        "n_dims_smooth": int(sum(r["local_jump_ratio"] <= LATENT_MAX_JUMP for r in per_dim.values())),
        "max_local_jump_ratio": max((r["local_jump_ratio"] for r in per_dim.values()), default=float("nan")),
        "median_endpoint_distance_db": float(np.median([r["endpoint_distance_db"] for r in per_dim.values()])),
        "limits": {"min_endpoint_distance_db": LATENT_MIN_EFFECT_DB, "max_local_jump_ratio": LATENT_MAX_JUMP,
                   "max_peak": 1.0},
        "per_dim": per_dim,
        "pass": bool(per_dim and all(r["pass"] for r in per_dim.values())),
    }
    return summary, {"sweeps": details}


def _baseline_subset(train: dict, keys: set[tuple[int, int]], rng: np.random.Generator) -> np.ndarray:
    """Training notes for the naive baseline: up to BASELINE_NOTES_PER_KEY per (pitch, velocity)
    key, the key resolved as `metrics.NaiveBaseline` does (nearest pitch at that velocity, else
    nearest pitch at any velocity) so that fitting on the subset predicts what fitting on all
    would."""
    tp, tv = np.asarray(train["pitch"]), np.asarray(train["velocity"])
    available = sorted(set(zip(tp.tolist(), tv.tolist())))
    chosen = []
    for p, v in sorted(keys):
        pool = [k for k in available if k[1] == v] or available
        kp, kv = min(pool, key=lambda k: (abs(k[0] - p), abs(k[1] - v), k))
        sel = np.flatnonzero((tp == kp) & (tv == kv))
        if len(sel) > BASELINE_NOTES_PER_KEY:
            sel = rng.choice(sel, BASELINE_NOTES_PER_KEY, replace=False)
        chosen.append(sel)
    return np.unique(np.concatenate(chosen))


def _thin(ld) -> list[float] | None:
    """A loudness curve (250 frames/s) at every REALISM_CURVE_STEP-th frame, to 0.1 dB."""
    return None if ld is None else [round(float(x), 1) for x in np.asarray(ld)[::REALISM_CURVE_STEP]]


def eval_realism(gen, test: dict, train: dict | None, rng: np.random.Generator,
                 max_notes: int) -> tuple[dict, dict]:
    from synth.fast_render import compute_loudness_db

    if train is None:
        return {"skipped": "no train split for the baseline", "pass": None}, {}
    idx = _sample(len(test["pitch"]), max_notes, rng)
    keys = {(int(test["pitch"][i]), int(test["velocity"][i])) for i in idx}
    sub = _baseline_subset(train, keys, rng)
    train_centroids = [metrics.spectral_centroid_hz(train["audio"][int(i)], SAMPLE_RATE) for i in sub]
    baseline = metrics.NaiveBaseline.fit(train["pitch"][sub], train["velocity"][sub],
                                         np.asarray(train["loudness_db"][sub]), train_centroids)
    groups = key_groups(test)
    partner = {}
    for i in idx:
        chosen, _ = other_instruments(test, groups, int(i), 1, rng)
        partner[int(i)] = chosen[0] if chosen else None
    nan = float("nan")
    rows, curves, pictured = [], [], set()
    for start in range(0, len(idx), 64):
        chunk = idx[start : start + 64]
        notes = [note_of(test, int(i)) for i in chunk]
        for i, p, a in zip(chunk, notes, render_checked(gen, notes)):
            a, j = at_data_scale(gen, a), partner[int(i)]
            real = test["audio"][int(i)]
            ld_real = np.asarray(test["loudness_db"][int(i)])
            c_real = metrics.spectral_centroid_hz(real, SAMPLE_RATE)
            mel_real = metrics.log_mel_db(real, SAMPLE_RATE)
            env_b, c_b = baseline.predict(p.pitch, p.velocity)
            ld_g = None if a is None else compute_loudness_db(a, SAMPLE_RATE, frame_rate=250)
            row = {"note_str": str(test["note_str"][int(i)]), "pitch": p.pitch, "velocity": p.velocity,
                   "random_note_str": None if j is None else str(test["note_str"][j])}
            row["envelope_error_db"] = nan if a is None else metrics.envelope_error_db(ld_g, ld_real)
            row["envelope_error_db_baseline"] = metrics.envelope_error_db(env_b, ld_real)
            row["envelope_error_db_random"] = nan if j is None else metrics.envelope_error_db(
                test["loudness_db"][j], ld_real)
            row["centroid_error_oct"] = nan if a is None else metrics.centroid_error_octaves(
                metrics.spectral_centroid_hz(a, SAMPLE_RATE), c_real)
            row["centroid_error_oct_baseline"] = metrics.centroid_error_octaves(c_b, c_real)
            row["centroid_error_oct_random"] = nan if j is None else metrics.centroid_error_octaves(
                metrics.spectral_centroid_hz(test["audio"][j], SAMPLE_RATE), c_real)
            row["log_mel_error_db"] = nan if a is None else metrics.spectral_distance_db(
                metrics.log_mel_db(a, SAMPLE_RATE), mel_real)
            row["log_mel_error_db_random"] = nan if j is None else metrics.spectral_distance_db(
                metrics.log_mel_db(test["audio"][j], SAMPLE_RATE), mel_real)
            rows.append(row)
            # For the envelope picture (synth.figures): one note each of the first instruments met.
            if len(curves) < REALISM_CURVE_NOTES and int(test["instrument"][int(i)]) not in pictured:
                pictured.add(int(test["instrument"][int(i)]))
                curves.append({"note_str": row["note_str"], "pitch": p.pitch, "velocity": p.velocity,
                               "random_note_str": row["random_note_str"], "frame_rate": 250 / REALISM_CURVE_STEP,
                               "real": _thin(ld_real), "generated": _thin(ld_g),
                               "random": _thin(None if j is None else test["loudness_db"][j])})

    def col(k):
        return np.array([r[k] for r in rows], np.float64)

    paired = np.array([r["random_note_str"] is not None for r in rows], bool)
    out: dict[str, Any] = {"n_notes": len(rows), "n_baseline_train_notes": int(len(sub)),
                           "n_notes_without_random": int(np.sum(~paired)),
                           "output_gain_db_removed": float(gen.output_gain_db)}
    ok = True
    for name, unit in (("envelope_error", "db"), ("centroid_error", "oct"), ("log_mel_error", "db")):
        g = col(f"{name}_{unit}")
        # A note the generator could not render (non-finite) counts as an infinite error.
        g_filled = np.where(np.isfinite(g), g, np.inf)
        mean_g = float(np.mean(g_filled)) if rows else nan
        r = {"unit": "dB" if unit == "db" else "octaves", "generated_mean": mean_g,
             "generated_median": float(np.median(g_filled)) if rows else nan}
        # Against the random instrument: on the notes that have one.
        rnd, g_p = col(f"{name}_{unit}_random")[paired], g_filled[paired]
        r.update({"random_mean": float(np.mean(rnd)) if len(rnd) else nan,
                  "random_median": float(np.median(rnd)) if len(rnd) else nan,
                  "generated_mean_with_random": float(np.mean(g_p)) if len(g_p) else nan,
                  "fraction_notes_beating_random": float(np.mean(g_p < rnd)) if len(rnd) else nan,
                  "beats_random": bool(len(rnd) and np.mean(g_p) < np.mean(rnd))})
        passed = r["beats_random"]
        if "mean baseline" in REALISM_MUST_BEAT[name]:
            b = col(f"{name}_{unit}_baseline")
            r.update({"baseline_mean": float(np.nanmean(b)) if rows else nan,
                      "baseline_median": float(np.nanmedian(b)) if rows else nan,
                      "fraction_notes_beating_baseline": float(np.mean(g_filled < b)) if rows else nan,
                      "beats_baseline": bool(rows and mean_g < np.nanmean(b))})
            passed = passed and r["beats_baseline"]
        r["pass"] = bool(passed)
        out[name] = r
        ok &= r["pass"]
    out["limits"] = {"must_beat": {k: list(v) for k, v in REALISM_MUST_BEAT.items()}}
    out["pass"] = bool(ok and rows)
    # Column-wise: one list per field (thousands of notes with the full split).
    return out, {"notes": {k: [r[k] for r in rows] for k in (rows[0] if rows else {})}, "curves": curves}


def _mel_vector(mel: np.ndarray) -> list[float]:
    """A log-mel spectrogram averaged over time, rounded (for the timbre map)."""
    return [round(float(x), 1) for x in np.mean(mel, axis=0)]


def eval_reach(gen, test: dict, rng: np.random.Generator, n_notes: int, n_draws: int) -> tuple[dict, dict]:
    groups = key_groups(test)
    idx = spread_notes(test, groups, n_notes, rng)
    if not idx:
        return {"skipped": "no test note has another instrument at its pitch and velocity", "pass": None}, {}
    inst = np.asarray(test["instrument"])
    rows, mels = [], {"real": [], "nearest_real": [], "generated": []}
    per_batch = max(1, 64 // n_draws)
    for start in range(0, len(idx), per_batch):
        chunk = idx[start : start + per_batch]
        latents = [rng.uniform(LATENT_MIN, LATENT_MAX, (n_draws, LATENT_DIM)) for _ in chunk]
        notes = [note_of(test, i, latent=[float(x) for x in lat]) for i, lats in zip(chunk, latents) for lat in lats]
        audio = [at_data_scale(gen, a) for a in render_checked(gen, notes)]
        for k, i in enumerate(chunk):
            mel_real = metrics.log_mel_db(test["audio"][i], SAMPLE_RATE)
            gen_mels = [None if a is None else metrics.log_mel_db(a, SAMPLE_RATE)
                        for a in audio[k * n_draws : (k + 1) * n_draws]]
            d_gen = np.array([np.inf if m is None else metrics.spectral_distance_db(m, mel_real) for m in gen_mels])
            d_gen = np.where(np.isfinite(d_gen), d_gen, np.inf)
            others, n_available = other_instruments(test, groups, i, n_draws, rng)
            other_mels = [metrics.log_mel_db(test["audio"][j], SAMPLE_RATE) for j in others]
            d_real = np.array([metrics.spectral_distance_db(m, mel_real) for m in other_mels])
            best, nearest = int(np.argmin(d_gen)), int(np.argmin(d_real))
            rows.append({"note_str": str(test["note_str"][i]), "instrument": int(inst[i]),
                         "pitch": int(test["pitch"][i]), "velocity": int(test["velocity"][i]),
                         "best_generated_db": float(d_gen[best]), "best_draw": best,
                         "best_latent": [round(float(x), 3) for x in latents[k][best]],
                         "nearest_real_db": float(d_real[nearest]),
                         "nearest_real_note_str": str(test["note_str"][others[nearest]]),
                         "n_others_available": n_available, "n_others_used": len(others),
                         "n_non_finite_draws": int(np.sum(~np.isfinite(d_gen))),
                         "draw_distances_db": d_gen.tolist(), "other_distances_db": d_real.tolist()})
            mels["real"].append(_mel_vector(mel_real))
            mels["nearest_real"].append(_mel_vector(other_mels[nearest]))
            mels["generated"].append([None if m is None else _mel_vector(m) for m in gen_mels])

    best = np.array([r["best_generated_db"] for r in rows])
    nearest = np.array([r["nearest_real_db"] for r in rows])
    used = np.array([r["n_others_used"] for r in rows])
    measured_ok = bool(np.mean(best) <= REACH_MAX_RATIO * np.mean(nearest))
    summary = {
        "n_notes": len(rows), "n_instruments": len({r["instrument"] for r in rows}), "n_draws": n_draws,
        "latent_range": [LATENT_MIN, LATENT_MAX],
        "best_generated_mean_db": float(np.mean(best)), "best_generated_median_db": float(np.median(best)),
        "nearest_real_mean_db": float(np.mean(nearest)), "nearest_real_median_db": float(np.median(nearest)),
        "fraction_generated_at_least_as_close": float(np.mean(best <= nearest)),
        "mean_others_used": float(np.mean(used)), "n_notes_with_fewer_others": int(np.sum(used < n_draws)),
        "n_non_finite_draws": int(sum(r["n_non_finite_draws"] for r in rows)),
        "output_gain_db_removed": float(gen.output_gain_db),
        "too_few_draws": n_draws < REACH_MIN_DRAWS,
        "limits": {"min_draws": REACH_MIN_DRAWS, "max_ratio": REACH_MAX_RATIO},
        "pass": bool(measured_ok and n_draws >= REACH_MIN_DRAWS),
    }
    return summary, {"notes": {k: [r[k] for r in rows] for k in rows[0]}, "mel_mean_db": mels}


def eval_reconstruction(checkpoint_dir: str, test: dict, train: dict | None, rng: np.random.Generator,
                        n_notes: int) -> tuple[dict, dict]:
    import tensorflow as tf

    from synth import core
    from synth import models as M
    from synth.training.data import compute_features
    from synth.checkpoint import DDSP_DIR, ENCODER, DDSPParts

    ddsp_dir = os.path.join(checkpoint_dir, DDSP_DIR)
    if not os.path.isfile(os.path.join(ddsp_dir, ENCODER)):
        return {"skipped": f"no encoder weights in {ddsp_dir}", "pass": None}, {}
    parts = DDSPParts(ddsp_dir)
    fm = np.asarray(parts.stats["feature_mean"], np.float32)
    fs = np.asarray(parts.stats["feature_std"], np.float32)

    def losses(data: dict, idx: np.ndarray) -> tuple[list[float], list[float]]:
        """(autoencoder losses, losses of silence: the scale a loss is read against) per note."""
        out, silent = [], []
        for c0 in range(0, len(idx), 256):  # features per chunk (bounded memory for --recon-notes 0)
            chunk = idx[c0 : c0 + 256]
            feats = (compute_features(np.asarray(data["audio"][chunk], np.float32), progress=False) - fm) / fs
            for start in range(0, len(chunk), 8):
                i = chunk[start : start + 8]
                audio = np.asarray(data["audio"][i], np.float32)
                z = parts.encoder(feats[start : start + 8], training=False)
                f0 = tf.constant(np.asarray(data["f0_hz"][i], np.float32))
                ld = tf.constant(np.asarray(data["loudness_db"][i], np.float32))
                pred = M.decode_crop(parts.decoder, parts.synth, parts.cfg, z, f0, ld, 0, M.N_FRAMES, False).numpy()
                for j in range(len(i)):
                    out.append(float(core.multiscale_spectral_loss(audio[j : j + 1], pred[j : j + 1])))
                    silent.append(float(core.multiscale_spectral_loss(audio[j : j + 1], 0.0 * audio[j : j + 1])))
        return out, silent

    l_test, l_silent = losses(test, _sample(len(test["pitch"]), n_notes, rng))
    out: dict[str, Any] = {"n_test_notes": len(l_test), "test_loss_mean": float(np.mean(l_test)),
                           "test_loss_median": float(np.median(l_test)),
                           "test_loss_of_silence_mean": float(np.mean(l_silent))}
    if train is None:
        out.update({"skipped": "no train split to compare with", "pass": None})
        return out, {"test_losses": l_test}
    l_train, _ = losses(train, _sample(len(train["pitch"]), n_notes, rng))
    ratio = float(np.mean(l_test) / np.mean(l_train))
    out.update({"n_train_notes": len(l_train), "train_loss_mean": float(np.mean(l_train)),
                "train_loss_median": float(np.median(l_train)), "test_over_train": ratio,
                "limit": RECON_MAX_RATIO, "pass": bool(ratio <= RECON_MAX_RATIO)})
    return out, {"test_losses": l_test, "train_losses": l_train}


# ---------------------------------------------------------------------------------------------
# Running it all.


def _hardware() -> dict:
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    import tensorflow as tf

    return {"cpu": cpu, "cpu_count": os.cpu_count(), "gpus": len(tf.config.list_physical_devices("GPU")),
            "python": platform.python_version(), "tensorflow": tf.__version__, "platform": platform.platform()}


def evaluate(args: argparse.Namespace) -> tuple[dict, dict]:
    """All selected targets: (report, details). See the module docstring."""
    from synth.data.reader import load_split, read_examples
    from synth.generator import DEFAULT_CHECKPOINT_DIR, INFERENCE_VERSION, get_generator

    t_start = time.perf_counter()
    checkpoint_dir = os.path.abspath(args.checkpoints or DEFAULT_CHECKPOINT_DIR)
    gen = get_generator(checkpoint_dir)
    if args.data:
        test = load_split(args.data, args.split, progress=False)
        has_train = os.path.isfile(os.path.join(args.data, "train", "examples.json"))
    else:  # only targets that need no data (run() checks)
        test, has_train = {"pitch": np.zeros(0), "instrument": np.zeros(0)}, False
    # The train split's arrays (and, on first use, its feature cache) only where a target needs them.
    needs_train = has_train and bool({"realism", "reconstruction"} & set(args.only))
    train = load_split(args.data, "train", progress=False) if needs_train else None
    train_inst = {int(e["instrument"]) for e in read_examples(args.data, "train")} if has_train else None
    test_inst = sorted(set(int(i) for i in test["instrument"]))
    unseen = None if train_inst is None else not (set(test_inst) & train_inst)
    report: dict[str, Any] = {
        "model_version": gen.model_version,
        "inference": {"tag_guidance_z": gen.tag_guidance_z, "tag_guidance_loudness": gen.tag_guidance_loudness,
                      "guided_tags": list(gen.guided_tags), "inference_version": INFERENCE_VERSION},
        "checkpoints": checkpoint_dir,
        "data": os.path.abspath(args.data) if args.data else None,
        "split": args.split,
        "n_split_notes": int(len(test["pitch"])),
        "n_split_instruments": len(test_inst),
        "n_train_instruments": None if train_inst is None else len(train_inst),
        "split_instruments_unseen_in_train": unseen,
        "settings": {"seed": args.seed, "max_notes": args.max_notes, "recon_notes": args.recon_notes,
                     "pitch_range": list(args.pitch_range), "pitch_step": args.pitch_step,
                     "pitch_repeats": args.pitch_repeats,
                     "velocity_combos": args.velocity_combos, "tag_pairs": args.tag_pairs,
                     "latent_dims": list(args.latent_dims), "latent_steps": args.latent_steps,
                     "knob_points": args.knob_points, "dynamics_notes": args.dynamics_notes,
                     "reach_notes": args.reach_notes, "reach_draws": args.reach_draws},
        "hardware": _hardware(),
        "evaluated_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "targets": {},
    }
    details: dict[str, Any] = {}
    for target in TARGETS:
        if target not in args.only:
            continue
        t0 = time.perf_counter()
        # One generator per target, seeded from the run's seed: a target's sample does not
        # depend on which other targets ran.
        rng = np.random.default_rng([args.seed, RNG_STREAMS.index(target)])
        if target == "pitch":
            lo, hi = args.pitch_range
            pitches = list(range(lo, hi + 1, max(1, args.pitch_step))) * max(1, args.pitch_repeats)
            s, d = eval_pitch(gen, test, rng, sorted(pitches))
        elif target == "velocity":
            s, d = eval_velocity(gen, test, rng, args.velocity_combos)
        elif target == "dynamics":
            s, d = eval_dynamics(gen, test, rng, args.dynamics_notes)
        elif target == "tags":
            s, d = eval_tags(gen, test, rng, args.tag_pairs)
        elif target == "latent":
            s, d = eval_latent(gen, args.latent_dims, args.latent_steps, args.seed)
        elif target == "knobs":
            s, d = eval_knobs(gen, rng, args.knob_points)
        elif target == "level":
            s, d = eval_level(gen)
        elif target == "releases":
            s, d = eval_releases(gen)
        elif target == "realism":
            s, d = eval_realism(gen, test, train, rng, args.max_notes)
        elif target == "reach":
            s, d = eval_reach(gen, test, rng, args.reach_notes, args.reach_draws)
        else:
            s, d = eval_reconstruction(checkpoint_dir, test, train, rng, args.recon_notes)
        s["seconds"] = round(time.perf_counter() - t0, 1)
        log.info("%s: pass=%s (%.1f s)", target, s["pass"], s["seconds"])
        report["targets"][target] = s
        details[target] = d
    verdicts = [t["pass"] for t in report["targets"].values() if t["pass"] is not None]
    report["pass"] = bool(verdicts) and all(verdicts)
    report["seconds"] = round(time.perf_counter() - t_start, 1)
    return _clean(report), _clean(details)


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.from_json:
        with open(args.from_json) as f:
            report = json.load(f)
        details = report.pop("details", {})
        if args.checkpoints:
            # The same weights copied elsewhere (e.g. a training run's export into checkpoints/):
            # the report moves with them only if the model version matches.
            from synth.generator import get_generator

            version = get_generator(args.checkpoints).model_version
            if version != report.get("model_version"):
                print(f"sound-generator evaluate: error: {args.checkpoints} holds model {version}, "
                      f"{args.from_json} evaluated {report.get('model_version')}", file=sys.stderr)
                return 2
            report["checkpoints"] = os.path.abspath(args.checkpoints)
    else:
        if not args.data and not set(args.only) <= set(DATA_FREE_TARGETS):
            print("sound-generator evaluate: error: --data DIR is required (unless --from-json, or --only "
                  f"with targets from {','.join(DATA_FREE_TARGETS)})", file=sys.stderr)
            return 2
        report, details = evaluate(args)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        # The summary readable, the per-note details (thousands of rows) compact and rounded.
        text = json.dumps({**report, "details": "@DETAILS@"}, indent=1)
        compact = json.dumps(_rounded(details), separators=(",", ":"))
        with open(os.path.join(args.out, "eval.json"), "w") as f:
            f.write(text.replace('"@DETAILS@"', compact) + "\n")
    if args.figures or args.model_card:
        from synth import figures

        fig_dir = args.figures or os.path.join(os.path.dirname(os.path.abspath(args.model_card)), "figures")
        # The sweep picture shows the latent dimension that moves the sound most.
        per_dim = report.get("targets", {}).get("latent", {}).get("per_dim", {})
        moving = {int(d): r["endpoint_distance_db"] or 0.0 for d, r in per_dim.items()}
        dim = max(moving, key=moving.get) if moving else 0
        pictures = figures.write_figures(args.checkpoints or report.get("checkpoints"), fig_dir, latent_dim=dim,
                                         details=details)
        if args.model_card:
            figures.write_model_card(report, args.model_card, pictures)
    if args.json:
        print(json.dumps(report, separators=(",", ":")))
    else:
        print(format_table(report))
    return 1 if args.strict and report["pass"] is False else 0
