"""The generator's networks and fixed helpers: shapes, bounds, numpy references, weight files."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from synth import models as M
from synth.params import QUALITIES, SOURCES, NoteParams

tf = pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def cfg():
    return M.ModelConfig.from_core()


def test_condition_vector_encodes_every_field():
    p = NoteParams(pitch=60, velocity=127, source="electronic", qualities=("bright", "reverb"))
    c = M.condition_vector(p)
    assert c.shape == (M.COND_DIM,) and c.dtype == np.float32
    assert c[7] == pytest.approx(1.0)  # velocity / 127
    assert list(c[8:11]) == [0.0, 1.0, 0.0]  # source one-hot in SOURCES order
    q = c[11:]
    assert [QUALITIES[i] for i in np.flatnonzero(q)] == ["bright", "reverb"]
    # Pitch features differ between neighbouring pitches and stay bounded.
    c2 = M.condition_vector(p.replace(pitch=61))
    assert np.abs(c2[:7] - c[:7]).max() > 1e-3
    assert np.all(np.abs(M.condition_arrays(np.arange(9, 121), np.full(112, 100), np.zeros(112, int),
                                            np.zeros((112, 10)))[:, :7]) <= 1.0)


def test_condition_arrays_match_condition_vector():
    notes = [NoteParams(pitch=p, velocity=v, source=s) for p, v, s in [(30, 25, "acoustic"), (90, 75, "synthetic")]]
    arr = M.condition_arrays([n.pitch for n in notes], [n.velocity for n in notes],
                             [SOURCES.index(n.source) for n in notes], [n.quality_vector for n in notes])
    np.testing.assert_allclose(arr, np.stack([M.condition_vector(n) for n in notes]), rtol=1e-6)


def test_upsample_matrix_interpolates_linearly_between_step_centres():
    w = M.upsample_matrix(50, 1000)
    np.testing.assert_allclose(w.sum(axis=0), 1.0, atol=1e-6)
    ramp = np.arange(50, dtype=np.float64)
    up = ramp @ w
    # Frame j's centre is at coarse position (j + 0.5) / 20 - 0.5, clamped to [0, 49].
    expected = np.clip((np.arange(1000) + 0.5) / 20 - 0.5, 0, 49)
    np.testing.assert_allclose(up, expected, atol=1e-5)
    x = np.random.default_rng(0).normal(size=(2, 50, 3)).astype(np.float32)
    np.testing.assert_allclose(M.tf_upsample(tf.constant(x), 1000).numpy(), np.einsum("bic,io->boc", x, w),
                               atol=1e-5)


def test_to_decoder_rate_averages_pairs_and_crop_keeps_static_length():
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    np.testing.assert_allclose(M.to_decoder_rate(tf.constant(x)).numpy(), x.reshape(2, 3, 2).mean(-1))
    out = M.crop_frames(tf.constant(np.arange(20, dtype=np.float32).reshape(2, 10)), tf.constant(4), 3)
    assert out.shape[1] == 3
    np.testing.assert_array_equal(out.numpy()[0], [4, 5, 6])


def test_dilated_depthwise_matches_numpy_convolution(cfg):
    layer = M._dilated_depthwise_class()(3, name="dw_test")
    x = np.random.default_rng(1).normal(size=(2, 40, 5)).astype(np.float32)
    y = layer(tf.constant(x)).numpy()
    k, b = layer.kernel.numpy(), layer.bias.numpy()
    p = np.pad(x, [(0, 0), (3, 3), (0, 0)])
    ref = p[:, :-6] * k[0] + x * k[1] + p[:, 6:] * k[2] + b
    np.testing.assert_allclose(y, ref, atol=1e-5)


def test_networks_shapes_and_sizes(cfg):
    enc, dec = M.build_encoder(cfg), M.build_decoder(cfg)
    post, zdec, f0ld = M.build_z_posterior(cfg), M.build_z_decoder(cfg), M.build_f0_ld(cfg)
    assert enc(np.zeros((2, M.N_COARSE, M.N_MFCC), np.float32)).shape == (2, M.N_COARSE, M.Z_DIM)
    for t in (125, 500):  # any number of frames
        out = dec([np.zeros((1, t, 1), np.float32)] * 2 + [np.zeros((1, t, M.Z_DIM), np.float32)])
        assert out.shape == (1, t, 1 + cfg.n_harmonics + cfg.n_noise_bands)
    c = np.zeros((3, M.COND_DIM), np.float32)
    mu, logvar = post([np.zeros((3, M.N_COARSE, M.Z_DIM), np.float32), c])
    assert mu.shape == logvar.shape == (3, 16)
    tfe = np.repeat(M.time_features()[None], 3, axis=0)
    assert zdec([np.zeros((3, 16), np.float32), c, tfe]).shape == (3, M.N_COARSE, M.Z_DIM)
    ld, cents = f0ld([c, np.zeros((3, M.N_COARSE, M.Z_DIM), np.float32), tfe])
    assert ld.shape == (3, M.N_LD) and cents.shape == (3, M.N_COARSE)
    total = sum(m.count_params() for m in (enc, dec, post, zdec, f0ld))
    # The shipped weights must fit in 30 MB (float32): far below, so the CPU budget holds too.
    assert total * 4 < 10e6, total


def test_output_heads_are_bounded_and_smooth():
    raw = tf.constant(np.random.default_rng(2).normal(scale=30.0, size=(4, M.N_LD)).astype(np.float32))
    ld = M.ld_from_raw(raw, -90.0, -5.0).numpy()
    assert ld.shape == (4, M.N_FRAMES)
    assert ld.min() >= -90.0 - 1e-3 and ld.max() <= -5.0 + 1e-3
    # Linear upsampling by 4 of a [1/4, 1/2, 1/4]-smoothed curve: frame steps are at most
    # a quarter of the bounded range / 2.
    assert np.abs(np.diff(ld, axis=1)).max() <= 85.0 / 8 + 1e-3
    cents = M.cents_from_raw(tf.constant(np.full((2, M.N_COARSE), 1e3, np.float32))).numpy()
    assert cents.shape == (2, M.N_FRAMES) and np.all(np.abs(cents) <= M.MAX_CENTS + 1e-4)
    lat = np.linspace(-7, 7, 29).astype(np.float32)
    sq = M.squash_latent(tf.constant(lat)).numpy()
    assert np.all(np.diff(sq) > 0) and np.abs(sq).max() < M.LATENT_SQUASH
    z = M.z_from_raw(tf.constant(np.array([-1e3, 0.0, 1e3], np.float32))).numpy()
    assert np.all(np.abs(z) <= M.Z_BOUND)


def test_mfcc_features_shape_and_loudness_sensitivity():
    t = np.arange(64000) / 16000.0
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    feats = M.tf_mfcc_coarse(tf.constant(np.stack([tone, 0.01 * tone]))).numpy()
    assert feats.shape == (2, M.N_COARSE, M.N_MFCC) and np.all(np.isfinite(feats))
    assert feats[0, :, 0].mean() > feats[1, :, 0].mean()  # c0 follows the level


def test_weights_round_trip_into_fresh_models(tmp_path, cfg):
    dec = M.build_decoder(cfg)
    x = [np.full((1, 10, 1), 0.5, np.float32), np.full((1, 10, 1), 0.7, np.float32),
         np.random.default_rng(3).normal(size=(1, 10, M.Z_DIM)).astype(np.float32)]
    before = dec(x).numpy()
    path = str(tmp_path / "decoder.weights.h5")
    M.save_weights(dec, path)
    M.build_encoder(cfg)  # shifts Keras' name counters: loading must not depend on them
    dec2 = M.build_decoder(cfg)
    assert not np.allclose(dec2(x).numpy(), before)
    dec2.load_weights(path)
    np.testing.assert_allclose(dec2(x).numpy(), before, atol=1e-6)


def test_synth_reverb_round_trip(tmp_path, cfg):
    synth = M.make_synth(cfg)
    w = [np.random.default_rng(4).normal(size=v.shape).astype(np.float32) for v in synth.get_weights()]
    synth.set_weights(w)
    M.save_synth(synth, str(tmp_path / "synth.npz"))
    other = M.make_synth(cfg)
    M.load_synth(other, str(tmp_path / "synth.npz"))
    for a, b in zip(other.get_weights(), w):
        np.testing.assert_array_equal(a, b)


def test_knob_mix_is_orthogonal_and_spreads_every_knob():
    m = M.KNOB_MIX
    np.testing.assert_allclose(m @ m.T, np.eye(16), atol=1e-6)
    assert np.allclose(np.abs(m), 0.25)
    knobs = np.zeros((1, 16), np.float32)
    knobs[0, 3] = 7.0
    lat = M.knobs_to_latent(tf.constant(knobs)).numpy()
    assert np.all(np.abs(lat) > 1.0)  # one knob moves every latent dimension


def test_knob_region_keeps_the_cube_inside_the_priors_ball():
    rng = np.random.default_rng(5)
    cube = np.concatenate([rng.uniform(-7, 7, (200, 16)), rng.choice([-7.0, 7.0], (200, 16))]).astype(np.float32)
    lat = M.knob_region(M.knobs_to_latent(tf.constant(cube))).numpy()
    r_in = np.linalg.norm(cube, axis=1)
    r_out = np.linalg.norm(lat, axis=1)
    assert r_out.max() < M.KNOB_RADIUS and M.KNOB_RADIUS == 4.0
    # Same direction, smaller radius: the mapping only pulls points towards the centre.
    cos = np.sum(lat * (M.KNOB_MIX @ cube.T).T, axis=1) / (r_out * r_in)
    assert np.all(cos > 0.9999) and np.all(r_out < r_in)
    # Near the centre it is the identity, and along a ray it grows monotonically.
    small = np.full((1, 16), 0.01, np.float32)
    np.testing.assert_allclose(M.knob_region(tf.constant(small)).numpy(), small, rtol=1e-4)
    ray = (np.linspace(0, 7, 50)[:, None] * np.ones((1, 16)) / 4).astype(np.float32)
    assert np.all(np.diff(np.linalg.norm(M.knob_region(tf.constant(ray)).numpy(), axis=1)) > 0)


def test_scale_output_scales_amplitude_and_noise_only():
    controls = {"amplitude": np.full((3, 1), 0.5, np.float32), "noise_magnitudes": np.full((3, 4), 0.1, np.float32),
                "harmonic_distribution": np.full((3, 8), 0.125, np.float32), "f0_hz": np.full((3, 1), 440.0, np.float32)}
    out = M.scale_output(controls, 2.0)
    np.testing.assert_allclose(out["amplitude"], 1.0)
    np.testing.assert_allclose(out["noise_magnitudes"], 0.2)
    assert out["harmonic_distribution"] is controls["harmonic_distribution"] and out["f0_hz"] is controls["f0_hz"]
    np.testing.assert_allclose(controls["amplitude"], 0.5)  # the input is left alone


def _curve(held, release):
    """A loudness curve [1, 1000]: `held` dB values over 0..3 s (linear between the given
    points), then `release` over 3..4 s."""
    t = np.arange(M.N_FRAMES) / M.FRAME_RATE
    h = np.interp(t, np.linspace(0, 3, len(held)), held)
    r = np.interp(t, np.linspace(3, 4, len(release)), release)
    return np.where(t < 3, h, r).astype(np.float32)[None]


def test_shape_envelope_never_lets_a_release_swell():
    # A held note at -30 dB whose release jumps to -10 dB (what tag guidance can extrapolate).
    ld = _curve([-30, -30], [-10, -10, -80])
    out = M.shape_envelope(tf.constant(ld), tf.constant([0.0]), tf.constant([0.0])).numpy()[0]
    off = M.NOTE_OFF_FRAME
    np.testing.assert_array_equal(out[:off], ld[0, :off])
    assert out[off:].max() <= ld[0, off - 1] + 1e-4
    assert np.all(np.diff(out[off - 1 :]) <= 1e-4)
    # A release that already fades is left alone.
    fading = _curve([-30, -35], [-36, -90])
    np.testing.assert_allclose(M.shape_envelope(tf.constant(fading), tf.constant([0.0]), tf.constant([0.0])).numpy(), fading,
                               atol=1e-4)


def test_shape_envelope_gives_long_release_something_to_release():
    # A percussive note: peak -20 dB at the onset, gone (-120 dB) long before note-off.
    ld = _curve([-20, -120, -120, -120], [-120, -120])
    plain = M.shape_envelope(tf.constant(ld), tf.constant([0.0]), tf.constant([0.0])).numpy()[0]
    tagged = M.shape_envelope(tf.constant(ld), tf.constant([0.0]), tf.constant([1.0])).numpy()[0]
    off = M.NOTE_OFF_FRAME
    np.testing.assert_allclose(plain, ld[0], atol=1e-4)
    # Held: never more than LONG_RELEASE_HOLD_DB below the peak, the attack untouched.
    assert tagged[0] == pytest.approx(ld[0, 0])
    assert tagged[:off].min() >= -20 - M.LONG_RELEASE_HOLD_DB - 1e-3
    # Release: monotone, at most LONG_RELEASE_MAX_DB_PER_S.
    rel = tagged[off - 1 :]
    assert np.all(np.diff(rel) <= 1e-4)
    assert np.all(np.diff(rel) >= -M.LONG_RELEASE_MAX_DB_PER_S / M.FRAME_RATE - 1e-3)
    # A curve that already satisfies both rules is unchanged by the tag.
    slow = _curve([-20, -25, -30], [-30, -50])
    np.testing.assert_allclose(M.shape_envelope(tf.constant(slow), tf.constant([0.0]), tf.constant([1.0])).numpy(), slow,
                               atol=1e-4)


def test_shape_envelope_makes_fast_decay_decay():
    # A sustained note: -20 dB from 0.2 s to note-off.
    ld = _curve([-60, -20, -20, -20, -20, -20, -20, -20, -20, -20, -20, -20, -20, -20, -20, -20], [-20, -90])
    out = M.shape_envelope(tf.constant(ld), tf.constant([1.0]), tf.constant([0.0])).numpy()[0]
    peak_i = int(np.argmax(ld[0, : M.NOTE_OFF_FRAME]))
    np.testing.assert_allclose(out[: peak_i + 1], ld[0, : peak_i + 1], atol=1e-4)  # the attack is kept
    t30 = peak_i + int(np.argmax(out[peak_i:] <= -20 - 30.0))
    assert (t30 - peak_i) / M.FRAME_RATE <= 30.0 / M.FAST_DECAY_DB * M.FAST_DECAY_S + 0.01
    assert out[M.NOTE_OFF_FRAME - 1] <= -20 - M.FAST_DECAY_DB + 1e-3
    # A note that already decays faster is unchanged; the tag never raises a level.
    fast = _curve([-20, -90, -120], [-120, -120])
    np.testing.assert_allclose(M.shape_envelope(tf.constant(fast), tf.constant([1.0]), tf.constant([0.0])).numpy(),
                               fast, atol=1e-4)
    assert np.all(out <= ld[0] + 1e-4)
    # Both tags: decays 30 dB, then holds within LONG_RELEASE_HOLD_DB of the peak to release it.
    both = M.shape_envelope(tf.constant(ld), tf.constant([1.0]), tf.constant([1.0])).numpy()[0]
    assert both[M.NOTE_OFF_FRAME - 1] == pytest.approx(-20 - M.LONG_RELEASE_HOLD_DB, abs=1e-3)
    assert both[M.NOTE_OFF_FRAME + M.FRAME_RATE // 2] >= -20 - M.LONG_RELEASE_HOLD_DB - 0.5 * M.LONG_RELEASE_MAX_DB_PER_S - 1e-3
