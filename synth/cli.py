"""The `sound-generator` command: one entry point, one subcommand per job.

Each subcommand lives in its own module with two functions, `configure(parser)` and
`run(args) -> int`; this file only lists them, and imports a module when its subcommand is
asked for, so `sound-generator --help` stays fast and does not load TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("osc_server.cli", "run the live OSC server (and optionally HTTP) playing through the sound card"),
    "render": ("synth.render_cli", "render one note to a WAV file"),
    "bench": ("bench.cli", "measure speed figures (--json for a machine-readable last line)"),
    "dataset": ("synth.data.cli", "build or inspect an NSynth-format data set rendered from a SoundFont"),
    "train": ("synth.training.cli", "train one stage of the generator"),
    "evaluate": ("synth.evaluate", "evaluate the shipped (or given) models on the test split"),
    "calibrate": ("synth.calibrate", "set the generator's output level (velocity 127 at latent 0 -> -6 dBFS)"),
    "midi-bridge": ("osc_server.midi_bridge", "forward a MIDI controller to the OSC server"),
    "preset": ("synth.preset_cli", "list, show, save or delete timbre presets"),
    "export": ("synth.export_cli", "export a preset as a sample instrument (WAV samples + .sfz)"),
}


def int_list(option: str, text: str, lo: int, hi: int) -> list[int]:
    """'0,4,81' or '21-108' or '0-7,16' -> sorted unique ints within lo..hi; ValueError naming the option."""
    values: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part[1:]:
                a, b = part.split("-", 1) if not part.startswith("-") else (part, "")
                start, stop = int(a), int(b)
                if start > stop:
                    raise ValueError
                values.update(range(start, stop + 1))
            else:
                values.add(int(part))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{option}: expected integers or ranges like 'A-B' separated by commas "
                f"(each {lo}..{hi}), got {text!r}"
            ) from None
    bad = sorted(v for v in values if not lo <= v <= hi)
    if bad:
        raise argparse.ArgumentTypeError(f"{option}: {bad} outside the allowed {lo}..{hi}")
    if not values:
        raise argparse.ArgumentTypeError(f"{option}: empty list; give at least one value {lo}..{hi}")
    return sorted(values)


def int_ranges(values) -> str:
    """The inverse of `int_list`: [0, 1, 2, 5, 5] -> '0-2,5' (sorted, unique)."""
    v = sorted(set(int(x) for x in values))
    out, i = [], 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and v[j + 1] == v[j] + 1:
            j += 1
        out.append(f"{v[i]}-{v[j]}" if j > i else str(v[i]))
        i = j + 1
    return ",".join(out)


def int_at_least(option: str, minimum: int, allowed: str | None = None):
    """An argparse `type` for an integer >= `minimum` whose error names the option and what is allowed."""
    allowed = allowed or f"an integer >= {minimum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{option}: expected {allowed}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{option}: expected {allowed}, got {text!r}")
        return value

    return parse


def build_parser(load: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sound-generator",
        description="A neural instrument played live over OSC.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if name == load:
            importlib.import_module(module).configure(sp)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if a in COMMANDS), None)
    parser = build_parser(load=command)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2) if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
    )
    if args.command is None:
        parser.print_help()
        return 0
    module = importlib.import_module(COMMANDS[args.command][0])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
