"""Instruments of a multi-set build: which presets, which are near-duplicates, which split.

An **instrument** is one preset of one set (SoundFont): ``(set, bank, program)``. Bank 0 holds the
128 General MIDI programs; banks 1..63 hold GS variations of a GM program (e.g. FluidR3's bank 8
program 24 "Ukulele", a variation of 24 "Acoustic Guitar (nylon)"), which take the labels of
their GM program. Variations of the sound effects (programs 120-127), drum kits (bank 128) and
banks 64-127 (csound's bank 127 is an MT-32 map whose program numbers are not GM) are never used.

**Probe**: each preset is rendered once, exactly as `synth.data.render.calibrate_level` does (a
fresh synth, pitches 24..96 in steps of 12, velocity 127). The probe's peaks give the set's level
scale; its log-mel spectrograms, each set to 0 dB at the instrument's loudest bin and floored at
-80 dB, are the instrument's **fingerprint**.

**Distance** of two instruments: the mean absolute difference (dB) of their fingerprints over the
bins where either is above -60 dB. Measured on the Debian sets (checkpoints/RECIPE.md, section 1):
the same GM program in two genuinely different SoundFonts is never closer than 6.7 dB (median
10-16 dB), while FluidR3Mono's copy of a FluidR3 preset is at a median of 0.8 dB.

**Near-duplicates** are pairs closer than `NEAR_DUP_DB` (5 dB). Going through the instruments in
canonical order (the sets in the order given, bank 0 before the variation banks, then program),
an instrument within `NEAR_DUP_DB` of one already kept is a **copy** and is left out, unless both
are bank-0 programs of the same set (General MIDI programs of one SoundFont are always kept, as in
a single-SoundFont build, e.g. FluidR3's Bright Acoustic Piano, which is its Grand Piano's samples)
or copies are asked for (``keep_duplicates``).

**Split**, by instrument and deterministic: kept instruments joined by near-duplicate links form
**clusters** (connected components); a cluster's split comes from a hash of its first member
(``sha256("set:program")`` for bank 0, ``"set:bank:program"`` otherwise, as a fraction u of 2^64):
test if u < 0.1, valid if u < 0.2, else train (about 10/10/80 %, like the single-SoundFont rule).
So near-duplicates, across sets or within one, always share a split, and the test split holds
nothing that a near-duplicate in another split shares.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing as mp
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from synth.data import gm, render

logger = logging.getLogger("synth.data.instruments")

PROBE_VERSION = 1
PROBE_PITCHES = render.CALIBRATION_PITCHES
PROBE_VELOCITY = render.CALIBRATION_VELOCITY
FP_N_FFT = 1024
FP_HOP = 1024
FP_N_MELS = 48
FP_FLOOR_DB = -80.0
FP_ACTIVE_DB = -60.0
NEAR_DUP_DB = 5.0
VARIATION_BANKS = range(1, 64)
LAST_VARIATION_PROGRAM = 119
TEST_FRACTION = 0.1
VALID_FRACTION = 0.1
SILENT_PEAK = 1e-6


@dataclass(frozen=True)
class Instrument:
    """One preset of one set."""

    set_tag: str
    bank: int
    program: int
    preset_name: str

    @property
    def key(self) -> str:
        return f"{self.set_tag}/{self.bank}/{self.program}"

    @property
    def hash_key(self) -> str:
        return f"{self.set_tag}:{self.program}" if self.bank == 0 else f"{self.set_tag}:{self.bank}:{self.program}"

    @property
    def name(self) -> str:
        """NSynth-style instrument_str: 'opl3_081_lead_2_sawtooth', 'fluidr3_024b008_ukulele'."""
        if self.bank == 0:
            return f"{self.set_tag}_{self.program:03d}_{gm.gm_program(self.program).slug}"
        slug = gm.slugify(self.preset_name) or gm.gm_program(self.program).slug
        return f"{self.set_tag}_{self.program:03d}b{self.bank:03d}_{slug}"


def instrument_id(code: int, bank: int, program: int) -> int:
    """NSynth's integer `instrument`: ``code * 16384 + bank * 128 + program``, unique across sets;
    ``id % 128`` is the GM program, ``id // 128 % 128`` the bank, ``id // 16384`` the set's code
    (>= 1, so an id is never a bare GM program as in a single-SoundFont build)."""
    return (code * 128 + bank) * 128 + program


def split_of_key(hash_key: str) -> str:
    u = int.from_bytes(hashlib.sha256(hash_key.encode()).digest()[:8], "big") / 2.0 ** 64
    return "test" if u < TEST_FRACTION else "valid" if u < TEST_FRACTION + VALID_FRACTION else "train"


def list_presets(soundfont: str | Path, set_tag: str, programs: Sequence[int] | None = None,
                 variations: bool = True) -> list[Instrument]:
    """The set's candidate instruments in canonical order: bank 0, then variation banks."""
    wanted = set(range(128) if programs is None else programs)
    out = []
    with render.SoundFontSynth(soundfont) as synth:
        banks = [0] + (list(VARIATION_BANKS) if variations else [])
        for bank in banks:
            for program in range(128):
                if program not in wanted or (bank > 0 and program > LAST_VARIATION_PROGRAM):
                    continue
                name = synth.preset_name(bank, program)
                if name is not None:
                    out.append(Instrument(set_tag, bank, program, name.strip()))
    return out


def _mel_matrix() -> np.ndarray:
    sr = render.SAMPLE_RATE
    mel = lambda f: 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)  # noqa: E731
    edges = hz(np.linspace(mel(30.0), mel(sr / 2), FP_N_MELS + 2))
    freqs = np.arange(FP_N_FFT // 2 + 1) * sr / FP_N_FFT
    lo, mid, hi = edges[:-2], edges[1:-1], edges[2:]
    return np.maximum(0.0, np.minimum((freqs[:, None] - lo) / (mid - lo), (hi - freqs[:, None]) / (hi - mid)))


_MEL = None


def log_mel(audio: np.ndarray) -> np.ndarray:
    """[frames, FP_N_MELS] mel power (dB) of one note, for fingerprints."""
    global _MEL
    if _MEL is None:
        _MEL = _mel_matrix()
    x = np.pad(np.asarray(audio, np.float64), (FP_N_FFT // 2, FP_N_FFT // 2))
    frames = np.lib.stride_tricks.sliding_window_view(x, FP_N_FFT)[::FP_HOP]
    power = np.abs(np.fft.rfft(frames * np.hanning(FP_N_FFT), axis=-1)) ** 2
    return 10.0 * np.log10(power @ _MEL + 1e-20)


def probe_one(args: tuple[str, int, int]) -> tuple[float, np.ndarray]:
    """(peak at gain 1.0, raw log-mel [pitches, frames, mels] float32) of one preset."""
    soundfont, bank, program = args
    peak, mels = 0.0, []
    with render.SoundFontSynth(soundfont) as synth:
        for pitch in PROBE_PITCHES:
            audio = synth.render_note(bank, program, pitch, PROBE_VELOCITY)
            peak = max(peak, float(np.max(np.abs(audio))))
            mels.append(log_mel(audio))
    return peak, np.stack(mels).astype(np.float32)


def probe(soundfont: str | Path, instruments: Sequence[Instrument], workers: int = 1,
          progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(peaks [n], raw log-mels [n, pitches, frames, mels]) of the instruments of one set."""
    from tqdm import tqdm

    jobs = [(str(soundfont), i.bank, i.program) for i in instruments]
    bar = tqdm(total=len(jobs), unit="preset", desc=f"probe {Path(soundfont).name}", disable=not progress)
    results = []
    if workers > 1 and len(jobs) > 1:
        with mp.get_context("fork").Pool(workers) as pool:
            for r in pool.imap(probe_one, jobs, chunksize=2):
                results.append(r)
                bar.update(1)
    else:
        for job in jobs:
            results.append(probe_one(job))
            bar.update(1)
    bar.close()
    return np.array([r[0] for r in results]), np.stack([r[1] for r in results])


def fingerprints(mels: np.ndarray) -> np.ndarray:
    """Raw log-mels [n, ...] -> fingerprints [n, D] float32: 0 dB at each one's loudest bin, floored."""
    flat = mels.reshape(len(mels), -1).astype(np.float64)
    return np.maximum(flat - flat.max(axis=1, keepdims=True), FP_FLOOR_DB).astype(np.float32)


def distances(fp: np.ndarray) -> np.ndarray:
    """[n, n] fingerprint distances (dB); see the module docstring."""
    n = len(fp)
    out = np.zeros((n, n))
    for i in range(n):
        active = np.maximum(fp[i][None], fp) > FP_ACTIVE_DB
        diff = np.abs(fp[i][None] - fp) * active
        count = active.sum(axis=1)
        out[i] = np.where(count > 0, diff.sum(axis=1) / np.maximum(count, 1), np.inf)
    return out


def plan(instruments: Sequence[Instrument], dist: np.ndarray, silent: Sequence[bool],
         keep_duplicates: bool = False, near_dup_db: float = NEAR_DUP_DB) -> list[dict]:
    """One record per instrument (same order): kept or the copy of which, cluster and split.

    `instruments` must be in canonical order; `dist` their distance matrix; `silent` whether the
    probe never sounded (such a preset is kept, links to nothing, and all its notes get dropped).
    """
    n = len(instruments)
    kept: list[int] = []
    out: list[dict] = []
    for i, inst in enumerate(instruments):
        rec = {"key": inst.key, "set": inst.set_tag, "bank": inst.bank, "program": inst.program,
               "preset": inst.preset_name, "name": inst.name, "kept": True}
        if not silent[i]:
            near = [j for j in kept if not silent[j] and dist[i, j] < near_dup_db
                    and not (inst.bank == 0 and instruments[j].bank == 0 and instruments[j].set_tag == inst.set_tag)]
            if near:
                j = min(near, key=lambda k: (dist[i, k], k))
                rec["near_duplicate_of"] = instruments[j].key
                rec["near_duplicate_db"] = round(float(dist[i, j]), 2)
                rec["kept"] = bool(keep_duplicates)
        if rec["kept"]:
            kept.append(i)
        out.append(rec)

    # Clusters of kept instruments: union-find over near-duplicate links; the root is the
    # smallest index, i.e. the first member in canonical order.
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a_pos, a in enumerate(kept):
        if silent[a]:
            continue
        for b in kept[a_pos + 1:]:
            if not silent[b] and dist[a, b] < near_dup_db:
                ra, rb = find(a), find(b)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
    for i in kept:
        root = find(i)
        out[i]["cluster"] = instruments[root].key
        out[i]["split"] = split_of_key(instruments[root].hash_key)
    for i, rec in enumerate(out):
        if not rec["kept"]:
            # A copy left out still records where its original went.
            orig = next(r for r in out if r["key"] == rec["near_duplicate_of"])
            rec["split_of_original"] = orig["split"]
    return out


__all__ = ["Instrument", "instrument_id", "split_of_key", "list_presets", "probe", "fingerprints",
           "distances", "plan", "NEAR_DUP_DB"]
