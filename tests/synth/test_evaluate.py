"""`sound-generator evaluate` (synth/evaluate.py) and the model-card writer (synth/figures.py).

The metric functions themselves are tested in test_metrics.py; here: the sampling helpers, the
CLI, and a smoke run of the whole evaluation on a tiny data set made by the real builder.
The smoke run uses the shipped checkpoints/ when they exist, else untrained networks built by
`synth.models` from their default config (the evaluation must run either way; the lead makes
sure checkpoints exist before landing, and then this test runs on them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from synth import evaluate, metrics
from synth.params import LATENT_DIM, QUALITIES, SOURCES, NoteParams

REPO = Path(__file__).resolve().parents[2]
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
SHIPPED = REPO / "checkpoints"


def fake_split(pitch, velocity, source=None, qualities=None):
    n = len(pitch)
    return {
        "pitch": np.asarray(pitch, np.int32),
        "velocity": np.asarray(velocity, np.int32),
        "source": np.asarray(source if source is not None else [0] * n, np.int32),
        "qualities": np.asarray(qualities if qualities is not None else np.zeros((n, 10)), np.float32),
    }


def test_note_of_maps_a_data_set_row():
    q = np.zeros((2, 10))
    q[1, QUALITIES.index("bright")] = q[1, QUALITIES.index("reverb")] = 1
    data = fake_split([60, 72], [50, 127], [0, 2], q)
    p = evaluate.note_of(data, 1)
    assert p == NoteParams(pitch=72, velocity=127, source=SOURCES[2], qualities=("bright", "reverb"))
    lat = [0.5] * LATENT_DIM
    p = evaluate.note_of(data, 1, latent=lat, velocity=25, qualities=["dark"])
    assert (p.velocity, p.qualities, p.latent_sample) == (25, ("dark",), tuple(lat))


def test_baseline_subset_resolves_keys_as_the_baseline_does():
    rng = np.random.default_rng(0)
    # Training notes: (60, 100) x 40, (62, 50) x 3, (70, 25) x 2.
    pitch = [60] * 40 + [62] * 3 + [70] * 2
    velocity = [100] * 40 + [50] * 3 + [25] * 2
    train = fake_split(pitch, velocity)
    sub = evaluate._baseline_subset(train, {(60, 100), (61, 50), (90, 127)}, rng)
    keys = [(pitch[i], velocity[i]) for i in sub]
    assert keys.count((60, 100)) == evaluate.BASELINE_NOTES_PER_KEY  # capped
    assert keys.count((62, 50)) == 3  # nearest pitch at velocity 50
    assert keys.count((70, 25)) == 2  # no velocity 127: nearest pitch at any velocity
    # Fitting on the subset predicts from the same keys as fitting on all training notes.
    env = np.zeros((len(pitch), 4))
    cen = np.arange(1, len(pitch) + 1, dtype=float)
    full = metrics.NaiveBaseline.fit(pitch, velocity, env, cen)
    part = metrics.NaiveBaseline.fit(np.array(pitch)[sub], np.array(velocity)[sub], env[sub], cen[sub])
    for key in [(61, 50), (90, 127), (62, 50)]:
        assert full._key(*key) == part._key(*key)


def test_sample_and_clean():
    rng = np.random.default_rng(1)
    np.testing.assert_array_equal(evaluate._sample(5, 0, rng), np.arange(5))
    np.testing.assert_array_equal(evaluate._sample(5, 9, rng), np.arange(5))
    s = evaluate._sample(100, 10, rng)
    assert len(set(s.tolist())) == 10 and np.all(np.diff(s) > 0)
    cleaned = evaluate._clean({"a": float("nan"), "b": [np.float32(1.5), np.int64(3), np.bool_(True)]})
    assert cleaned == {"a": None, "b": [1.5, 3, True]}
    json.dumps(cleaned, allow_nan=False)


def test_cli_help_and_errors_without_tensorflow():
    code = (
        "import sys\n"
        "from synth.cli import build_parser\n"
        "p = build_parser(load='evaluate')\n"
        "assert 'tensorflow' not in sys.modules, 'evaluate --help must not load TensorFlow'\n"
        "args = p.parse_args(['evaluate', '--data', 'D', '--only', 'pitch,latent', '--latent-dims', '0,15'])\n"
        "assert args.only == ('pitch', 'latent') and args.latent_dims == (0, 15)\n"
        "assert (args.reach_draws, args.reach_notes) == (16, 48)\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
    for bad in (["--only", "pitch,nonsense"], ["--latent-dims", "16"], ["--pitch-range", "96-24"],
                ["--reach-draws", "0"]):
        r = subprocess.run([sys.executable, "-m", "synth.cli", "evaluate", "--data", "D", *bad],
                           cwd=REPO, capture_output=True, text=True)
        assert r.returncode == 2 and bad[0] in r.stderr
    r = subprocess.run([sys.executable, "-m", "synth.cli", "evaluate"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and "--data DIR is required" in r.stderr


def test_model_card_from_a_report(tmp_path):
    from synth import figures

    report = {
        "model_version": "abc123", "checkpoints": str(tmp_path / "ck"), "data": str(tmp_path / "data"),
        "split": "test", "n_split_notes": 10, "n_split_instruments": 2, "n_train_instruments": 5,
        "split_instruments_unseen_in_train": True, "seconds": 12.0, "evaluated_utc": "2026-01-01 00:00:00",
        "hardware": {"cpu": "X", "cpu_count": 2, "gpus": 0, "tensorflow": "2.x"},
        "targets": {"pitch": {"n_notes": 73, "median_abs_cents": 1.25, "max_abs_cents": 30.5, "n_over_limit": 1,
                              "n_unmeasurable": 0, "pass": False,
                              "limits": {"median_abs_cents": evaluate.PITCH_MEDIAN_CENTS,
                                         "max_abs_cents": evaluate.PITCH_MAX_CENTS}},
                    "realism": {"skipped": "no train split for the baseline", "pass": None}},
        "pass": False,
    }
    png = tmp_path / "figs" / "sources.png"
    png.parent.mkdir()
    png.write_bytes(b"")
    card = tmp_path / "card" / "MODEL_CARD.md"
    figures.write_model_card(report, str(card), {"sources": str(png)})
    text = card.read_text()
    assert "median |error| 1.25 cents, max 30.50, 1 over 25" in text
    assert "| median <= 5, none over 25 | **FAIL** |" in text and "skipped" in text
    assert "](../figs/sources.png)" in text  # relative to the card
    assert "[RECIPE.md](RECIPE.md)" in text
    assert "abc123" in text
    # The terminal table says the same, from the same rows; the limits come from the constants.
    from synth.report import format_table

    table = format_table(report)
    assert "1 over 25, 0 unmeasurable  [target: median <= 5, none over 25]" in table
    assert "FAIL" in table and "overall: FAIL" in table


def test_report_modules_import_no_circle():
    """synth.report formats, synth.figures draws: neither imports synth.evaluate."""
    code = ("import sys, synth.figures, synth.report; "
            "assert 'synth.evaluate' not in sys.modules, 'figures/report import evaluate'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


# ---------------------------------------------------------------------------------------------
# Smoke run on a tiny data set.


def build_untrained_checkpoints(directory: Path) -> None:
    """Checkpoints in the shipped layout with freshly initialised networks (see module doc)."""
    from synth import models as M

    cfg = M.ModelConfig.from_core()
    ddsp, zdir, fdir = (directory / d for d in M.STAGE_DIRS)
    M.save_weights(M.build_encoder(cfg), str(ddsp / "encoder.weights.h5"))
    M.save_weights(M.build_decoder(cfg), str(ddsp / "decoder.weights.h5"))
    M.save_synth(M.make_synth(cfg), str(ddsp / "synth.npz"))
    M.write_config(str(ddsp), {"model": cfg.to_dict(), "stats": asdict(M.Stats())})
    M.save_weights(M.build_z_posterior(cfg), str(zdir / "z_posterior.weights.h5"))
    M.save_weights(M.build_z_decoder(cfg), str(zdir / "z_decoder.weights.h5"))
    M.write_config(str(zdir), {"model": cfg.to_dict()})
    M.save_weights(M.build_f0_ld(cfg), str(fdir / "model.weights.h5"))
    M.write_config(str(fdir), {"model": cfg.to_dict(), "ld_min": -100.0, "ld_max": -10.0})


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    if not SOUNDFONT.is_file():
        pytest.skip(f"no SoundFont at {SOUNDFONT} (apt-get install fluid-soundfont-gm)")
    out = tmp_path_factory.mktemp("eval") / "data"
    # Programs 0 and 40 land in test, 1 and 41 in train (the split is by GM program).
    subprocess.run([sys.executable, "-m", "synth.cli", "dataset", "build", "--soundfont", str(SOUNDFONT),
                    "--out", str(out), "--programs", "0,1,40,41", "--pitches", "58-62",
                    "--velocities", "50,100", "--no-progress"], cwd=REPO, check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> Path:
    if (SHIPPED / "ddsp_generator" / "config.json").is_file():
        return SHIPPED
    directory = tmp_path_factory.mktemp("untrained") / "checkpoints"
    build_untrained_checkpoints(directory)
    return directory


@pytest.mark.slow
def test_evaluate_smoke_run(tiny_data, checkpoints, tmp_path, capsys):
    from synth.cli import main

    out = tmp_path / "out"
    card = tmp_path / "card" / "MODEL_CARD.md"
    argv = ["evaluate", "--data", str(tiny_data), "--checkpoints", str(checkpoints), "--json", "--out", str(out),
            "--pitch-range", "36-84", "--pitch-step", "12", "--pitch-repeats", "1", "--velocity-combos", "3",
            "--tag-pairs", "2", "--latent-dims", "0,5", "--latent-steps", "9", "--max-notes", "6",
            "--recon-notes", "4", "--knob-points", "6", "--reach-notes", "3", "--reach-draws", "4",
            "--model-card", str(card)]
    assert main(argv) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    report = json.loads(last)

    assert report["split"] == "test" and report["split_instruments_unseen_in_train"] is True
    assert report["n_split_notes"] == 20 and report["n_split_instruments"] == 2
    assert report["n_train_instruments"] == 2
    t = report["targets"]
    assert set(t) == set(evaluate.TARGETS)
    for name, target in t.items():
        assert isinstance(target["pass"], bool), name
    assert t["pitch"]["n_notes"] == 5  # 36, 48, 60, 72, 84
    assert t["velocity"]["n_combos"] == 3 and t["velocity"]["n_steps"] == 12
    assert set(t["tags"]["per_tag"]) == set(QUALITIES)
    for q, r in t["tags"]["per_tag"].items():
        if q in evaluate.SCORE_CEILINGS:  # more pairs drawn until 2 are defined, at most 8 x 2
            assert r["n_pairs"] % 2 == 0 and 2 <= r["n_pairs"] <= evaluate.MAX_DRAW_FACTOR * 2, r
            assert r["n_defined"] >= 2 or r["n_pairs"] == evaluate.MAX_DRAW_FACTOR * 2, r
        else:
            assert r["n_pairs"] == 2, (q, r)
    assert set(t["latent"]["per_dim"]) == {"0", "5"} and t["latent"]["n_steps"] == 9
    assert t["latent"]["all_finite"] is True and 0.0 < t["latent"]["peak_max"] <= 1.0
    assert t["realism"]["n_notes"] == 6
    k = t["knobs"]
    assert k["n_notes"] == 6 and k["n_non_finite"] == 0 and k["n_clipped"] == 0
    assert k["pass"] == (k["n_inaudible"] == 0 and k["fraction_on_pitch"] >= evaluate.KNOB_PITCH_FRACTION)
    assert t["level"]["n_pitches"] == 49 and -60.0 < t["level"]["median_peak_dbfs"] <= 0.0
    dy = t["dynamics"]
    assert dy["n_cells"] == 2  # pitch 60 (of 58-62) x velocities 50 and 100, two test programs each
    assert dy["pass"] == (dy["n_within"] == dy["n_cells"])
    r = t["releases"]
    assert r["n_timbres"] == 72 and 0.0 <= r["fraction_ending"] <= 1.0
    assert r["pass"] == (r["fraction_ending"] >= 0.9 and r["long_release"]["fraction_pass"] >= 0.8)
    for name in ("envelope_error", "centroid_error"):
        assert t["realism"][name]["baseline_mean"] >= 0.0
        assert t["realism"][name]["generated_mean"] >= 0.0
    assert t["realism"]["n_notes_without_random"] == 0  # two test programs at every pitch and velocity
    assert t["realism"]["log_mel_error"]["random_mean"] > 0.0
    rc = t["reach"]
    assert rc["n_notes"] == 3 and rc["n_instruments"] == 2 and rc["n_draws"] == 4 and rc["mean_others_used"] == 1
    assert rc["too_few_draws"] is True and rc["pass"] is False
    r = t["reconstruction"]
    assert r["n_test_notes"] == 4 and r["n_train_notes"] == 4
    assert r["test_loss_of_silence_mean"] > 0
    assert r["test_loss_mean"] > 0 and r["test_over_train"] == pytest.approx(r["test_loss_mean"] / r["train_loss_mean"])
    assert report["pass"] == all(x["pass"] for x in t.values())

    saved = json.loads((out / "eval.json").read_text())
    assert len(saved["details"]["pitch"]["notes"]) == 5
    assert len(saved["details"]["knobs"]["notes"]) == 6
    assert len(saved["details"]["releases"]["notes"]) == 72
    cells = saved["details"]["dynamics"]["cells"]
    assert [(c["pitch"], c["velocity"], c["n_data"], c["n_generated"]) for c in cells] == [(60, 50, 2, 2), (60, 100, 2, 2)]
    for c in cells:
        assert c["difference_db"] == pytest.approx(c["generated_peak_dbfs"] - c["data_peak_dbfs"], abs=1e-3)
        assert -80.0 < c["data_peak_dbfs"] < 0.0
    assert len(saved["details"]["latent"]["sweeps"]["0"]["step_distances_db"]) == 8
    assert len(saved["details"]["realism"]["notes"]["envelope_error_db"]) == 6
    assert len(saved["details"]["reach"]["mel_mean_db"]["generated"]) == 3
    for name in ("sources", "qualities", "pitches", "velocities", "latent_sweep", "envelopes", "timbre_map"):
        png = card.parent / "figures" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    text = card.read_text()
    assert report["model_version"] in text and "![latent_sweep](figures/latent_sweep.png)" in text


@pytest.mark.slow
def test_evaluate_table_without_train_split(tiny_data, checkpoints, tmp_path, capsys):
    """Only a test split (as NSynth's test download alone): baselines are skipped, not failed."""
    from synth.cli import main

    data = tmp_path / "data"
    data.mkdir()
    os.symlink(tiny_data / "test", data / "test")
    assert main(["evaluate", "--data", str(data), "--checkpoints", str(checkpoints), "--only",
                 "realism,reconstruction", "--max-notes", "2", "--recon-notes", "2"]) == 0
    text = capsys.readouterr().out
    assert "realism" in text and "no train split" in text and "skip" in text


def test_evaluate_knobs_finds_silent_settings(capsys):
    """The knobs target against a stand-in generator that falls silent at the cube's corners."""

    class CornerSilence:
        output_gain_db = 0.0

        def render_batch(self, notes, sample_rate):
            t = np.arange(int(4 * sample_rate)) / sample_rate
            out = []
            for p in notes:
                tone = 0.3 * np.sin(2 * np.pi * 440.0 * 2.0 ** ((p.pitch - 69) / 12.0) * t)
                corner = all(abs(v) == 7.0 for v in p.latent_sample)
                out.append((tone * (1e-5 if corner else 1.0)).astype(np.float32))
            return out

    summary, details = evaluate.eval_knobs(CornerSilence(), np.random.default_rng(0), 10)
    assert summary["n_notes"] == 10 and summary["n_inaudible"] == 5 and summary["n_inaudible_corners"] == 5
    assert summary["n_dropped_vs_latent0"] == 5 and summary["pass"] is False
    assert summary["fraction_on_pitch"] == 1.0  # quiet is not off pitch: the pitch is measured on every note
    assert len(details["notes"]) == 10


def test_evaluate_data_free_targets_need_no_data(capsys):
    from synth.cli import main

    assert main(["evaluate", "--only", "knobs,realism"]) == 2
    assert "--data DIR is required" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# realism's random-instrument baseline and the reach target, on stand-in data and generators.


def tone(pitch: int, velocity: int, kind: int) -> np.ndarray:
    """A 4 s test note: kind 0 a sine, 1 with two overtones, 2 with eight and a faster decay."""
    from synth.units import SAMPLE_RATE

    t = np.arange(4 * SAMPLE_RATE) / SAMPLE_RATE
    f = 440.0 * 2.0 ** ((pitch - 69) / 12.0)
    harmonics = {0: [1.0], 1: [1.0, 0.5, 0.3], 2: [1.0 / k for k in range(1, 9)]}[kind]
    x = sum(a * np.sin(2 * np.pi * f * k * t) for k, a in enumerate(harmonics, 1))
    env = np.exp(-t * (0.5 + 2.0 * (kind == 2))) * np.where(t < 3.0, 1.0, np.exp(-(t - 3.0) * 10.0))
    return (0.2 * velocity / 127 * env * x / len(harmonics)).astype(np.float32)


def fake_audio_split(rows: list[tuple[int, int, int, int]]) -> dict:
    """A split of (instrument, pitch, velocity, kind) notes with audio and loudness curves."""
    from synth.fast_render import compute_loudness_db
    from synth.units import SAMPLE_RATE

    data = fake_split([r[1] for r in rows], [r[2] for r in rows])
    data["instrument"] = np.array([r[0] for r in rows], np.int32)
    data["note_str"] = np.array([f"inst{r[0]}-{r[1]:03d}-{r[2]:03d}" for r in rows])
    data["audio"] = np.stack([tone(r[1], r[2], r[3]) for r in rows])
    data["loudness_db"] = np.stack([compute_loudness_db(a, SAMPLE_RATE, frame_rate=250) for a in data["audio"]])
    return data


class ToneGenerator:
    """Renders `tone`: of kind `kind`, or chosen by latent[0] (-7..7 in three bands) when kind is None,
    plus white noise of amplitude `noise`; at `gain_db` (the output calibration, which the
    evaluation takes off)."""

    def __init__(self, kind: int | None = 0, gain_db: float = 6.0, noise: float = 0.0):
        self.kind, self.output_gain_db, self.noise = kind, gain_db, noise

    def render_batch(self, notes, sample_rate):
        out, rng = [], np.random.default_rng(0)
        for p in notes:
            kind = self.kind if self.kind is not None else int(np.digitize(p.latent_sample[0], [-7 / 3, 7 / 3]))
            a = tone(p.pitch, p.velocity, kind) + self.noise * rng.uniform(-1, 1, 4 * sample_rate)
            out.append((a * 10.0 ** (self.output_gain_db / 20.0)).astype(np.float32))
        return out


# Test instruments 1 (kind 0), 2 (kind 1), 3 (kind 2) at pitches 60 and 64; instrument 1 alone at 72.
TEST_ROWS = [(i, p, 100, i - 1) for i in (1, 2, 3) for p in (60, 64)] + [(1, 72, 100, 0)]


def test_other_instruments_never_pick_the_same_instrument():
    rng = np.random.default_rng(3)
    n = 300
    data = fake_split(rng.integers(60, 63, n), rng.choice([50, 100], n))
    data["instrument"] = rng.integers(0, 12, n).astype(np.int32)  # several notes per instrument and key
    groups = evaluate.key_groups(data)
    for i in rng.integers(0, n, 100):
        same_key = (data["pitch"] == data["pitch"][i]) & (data["velocity"] == data["velocity"][i])
        expected = set(data["instrument"][same_key].tolist()) - {int(data["instrument"][i])}
        for k in (1, 4, 50):
            chosen, available = evaluate.other_instruments(data, groups, int(i), k, rng)
            insts = [int(data["instrument"][j]) for j in chosen]
            assert available == len(expected) and len(chosen) == min(k, len(expected))
            assert len(set(insts)) == len(insts) and set(insts) <= expected
            assert all(same_key[j] for j in chosen)


def test_spread_notes_one_per_instrument_first():
    rng = np.random.default_rng(0)
    data = fake_split([60, 60, 62, 62, 60, 62, 60, 70], [100] * 8)
    data["instrument"] = np.array([1, 1, 1, 2, 2, 3, 4, 1], np.int32)  # the note at 70 has no other instrument
    groups = evaluate.key_groups(data)
    for _ in range(20):
        four = evaluate.spread_notes(data, groups, 4, rng)
        assert sorted(data["instrument"][four].tolist()) == [1, 2, 3, 4]
        every = evaluate.spread_notes(data, groups, 20, rng)
        assert sorted(every) == [0, 1, 2, 3, 4, 5, 6]


def test_realism_random_instrument_baseline():
    test = fake_audio_split(TEST_ROWS)
    train = fake_audio_split([(9, p, 100, 1) for p in (60, 64, 72)])
    summary, details = evaluate.eval_realism(ToneGenerator(kind=0), test, train, np.random.default_rng(0), 0)
    notes = details["notes"]
    assert summary["n_notes"] == 7 and summary["n_notes_without_random"] == 1
    for name, rnd in zip(notes["note_str"], notes["random_note_str"]):
        if name == "inst1-072-100":
            assert rnd is None
        else:  # another instrument, the same pitch and velocity
            assert rnd.split("-")[0] != name.split("-")[0] and rnd.split("-")[1:] == name.split("-")[1:]
    # The generator plays instrument 1 exactly once its output gain is off.
    for k, name in enumerate(notes["note_str"]):
        if name.startswith("inst1-"):
            assert notes["log_mel_error_db"][k] < 0.01 and notes["envelope_error_db"][k] < 0.01
        else:
            assert notes["log_mel_error_db"][k] > 0.5
    for name in ("envelope_error", "centroid_error", "log_mel_error"):
        r = summary[name]
        assert r["pass"] == (r["beats_random"] and r.get("beats_baseline", True))
        assert r["random_mean"] > 0.0 and 0.0 <= r["fraction_notes_beating_random"] <= 1.0
    assert "baseline_mean" in summary["envelope_error"] and "baseline_mean" not in summary["log_mel_error"]
    assert summary["pass"] == all(summary[n]["pass"] for n in evaluate.REALISM_MUST_BEAT)
    curves = details["curves"]
    # One curve per instrument: the first note met of each.
    assert len(curves[0]["real"]) == 1000 // evaluate.REALISM_CURVE_STEP
    insts = [c["note_str"].split("-")[0] for c in curves]
    assert len(insts) == len(set(insts)) == len({n.split("-")[0] for n in notes["note_str"]})


def run_reach(gen, draws):
    test = fake_audio_split(TEST_ROWS)
    return evaluate.eval_reach(gen, test, np.random.default_rng(1), 6, draws)


def test_reach_passes_when_a_draw_matches_and_fails_otherwise():
    # Knobs that reach every instrument's timbre: some draw matches each note exactly.
    s, d = run_reach(ToneGenerator(kind=None), 16)
    assert s["n_notes"] == 6 and s["n_instruments"] == 3 and s["n_draws"] == 16
    assert s["best_generated_mean_db"] < 0.01 < s["nearest_real_mean_db"]
    assert s["pass"] is True and s["fraction_generated_at_least_as_close"] == 1.0
    assert d["notes"]["n_others_available"] == [2] * 6 and s["n_notes_with_fewer_others"] == 6
    assert "inst1-072-100" not in d["notes"]["note_str"]  # no other instrument there
    mel = d["mel_mean_db"]
    assert len(mel["real"]) == 6 and len(mel["generated"][0]) == 16 and len(mel["real"][0]) == 64
    # A generator that hisses whatever the knobs: the other instruments are nearer.
    s, _ = run_reach(ToneGenerator(kind=None, noise=0.01), 16)
    assert s["best_generated_mean_db"] > s["nearest_real_mean_db"] and s["pass"] is False
    # Too few draws: measured, but no pass.
    s, _ = run_reach(ToneGenerator(kind=None), 4)
    assert s["too_few_draws"] is True and s["pass"] is False
    assert s["best_generated_mean_db"] <= s["nearest_real_mean_db"]


def test_new_measures_in_the_report_and_pictures(tmp_path):
    from synth import figures
    from synth.report import format_table

    test = fake_audio_split(TEST_ROWS)
    train = fake_audio_split([(9, p, 100, 1) for p in (60, 64, 72)])
    realism, realism_d = evaluate.eval_realism(ToneGenerator(kind=0), test, train, np.random.default_rng(0), 0)
    reach, reach_d = run_reach(ToneGenerator(kind=None), 4)
    report = evaluate._clean({"model_version": "abc", "data": "D", "split": "test", "n_split_notes": 7,
                              "n_split_instruments": 3, "split_instruments_unseen_in_train": True, "seconds": 1.0,
                              "targets": {"realism": realism, "reach": reach}, "pass": False})
    table = format_table(report)
    for label in ("loudness envelope error", "centroid error", "log-mel error"):
        assert f"realism: {label} (7 notes)" in table
    assert "[target: mean below random instrument and mean baseline]" in table
    assert "[target: mean below random instrument]" in table  # log-mel: no mean baseline
    assert "1 notes without one" in table
    assert "reach (6 notes of 3 instruments, 4 knob draws each)" in table
    assert f"only 4 draws, fewer than {evaluate.REACH_MIN_DRAWS}: no verdict" in table
    assert f">= {evaluate.REACH_MIN_DRAWS} draws" in table
    details = evaluate._clean({"realism": realism_d, "reach": reach_d})
    env = figures.draw_envelopes(details["realism"], str(tmp_path / "envelopes.png"))
    tm = figures.draw_timbre_map(details["reach"], str(tmp_path / "timbre_map.png"))
    for path in (env, tm):
        assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    card = tmp_path / "MODEL_CARD.md"
    figures.write_model_card({**report, "checkpoints": str(tmp_path / "ck")}, str(card), {"envelopes": env})
    text = card.read_text()
    assert "![envelopes](envelopes.png)" in text and figures.CAPTIONS["envelopes"] in text
    assert "**timbre map**: not drawn (no per-note details of the reach target" in text
    assert "| reach (6 notes" in text
