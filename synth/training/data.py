"""Training data: the NSynth-format split, conditioning vectors and cached features.

`load(data_dir, split)` wraps `synth.data.load_split` and adds what every stage needs:

* `cond` [N, COND_DIM]: the conditioning vectors (`synth.models.condition_arrays`);
* `features` [N, 50, 30]: the encoder's MFCCs pooled on the coarse grid, computed once per split
  and cached as a .npy file (about 1 ms of TF per note; the autoencoder then never runs an STFT
  for its encoder, and the generator stages reuse the same file);
* `cents` [N, 1000]: the measured f0's deviation from the nominal pitch, clipped to +-MAX_CENTS.

Audio stays a (possibly memory-mapped) array; batches copy only the cropped windows they use.
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Sequence

import numpy as np

from synth import models as M
from synth.cli import int_ranges

log = logging.getLogger("synth.training")

FEATURE_VERSION = "mfcc30-mel64-fft1024-v1"


def _cache_path(cache_dir: str, data_dir: str, split: str, n: int) -> str:
    key = hashlib.sha1(f"{os.path.abspath(data_dir)}|{split}|{n}|{FEATURE_VERSION}".encode()).hexdigest()[:12]
    return os.path.join(cache_dir, f"features_{split}_{n}_{key}.npy")


def compute_features(audio: np.ndarray, batch_size: int = 64, progress: bool = True) -> np.ndarray:
    """[N, 64000] audio -> [N, 50, N_MFCC] float32 MFCCs (TF, batched)."""
    import tensorflow as tf
    from tqdm import tqdm

    fn = tf.function(M.tf_mfcc_coarse, input_signature=[tf.TensorSpec([None, M.N_FRAMES * M.HOP], tf.float32)],
                     reduce_retracing=True)
    out = np.zeros((len(audio), M.N_COARSE, M.N_MFCC), np.float32)
    for start in tqdm(range(0, len(audio), batch_size), desc="features", disable=not progress,
                      mininterval=2.0):
        chunk = np.asarray(audio[start : start + batch_size], np.float32)
        out[start : start + len(chunk)] = fn(tf.constant(chunk)).numpy()
    return out


def _take(d: dict, idx: np.ndarray, n: int) -> None:
    """Keep rows `idx` of every per-note array of `d` (in place); audio stays memory-mapped."""
    from synth.data.reader import AudioArray

    for k, v in list(d.items()):
        if isinstance(v, AudioArray):
            d[k] = v.take(idx)
        elif isinstance(v, np.ndarray) and len(v) == n:
            d[k] = v[idx]
        elif isinstance(v, list) and len(v) == n:
            d[k] = [v[int(i)] for i in idx]


def load(data_dir: str, split: str, cache_dir: str | None = None, limit: int | None = None,
         progress: bool = True, programs: Sequence[int] | None = None,
         pitches: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """One split with conditioning, cents and (cached) encoder features. See the module doc.

    programs: keep only the notes of these GM programs (of every SoundFont set), after the features are
    loaded, so the whole split's feature cache serves every selection.
    pitches: likewise, keep only the notes of these MIDI pitches.
    """
    from synth.data.reader import load_split

    d = dict(load_split(data_dir, split, workers=max(1, min(2, os.cpu_count() or 1)), progress=progress))
    n = len(d["pitch"])
    if limit is not None and limit < n:
        # A fixed, spread-out subset (every k-th note) so that all instruments stay represented.
        idx = np.linspace(0, n - 1, limit).round().astype(np.int64)
        _take(d, idx, n)
        n = limit
    if n == 0:
        raise ValueError(f"{data_dir}: split {split!r} holds no notes")
    d["cond"] = M.condition_arrays(d["pitch"], d["velocity"], d["source"], d["qualities"])
    d["cents"] = note_cents(d["pitch"], d["f0_hz"], d.get("f0_confidence"))
    d["f0_hz"] = np.asarray(d["f0_hz"], np.float32)
    d["loudness_db"] = np.asarray(d["loudness_db"], np.float32)
    if cache_dir:
        os.makedirs(cache_dir, exist_ok=True)
        path = _cache_path(cache_dir, data_dir, split, n if limit is None else -limit)
        if os.path.exists(path):
            d["features"] = np.load(path)
        else:
            log.info("computing encoder features for %d %s notes -> %s", n, split, path)
            d["features"] = compute_features(d["audio"], progress=progress)
            # Atomic: stages started together may compute the same cache at once.
            tmp = f"{path}.{os.getpid()}.tmp.npy"
            np.save(tmp, d["features"])
            os.replace(tmp, path)
    else:
        d["features"] = compute_features(d["audio"], progress=progress)
    for field, plural, values in (("program", "programs", programs), ("pitch", "pitches", pitches)):
        if values is None:
            continue
        # Programs by the GM program field: in a multi-SoundFont data set the instrument id is
        # unique per (set, bank, program).
        idx = np.flatnonzero(np.isin(d[field], np.asarray(list(values))))
        if len(idx) == 0:
            raise ValueError(f"{data_dir}: split {split!r} holds no notes of {plural} {int_ranges(values)}")
        log.info("%s: %d of %d notes from %s %s", split, len(idx), n, plural, int_ranges(values))
        _take(d, idx, n)
        n = len(idx)
    return d


def note_cents(pitch: np.ndarray, f0_hz: np.ndarray, confidence: np.ndarray | None) -> np.ndarray:
    """[N, 1000] f0 deviation in cents from each note's own median tuning, within +-MAX_CENTS.

    The per-note median (over voiced frames) is removed: SoundFont samples are often a few
    cents sharp or flat (and the tracker has its own small biases), which is tuning error, not
    musical content; the generator should put its notes on the requested pitch and only learn
    the motion around it (attack glides, vibrato).
    """
    nominal = M.midi_to_hz(np.asarray(pitch, np.float64))[:, None]
    cents = 1200.0 * np.log2(np.maximum(np.asarray(f0_hz, np.float64), 1e-3) / nominal)
    if confidence is None:
        voiced = np.ones_like(cents, dtype=bool)
    else:
        voiced = np.asarray(confidence) >= 0.5
    masked = np.where(voiced, cents, np.nan)
    has = voiced.any(axis=1)
    offset = np.zeros(len(cents))
    offset[has] = np.nanmedian(masked[has], axis=1)
    out = np.where(voiced, cents - offset[:, None], 0.0)
    return np.clip(out, -M.MAX_CENTS, M.MAX_CENTS).astype(np.float32)


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-coefficient mean and std over notes and steps."""
    flat = features.reshape(-1, features.shape[-1]).astype(np.float64)
    return flat.mean(0).astype(np.float32), (flat.std(0) + 1e-3).astype(np.float32)


def crop_batch(d: dict, idx: np.ndarray, start: int, n_frames: int) -> dict[str, np.ndarray]:
    """Audio / f0 / loudness windows of `n_frames` frames from frame `start` for notes `idx`."""
    a, b = start * M.HOP, (start + n_frames) * M.HOP
    return {
        "audio": np.stack([np.asarray(d["audio"][i, a:b], np.float32) for i in idx]),
        "f0_hz": d["f0_hz"][idx, start : start + n_frames],
        "loudness_db": d["loudness_db"][idx, start : start + n_frames],
    }


def sample_start(rng: np.random.Generator, n_frames: int, p_onset: float = 0.3) -> int:
    """A crop start frame: the onset with probability `p_onset` (attacks matter most), else uniform."""
    if rng.random() < p_onset:
        return 0
    # Even: a crop must start on a decoder frame (125 frames/s = every other data frame).
    return M.DECODER_DOWN * int(rng.integers(0, (M.N_FRAMES - n_frames) // M.DECODER_DOWN + 1))
