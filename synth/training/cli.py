"""`sound-generator train STAGE --data DIR --out DIR`: train one stage of the generator.

Stages, in order (each builds on the previous ones, read from --models, default checkpoints/):

  autoencoder      encoder + DDSP decoder + learned reverb       -> OUT/ddsp_generator/
  z_generator      conditional VAE over z trajectories           -> OUT/z_generator/
  f0_ld_generator  (conditioning, z) -> f0 and loudness curves   -> OUT/f0_ld_generator/
  end_to_end       both generators fine-tuned through the frozen decoder with the spectral loss

Each run writes OUT/train.log, OUT/loss.png and a resumable checkpoint in OUT/state/ (--resume
continues it); --export DIR copies the finished model into DIR (e.g. checkpoints/).
The recipe that made the shipped weights is checkpoints/RECIPE.md.
"""

from __future__ import annotations

import argparse
import logging
import os

from synth.cli import int_list
from synth.training.stages import DEFAULTS, STAGES


# The tags the generators learn well enough that guidance helps (checkpoints/RECIPE.md, step 4:
# guiding the others as well made the spectral centroids less realistic).
GUIDED_TAGS = ("bright", "dark", "percussive", "fast_decay", "long_release")


def _tags(text: str) -> list[str]:
    from synth.params import QUALITIES

    tags = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in tags if t not in QUALITIES]
    if unknown:
        raise argparse.ArgumentTypeError(f"--guided-tags: unknown tags {unknown}; allowed: {', '.join(QUALITIES)}")
    return tags


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n")[0]
    parser.epilog = "\n\n".join(__doc__.split("\n\n")[1:])
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("stage", choices=sorted(STAGES), help="which stage to train")
    parser.add_argument("--data", required=True, help="NSynth-format data set directory (sound-generator dataset build)")
    parser.add_argument("--out", required=True, help="run directory (log, loss.png, state/, trained model)")
    parser.add_argument("--models", default="checkpoints",
                        help="directory holding the earlier stages' models (default: checkpoints)")
    parser.add_argument("--export", default=None, help="copy the trained model into this directory at the end")
    parser.add_argument("--init", default=None,
                        help="start from the models in this directory instead of from scratch")
    parser.add_argument("--steps", type=int, default=None, help="total optimisation steps (stage default if omitted)")
    parser.add_argument("--batch-size", type=int, default=None, help="notes per step (stage default if omitted)")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (cosine decay to 10%%)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/state/ if it exists")
    parser.add_argument("--checkpoint-every", type=int, default=200, help="steps between checkpoints")
    parser.add_argument("--log-every", type=int, default=20, help="steps between log lines")
    parser.add_argument("--validate-every", type=int, default=500, help="steps between validation runs")
    parser.add_argument("--programs", type=lambda t: int_list("--programs", t, 0, 127), default=None,
                        help="train (and validate) only on these GM programs, e.g. 0-95,104-111 "
                             "(default: every note of the split)")
    parser.add_argument("--pitches", type=lambda t: int_list("--pitches", t, 0, 127), default=None,
                        help="train (and validate) only on notes of these MIDI pitches, e.g. 24-96 "
                             "(default: every pitch)")
    parser.add_argument("--limit", type=int, default=None, help="use only this many notes per split (quick runs)")
    parser.add_argument("--cache", default=None, help="feature cache directory (default: OUT/../cache)")
    parser.add_argument("--threads", type=int, default=2, help="TensorFlow intra-op threads (0: TF's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kl-weight", type=float, default=3e-3, help="z_generator: weight of the KL term per nat")
    parser.add_argument("--z-noise", type=float, default=None,
                        help="noise std added to z in training (autoencoder: 0; f0_ld_generator: 0.1, standardised)")
    parser.add_argument("--z-l2", type=float, default=1e-2,
                        help="autoencoder: weight of the mean square of z (keeps its scale near 1)")
    parser.add_argument("--tag-guidance", type=float, default=2.0,
                        help="f0_ld_generator: strength of the guided quality tags on the timbre (z) at "
                             "inference, stored in its config.json (1 = as trained; 2 doubles the "
                             "tagged-vs-untagged difference)")
    parser.add_argument("--tag-guidance-loudness", type=float, default=1.0,
                        help="f0_ld_generator: the same on the loudness curve (default 1: none; the "
                             "envelope tags are enforced by rules, synth.envelope)")
    parser.add_argument("--guided-tags", type=_tags, default=list(GUIDED_TAGS), metavar="LIST",
                        help="f0_ld_generator: the tags guidance strengthens (default "
                             f"{','.join(GUIDED_TAGS)}: the ones the model learns; the others pass as trained)")
    parser.add_argument("--reverb-decay", type=float, default=None, metavar="DB_PER_S",
                        help="autoencoder: the learned reverb's fixed decay envelope in dB/s (default "
                             "synth.models.REVERB_DECAY_DB_PER_S, 60; 0: none, as the shipped weights)")
    parser.add_argument("--p-latent0", type=float, default=0.5,
                        help="end_to_end: share of notes trained with latent 0 (the default knobs) "
                             "instead of their posterior mean")
    parser.add_argument("--centroid-weight", type=float, default=1.0,
                        help="end_to_end: weight of the brightness (log2 spectral centroid) loss on latent-0 notes")
    parser.add_argument("--level-weight", type=float, default=0.0,
                        help="end_to_end: weight of the level loss on latent-0 notes (L1 of 250 ms levels, "
                             "per 10 dB, against the real note's; 0: none, as before)")
    parser.add_argument("--peak-weight", type=float, default=0.0,
                        help="end_to_end: weight of the peak loss on latent-0 notes (L1 of 125 ms peak levels, "
                             "per 10 dB, against the real note's; 0: none)")
    parser.add_argument("--reg-weight", type=float, default=1.0, help="end_to_end: weight of the stage losses")
    parser.add_argument("--fixed-batch", action="store_true",
                        help="always train on the same batch (smoke tests: the loss must go down)")
    parser.add_argument("--time-limit", type=float, default=None, metavar="MIN",
                        help="stop after this many minutes (checkpoint + export; --resume continues)")
    parser.add_argument("--stop-at", type=int, default=None, metavar="STEP",
                        help="stop at this step (checkpoint + export; --resume continues to --steps)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")


def run(args) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    steps, batch, lr = DEFAULTS[args.stage]
    args.steps = args.steps or steps
    args.batch_size = args.batch_size or batch
    args.lr = args.lr or lr
    if args.reverb_decay is None:
        from synth.models import REVERB_DECAY_DB_PER_S

        args.reverb_decay = REVERB_DECAY_DB_PER_S
    if args.z_noise is None:
        args.z_noise = 0.0 if args.stage == "autoencoder" else 0.1
    logging.getLogger("synth.training").setLevel(logging.INFO)
    return STAGES[args.stage](args)
