"""synth.core against independent numpy/scipy references and physical properties."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import scipy.signal
import tensorflow as tf

from synth import core

RATES = (16000, 44100, 48000)


def measure_pitch_hz(audio: np.ndarray, sample_rate: int, near_hz: float) -> float:
    """Frequency of the strongest peak within 10% of `near_hz`: Hann window, 8x zero-padded FFT,
    parabolic interpolation of the log magnitude around the peak bin."""
    n_fft = 8 * len(audio)
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio)), n_fft))
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    band = np.flatnonzero((freqs > 0.9 * near_hz) & (freqs < 1.1 * near_hz))
    k = band[np.argmax(spectrum[band])]
    a, b, c = np.log(spectrum[k - 1 : k + 2])
    offset = 0.5 * (a - c) / (a - 2 * b + c)
    return (k + offset) * sample_rate / n_fft


def cents(f_hz: float, reference_hz: float) -> float:
    return 1200.0 * np.log2(f_hz / reference_hz)


def constant(value, n_frames: int, channels: int = 1) -> np.ndarray:
    return np.full((1, n_frames, channels), value, dtype=np.float32)


def decaying_distribution(n_frames: int, n_harmonics: int = core.N_HARMONICS) -> np.ndarray:
    k = np.arange(1, n_harmonics + 1, dtype=np.float32)
    dist = 1.0 / k
    return np.broadcast_to(dist / dist.sum(), (1, n_frames, n_harmonics)).copy()


def render_tone(f0_hz, n_frames, sample_rate, amplitude=0.5, distribution=None, max_frequency_hz=None):
    dist = decaying_distribution(n_frames) if distribution is None else distribution
    f0 = f0_hz if isinstance(f0_hz, np.ndarray) else constant(f0_hz, n_frames)
    n_samples = core.n_samples_for(n_frames, sample_rate)
    audio = core.harmonic_synthesis(f0, constant(amplitude, n_frames), dist, n_samples,
                                    sample_rate, max_frequency_hz)
    return audio.numpy()[0]


# ---------------------------------------------------------------------------------------------
# Conversions and scaling.


def test_midi_hz_conversions():
    np.testing.assert_allclose(core.midi_to_hz([69, 57, 81, 60]), [440.0, 220.0, 880.0, 261.6255653],
                               rtol=1e-9)
    midi = np.array([9.0, 60.5, 120.0])
    np.testing.assert_allclose(core.hz_to_midi(core.midi_to_hz(midi)), midi, rtol=1e-12)
    np.testing.assert_allclose(core.midi_to_hz_tf(midi).numpy(), core.midi_to_hz(midi), rtol=1e-5)
    np.testing.assert_allclose(core.hz_to_midi_tf(core.midi_to_hz(midi)).numpy(), midi, rtol=1e-5)


def test_exp_sigmoid_range_and_shape():
    x = np.linspace(-50, 50, 101).astype(np.float32)
    y = core.exp_sigmoid(x).numpy()
    assert np.all(np.diff(y) >= 0)
    assert y.min() >= 1e-7 and y.max() <= 2.0 + 1e-6
    np.testing.assert_allclose(y[50], 2.0 * 0.5 ** np.log(10.0) + 1e-7, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Upsampling.


@pytest.mark.parametrize("n_frames,n_samples", [(10, 640), (7, 1000), (37, 2371), (1, 50)])
def test_upsample_frames_is_linear_interpolation(n_frames, n_samples):
    rng = np.random.default_rng(0)
    frames = rng.normal(size=(2, n_frames, 3)).astype(np.float32)
    out = core.upsample_frames(frames, n_samples).numpy()
    assert out.shape == (2, n_samples, 3)
    # Independent reference: np.interp with frame i at sample i * n_samples / n_frames, held at the end.
    positions = np.arange(n_frames) * n_samples / n_frames
    for b in range(2):
        for c in range(3):
            expected = np.interp(np.arange(n_samples), positions, frames[b, :, c])
            np.testing.assert_allclose(out[b, :, c], expected, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Harmonic synthesis.


@pytest.mark.parametrize("sample_rate", RATES)
@pytest.mark.parametrize("f0_hz", [110.0, 261.63, 1234.5])
def test_harmonic_pitch_within_one_cent(sample_rate, f0_hz):
    audio = render_tone(f0_hz, 250, sample_rate)
    measured = measure_pitch_hz(audio, sample_rate, f0_hz)
    assert abs(cents(measured, f0_hz)) < 1.0
    # The fifth harmonic sits at exactly five times f0.
    fifth = measure_pitch_hz(audio, sample_rate, 5 * f0_hz)
    assert abs(cents(fifth, 5 * f0_hz)) < 1.0


@pytest.mark.parametrize("n_frames,n_samples,sample_rate",
                         [(37, 2371, 16000), (100, 17640, 44100), (3, 577, 48000)])
def test_harmonic_matches_closed_form_for_steady_tone(n_frames, n_samples, sample_rate):
    f0_hz, amplitude = 440.0, 0.8
    dist = np.zeros((1, n_frames, 8), np.float32)
    dist[..., [0, 2, 4]] = [0.5, 0.3, 0.2]
    audio = core.harmonic_synthesis(constant(f0_hz, n_frames), constant(amplitude, n_frames), dist,
                                    n_samples, sample_rate).numpy()[0]
    t = np.arange(n_samples) / sample_rate
    expected = amplitude * (0.5 * np.sin(2 * np.pi * f0_hz * t) + 0.3 * np.sin(2 * np.pi * 3 * f0_hz * t)
                            + 0.2 * np.sin(2 * np.pi * 5 * f0_hz * t))
    assert audio.shape == (n_samples,)
    np.testing.assert_allclose(audio, expected, atol=2e-5)


def test_no_energy_above_nyquist_steady():
    """f0 = 3 kHz with 64 harmonics at 16 kHz: only 3 and 6 kHz may sound, nothing aliased."""
    sample_rate, f0_hz = 16000, 3000.0
    dist = np.full((1, 250, 64), 1.0 / 64, np.float32)
    audio = render_tone(f0_hz, 250, sample_rate, distribution=dist)
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio)))) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1.0 / sample_rate)
    allowed = (np.abs(freqs - 3000) < 20) | (np.abs(freqs - 6000) < 20)
    assert spectrum[~allowed].sum() < 1e-9 * spectrum.sum()
    assert spectrum[allowed].sum() > 0


@pytest.mark.parametrize("sample_rate", (44100, 48000))
def test_no_energy_above_band_limit_during_glide(sample_rate):
    """A glide with 64 flat harmonics, band-limited to 8 kHz: nothing above it (beyond the
    modulation sidebands a few hundred Hz wide), also while harmonics cross the limit."""
    n_frames = 250
    f0 = np.geomspace(300.0, 1800.0, n_frames).astype(np.float32)[None, :, None]
    dist = np.full((1, n_frames, 64), 1.0 / 64, np.float32)
    audio = render_tone(f0, n_frames, sample_rate, distribution=dist, max_frequency_hz=8000.0)
    freqs, psd = scipy.signal.welch(audio, sample_rate, nperseg=2048)
    assert psd[freqs > 8500].sum() < 1e-6 * psd.sum()
    assert psd[(freqs > 6000) & (freqs < 8000)].sum() > 1e-3 * psd.sum()


def test_phase_continuity_with_jumping_f0():
    """f0 jumps every frame; the waveform may not: sample-to-sample steps stay within the bound
    of a continuous-phase sine (2 pi f / sr times the amplitude)."""
    rng = np.random.default_rng(1)
    n_frames, sample_rate = 333, 16000
    f0 = rng.uniform(200.0, 400.0, size=(1, n_frames, 1)).astype(np.float32)
    dist = np.zeros((1, n_frames, 4), np.float32)
    dist[..., 0] = 1.0
    audio = core.harmonic_synthesis(f0, constant(1.0, n_frames), dist, 21313, sample_rate).numpy()[0]
    bound = 2 * np.pi * 400.0 / sample_rate
    assert np.max(np.abs(np.diff(audio))) < 1.05 * bound


def test_silence_in_silence_out_and_finite():
    n_frames = 50
    silent = core.harmonic_synthesis(constant(440.0, n_frames), constant(0.0, n_frames),
                                     decaying_distribution(n_frames), 3200, 16000).numpy()
    assert np.all(silent == 0.0)
    noise = core.filtered_noise(np.zeros((1, n_frames, 65), np.float32), 3200, 16000).numpy()
    assert np.all(noise == 0.0)
    # Extreme but legal controls: f0 of 0 Hz and far above Nyquist, huge amplitudes.
    f0 = np.where(np.arange(n_frames) % 2, 0.0, 30000.0).astype(np.float32)[None, :, None]
    loud = core.harmonic_synthesis(f0, constant(1e6, n_frames), decaying_distribution(n_frames), 3200, 16000)
    assert np.all(np.isfinite(loud.numpy()))


# ---------------------------------------------------------------------------------------------
# Filtered noise.


@pytest.mark.parametrize("sample_rate", RATES)
def test_white_noise_level_is_rate_independent(sample_rate):
    """All magnitudes 1: white up to 8 kHz with DDSP's uniform-noise variance 1/3 at any rate."""
    n_frames = 250
    n_samples = core.n_samples_for(n_frames, sample_rate)
    noise = core.filtered_noise(np.ones((2, n_frames, 65), np.float32), n_samples, sample_rate,
                                max_frequency_hz=8000.0, seed=3).numpy()
    assert noise.shape == (2, n_samples)
    np.testing.assert_allclose(noise.var(), 1.0 / 3.0, rtol=0.03)
    freqs, psd = scipy.signal.welch(noise[0], sample_rate, nperseg=1024)
    assert psd[freqs > 8300].sum() < 1e-4 * psd.sum()
    # Flat within 8 kHz: band powers 0-4 kHz and 4-8 kHz agree within 1 dB.
    low = psd[(freqs > 200) & (freqs < 3800)].mean()
    high = psd[(freqs > 4200) & (freqs < 7800)].mean()
    assert abs(10 * np.log10(low / high)) < 1.0


def test_noise_follows_band_magnitudes_and_time():
    """First half: only bands below 2 kHz; second half: only bands above 5 kHz."""
    sample_rate, n_frames = 16000, 250
    band_hz = np.arange(65) * 125.0
    mags = np.zeros((1, n_frames, 65), np.float32)
    mags[0, :125, band_hz <= 2000] = 1.0
    mags[0, 125:, band_hz >= 5000] = 1.0
    noise = core.filtered_noise(mags, 16000, sample_rate, seed=0).numpy()[0]
    first, second = noise[: 8000 - 200], noise[8000 + 200 :]
    f, p1 = scipy.signal.welch(first, sample_rate, nperseg=512)
    _, p2 = scipy.signal.welch(second, sample_rate, nperseg=512)
    assert p1[f > 2600].sum() < 1e-3 * p1.sum()
    assert p2[f < 4400].sum() < 1e-3 * p2.sum()


def test_noise_seed_repeats_and_differs():
    mags = np.ones((1, 20, 65), np.float32)
    a = core.filtered_noise(mags, 1280, 16000, seed=5).numpy()
    b = core.filtered_noise(mags, 1280, 16000, seed=5).numpy()
    c = core.filtered_noise(mags, 1280, 16000, seed=6).numpy()
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0.1


# ---------------------------------------------------------------------------------------------
# Reverb.


@pytest.mark.parametrize("batched_ir", [False, True])
def test_fft_convolve_matches_direct_convolution(batched_ir):
    rng = np.random.default_rng(2)
    audio = rng.normal(size=(2, 3001)).astype(np.float32)
    ir = rng.normal(size=(2, 777) if batched_ir else (777,)).astype(np.float32)
    out = core.fft_convolve(audio, ir).numpy()
    for b in range(2):
        h = ir[b] if batched_ir else ir
        expected = np.convolve(audio[b].astype(np.float64), h.astype(np.float64))[:3001]
        np.testing.assert_allclose(out[b], expected, atol=2e-3 * np.abs(expected).max())


def test_apply_reverb_adds_dry_and_wet():
    audio = np.zeros((1, 100), np.float32)
    audio[0, 10] = 1.0
    ir = np.zeros(50, np.float32)
    ir[20] = 0.5
    out = core.apply_reverb(audio, ir).numpy()[0]
    expected = np.zeros(100)
    expected[10], expected[30] = 1.0, 0.5
    np.testing.assert_allclose(out, expected, atol=1e-6)


@pytest.mark.parametrize("to_rate", (44100, 48000))
def test_resampled_impulse_response_keeps_frequency_response(to_rate):
    """A decaying-noise IR learned at 16 kHz filters a tone the same way at the new rate:
    exactly at its FFT bins (multiples of 4 Hz here), closely in between."""
    rng = np.random.default_rng(4)
    ir16 = (rng.normal(size=4000) * np.exp(-np.arange(4000) / 400)).astype(np.float32)
    ir16[0] = 0.0
    ir = core.resample_impulse_response(ir16, 16000, to_rate).numpy()
    assert ir.shape == (int(round(4000 * to_rate / 16000)),)
    for f_hz, tolerance_db, tolerance_rad in [(1000.0, 0.001, 1e-4), (3000.0, 0.001, 1e-4),
                                              (6000.0, 0.001, 1e-4), (250.0, 0.25, 0.1),
                                              (333.3, 0.25, 0.1), (5555.5, 0.25, 0.1)]:
        h16 = np.sum(ir16 * np.exp(-2j * np.pi * f_hz * np.arange(ir16.size) / 16000))
        h = np.sum(ir * np.exp(-2j * np.pi * f_hz * np.arange(ir.size) / to_rate))
        assert abs(20 * np.log10(abs(h) / abs(h16))) < tolerance_db
        assert abs(np.angle(h / h16)) < tolerance_rad


# ---------------------------------------------------------------------------------------------
# Loudness.


def sine(frequency_hz, amplitude, seconds, sample_rate):
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (amplitude * np.sin(2 * np.pi * frequency_hz * t)).astype(np.float32)


@pytest.mark.parametrize("sample_rate", RATES)
@pytest.mark.parametrize("amplitude", [1.0, 0.1, 0.003])
def test_loudness_of_1khz_sine_is_its_level(sample_rate, amplitude):
    """0 dB = full-scale 1 kHz sine, where A-weighting is 0 dB."""
    loudness = core.compute_loudness_db(sine(1000.0, amplitude, 1.0, sample_rate), sample_rate)
    assert loudness.shape == (250,)
    middle = loudness[20:-20]
    np.testing.assert_allclose(middle, 20 * np.log10(amplitude), atol=1.0)


@pytest.mark.parametrize("sample_rate", RATES)
def test_loudness_of_100hz_sine_is_a_weighted(sample_rate):
    """IEC 61672-1 tables A-weighting at 100 Hz as -19.1 dB."""
    loudness = core.compute_loudness_db(sine(100.0, 0.5, 1.0, sample_rate), sample_rate)
    np.testing.assert_allclose(loudness[20:-20], 20 * np.log10(0.5) - 19.1, atol=1.0)


def a_weighting_filter(sample_rate):
    """Independent reference: the IEC analog A-weighting poles/zeros, bilinear-transformed."""
    poles = 2 * np.pi * np.array([20.598997, 20.598997, 107.65265, 737.86223, 12194.217, 12194.217])
    zeros = np.zeros(4)
    z, p, k = scipy.signal.bilinear_zpk(zeros, -poles, 1.0, sample_rate)
    w, h = scipy.signal.freqz_zpk(z, p, k, worN=[1000.0], fs=sample_rate)
    return scipy.signal.zpk2sos(z, p, k / abs(h[0]))


def test_loudness_matches_time_domain_a_weighted_level():
    """Coloured noise at 48 kHz: per-frame loudness vs the level of the signal through an
    A-weighting IIR filter, averaged over the note."""
    sample_rate = 48000
    rng = np.random.default_rng(5)
    noise = rng.normal(size=2 * sample_rate)
    coloured = scipy.signal.sosfilt(scipy.signal.butter(2, 3000, fs=sample_rate, output="sos"), noise)
    coloured = (0.2 * coloured / coloured.std()).astype(np.float32)
    weighted = scipy.signal.sosfilt(a_weighting_filter(sample_rate), coloured)
    reference_db = 10 * np.log10(2 * np.mean(weighted[4800:-4800] ** 2))
    loudness = core.compute_loudness_db(coloured, sample_rate)
    measured_db = 10 * np.log10(np.mean(10 ** (loudness[25:-25] / 10)))
    assert abs(measured_db - reference_db) < 1.0


def test_loudness_shapes_silence_and_batch():
    audio = np.zeros((3, 64000), np.float32)
    audio[1] = sine(1000.0, 0.5, 4.0, 16000)
    loudness = core.compute_loudness_db(audio, 16000)
    assert loudness.shape == (3, 1000) and loudness.dtype == np.float32
    np.testing.assert_allclose(loudness[0], core.LOUDNESS_FLOOR_DB, atol=0.01)
    np.testing.assert_allclose(loudness[1], core.compute_loudness_db(audio[1], 16000))
    assert core.compute_loudness_db(np.zeros(176400), 44100).shape == (1000,)
    assert core.compute_loudness_db(np.zeros(12345), 16000).shape == (12345 * 250 // 16000,)


@pytest.mark.parametrize("sample_rate", (16000, 44100))
def test_loudness_tf_twin_matches_numpy(sample_rate):
    rng = np.random.default_rng(6)
    n = sample_rate // 2 + 33
    envelope = np.linspace(0.0, 1.0, n) ** 3
    audio = (rng.normal(size=(2, n)) * envelope * 0.3).astype(np.float32)
    expected = core.compute_loudness_db(audio, sample_rate)
    actual = core.compute_loudness_db_tf(audio, sample_rate).numpy()
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, atol=0.02)


# ---------------------------------------------------------------------------------------------
# Spectral loss and gradients.


def test_spectral_loss_zero_for_identical_and_grows_with_mismatch():
    n_frames, sample_rate = 125, 16000
    tone = render_tone(220.0, n_frames, sample_rate)[None]
    assert float(core.multiscale_spectral_loss(tone, tone)) == pytest.approx(0.0, abs=1e-6)
    gains = [0.9, 0.6, 0.3, 0.1]
    by_gain = [float(core.multiscale_spectral_loss(tone, g * tone)) for g in gains]
    assert all(a < b for a, b in zip(by_gain, by_gain[1:]))
    detuned = [float(core.multiscale_spectral_loss(tone, render_tone(f, n_frames, sample_rate)[None]))
               for f in (221.0, 233.0, 262.0)]
    assert all(a < b for a, b in zip(detuned, detuned[1:]))
    assert detuned[0] > 0


def test_gradients_flow_through_harmonic_synthesis_and_loss():
    n_frames, sample_rate = 50, 16000
    target = render_tone(330.0, n_frames, sample_rate)[None]
    amplitude = tf.Variable(constant(0.3, n_frames))
    logits = tf.Variable(np.zeros((1, n_frames, 16), np.float32))
    with tf.GradientTape() as tape:
        dist = tf.nn.softmax(logits, axis=-1)
        audio = core.harmonic_synthesis(constant(330.0, n_frames), amplitude, dist, 3200, sample_rate)
        loss = core.multiscale_spectral_loss(target, audio)
    grads = tape.gradient(loss, [amplitude, logits])
    for g in grads:
        assert g is not None
        assert np.all(np.isfinite(g.numpy()))
        assert np.abs(g.numpy()).max() > 0


def test_loudness_tf_is_differentiable():
    audio = tf.Variable(sine(440.0, 0.3, 0.25, 16000)[None])
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(core.compute_loudness_db_tf(audio, 16000))
    grad = tape.gradient(loss, audio).numpy()
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0


def test_gradients_stay_finite_where_the_prediction_is_silent():
    """Exact zeros (silent frames, zero padding) must not turn |STFT| or log into NaN gradients."""
    n_frames, sample_rate = 50, 16000
    target = render_tone(330.0, n_frames, sample_rate)[None]
    envelope = np.zeros((1, n_frames, 1), np.float32)
    envelope[:, n_frames // 2 :] = 0.3
    amplitude = tf.Variable(envelope)
    with tf.GradientTape() as tape:
        audio = core.harmonic_synthesis(constant(330.0, n_frames), amplitude,
                                        decaying_distribution(n_frames, 16), 3200, sample_rate)
        loss = (core.multiscale_spectral_loss(target, audio)
                + tf.reduce_mean(core.compute_loudness_db_tf(audio, sample_rate)))
    assert np.all(audio.numpy()[0, :1000] == 0.0)
    grad = tape.gradient(loss, amplitude).numpy()
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0


def test_log2_spectral_centroid_matches_numpy_and_is_differentiable():
    from synth import metrics

    sr = 16000
    t = np.arange(sr) / sr
    x = np.stack([0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 3000 * t),
                  0.5 * np.sin(2 * np.pi * 1000 * t)]).astype(np.float32)
    got = core.log2_spectral_centroid(tf.constant(x), sr).numpy()
    want = [np.log2(metrics.spectral_centroid_hz(np.concatenate([xi, np.zeros(3 * sr, np.float32)]), sr,
                                                 start_s=0.0, end_s=1.0)) for xi in x]
    np.testing.assert_allclose(got, want, atol=0.02)
    assert np.log2(440) < got[0] < np.log2(3000)  # a mixture sits between its partials
    v = tf.Variable(x)
    with tf.GradientTape() as tape:
        c = tf.reduce_sum(core.log2_spectral_centroid(v, sr))
    g = tape.gradient(c, v).numpy()
    assert np.all(np.isfinite(g)) and np.abs(g).max() > 0


def test_spectral_terms_are_per_example_and_sum_to_the_loss():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(3, 4096)).astype(np.float32)
    b = a.copy()
    b[1] *= 0.5
    mag, logmag = core.multiscale_spectral_terms(a, b)
    assert mag.shape == (3,) and logmag.shape == (3,)
    assert float(mag[0]) == 0.0 and float(mag[2]) == 0.0 and float(mag[1]) > 0
    assert float(logmag[1]) == pytest.approx(6 * np.log(2.0), rel=1e-3)  # six FFT sizes, |log 0.5| each
    total = core.multiscale_spectral_loss(a, b)
    assert float(total) == pytest.approx(float(tf.reduce_mean(mag) + tf.reduce_mean(logmag)), rel=1e-5)
