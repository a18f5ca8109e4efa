"""`sound-generator render`: render one note to a WAV file.

    sound-generator render --pitch 60 --velocity 100 --source acoustic --quality bright \\
        --quality percussive --latent 0 0 1.5 0 0 0 0 0 0 0 0 0 0 0 0 0 --out note.wav

Arguments follow the note schema (`synth.params`): invalid values are reported with the schema's
message and exit status 2. `--latent` takes 16 numbers in [-7, 7] (or one number, repeated);
`--sample-rate` picks the WAV's rate (16000 by default; 44100 or 48000 for a sound card).

Without `--hold` the note is the generator's 4 s note (3 s held + 1 s release), as
`get_prediction` makes it. With `--hold SECONDS` it is what the live server plays for a key held
that long (`synth.hold.render_held`): the note sustains until its note-off, plays the release the
model makes for its timbre and ends when it has rung out to silence. Control changes during the
note: `--bend CENTS[@T]` bends the pitch to CENTS (relative to the note, from T seconds on; T
defaults to 0) and `--latent-at T:v0,...,v15` moves the timbre to a new latent at T seconds
(16 values in [-7, 7], or one, repeated); both repeat.

    sound-generator render --pitch 60 --source synthetic --hold 8 --bend 200@2 --bend 0@4 \\
        --latent-at 5:0,0,5,0,0,0,0,0,0,0,0,0,0,0,0,-5 --out held.wav
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time

from synth.params import DEFAULTS, LATENT_DIM, LATENT_MAX, LATENT_MIN, QUALITIES, SOURCES

log = logging.getLogger("synth.render")

# The longest --hold: the whole note is one array in memory (10 min at 48 kHz: 115 MB).
MAX_HOLD_S = 600.0
# synth.hold.MAX_BEND_CENTS (not imported here: `--help` must not load the models' modules).
MAX_BEND_CENTS = 4800.0


def _number(option: str, text: str, allowed: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{option}: expected {allowed}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{option}: expected {allowed}, got {text!r}")
    return value


def hold_seconds(text: str) -> float:
    """--hold SECONDS: 0 < seconds <= MAX_HOLD_S."""
    allowed = f"seconds, a number > 0 and <= {MAX_HOLD_S:g}"
    value = _number("--hold", text, allowed)
    if not 0.0 < value <= MAX_HOLD_S:
        raise argparse.ArgumentTypeError(f"--hold: expected {allowed}, got {text!r}")
    return value


def _time(option: str, text: str, full: str) -> float:
    allowed = "a time in seconds >= 0"
    value = _number(option, text, allowed)
    if value < 0.0:
        raise argparse.ArgumentTypeError(f"{option}: expected {allowed}, got {full!r}")
    return value


def bend_event(text: str) -> tuple[float, float]:
    """--bend CENTS[@T] -> (T, cents); |cents| <= MAX_BEND_CENTS, T >= 0 (default 0)."""
    allowed = f"CENTS[@T] with CENTS in [-{MAX_BEND_CENTS:g}, {MAX_BEND_CENTS:g}] and T seconds >= 0"
    cents_text, _, t_text = text.partition("@")
    try:
        cents = float(cents_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--bend: expected {allowed}, got {text!r}") from None
    if not (math.isfinite(cents) and abs(cents) <= MAX_BEND_CENTS) or ("@" in text and not t_text):
        raise argparse.ArgumentTypeError(f"--bend: expected {allowed}, got {text!r}")
    return (_time("--bend", t_text, text) if t_text else 0.0), cents


def latent_event(text: str) -> tuple[float, list[float]]:
    """--latent-at T:v0,...,v15 -> (T, 16 values); one value is repeated."""
    allowed = (f"T:v0,...,v{LATENT_DIM - 1} with T seconds >= 0 and {LATENT_DIM} values (or one) in "
               f"[{LATENT_MIN:g}, {LATENT_MAX:g}]")
    t_text, sep, values_text = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"--latent-at: expected {allowed}, got {text!r}")
    t = _time("--latent-at", t_text, text)
    try:
        values = [float(v) for v in values_text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--latent-at: expected {allowed}, got {text!r}") from None
    if len(values) == 1:
        values = values * LATENT_DIM
    if len(values) != LATENT_DIM or not all(math.isfinite(v) and LATENT_MIN <= v <= LATENT_MAX for v in values):
        raise argparse.ArgumentTypeError(f"--latent-at: expected {allowed}, got {text!r}")
    return t, values


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n")[0]
    parser.add_argument("--pitch", type=float, default=DEFAULTS["pitch"], help="MIDI pitch 9..120 (default 60)")
    parser.add_argument("--velocity", type=float, default=DEFAULTS["velocity"],
                        help="MIDI velocity 1..127; NSynth's layers are 25, 50, 75, 100, 127 (default 100)")
    parser.add_argument("--source", default=DEFAULTS["source"], help=f"one of {', '.join(SOURCES)}")
    parser.add_argument("--quality", action="append", default=[], metavar="TAG",
                        help=f"a quality tag (repeat for several): {', '.join(QUALITIES)}")
    parser.add_argument("--latent", type=float, nargs="+", default=None, metavar="X",
                        help=f"{LATENT_DIM} timbre values in [-7, 7] (one value is repeated); default zeros")
    parser.add_argument("--sample-rate", type=int, default=16000, help="WAV sample rate in Hz (default 16000)")
    parser.add_argument("--hold", type=hold_seconds, default=None, metavar="SECONDS",
                        help="render the note held for SECONDS (0 < SECONDS <= 600), then its release, "
                             "as the live server plays it; default: the 4 s note")
    parser.add_argument("--bend", type=bend_event, action="append", default=[], metavar="CENTS[@T]",
                        help=f"with --hold: bend to CENTS (within +-{MAX_BEND_CENTS:g}) from T seconds on "
                             "(default 0); repeat for several; write a negative bend as --bend=-200@1")
    parser.add_argument("--latent-at", type=latent_event, action="append", default=[], metavar="T:v0,...,v15",
                        help=f"with --hold: move the timbre to these {LATENT_DIM} values in [-7, 7] (or one, "
                             "repeated) at T seconds; repeat for several")
    parser.add_argument("--checkpoints", default=None, help="checkpoint directory (default: the shipped checkpoints/)")
    parser.add_argument("--out", required=True, help="output WAV path")


def run(args) -> int:
    import numpy as np
    import soundfile as sf

    from synth.params import NoteParams

    if args.hold is None and (args.bend or args.latent_at):
        option = "--bend" if args.bend else "--latent-at"
        print(f"sound-generator render: error: {option}: needs --hold SECONDS (the 4 s note takes no control "
              "changes)", file=sys.stderr)
        return 2
    latent = args.latent
    if latent is not None and len(latent) == 1:
        latent = latent * LATENT_DIM
    inputs = {"pitch": args.pitch, "velocity": args.velocity, "source": args.source,
              "qualities": list(args.quality)}
    if latent is not None:
        inputs["latent_sample"] = latent
    try:
        params = NoteParams.from_dict(inputs)
    except ValueError as e:
        print(f"sound-generator render: error: {e}", file=sys.stderr)
        return 2

    from synth.generator import get_generator

    gen = get_generator(args.checkpoints)
    t0 = time.perf_counter()
    try:
        if args.hold is None:
            audio = gen.render(params, sample_rate=args.sample_rate)
        else:
            from synth.hold import render_held

            audio = render_held(gen, params, args.hold, args.sample_rate, bend=args.bend, latent_at=args.latent_at)
    except ValueError as e:
        print(f"sound-generator render: error: {e}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - t0
    sf.write(args.out, audio, args.sample_rate, subtype="FLOAT")
    log.info("wrote %s: %d samples at %d Hz, peak %.3f, rendered in %.1f ms (model %s)", args.out, len(audio),
             args.sample_rate, float(np.max(np.abs(audio))), elapsed * 1000, gen.model_version)
    return 0
