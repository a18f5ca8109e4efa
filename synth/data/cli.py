"""`sound-generator dataset build|stats|features`: make and inspect the NSynth-format data set."""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

from synth.cli import int_at_least, int_list
from synth.params import VELOCITY_MAX, VELOCITY_MIN

logger = logging.getLogger("synth.data")


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)

    b = sub.add_parser(
        "build",
        help="render an NSynth-format data set from one or several General MIDI SoundFonts",
        description=(
            "Render one note per GM preset, pitch and velocity (3 s held + 1 s release, 16 kHz "
            "mono, 64000 samples) with FluidSynth into DIR/{train,valid,test}/examples.json + "
            "audio/*.wav. Drum kits are skipped, silent/unpitched notes dropped, quality tags "
            "measured. Resumable: rerun the same command to finish an interrupted build. "
            "With --soundfont: one SoundFont, split by GM program (test if p % 10 == 0, valid if "
            "p % 10 == 5). With --sets: several SoundFonts in one data set, an instrument being "
            "(set, bank, program): GM bank 0 plus GS variation banks; presets that are "
            "near-duplicates (log-mel distance < 5 dB) share a split, copies of an earlier set's "
            "preset are left out; split by a hash of each cluster's first 'set:program' "
            "(about 80/10/10 %); names carry the set's tag; build.json records every set's "
            "package, file and licence (see synth/data/instruments.py and sets.py). TimGM6mb and "
            "MuseScore General are reserved for independent evaluation and always refused."
        ),
    )
    which = b.add_mutually_exclusive_group(required=True)
    which.add_argument("--soundfont", metavar="SF2", help="one General MIDI SoundFont (.sf2/.sf3)")
    which.add_argument(
        "--sets",
        metavar="LIST",
        help="several SoundFonts, comma-separated, in priority order: 'debian' (= fluidr3,opl3,"
             "csound,fluidr3mono: FluidR3_GM, OPL-3_FM_128M, csound's sf_GMbank, FluidR3Mono_GM), "
             "any of those tags, or TAG=PATH for another SoundFont",
    )
    b.add_argument("--out", required=True, metavar="DIR", help="output directory (resumed if it exists)")
    b.add_argument(
        "--programs",
        type=lambda t: int_list("--programs", t, 0, 127),
        default=None,
        metavar="LIST",
        help="GM programs 0..127, e.g. 0,4,81 or 0-7 (default: every melodic preset)",
    )
    b.add_argument(
        "--pitches",
        type=lambda t: int_list("--pitches", t, 0, 127),
        default=None,
        metavar="LIST",
        help="MIDI pitches, e.g. 21-108 (the default) or 48,60,72",
    )
    b.add_argument(
        "--pitch-step",
        type=int_at_least("--pitch-step", 1, "a positive integer"),
        default=1,
        metavar="N",
        help="keep only the pitches that are multiples of N (e.g. 2: 22,24,..,108 of the default "
             "21-108, every C included); a later build of the same DIR without it adds the rest",
    )
    b.add_argument(
        "--velocities",
        type=lambda t: int_list("--velocities", t, VELOCITY_MIN, VELOCITY_MAX),
        default=None,
        metavar="LIST",
        help="MIDI velocities 1..127 (default NSynth's 25,50,75,100,127)",
    )
    b.add_argument(
        "--workers",
        type=int_at_least("--workers", 1, "a positive integer"),
        default=max(1, min(os.cpu_count() or 1, 2)),
        metavar="N",
        help="parallel render processes (default: min(2, CPUs))",
    )
    b.add_argument("--no-variations", action="store_true",
                   help="with --sets: GM bank 0 only, no GS variation banks")
    b.add_argument("--keep-duplicates", action="store_true",
                   help="with --sets: keep copies of an earlier set's presets (in their original's split)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")

    s = sub.add_parser(
        "stats",
        help="print a data set's make-up and write a PNG of histograms and spectrograms",
        description="Counts per split, source, family, velocity and quality; writes DIR/stats.png.",
    )
    s.add_argument("dir", metavar="DIR", help="data set directory (ours or the NSynth json/wav download)")
    s.add_argument("--png", default=None, metavar="PATH", help="where to write the picture (default DIR/stats.png)")

    f = sub.add_parser(
        "features",
        help="compute (or check) the cached f0/loudness features of every split",
        description="Fills DIR/<split>/features-<hash>.npz so that training starts without recomputing.",
    )
    f.add_argument("dir", metavar="DIR", help="data set directory")
    f.add_argument("--splits", default="train,valid,test", metavar="LIST", help="comma-separated splits")
    f.add_argument(
        "--workers",
        type=int_at_least("--workers", 1, "a positive integer"),
        default=max(1, min(os.cpu_count() or 1, 2)),
        metavar="N",
        help="parallel processes",
    )


def run(args: argparse.Namespace) -> int:
    if args.dataset_command == "build":
        from synth.data.build import DEFAULT_PITCHES, build_dataset
        from synth.params import VELOCITY_LAYERS

        t0 = time.perf_counter()
        pitches = [p for p in (args.pitches or DEFAULT_PITCHES) if p % args.pitch_step == 0]
        if not pitches:
            raise SystemExit(f"dataset build: no pitch of --pitches is a multiple of --pitch-step {args.pitch_step}")
        common = dict(programs=args.programs, pitches=pitches,
                      velocities=args.velocities or VELOCITY_LAYERS, workers=args.workers,
                      progress=not args.no_progress)
        if args.sets:
            from synth.data.multi import build_multi_dataset
            from synth.data.sets import resolve_sets

            meta = build_multi_dataset(resolve_sets(args.sets), args.out, variations=not args.no_variations,
                                       keep_duplicates=args.keep_duplicates, **common)
        else:
            if args.no_variations or args.keep_duplicates:
                raise SystemExit("dataset build: --no-variations and --keep-duplicates need --sets")
            meta = build_dataset(args.soundfont, args.out, **common)
        c = meta["counts"]
        print(f"built {args.out} in {time.perf_counter() - t0:.1f} s with {args.workers} worker(s)")
        print(f"notes kept: {c['notes_kept']}  dropped: {c['notes_dropped']}")
        print(f"per split: {c['per_split']}  instruments: {c['instruments_per_split']}")
        print(f"per source: {c['per_source']}")
        print(f"per quality: {c['per_quality']}")
        for tag, sc in c.get("per_set", {}).items():
            print(f"set {tag}: instruments per split {sc['instruments_per_split']}, notes per split "
                  f"{sc['notes_per_split']}, copies left out {sc['copies_left_out']}")
        return 0
    if args.dataset_command == "stats":
        from synth.data.stats import dataset_stats

        text, png = dataset_stats(Path(args.dir), Path(args.png) if args.png else None)
        print(text)
        print(f"wrote {png}")
        return 0
    if args.dataset_command == "features":
        from synth.data.reader import load_split

        for split in [s.strip() for s in args.splits.split(",") if s.strip()]:
            t0 = time.perf_counter()
            data = load_split(args.dir, split, workers=args.workers)
            print(f"{split}: {len(data['pitch'])} notes, features {data['cache_path']} "
                  f"({time.perf_counter() - t0:.1f} s)")
        return 0
    raise AssertionError(args.dataset_command)
