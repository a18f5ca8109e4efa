"""Each quality analyzer on notes built to have its quality and on notes built to lack it.

The notes are NSynth shaped (16 kHz, note-off at 3 s, 4 s long). Tags use the thresholds shipped
with the package (fitted on the FluidR3_GM build), i.e. exactly what evaluation of generated
notes will use.
"""

from __future__ import annotations

import numpy as np
import pytest

from synth.data import qualities as Q
from synth.data.features import midi_to_hz
from synth.params import QUALITIES

SR = 16000
N = 64000
T = np.arange(N) / SR
OFF = 3.0


def sustain_env(attack_s=0.01, release_tau_s=0.03):
    """Linear attack, flat hold to note-off, exponential release."""
    rise = np.minimum(1.0, T / attack_s)
    rel = np.where(T < OFF, 1.0, np.exp(-(T - OFF) / release_tau_s))
    return rise * rel


def harmonic_tone(pitch=60, amps=(1.0,), detune_cents=0.0, phase_seed=None):
    f0 = midi_to_hz(pitch) * 2 ** (detune_cents / 1200)
    rng = np.random.default_rng(phase_seed) if phase_seed is not None else None
    out = np.zeros(N)
    for k, a in enumerate(amps, start=1):
        if k * f0 >= SR / 2 or a == 0:
            continue
        ph = rng.uniform(0, 2 * np.pi) if rng is not None else 0.0
        out += a * np.sin(2 * np.pi * k * f0 * T + ph)
    return out / np.max(np.abs(out))


def note(signal, env, level=0.3):
    return level * signal * env


def saw_amps(pitch=60, power=1.0):
    k_max = int((SR / 2) / midi_to_hz(pitch))
    return tuple(1.0 / k**power for k in range(1, k_max + 1))


PLAIN = note(harmonic_tone(60, saw_amps(60, 2.0)), sustain_env())


def noise(seed, n=N):
    return np.random.default_rng(seed).standard_normal(n)


def exp_decay(tau_s):
    return np.minimum(1.0, T / 0.005) * np.exp(-T / tau_s)


def with_reverb(dry, rt60_s, wet_db, seed=1):
    """Dry note plus a synthetic room: exponentially decaying noise impulse response."""
    n_ir = int(2.0 * SR)
    t = np.arange(n_ir) / SR
    ir = noise(seed, n_ir) * np.exp(-6.91 * t / rt60_s)
    wet = np.convolve(dry, ir)[:N]
    wet *= np.sqrt(np.sum(dry**2) / np.sum(wet**2)) * 10 ** (wet_db / 20)
    return dry + wet


# (quality, note that has it, note that lacks it, pitch)
CASES = {
    "bright": (
        note(harmonic_tone(60, (1.0,) * 30), sustain_env()),
        note(harmonic_tone(60, (1.0, 0.05)), sustain_env()),
    ),
    "dark": (
        note(harmonic_tone(60, (1.0, 0.05)), sustain_env()),
        note(harmonic_tone(60, (1.0,) * 30), sustain_env()),
    ),
    "distortion": (
        note(np.tanh(8 * harmonic_tone(60, (1.0, 0.3))), sustain_env()),
        note(harmonic_tone(60, saw_amps(60, 1.0)), sustain_env()),  # harmonic-rich but clean
    ),
    "fast_decay": (
        0.3 * harmonic_tone(60, saw_amps(60, 2.0)) * exp_decay(0.12),
        PLAIN,
    ),
    "long_release": (
        note(harmonic_tone(60, saw_amps(60, 2.0)), sustain_env(release_tau_s=0.5)),
        PLAIN,
    ),
    "multiphonic": (
        note(harmonic_tone(60, saw_amps(60, 1.5)) + harmonic_tone(60 + 5.5, saw_amps(66, 1.5)), sustain_env()),
        note(harmonic_tone(60, saw_amps(60, 1.5)), sustain_env()),
    ),
    "nonlinear_env": (
        # decays 20 dB over the first second, then swells back up
        0.3 * harmonic_tone(60, saw_amps(60, 2.0))
        * sustain_env()
        * np.where(T < 1.0, 10 ** (-20 * T / 20), 10 ** (-20 * np.maximum(0, 2.0 - T) / 20)),
        0.3 * harmonic_tone(60, saw_amps(60, 2.0)) * sustain_env() * 10 ** (-10 * T / 20),
    ),
    "percussive": (
        note(harmonic_tone(60, saw_amps(60, 2.0)), sustain_env(attack_s=0.05))
        + 0.6 * noise(2) * np.exp(-T / 0.01),
        note(harmonic_tone(60, saw_amps(60, 2.0)), sustain_env(attack_s=0.05)),
    ),
    "reverb": (
        with_reverb(note(harmonic_tone(60, saw_amps(60, 2.0)), sustain_env(release_tau_s=0.02)), rt60_s=2.0, wet_db=-6.0),
        note(harmonic_tone(60, saw_amps(60, 2.0)), sustain_env(release_tau_s=0.02)),
    ),
    "tempo_sync": (
        # 4 Hz on/off gating, 20 dB deep: a tempo-synced tremolo
        note(harmonic_tone(60, saw_amps(60, 2.0)), sustain_env())
        * np.where(np.sin(2 * np.pi * 4 * T) > 0, 1.0, 0.1),
        PLAIN,
    ),
}


def test_cases_cover_every_quality():
    assert tuple(CASES) == QUALITIES


@pytest.mark.parametrize("quality", QUALITIES)
def test_analyzer_tags_a_note_built_to_have_the_quality(quality):
    has, _ = CASES[quality]
    result = Q.ANALYZERS[quality](has, SR, 60)
    assert np.isfinite(result.score)
    assert result.tag is True, f"{quality}: score {result.score:.3f} not tagged"


@pytest.mark.parametrize("quality", QUALITIES)
def test_analyzer_does_not_tag_a_note_built_to_lack_the_quality(quality):
    _, lacks = CASES[quality]
    result = Q.ANALYZERS[quality](lacks, SR, 60)
    assert result.tag is False, f"{quality}: score {result.score:.3f} tagged"


@pytest.mark.parametrize("quality", QUALITIES)
def test_score_orders_having_above_lacking(quality):
    has, lacks = CASES[quality]
    s_has = Q.SCORERS[quality](Q.NoteAnalysis(has, SR, 60))
    s_lacks = Q.SCORERS[quality](Q.NoteAnalysis(lacks, SR, 60))
    assert s_has > s_lacks


def test_clean_tones_do_not_read_as_distortion_at_any_pitch():
    th = Q.load_thresholds()
    for pitch in (24, 48, 72, 96):
        for amps in ((1.0,), saw_amps(pitch, 1.0)):
            x = note(harmonic_tone(pitch, amps, detune_cents=13), sustain_env())
            assert not Q.distortion(x, SR, pitch, th).tag, pitch
        clipped = note(np.tanh(8 * harmonic_tone(pitch, (1.0,), detune_cents=13)), sustain_env())
        assert Q.distortion(clipped, SR, pitch, th).tag, pitch


def test_brightness_is_relative_to_the_fundamental():
    # The same 'four equal harmonics' timbre has the same score at any pitch.
    scores = [
        Q.SCORERS["bright"](Q.NoteAnalysis(note(harmonic_tone(p, (1, 1, 1, 1)), sustain_env()), SR, p))
        for p in (36, 60, 84)
    ]
    assert np.ptp(scores) < 0.1


def test_silence_scores_are_finite_or_nan_and_never_tagged():
    silent = np.zeros(N)
    result = Q.analyze(silent, SR, 60)
    assert set(result) == set(QUALITIES)
    for q, r in result.items():
        assert not r.tag, q


def test_fit_thresholds_uses_percentile_and_floor_and_pitch_trend():
    rng = np.random.default_rng(0)
    pitches = rng.integers(21, 109, 2000).astype(float)
    scores = {q: rng.standard_normal(2000) for q in QUALITIES}
    scores["bright"] = scores["bright"] + 0.05 * pitches  # a pitch trend to remove
    scores["fast_decay"] = rng.uniform(0, 3, 2000)
    th = Q.fit_thresholds(scores, pitches)
    # bright: residuals ~ N(0,1) after the trend, 80th percentile ~ 0.84
    assert th.table["bright"]["pitch_trend"] is not None
    assert th.table["bright"]["threshold"] == pytest.approx(0.84, abs=0.1)
    assert th.table["bright"]["tagged_fraction"] == pytest.approx(0.2, abs=0.01)
    # fast_decay: no percentile, the floor is the threshold
    assert th.table["fast_decay"]["threshold"] == Q.RULES["fast_decay"]["floor"]
    # tempo_sync: the floor wins over a low percentile
    assert th.table["tempo_sync"]["threshold"] >= Q.RULES["tempo_sync"]["floor"]
    # NaN is never tagged
    assert th.tag("bright", float("nan"), 60) is False


def test_thresholds_round_trip_through_json(tmp_path):
    th = Q.load_thresholds()
    th.save(tmp_path / "q.json")
    again = Q.load_thresholds(tmp_path / "q.json")
    assert again.table == th.table
