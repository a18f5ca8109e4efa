"""`sound-generator calibrate`: set the generator's output level, and the measurements behind it.

    sound-generator calibrate [--checkpoints DIR] [--target-dbfs -6] [--dry-run]

The calibration point: velocity 127 at latent 0 (no tags) peaks at CALIBRATION_DBFS (-6 dBFS)
over pitches CALIBRATION_PITCHES (36..84) and every source. Each pitch's level is the median peak
of its three sources' notes; the gain centres the range of those per-pitch levels on -6 dBFS
(the middle of the quietest and the loudest pitch), so that every pitch lands as close to it as
one gain can put them. The command renders those notes, and writes that gain into the
checkpoint's `ddsp_generator/config.json` (`output_gain_db`, with a `calibration` record: what
was measured and when). The gain scales the synthesizer's amplitude and noise controls
(`synth.models.scale_output`), so every path that renders (one-shot notes, `get_prediction`,
held notes, the live voices, export) plays at the calibrated level; the generator's peak limiter
still keeps every note within [-1, 1]. Rendering is linear in that gain, so one pass is exact.
The model version changes with the config (the server's note caches are keyed by it).

A run of the training recipe ends with this command, so the config that ships is written by a
command, never edited by hand. `sound-generator evaluate` measures the same notes (target
`level`).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, Sequence

import numpy as np

from synth.params import SOURCES, NoteParams
from synth.units import SAMPLE_RATE

CALIBRATION_DBFS = -6.0
CALIBRATION_TOLERANCE_DB = 3.0
CALIBRATION_PITCHES = tuple(range(36, 85))
CALIBRATION_VELOCITY = 127


def peak_dbfs(audio: np.ndarray) -> float:
    peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
    return 20.0 * np.log10(max(peak, 1e-12))


def calibration_notes(pitches: Sequence[int] = CALIBRATION_PITCHES) -> list[NoteParams]:
    """The calibration notes: every pitch x every source, velocity 127, latent 0, no tags."""
    return [NoteParams(pitch=int(p), velocity=CALIBRATION_VELOCITY, source=s) for s in SOURCES for p in pitches]


def measure_level(gen, pitches: Sequence[int] = CALIBRATION_PITCHES) -> dict[str, Any]:
    """Peaks (dBFS) of the calibration notes as `gen` renders them now.

    Returns median, min, max, per-pitch medians (over the sources) and per-source medians, and
    `pass`: the median within CALIBRATION_TOLERANCE_DB of CALIBRATION_DBFS and every pitch's
    median inside that band too."""
    notes = calibration_notes(pitches)
    peaks = np.array([peak_dbfs(a) for a in gen.render_batch(notes, SAMPLE_RATE)]).reshape(len(SOURCES), -1)
    per_pitch = np.median(peaks, axis=0)
    lo, hi = CALIBRATION_DBFS - CALIBRATION_TOLERANCE_DB, CALIBRATION_DBFS + CALIBRATION_TOLERANCE_DB
    median = float(np.median(peaks))
    return {
        "median_peak_dbfs": median,
        "mid_range_dbfs": float(0.5 * (per_pitch.min() + per_pitch.max())),
        "min_peak_dbfs": float(peaks.min()),
        "max_peak_dbfs": float(peaks.max()),
        "per_source_median_dbfs": {s: float(np.median(peaks[i])) for i, s in enumerate(SOURCES)},
        "per_pitch_median_dbfs": {str(p): float(v) for p, v in zip(pitches, per_pitch)},
        "n_pitches_in_band": int(np.sum((per_pitch >= lo) & (per_pitch <= hi))),
        "n_pitches": len(per_pitch),
        "output_gain_db": float(gen.output_gain_db),
        "limits": {"target_dbfs": CALIBRATION_DBFS, "tolerance_db": CALIBRATION_TOLERANCE_DB,
                   "pitches": [int(pitches[0]), int(pitches[-1])], "velocity": CALIBRATION_VELOCITY},
        "pass": bool(lo <= median <= hi and np.all((per_pitch >= lo) & (per_pitch <= hi))),
    }


def calibrate(checkpoint_dir: str, target_dbfs: float = CALIBRATION_DBFS, write: bool = True) -> dict[str, Any]:
    """Measure, and (write=True) store the gain that puts the middle of the per-pitch levels'
    range at `target_dbfs`.
    Returns {'before': measure_level, 'output_gain_db': new gain, 'after': measure_level or None}."""
    from synth.generator import Generator
    from synth.models import read_config, write_config

    gen = Generator(checkpoint_dir)
    before = measure_level(gen)
    gain_db = round(gen.output_gain_db + target_dbfs - before["mid_range_dbfs"], 2)
    result: dict[str, Any] = {"before": before, "output_gain_db": gain_db, "after": None}
    if not write:
        return result
    ddsp_dir = os.path.join(checkpoint_dir, "ddsp_generator")
    config = read_config(ddsp_dir)
    config["output_gain_db"] = gain_db
    config["calibration"] = {
        "target_dbfs": target_dbfs, "notes": f"velocity {CALIBRATION_VELOCITY}, latent 0, no tags, pitches "
                                            f"{CALIBRATION_PITCHES[0]}..{CALIBRATION_PITCHES[-1]}, every source",
        "mid_range_dbfs_before": before["mid_range_dbfs"], "gain_before_db": before["output_gain_db"],
        "calibrated_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }
    write_config(ddsp_dir, config)
    result["after"] = measure_level(Generator(checkpoint_dir))
    return result


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n")[0]
    parser.epilog = "\n\n".join(__doc__.split("\n\n")[1:])
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--checkpoints", default=None, metavar="DIR",
                        help="checkpoint directory to calibrate (default: the shipped checkpoints/)")
    parser.add_argument("--target-dbfs", type=float, default=CALIBRATION_DBFS,
                        help=f"where the per-pitch levels' range is centred (default {CALIBRATION_DBFS:g})")
    parser.add_argument("--dry-run", action="store_true", help="measure and print the gain, write nothing")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from synth.generator import DEFAULT_CHECKPOINT_DIR

    if not -40.0 <= args.target_dbfs <= 0.0:
        print(f"calibrate: --target-dbfs: expected -40..0 dBFS, got {args.target_dbfs:g}")
        return 2
    result = calibrate(os.path.abspath(args.checkpoints or DEFAULT_CHECKPOINT_DIR), args.target_dbfs,
                       write=not args.dry_run)
    if args.json:
        print(json.dumps(result, separators=(",", ":")))
        return 0
    b, a = result["before"], result["after"]
    print(f"before: median peak {b['median_peak_dbfs']:.1f} dBFS (min {b['min_peak_dbfs']:.1f}, "
          f"max {b['max_peak_dbfs']:.1f}) with output_gain_db {b['output_gain_db']:.2f}")
    if a is None:
        print(f"would set output_gain_db {result['output_gain_db']:.2f} (dry run: nothing written)")
    else:
        print(f"after:  median peak {a['median_peak_dbfs']:.1f} dBFS (min {a['min_peak_dbfs']:.1f}, "
              f"max {a['max_peak_dbfs']:.1f}) with output_gain_db {a['output_gain_db']:.2f}; "
              f"{a['n_pitches_in_band']}/{a['n_pitches']} pitches within +-{CALIBRATION_TOLERANCE_DB:g} dB")
    return 0
