"""`sound-generator render`: render one note to a WAV file.

    sound-generator render --pitch 60 --velocity 100 --source acoustic --quality bright \\
        --quality percussive --latent 0 0 1.5 0 0 0 0 0 0 0 0 0 0 0 0 0 --out note.wav

Arguments follow the note schema (`synth.params`): invalid values are reported with the schema's
message and exit status 2. `--latent` takes 16 numbers in [-7, 7] (or one number, repeated);
`--sample-rate` picks the WAV's rate (16000 by default; 44100 or 48000 for a sound card).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from synth.params import DEFAULTS, LATENT_DIM, QUALITIES, SOURCES

log = logging.getLogger("synth.render")


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
    parser.add_argument("--checkpoints", default=None, help="checkpoint directory (default: the shipped checkpoints/)")
    parser.add_argument("--out", required=True, help="output WAV path")


def run(args) -> int:
    import numpy as np
    import soundfile as sf

    from synth.params import NoteParams

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
        audio = gen.render(params, sample_rate=args.sample_rate)
    except ValueError as e:
        print(f"sound-generator render: error: {e}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - t0
    sf.write(args.out, audio, args.sample_rate, subtype="FLOAT")
    log.info("wrote %s: %d samples at %d Hz, peak %.3f, rendered in %.1f ms (model %s)", args.out, len(audio),
             args.sample_rate, float(np.max(np.abs(audio))), elapsed * 1000, gen.model_version)
    return 0
