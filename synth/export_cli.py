"""`sound-generator export`: a preset, or a bank of them, as sample instruments (WAV samples + .sfz).

    sound-generator export --preset bright-sustain-synthetic --out ./bright-sustain
    sound-generator export --preset "my pad" --out DIR --pitches 36-84 --every 4 --velocities 50 100 127
    sound-generator export --bank bank.json --out DIR [--workers N] [--ray auto|local|ADDRESS]

--preset writes DIR/<preset>.sfz and DIR/samples/<key>_v<velocity>.wav (48 kHz, 24-bit): one
sample per sampled key and velocity layer, with a sustain loop and a release fitted to the
model's (see synth/export.py). --bank (a JSON list of preset names or preset objects) writes the
same into DIR/<preset>/ for each, on this machine's cores or on a Ray cluster, and resumes an
interrupted run (see synth/export_bank.py). Exit status 0 on success, 1 for a preset or bank that
is not there, a folder that cannot be written (a non-empty --out is refused unless --force, or,
with --bank, unless it holds a bank export to resume), Ray missing or unreachable; 2 for invalid
input; 130 when interrupted (run the same command again to resume a bank).
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
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--preset", help="the preset to export (user or factory; see `preset list`)")
    which.add_argument("--bank", metavar="BANK.json",
                       help="export many presets: a JSON list of preset names (user or factory) or preset "
                            "objects (the preset file's schema), one folder DIR/<name>/ each")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output folder (created; must be empty, or with --bank hold a run to resume)")
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
    bank = parser.add_argument_group("bank options (with --bank)")
    bank.add_argument("--workers", type=int_at_least("--workers", 1), default=None, metavar="N",
                      help="render processes (default: one per core), or with --ray actors (default: the "
                           "cluster's CPUs); 1 renders in this process")
    bank.add_argument("--ray", default=None, metavar="auto|local|ADDRESS",
                      help="render on a Ray cluster: 'auto' the running one (RAY_ADDRESS or `ray start` on "
                           "this machine), 'local' a private one started for this run, or its address "
                           "(needs the extra: pip install '.[ray]')")
    bank.add_argument("--batch", type=int_at_least("--batch", 1), default=None, metavar="N",
                      help="notes per task (default 16)")
    bank.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    if args.bank is not None:
        return run_bank(args)
    bank_only = [o for o, v in (("--workers", args.workers), ("--ray", args.ray), ("--batch", args.batch)) if v]
    if bank_only:
        print(f"export: {bank_only[0]}: only with --bank (--preset renders in this process)", file=sys.stderr)
        return 2
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


def run_bank(args) -> int:
    from synth.export import ExportOptions, sampled_keys
    from synth.export_bank import DEFAULT_BATCH, check_bank_out, export_bank, import_ray, load_bank
    from synth.presets import PresetError, PresetStore, UnknownPreset

    try:
        presets = load_bank(args.bank, PresetStore(args.presets_dir))
    except UnknownPreset as e:
        print(f"export: {e}", file=sys.stderr)
        return 1
    except PresetError as e:
        print(f"export: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"export: bank: {e}", file=sys.stderr)
        return 1
    if args.ray is not None:
        try:
            import_ray()
        except ImportError as e:
            print(f"export: {e}", file=sys.stderr)
            return 1
    lo, hi = args.pitches
    options = ExportOptions.make(sampled_keys(lo, hi, args.every), args.velocities, lo, hi, args.bend)
    try:
        check_bank_out(args.out, args.force)  # before anything loads: a refusal costs nothing
    except OSError as e:
        print(f"export: {e}", file=sys.stderr)
        return 1
    try:
        report = export_bank(presets, args.out, options, checkpoint_dir=args.checkpoints, workers=args.workers,
                             ray_address=args.ray, batch=args.batch or DEFAULT_BATCH, force=True,
                             progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"export: interrupted; the samples written so far are kept in {args.out}: run the same command "
              "again to render only the missing ones", file=sys.stderr)
        return 130
    except ConnectionError as e:
        print(f"export: --ray {args.ray}: cannot reach the Ray cluster ({e}); start one with `ray start --head` "
              "or use --ray local", file=sys.stderr)
        return 1
    where = f"{report.out_dir}/<preset>/ ({report.n_presets} presets)"
    if report.rendered == 0:
        print(f"nothing to render: all {report.n_samples} samples of the bank are already in {where}"
              + (f"; rewrote {len(report.sfz_written)} .sfz" if report.sfz_written else ""))
    else:
        print(f"wrote {report.rendered} samples into {where} in {report.seconds:.1f} s ({report.mode}); "
              f"{report.reused} were already there; {report.n_samples} in all")
    return 0
