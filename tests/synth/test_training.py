"""Smoke training of every stage on a tiny data set built with the real builder (marked slow).

Each stage trains a few steps on one fixed batch (`--fixed-batch`), so its loss must go down;
each writes train.log, loss.png, a resumable state/ and its model in the checkpoints/ layout;
`--resume` continues where a stopped run ended; the four stages chain into a checkpoint set the
generator loads and renders from.
"""

from __future__ import annotations

import json
import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from synth.cli import main

SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    if not os.path.exists(SOUNDFONT):
        pytest.fail(f"{SOUNDFONT} missing: run scripts/setup.sh (package fluid-soundfont-gm)")
    out = tmp_path_factory.mktemp("tiny") / "ds"
    # GM 1 (bright piano) -> train, GM 5 (electric piano 2) -> valid: the split is by program.
    rc = main(["dataset", "build", "--soundfont", SOUNDFONT, "--out", str(out), "--programs", "1,5",
               "--pitches", "48,60,67", "--velocities", "50,127", "--workers", "1", "--no-progress"])
    assert rc == 0
    return str(out)


def history(run_dir: str) -> list[dict]:
    with open(os.path.join(run_dir, "state", "state.json")) as f:
        return [v for _, v in json.load(f)["history"]["train"]]


def train(stage: str, data: str, out: str, *extra: str) -> None:
    rc = main(["train", stage, "--data", data, "--out", out, "--fixed-batch", "--no-progress",
               "--log-every", "5", "--validate-every", "1000", "--checkpoint-every", "1000", *extra])
    assert rc == 0


def assert_goes_down(run_dir: str, key: str, n: int = 3) -> None:
    values = [h[key] for h in history(run_dir)]
    assert all(np.isfinite(values)), values
    assert np.mean(values[-n:]) < np.mean(values[:n]), values


def assert_run_artifacts(run_dir: str) -> None:
    for name in ("train.log", "loss.png", os.path.join("state", "state.json"), os.path.join("state", "optimizer.npz")):
        assert os.path.getsize(os.path.join(run_dir, name)) > 0, name


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    models = root / "models"
    ae = str(root / "ae")
    train("autoencoder", tiny_data, ae, "--steps", "30", "--batch-size", "4", "--lr", "3e-3",
          "--export", str(models))
    zg = str(root / "zg")
    train("z_generator", tiny_data, zg, "--steps", "60", "--batch-size", "8", "--models", str(models),
          "--export", str(models))
    fl = str(root / "fl")
    train("f0_ld_generator", tiny_data, fl, "--steps", "60", "--batch-size", "8", "--models", str(models),
          "--export", str(models))
    e2e = str(root / "e2e")
    shutil.copytree(models, root / "before_e2e")
    # --programs as the recipe uses it (here it keeps both programs of the tiny set).
    train("end_to_end", tiny_data, e2e, "--steps", "20", "--batch-size", "4", "--lr", "1e-3",
          "--models", str(models), "--export", str(models), "--programs", "1,5", "--centroid-weight", "4",
          "--level-weight", "4", "--peak-weight", "4")
    return {"data": tiny_data, "root": root, "models": str(models), "ae": ae, "zg": zg, "fl": fl, "e2e": e2e}


def test_autoencoder_loss_goes_down(trained):
    assert_goes_down(trained["ae"], "spectral")
    assert_run_artifacts(trained["ae"])
    d = os.path.join(trained["models"], "ddsp_generator")
    for name in ("encoder.weights.h5", "decoder.weights.h5", "synth.npz", "config.json"):
        assert os.path.exists(os.path.join(d, name)), name
    with open(os.path.join(d, "config.json")) as f:
        conf = json.load(f)
    assert len(conf["stats"]["z_mean"]) == 16 and conf["training"]["steps"] == 30


def test_f0_ld_generator_writes_the_inference_settings(trained):
    """The shipped guidance settings come from the training command, not from a hand edit."""
    from synth.generator import Generator

    with open(os.path.join(trained["models"], "f0_ld_generator", "config.json")) as f:
        conf = json.load(f)
    assert conf["tag_guidance_z"] == 2.0 and conf["tag_guidance_loudness"] == 1.0
    assert conf["guided_tags"] == ["bright", "dark", "percussive", "fast_decay", "long_release"]
    assert "tag_guidance" not in conf
    gen = Generator(trained["models"])
    assert (gen.tag_guidance_z, gen.tag_guidance_loudness) == (2.0, 1.0)
    assert gen.guided_tags == conf["guided_tags"]


def test_guided_tags_option_names_the_allowed_tags(capsys):
    from synth.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["train", "f0_ld_generator", "--data", "x", "--out", "y", "--guided-tags", "bright,shiny"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--guided-tags" in err and "shiny" in err and "long_release" in err


def test_z_generator_loss_goes_down(trained):
    assert_goes_down(trained["zg"], "recon")
    assert_run_artifacts(trained["zg"])


def test_f0_ld_generator_loss_goes_down(trained):
    assert_goes_down(trained["fl"], "loudness")
    assert_run_artifacts(trained["fl"])


def test_end_to_end_loss_goes_down_and_changes_the_generators(trained):
    assert_goes_down(trained["e2e"], "spectral")
    before = trained["root"] / "before_e2e" / "f0_ld_generator" / "model.weights.h5"
    after = os.path.join(trained["models"], "f0_ld_generator", "model.weights.h5")
    assert open(before, "rb").read() != open(after, "rb").read()
    # Each shipped model directory carries the loss curves and logs of every stage that made it.
    for name in ("z_generator", "f0_ld_generator"):
        files = set(os.listdir(os.path.join(trained["models"], name)))
        assert {"loss.png", "training_log.txt", "loss_end_to_end.png", "training_log_end_to_end.txt"} <= files
        with open(os.path.join(trained["models"], name, "training_log_end_to_end.txt")) as f:
            assert "end_to_end: done at step 20" in f.read()
        with open(os.path.join(trained["models"], name, "config.json")) as f:
            conf = json.load(f)["end_to_end"]
            assert conf["level_weight"] == 4.0 and conf["peak_weight"] == 4.0
    assert {"loss.png", "training_log.txt"} <= set(os.listdir(os.path.join(trained["models"], "ddsp_generator")))


def test_end_to_end_level_term_is_the_level_difference_per_10_db():
    import tensorflow as tf

    from synth.training.stages import LEVEL_FLOOR_DB, _crop_level_error

    rng = np.random.default_rng(0)
    real = rng.standard_normal((3, 16000)).astype(np.float32)
    real[1, 8000:] *= 1e-5  # its second half 100 dB down: under the floor in both
    pred = 2.0 * real
    pred[2, 12000:] = 0.0  # the last stretch silent where the real one sounds
    err = _crop_level_error(tf.constant(real), tf.constant(pred)).numpy()
    assert err[0] == pytest.approx(0.602, abs=0.002)  # 2x = +6.02 dB in all four stretches
    assert err[1] == pytest.approx(0.301, abs=0.002)  # two stretches match at the floor
    assert err[2] == pytest.approx((3 * 0.602 + LEVEL_FLOOR_DB / 10.0) / 4, abs=0.01)
    assert _crop_level_error(tf.constant(real), tf.constant(real)).numpy() == pytest.approx([0, 0, 0], abs=1e-6)


def test_end_to_end_peak_term_is_the_peak_difference_per_10_db():
    import tensorflow as tf

    from synth.training.stages import PEAK_WINDOWS, _crop_level_error

    rng = np.random.default_rng(1)
    real = (0.1 * rng.standard_normal((2, 16000))).astype(np.float32)
    pred = real.copy()
    n = 16000 // PEAK_WINDOWS
    pred[0, 5] = 1.0  # one click in the first 125 ms: that stretch's peak up 20 log10(1 / its old peak)
    pred[1] *= 0.5  # everything 6.02 dB down
    err = _crop_level_error(tf.constant(real), tf.constant(pred), peak=True).numpy()
    click_db = 20 * np.log10(1.0 / np.max(np.abs(real[0, :n])))
    assert err[0] == pytest.approx(click_db / 10 / PEAK_WINDOWS, rel=1e-3)
    assert err[1] == pytest.approx(0.602, abs=0.002)
    # The level term barely sees the click (one sample in 2,000), the peak term does.
    level = _crop_level_error(tf.constant(real), tf.constant(pred)).numpy()
    assert level[0] < 0.1 * err[0]


def test_resume_continues_a_stopped_run(trained, tmp_path):
    out = str(tmp_path / "resume")
    train("f0_ld_generator", trained["data"], out, "--steps", "20", "--stop-at", "8", "--models", trained["models"])
    assert len(history(out)) == 8
    train("f0_ld_generator", trained["data"], out, "--steps", "20", "--resume", "--models", trained["models"])
    h = history(out)
    assert len(h) == 20
    with open(os.path.join(out, "train.log")) as f:
        assert "resumed at step 8" in f.read()
    with np.load(os.path.join(out, "state", "optimizer.npz")) as opt:
        assert int(opt["arr_0"]) == 20  # the optimizer's iteration counter carried over


def test_trained_set_renders(trained):
    from synth.generator import Generator
    from synth.params import NoteParams

    from synth.metrics import pitch_error_cents

    gen = Generator(trained["models"])
    audio = gen.render(NoteParams(pitch=60, velocity=127), 16000)
    assert audio.shape == (64000,) and np.all(np.isfinite(audio)) and np.abs(audio).max() <= 1.0
    # A note, not silence: audible, and at its pitch (the pitch holds by construction, cents <= 50).
    peak_db = 20 * np.log10(np.abs(audio).max() + 1e-12)
    print(f"\ntrained set: C4 at velocity 127 peaks at {peak_db:.1f} dBFS")
    assert peak_db > -60.0
    # Searched within a semitone: the networks of a few training steps make an arbitrary spectrum,
    # and the harmonic comb once settled on a fifth above (+708 cents; a full-suite run, the same
    # fixture passing alone 4 times of 4). What this checks is the f0 the audio carries; octave
    # errors are the shipped generator's tests' to catch.
    assert abs(pitch_error_cents(audio, 16000, 60, search_semitones=1.0)) <= 50.0


def test_programs_filter_keeps_only_those_instruments(tiny_data, tmp_path):
    from synth.training import data as D

    cache = str(tmp_path / "cache")
    full = D.load(tiny_data, "train", cache, progress=False)
    kept = D.load(tiny_data, "train", cache, progress=False, programs=[0, 1, 2])
    assert len(kept["pitch"]) == len(full["pitch"]) > 0
    np.testing.assert_array_equal(kept["audio"][3], full["audio"][3])
    # The whole split's feature cache serves every selection (one file).
    assert len(os.listdir(cache)) == 1
    with pytest.raises(ValueError, match="no notes of programs 2-4,9"):
        D.load(tiny_data, "train", cache, progress=False, programs=[2, 3, 4, 9])


def test_pitches_filter_keeps_only_those_pitches(tiny_data, tmp_path):
    from synth.training import data as D

    cache = str(tmp_path / "cache")
    full = D.load(tiny_data, "train", cache, progress=False)
    pitches = sorted(set(int(p) for p in full["pitch"]))
    assert len(pitches) >= 2
    kept = D.load(tiny_data, "train", cache, progress=False, pitches=pitches[:1])
    assert set(int(p) for p in kept["pitch"]) == {pitches[0]}
    rows = np.flatnonzero(np.asarray(full["pitch"]) == pitches[0])
    np.testing.assert_array_equal(kept["features"], full["features"][rows])
    np.testing.assert_array_equal(kept["audio"][-1], full["audio"][rows[-1]])
    programs = sorted(set(int(p) for p in full["program"]))
    both = D.load(tiny_data, "train", cache, progress=False, programs=programs[:1], pitches=pitches[:1])
    sel = (np.asarray(full["pitch"]) == pitches[0]) & (np.asarray(full["program"]) == programs[0])
    assert len(both["pitch"]) == int(sel.sum()) > 0
    with pytest.raises(ValueError, match="no notes of pitches 127"):
        D.load(tiny_data, "train", cache, progress=False, pitches=[127])


def test_programs_filter_subsets_every_per_note_array(tiny_data, tmp_path):
    from synth.training import data as D

    full = D.load(tiny_data, "train", str(tmp_path), progress=False)
    d = dict(full)
    rows = np.array([len(full["pitch"]) - 1, 1, 0])
    D._take(d, rows, len(full["pitch"]))
    for k in ("pitch", "velocity", "cond", "features", "loudness_db", "cents"):
        np.testing.assert_array_equal(d[k], np.asarray(full[k])[rows])
    np.testing.assert_array_equal(d["audio"][0], full["audio"][rows[0]])
    np.testing.assert_array_equal(d["audio"][:], np.asarray(full["audio"][rows]))
    np.testing.assert_array_equal(d["audio"][2, 100:200], full["audio"][0, 100:200])


def test_programs_filter_selects_by_gm_program_not_instrument_id(tiny_data, tmp_path, monkeypatch):
    """A multi-SoundFont data set gives each (set, bank, program) its own instrument id; --programs
    means GM programs, so it must read the examples' "program" field."""
    from synth.data import reader
    from synth.training import data as D

    real = reader.load_split

    def as_multi_set(*args, **kwargs):
        d = dict(real(*args, **kwargs))
        d["program"] = np.asarray(d["instrument"]).copy()
        d["instrument"] = np.asarray(d["instrument"]) + 1000  # ids no longer equal to programs
        return d

    monkeypatch.setattr(reader, "load_split", as_multi_set)
    programs = sorted(set(int(p) for p in real(tiny_data, "train", progress=False)["instrument"]))
    picked = D.load(tiny_data, "train", str(tmp_path), progress=False, programs=programs[:1])
    assert set(picked["program"]) == {programs[0]} and set(picked["instrument"]) == {programs[0] + 1000}
