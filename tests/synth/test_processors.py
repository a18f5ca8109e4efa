"""synth.processors: network outputs -> controls -> audio, the learned reverb, gradients."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf

from synth import core
from synth.processors import DDSPSynth, FilteredNoise, Harmonic, Reverb


def raw_outputs(n_frames: int, batch: int = 1, seed: int = 0, f0_hz: float = 440.0):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(batch, n_frames, 1)).astype(np.float32),
        rng.normal(size=(batch, n_frames, core.N_HARMONICS)).astype(np.float32),
        rng.normal(size=(batch, n_frames, core.N_NOISE_BANDS)).astype(np.float32),
        np.full((batch, n_frames, 1), f0_hz, np.float32),
    )


def test_get_controls_shapes_ranges_and_band_limit():
    synth = DDSPSynth()
    amplitude, distribution, noise, f0 = raw_outputs(40, batch=2, f0_hz=1000.0)
    controls = synth.get_controls(amplitude, distribution, noise, f0)
    assert set(controls) == {"amplitude", "harmonic_distribution", "noise_magnitudes", "f0_hz"}
    assert controls["amplitude"].shape == (2, 40, 1)
    assert controls["harmonic_distribution"].shape == (2, 40, core.N_HARMONICS)
    assert controls["noise_magnitudes"].shape == (2, 40, core.N_NOISE_BANDS)
    assert np.all(controls["amplitude"].numpy() > 0)
    assert np.all(controls["noise_magnitudes"].numpy() > 0)
    dist = controls["harmonic_distribution"].numpy()
    # f0 = 1 kHz, training Nyquist 8 kHz: harmonics 1..7 remain and share the whole amplitude.
    assert np.all(dist[..., 7:] == 0.0) and np.all(dist[..., :7] > 0.0)
    np.testing.assert_allclose(dist.sum(axis=-1), 1.0, rtol=1e-5)


def test_harmonic_and_noise_processors_alone():
    harmonic, noise = Harmonic(n_harmonics=8), FilteredNoise(n_bands=5)
    controls = {**harmonic.get_controls(np.zeros((1, 10, 1)), np.zeros((1, 10, 8)),
                                        np.full((1, 10, 1), 220.0)),
                **noise.get_controls(np.zeros((1, 10, 5)))}
    # exp_sigmoid(0) shares its value between the 8 harmonics; noise starts quiet (bias -5).
    np.testing.assert_allclose(controls["harmonic_distribution"].numpy(), 1.0 / 8, rtol=1e-6)
    assert float(tf.reduce_max(controls["noise_magnitudes"])) < 1e-3
    assert harmonic.get_signal(controls, 640, 16000).shape == (1, 640)
    assert noise.get_signal(controls, 640, 16000).shape == (1, 640)


@pytest.mark.parametrize("sample_rate", (16000, 44100, 48000))
def test_get_signal_shapes_and_finite(sample_rate):
    synth = DDSPSynth()
    controls = synth.get_controls(*raw_outputs(37, batch=2))
    audio = synth.get_signal(controls, sample_rate=sample_rate)
    assert audio.shape == (2, core.n_samples_for(37, sample_rate))
    assert np.all(np.isfinite(audio.numpy()))
    assert float(tf.reduce_max(tf.abs(audio))) > 0.01


def test_call_renders_at_training_rate():
    synth = DDSPSynth()
    audio = synth(*raw_outputs(25))
    assert audio.shape == (1, 25 * 64)


def test_silent_controls_give_silence():
    synth = DDSPSynth()
    controls = synth.get_controls(*raw_outputs(20))
    controls["amplitude"] = tf.zeros_like(controls["amplitude"])
    controls["noise_magnitudes"] = tf.zeros_like(controls["noise_magnitudes"])
    synth.reverb.ir.assign(np.random.default_rng(0).normal(size=core.REVERB_LENGTH).astype(np.float32))
    assert np.all(synth.get_signal(controls).numpy() == 0.0)


def test_reverb_first_tap_is_dry_path():
    reverb = Reverb(reverb_length=100)
    ir = np.zeros(100, np.float32)
    ir[0], ir[10] = 5.0, 0.25  # the first tap must be ignored: the dry path stands for it
    reverb.ir.assign(ir)
    audio = np.zeros((1, 50), np.float32)
    audio[0, 3] = 1.0
    out = reverb(audio).numpy()[0]
    expected = np.zeros(50)
    expected[3], expected[13] = 1.0, 0.25
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert [w.name for w in reverb.trainable_weights] == ["impulse_response"]


@pytest.mark.parametrize("sample_rate", (44100, 48000))
def test_reverb_colours_a_tone_the_same_at_the_sound_card_rate(sample_rate):
    """Steady 500 Hz tone through the learned (16 kHz) response, at 16 kHz and at the card's rate:
    same amplitude after the response has built up."""
    reverb = Reverb(reverb_length=1600)
    rng = np.random.default_rng(1)
    ir = (0.3 * rng.normal(size=1600) * np.exp(-np.arange(1600) / 200)).astype(np.float32)
    reverb.ir.assign(ir)

    def steady_amplitude(rate):
        t = np.arange(rate) / rate
        out = reverb.get_signal(np.sin(2 * np.pi * 500.0 * t)[None].astype(np.float32), rate).numpy()[0]
        tail = out[rate // 2 :]
        return np.sqrt(2 * np.mean(tail**2))

    ratio_db = 20 * np.log10(steady_amplitude(sample_rate) / steady_amplitude(16000))
    assert abs(ratio_db) < 0.25
    assert abs(20 * np.log10(steady_amplitude(16000))) > 0.5  # the reverb does colour it


def test_gradients_reach_every_network_output_and_the_impulse_response():
    synth = DDSPSynth(reverb_length=800)
    synth.reverb.ir.assign(np.full(800, 1e-3, np.float32))
    raw = [tf.Variable(x) for x in raw_outputs(30)[:3]]
    f0 = np.full((1, 30, 1), 220.0, np.float32)
    target = DDSPSynth(reverb_length=800).get_signal(
        DDSPSynth().get_controls(*raw_outputs(30, seed=1, f0_hz=220.0)), seed=0)
    with tf.GradientTape() as tape:
        controls = synth.get_controls(*raw, f0)
        audio = synth.get_signal(controls, seed=0)
        loss = core.multiscale_spectral_loss(target, audio)
    grads = tape.gradient(loss, raw + [synth.reverb.ir])
    for g in grads:
        assert g is not None
        g = tf.convert_to_tensor(g).numpy()
        assert np.all(np.isfinite(g)) and np.abs(g).max() > 0


def test_config_round_trip():
    synth = DDSPSynth(n_harmonics=80, n_noise_bands=33, reverb_length=4000)
    clone = DDSPSynth.from_config(synth.get_config())
    assert (clone.n_harmonics, clone.n_noise_bands, clone.reverb.reverb_length) == (80, 33, 4000)
    assert clone.sample_rate == core.TRAIN_SAMPLE_RATE and clone.frame_rate == core.FRAME_RATE


def test_reverb_decay_envelope_makes_the_tail_end():
    """A flat learned response (as the shipped one nearly is) rings for its whole second; the
    decay envelope makes the same weights fall 60 dB per second, and the numpy path agrees."""
    flat, decaying = Reverb(16000, 16000), Reverb(16000, 16000, decay_db_per_s=60.0)
    w = np.random.default_rng(0).normal(scale=0.01, size=16000).astype(np.float32)
    flat.ir.assign(w)
    decaying.ir.assign(w)

    def edc_db(ir, t):  # energy left after t seconds, relative to the whole response
        e = np.asarray(ir, np.float64) ** 2
        return 10 * np.log10(e[int(t * 16000):].sum() / e.sum())

    assert edc_db(flat.impulse_response_numpy(), 0.5) > -4.0
    ir = decaying.impulse_response_numpy()
    np.testing.assert_allclose(ir, decaying.impulse_response().numpy(), rtol=1e-6)
    assert -33.0 < edc_db(ir, 0.5) < -27.0  # 60 dB/s: 30 dB in half a second
    assert ir[0] == 0.0 and Reverb.from_config(decaying.get_config()).decay_db_per_s == 60.0
    synth = DDSPSynth(reverb_decay_db_per_s=60.0)
    assert DDSPSynth.from_config(synth.get_config()).reverb.decay_db_per_s == 60.0
