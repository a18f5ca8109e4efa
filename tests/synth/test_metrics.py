"""The evaluation's metric functions (synth/metrics.py) on signals built to have known answers."""

from __future__ import annotations

import numpy as np
import pytest

from synth import metrics

SR = 16000


def tone(f0_hz: float, amplitudes, seconds: float = 4.0, sample_rate: int = SR, decay_s: float | None = 1.5,
         noise: float = 1e-3, seed: int = 0) -> np.ndarray:
    """A harmonic tone: harmonic k (1-based) at amplitude amplitudes[k-1] with a random phase, an
    exponential decay, a little white noise; harmonics at or above 0.48 sample_rate left out."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    x = np.zeros_like(t)
    for k, a in enumerate(amplitudes, start=1):
        if a and k * f0_hz < 0.48 * sample_rate:
            x += a * np.sin(2 * np.pi * k * f0_hz * t + rng.uniform(0, 2 * np.pi))
    if decay_s:
        x *= np.exp(-t / decay_s)
    x *= 0.3 / np.max(np.abs(x))
    return x + noise * rng.standard_normal(len(t))


def sawtooth_amps(n: int = 60):
    return [1.0 / k for k in range(1, n + 1)]


# ---------------------------------------------------------------------------------------------
# Pitch.


@pytest.mark.parametrize("pitch", [24, 31, 36, 48, 60, 69, 72, 84, 96])
@pytest.mark.parametrize("detune_cents", [-23.0, 0.0, 11.5])
def test_pitch_of_harmonic_tones_within_one_cent(pitch, detune_cents):
    f0 = metrics.midi_to_hz(pitch) * 2 ** (detune_cents / 1200)
    audio = tone(f0, sawtooth_amps(), seed=pitch)
    err = metrics.pitch_error_cents(audio, SR, pitch)
    assert abs(err - detune_cents) < 1.0, (pitch, detune_cents, err)


@pytest.mark.parametrize("sample_rate", [16000, 44100, 48000])
def test_pitch_at_sound_card_rates(sample_rate):
    f0 = metrics.midi_to_hz(57) * 2 ** (7.0 / 1200)
    audio = tone(f0, sawtooth_amps(), sample_rate=sample_rate, seconds=3.0)
    assert abs(metrics.pitch_error_cents(audio, sample_rate, 57) - 7.0) < 1.0


@pytest.mark.parametrize("pitch", [30, 62, 90])
def test_pitch_in_noise(pitch):
    # White noise 20 dB below the tone's peak (DDSP notes carry a filtered-noise part).
    f0 = metrics.midi_to_hz(pitch) * 2 ** (-8.0 / 1200)
    audio = tone(f0, sawtooth_amps(), noise=0.03, seed=1)
    assert abs(metrics.pitch_error_cents(audio, SR, pitch) + 8.0) < 1.0


def test_pitch_ignores_a_strong_inharmonic_peak():
    # A resonance 4 semitones below the note, 7 dB under its fundamental (as an untrained
    # reverb or noise filter can make) must not drag the estimate.
    f0 = metrics.midi_to_hz(73)
    t = np.arange(4 * SR) / SR
    audio = tone(f0, sawtooth_amps()) + 0.45 * 0.3 * np.sin(2 * np.pi * f0 * 2 ** (-4 / 12) * t) * np.exp(-t / 1.5)
    assert abs(metrics.pitch_error_cents(audio, SR, 73)) < 1.0


def test_pitch_of_pure_sine_and_missing_fundamental():
    f0 = metrics.midi_to_hz(40)
    for noise in (0.0, 1e-3):  # without noise the other harmonics' windows hold only the floor
        assert abs(metrics.pitch_error_cents(tone(f0, [1.0], noise=noise), SR, 40)) < 1.0
    # Harmonics 2..12 only: the pitch heard (and measured) is still f0.
    missing = tone(f0, [0.0] + [1.0 / k for k in range(2, 13)])
    assert abs(metrics.pitch_error_cents(missing, SR, 40)) < 1.0


def test_pitch_detects_octave_and_semitone_errors():
    f0 = metrics.midi_to_hz(50)
    # Only even harmonics of f0: that is a tone an octave above; a measurement seeded at the
    # requested pitch must not hide the error.
    even_only = tone(f0, [1.0 / k if k % 2 == 0 else 0.0 for k in range(1, 40)])
    assert abs(metrics.pitch_error_cents(even_only, SR, 50) - 1200.0) < 1.0
    low = tone(metrics.midi_to_hz(49), sawtooth_amps())
    assert abs(metrics.pitch_error_cents(low, SR, 50) + 100.0) < 1.0


@pytest.mark.parametrize("depth_cents", [10.0, 30.0, 50.0])
def test_pitch_of_decaying_note_with_vibrato_is_its_centre(depth_cents):
    # 5 Hz vibrato around a tone 4 cents sharp (the generator's f0 may swing +-50 cents): the
    # measurement gives the centre, not a sideband.
    t = np.arange(4 * SR) / SR
    f0 = metrics.midi_to_hz(65) * 2 ** ((4.0 + depth_cents * np.sin(2 * np.pi * 5 * t)) / 1200)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    audio = sum(np.sin(k * phase) / k for k in range(1, 12)) * np.exp(-t / 0.8) * 0.2
    assert abs(metrics.pitch_error_cents(audio, SR, 65) - 4.0) < 1.0


def test_pitch_of_silence_is_nan_and_fails_the_summary():
    assert np.isnan(metrics.pitch_error_cents(np.zeros(4 * SR), SR, 60))
    summary = metrics.pitch_summary([0.5, -1.0, float("nan")])
    assert summary["n_unmeasurable"] == 1 and summary["pass"] is False


def test_pitch_summary_limits():
    ok = metrics.pitch_summary([1.0, -2.0, 4.0, -24.0])
    assert ok["pass"] and ok["median_abs_cents"] == pytest.approx(3.0) and ok["max_abs_cents"] == 24.0
    assert not metrics.pitch_summary([1.0, -2.0, 26.0])["pass"]  # one note over 25 cents
    assert not metrics.pitch_summary([6.0, -6.0, 5.5])["pass"]  # median over 5 cents
    assert metrics.pitch_summary([6.0, -6.0, 5.5], max_median=10.0)["pass"]


# ---------------------------------------------------------------------------------------------
# Loudness and velocity.


def test_held_loudness_of_a_1khz_sine():
    t = np.arange(4 * SR) / SR
    for amp in (0.5, 0.25, 0.05):
        x = amp * np.sin(2 * np.pi * 1000 * t)
        assert metrics.held_loudness_db(x, SR) == pytest.approx(20 * np.log10(amp), abs=0.3)


def test_held_loudness_ignores_the_release():
    t = np.arange(4 * SR) / SR
    held = 0.1 * np.sin(2 * np.pi * 1000 * t) * (t < 3.0)
    with_tail = held + 0.5 * np.sin(2 * np.pi * 1000 * t) * (t >= 3.1)
    assert metrics.held_loudness_db(with_tail, SR) == pytest.approx(metrics.held_loudness_db(held, SR), abs=0.05)


def test_rising_steps_counts_strict_increases():
    levels = [[-30, -25, -20, -15, -10],  # 4 rising
              [-30, -20, -25, -15, -10],  # 3 rising (one falls)
              [-30, -30, -20, np.nan, -10]]  # 1 rising (a tie, NaN never rises)
    assert metrics.rising_steps(levels) == (8, 12)
    assert metrics.rising_steps([1.0, 2.0, 3.0]) == (2, 2)


# ---------------------------------------------------------------------------------------------
# Spectral distances and smoothness.


def test_log_mel_full_scale_sine_reads_about_zero_db():
    t = np.arange(SR) / SR
    spec = metrics.log_mel_db(np.sin(2 * np.pi * 1000 * t), SR)
    assert -3.0 < spec[5:-5].max() < 1.0
    assert metrics.log_mel_db(np.zeros(SR), SR).max() == metrics.LOG_MEL_FLOOR_DB


def test_spectral_distance_of_a_gain_change():
    x = tone(220.0, sawtooth_amps(), decay_s=None, noise=0.0)
    a, b = metrics.log_mel_db(x, SR), metrics.log_mel_db(2.0 * x, SR)
    assert metrics.spectral_distance_db(a, a) == 0.0
    assert metrics.spectral_distance_db(a, b) == pytest.approx(6.02, abs=0.1)


def _brightness_sweep(tilts) -> list[np.ndarray]:
    """Notes whose harmonic amplitudes fall as k**-tilt, one per tilt value (same noise)."""
    return [metrics.log_mel_db(tone(220.0, [k ** -tilt for k in range(1, 36)], seconds=1.0, seed=0), SR)
            for tilt in tilts]


def test_smoothness_passes_a_smooth_sweep_even_when_it_saturates():
    x = np.linspace(-7, 7, 29)
    # The generator squashes the latent by 3 tanh(x / 3): steps shrink ~15x towards the ends.
    feats = _brightness_sweep(1.5 + 0.25 * 3 * np.tanh(x / 3))
    s = metrics.smoothness(metrics.step_distances(feats))
    assert s["max_over_median"] > 3.0  # the plain statistic is fooled by the saturation
    assert s["local_jump_ratio"] < 2.0


def test_smoothness_detects_a_jump():
    tilts = np.linspace(1.0, 2.0, 29)
    tilts[15:] += 0.5  # a discontinuity between steps 14 and 15
    s = metrics.smoothness(metrics.step_distances(_brightness_sweep(tilts)))
    assert s["local_jump_ratio"] > 5.0
    assert s["argmax_jump"] == 14


def test_smoothness_on_numbers():
    assert metrics.smoothness([1.0, 1.0, 1.0, 1.0])["local_jump_ratio"] == pytest.approx(1.0)
    s = metrics.smoothness([1.0, 1.0, 10.0, 1.0, 1.0])
    assert s["local_jump_ratio"] == pytest.approx(10.0) and s["argmax_jump"] == 2
    assert s["max_over_median"] == pytest.approx(10.0)
    # Tiny steps next to tinier ones are not jumps (floor at 5 % of the largest step).
    assert metrics.smoothness([1.0, 0.8, 0.001, 0.0001, 0.001])["local_jump_ratio"] < 2.0
    with pytest.raises(ValueError):
        metrics.smoothness([1.0, 2.0])


# ---------------------------------------------------------------------------------------------
# Realism.


def test_envelope_error_floors_both_curves():
    a = np.array([-10.0, -20.0, -90.0, -120.0])
    b = np.array([-12.0, -20.0, -100.0, -80.0])
    # |2| + 0 + |-80 - -80| + |-80 - -80|, mean over 4 frames.
    assert metrics.envelope_error_db(a, b) == pytest.approx(0.5)
    assert metrics.envelope_error_db(a, a + 3.0) == pytest.approx((3 + 3 + 0 + 0) / 4)


def test_spectral_centroid_of_sines():
    t = np.arange(4 * SR) / SR
    assert metrics.spectral_centroid_hz(np.sin(2 * np.pi * 1000 * t), SR) == pytest.approx(1000.0, rel=1e-3)
    pair = np.sin(2 * np.pi * 500 * t) + np.sin(2 * np.pi * 1500 * t)
    assert metrics.spectral_centroid_hz(pair, SR) == pytest.approx(1000.0, rel=1e-3)
    assert np.isnan(metrics.spectral_centroid_hz(np.zeros(4 * SR), SR))
    assert metrics.centroid_error_octaves(2000.0, 500.0) == pytest.approx(2.0)


def test_naive_baseline_means_and_fallbacks():
    pitch = [60, 60, 60, 62, 64]
    velocity = [100, 100, 50, 100, 25]
    env = np.array([[-10.0, -20.0], [-30.0, -40.0], [-50.0, -60.0], [-5.0, -95.0], [-1.0, -1.0]])
    centroids = [400.0, 1600.0, 300.0, 900.0, 5000.0]
    b = metrics.NaiveBaseline.fit(pitch, velocity, env, centroids)
    e, c = b.predict(60, 100)
    np.testing.assert_allclose(e, [-20.0, -30.0])
    assert c == pytest.approx(800.0)  # geometric mean: the mean of log2 centroids
    e, c = b.predict(62, 100)
    np.testing.assert_allclose(e, [-5.0, -80.0])  # floored before averaging
    # No (61, 50): the nearest pitch at that velocity; no velocity 75 at all: nearest pitch, then velocity.
    assert b.predict(61, 50)[1] == pytest.approx(300.0)
    assert b.predict(63, 75)[1] == pytest.approx(900.0)
    assert b.predict(70, 127)[1] == pytest.approx(5000.0)


# ---------------------------------------------------------------------------------------------
# Tags.


def test_moved_up_counts_ties_and_undefined_pairs():
    r = metrics.moved_up([0.0, 1.0, 2.0, 3.0, np.nan], [1.0, 0.5, 2.0, 4.0, 1.0])
    assert (r["n_pairs"], r["n_defined"], r["n_undefined"], r["n_up"], r["n_tied"]) == (5, 4, 1, 2, 1)
    assert r["fraction"] == pytest.approx(0.5)
    assert r["mean_delta"] == pytest.approx((1.0 - 0.5 + 0.0 + 1.0) / 4)
    assert np.isnan(metrics.moved_up([np.nan], [1.0])["fraction"])


def test_moved_up_sets_pairs_at_the_ceiling_apart():
    # A score capped at 1.0: a note already there cannot rise, with or without the tag.
    r = metrics.moved_up([1.0, 1.0, 0.5, 0.2, 0.0], [1.0, 1.0, 1.0, 0.2, 0.0], ceiling=1.0)
    assert (r["n_saturated"], r["n_defined"], r["n_up"], r["n_tied"]) == (2, 3, 1, 2)
    assert r["fraction"] == pytest.approx(1 / 3) and r["fraction_all"] == pytest.approx(1 / 5)


def test_release_time_follows_the_level_after_note_off():
    from synth.metrics import release_time_s

    sr = 16000
    t = np.arange(4 * sr) / sr
    tone = np.sin(2 * np.pi * 440 * t)
    fall = np.where(t < 3.0, 1.0, 10 ** (-60.0 * (t - 3.0) / 20.0))  # 60 dB/s after note-off
    assert release_time_s(tone * fall, sr) == pytest.approx(0.5, abs=0.02)
    assert release_time_s(tone, sr) == float("inf")  # never falls
    slow = np.where(t < 3.0, 1.0, 10 ** (-20.0 * (t - 3.0) / 20.0))  # 20 dB in the last second
    assert release_time_s(tone * slow, sr) == float("inf")
    with pytest.raises(ValueError, match="off_s"):
        release_time_s(tone, sr, off_s=5.0)
