"""The reader on the real NSynth json/wav layout (a hand-made miniature) and the f0 tracker."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from synth.data.features import midi_to_hz, track_f0, voiced_fraction
from synth.data.reader import N_FRAMES, load_split, read_examples

SR = 16000


def write_nsynth_split(root, split, notes):
    """NSynth's own format: examples.json is a dict keyed by note_str, 'tempo-synced' spelling."""
    (root / split / "audio").mkdir(parents=True)
    examples = {}
    for i, (name, pitch, velocity, source, quality_vec) in enumerate(notes):
        t = np.arange(64000) / SR
        audio = (velocity / 127) * 0.5 * np.sin(2 * np.pi * midi_to_hz(pitch) * t) * (t < 3.0)
        sf.write(root / split / "audio" / f"{name}.wav", audio, SR, subtype="PCM_16")
        names = ["bright", "dark", "distortion", "fast_decay", "long_release", "multiphonic",
                 "nonlinear_env", "percussive", "reverb", "tempo-synced"]
        examples[name] = {
            "note": i, "note_str": name, "pitch": pitch, "velocity": velocity, "sample_rate": 16000,
            "instrument": 7, "instrument_str": name.rsplit("-", 2)[0],
            "instrument_source": source, "instrument_source_str": ["acoustic", "electronic", "synthetic"][source],
            "instrument_family": 0, "instrument_family_str": "bass",
            "qualities": quality_vec, "qualities_str": [n for n, v in zip(names, quality_vec) if v],
        }
    (root / split / "examples.json").write_text(json.dumps(examples))


def test_reads_nsynth_layout_unchanged(tmp_path):
    notes = [
        ("bass_synthetic_033-050-100", 50, 100, 2, [0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
        ("bass_synthetic_033-062-025", 62, 25, 2, [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        ("bass_electronic_018-045-127", 45, 127, 1, [0, 1, 0, 0, 0, 0, 0, 1, 0, 0]),
    ]
    write_nsynth_split(tmp_path, "valid", notes)
    ex = read_examples(tmp_path, "valid")
    assert [e["note_str"] for e in ex] == sorted(n[0] for n in notes)
    data = load_split(tmp_path, "valid", progress=False)
    order = sorted(notes)
    assert data["pitch"].tolist() == [n[1] for n in order]
    assert data["velocity"].tolist() == [n[2] for n in order]
    assert data["source"].tolist() == [n[3] for n in order]
    np.testing.assert_array_equal(data["qualities"], np.array([n[4] for n in order], dtype=np.float32))
    assert data["f0_hz"].shape == (3, N_FRAMES)
    # sine notes: f0 on pitch while sounding, nominal (same value) in the silent last second
    for i, n in enumerate(order):
        cents = 1200 * np.log2(data["f0_hz"][i] / midi_to_hz(n[1]))
        assert np.max(np.abs(cents[10:740])) < 2.0
        assert np.all(data["f0_confidence"][i][760:] == 0)
    # the velocity ordering shows in loudness
    assert data["loudness_db"][1][100:700].mean() > data["loudness_db"][0][100:700].mean()


def test_cache_follows_the_notes_not_the_tags(tmp_path):
    write_nsynth_split(tmp_path, "test", [("x_acoustic_001-060-100", 60, 100, 0, [0] * 10)])
    first = load_split(tmp_path, "test", progress=False)["cache_path"]
    path = tmp_path / "test" / "examples.json"
    ex = json.loads(path.read_text())
    # re-tagging keeps the cache, and the new tags are read
    ex["x_acoustic_001-060-100"]["qualities"][0] = 1
    path.write_text(json.dumps(ex))
    second = load_split(tmp_path, "test", progress=False)
    assert second["cache_path"] == first
    assert second["qualities"][0, 0] == 1.0
    # a different pitch for the note invalidates it
    ex["x_acoustic_001-060-100"]["pitch"] = 61
    path.write_text(json.dumps(ex))
    third = load_split(tmp_path, "test", progress=False)
    assert third["cache_path"] != first
    assert not first.exists()  # the stale cache is removed


def test_missing_split_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="split 'train'"):
        load_split(tmp_path, "train")


@pytest.mark.parametrize("pitch", [21, 33, 45, 60, 72, 84, 96, 108])
@pytest.mark.parametrize("detune_cents", [-40.0, 0.0, 25.0])
def test_f0_tracker_accuracy(pitch, detune_cents):
    t = np.arange(64000) / SR
    f = midi_to_hz(pitch) * 2 ** (detune_cents / 1200)
    # a harmonic tone with a weak fundamental, like many low instrument notes
    x = sum(a * np.sin(2 * np.pi * k * f * t) for k, a in [(1, 0.3), (2, 1.0), (3, 0.6), (4, 0.3)] if k * f < SR / 2)
    x = 0.3 * x * (t < 3.0)
    f0, conf = track_f0(x, SR, pitch)
    assert f0.shape == conf.shape == (1000,)
    sounding = slice(5, 745)
    assert np.mean(conf[sounding] >= 0.5) > 0.95
    cents = 1200 * np.log2(f0[sounding] / f)
    assert np.median(np.abs(cents)) < 3.0
    # the silent tail falls back to the nominal pitch
    np.testing.assert_allclose(f0[780:], midi_to_hz(pitch), rtol=1e-6)


def test_voiced_fraction_separates_tones_from_noise():
    t = np.arange(64000) / SR
    tone = 0.3 * np.sin(2 * np.pi * midi_to_hz(60) * t)
    assert voiced_fraction(tone, SR, 60) > 0.9
    assert voiced_fraction(0.3 * np.random.default_rng(1).standard_normal(64000), SR, 60) < 0.1
    assert voiced_fraction(np.zeros(64000), SR, 60) == 0.0
