"""Build a tiny data set from a few FluidR3_GM presets, read it back, check layout and contents."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from synth.data import build, gm, render
from synth.data.reader import N_FRAMES, load_split, read_examples
from synth.params import QUALITIES, SOURCES

SF2 = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
pytestmark = pytest.mark.skipif(not SF2.is_file(), reason="needs Debian's fluid-soundfont-gm")

# 0 piano -> test (acoustic), 19 church organ -> train (acoustic; silent above pitch 97 in
# FluidR3), 25 steel guitar -> valid, 30 distortion guitar -> test (electronic),
# 81 saw lead -> train (synthetic).
PROGRAMS = [0, 19, 25, 30, 81]
PITCHES = [48, 60, 100]
VELOCITIES = [25, 127]
LEVEL = 0.4  # fixed, so the test skips the all-presets calibration
NSYNTH_FIELDS = {
    "note_str", "pitch", "velocity", "instrument", "instrument_str", "instrument_source",
    "instrument_source_str", "instrument_family", "instrument_family_str", "qualities",
    "qualities_str", "sample_rate",
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    meta = build.build_dataset(SF2, out, programs=PROGRAMS, pitches=PITCHES, velocities=VELOCITIES,
                               workers=2, level_scale=LEVEL, progress=False)
    return out, meta


def all_examples(out):
    return {s: json.loads((out / s / "examples.json").read_text()) for s in build.SPLITS}


def test_layout_and_nsynth_fields(tiny):
    out, _ = tiny
    ex = all_examples(out)
    assert sum(len(v) for v in ex.values()) > 0
    for split, entries in ex.items():
        assert isinstance(entries, dict)
        for name, e in entries.items():
            assert NSYNTH_FIELDS <= set(e)
            assert e["note_str"] == name == f"{e['instrument_str']}-{e['pitch']:03d}-{e['velocity']:03d}"
            assert e["sample_rate"] == 16000
            assert len(e["qualities"]) == 10 and set(e["qualities"]) <= {0, 1}
            names = [q.replace("tempo-synced", "tempo_sync") for q in e["qualities_str"]]
            assert names == [q for q, v in zip(QUALITIES, e["qualities"]) if v]
            assert e["instrument_source_str"] == SOURCES[e["instrument_source"]]
            assert e["instrument_family_str"] == gm.FAMILIES[e["instrument_family"]]
            assert (out / split / "audio" / f"{name}.wav").is_file()


def test_every_wav_is_16k_mono_64000_samples_and_not_clipped(tiny):
    out, _ = tiny
    wavs = sorted(out.glob("*/audio/*.wav"))
    assert len(wavs) == sum(len(v) for v in all_examples(out).values())
    for w in wavs:
        audio, sr = sf.read(w, dtype="float32")
        info = sf.info(w)
        assert sr == 16000 and audio.ndim == 1 and len(audio) == 64000
        assert info.subtype == "PCM_16"
        assert np.max(np.abs(audio)) < 0.999
        assert 20 * np.log10(np.max(np.abs(audio))) > build.SILENT_DBFS


def test_splits_are_disjoint_by_instrument_and_follow_the_rule(tiny):
    out, _ = tiny
    ex = all_examples(out)
    seen = {}
    for split, entries in ex.items():
        for e in entries.values():
            assert build.split_of(e["instrument"]) == split
            assert seen.setdefault(e["instrument_str"], split) == split
    assert {s for s in seen.values()} == {"train", "valid", "test"}


def test_source_and_family_come_from_the_gm_table(tiny):
    out, _ = tiny
    ex = all_examples(out)
    got = {e["instrument"]: (e["instrument_source_str"], e["instrument_family_str"])
           for entries in ex.values() for e in entries.values()}
    assert got[0] == ("acoustic", "keyboard")
    assert got[30] == ("electronic", "guitar")
    assert got[81] == ("synthetic", "synth_lead")
    for prog, (source, family) in got.items():
        assert (source, family) == (gm.gm_program(prog).source, gm.gm_program(prog).family)


def test_silent_note_is_dropped(tiny):
    out, meta = tiny
    # FluidR3's church organ has no sample above pitch 97: those notes render silence.
    journal = [json.loads(l) for l in (out / "work" / "notes.jsonl").read_text().splitlines()]
    organ_high = next(r for r in journal if r["program"] == 19 and r["pitch"] == 100)
    assert {n["dropped"] for n in organ_high["notes"]} == {"silent"}
    name = build.note_str(build.instrument_str(SF2, 19), 100, 127)
    assert not (out / "train" / "audio" / f"{name}.wav").exists()
    assert name not in all_examples(out)["train"]
    assert meta["counts"]["notes_dropped"]["silent"] >= 2
    # A sounding note of the same preset is kept.
    assert build.note_str(build.instrument_str(SF2, 19), 60, 127) in all_examples(out)["train"]


def test_judge_drops_silence_nan_clipping_and_noise():
    t = np.arange(64000) / 16000
    tone = 0.3 * np.sin(2 * np.pi * 261.63 * t)
    assert build._judge(tone, 60)[0] is None
    assert build._judge(np.zeros(64000), 60)[0] == "silent"
    assert build._judge(tone * 1e-4, 60)[0] == "silent"
    assert build._judge(np.where(t < 1, np.nan, tone), 60)[0] == "nonfinite"
    assert build._judge(tone * 4, 60)[0] == "clipped"
    noise = 0.1 * np.random.default_rng(0).standard_normal(64000)  # peak about 0.45
    assert build._judge(noise, 60)[0] == "unpitched"
    # A clean tone a tritone away from the asked pitch does not sound that pitch.
    assert build._judge(tone, 66)[0] == "unpitched"


def test_thresholds_written_and_tags_follow_them(tiny):
    out, _ = tiny
    from synth.data.qualities import load_thresholds

    th = load_thresholds(out / "qualities.json")
    for entries in all_examples(out).values():
        for e in entries.values():
            scores = {q: (float("nan") if v is None else v) for q, v in e["quality_scores"].items()}
            assert [int(th.tag(q, scores[q], e["pitch"])) for q in QUALITIES] == e["qualities"]


def test_resume_skips_done_groups_and_rerenders_identically(tiny, tmp_path):
    out, _ = tiny
    again = build.build_dataset(SF2, out, programs=PROGRAMS, pitches=PITCHES, velocities=VELOCITIES,
                                workers=1, progress=False)
    assert again["timing_s"]["groups_rendered_this_run"] == 0
    assert again["level_scale"] == LEVEL
    # Forget one group: only it is rendered again, and its files come out bit-identical.
    journal = out / "work" / "notes.jsonl"
    lines = journal.read_text().splitlines()
    last = json.loads(lines[-1])
    kept = [n["note_str"] for n in last["notes"] if "dropped" not in n]
    assert kept
    split = build.split_of(last["program"])
    before = {n: (out / split / "audio" / f"{n}.wav").read_bytes() for n in kept}
    for n in kept:
        os.remove(out / split / "audio" / f"{n}.wav")
    journal.write_text("\n".join(lines[:-1]) + "\n")
    third = build.build_dataset(SF2, out, programs=PROGRAMS, pitches=PITCHES, velocities=VELOCITIES,
                                workers=1, progress=False)
    assert third["timing_s"]["groups_rendered_this_run"] == 1
    for n in kept:
        assert (out / split / "audio" / f"{n}.wav").read_bytes() == before[n]


def test_groups_of_an_older_scorer_are_rescored_not_rerendered(tiny, tmp_path):
    """A journal written by an older quality scorer: the next build rescores those groups from
    their files (`build.rescore_stale`), renders nothing, and rewrites the journal whole."""
    out, _ = tiny
    journal = out / "work" / "notes.jsonl"
    recs = [json.loads(line) for line in journal.read_text().splitlines()]
    recs[0]["scorer_version"] = build.SCORER_VERSION - 1
    journal.write_text("".join(json.dumps(r) + "\n" for r in recs))
    again = build.build_dataset(SF2, out, programs=PROGRAMS, pitches=PITCHES, velocities=VELOCITIES,
                                workers=1, progress=False)
    assert again["timing_s"]["groups_rendered_this_run"] == 0
    after = [json.loads(line) for line in journal.read_text().splitlines()]
    assert len(after) == len(recs) and all(r["scorer_version"] == build.SCORER_VERSION for r in after)
    assert after[0]["notes"] == [{k: v for k, v in n.items()} for n in recs[0]["notes"]]


def test_rendering_is_deterministic_and_borrowing_the_soundfont_changes_nothing():
    a = render.render_pitch(SF2, 0, 81, 60, [25, 127])
    b = render.render_pitch(SF2, 0, 81, 60, [25, 127])
    assert all(np.array_equal(a[v], b[v]) for v in a)
    with render.SoundFontSynth(SF2) as own:
        first = own.render_note(0, 81, 60, 25)
    assert np.array_equal(first, a[25])


def test_melodic_presets_exclude_drum_kits_and_velocity_changes_level():
    with render.SoundFontSynth(SF2) as s:
        presets = s.melodic_presets()
        assert s.preset_name(gm.PERCUSSION_BANK, 0) is not None  # the kit exists in the file...
    assert all(p.bank == 0 for p in presets)  # ...but is never listed
    assert len(presets) == 128
    notes = render.render_pitch(SF2, 0, 0, 60, [25, 127])
    rms = {v: np.sqrt(np.mean(notes[v][:16000] ** 2)) for v in notes}
    assert 20 * np.log10(rms[127] / rms[25]) > 6.0


def test_calibration_leaves_headroom():
    with render.SoundFontSynth(SF2) as s:
        presets = [p for p in s.melodic_presets() if p.program in (0, 30)]
    scale, peak = render.calibrate_level(SF2, presets)
    assert scale * peak == pytest.approx(render.CALIBRATION_PEAK)


def test_unknown_program_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="--programs"):
        build.build_dataset(SF2, tmp_path, programs=[0, 999], pitches=[60], velocities=[100],
                            level_scale=LEVEL, progress=False)


def test_reader_reads_the_tiny_build_and_caches_features(tiny, monkeypatch):
    out, _ = tiny
    data = load_split(out, "test", workers=1, progress=False)
    n = len(read_examples(out, "test"))
    assert data["audio"].shape == (n, 64000)
    assert data["audio"][0].dtype == np.float32
    for key in ("f0_hz", "f0_confidence", "loudness_db"):
        assert data[key].shape == (n, N_FRAMES) and data[key].dtype == np.float32
        assert np.all(np.isfinite(data[key]))
    assert data["qualities"].shape == (n, 10)
    assert set(np.unique(data["source"])) <= {0, 1, 2}
    assert set(data["instrument"]) == {0, 30}
    # f0 of a piano note sits on its pitch where voiced
    i = list(data["note_str"]).index(build.note_str(build.instrument_str(SF2, 0), 60, 127))
    voiced = data["f0_confidence"][i] >= 0.5
    assert voiced.mean() > 0.5
    cents = 1200 * np.log2(data["f0_hz"][i][voiced] / 261.6256)
    assert np.median(np.abs(cents)) < 20
    # louder velocity -> louder loudness curve
    j = list(data["note_str"]).index(build.note_str(build.instrument_str(SF2, 0), 60, 25))
    assert data["loudness_db"][i][:500].mean() > data["loudness_db"][j][:500].mean() + 6
    # audio round trip
    wav, _ = sf.read(out / "test" / "audio" / f"{data['note_str'][i]}.wav", dtype="float32")
    np.testing.assert_array_equal(data["audio"][i], wav)

    # A second load reads the cache: computing features again would fail.
    import synth.data.reader as reader

    def boom(*args, **kwargs):
        raise AssertionError("features recomputed")

    monkeypatch.setattr(reader, "_note_features", boom)
    again = load_split(out, "test", progress=False)
    np.testing.assert_array_equal(again["f0_hz"], data["f0_hz"])
    assert again["cache_path"] == data["cache_path"]


def test_groups_judged_by_an_older_unpitched_rule_are_redone():
    unpitched = {"notes": [{"velocity": 25, "dropped": "unpitched"}, {"velocity": 127, "scores": {}}]}
    silent_only = {"notes": [{"velocity": 25, "dropped": "silent"}]}
    assert build._stale_drops(unpitched)  # no version: written by rule 1
    assert build._stale_drops({**unpitched, "drop_rule_version": build.DROP_RULE_VERSION - 1})
    assert not build._stale_drops({**unpitched, "drop_rule_version": build.DROP_RULE_VERSION})
    assert not build._stale_drops(silent_only)  # silence does not depend on the rule
