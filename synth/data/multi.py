"""Build one NSynth-format data set from several General MIDI SoundFonts (``dataset build --sets``).

Same layout, note rules, quality tags and resume journal as the single-SoundFont builder
(`synth.data.build`), with:

* **instruments** = (set, bank, program), chosen, de-duplicated and split by
  `synth.data.instruments` (near-duplicates share a split; copies of an earlier set's preset are
  left out unless ``keep_duplicates``);
* **names** prefixed by the set's tag (``opl3_081_lead_2_sawtooth-060-100``), so note and
  instrument names are unique across sets; ``instrument`` is a unique integer
  (`synth.data.instruments.instrument_id`); each example also carries ``program`` (the GM program
  that gives its family and source), ``bank``, ``soundfont_set`` and ``preset_name``;
* **labels** from the GM table, except a set's own source (every OPL3 preset is ``synthetic``);
* **level**: one scale per set, from the probe renders of its GM programs (bank 0): the loudest
  at -9 dBFS, exactly as `synth.data.render.calibrate_level` in a single-SoundFont build, so
  FluidR3's GM notes come out bit-identical to that build's; variation presets use the same scale;
* ``build.json`` records per set: Debian package and version, file, SHA-256 of its first MiB,
  licence, its INFO strings, level scale, instruments probed / kept / left out as copies, and
  instruments and notes per split; ``work/plan.json`` records every instrument's fate.

Extra files under ``work/``: ``probe-<tag>.npz`` (probe peaks and log-mels, reused on resume) and
``plan.json``. Resume: rerun the same command; done groups are skipped (a group whose instrument
changed split is rendered again into its new split).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from synth.data import build, gm, instruments as I, render
from synth.data.sets import SoundFontSet, check_not_reserved, debian_package_of, package_version
from synth.params import SOURCES, VELOCITY_LAYERS

logger = logging.getLogger("synth.data.multi")

MULTI_BUILD_VERSION = 1


def _probe_set(st: SoundFontSet, insts: list[I.Instrument], work: Path, sha: str, workers: int,
               progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """(peaks, raw log-mels) of the set's instruments, reusing ``work/probe-<tag>.npz``."""
    path = work / f"probe-{st.tag}.npz"
    cached: dict[str, tuple[float, np.ndarray]] = {}
    if path.exists():
        z = np.load(path, allow_pickle=False)
        if int(z["version"]) == I.PROBE_VERSION and str(z["sha"]) == sha:
            cached = {str(k): (float(p), m) for k, p, m in zip(z["keys"], z["peaks"], z["mels"])}
    missing = [i for i in insts if i.key not in cached]
    if missing:
        peaks, mels = I.probe(st.path, missing, workers=workers, progress=progress)
        for inst, p, m in zip(missing, peaks, mels):
            cached[inst.key] = (float(p), m.astype(np.float32))
        keys = sorted(cached)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, version=I.PROBE_VERSION, sha=sha, keys=np.array(keys),
                 peaks=np.array([cached[k][0] for k in keys]), mels=np.stack([cached[k][1] for k in keys]))
        os.replace(tmp, path)
        # Use what was stored, so a fresh build and a resumed one plan from the same numbers.
        z = np.load(path, allow_pickle=False)
        cached = {str(k): (float(p), m) for k, p, m in zip(z["keys"], z["peaks"], z["mels"])}
    return (np.array([cached[i.key][0] for i in insts]),
            np.stack([cached[i.key][1] for i in insts]).astype(np.float32))


def _set_meta(st: SoundFontSet, info: dict[str, str]) -> dict:
    path = Path(st.path)
    owner = debian_package_of(path)
    package = st.package or owner
    return {
        "tag": st.tag,
        "package": package,
        "package_version": package_version(package) if package else None,
        "file": path.name,
        **build._soundfont_id(path),
        "licence": st.licence,
        "licence_note": st.licence_note,
        "copyright_file": f"/usr/share/doc/{package}/copyright" if package else None,
        "source_override": st.source,
        "info": {k: info[k] for k in ("INAM", "ICOP", "IENG", "ICMT", "ifil") if k in info},
    }


def build_multi_dataset(
    sets: Sequence[SoundFontSet],
    out_dir: str | Path,
    programs: Sequence[int] | None = None,
    pitches: Iterable[int] = build.DEFAULT_PITCHES,
    velocities: Iterable[int] = VELOCITY_LAYERS,
    workers: int = 1,
    variations: bool = True,
    keep_duplicates: bool = False,
    near_dup_db: float = I.NEAR_DUP_DB,
    level_scales: dict[str, float] | None = None,
    progress: bool = True,
    plan_programs: Sequence[int] | None = None,
) -> dict:
    """Render every kept instrument of `sets` at `pitches` x `velocities`; returns build.json.

    Args:
      sets: the SoundFonts (`synth.data.sets.resolve_sets`), in priority order.
      out_dir: output directory (created; an existing multi-set build there is resumed).
      programs: GM programs 0..127 to render (default all); applies to every set, variations
        included. The plan (copies, clusters, splits) and the level scales always cover every
        program of every set, so a subset build has the same splits as the full build.
      pitches, velocities, workers, progress: as `synth.data.build.build_dataset`.
      variations: also use GS variation banks 1..63 (programs 0..119).
      keep_duplicates: keep copies of an earlier set's presets (in their original's split).
      near_dup_db: near-duplicate distance threshold (dB).
      level_scales: {tag: linear gain} instead of the probe calibration (tests).
      plan_programs: probe and plan over these programs only (tests: probing every preset of a
        set takes about a minute); default every program.
    """
    from tqdm import tqdm

    t_start = time.perf_counter()
    out = Path(out_dir)
    pitches = sorted(set(int(p) for p in pitches))
    velocities = tuple(sorted(set(int(v) for v in velocities)))
    if programs is not None:
        programs = sorted(set(int(p) for p in programs))
        bad = [p for p in programs if not 0 <= p <= 127]
        if bad:
            raise ValueError(f"--programs: {bad} are not GM programs 0..127")
    infos = {}
    for st in sets:
        if not Path(st.path).is_file():
            hint = f" (install the Debian package {st.package})" if st.package else ""
            raise FileNotFoundError(f"--sets: {st.tag}: no such file: {st.path}{hint}")
        infos[st.tag] = check_not_reserved(st.path)

    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    work.mkdir(exist_ok=True)
    for split in build.SPLITS:
        (out / split / "audio").mkdir(parents=True, exist_ok=True)
    build_path = out / "build.json"
    previous = json.loads(build_path.read_text()) if build_path.exists() else None
    set_metas = {st.tag: _set_meta(st, infos[st.tag]) for st in sets}
    if previous is not None:
        if previous.get("kind") != "multi":
            raise ValueError(f"--out: {out} holds a single-SoundFont build; use another directory")
        before = {s["tag"]: s["sha256_first_mib"] for s in previous["sets"]}
        now = {t: m["sha256_first_mib"] for t, m in set_metas.items()}
        if before != now:
            raise ValueError(f"--out: {out} holds a build of other sets ({', '.join(before)}); resume needs the same")

    # Candidates, probes, level scales.
    t0 = time.perf_counter()
    candidates: list[I.Instrument] = []
    peaks, mels = [], []
    level = {}
    for st in sets:
        insts = I.list_presets(st.path, st.tag, plan_programs, variations=variations)
        if not insts:
            raise ValueError(f"--sets: {st.tag} ({st.path}) has no melodic preset among the asked programs")
        p, m = _probe_set(st, insts, work, set_metas[st.tag]["sha256_first_mib"], workers, progress)
        candidates += insts
        peaks.append(p)
        mels.append(m)
        if level_scales and st.tag in level_scales:
            level[st.tag] = float(level_scales[st.tag])
        elif previous is not None and st.tag in previous.get("level_scales", {}):
            level[st.tag] = float(previous["level_scales"][st.tag])
        else:
            # As `render.calibrate_level` over the set's GM programs (bank 0): a set's GM presets
            # get exactly the level of a single-SoundFont build; variations follow at that scale.
            gm_peaks = [peak for inst, peak in zip(insts, p) if inst.bank == 0] or list(p)
            if not max(gm_peaks) > 0:
                raise ValueError(f"--sets: {st.tag}: every probe note was silent")
            level[st.tag] = render.CALIBRATION_PEAK / float(max(gm_peaks))
        logger.info("%s: %d presets probed, level scale %.4f", st.tag, len(insts), level[st.tag])
    probe_s = time.perf_counter() - t0
    peaks_all = np.concatenate(peaks)
    dist = I.distances(I.fingerprints(np.concatenate(mels)))
    silent = list(peaks_all < I.SILENT_PEAK)
    plan = I.plan(candidates, dist, silent, keep_duplicates=keep_duplicates, near_dup_db=near_dup_db)
    for rec, p in zip(plan, peaks_all):
        rec["probe_peak"] = round(float(p), 5)
    tmp = work / "plan.json.tmp"
    tmp.write_text(json.dumps(plan, indent=1) + "\n")
    os.replace(tmp, work / "plan.json")

    by_tag = {st.tag: st for st in sets}
    kept = [r for r in plan if r["kept"] and (programs is None or r["program"] in programs)]
    if not kept:
        raise ValueError("--programs: no instrument of the sets left to render")
    inst_meta = {}
    for r in kept:
        st = by_tag[r["set"]]
        inst_meta[r["name"]] = {
            "instrument": I.instrument_id(st.code, r["bank"], r["program"]),
            "split": r["split"],
            "source": st.source or gm.gm_program(r["program"]).source,
            "extra": {"program": r["program"], "bank": r["bank"], "soundfont_set": r["set"],
                      "preset_name": r["preset"]},
        }
    ids = Counter(m["instrument"] for m in inst_meta.values())
    assert max(ids.values()) == 1, "instrument ids must be unique"

    meta = {
        "version": build.BUILD_VERSION,
        "kind": "multi",
        "multi_version": MULTI_BUILD_VERSION,
        # Read by tools that know single-SoundFont builds only (the model card): no path, the files.
        "soundfont": {"path": " + ".join(set_metas[st.tag]["file"] for st in sets)},
        "sets": [set_metas[st.tag] for st in sets],
        "level_scales": level,
        "sample_rate": render.SAMPLE_RATE,
        "n_samples": render.N_SAMPLES,
        "hold_s": render.HOLD_S,
        "release_s": render.RELEASE_S,
        "programs": sorted({r["program"] for r in kept}),
        "pitches": pitches,
        "velocities": list(velocities),
        "variations": variations,
        "keep_duplicates": keep_duplicates,
        "near_duplicate_db": near_dup_db,
        "split_rule": "clusters of near-duplicates; sha256 of the first member's 'set:program' "
                      "('set:bank:program' for variation banks): test < 0.1, valid < 0.2, else train",
    }
    build_path.write_text(json.dumps({**(previous or {}), **meta}, indent=2) + "\n")

    journal_path = work / "notes.jsonl"
    done = build._read_journal(journal_path)
    groups = [
        build.Group(by_tag[r["set"]].path, str(out), r["program"], pitch, velocities, level[r["set"]],
                    bank=r["bank"], set_tag=r["set"], instrument=r["name"], split=r["split"])
        for r in kept
        for pitch in pitches
    ]

    def stale(g: build.Group) -> bool:
        rec = done.get(g.key)
        return (rec is None or build._velocities(rec) != set(velocities) or build._stale_drops(rec)
                or rec.get("split") != g.split or rec.get("instrument_str") != g.instrument)

    todo = [g for g in groups if stale(g)]
    logger.info("%d instruments, %d groups (%d notes); %d already done, %d to render with %d worker(s)",
                len(kept), len(groups), len(groups) * len(velocities), len(groups) - len(todo), len(todo), workers)
    t_render = time.perf_counter()
    with open(journal_path, "a") as journal:
        bar = tqdm(total=len(groups), initial=len(groups) - len(todo), unit="group", desc="render",
                   disable=not progress, smoothing=0.05)
        for rec in build._run(todo, workers):
            journal.write(json.dumps(rec) + "\n")
            journal.flush()
            done[rec["group"]] = rec
            bar.update(1)
        bar.close()
    render_s = time.perf_counter() - t_render

    t_rescore = time.perf_counter()
    build.rescore_stale(out, done, journal_path, workers, progress)
    rescore_s = time.perf_counter() - t_rescore

    t_fin = time.perf_counter()
    records = [done[g.key] for g in groups]
    summary = build.finalize(out, meta["soundfont"]["path"], records, instruments=inst_meta)
    finalize_s = time.perf_counter() - t_fin
    meta.update(summary)
    meta["counts"].update(_set_counts(out, plan, records, inst_meta))
    meta["near_duplicates"] = _near_duplicate_summary(plan)
    return build.write_build_record(build_path, meta, previous, {"probe_and_plan": probe_s, "render_and_score": render_s,
                                                                "rescore": rescore_s, "finalize": finalize_s},
                                    t_start, workers, len(todo))


def _set_counts(out: Path, plan: list[dict], records: list[dict], inst_meta: dict) -> dict:
    """Per set: instruments probed / kept / left out, and instruments and notes per split."""
    per_set: dict[str, dict] = {}
    for r in plan:
        c = per_set.setdefault(r["set"], {"presets_probed": 0, "instruments_planned": 0, "copies_left_out": 0,
                                          "variation_presets_planned": 0})
        c["presets_probed"] += 1
        if r["kept"]:
            c["instruments_planned"] += 1
            c["variation_presets_planned"] += int(r["bank"] > 0)
        else:
            c["copies_left_out"] += 1
    notes = defaultdict(Counter)
    insts = defaultdict(lambda: defaultdict(set))
    for rec in records:
        kept = sum(1 for n in rec["notes"] if "dropped" not in n)
        if kept:
            notes[rec["set"]][rec["split"]] += kept
            insts[rec["set"]][rec["split"]].add(rec["instrument_str"])
    for tag, c in per_set.items():
        c["notes_per_split"] = {s: notes[tag][s] for s in build.SPLITS}
        c["instruments_per_split"] = {s: len(insts[tag][s]) for s in build.SPLITS}
        c["instruments_with_notes"] = sum(c["instruments_per_split"].values())
        c["per_source_instruments"] = dict(Counter(
            inst_meta[name]["source"] for s in build.SPLITS for name in insts[tag][s]))
    return {"per_set": per_set}


def _near_duplicate_summary(plan: list[dict]) -> dict:
    copies = [r for r in plan if "near_duplicate_of" in r]
    clusters = Counter(r["cluster"] for r in plan if r["kept"])
    return {
        "copies": len(copies),
        "copies_by_set": dict(Counter(r["set"] for r in copies)),
        "copies_left_out": sum(1 for r in copies if not r["kept"]),
        "clusters_with_more_than_one_instrument": sum(1 for v in clusters.values() if v > 1),
        "largest_cluster": max(clusters.values()) if clusters else 0,
    }


__all__ = ["build_multi_dataset", "SOURCES"]
