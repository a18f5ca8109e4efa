"""Build an NSynth-format data set from a General MIDI SoundFont.

Layout written under ``out_dir`` (the real NSynth json/wav download has the same one)::

    build.json                    settings, level scale, counts, timings
    qualities.json                the quality thresholds fitted on this data set
    work/notes.jsonl              one line per rendered (program, pitch) group: resume journal
    {train,valid,test}/examples.json   {note_str: example} as in NSynth
    {train,valid,test}/audio/<note_str>.wav   16-bit PCM, 16 kHz, mono, 64000 samples

**Split** (fixed, by instrument, never by note): GM program ``p`` goes to ``test`` when
``p % 10 == 0``, to ``valid`` when ``p % 10 == 5``, else to ``train`` (13/13/102 programs, about
10/10/80 %; each split gets acoustic, electronic and synthetic programs). It depends only on the GM
program, so it is the same for every SoundFont.

**Dropped notes** (counted in build.json, never written): a non-finite sample (``nonfinite``);
peak below -60 dBFS after the level scale (``silent``); peak at or above full scale
(``clipped``); fewer than 30 % of the held part's loud frames showing the asked pitch
(``unpitched``: see `synth.data.features.voiced_fraction`).

**Resume**: each finished (program, pitch) group is appended to ``work/notes.jsonl`` after its WAVs
are written; a rerun skips every group found there and renders only the rest (a group cut off
mid-way is rendered again; rendering is deterministic, so its files come out identical). The
final pass (thresholds, tags, examples.json) always runs over everything in the journal.

**Several SoundFonts** in one data set (``dataset build --sets``): `synth.data.multi`, which reuses
this module's groups, journal and final pass with instruments = (set, bank, program).

**Reserved**: TimGM6mb and MuseScore General are refused (`synth.data.sets.check_not_reserved`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import soundfile as sf

from synth.cli import int_ranges
from synth.data import gm, render
from synth.data.features import MIN_VOICED_FRACTION, voiced_fraction
from synth.data.qualities import NOTE_OFF_S, fit_thresholds, score_note
from synth.data.sets import check_not_reserved, reserved_name
from synth.params import QUALITIES, SOURCES, VELOCITY_LAYERS

logger = logging.getLogger("synth.data.build")

SPLITS = ("train", "valid", "test")
SILENT_DBFS = -60.0
DEFAULT_PITCHES = tuple(range(21, 109))
# NSynth's own spelling in its files; `synth.params.canonical_quality` reads both.
NSYNTH_QUALITY_NAMES = tuple("tempo-synced" if q == "tempo_sync" else q for q in QUALITIES)
BUILD_VERSION = 1
# Bump when an analyzer in synth.data.qualities changes: a resumed build rescores old notes.
SCORER_VERSION = 3
# Bump when the unpitched rule changes: a resumed build renders again every group that had a
# note dropped as unpitched under an older rule. Version 2: the f0 tracker searches sub-sample
# lags and several periods for high notes (version 1 missed many notes above about C7).
DROP_RULE_VERSION = 2


def split_of(program: int) -> str:
    """The split of a GM program: test if p % 10 == 0, valid if p % 10 == 5, else train."""
    r = program % 10
    return "test" if r == 0 else "valid" if r == 5 else "train"


def soundfont_slug(soundfont: str | Path) -> str:
    return gm.slugify(Path(soundfont).stem)


def instrument_str(soundfont: str | Path, program: int) -> str:
    return f"{soundfont_slug(soundfont)}_{program:03d}_{gm.gm_program(program).slug}"


def note_str(instrument: str, pitch: int, velocity: int) -> str:
    return f"{instrument}-{pitch:03d}-{velocity:03d}"


@dataclass
class Group:
    """One (instrument, pitch) with its velocities: the unit of rendering, resuming and parallelism.

    A single-SoundFont build leaves `set_tag`, `instrument` and `split` unset (the instrument is
    the GM program, its split `split_of`); a multi-set build sets all three and the bank.
    """

    soundfont: str
    out_dir: str
    program: int
    pitch: int
    velocities: tuple[int, ...]
    level_scale: float
    bank: int = 0
    set_tag: str | None = None
    instrument: str | None = None
    split: str | None = None

    @property
    def key(self) -> str:
        if self.set_tag is None:
            return f"{self.program:03d}-{self.pitch:03d}"
        return f"{self.set_tag}/{self.bank}/{self.program:03d}-{self.pitch:03d}"


def _to_pcm16(audio: np.ndarray) -> np.ndarray:
    return np.round(np.clip(audio, -1.0, 32767 / 32768) * 32768).astype(np.int16)


def _judge(audio: np.ndarray, pitch: int) -> tuple[str | None, float]:
    """(drop reason or None, peak dBFS) for a scaled float note."""
    if not np.all(np.isfinite(audio)):
        return "nonfinite", float("nan")
    peak = float(np.max(np.abs(audio)))
    peak_db = 20 * np.log10(peak + 1e-20)
    if peak_db < SILENT_DBFS:
        return "silent", peak_db
    if peak >= 1.0:
        return "clipped", peak_db
    if voiced_fraction(audio, render.SAMPLE_RATE, pitch, hold_s=NOTE_OFF_S) < MIN_VOICED_FRACTION:
        return "unpitched", peak_db
    return None, peak_db


def render_group(group: Group) -> dict:
    """Render, judge, score and write one group; returns its journal record."""
    inst = group.instrument or instrument_str(group.soundfont, group.program)
    split = group.split or split_of(group.program)
    audio_dir = Path(group.out_dir) / split / "audio"
    notes = render.render_pitch(group.soundfont, group.bank, group.program, group.pitch, list(group.velocities))
    records = []
    for velocity in sorted(notes):
        scaled = notes[velocity].astype(np.float64) * group.level_scale
        reason, peak_db = _judge(scaled, group.pitch)
        name = note_str(inst, group.pitch, velocity)
        rec = {"note_str": name, "pitch": group.pitch, "velocity": velocity, "peak_dbfs": round(peak_db, 2)}
        if reason is not None:
            rec["dropped"] = reason
        else:
            pcm = _to_pcm16(scaled)
            # Scores are computed from exactly what is written, so a reread note scores the same.
            rec["scores"] = score_note(pcm.astype(np.float64) / 32768.0, render.SAMPLE_RATE, group.pitch)
            tmp = audio_dir / f".{name}.tmp.wav"
            sf.write(tmp, pcm, render.SAMPLE_RATE, subtype="PCM_16")
            os.replace(tmp, audio_dir / f"{name}.wav")
        records.append(rec)
    out = {"group": group.key, "program": group.program, "pitch": group.pitch}
    if group.set_tag is not None:
        out.update({"set": group.set_tag, "bank": group.bank, "instrument_str": inst, "split": split})
    return {**out, "scorer_version": SCORER_VERSION, "drop_rule_version": DROP_RULE_VERSION, "notes": records}


def rescore_group(args: tuple[str, dict]) -> dict:
    """A journal record with its kept notes scored again from their WAVs (after a scorer change)."""
    out_dir, rec = args
    split = rec.get("split") or split_of(rec["program"])
    notes = []
    for n in rec["notes"]:
        n = dict(n)
        if "dropped" not in n:
            pcm, _ = sf.read(Path(out_dir) / split / "audio" / f"{n['note_str']}.wav", dtype="int16")
            n["scores"] = score_note(pcm.astype(np.float64) / 32768.0, render.SAMPLE_RATE, n["pitch"])
        notes.append(n)
    return {**rec, "scorer_version": SCORER_VERSION, "notes": notes}


def _soundfont_id(path: Path) -> dict:
    stat = path.stat()
    with open(path, "rb") as f:
        head = hashlib.sha256(f.read(1 << 20)).hexdigest()[:16]
    return {"path": str(path.resolve()), "size": stat.st_size, "sha256_first_mib": head}


def _read_journal(path: Path) -> dict[str, dict]:
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                done[rec["group"]] = rec
    return done


def build_dataset(
    soundfont: str | Path,
    out_dir: str | Path,
    programs: Sequence[int] | None = None,
    pitches: Iterable[int] = DEFAULT_PITCHES,
    velocities: Iterable[int] = VELOCITY_LAYERS,
    workers: int = 1,
    level_scale: float | None = None,
    progress: bool = True,
) -> dict:
    """Render every asked (program, pitch, velocity) and write the NSynth layout; returns build.json.

    Args:
      soundfont: a General MIDI SoundFont (.sf2).
      out_dir: output directory (created; an existing build there is resumed).
      programs: GM programs 0..127 to render (default: every bank-0 preset of the SoundFont).
      pitches: MIDI pitches (default 21..108, NSynth's piano range).
      velocities: MIDI velocities (default NSynth's 25, 50, 75, 100, 127).
      workers: processes rendering in parallel (each with its own FluidSynth).
      level_scale: linear gain applied to FluidSynth's output; default: calibrated once per
        SoundFont over all its melodic presets (see `synth.data.render`), or the one stored in
        ``out_dir/build.json`` when resuming.
      progress: show a tqdm bar.
    """
    from tqdm import tqdm

    t_start = time.perf_counter()
    sf_path = Path(soundfont)
    out = Path(out_dir)
    pitches = sorted(set(int(p) for p in pitches))
    velocities = tuple(sorted(set(int(v) for v in velocities)))
    if sf_path.is_file() or reserved_name(sf_path.name):
        check_not_reserved(sf_path)  # TimGM6mb and MuseScore General are never rendered
    with render.SoundFontSynth(sf_path) as synth:
        presets = synth.melodic_presets()
    available = {p.program: p for p in presets}
    if not available:
        raise ValueError(f"--soundfont: {sf_path} has no bank-0 (melodic) presets")
    if programs is None:
        programs = sorted(available)
    missing = [p for p in programs if p not in available]
    if missing:
        raise ValueError(
            f"--programs: {missing} not in {sf_path.name} (it has bank-0 programs "
            f"{int_ranges(sorted(available))})"
        )

    out.mkdir(parents=True, exist_ok=True)
    (out / "work").mkdir(exist_ok=True)
    for split in SPLITS:
        (out / split / "audio").mkdir(parents=True, exist_ok=True)
    build_path = out / "build.json"
    sf_id = _soundfont_id(sf_path)
    previous = json.loads(build_path.read_text()) if build_path.exists() else None
    if previous is not None and previous["soundfont"]["sha256_first_mib"] != sf_id["sha256_first_mib"]:
        raise ValueError(f"--out: {out} holds a build of another SoundFont ({previous['soundfont']['path']})")
    calibration_s = 0.0
    if level_scale is None and previous is not None:
        level_scale = previous["level_scale"]
    elif level_scale is None:
        t0 = time.perf_counter()
        level_scale, probe_peak = render.calibrate_level(sf_path, presets)
        calibration_s = time.perf_counter() - t0
        logger.info("level scale %.4f (loudest calibration note %.3f at gain 1.0, %.1f s)", level_scale, probe_peak, calibration_s)
    if previous is not None and abs(previous["level_scale"] - level_scale) > 1e-12:
        raise ValueError(f"--out: {out} was built with level scale {previous['level_scale']}; resume needs the same")
    meta = {
        "version": BUILD_VERSION,
        "soundfont": sf_id,
        "level_scale": level_scale,
        "sample_rate": render.SAMPLE_RATE,
        "n_samples": render.N_SAMPLES,
        "hold_s": render.HOLD_S,
        "release_s": render.RELEASE_S,
        "programs": list(programs),
        "pitches": pitches,
        "velocities": list(velocities),
    }
    build_path.write_text(json.dumps({**(previous or {}), **meta}, indent=2) + "\n")

    journal_path = out / "work" / "notes.jsonl"
    done = _read_journal(journal_path)
    groups = [
        Group(str(sf_path), str(out), prog, pitch, velocities, level_scale)
        for prog in programs
        for pitch in pitches
    ]
    todo = [g for g in groups if g.key not in done or _velocities(done[g.key]) != set(velocities)
            or _stale_drops(done[g.key])]
    logger.info("%d groups (%d notes); %d already done, %d to render with %d worker(s)",
                len(groups), len(groups) * len(velocities), len(groups) - len(todo), len(todo), workers)
    t_render = time.perf_counter()
    with open(journal_path, "a") as journal:
        bar = tqdm(total=len(groups), initial=len(groups) - len(todo), unit="group",
                   desc="render", disable=not progress, smoothing=0.05)
        results = _run(todo, workers)
        for rec in results:
            journal.write(json.dumps(rec) + "\n")
            journal.flush()
            done[rec["group"]] = rec
            bar.update(1)
        bar.close()
    render_s = time.perf_counter() - t_render

    t_rescore = time.perf_counter()
    rescore_stale(out, done, journal_path, workers, progress)
    rescore_s = time.perf_counter() - t_rescore

    t_fin = time.perf_counter()
    summary = finalize(out, sf_path, [done[g.key] for g in groups])
    finalize_s = time.perf_counter() - t_fin
    meta.update(summary)
    return write_build_record(build_path, meta, previous, {"calibration": calibration_s, "render_and_score": render_s,
                                                          "rescore": rescore_s, "finalize": finalize_s},
                              t_start, workers, len(todo))


def write_build_record(build_path: Path, meta: dict, previous: dict | None, stage_s: dict[str, float],
                       t_start: float, workers: int, rendered: int) -> dict:
    """This run's timings into `meta` (and appended to its list of runs), written to build.json."""
    meta["runs"] = (previous or {}).get("runs", [])
    meta["timing_s"] = {**{k: round(v, 1) for k, v in stage_s.items()},
                        "total_this_run": round(time.perf_counter() - t_start, 1),
                        "workers": workers, "groups_rendered_this_run": rendered}
    meta["runs"].append({"finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **meta["timing_s"]})
    build_path.write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def rescore_stale(out: Path, done: dict, journal_path: Path, workers: int, progress: bool) -> None:
    """Rescore (in place in `done`, keyed by group) the journalled groups an older scorer wrote,
    then rewrite the journal whole (atomically). Single- and multi-SoundFont builds share it."""
    stale = [rec for rec in done.values() if rec.get("scorer_version") != SCORER_VERSION]
    if not stale:
        return
    from tqdm import tqdm

    logger.info("rescoring %d groups written by an older scorer", len(stale))
    jobs = [(str(out), rec) for rec in stale]
    bar = tqdm(total=len(jobs), unit="group", desc="rescore", disable=not progress)
    if workers > 1:
        with mp.get_context("fork").Pool(workers) as pool:
            fresh = list(_progress(pool.imap(rescore_group, jobs, chunksize=8), bar))
    else:
        fresh = list(_progress(map(rescore_group, jobs), bar))
    bar.close()
    for rec in fresh:
        done[rec["group"]] = rec
    tmp = journal_path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(rec) + "\n" for rec in done.values()))
    os.replace(tmp, journal_path)


def _progress(iterable, bar):
    for item in iterable:
        bar.update(1)
        yield item


def _stale_drops(rec: dict) -> bool:
    return rec.get("drop_rule_version", 1) != DROP_RULE_VERSION and any(
        n.get("dropped") == "unpitched" for n in rec["notes"])


def _velocities(rec: dict) -> set[int]:
    return {n["velocity"] for n in rec["notes"]}


def _run(groups: list[Group], workers: int):
    if workers <= 1 or len(groups) <= 1:
        for g in groups:
            yield render_group(g)
        return
    ctx = mp.get_context("fork")
    with ctx.Pool(workers) as pool:
        # In program order, so a worker's synth keeps one preset's samples loaded in page cache.
        yield from pool.imap_unordered(render_group, groups, chunksize=4)


def _legacy_instrument(soundfont: Path, program: int) -> dict:
    row = gm.gm_program(program)
    return {"instrument": program, "instrument_str": instrument_str(soundfont, program), "split": split_of(program),
            "source": row.source, "extra": {}}


def finalize(out: Path, soundfont: Path | str, records: list[dict],
             instruments: dict[str, dict] | None = None) -> dict:
    """Fit thresholds on all kept notes, tag them and write the three examples.json files.

    `instruments` (multi-set builds) maps a record's instrument_str to its labels: ``instrument``
    (id), ``split``, ``source`` (NSynth source name) and ``extra`` (fields added to each example);
    without it, the instrument is the record's GM program (single-SoundFont builds).
    """
    def meta_of(rec: dict) -> dict:
        if instruments is None:
            return _legacy_instrument(Path(soundfont), rec["program"])
        return {**instruments[rec["instrument_str"]], "instrument_str": rec["instrument_str"]}

    kept = [(rec["program"], meta_of(rec), n) for rec in records for n in rec["notes"] if "dropped" not in n]
    dropped = Counter(n["dropped"] for rec in records for n in rec["notes"] if "dropped" in n)
    if not kept:
        raise ValueError("build: every note was dropped; nothing to write")
    pitches = np.array([n["pitch"] for _, _, n in kept], dtype=np.float64)
    scores = {q: np.array([n["scores"][q] for _, _, n in kept], dtype=np.float64) for q in QUALITIES}
    thresholds = fit_thresholds(scores, pitches)
    qualities_meta = thresholds.to_json()
    qualities_meta["n_notes"] = len(kept)
    qualities_meta["soundfont"] = soundfont.name if isinstance(soundfont, Path) else str(soundfont)
    qualities_meta["rules"] = "see synth/data/qualities.py (RULES, fit_thresholds)"
    (out / "qualities.json").write_text(json.dumps(qualities_meta, indent=2) + "\n")

    examples: dict[str, dict[str, dict]] = {s: {} for s in SPLITS}
    counts = {s: Counter() for s in SPLITS}
    note_id = 0
    for program, meta, n in sorted(kept, key=lambda pmn: pmn[2]["note_str"]):
        row = gm.gm_program(program)
        split = meta["split"]
        tags = thresholds.tags(n["scores"], n["pitch"])
        vec = [int(tags[q]) for q in QUALITIES]
        examples[split][n["note_str"]] = {
            "note": note_id,
            "note_str": n["note_str"],
            "pitch": n["pitch"],
            "velocity": n["velocity"],
            "sample_rate": render.SAMPLE_RATE,
            "instrument": meta["instrument"],
            "instrument_str": meta["instrument_str"],
            "instrument_source": SOURCES.index(meta["source"]),
            "instrument_source_str": meta["source"],
            "instrument_family": row.family_id,
            "instrument_family_str": row.family,
            "qualities": vec,
            "qualities_str": [NSYNTH_QUALITY_NAMES[i] for i, v in enumerate(vec) if v],
            "quality_scores": {q: (None if not np.isfinite(v) else round(v, 4)) for q, v in n["scores"].items()},
            "peak_dbfs": n["peak_dbfs"],
            **meta["extra"],
        }
        note_id += 1
        counts[split]["notes"] += 1
    for split in SPLITS:
        path = out / split / "examples.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(examples[split], indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)
    instruments_in = {s: sorted({e["instrument_str"] for e in examples[s].values()}) for s in SPLITS}
    return {
        "counts": {
            "notes_kept": len(kept),
            "notes_dropped": dict(sorted(dropped.items())),
            "per_split": {s: len(examples[s]) for s in SPLITS},
            "instruments_per_split": {s: len(instruments_in[s]) for s in SPLITS},
            "per_source": dict(Counter(e["instrument_source_str"] for s in SPLITS for e in examples[s].values())),
            "per_quality": {q: int(sum(e["qualities"][i] for s in SPLITS for e in examples[s].values()))
                            for i, q in enumerate(QUALITIES)},
        }
    }


__all__ = ["build_dataset", "split_of", "instrument_str", "note_str", "SPLITS", "SOURCES"]
