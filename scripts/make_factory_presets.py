"""Chooses the factory presets by measurement and writes synth/factory_presets.json.

    python scripts/make_factory_presets.py [--candidates 320] [--count 20] [--seed 0] [--out PATH]

1. Candidates: random timbres, each latent knob uniform in [-4, 4], the source cycling through
   the three, the quality tags drawn from TAG_SETS (seeded: the same run gives the same file).
2. Each is rendered by the shipped generator at pitch 60, velocity 100, 16 kHz.
3. Features, all measured on the audio:
   - spectral shape: the mean log-mel spectrum (64 bands, 0.05-3 s) relative to its loudest band,
     reduced to its first N_SHAPE principal components over the candidates;
   - brightness: log2 of the spectral centroid of the held part (synth.metrics);
   - envelope (10 ms RMS frames, synth.data.features.level_envelope_db): time of the peak,
     time until 30 dB below the peak (4 s when never), level at note-off (3 s) relative to the
     peak (floored at -60 dB).
   Loudness is left out: the gain is the performer's; a preset is a colour and a shape.
4. Rejected: near-silent candidates (peak below SILENT_DBFS), and those that are not a note
   (spectral centroid below half the fundamental: most of the power is rumble under the pitch).
5. Each feature is winsorised at its 2nd and 98th percentiles (so that a few extreme notes do
   not stretch its scale) and standardised (z-score over the kept candidates); then
   farthest-point sampling: start from the candidate nearest the mean (the most typical sound),
   and add, one at a time, the candidate farthest from every one already chosen.
6. Names and one-line descriptions come from the measurements (the tags are those the
   quality analyzers of synth/data/qualities.py measure on the rendered note, not the tags the
   timbre asks for).

It prints what it measured and how far apart the chosen presets are, against random subsets of
the same size (the figures also go into the file's "measured" entry).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from synth.data.features import level_envelope_db  # noqa: E402
from synth.data.qualities import analyze  # noqa: E402
from synth.metrics import log_mel_db, spectral_centroid_hz  # noqa: E402
from synth.params import LATENT_DIM, SOURCES, NoteParams  # noqa: E402
from synth.presets import FACTORY_PATH, Preset  # noqa: E402
from synth.units import SAMPLE_RATE  # noqa: E402

PITCH, VELOCITY = 60, 100
LATENT_RANGE = 4.0
TAG_SETS = (
    (),
    ("bright",),
    ("dark",),
    ("percussive", "fast_decay"),
    ("long_release", "reverb"),
    ("distortion",),
    ("bright", "percussive"),
    ("dark", "long_release"),
    ("multiphonic", "nonlinear_env"),
)
N_SHAPE = 6  # principal components of the mean log-mel spectrum
SILENT_DBFS = -60.0  # the shipped model's notes peak around -30 dBFS; this is 30 dB quieter
MIN_CENTROID_OVER_F0 = 0.5
LEVEL_FLOOR_DB = -60.0  # level at note-off below this (re the peak) is silence either way
WINSOR_PERCENTILES = (2.0, 98.0)
DECAY_DB = 30.0
HOP_S = 0.01
NOTE_OFF_S = 3.0
N_RANDOM_SUBSETS = 2000
FEATURES = [f"shape_pc{i + 1}" for i in range(N_SHAPE)] + [
    "log2_centroid_hz", "peak_time_s", "decay_30db_s", "level_at_off_db"]


def candidates(n: int, rng: np.random.Generator) -> list[NoteParams]:
    out = []
    for i in range(n):
        latent = rng.uniform(-LATENT_RANGE, LATENT_RANGE, LATENT_DIM)
        tags = TAG_SETS[int(rng.integers(len(TAG_SETS)))]
        out.append(NoteParams(PITCH, VELOCITY, SOURCES[i % len(SOURCES)], tags, tuple(latent)))
    return out


def measure(audio: np.ndarray) -> dict[str, float | np.ndarray]:
    env = level_envelope_db(audio, SAMPLE_RATE, HOP_S)
    off = int(round(NOTE_OFF_S / HOP_S))
    peak_idx = int(np.argmax(env[:off]))
    peak = float(env[peak_idx])
    below = np.nonzero(env[peak_idx:] < peak - DECAY_DB)[0]
    mel = log_mel_db(audio, SAMPLE_RATE)
    hop_s = 256 / SAMPLE_RATE
    mel_mean = mel[int(0.05 / hop_s):int(NOTE_OFF_S / hop_s)].mean(axis=0)
    return {
        "mel_shape": mel_mean - mel_mean.max(),
        "log2_centroid_hz": float(np.log2(spectral_centroid_hz(audio, SAMPLE_RATE, 0.05, NOTE_OFF_S))),
        "peak_time_s": peak_idx * HOP_S,
        "decay_30db_s": (peak_idx + below[0]) * HOP_S if below.size else len(env) * HOP_S,
        "level_at_off_db": max(LEVEL_FLOOR_DB, float(env[min(off, len(env) - 1)] - peak)),
        "peak_dbfs": peak,
    }


def farthest_points(x: np.ndarray, k: int) -> list[int]:
    """Greedy farthest-point sampling from the point nearest the mean."""
    chosen = [int(np.argmin(np.linalg.norm(x - x.mean(axis=0), axis=1)))]
    nearest = np.linalg.norm(x - x[chosen[0]], axis=1)
    while len(chosen) < k:
        i = int(np.argmax(nearest))
        chosen.append(i)
        nearest = np.minimum(nearest, np.linalg.norm(x - x[i], axis=1))
    return chosen


def spread(x: np.ndarray, chosen: list[int]) -> tuple[float, float]:
    """(smallest distance between two chosen points, largest distance from any point to its
    nearest chosen one: the covering radius)."""
    c = x[chosen]
    d = np.linalg.norm(c[:, None] - c[None], axis=-1)
    d[np.diag_indices(len(c))] = np.inf
    cover = np.linalg.norm(x[:, None] - c[None], axis=-1).min(axis=1).max()
    return float(d.min()), float(cover)


def words(m: dict, centroid_terciles: np.ndarray) -> tuple[str, str]:
    tone = ("dark", "mellow", "bright")[int(np.searchsorted(centroid_terciles, m["log2_centroid_hz"]))]
    if m["peak_time_s"] >= 0.25:
        shape = "swell"
    elif m["decay_30db_s"] < 0.8:
        shape = "pluck"
    elif m["decay_30db_s"] < NOTE_OFF_S:
        shape = "strike"
    else:
        shape = "sustain"
    return tone, shape


def describe(m: dict, audio: np.ndarray) -> str:
    tags = [q.replace("_", " ") for q, r in analyze(audio, SAMPLE_RATE, PITCH).items() if r.tag]
    if m["decay_30db_s"] < NOTE_OFF_S:
        decay = f"-30 dB at {m['decay_30db_s']:.1f} s"
    elif m["level_at_off_db"] >= -1.0:
        decay = "full level at note-off"
    else:
        decay = f"{int(round(m['level_at_off_db']))} dB at note-off"
    return (f"{', '.join(tags) or 'no strong tags'}; centroid {2 ** m['log2_centroid_hz'] / 1000:.2f} kHz, "
            f"peak at {m['peak_time_s']:.2f} s, {decay} (C4, velocity 100)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--candidates", type=int, default=320)
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=FACTORY_PATH)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)

    from synth.generator import get_generator

    notes = candidates(args.candidates, rng)
    t0 = time.perf_counter()
    audio = get_generator().render_batch(notes, SAMPLE_RATE)
    print(f"rendered {len(notes)} candidates in {time.perf_counter() - t0:.1f} s")
    measured = [measure(a) for a in audio]
    f0_hz = 440.0 * 2 ** ((PITCH - 69) / 12)
    silent = [i for i, m in enumerate(measured)
              if not m["peak_dbfs"] >= SILENT_DBFS or not all(np.all(np.isfinite(v)) for v in m.values())]
    rumble = [i for i, m in enumerate(measured) if i not in silent
              and 2 ** m["log2_centroid_hz"] < MIN_CENTROID_OVER_F0 * f0_hz]
    keep = [i for i in range(len(notes)) if i not in silent and i not in rumble]
    print(f"kept {len(keep)}; rejected {len(silent)} near-silent (peak below {SILENT_DBFS:g} dBFS) and "
          f"{len(rumble)} not a note (centroid below {MIN_CENTROID_OVER_F0:g} x f0 = "
          f"{MIN_CENTROID_OVER_F0 * f0_hz:.0f} Hz)")

    shapes = np.stack([measured[i]["mel_shape"] for i in keep])
    centred = shapes - shapes.mean(axis=0)
    _, sv, vt = np.linalg.svd(centred, full_matrices=False)
    explained = sv ** 2 / np.sum(sv ** 2)
    print(f"log-mel shape: first {N_SHAPE} principal components explain {100 * explained[:N_SHAPE].sum():.0f} %")
    scalar = [f for f in FEATURES if not f.startswith("shape_")]
    raw = np.column_stack([centred @ vt[:N_SHAPE].T] + [[measured[i][f] for i in keep] for f in scalar])
    lo, hi = np.percentile(raw, WINSOR_PERCENTILES, axis=0)
    clipped = np.clip(raw, lo, hi)
    mean, std = clipped.mean(axis=0), clipped.std(axis=0)
    x = (clipped - mean) / np.where(std > 0, std, 1.0)
    for f, col in zip(FEATURES, raw.T):
        print(f"  {f:18s} min {col.min():8.2f}  median {np.median(col):8.2f}  max {col.max():8.2f}")

    chosen = farthest_points(x, args.count)
    min_pair, cover = spread(x, chosen)
    random_spreads = np.array([spread(x, list(rng.choice(len(x), args.count, replace=False)))
                               for _ in range(N_RANDOM_SUBSETS)])
    rand_pair, rand_cover = np.median(random_spreads, axis=0)
    print(f"chosen {args.count} of {len(x)} (standardised {len(FEATURES)}-d feature space):")
    print(f"  smallest distance between two presets {min_pair:.2f} (random subsets: median {rand_pair:.2f}, "
          f"best {random_spreads[:, 0].max():.2f})")
    print(f"  covering radius (farthest candidate from its nearest preset) {cover:.2f} "
          f"(random subsets: median {rand_cover:.2f}, best {random_spreads[:, 1].min():.2f})")

    centroids = np.array([measured[i]["log2_centroid_hz"] for i in keep])
    terciles = np.percentile(centroids, [100 / 3, 200 / 3])
    presets, used = [], {}
    for j in chosen:
        i = keep[j]
        m, note = measured[i], notes[i]
        base = "-".join((*words(m, terciles), note.source))
        used[base] = used.get(base, 0) + 1
        name = base if used[base] == 1 else f"{base}-{used[base]}"
        preset = Preset.from_dict({"name": name, "description": describe(m, audio[i]), "source": note.source,
                                   "qualities": list(note.qualities),
                                   "latent_sample": list(note.latent_sample)})
        presets.append(preset)
        print(f"  {name:28s} asks {'+'.join(note.qualities) or '-':28s} {preset.description}")
    doc = {
        "about": ("Factory presets, written by scripts/make_factory_presets.py: random timbres rendered at C4, "
                  "measured, and chosen by farthest-point sampling in a standardised feature space. Read-only; "
                  "a user preset of the same name shadows one."),
        "measured": {
            "seed": args.seed, "candidates": len(notes), "kept": len(keep), "rejected_near_silent": len(silent),
            "rejected_not_a_note": len(rumble), "features": FEATURES,
            "latent_range": LATENT_RANGE, "tag_sets": ["+".join(t) or "-" for t in TAG_SETS],
            "min_pairwise_distance": round(min_pair, 3), "random_min_pairwise_distance_median": round(rand_pair, 3),
            "covering_radius": round(cover, 3), "random_covering_radius_median": round(rand_cover, 3),
        },
        "presets": [p.to_dict() for p in presets],  # one line each, written below
    }
    presets_text = ",\n".join("  " + json.dumps(p, ensure_ascii=False) for p in doc.pop("presets"))
    text = json.dumps(doc, indent=1)[:-2] + ',\n "presets": [\n' + presets_text + "\n ]\n}\n"
    args.out.write_text(text)
    print(f"wrote {len(presets)} presets to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
