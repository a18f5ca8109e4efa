"""The generator's three networks at inference, in numpy: the same arithmetic as the TensorFlow
graph (`synth.models`), from the same trained weights, without TensorFlow's call overhead.

Why by hand: the networks are small (per-frame dense layers and short 1-D convolutions, about
0.15 GFLOP for one note with tag guidance). Through TensorFlow on the 2-core CPU one note cost
8 ms with XLA (11 ms without), XLA compiled every new batch shape for 2-3 s, and the first call
of a process for about 10 s. Here, as 2-D matrix products on single-threaded OpenBLAS, one note
costs 4.5 ms, any batch size runs at once, nothing is compiled, and two passes the graph makes
are skipped where their result is known (`NumpyNetworks.curves`). Why not an inference runtime
such as ONNX Runtime: it would need a conversion step and a second copy of every weight file to
keep in step with the files training writes, and the tag guidance, envelope rules and control
scaling around the networks would stay numpy anyway. The layers are few and simple (below), the
weights are read straight from training's files (`read_weights`), and the tests hold this twin to
the TensorFlow graph (`Generator.run_neural_tf`) within float32 rounding.

Layer by layer (names as `synth.models.build_*` gives them):

* `Dense`: x @ kernel + bias over the last axis (one 2-D product for the whole batch).
* `Conv1D` with 'same' padding (kernel [k, in, out], dilation d): the k shifted copies of the
  input, zero-padded by d * (k - 1) / 2 each side, side by side, times the kernel as one
  [k * in, out] matrix.
* `LayerNormalization` over the last axis (Keras' epsilon), `LeakyReLU(0.2)`.
* `DilatedDepthwise`: three shifted multiply-adds per channel (`NumpyDecoder`).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from synth import models as M
from synth.params import QUALITIES
from synth.units import midi_to_hz


Weights = dict[str, list[np.ndarray]]  # layer name -> its variables, in Keras' order

# Keras' LayerNormalization epsilon (its default, which build_decoder keeps).
LAYER_NORM_EPSILON = 1e-3


def keras_weights(model) -> Weights:
    """A Keras model's weights by layer name, as float32 numpy arrays."""
    return {layer.name: [np.asarray(w, np.float32) for w in layer.get_weights()] for layer in model.layers}


def layer_order(cfg: M.ModelConfig) -> dict[str, list[tuple[str, str]]]:
    """Each network's layers with weights, as (name, Keras class in snake case), in the order of
    `model.layers` (the order `synth.models.build_*` creates them)."""
    decoder = [("dec_in", "dense"), ("dec_in2", "dense"), ("dec_norm_in", "layer_normalization")]
    for i in range(len(cfg.decoder_dilations)):
        decoder += [(f"dec_dw{i}", "dilated_depthwise"), (f"dec_pw{i}", "dense")]
    decoder.append(("dec_out", "dense"))
    z_decoder = [("zdec_d0", "dense"), ("zdec_d1", "dense"), ("zdec_sketch", "dense"),
                 ("zdec_conv0", "conv1d"), ("zdec_conv1", "conv1d")]
    f0_ld = [("f0ld_in", "dense")] + [(f"f0ld_conv{i}", "conv1d") for i in range(3)] + \
        [("f0ld_ld", "dense"), ("f0ld_cents", "dense")]
    return {"decoder": decoder, "z_decoder": z_decoder, "f0_ld": f0_ld}


def read_weights(path: str, layers: list[tuple[str, str]]) -> Weights:
    """The weights of a Keras 3 `*.weights.h5` file by layer name, read with h5py alone.

    Keras 3 keeps a functional model's layers under `layers/<class>`, `layers/<class>_1`, ...
    (the class name in snake case, counted in the order of `model.layers`), each with its
    variables under `vars/0`, `vars/1`, ... `layers` gives that order; a layer the file lacks
    raises ValueError (the tests compare every array with what Keras itself loads).
    """
    import h5py

    seen: dict[str, int] = {}
    out: Weights = {}
    with h5py.File(path, "r") as f:
        for name, cls in layers:
            n = seen.get(cls, 0)
            seen[cls] = n + 1
            key = f"layers/{cls}" + (f"_{n}" if n else "")
            group = f.get(f"{key}/vars")
            if group is None or not len(group):
                raise ValueError(f"{path}: no weights for layer {name!r} (expected {key}/vars)")
            out[name] = [np.asarray(group[str(i)], np.float32) for i in range(len(group))]
    return out


def _dense(x: np.ndarray, kernel_bias) -> np.ndarray:
    # As one 2-D product: numpy runs a 3-D one as a loop of small ones, 10x slower here.
    kernel, bias = kernel_bias
    out = x.reshape(-1, x.shape[-1]) @ kernel
    out += bias
    return out.reshape(x.shape[:-1] + (kernel.shape[1],))


def _conv1d(x: np.ndarray, kernel_bias, dilation: int = 1) -> np.ndarray:
    """Keras Conv1D, padding 'same', odd kernel: x [B, T, C] -> [B, T, out]."""
    kernel, bias = kernel_bias
    k, c, n_out = kernel.shape
    pad = dilation * (k - 1) // 2
    b, t = x.shape[0], x.shape[1]
    padded = np.zeros((b, t + 2 * pad, c), np.float32)
    padded[:, pad : pad + t] = x
    cols = np.concatenate([padded[:, i * dilation : i * dilation + t] for i in range(k)], axis=-1)
    out = cols.reshape(b * t, k * c) @ kernel.reshape(k * c, n_out)
    out += bias
    return out.reshape(b, t, n_out)


def _leaky(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, np.float32(0.2) * x)


def _exp_sigmoid(x: np.ndarray) -> np.ndarray:
    """DDSP's 2 * sigmoid(x) ** ln(10) + 1e-7 (synth.core.exp_sigmoid), as exp(-ln(10) *
    log(1 + exp(-x))): float32 exp and log run vectorised, a float power does not (3x slower)."""
    t = np.negative(x, dtype=np.float32)
    with np.errstate(over="ignore"):  # exp(-x) = inf for x < -88: the result is its floor, 1e-7
        np.exp(t, out=t)
    t += np.float32(1.0)
    np.log(t, out=t)
    t *= np.float32(-math.log(10.0))
    np.exp(t, out=t)
    t *= np.float32(2.0)
    t += np.float32(1e-7)
    return t


def _upsample(x: np.ndarray, n_out: int) -> np.ndarray:
    """[B, n_in, C] -> [B, n_out, C] (`synth.models.tf_upsample`), as one matrix product."""
    b, n_in, c = x.shape
    w = _upsample_matrix(int(n_in), n_out)
    flat = np.ascontiguousarray(np.swapaxes(x, 1, 2), dtype=np.float32).reshape(b * c, n_in)
    return np.swapaxes((flat @ w).reshape(b, c, n_out), 1, 2)


# The linear-upsampling weights per (n_in, n_out): a few shapes, made once.
_upsample_matrix = functools.lru_cache(maxsize=16)(M.upsample_matrix)


def _pairs(x: np.ndarray) -> np.ndarray:
    """[B, 1000] -> [B, 500]: the decoder's frame rate (`synth.models.to_decoder_rate`)."""
    return x.reshape(x.shape[0], -1, M.DECODER_DOWN).mean(axis=-1, dtype=np.float32)


class NumpyDecoder:
    """The DDSP decoder and the synthesizer's control scaling in numpy, from the trained weights:
    the same arithmetic as the TensorFlow graph (float32; within 1e-5 of it, the tests check),
    for a batch of windows. A live engine decodes its voices' next few frames many times a
    second: one TensorFlow call costs about 2 ms of Python and holds the GIL for most of it; this
    costs about 0.1 ms for 16 windows of 22 frames, and numpy's matrix products release the GIL.

    Layers (synth.models.build_decoder): Dense -> LeakyReLU(0.2) -> Dense -> LayerNorm ->
    LeakyReLU, then per dilation d: x += LeakyReLU(Dense(depthwise_d(x))), where depthwise_d is a
    3-tap 'same' convolution per channel with taps at -d, 0, +d; then Dense to 1 + H + N raw
    outputs, scaled as `DDSPSynth.get_controls` does (exp_sigmoid, harmonics at or above the
    band limit removed by the highest f0 of each frame and its neighbours, renormalised; noise
    exp_sigmoid(raw + its initial bias)); amplitude and noise times the output calibration.
    """

    def __init__(self, weights: Weights, cfg: M.ModelConfig, noise_bias: float, max_frequency_hz: float, gain: float):
        w = weights
        self.gain = np.float32(gain)
        self.dense_in = tuple(w["dec_in"])
        self.dense_in2 = tuple(w["dec_in2"])
        self.norm_gamma, self.norm_beta = w["dec_norm_in"]
        self.norm_eps = np.float32(LAYER_NORM_EPSILON)
        self.blocks = []
        for i, d in enumerate(cfg.decoder_dilations):
            dw_kernel, dw_bias = w[f"dec_dw{i}"]
            self.blocks.append((int(d), dw_kernel, dw_bias, tuple(w[f"dec_pw{i}"])))
        self.dense_out = tuple(w["dec_out"])
        self.context = sum(d for d, *_ in self.blocks)  # frames each output sees on either side
        self.n_harmonics = int(cfg.n_harmonics)
        self.noise_bias = np.float32(noise_bias)
        self.max_frequency_hz = np.float32(max_frequency_hz)
        self.ld_offset, self.ld_range = np.float32(M.LD_OFFSET_DB), np.float32(M.LD_RANGE_DB)

    def __call__(self, f0_hz, loudness_db, z) -> dict[str, np.ndarray]:
        """f0_hz [b, n], loudness_db [b, n], z [b, n, 16] -> controls with a leading batch axis:
        f0_hz and amplitude [b, n], harmonic_distribution [b, n, H], noise_magnitudes [b, n, N]."""
        f0 = np.asarray(f0_hz, np.float32)
        ld = np.asarray(loudness_db, np.float32)
        zz = np.asarray(z, np.float32)
        f0_scaled = (np.float32(69.0) + np.float32(12.0) * np.log2(np.maximum(f0, np.float32(1e-3)) / np.float32(440.0))) \
            / np.float32(127.0)
        ld_scaled = (ld - self.ld_offset) / self.ld_range
        x = np.concatenate([f0_scaled[..., None], ld_scaled[..., None], zz], axis=-1).astype(np.float32)
        x = _leaky(_dense(x, self.dense_in))
        x = _dense(x, self.dense_in2)
        mean = x.mean(axis=-1, keepdims=True)
        var = x.var(axis=-1, keepdims=True)
        x = (x - mean) / np.sqrt(var + self.norm_eps) * self.norm_gamma + self.norm_beta
        x = _leaky(x)
        for d, dw_kernel, dw_bias, pointwise in self.blocks:
            y = x * dw_kernel[1] + dw_bias
            y[:, d:] += x[:, :-d] * dw_kernel[0]  # 'same' padding: zeros beyond the window
            y[:, :-d] += x[:, d:] * dw_kernel[2]
            x = x + _leaky(_dense(y, pointwise))
        raw = _dense(x, self.dense_out)
        h = self.n_harmonics
        amp = _exp_sigmoid(raw[..., 0]) * self.gain
        dist = _exp_sigmoid(raw[..., 1 : 1 + h])
        padded = np.concatenate([f0[:, :1], f0, f0[:, -1:]], axis=1)
        f0_max = np.maximum(np.maximum(padded[:, :-2], padded[:, 1:-1]), padded[:, 2:])
        mask = f0_max[..., None] * np.arange(1, h + 1, dtype=np.float32) < self.max_frequency_hz
        dist = dist * mask
        total = dist.sum(axis=-1, keepdims=True)
        dist = np.divide(dist, total, out=np.zeros_like(dist), where=total != 0)
        noise = _exp_sigmoid(raw[..., 1 + h :] + self.noise_bias) * self.gain
        return {"f0_hz": f0, "amplitude": amp.astype(np.float32), "harmonic_distribution": dist.astype(np.float32),
                "noise_magnitudes": noise.astype(np.float32)}


class ZDecoder:
    """`synth.models.build_z_decoder`: (latent [B, 16] squashed, cond [B, COND_DIM]) -> z_raw [B, 50, 16]."""

    def __init__(self, w: Weights):
        self.d0, self.d1 = tuple(w["zdec_d0"]), tuple(w["zdec_d1"])
        self.sketch = tuple(w["zdec_sketch"])
        self.conv0, self.conv1 = tuple(w["zdec_conv0"]), tuple(w["zdec_conv1"])
        self.time = M.time_features()

    def __call__(self, latent: np.ndarray, cond: np.ndarray) -> np.ndarray:
        b = latent.shape[0]
        x = np.concatenate([latent, cond], axis=-1).astype(np.float32)
        x = _leaky(_dense(x, self.d0))
        x = _leaky(_dense(x, self.d1))
        x = _dense(x, self.sketch).reshape(b, M.N_COARSE, -1)
        x = np.concatenate([x, np.broadcast_to(self.time, (b,) + self.time.shape)], axis=-1)
        x = _leaky(_conv1d(x, self.conv0))
        return _conv1d(x, self.conv1)


class F0LdGenerator:
    """`synth.models.build_f0_ld`: (cond [B, COND_DIM], z_norm [B, 50, 16]) -> (raw loudness
    [B, 250], raw cents [B, 50])."""

    def __init__(self, w: Weights):
        self.dense_in = tuple(w["f0ld_in"])
        self.convs = [(d, tuple(w[f"f0ld_conv{i}"])) for i, d in enumerate((1, 2, 4))]
        self.ld, self.cents = tuple(w["f0ld_ld"]), tuple(w["f0ld_cents"])
        self.time = M.time_features()

    def __call__(self, cond: np.ndarray, z_norm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        b = cond.shape[0]
        x = np.concatenate([np.broadcast_to(cond[:, None], (b, M.N_COARSE, cond.shape[-1])), z_norm,
                            np.broadcast_to(self.time, (b,) + self.time.shape)], axis=-1).astype(np.float32)
        x = _leaky(_dense(x, self.dense_in))
        for d, conv in self.convs:
            x = x + _leaky(_conv1d(x, conv, d))
        return _dense(x, self.ld).reshape(b, M.N_LD), _dense(x, self.cents).reshape(b, M.N_COARSE)


def z_from_raw(z_raw: np.ndarray) -> np.ndarray:
    bound = np.float32(M.Z_BOUND)
    return bound * np.tanh(z_raw / bound)


def ld_from_raw(ld_raw: np.ndarray, ld_min: float, ld_max: float) -> np.ndarray:
    """`synth.models.ld_from_raw`: [B, 250] -> loudness dB [B, 1000]."""
    unit = np.float32(1.0) / (np.float32(1.0) + np.exp(-ld_raw))
    padded = np.concatenate([unit[:, :1], unit, unit[:, -1:]], axis=1)
    smooth = np.float32(0.25) * padded[:, :-2] + np.float32(0.5) * padded[:, 1:-1] + np.float32(0.25) * padded[:, 2:]
    ld_db = np.float32(ld_min) + np.float32(ld_max - ld_min) * smooth
    return _upsample(ld_db[..., None], M.N_FRAMES)[..., 0]


def cents_from_raw(cents_raw: np.ndarray) -> np.ndarray:
    """`synth.models.cents_from_raw`: [B, 50] -> cents [B, 1000] within +-MAX_CENTS."""
    return _upsample((np.float32(M.MAX_CENTS) * np.tanh(cents_raw))[..., None], M.N_FRAMES)[..., 0]


def shape_envelope(ld_db: np.ndarray, fast_decay: np.ndarray, long_release: np.ndarray) -> np.ndarray:
    """`synth.models.shape_envelope` (its rules are documented there): [B, 1000] dB -> same."""
    off, n = M.NOTE_OFF_FRAME, M.N_FRAMES
    fd = (np.reshape(fast_decay, (-1, 1)) > 0.5)
    lr = (np.reshape(long_release, (-1, 1)) > 0.5)
    attack = ld_db[:, : int(M.FAST_DECAY_ATTACK_S * M.FRAME_RATE)]
    a_peak = attack.max(axis=1, keepdims=True)
    since_a = (np.arange(n)[None, :] - np.argmax(attack, axis=1)[:, None]).astype(np.float32) / np.float32(M.FRAME_RATE)
    cap = a_peak - np.float32(M.FAST_DECAY_DB) * np.clip(since_a / np.float32(M.FAST_DECAY_S), 0.0, 1.0)
    capped = np.where(fd & (since_a >= 0.0), np.minimum(ld_db, cap), ld_db)
    held, rest = capped[:, :off], capped[:, off:]
    peak = held.max(axis=1, keepdims=True)
    after_peak = np.arange(off)[None, :] >= np.argmax(held, axis=1)[:, None]
    held = np.where(lr & after_peak, np.maximum(held, peak - np.float32(M.LONG_RELEASE_HOLD_DB)), held)
    level_off = held[:, -1:]
    tail = np.minimum.accumulate(np.concatenate([level_off, rest], axis=1), axis=1)[:, 1:]
    steps = np.arange(1, n - off + 1, dtype=np.float32)[None, :] / np.float32(M.FRAME_RATE)
    tail = np.where(lr, np.maximum(tail, level_off - np.float32(M.LONG_RELEASE_MAX_DB_PER_S) * steps), tail)
    return np.concatenate([held, tail], axis=1).astype(np.float32)


# Notes per pass through the networks. One: a note's floats then never depend on the other
# notes of a call (BLAS sums a product of 1 row and one of 2 rows in other orders), so a note
# renders to the same bytes in any batch (`synth.export.render_samples` relies on it), and a
# pass's activations ([500 frames, 128] per layer) stay in the CPU's cache. Measured on the
# 2-core machine, ms per note at 1, 2, 4, 8, 16 and 64 notes a pass: 4.5, 4.4, 4.9, 5.5, 7.2, 7.1.
NOTES_PER_PASS = 1


class NumpyNetworks:
    """The whole neural half of `Generator.run_neural` in numpy: knobs -> VAE latent ->
    z_generator (with tag guidance) -> f0_ld_generator -> envelope rules -> DDSP decoder ->
    synthesizer controls, with the output calibration. Stateless after construction, so any
    number of threads may call it at once."""

    def __init__(self, z_decoder: Weights, f0_ld: Weights, decoder: NumpyDecoder, *, z_mean, z_std, ld_min: float, ld_max: float,
                 knob_radius: float, guidance_z: float, guidance_loudness: float, guided_tags):
        self.z_decoder = ZDecoder(z_decoder)
        self.f0_ld = F0LdGenerator(f0_ld)
        self.decoder = decoder
        self.z_mean = np.asarray(z_mean, np.float32)
        self.z_std = np.asarray(z_std, np.float32)
        self.ld_min, self.ld_max = float(ld_min), float(ld_max)
        self.knob_radius = np.float32(knob_radius)
        self.guidance_z, self.guidance_loudness = float(guidance_z), float(guidance_loudness)
        unknown = sorted(set(guided_tags) - set(QUALITIES))
        if unknown:
            raise ValueError(f"guided_tags: unknown tags {unknown}; expected some of {list(QUALITIES)}")
        self.clear = np.ones(M.COND_DIM, np.float32)
        self.clear[[M.QUALITY_OFFSET + QUALITIES.index(q) for q in guided_tags]] = 0.0
        self.lr_col = M.QUALITY_OFFSET + QUALITIES.index("long_release")
        self.fd_col = M.QUALITY_OFFSET + QUALITIES.index("fast_decay")

    def latent(self, knobs: np.ndarray) -> np.ndarray:
        """The performer's knobs [B, 16] -> the squashed VAE latent (`knobs_to_latent`,
        `knob_region`, `squash_latent`)."""
        lat = np.asarray(knobs, np.float32) @ M.KNOB_MIX.T
        r = np.sqrt(np.sum(lat * lat, axis=-1, keepdims=True))
        lat = lat * (self.knob_radius * np.tanh(r / self.knob_radius) / np.maximum(r, np.float32(1e-6)))
        squash = np.float32(M.LATENT_SQUASH)
        return (squash * np.tanh(lat / squash)).astype(np.float32)

    def curves(self, lat: np.ndarray, cond: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`synth.models.generate_curves` at inference: (z_norm [B, 50, 16], loudness dB
        [B, 1000] after the envelope rules, raw cents [B, 50]).

        Guidance runs the generators again with the guided tags cleared, and moves the result
        `guidance` times the tagged-minus-untagged difference. Two passes the graph makes are
        skipped here, because their results are known: the untagged pass of a note without
        guided tags (it is the tagged pass), and the untagged f0_ld pass when the loudness
        guidance is 1 (the result is then the tagged pass's loudness).
        """
        n = cond.shape[0]
        long_release = cond[:, self.lr_col].copy()
        keep = np.ones(M.COND_DIM, np.float32)
        keep[self.lr_col] = 0.0
        cond = cond * keep  # long_release is a rule at inference (see generate_curves)
        untagged = cond * self.clear
        guided = np.flatnonzero(np.any(untagged != cond, axis=1))
        bound = np.float32(M.Z_BOUND)
        z_all = z_from_raw(self.z_decoder(np.concatenate([lat, lat[guided]], 0),
                                          np.concatenate([cond, untagged[guided]], 0)))
        z_norm, z0 = z_all[:n].copy(), z_all[n:]
        if len(guided) and self.guidance_z != 1.0:
            z_norm[guided] = np.clip(z0 + np.float32(self.guidance_z) * (z_norm[guided] - z0), -bound, bound)
        if self.guidance_loudness == 1.0 or not len(guided):
            ld_raw, cents_raw = self.f0_ld(cond, z_norm)
            ld = ld_from_raw(ld_raw, self.ld_min, self.ld_max)
        else:
            ld_raw, cents_raw = self.f0_ld(np.concatenate([cond, untagged[guided]], 0),
                                           np.concatenate([z_norm, z0], 0))
            ld_all = ld_from_raw(ld_raw, self.ld_min, self.ld_max)
            ld, ld0 = ld_all[:n].copy(), ld_all[n:]
            ld[guided] = np.clip(ld0 + np.float32(self.guidance_loudness) * (ld[guided] - ld0),
                                 np.float32(self.ld_min), np.float32(self.ld_max))
            cents_raw = cents_raw[:n]
        ld = shape_envelope(ld, cond[:, self.fd_col], long_release)
        return z_norm, ld, cents_raw

    def __call__(self, cond: np.ndarray, knobs: np.ndarray, pitch: np.ndarray, decode_from: int = 0) -> dict[str, Any]:
        """cond [B, COND_DIM], knobs [B, 16], pitch [B] -> what `Generator.run_neural` returns.
        Runs NOTES_PER_PASS notes at a time. decode_from: the synthesizer controls of the
        decoder frames from this one on only (`Generator.run_neural`)."""
        cond = np.asarray(cond, np.float32)
        pitch = np.asarray(pitch, np.float32)
        knobs = np.asarray(knobs, np.float32)
        if isinstance(decode_from, bool) or not isinstance(decode_from, (int, np.integer)) \
                or not 0 <= decode_from < M.N_DECODER_FRAMES:
            raise ValueError(f"decode_from: expected a decoder frame in 0..{M.N_DECODER_FRAMES - 1}, got {decode_from!r}")
        if len(cond) <= NOTES_PER_PASS:
            return self._run(cond, knobs, pitch, int(decode_from))
        parts = [self._run(cond[i : i + NOTES_PER_PASS], knobs[i : i + NOTES_PER_PASS], pitch[i : i + NOTES_PER_PASS],
                           int(decode_from))
                 for i in range(0, len(cond), NOTES_PER_PASS)]
        return {"controls": {k: np.concatenate([p["controls"][k] for p in parts]) for k in parts[0]["controls"]},
                **{k: np.concatenate([p[k] for p in parts]) for k in ("z", "f0_hz", "loudness_db", "cents")}}

    def _run(self, cond: np.ndarray, knobs: np.ndarray, pitch: np.ndarray, decode_from: int = 0) -> dict[str, Any]:
        z_norm, ld, cents_raw = self.curves(self.latent(knobs), cond)
        cents = cents_from_raw(cents_raw)
        f0 = midi_to_hz(pitch[:, None] + cents / np.float32(100.0)).astype(np.float32)
        z_enc = z_norm * self.z_std + self.z_mean
        f0d, ldd = _pairs(f0), _pairs(ld)
        zd = _upsample(z_enc, M.N_DECODER_FRAMES)
        # From decode_from on, with the decoder's context before it (frame-wise but for its
        # depthwise convolutions): those frames come out as the whole window's, to rounding.
        lo = max(0, decode_from - self.decoder.context)
        c = self.decoder(f0d[:, lo:], ldd[:, lo:], zd[:, lo:])
        k = decode_from - lo
        controls = {"amplitude": c["amplitude"][:, k:, None], "harmonic_distribution": c["harmonic_distribution"][:, k:],
                    "noise_magnitudes": c["noise_magnitudes"][:, k:], "f0_hz": f0d[:, decode_from:, None]}
        return {"controls": controls, "z": _upsample(z_enc, M.N_FRAMES), "f0_hz": f0, "loudness_db": ld,
                "cents": cents}
