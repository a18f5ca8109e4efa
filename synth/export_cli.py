"""`sound-generator export`: a preset as a sample instrument (WAV samples + an .sfz file).

    sound-generator export --preset bright-sustain-synthetic --out ./bright-sustain
    sound-generator export --preset "my pad" --out DIR --pitches 36-84 --every 4 --velocities 50 100 127

Writes DIR/<preset>.sfz and DIR/samples/<key>_v<velocity>.wav (48 kHz, 24-bit): one sample per
sampled key and velocity layer, with a sustain loop and a release fitted to the model's (see
synth/export.py). Exit status 0 on success, 1 for a preset that is not there or a folder that
cannot be written (a non-empty --out is refused unless --force), 2 for invalid input.
"""

from __future__ import annotations

import argparse
import logging
import sys

from synth.cli import int_at_least
from synth.export import DEFAULT_BEND_CENTS, DEFAULT_EVERY, DEFAULT_KEYS, DEFAULT_VELOCITIES
from synth.params import PITCH_MAX, PITCH_MIN, VELOCITY_MAX, VELOCITY_MIN

log = logging.getLogger("synth.export")


def pitch_range(text: str) -> tuple[int, int]:
    """'21-108' -> (21, 108) within the note schema's pitches; an argparse error naming the option."""
    try:
        lo, hi = (int(v) for v in text.split("-", 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--pitches: expected LO-HI (MIDI notes {PITCH_MIN}..{PITCH_MAX}), "
                                         f"got {text!r}") from None
    if not PITCH_MIN <= lo <= hi <= PITCH_MAX:
        raise argparse.ArgumentTypeError(f"--pitches: expected LO-HI with {PITCH_MIN} <= LO <= HI <= {PITCH_MAX}, "
                                         f"got {text!r}")
    return lo, hi


def velocity(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not VELOCITY_MIN <= value <= VELOCITY_MAX:
        raise argparse.ArgumentTypeError(f"--velocities: expected integers {VELOCITY_MIN}..{VELOCITY_MAX}, "
                                         f"got {text!r}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n")[0]
    parser.add_argument("--preset", required=True,
                        help="the preset to export (user or factory; see `preset list`)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created; must be empty)")
    parser.add_argument("--pitches", type=pitch_range, default=DEFAULT_KEYS, metavar="LO-HI",
                        help=f"the keys the instrument covers (default {DEFAULT_KEYS[0]}-{DEFAULT_KEYS[1]})")
    parser.add_argument("--every", type=int_at_least("--every", 1), default=DEFAULT_EVERY, metavar="N",
                        help=f"sample every Nth key (and HI); keys between play the nearest sample "
                             f"transposed (default {DEFAULT_EVERY})")
    parser.add_argument("--velocities", type=velocity, nargs="+", default=list(DEFAULT_VELOCITIES), metavar="V",
                        help="velocity layers to render (default NSynth's "
                             f"{' '.join(map(str, DEFAULT_VELOCITIES))})")
    parser.add_argument("--bend", type=int_at_least("--bend", 0), default=DEFAULT_BEND_CENTS, metavar="CENTS",
                        help=f"pitch-bend range up and down in cents (default {DEFAULT_BEND_CENTS})")
    parser.add_argument("--presets-dir", default=None, metavar="DIR",
                        help="the user's presets folder (default: the user data folder)")
    parser.add_argument("--checkpoints", default=None,
                        help="checkpoint directory (default: the shipped checkpoints/)")
    parser.add_argument("--force", action="store_true", help="write into a non-empty --out folder")


def run(args) -> int:
    from synth.export import check_out_dir, export_instrument, sampled_keys
    from synth.presets import PresetError, PresetStore, UnknownPreset

    try:
        preset = PresetStore(args.presets_dir).load(args.preset)
    except UnknownPreset as e:
        print(f"export: {e}", file=sys.stderr)
        return 1
    except PresetError as e:
        print(f"export: {e}", file=sys.stderr)
        return 2
    lo, hi = args.pitches
    keys = sampled_keys(lo, hi, args.every)
    try:
        check_out_dir(args.out, args.force)  # before the models load: a refusal costs nothing
    except OSError as e:
        print(f"export: {e}", file=sys.stderr)
        return 1

    from synth.generator import get_generator

    report = export_instrument(preset, args.out, get_generator(args.checkpoints), keys, args.velocities,
                               lo=lo, hi=hi, bend_cents=args.bend, force=True)
    unlooped = [f"{s.key}/{s.layer}" for s in report.samples if s.loop is None]
    print(f"wrote {report.sfz_path} ({len(report.samples)} samples"
          + (f"; no loop (decayed note) for key/velocity {', '.join(unlooped)}" if unlooped else "") + ")")
    return 0
