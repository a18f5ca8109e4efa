"""The generator's neural networks (Keras 3 on TensorFlow) and the plumbing they share.

Four networks, all small enough to train on a 2-core CPU and to run one note in a few ms:

* **encoder** (training only): per-frame MFCCs of the real note, pooled onto a coarse grid of
  `N_COARSE` = 50 steps (80 ms each) -> z, 16 values per coarse step (linear, L2-regularised).
  z lives on the coarse grid on purpose: it is smooth by construction once linearly upsampled to
  the 1000 frames, and it is exactly what the z_generator has to produce (no information that
  the generator could not model is hidden in frame-rate wiggles).
* **decoder** (the DDSP decoder): per frame, (f0 as MIDI/127, loudness scaled to ~[0, 1], z) ->
  a per-frame MLP plus three residual blocks of *dilated depthwise* 1-D convolutions (temporal
  context of +-7 frames = +-56 ms) -> raw controls for `synth.processors.DDSPSynth` (amplitude,
  harmonic distribution, noise bands). No GRU: a 1000-step recurrence costs tens of ms on a
  CPU, depthwise convolutions cost a fraction of a ms, and the loudness input already carries
  the envelope. The decoder runs at `DECODER_FRAME_RATE` = 125 frames/s (8 ms; f0 and loudness
  are averaged over pairs of the data's 250 frames/s): measured on the 2-core CPU, the network
  costs ~4 ms per note at 1000 frames and ~1.7 ms at 500, and the 25 ms budget for a whole 48 kHz
  note is mostly the synthesis. The synthesizer interpolates controls linearly to audio rate, so
  8 ms frames still give smooth envelopes.
* **z_generator**: a conditional VAE over the coarse z trajectory [50, 16]. The posterior
  q(latent | z, cond) is only used in training (and for the end-to-end stage); the decoder
  p(z | latent, cond) is an MLP to a [50, 32] sketch refined by two 1-D convolutions with time
  features. The performer's `latent_sample` is mixed into the VAE latent (prior N(0, 1)) and
  kept inside the prior's ball of radius KNOB_RADIUS (`knob_region`); each value is then
  squashed by `LATENT_SQUASH * tanh(x / LATENT_SQUASH)` so that the allowed range -7..7 stays
  inside the region the decoder saw in training (|latent| < ~3): sweeping a knob from -7 to +7
  changes the sound smoothly and monotonically in the squashed value, and never feeds the
  network an input it extrapolates wildly from.
* **f0_ld_generator**: (cond, z) -> loudness on a 250-step grid (16 ms) and an f0 deviation in
  cents on the 50-step grid. Loudness is bounded by a sigmoid between the training minimum and
  maximum, smoothed by a fixed [1/4, 1/2, 1/4] kernel and linearly upsampled to 1000 frames;
  cents are `MAX_CENTS * tanh(.)` and upsampled from 50 steps, so `f0_hz = midi_to_hz(pitch +
  cents / 100)` sits on the requested pitch by construction and cannot jitter.

Conditioning (`condition_vector`): pitch as (pitch - 64) / 64 with sin/cos features at three
frequencies (7 values), velocity / 127 (1), source one-hot (3), qualities multi-hot (10): 21.

Every layer has an explicit name, so that `*.weights.h5` files load in any process whatever
Keras' global name counters say.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from synth.params import LATENT_DIM, QUALITIES, SOURCES, NoteParams
from synth.units import SAMPLE_RATE, midi_to_hz  # noqa: F401  (SAMPLE_RATE: training audio)

N_FRAMES = 1000  # 4 s at 250 frames/s (the data set's f0 and loudness)
FRAME_RATE = 250
DECODER_FRAME_RATE = 125  # the decoder and synthesizer controls
DECODER_DOWN = FRAME_RATE // DECODER_FRAME_RATE
N_DECODER_FRAMES = N_FRAMES // DECODER_DOWN
HOP = SAMPLE_RATE // FRAME_RATE  # 64 samples at 16 kHz
N_COARSE = 50  # z and cents grid: 80 ms steps
N_LD = 250  # loudness grid: 16 ms steps
Z_DIM = 16
N_MFCC = 30
N_MELS = 64
MFCC_FFT = 1024
COND_DIM = 7 + 1 + len(SOURCES) + len(QUALITIES)
QUALITY_OFFSET = COND_DIM - len(QUALITIES)  # the quality tags are the last 10 conditioning values
N_TIME_FEATURES = 11
LATENT_SQUASH = 3.0
# The learned reverb's decay envelope for new autoencoders: 60 dB/s (RT60 = 1 s). The data's
# notes (FluidSynth's reverb on) fall 30 dB within 1 s of note-off for 91-95 % of GM presets.
REVERB_DECAY_DB_PER_S = 60.0
# The knobs' latent is kept inside the ball the VAE's prior N(0, I) fills (its typical radius is
# sqrt(LATENT_DIM)): see `knob_region`. The z_generator's config holds the value it shipped with.
KNOB_RADIUS = float(np.sqrt(16))
MAX_CENTS = 50.0
Z_BOUND = 4.0
# Loudness scaling for the decoder input: (ld_db - LD_OFFSET_DB) / LD_RANGE_DB.
LD_OFFSET_DB = -120.0
LD_RANGE_DB = 120.0


@dataclass
class ModelConfig:
    """Sizes of the four networks (stored in each checkpoint's config.json)."""

    n_harmonics: int = 60
    n_noise_bands: int = 65
    encoder_hidden: int = 128
    decoder_hidden: int = 128
    decoder_dilations: tuple[int, ...] = (1, 2, 4)
    zgen_hidden: int = 256
    f0ld_hidden: int = 128
    # The learned reverb's fixed decay envelope (synth.processors.Reverb); 0 in configs from
    # before it existed. New autoencoders train with REVERB_DECAY_DB_PER_S.
    reverb_decay_db_per_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["decoder_dilations"] = list(self.decoder_dilations)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        d = dict(d)
        if "decoder_dilations" in d:
            d["decoder_dilations"] = tuple(d["decoder_dilations"])
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    @classmethod
    def from_core(cls, **overrides: Any) -> "ModelConfig":
        """Default sizes with the harmonic and noise counts of `synth.core`."""
        from synth import core

        return cls(n_harmonics=core.N_HARMONICS, n_noise_bands=core.N_NOISE_BANDS, **overrides)


# ---------------------------------------------------------------------------------------------
# Conditioning and fixed (non-learned) helpers, numpy and TF twins.


def condition_arrays(
    pitch: np.ndarray, velocity: np.ndarray, source: np.ndarray, qualities: np.ndarray
) -> np.ndarray:
    """Conditioning vectors [N, COND_DIM] float32.

    Args:
      pitch: [N] MIDI pitch. velocity: [N] MIDI velocity 1..127.
      source: [N] int index into `SOURCES`. qualities: [N, 10] 0/1 in `QUALITIES` order.
    """
    p = (np.asarray(pitch, np.float64) - 64.0) / 64.0
    feats = [p]
    for k in (1.0, 2.0, 4.0):
        feats += [np.sin(np.pi * k * p), np.cos(np.pi * k * p)]
    feats.append(np.asarray(velocity, np.float64) / 127.0)
    pitch_vel = np.stack(feats, axis=-1)
    onehot = np.eye(len(SOURCES))[np.asarray(source, np.int64)]
    q = np.asarray(qualities, np.float64).reshape(len(p), len(QUALITIES))
    return np.concatenate([pitch_vel, onehot, q], axis=-1).astype(np.float32)


def condition_vector(params: NoteParams) -> np.ndarray:
    """[COND_DIM] conditioning of one note."""
    return condition_arrays(
        np.array([params.pitch]),
        np.array([params.velocity]),
        np.array([SOURCES.index(params.source)]),
        np.array([params.quality_vector]),
    )[0]


def time_features(n_steps: int = N_COARSE) -> np.ndarray:
    """[n_steps, N_TIME_FEATURES]: where each coarse step lies in the 4 s note.

    t in [0, 1] plus sin/cos at 4 frequencies, time since the note-off at 3 s (NSynth notes are
    3 s held + 1 s release) and a soft note-off step.
    """
    t = (np.arange(n_steps) + 0.5) / n_steps
    feats = [t]
    for k in (1, 2, 4, 8):
        feats += [np.sin(np.pi * k * t), np.cos(np.pi * k * t)]
    seconds = 4.0 * t
    feats.append(np.maximum(seconds - 3.0, 0.0))
    feats.append(1.0 / (1.0 + np.exp(-(seconds - 3.0) / 0.05)))
    return np.stack(feats, axis=-1).astype(np.float32)


def upsample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_in, n_out] linear-interpolation weights between step centres (edges held)."""
    pos = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    pos = np.clip(pos, 0.0, n_in - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = pos - lo
    w = np.zeros((n_in, n_out), np.float64)
    w[lo, np.arange(n_out)] += 1.0 - frac
    w[hi, np.arange(n_out)] += frac
    return w.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# TF pieces (imported lazily so that numpy-only users never load TensorFlow).


def _tf():
    import tensorflow as tf

    return tf


def _keras():
    import keras

    return keras


def tf_upsample(x, n_out: int):
    """Linear upsampling along axis 1: [B, n_in, C] -> [B, n_out, C]."""
    tf = _tf()
    n_in = x.shape[1]
    w = tf.constant(upsample_matrix(n_in, n_out))
    return tf.einsum("bic,io->boc", x, w)


def tf_hz_to_midi(f_hz):
    tf = _tf()
    return 69.0 + 12.0 * tf.math.log(tf.maximum(f_hz, 1e-3) / 440.0) / np.log(2.0)


def tf_midi_to_hz(midi):
    tf = _tf()
    return 440.0 * tf.pow(2.0, (midi - 69.0) / 12.0)


def tf_mfcc_coarse(audio):
    """Encoder input features from 16 kHz audio: [B, 64000] -> [B, N_COARSE, N_MFCC].

    Frames of 1024 samples centred on i * 64 (as the data set's f0 and loudness), 64 mel bands
    30 Hz..8 kHz, log, DCT -> 30 MFCCs, averaged over each 20-frame (80 ms) coarse step.
    """
    tf = _tf()
    audio = tf.convert_to_tensor(audio, tf.float32)
    pad = MFCC_FFT // 2
    padded = tf.pad(audio, [[0, 0], [pad, pad]])
    stft = tf.signal.stft(padded, frame_length=MFCC_FFT, frame_step=HOP, fft_length=MFCC_FFT)
    n_frames = audio.shape[1] // HOP
    mag = tf.abs(stft[:, :n_frames])
    mel_w = tf.signal.linear_to_mel_weight_matrix(N_MELS, MFCC_FFT // 2 + 1, SAMPLE_RATE, 30.0, 8000.0)
    log_mel = tf.math.log(tf.tensordot(mag, mel_w, 1) + 1e-5)
    mfcc = tf.signal.mfccs_from_log_mel_spectrograms(log_mel)[..., :N_MFCC]
    per = n_frames // N_COARSE
    return tf.reduce_mean(tf.reshape(mfcc, [-1, N_COARSE, per, N_MFCC]), axis=2)


def to_decoder_rate(x):
    """[B, T] at 250 frames/s -> [B, T // 2] at 125 frames/s (mean of each pair of frames)."""
    tf = _tf()
    return tf.reduce_mean(tf.reshape(x, [-1, int(x.shape[1]) // DECODER_DOWN, DECODER_DOWN]), axis=-1)


def crop_frames(x, start, n: int):
    """x[:, start : start + n] with a static length n (start may be a tensor)."""
    tf = _tf()
    begin = tf.stack([0, start] + [0] * (x.shape.rank - 2))
    size = [-1, n] + [-1] * (x.shape.rank - 2)
    out = tf.slice(x, begin, size)
    out.set_shape([None, n] + list(x.shape[2:]))
    return out


def _dilated_depthwise_class():
    keras = _keras()

    class DilatedDepthwise(keras.layers.Layer):
        """Depthwise 1-D convolution, kernel 3, 'same' padding: y[t] = w0 x[t-d] + w1 x[t] +
        w2 x[t+d] + b per channel. Three shifted multiply-adds: several times faster on a CPU
        than Keras' DepthwiseConv1D with dilation (which goes through space_to_batch)."""

        def __init__(self, dilation: int, **kwargs):
            super().__init__(**kwargs)
            self.dilation = int(dilation)

        def build(self, input_shape):
            ch = int(input_shape[-1])
            self.kernel = self.add_weight(name="kernel", shape=(3, ch), initializer="glorot_uniform")
            self.bias = self.add_weight(name="bias", shape=(ch,), initializer="zeros")

        def call(self, x):
            d = self.dilation
            ops = keras.ops
            p = ops.pad(x, [[0, 0], [d, d], [0, 0]])
            return p[:, : -2 * d] * self.kernel[0] + x * self.kernel[1] + p[:, 2 * d :] * self.kernel[2] + self.bias

    return DilatedDepthwise


def build_encoder(cfg: ModelConfig):
    """features [B, 50, N_MFCC] (already standardised) -> z [B, 50, 16], linear.

    Linear on purpose: a tanh output (tried first) saturated within 1000 steps into binary
    codes with half the dimensions dead, which a generator cannot interpolate smoothly. The
    autoencoder stage keeps z's scale in check with a small L2 penalty instead.
    """
    keras = _keras()
    L = keras.layers
    h = cfg.encoder_hidden
    x_in = keras.Input((N_COARSE, N_MFCC), name="features")
    x = L.Dense(h, name="enc_in")(x_in)
    x = L.LeakyReLU(0.2, name="enc_act0")(x)
    for i, d in enumerate((1, 2, 4)):
        y = L.Conv1D(h, 3, dilation_rate=d, padding="same", name=f"enc_conv{i}")(x)
        y = L.LayerNormalization(name=f"enc_norm{i}")(y)
        y = L.LeakyReLU(0.2, name=f"enc_act{i + 1}")(y)
        x = L.Add(name=f"enc_res{i}")([x, y])
    z = L.Dense(Z_DIM, name="enc_z")(x)
    return keras.Model(x_in, z, name="encoder")


def build_decoder(cfg: ModelConfig):
    """(f0_scaled [B,T,1], ld_scaled [B,T,1], z [B,T,16]) -> raw controls [B,T,1+H+N].

    f0_scaled = MIDI / 127, ld_scaled = (dB - LD_OFFSET_DB) / LD_RANGE_DB. Works for any T; the
    model is trained and run at DECODER_FRAME_RATE.
    """
    keras = _keras()
    L = keras.layers
    h = cfg.decoder_hidden
    f0 = keras.Input((None, 1), name="f0_scaled")
    ld = keras.Input((None, 1), name="ld_scaled")
    z = keras.Input((None, Z_DIM), name="z")
    x = L.Concatenate(name="dec_cat")([f0, ld, z])
    x = L.Dense(h, name="dec_in")(x)
    x = L.LeakyReLU(0.2, name="dec_act_in")(x)
    x = L.Dense(h, name="dec_in2")(x)
    x = L.LayerNormalization(name="dec_norm_in")(x)
    x = L.LeakyReLU(0.2, name="dec_act_in2")(x)
    DilatedDepthwise = _dilated_depthwise_class()
    for i, d in enumerate(cfg.decoder_dilations):
        y = DilatedDepthwise(d, name=f"dec_dw{i}")(x)
        y = L.Dense(h, name=f"dec_pw{i}")(y)
        y = L.LeakyReLU(0.2, name=f"dec_act{i}")(y)
        x = L.Add(name=f"dec_res{i}")([x, y])
    out = L.Dense(1 + cfg.n_harmonics + cfg.n_noise_bands, name="dec_out")(x)
    return keras.Model([f0, ld, z], out, name="decoder")


def build_z_posterior(cfg: ModelConfig):
    """(z_norm [B,50,16], cond [B,COND_DIM]) -> (mu [B,16], logvar [B,16])."""
    keras = _keras()
    L = keras.layers
    h = cfg.zgen_hidden
    z = keras.Input((N_COARSE, Z_DIM), name="z_norm")
    c = keras.Input((COND_DIM,), name="cond")
    x = L.Concatenate(name="post_cat")([L.Flatten(name="post_flat")(z), c])
    x = L.Dense(h, name="post_d0")(x)
    x = L.LeakyReLU(0.2, name="post_a0")(x)
    x = L.Dense(h, name="post_d1")(x)
    x = L.LeakyReLU(0.2, name="post_a1")(x)
    mu = L.Dense(LATENT_DIM, name="post_mu")(x)
    logvar = L.Dense(LATENT_DIM, name="post_logvar")(x)
    return keras.Model([z, c], [mu, logvar], name="z_posterior")


def build_z_decoder(cfg: ModelConfig):
    """(latent [B,16] (already squashed), cond, time_features [B,50,11]) -> z_raw [B,50,16].

    `z_from_raw` bounds it: z_norm = 4 tanh(z_raw / 4), within 4 standard deviations.
    """
    keras = _keras()
    L = keras.layers
    h = cfg.zgen_hidden
    lat = keras.Input((LATENT_DIM,), name="latent")
    c = keras.Input((COND_DIM,), name="cond")
    tfe = keras.Input((N_COARSE, N_TIME_FEATURES), name="time_features")
    x = L.Concatenate(name="zdec_cat")([lat, c])
    x = L.Dense(h, name="zdec_d0")(x)
    x = L.LeakyReLU(0.2, name="zdec_a0")(x)
    x = L.Dense(h, name="zdec_d1")(x)
    x = L.LeakyReLU(0.2, name="zdec_a1")(x)
    x = L.Dense(N_COARSE * 32, name="zdec_sketch")(x)
    x = L.Reshape((N_COARSE, 32), name="zdec_reshape")(x)
    x = L.Concatenate(name="zdec_tcat")([x, tfe])
    x = L.Conv1D(64, 5, padding="same", name="zdec_conv0")(x)
    x = L.LeakyReLU(0.2, name="zdec_a2")(x)
    z_raw = L.Conv1D(Z_DIM, 3, padding="same", name="zdec_conv1")(x)
    return keras.Model([lat, c, tfe], z_raw, name="z_decoder")


def build_f0_ld(cfg: ModelConfig):
    """(cond [B,COND_DIM], z_norm [B,50,16], time_features [B,50,11]) ->
    (ld_unit [B,250] in (0, 1) before smoothing/bounding, cents_raw [B,50])."""
    keras = _keras()
    L = keras.layers
    h = cfg.f0ld_hidden
    c = keras.Input((COND_DIM,), name="cond")
    z = keras.Input((N_COARSE, Z_DIM), name="z_norm")
    tfe = keras.Input((N_COARSE, N_TIME_FEATURES), name="time_features")
    cb = L.RepeatVector(N_COARSE, name="f0ld_repeat")(c)
    x = L.Concatenate(name="f0ld_cat")([cb, z, tfe])
    x = L.Dense(h, name="f0ld_in")(x)
    x = L.LeakyReLU(0.2, name="f0ld_a_in")(x)
    for i, d in enumerate((1, 2, 4)):
        y = L.Conv1D(h, 5, dilation_rate=d, padding="same", name=f"f0ld_conv{i}")(x)
        y = L.LeakyReLU(0.2, name=f"f0ld_a{i}")(y)
        x = L.Add(name=f"f0ld_res{i}")([x, y])
    ld = L.Dense(N_LD // N_COARSE, name="f0ld_ld")(x)
    ld = L.Reshape((N_LD,), name="f0ld_ld_flat")(ld)
    cents = L.Dense(1, name="f0ld_cents")(x)
    cents = L.Reshape((N_COARSE,), name="f0ld_cents_flat")(cents)
    return keras.Model([c, z, tfe], [ld, cents], name="f0_ld_generator")


def ld_from_raw(ld_raw, ld_min: float, ld_max: float):
    """Raw loudness head [B,250] -> loudness dB [B,1000]: bounded, smoothed, upsampled (TF)."""
    tf = _tf()
    unit = tf.sigmoid(ld_raw)
    padded = tf.concat([unit[:, :1], unit, unit[:, -1:]], axis=1)
    smooth = 0.25 * padded[:, :-2] + 0.5 * padded[:, 1:-1] + 0.25 * padded[:, 2:]
    ld_db = ld_min + (ld_max - ld_min) * smooth
    return tf_upsample(ld_db[..., None], N_FRAMES)[..., 0]


def generate_curves(z_decoder, f0_ld, lat, cond, ld_min: float, ld_max: float,
                    guidance_z: float = 1.0, guidance_loudness: float = 1.0, training: bool = False,
                    guided_tags: Sequence[str] | None = None):
    """The two generators with quality-tag guidance (TF), as inference and end-to-end training
    run them: lat [B, 16] (already squashed), cond [B, COND_DIM] -> (z_norm [B, 50, 16],
    loudness dB [B, 1000] after `shape_envelope`, raw cents head [B, 50]).

    Guidance: the generators also run with the guided tags cleared (`guided_tags`, default all),
    and the result moves `guidance` times the tagged-minus-untagged difference from the untagged
    one (1 = no guidance; notes without guided tags are unchanged). The timbre (z) and the
    loudness curve have separate strengths.
    """
    tf = _tf()
    n = tf.shape(cond)[0]
    tfe = tf.constant(time_features()[None])
    lr_col = QUALITY_OFFSET + QUALITIES.index("long_release")
    long_release = cond[:, lr_col]
    if not training:
        # At inference long_release is a rule only (shape_envelope here, synth.envelope on the
        # sound): the networks play the note without the tag. NSynth's long_release is a note
        # "with a long decay after note-off"; learned, the tag also changed the held timbre and
        # lowered the held level (by 3 to 9 dB in 29 % of 72 timbres, mostly through z), which a
        # performer asking for a longer release does not want. Training still conditions on it.
        keep = np.ones(COND_DIM, np.float32)
        keep[lr_col] = 0.0
        cond = cond * tf.constant(keep)[None]
    if guidance_z == 1.0 and guidance_loudness == 1.0:
        t = tf.repeat(tfe, n, axis=0)
        z_norm = z_from_raw(z_decoder([lat, cond, t], training=training))
        ld_raw, cents_raw = f0_ld([cond, z_norm, t], training=training)
        ld = ld_from_raw(ld_raw, ld_min, ld_max)
    else:
        names = QUALITIES if guided_tags is None else guided_tags
        unknown = sorted(set(names) - set(QUALITIES))
        if unknown:
            raise ValueError(f"guided_tags: unknown tags {unknown}; expected some of {list(QUALITIES)}")
        clear = np.ones(COND_DIM, np.float32)
        clear[[QUALITY_OFFSET + QUALITIES.index(q) for q in names]] = 0.0
        untagged = cond * tf.constant(clear)[None]
        t = tf.repeat(tfe, 2 * n, axis=0)
        both = tf.concat([cond, untagged], 0)
        z_both = z_from_raw(z_decoder([tf.concat([lat, lat], 0), both, t], training=training))
        z1, z0 = z_both[:n], z_both[n:]
        z_norm = tf.clip_by_value(z0 + guidance_z * (z1 - z0), -Z_BOUND, Z_BOUND)
        ld_raw, cents_raw = f0_ld([both, tf.concat([z_norm, z0], 0), t], training=training)
        ld_both = ld_from_raw(ld_raw, ld_min, ld_max)
        ld = tf.clip_by_value(ld_both[n:] + guidance_loudness * (ld_both[:n] - ld_both[n:]), ld_min, ld_max)
        cents_raw = cents_raw[:n]
    ld = shape_envelope(ld, cond[:, QUALITY_OFFSET + QUALITIES.index("fast_decay")], long_release)
    return z_norm, ld, cents_raw


NOTE_OFF_FRAME = 3 * FRAME_RATE  # NSynth's note-off at 3 s
# fast_decay notes (see shape_envelope): after the peak the level falls at least this far ...
FAST_DECAY_DB = 36.0
# ... within this time (NSynth: 30 dB down before note-off; here 30 dB within 1.25 s of the peak) ...
FAST_DECAY_S = 1.5
# ... counted from the loudest point of the attack (the first this many seconds): a fast_decay
# note does not swell later.
FAST_DECAY_ATTACK_S = 0.5
# long_release notes: the held level stays within this many dB of the peak (the long_release
# analyzer needs the note within 40 dB of its peak at note-off; 36 dB leaves room for fast_decay's
# 30 dB on the same note) ...
LONG_RELEASE_HOLD_DB = 36.0
# ... and the release falls at most this fast (30 dB takes 0.75 s; the tag's threshold is 0.5 s).
LONG_RELEASE_MAX_DB_PER_S = 40.0


def _cummin_time(x):
    """Running minimum along axis 1 (TF; log2(T) shifted minimums, XLA-friendly)."""
    tf = _tf()
    n = int(x.shape[1])
    shift = 1
    while shift < n:
        pad = tf.fill([tf.shape(x)[0], shift], tf.constant(np.inf, x.dtype))
        x = tf.minimum(x, tf.concat([pad, x[:, :-shift]], axis=1))
        shift *= 2
    return x


def shape_envelope(ld_db, fast_decay, long_release):
    """Rules on a generated loudness curve [B, 1000] dB (TF), applied at inference.

    The network learns the envelope tags from notes that carry them, but a performer may ask
    for any combination (percussive + long_release occurs in 776 of the 37 419 training notes,
    fast_decay + long_release in 10), and tag guidance extrapolates. So what the envelope tags
    mean holds by construction, as the pitch does:

    1. After note-off (3 s) the loudness never rises: a release fades. (Guidance alone swelled
       `long_release` releases by up to 30 dB above the held note.)
    2. fast_decay (`fast_decay` [B], 0/1): after the loudest point of its attack (the first
       FAST_DECAY_ATTACK_S) the level falls at least FAST_DECAY_DB within FAST_DECAY_S (a cap
       that a faster decay stays under).
    3. long_release (`long_release` [B], 0/1): there is something left to release. After its
       peak the held level stays within LONG_RELEASE_HOLD_DB of the peak, and the release falls
       at most LONG_RELEASE_MAX_DB_PER_S.
    Notes without these tags are changed by rule 1 only.
    """
    tf = _tf()
    off = NOTE_OFF_FRAME
    fd = tf.reshape(fast_decay, [-1, 1]) > 0.5
    lr = tf.reshape(long_release, [-1, 1]) > 0.5
    attack = ld_db[:, : int(FAST_DECAY_ATTACK_S * FRAME_RATE)]
    a_peak = tf.reduce_max(attack, axis=1, keepdims=True)
    since_a = tf.cast(tf.range(N_FRAMES)[None, :] - tf.cast(tf.argmax(attack, axis=1), tf.int32)[:, None],
                      ld_db.dtype) / FRAME_RATE
    cap = a_peak - FAST_DECAY_DB * tf.clip_by_value(since_a / FAST_DECAY_S, 0.0, 1.0)
    capped = tf.where(fd & (since_a >= 0.0), tf.minimum(ld_db, cap), ld_db)
    held, rest = capped[:, :off], capped[:, off:]
    peak = tf.reduce_max(held, axis=1, keepdims=True)
    after_peak = tf.range(off)[None, :] >= tf.cast(tf.argmax(held, axis=1), tf.int32)[:, None]
    held = tf.where(lr & after_peak, tf.maximum(held, peak - LONG_RELEASE_HOLD_DB), held)
    level_off = held[:, -1:]
    tail = _cummin_time(tf.concat([level_off, rest], axis=1))[:, 1:]
    steps = tf.range(1, N_FRAMES - off + 1, dtype=ld_db.dtype)[None, :] / FRAME_RATE
    tail = tf.where(lr, tf.maximum(tail, level_off - LONG_RELEASE_MAX_DB_PER_S * steps), tail)
    return tf.concat([held, tail], axis=1)


def cents_from_raw(cents_raw):
    """Raw cents head [B,50] -> cents [B,1000] within +-MAX_CENTS (TF)."""
    tf = _tf()
    return tf_upsample((MAX_CENTS * tf.tanh(cents_raw))[..., None], N_FRAMES)[..., 0]


def z_from_raw(z_raw):
    """z_decoder output -> standardised z within +-Z_BOUND (smooth, never extrapolates)."""
    tf = _tf()
    return Z_BOUND * tf.tanh(z_raw / Z_BOUND)


def _knob_mix() -> np.ndarray:
    from scipy.linalg import hadamard

    return (hadamard(LATENT_DIM) / np.sqrt(LATENT_DIM)).astype(np.float32)


KNOB_MIX = _knob_mix()


def knobs_to_latent(knobs):
    """The performer's 16 knobs -> the VAE latent: a fixed orthogonal (Hadamard) mix.

    A VAE switches off the latent dimensions it does not need (their posterior collapses to
    the prior and the decoder ignores them): trained here, only a handful carry information.
    Mixing every knob into every latent dimension (|weight| = 1/4 each) makes each of the 16
    knobs change the sound. Orthogonal, so the prior N(0, I) is the same in both spaces and
    knobs = 0 is still the centre.
    """
    tf = _tf()
    return tf.matmul(knobs, tf.constant(KNOB_MIX), transpose_b=True)


def knob_region(latent, radius: float = KNOB_RADIUS):
    """The mixed knobs -> a latent inside the ball of `radius` (TF; a smooth radial squash).

    The prior N(0, I) of a 16-dimensional VAE puts its samples near the sphere of radius 4
    (sqrt(16)), and the decoder was trained on posterior samples there. The knobs' cube
    [-7, 7]^16 reaches radius 28 at its corners and ~16 at a typical point: outside what training
    covered, where the decoder extrapolates and one note in ten fell silent (peaks of -80 to
    -130 dBFS) or off pitch. `radius * tanh(r / radius)` along the same direction maps the
    whole cube into the ball, leaves the centre alone (the Jacobian at 0 is the identity) and
    stays monotonic along every ray, so a knob sweep still moves the sound smoothly.
    """
    tf = _tf()
    r = tf.norm(latent, axis=-1, keepdims=True)
    scale = radius * tf.tanh(r / radius) / tf.maximum(r, 1e-6)
    return latent * scale


def squash_latent(latent):
    """The performer's latent (-7..7) -> the VAE latent the decoder sees (see module doc)."""
    tf = _tf()
    return LATENT_SQUASH * tf.tanh(latent / LATENT_SQUASH)


def scale_output(controls: dict, gain: float) -> dict:
    """The synthesizer's controls with the output calibration applied: its harmonic amplitude
    and noise magnitudes times `gain` (linear; the synthesis and reverb are linear in both, so
    the note is `gain` times louder, sample for sample). Works on TF tensors and numpy arrays."""
    if gain == 1.0:
        return controls
    out = dict(controls)
    for key in ("amplitude", "noise_magnitudes"):
        if key in out:
            out[key] = out[key] * np.float32(gain)
    return out


def split_decoder_output(raw, cfg: ModelConfig):
    """raw [B,T,1+H+N] -> (amplitude [B,T,1], harmonic_distribution [B,T,H], noise [B,T,N])."""
    h = cfg.n_harmonics
    return raw[..., :1], raw[..., 1 : 1 + h], raw[..., 1 + h :]


def decode_crop(decoder, synth, cfg: ModelConfig, z_coarse, f0_hz, ld_db, start, n_frames: int, training: bool):
    """Training-time decoder + synthesizer on a crop (TF).

    z_coarse [B, 50, 16] of the whole note; f0_hz, ld_db [B, n_frames] of the crop at 250
    frames/s starting at data frame `start` (even). Returns 16 kHz audio [B, n_frames * 64].
    """
    tf = _tf()
    d0 = start // DECODER_DOWN
    n_dec = n_frames // DECODER_DOWN
    zf = crop_frames(tf_upsample(z_coarse, N_DECODER_FRAMES), d0, n_dec)
    f0d, ldd = to_decoder_rate(f0_hz), to_decoder_rate(ld_db)
    raw = decoder([scale_f0(f0d)[..., None], scale_ld(ldd)[..., None], zf], training=training)
    amp, harm, noise = split_decoder_output(raw, cfg)
    controls = synth.get_controls(amp, harm, noise, f0d[..., None])
    return synth.get_signal(controls, n_frames * HOP, SAMPLE_RATE)


def scale_f0(f0_hz):
    return tf_hz_to_midi(f0_hz) / 127.0


def scale_ld(ld_db):
    return (ld_db - LD_OFFSET_DB) / LD_RANGE_DB


# ---------------------------------------------------------------------------------------------
# The synthesizer (the teammates' DDSPSynth, at the decoder's frame rate) and its learned reverb.


def make_synth(cfg: ModelConfig):
    from synth.processors import DDSPSynth

    return DDSPSynth(n_harmonics=cfg.n_harmonics, n_noise_bands=cfg.n_noise_bands,
                     frame_rate=DECODER_FRAME_RATE, reverb_decay_db_per_s=cfg.reverb_decay_db_per_s,
                     name="ddsp_synth")


def save_synth(synth, path: str) -> None:
    """The learned reverb (the synth's only weight) as an .npz file."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    weights = synth.get_weights()
    np.savez(path, *weights)


def load_synth(synth, path: str) -> None:
    saved = np.load(path)
    values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    synth.set_weights(values)


def copy_synth(src, dst) -> None:
    dst.set_weights(src.get_weights())


class SynthSaver:
    """Adapter so the training loop checkpoints the synth like a Keras model."""

    weights_file = "synth.npz"

    def __init__(self, synth):
        self.synth = synth

    def save_weights(self, path: str) -> None:
        save_synth(self.synth, path)

    def load_weights(self, path: str) -> None:
        load_synth(self.synth, path)


# ---------------------------------------------------------------------------------------------
# Saving and loading.

STAGE_DIRS = ("ddsp_generator", "z_generator", "f0_ld_generator")


def save_weights(model, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    model.save_weights(path)


def write_config(directory: str, config: dict[str, Any]) -> None:
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)


def read_config(directory: str) -> dict[str, Any]:
    path = os.path.join(directory, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no config.json (train this stage first, see checkpoints/RECIPE.md)")
    with open(path) as f:
        return json.load(f)


@dataclass
class Stats:
    """Data statistics the models need at inference (stored in config.json)."""

    feature_mean: list[float] = field(default_factory=lambda: [0.0] * N_MFCC)
    feature_std: list[float] = field(default_factory=lambda: [1.0] * N_MFCC)
    z_mean: list[float] = field(default_factory=lambda: [0.0] * Z_DIM)
    z_std: list[float] = field(default_factory=lambda: [1.0] * Z_DIM)
    ld_min: float = -100.0
    ld_max: float = 0.0


def as_float_list(x: Sequence[float] | np.ndarray) -> list[float]:
    return [float(v) for v in np.asarray(x).ravel()]
