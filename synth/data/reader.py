"""Reading an NSynth-format data set: ours (`sound-generator dataset build`) or the real NSynth
json/wav download, unchanged.

Layout: ``DIR/<split>/examples.json`` (a dict keyed by ``note_str``, as in NSynth) and
``DIR/<split>/audio/<note_str>.wav`` (16 kHz mono, 64000 samples). Only NSynth's own fields are
needed (``pitch``, ``velocity``, ``instrument``, ``instrument_source``, ``qualities`` — a list of
10 zeros/ones in NSynth's order, the last one spelt 'tempo-synced' in NSynth's ``qualities_str``).
A multi-set build (``dataset build --sets``) adds ``program``, ``bank``, ``soundfont_set`` and
``preset_name`` to each example; its ``instrument`` ids are unique across sets.

Bulk access for training::

    data = load_split("data/nsynth_fluidr3", "train")
    data["audio"][i]          # [64000] float32 in [-1, 1)
    data["f0_hz"][i]          # [1000] float32
    data["loudness_db"][i]    # [1000] float32

The features are computed once per split and cached next to the data in
``DIR/<split>/features-<key>/`` (one .npy per array, memory-mapped when loaded), where ``key`` is a
hash of the split's notes (note_str and pitch, in order) and of the feature settings
(`FEATURE_VERSION`, frame rate, sample rate, note length): adding or removing notes or changing
the settings gives a new key, so a stale cache is never read; an unchanged split (re-tagged
qualities included: those are read from examples.json on every load) is never recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import shutil
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf

from synth.data.features import FRAME_RATE, track_f0
from synth.params import QUALITIES, SOURCES
from synth.units import SAMPLE_RATE

logger = logging.getLogger("synth.data.reader")

N_SAMPLES = 64000
N_FRAMES = N_SAMPLES * FRAME_RATE // SAMPLE_RATE  # 1000
FEATURE_VERSION = 1
ARRAYS = ("audio", "f0_hz", "f0_confidence", "loudness_db")


def read_examples(data_dir: str | Path, split: str) -> list[dict]:
    """The split's examples, sorted by note_str (the order of every array `load_split` returns).

    Each is the examples.json entry with ``note_str`` set and two added keys: ``path`` (the WAV)
    and ``source_id`` (index into `synth.params.SOURCES`, equal to NSynth's instrument_source).
    """
    path = Path(data_dir) / split / "examples.json"
    if not path.is_file():
        raise FileNotFoundError(f"split {split!r}: no {path}")
    raw = json.loads(path.read_text())
    if isinstance(raw, list):  # tolerate a list of examples as well as NSynth's dict
        raw = {e["note_str"]: e for e in raw}
    out = []
    for name in sorted(raw):
        e = dict(raw[name])
        e["note_str"] = name
        e["path"] = str(Path(data_dir) / split / "audio" / f"{name}.wav")
        source = e["instrument_source"]
        e["source_id"] = int(source) if not isinstance(source, str) else SOURCES.index(source)
        q = e.get("qualities", [0] * len(QUALITIES))
        if len(q) != len(QUALITIES):
            raise ValueError(f"{path}: {name}: qualities must have {len(QUALITIES)} entries, got {len(q)}")
        out.append(e)
    return out


def read_audio(path: str | Path) -> np.ndarray:
    """[64000] float32 of one note WAV (checked: 16 kHz, mono, 64000 samples)."""
    audio, sr = sf.read(str(path), dtype="float32", always_2d=False)
    if sr != SAMPLE_RATE or audio.ndim != 1 or len(audio) != N_SAMPLES:
        raise ValueError(f"{path}: expected {N_SAMPLES} mono samples at {SAMPLE_RATE} Hz, "
                         f"got shape {audio.shape} at {sr} Hz")
    return audio


def compute_features(audio: np.ndarray, pitch: int) -> dict[str, np.ndarray]:
    """f0 and loudness of one note at FRAME_RATE: {'f0_hz', 'f0_confidence', 'loudness_db'}, each [1000] float32."""
    # The numpy implementation (synth.core re-exports it) without importing TensorFlow in workers.
    from synth.fast_render import compute_loudness_db

    f0, conf = track_f0(audio, SAMPLE_RATE, pitch, frame_rate=FRAME_RATE)
    loud = np.asarray(compute_loudness_db(audio, SAMPLE_RATE, frame_rate=FRAME_RATE), dtype=np.float32)
    loud = loud.reshape(-1)[:N_FRAMES]
    if len(loud) != N_FRAMES or len(f0) != N_FRAMES:
        raise ValueError(f"features: expected {N_FRAMES} frames, got f0 {len(f0)}, loudness {len(loud)}")
    return {"f0_hz": f0, "f0_confidence": conf, "loudness_db": loud}


def _note_features(args: tuple[str, int]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    path, pitch = args
    audio = read_audio(path)
    pcm = np.round(audio * 32768.0).clip(-32768, 32767).astype(np.int16)
    return pcm, compute_features(audio, pitch)


def cache_key(examples: list[dict]) -> str:
    """Hash of what the features depend on: the notes (name and pitch, in order) and the settings.

    Re-tagging qualities or editing other fields of examples.json keeps the cache; adding,
    removing or renaming a note, or changing a pitch or a feature setting, gives a new key.
    """
    notes = [(e["note_str"], int(e["pitch"])) for e in examples]
    settings = {"v": FEATURE_VERSION, "frame_rate": FRAME_RATE, "sr": SAMPLE_RATE, "n": N_SAMPLES}
    blob = json.dumps({"notes": notes, "settings": settings}, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class AudioArray:
    """[N, 64000] float32 view over the int16 audio cache (memory-mapped; scaled by 1/32768 on access).

    Index it like a numpy array (``a[i]``, ``a[i:j]``, ``a[index_array]``); ``np.asarray(a)``
    loads everything (N * 256 KB). ``a.take(rows)`` is a view of some notes that stays
    memory-mapped (`rows` maps its positions to rows of `pcm`).
    """

    def __init__(self, pcm: np.ndarray, rows: np.ndarray | None = None):
        self.pcm = pcm
        self.rows = None if rows is None else np.asarray(rows, np.int64)
        self.shape = pcm.shape if rows is None else (len(self.rows),) + tuple(pcm.shape[1:])
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        if self.rows is not None:
            index = (self.rows[index[0]],) + index[1:] if isinstance(index, tuple) else self.rows[index]
        return np.asarray(self.pcm[index], dtype=np.float32) * np.float32(1.0 / 32768.0)

    def take(self, rows) -> "AudioArray":
        rows = np.asarray(rows, np.int64)
        return AudioArray(self.pcm, rows if self.rows is None else self.rows[rows])

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype)


def load_split(
    data_dir: str | Path,
    split: str,
    workers: int = 1,
    progress: bool = True,
    mmap: bool = True,
) -> dict:
    """Every note of a split with the features the models train on, computed once and cached.

    Args:
      data_dir: data set root (holding ``<split>/examples.json`` and ``<split>/audio/``).
      split: 'train', 'valid' or 'test' (any directory name works).
      workers: processes computing features on a cache miss.
      progress: tqdm bar while computing.
      mmap: memory-map the cached arrays (False loads them into memory).

    Returns a dict, N = number of notes, rows in `read_examples` order (sorted note_str):
      ``audio``          AudioArray [N, 64000] float32 in [-1, 1) (int16 memmap underneath)
      ``f0_hz``          [N, 1000] float32: pitch-seeded f0 at 250 frames/s; the nominal pitch
                         where ``f0_confidence`` < 0.5 (see `synth.data.features.track_f0`)
      ``f0_confidence``  [N, 1000] float32 in [0, 1]
      ``loudness_db``    [N, 1000] float32: `synth.core.compute_loudness_db` (A-weighted dB)
      ``pitch``          [N] int32 MIDI pitch
      ``velocity``       [N] int32 MIDI velocity
      ``source``         [N] int32 index into `synth.params.SOURCES` (acoustic, electronic, synthetic)
      ``qualities``      [N, 10] float32 0/1 in `synth.params.QUALITIES` order
      ``instrument``     [N] int32 NSynth instrument id, unique per instrument (a single-SoundFont
                         build: the GM program; a multi-set build: `synth.data.instruments.instrument_id`)
      ``program``        [N] int32 GM program 0..127 (the example's ``program``; else ``instrument``,
                         which is the program in single-SoundFont builds)
      ``note_str``       [N] str
      ``examples``       list of N example dicts (`read_examples`)
      ``cache_path``     Path of the feature cache directory
      ``frame_rate``     250; ``sample_rate`` 16000
    """
    from tqdm import tqdm

    data_dir = Path(data_dir)
    examples = read_examples(data_dir, split)
    if not examples:
        raise ValueError(f"split {split!r}: {data_dir / split / 'examples.json'} has no examples")
    n = len(examples)
    key = cache_key(examples)
    cache = data_dir / split / f"features-{key}"
    if not (cache / "done.json").is_file():
        t0 = time.perf_counter()
        tmp = data_dir / split / f".features-{key}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        arrays = {
            "audio": np.lib.format.open_memmap(tmp / "audio.npy", "w+", np.int16, (n, N_SAMPLES)),
            **{
                name: np.lib.format.open_memmap(tmp / f"{name}.npy", "w+", np.float32, (n, N_FRAMES))
                for name in ARRAYS[1:]
            },
        }
        jobs = [(e["path"], int(e["pitch"])) for e in examples]
        bar = tqdm(total=n, unit="note", desc=f"features {split}", disable=not progress, smoothing=0.05)
        if workers > 1:
            # forkserver: a caller that already imported TensorFlow must not be forked.
            with mp.get_context("forkserver").Pool(workers) as pool:
                results = pool.imap(_note_features, jobs, chunksize=32)
                _fill(arrays, results, bar)
        else:
            _fill(arrays, map(_note_features, jobs), bar)
        bar.close()
        for a in arrays.values():
            a.flush()
        del arrays
        elapsed = time.perf_counter() - t0
        (tmp / "done.json").write_text(json.dumps({"n": n, "seconds": round(elapsed, 1), "key": key}) + "\n")
        for old in data_dir.glob(f"{split}/features-*"):
            shutil.rmtree(old)  # a cache for an older examples.json or settings
        os.replace(tmp, cache)
        logger.info("features of %s (%d notes) computed in %.1f s -> %s", split, n, elapsed, cache)
    mode = "r" if mmap else None
    loaded = {name: np.load(cache / f"{name}.npy", mmap_mode=mode) for name in ARRAYS}
    if loaded["audio"].shape != (n, N_SAMPLES):
        raise ValueError(f"{cache}: audio cache has shape {loaded['audio'].shape}, expected {(n, N_SAMPLES)}")
    return {
        "audio": AudioArray(loaded["audio"]),
        "f0_hz": loaded["f0_hz"],
        "f0_confidence": loaded["f0_confidence"],
        "loudness_db": loaded["loudness_db"],
        "pitch": np.array([e["pitch"] for e in examples], dtype=np.int32),
        "velocity": np.array([e["velocity"] for e in examples], dtype=np.int32),
        "source": np.array([e["source_id"] for e in examples], dtype=np.int32),
        "qualities": np.array([e["qualities"] for e in examples], dtype=np.float32).reshape(n, len(QUALITIES)),
        "instrument": np.array([e["instrument"] for e in examples], dtype=np.int32),
        "program": np.array([e.get("program", e["instrument"]) for e in examples], dtype=np.int32),
        "note_str": np.array([e["note_str"] for e in examples]),
        "examples": examples,
        "cache_path": cache,
        "frame_rate": FRAME_RATE,
        "sample_rate": SAMPLE_RATE,
    }


def _fill(arrays: dict, results, bar) -> None:
    for i, (pcm, feats) in enumerate(results):
        arrays["audio"][i] = pcm
        for name, value in feats.items():
            arrays[name][i] = value
        bar.update(1)


def iter_notes(data_dir: str | Path, split: str) -> Iterator[dict]:
    """One dict per note, in `read_examples` order, from the cache (built on first use):
    {'audio' [64000], 'f0_hz' [1000], 'f0_confidence' [1000], 'loudness_db' [1000], 'pitch',
    'velocity', 'source', 'qualities' [10], 'instrument', 'note_str'}."""
    data = load_split(data_dir, split)
    for i in range(len(data["pitch"])):
        yield {
            "audio": data["audio"][i],
            "f0_hz": np.asarray(data["f0_hz"][i]),
            "f0_confidence": np.asarray(data["f0_confidence"][i]),
            "loudness_db": np.asarray(data["loudness_db"][i]),
            "pitch": int(data["pitch"][i]),
            "velocity": int(data["velocity"][i]),
            "source": int(data["source"][i]),
            "qualities": data["qualities"][i],
            "instrument": int(data["instrument"][i]),
            "note_str": str(data["note_str"][i]),
        }
