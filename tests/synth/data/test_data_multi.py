"""Multi-set builds (`dataset build --sets`): plan, split, names, reserved sets, resume."""

from __future__ import annotations

import json
import os
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from synth import cli
from synth.data import build, gm, instruments as I, multi, sets as S
from synth.data.reader import load_split, read_examples

FLUIDR3 = S.SETS["fluidr3"]
MONO = S.SETS["fluidr3mono"]
OPL3 = S.SETS["opl3"]
HAVE_SETS = all(Path(s.path).is_file() for s in (FLUIDR3, MONO, OPL3))
needs_sets = pytest.mark.skipif(
    not HAVE_SETS, reason="needs fluid-soundfont-gm, fluidr3mono-gm-soundfont, opl3-soundfont")

# 0 and 1: FluidR3's grand and bright piano share samples (one cluster); 43: FluidR3Mono's
# contrabass is its own; 81: FluidR3Mono's saw lead is FluidR3's.
PROGRAMS = [0, 1, 43, 81]
PITCHES = [60]
VELOCITIES = [100]
LEVELS = {"fluidr3": 0.5, "fluidr3mono": 0.5, "opl3": 0.5}


def tiny_sf2(path: Path, inam: str) -> Path:
    """A RIFF sfbk file with only an INFO list (enough for the reserved check, not for FluidSynth)."""
    def sub(cid: bytes, data: bytes) -> bytes:
        return cid + struct.pack("<I", len(data)) + data + (b"\0" if len(data) % 2 else b"")

    name = inam.encode() + b"\0"
    info = b"INFO" + sub(b"ifil", struct.pack("<HH", 2, 1)) + sub(b"INAM", name)
    body = b"sfbk" + sub(b"LIST", info)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


# ---------------------------------------------------------------------------------------------
# Plan and split, on made-up fingerprints.


def _insts():
    return [
        I.Instrument("a", 0, 0, "Piano"),
        I.Instrument("a", 0, 1, "Bright Piano"),  # same set, bank 0, near a/0/0: kept, same cluster
        I.Instrument("a", 8, 0, "Detuned Piano"),  # variation near a/0/0: a copy
        I.Instrument("b", 0, 0, "Piano"),  # another set, near a/0/0: a copy
        I.Instrument("b", 0, 40, "Violin"),  # far from everything
        I.Instrument("b", 0, 41, "Viola"),  # silent probe
    ]


def _dist():
    d = np.full((6, 6), 20.0)
    np.fill_diagonal(d, 0.0)
    for i, j, v in [(0, 1, 0.3), (0, 2, 1.0), (1, 2, 1.5), (0, 3, 0.5), (1, 3, 0.6), (2, 3, 1.2)]:
        d[i, j] = d[j, i] = v
    return d


def test_plan_leaves_out_copies_and_keeps_gm_programs_of_one_set():
    plan = I.plan(_insts(), _dist(), [False] * 5 + [True])
    by = {r["key"]: r for r in plan}
    assert by["a/0/0"]["kept"] and by["a/0/1"]["kept"]
    assert by["a/0/1"]["cluster"] == "a/0/0" and by["a/0/1"]["split"] == by["a/0/0"]["split"]
    assert not by["a/8/0"]["kept"] and by["a/8/0"]["near_duplicate_of"] == "a/0/0"
    assert not by["b/0/0"]["kept"] and by["b/0/0"]["near_duplicate_of"] == "a/0/0"
    assert by["b/0/0"]["split_of_original"] == by["a/0/0"]["split"]
    assert by["b/0/40"]["kept"] and by["b/0/40"]["cluster"] == "b/0/40"
    assert by["b/0/41"]["kept"] and "near_duplicate_of" not in by["b/0/41"]
    assert by["a/0/0"]["split"] == I.split_of_key("a:0")
    assert by["b/0/40"]["split"] == I.split_of_key("b:40")


def test_kept_duplicates_share_their_original_split_and_plan_is_deterministic():
    plan = I.plan(_insts(), _dist(), [False] * 6, keep_duplicates=True)
    assert all(r["kept"] for r in plan)
    cluster = [r for r in plan if r["cluster"] == "a/0/0"]
    assert {r["key"] for r in cluster} == {"a/0/0", "a/0/1", "a/8/0", "b/0/0"}
    assert len({r["split"] for r in cluster}) == 1
    assert I.plan(_insts(), _dist(), [False] * 6, keep_duplicates=True) == plan


def test_split_hash_is_fixed_and_about_80_10_10():
    assert I.split_of_key("fluidr3:0") == I.split_of_key("fluidr3:0")
    counts = Counter(I.split_of_key(f"set{s}:{p}") for s in range(20) for p in range(128))
    n = sum(counts.values())
    assert abs(counts["test"] / n - 0.1) < 0.02 and abs(counts["valid"] / n - 0.1) < 0.02
    # Names and ids: unique across sets, program recoverable, fluidr3 bank 0 as before.
    assert all(s.code >= 1 for s in S.SETS.values()) and len({s.code for s in S.SETS.values()}) == len(S.SETS)
    triples = [(code, bank, p) for code in (0, 1, 2, 3, 100) for bank in (0, 8, 16, 63) for p in range(128)]
    ids = {I.instrument_id(*t): t for t in triples}
    assert len(ids) == len(triples)
    assert all(i % 128 == p and i // 128 % 128 == bank and i // 16384 == code for i, (code, bank, p) in ids.items())
    assert I.Instrument("opl3", 0, 81, "081").name == "opl3_081_lead_2_sawtooth"
    assert I.Instrument("fluidr3", 8, 24, "Ukulele").name == "fluidr3_024b008_ukulele"


def test_distance_is_zero_for_a_copy_and_large_for_another_sound():
    t = np.arange(64000) / 16000
    tone = np.sin(2 * np.pi * 261.63 * t) * np.exp(-t)
    noise = np.random.default_rng(0).standard_normal(64000) * np.exp(-t)
    mels = np.stack([np.stack([I.log_mel(x)] * 2) for x in (tone, 0.25 * tone, noise)])
    d = I.distances(I.fingerprints(mels))
    assert d[0, 1] < 0.01  # a level change is no difference
    assert d[0, 2] > 3 * I.NEAR_DUP_DB


# ---------------------------------------------------------------------------------------------
# Reserved sets.


@pytest.mark.parametrize("name", ["TimGM6mb.sf2", "timgm6mb.sf3", "MuseScore_General.sf3",
                                  "MuseScore_General-HQ.sf2", "musescore-general-lossless.sf2"])
def test_reserved_file_names_are_refused(tmp_path, name):
    path = tiny_sf2(tmp_path / name, "Innocent GM")
    with pytest.raises(S.ReservedSoundFontError, match="reserved for independent evaluation"):
        S.check_not_reserved(path)
    with pytest.raises(S.ReservedSoundFontError):
        build.build_dataset(path, tmp_path / "out", pitches=[60], velocities=[100], level_scale=0.5, progress=False)
    with pytest.raises(S.ReservedSoundFontError):
        cli.main(["dataset", "build", "--sets", f"x={path}", "--out", str(tmp_path / "out2")])
    assert not (tmp_path / "out2").exists()


@pytest.mark.parametrize("inam", ["TimGM6mb", "Tim's GM 6mb", "MuseScore_General", "MuseScore General HQ"])
def test_reserved_soundfont_names_are_refused_whatever_the_file_is_called(tmp_path, inam):
    path = tiny_sf2(tmp_path / "innocent.sf2", inam)
    with pytest.raises(S.ReservedSoundFontError, match="INAM"):
        S.check_not_reserved(path)
    with pytest.raises(S.ReservedSoundFontError):
        cli.main(["dataset", "build", "--soundfont", str(path), "--out", str(tmp_path / "out")])


def test_links_set_names_and_packages_are_checked(tmp_path, monkeypatch):
    target = tiny_sf2(tmp_path / "TimGM6mb.sf2", "Innocent GM")
    link = tmp_path / "default-GM.sf2"
    link.symlink_to(target)
    with pytest.raises(S.ReservedSoundFontError):
        S.check_not_reserved(link)
    for spec in ("timgm6mb", "musescore_general", "fluidr3,MuseScore-General"):
        with pytest.raises(S.ReservedSoundFontError):
            S.resolve_sets(spec)
    plain = tiny_sf2(tmp_path / "plain.sf2", "Plain GM")
    assert S.check_not_reserved(plain, check_package=False)["INAM"] == "Plain GM"
    monkeypatch.setattr(S, "debian_package_of", lambda p: "musescore-general-soundfont-small")
    with pytest.raises(S.ReservedSoundFontError, match="Debian package"):
        S.check_not_reserved(plain)
    assert not any(S.reserved_name(s.path) or s.package in S.RESERVED_PACKAGES for s in S.SETS.values())


def test_resolve_sets():
    assert [s.tag for s in S.resolve_sets("debian")] == list(S.DEBIAN_SETS)
    got = S.resolve_sets("opl3, mine=/x/y.sf2")
    assert [s.tag for s in got] == ["opl3", "mine"] and got[1].path == "/x/y.sf2" and got[1].licence == "unknown"
    for bad in ("fluidr3,fluidr3", "nope", "Bad=/x.sf2", "opl3=/x.sf2", ""):
        with pytest.raises(ValueError, match="--sets"):
            S.resolve_sets(bad)


def test_cli_takes_one_of_soundfont_and_sets(capsys):
    with pytest.raises(SystemExit):
        cli.main(["dataset", "build", "--soundfont", "x.sf2", "--sets", "debian", "--out", "d"])
    assert "not allowed with" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# A tiny real build: FluidR3, FluidR3Mono (mostly copies of FluidR3) and OPL3.


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    if not HAVE_SETS:
        pytest.skip("needs the Debian SoundFonts")
    out = tmp_path_factory.mktemp("multi")
    meta = multi.build_multi_dataset([FLUIDR3, OPL3, MONO], out, programs=PROGRAMS, pitches=PITCHES,
                                     velocities=VELOCITIES, workers=2, keep_duplicates=True,
                                     level_scales=LEVELS, plan_programs=PROGRAMS, progress=False)
    return out, meta


def _examples(out):
    return {s: json.loads((out / s / "examples.json").read_text()) for s in build.SPLITS}


@needs_sets
def test_names_and_ids_are_unique_across_sets_and_labels_follow_the_set(tiny):
    out, _ = tiny
    inst_of: dict[str, int] = {}
    for split, entries in _examples(out).items():
        for name, e in entries.items():
            assert name == f"{e['instrument_str']}-{e['pitch']:03d}-{e['velocity']:03d}"
            assert e["instrument_str"].startswith(e["soundfont_set"] + "_")
            assert inst_of.setdefault(e["instrument_str"], e["instrument"]) == e["instrument"]
            assert e["instrument"] % 128 == e["program"]
            row = gm.gm_program(e["program"])
            assert e["instrument_family_str"] == row.family
            assert e["instrument_source_str"] == ("synthetic" if e["soundfont_set"] == "opl3" else row.source)
            assert (out / split / "audio" / f"{name}.wav").is_file()
    assert len(set(inst_of.values())) == len(inst_of)  # one id per instrument, none shared
    assert {n.split("_")[0] for n in inst_of} == {"fluidr3", "opl3", "fluidr3mono"}
    assert inst_of["fluidr3_081_lead_2_sawtooth"] == I.instrument_id(FLUIDR3.code, 0, 81) > 127


@needs_sets
def test_splits_are_disjoint_and_near_duplicates_share_one(tiny):
    out, meta = tiny
    plan = {r["key"]: r for r in json.loads((out / "work" / "plan.json").read_text())}
    seen = {}
    for split, entries in _examples(out).items():
        for e in entries.values():
            assert seen.setdefault(e["instrument_str"], split) == split
            key = f"{e['soundfont_set']}/{e['bank']}/{e['program']}"
            assert plan[key]["split"] == split
    # FluidR3Mono's saw lead copies FluidR3's; FluidR3's bright piano is its grand piano.
    assert plan["fluidr3mono/0/81"]["near_duplicate_of"] == "fluidr3/0/81"
    assert plan["fluidr3mono/0/81"]["split"] == plan["fluidr3/0/81"]["split"]
    assert plan["fluidr3/0/1"]["cluster"] == "fluidr3/0/0"
    assert plan["fluidr3/0/1"]["split"] == plan["fluidr3/0/0"]["split"]
    # No cluster spans two splits: the test split shares nothing with train or valid.
    clusters = {}
    for r in plan.values():
        if r["kept"]:
            assert clusters.setdefault(r["cluster"], r["split"]) == r["split"]
    # ...and the plan (hence every split) does not depend on how it is reached.
    assert plan["opl3/0/43"]["split"] == I.split_of_key("opl3:43")
    assert meta["near_duplicates"]["copies"] >= 2


@needs_sets
def test_build_json_records_each_set_licence_and_counts(tiny):
    _, meta = tiny
    assert meta["kind"] == "multi"
    by = {s["tag"]: s for s in meta["sets"]}
    assert by["fluidr3"]["licence"] == "MIT" and by["opl3"]["licence"] == "CC-BY-SA-4.0"
    assert by["opl3"]["package"] == "opl3-soundfont" and by["opl3"]["file"] == "OPL-3_FM_128M.sf2"
    assert by["opl3"]["info"]["INAM"] == "OPL-3 FM 128M"
    per_set = meta["counts"]["per_set"]
    assert sum(sum(c["notes_per_split"].values()) for c in per_set.values()) == meta["counts"]["notes_kept"]
    assert sum(c["instruments_with_notes"] for c in per_set.values()) == sum(
        meta["counts"]["instruments_per_split"].values())
    assert meta["level_scales"] == LEVELS


@needs_sets
def test_reader_gives_programs_and_unique_instruments(tiny):
    out, _ = tiny
    for split in build.SPLITS:
        if not read_examples(out, split):
            continue
        data = load_split(out, split, workers=1, progress=False)
        assert np.array_equal(data["program"], data["instrument"] % 128)
        assert set(data["program"]) <= set(PROGRAMS)


@needs_sets
def test_resume_renders_only_what_is_missing_and_identically(tiny):
    out, _ = tiny
    kwargs = dict(programs=PROGRAMS, pitches=PITCHES, velocities=VELOCITIES, workers=1, keep_duplicates=True,
                  level_scales=LEVELS, plan_programs=PROGRAMS, progress=False)
    again = multi.build_multi_dataset([FLUIDR3, OPL3, MONO], out, **kwargs)
    assert again["timing_s"]["groups_rendered_this_run"] == 0
    journal = out / "work" / "notes.jsonl"
    lines = journal.read_text().splitlines()
    last = json.loads(lines[-1])
    kept = [n["note_str"] for n in last["notes"] if "dropped" not in n]
    assert kept
    before = {n: (out / last["split"] / "audio" / f"{n}.wav").read_bytes() for n in kept}
    for n in kept:
        os.remove(out / last["split"] / "audio" / f"{n}.wav")
    journal.write_text("\n".join(lines[:-1]) + "\n")  # as if cut off before this group finished
    third = multi.build_multi_dataset([FLUIDR3, OPL3, MONO], out, **kwargs)
    assert third["timing_s"]["groups_rendered_this_run"] == 1
    for n in kept:
        assert (out / last["split"] / "audio" / f"{n}.wav").read_bytes() == before[n]
    assert third["counts"] == again["counts"]
    # Another list of sets cannot resume this directory.
    with pytest.raises(ValueError, match="other sets"):
        multi.build_multi_dataset([FLUIDR3, OPL3], out, **kwargs)


@needs_sets
def test_copies_are_left_out_by_default(tmp_path, tiny):
    out, _ = tiny
    os.makedirs(tmp_path / "work")
    for f in (out / "work").glob("probe-*.npz"):  # reuse the probes
        (tmp_path / "work" / f.name).write_bytes(f.read_bytes())
    meta = multi.build_multi_dataset([FLUIDR3, OPL3, MONO], tmp_path, programs=[81], pitches=PITCHES,
                                     velocities=VELOCITIES, workers=1, level_scales=LEVELS,
                                     plan_programs=PROGRAMS, progress=False)
    names = {e["instrument_str"] for entries in _examples(tmp_path).values() for e in entries.values()}
    assert names == {"fluidr3_081_lead_2_sawtooth", "opl3_081_lead_2_sawtooth"}
    assert meta["counts"]["per_set"]["fluidr3mono"]["copies_left_out"] >= 1
    assert meta["timing_s"]["groups_rendered_this_run"] == 2


@needs_sets
def test_level_scale_is_the_single_soundfont_calibration_of_the_gm_programs(tmp_path):
    from synth.data import render

    meta = multi.build_multi_dataset([FLUIDR3], tmp_path, programs=[30], pitches=[60], velocities=[100],
                                     workers=1, plan_programs=[0, 30], progress=False)
    with render.SoundFontSynth(FLUIDR3.path) as s:
        presets = [p for p in s.melodic_presets() if p.program in (0, 30)]
    assert meta["level_scales"]["fluidr3"] == render.calibrate_level(FLUIDR3.path, presets)[0]
    # The GM note is the single-SoundFont build's, bit for bit.
    single = build.build_dataset(FLUIDR3.path, tmp_path / "single", programs=[30], pitches=[60], velocities=[100],
                                 level_scale=meta["level_scales"]["fluidr3"], progress=False)
    assert single["counts"]["notes_kept"] == 1
    split = build.split_of(30)
    a = (tmp_path / "single" / split / "audio" / "fluidr3_gm_030_distortion_guitar-060-100.wav").read_bytes()
    mine = next(tmp_path.glob("*/audio/fluidr3_030_distortion_guitar-060-100.wav")).read_bytes()
    assert a == mine
