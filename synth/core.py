"""DDSP signal core in TensorFlow: pure functions, tensor in, tensor out.

Written from Engel et al., "DDSP: Differentiable Digital Signal Processing" (ICLR 2020):
harmonic oscillator bank, filtered noise, reverb by FFT convolution, A-weighted loudness and the
multi-scale spectral loss. Every function is differentiable where that makes sense, works for
any batch size, frame count and sample rate, and shares its geometry (which sample belongs to
which frame, how noise bands map to frequencies) with the numpy renderer in
`synth.fast_render`, from which the constants, `compute_loudness_db` (numpy) and the MIDI
helpers are re-exported here.

Shapes: audio [batch, n_samples]; frame-rate controls [batch, n_frames, channels]. Frame i of
n_frames sits at sample i * n_samples / n_frames; controls are interpolated linearly between
frames and the last frame is held, so the same controls render at 16 kHz for training and at
44.1/48 kHz for the sound card.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from synth.fast_render import (  # noqa: F401  (re-exported public API)
    FRAME_RATE,
    LOUDNESS_FLOOR_DB,
    MAX_FREQUENCY_HZ,
    N_HARMONICS,
    N_NOISE_BANDS,
    REVERB_LENGTH,
    TRAIN_SAMPLE_RATE,
    a_weighting_db,
    compute_loudness_db,
    default_loudness_n_fft,
    hz_to_midi,
    interpolation_geometry,
    loudness_geometry,
    midi_to_hz,
    n_frames_for,
    n_samples_for,
    noise_band_matrix,
    noise_geometry,
    resampling_fft_sizes,
)

SPECTRAL_LOSS_FFT_SIZES = (2048, 1024, 512, 256, 128, 64)


# ---------------------------------------------------------------------------------------------
# Scaling and conversions.


def exp_sigmoid(x, exponent: float = 10.0, max_value: float = 2.0, threshold: float = 1e-7):
    """DDSP's output nonlinearity: max_value * sigmoid(x) ** log(exponent) + threshold.

    Any shape -> same shape, values in (threshold, max_value + threshold); it keeps gradients
    alive for large negative x and treats amplitudes on a roughly logarithmic scale.
    """
    x = tf.convert_to_tensor(x, dtype=tf.float32)
    return max_value * tf.math.sigmoid(x) ** math.log(exponent) + threshold


def midi_to_hz_tf(midi):
    """MIDI note number -> Hz, any shape (A4 = 69 = 440 Hz)."""
    midi = tf.convert_to_tensor(midi, dtype=tf.float32)
    return 440.0 * tf.pow(2.0, (midi - 69.0) / 12.0)


def hz_to_midi_tf(frequency_hz):
    """Hz -> fractional MIDI note number, any shape (0 Hz -> -inf)."""
    f = tf.convert_to_tensor(frequency_hz, dtype=tf.float32)
    return 69.0 + 12.0 * tf.math.log(f / 440.0) / math.log(2.0)


# ---------------------------------------------------------------------------------------------
# Frame rate -> audio rate.


def _with_last_frame(frames):
    """[batch, n_frames, ch] -> [batch, n_frames + 1, ch], the last frame repeated (held)."""
    return tf.concat([frames, frames[:, -1:]], axis=1)


def upsample_frames(frames, n_samples: int):
    """Linear interpolation of frame-rate controls to audio rate.

    frames: [batch, n_frames, channels] -> [batch, n_samples, channels]. Frame i sits at sample
    i * n_samples / n_frames; the last frame is held to the end. Differentiable in `frames`.
    """
    frames = tf.convert_to_tensor(frames, dtype=tf.float32)
    n_frames = int(frames.shape[1])
    index, alpha = interpolation_geometry(n_frames, int(n_samples))
    extended = _with_last_frame(frames)
    a = tf.gather(extended, index, axis=1)
    b = tf.gather(extended, index + 1, axis=1)
    alpha = tf.constant(alpha)[None, :, None]
    return a + alpha * (b - a)


# ---------------------------------------------------------------------------------------------
# Harmonic oscillator bank.


def harmonic_mask(f0_hz, n_harmonics: int, max_frequency_hz: float):
    """[batch, n_frames, n_harmonics] float32: 1 where k * f0 < max_frequency_hz, else 0.

    f0_hz: [batch, n_frames, 1]. Judged on the highest f0 of the frame and its two neighbours,
    so that a harmonic interpolated between frames never crosses the limit during a glide.
    """
    f0 = tf.convert_to_tensor(f0_hz, dtype=tf.float32)
    padded = tf.concat([f0[:, :1], f0, f0[:, -1:]], axis=1)
    f0_max = tf.maximum(tf.maximum(padded[:, :-2], padded[:, 1:-1]), padded[:, 2:])
    k = tf.range(1, n_harmonics + 1, dtype=tf.float32)
    return tf.cast(f0_max * k < max_frequency_hz, tf.float32)


def remove_above_frequency(f0_hz, harmonic_distribution, max_frequency_hz: float):
    """Zero the harmonics at or above `max_frequency_hz` (see `harmonic_mask`).

    f0_hz: [batch, n_frames, 1]; harmonic_distribution: [batch, n_frames, n_harmonics] -> same.
    """
    harmonic_distribution = tf.convert_to_tensor(harmonic_distribution, dtype=tf.float32)
    n_harmonics = int(harmonic_distribution.shape[-1])
    return harmonic_distribution * harmonic_mask(f0_hz, n_harmonics, max_frequency_hz)


def normalize_harmonics(harmonic_distribution):
    """Divide by the sum over harmonics (all-zero frames stay zero). [..., n_harmonics] -> same."""
    total = tf.reduce_sum(harmonic_distribution, axis=-1, keepdims=True)
    return tf.math.divide_no_nan(harmonic_distribution, total)


def oscillator_cycles(f0_hz_audio, sample_rate: float):
    """Phase in cycles, in [0, 1), of an oscillator following f0: [batch, n_samples] -> same.

    Trapezoidal integration of f0 (exact for the piecewise-linear f0 that `upsample_frames`
    makes), accumulated in float64 so that four seconds at 48 kHz keep their pitch to far
    better than a cent; sample 0 has phase 0. Every sample rate therefore samples the same
    continuous-time phase curve.
    """
    f0 = tf.cast(f0_hz_audio, tf.float64)
    increments = 0.5 * (f0[:, :-1] + f0[:, 1:]) / float(sample_rate)
    cycles = tf.concat([tf.zeros_like(f0[:, :1]), tf.cumsum(increments, axis=1)], axis=1)
    return tf.cast(cycles - tf.floor(cycles), tf.float32)


def harmonic_synthesis(f0_hz, amplitude, harmonic_distribution, n_samples: int,
                       sample_rate: float, max_frequency_hz: float | None = None):
    """Additive synthesis of a harmonic tone from frame-rate controls.

    f0_hz: [batch, n_frames, 1] fundamental in Hz.
    amplitude: [batch, n_frames, 1] linear overall amplitude (sum of harmonic amplitudes).
    harmonic_distribution: [batch, n_frames, n_harmonics], non-negative, normally summing to 1.
    Returns [batch, n_samples] float32:
        sum_k amplitude * distribution_k * sin(2 pi k * cycles(t)),
    with controls interpolated linearly to audio rate and phase-continuous across frames.
    Harmonics at or above min(sample_rate / 2, max_frequency_hz) are removed here without
    renormalising (the processors renormalise in `get_controls`, where the limit is the training
    Nyquist, so the same controls sound the same at every render rate).
    """
    f0_hz = tf.convert_to_tensor(f0_hz, dtype=tf.float32)
    amplitude = tf.convert_to_tensor(amplitude, dtype=tf.float32)
    limit = sample_rate / 2 if max_frequency_hz is None else min(sample_rate / 2, max_frequency_hz)
    harmonic_amplitudes = amplitude * remove_above_frequency(f0_hz, harmonic_distribution, limit)
    n_frames, n_harmonics = int(harmonic_amplitudes.shape[1]), int(harmonic_amplitudes.shape[-1])
    f0_audio = upsample_frames(f0_hz, n_samples)[..., 0]
    cycles = oscillator_cycles(f0_audio, sample_rate)
    k = tf.range(1, n_harmonics + 1, dtype=tf.float32)
    # frac() before 2 pi keeps float32 phase error at ~1e-6 cycles even for harmonic 64.
    harmonic_cycles = cycles[..., None] * k
    harmonic_cycles = harmonic_cycles - tf.floor(harmonic_cycles)
    sines = tf.sin(2.0 * math.pi * harmonic_cycles)  # [batch, n_samples, n_harmonics]
    if n_samples % n_frames:
        amplitudes_audio = upsample_frames(harmonic_amplitudes, n_samples)
        return tf.reduce_sum(amplitudes_audio * sines, axis=-1)
    # Whole frames (training): mix the sines with each frame's and the next frame's amplitudes
    # by batched matmul, then interpolate the two mixes; the same result as upsampling the
    # amplitudes to audio rate, without the [batch, n_samples, n_harmonics] amplitude tensors
    # (about twice as fast, forward and backward).
    hop = n_samples // n_frames
    sines = tf.reshape(sines, [-1, n_frames, hop, n_harmonics])
    this_frame = tf.einsum("bfhk,bfk->bfh", sines, harmonic_amplitudes)
    next_frame = tf.einsum("bfhk,bfk->bfh", sines, _with_last_frame(harmonic_amplitudes)[:, 1:])
    _, alpha = interpolation_geometry(n_frames, n_samples)
    alpha = tf.constant(alpha.reshape(n_frames, hop))
    return tf.reshape(this_frame + alpha * (next_frame - this_frame), [-1, n_samples])


# ---------------------------------------------------------------------------------------------
# Filtered noise.


def _real_at_edges(n_bins: int) -> np.ndarray:
    """[n_bins] float32: 0 at DC and Nyquist (whose imaginary part an irfft must not carry)."""
    mask = np.ones(n_bins, dtype=np.float32)
    mask[0] = 0.0
    mask[-1] = 0.0
    return mask


def filtered_noise(noise_magnitudes, n_samples: int, sample_rate: float,
                   max_frequency_hz: float | None = None, seed: int | None = None):
    """Noise whose spectrum follows time-varying band magnitudes.

    noise_magnitudes: [batch, n_frames, n_bands], linear, >= 0; band b is centred on
    b * max_frequency_hz / (n_bands - 1) (default max_frequency_hz = sample_rate / 2, i.e.
    DDSP's bands spanning 0..Nyquist); nothing is produced above max_frequency_hz.
    Returns [batch, n_samples] float32.

    Each frame gets a random-phase grain (irfft of the band magnitudes interpolated to its bins),
    two frames long; neighbouring grains are cross-faded with equal-power weights, so the noise
    power at each instant is the interpolation of the frames' power spectra. With all
    magnitudes 1 the noise is white (to max_frequency_hz) with variance 1/3, the level of DDSP's
    uniform[-1, 1] noise, at every sample rate (see `fast_render.noise_band_matrix`).
    Differentiable in the magnitudes. `seed` makes the draw repeatable.
    """
    magnitudes = tf.convert_to_tensor(noise_magnitudes, dtype=tf.float32)
    n_frames, n_bands = int(magnitudes.shape[1]), int(magnitudes.shape[2])
    f_max = sample_rate / 2 if max_frequency_hz is None else float(max_frequency_hz)
    grain_size, index_a, index_b, weight_a, weight_b = noise_geometry(n_frames, int(n_samples))
    bands = noise_band_matrix(n_bands, grain_size, float(sample_rate), f_max)
    bin_magnitudes = tf.einsum("bfn,nk->bfk", _with_last_frame(magnitudes), tf.constant(bands))
    shape = tf.shape(bin_magnitudes)
    if seed is None:
        unit = tf.random.uniform(shape)
    else:
        unit = tf.random.stateless_uniform(shape, seed=[int(seed), 0])
    angle = 2.0 * math.pi * unit
    imag_mask = tf.constant(_real_at_edges(int(bands.shape[1])))
    spectrum = tf.complex(bin_magnitudes * tf.cos(angle), bin_magnitudes * tf.sin(angle) * imag_mask)
    grains = tf.signal.irfft(spectrum, fft_length=[grain_size])
    flat = tf.reshape(grains, [shape[0], -1])
    return (tf.gather(flat, index_a, axis=1) * weight_a
            + tf.gather(flat, index_b, axis=1) * weight_b)


# ---------------------------------------------------------------------------------------------
# Reverb.


def fft_convolve(audio, impulse_response, ir_sample_rate: int | None = None,
                 sample_rate: int | None = None):
    """Linear convolution by FFT, cropped to the input length (the tail is dropped, as in DDSP).

    audio: [batch, n_samples]; impulse_response: [ir_length] or [batch, ir_length].
    Returns [batch, n_samples] float32: y[n] = sum_m h[m] x[n - m].

    With `ir_sample_rate` != `sample_rate`, the response is a filter sampled at ir_sample_rate
    applied to audio at sample_rate: its spectrum (DTFT) is taken at the audio FFT's bin
    frequencies and is 0 above the response's Nyquist, which is band-limited resampling of the
    response done exactly, acausal interpolation ringing included, inside the convolution.
    """
    audio = tf.convert_to_tensor(audio, dtype=tf.float32)
    impulse_response = tf.convert_to_tensor(impulse_response, dtype=tf.float32)
    n_samples = int(audio.shape[-1])
    ir_length = int(impulse_response.shape[-1])
    if ir_sample_rate is None or sample_rate is None or int(ir_sample_rate) == int(sample_rate):
        fft_length = 1 << max(1, (n_samples + ir_length - 1 - 1).bit_length())
        ir_spectrum = tf.signal.rfft(impulse_response, fft_length=[fft_length])
    else:
        from_rate, to_rate = int(ir_sample_rate), int(sample_rate)
        resampled_length = -(-ir_length * to_rate // from_rate)
        ir_fft_length, fft_length = resampling_fft_sizes(
            -(-(n_samples + resampled_length - 1) * from_rate // to_rate), from_rate, to_rate)
        # DTFT of the response at k * to_rate / fft_length = k * from_rate / ir_fft_length.
        ir_spectrum = tf.signal.rfft(impulse_response, fft_length=[ir_fft_length])
        n_bins, new_bins = ir_fft_length // 2 + 1, fft_length // 2 + 1
        if new_bins > n_bins:
            if ir_fft_length % 2 == 0:
                half = np.ones(n_bins, dtype=np.complex64)
                half[-1] = 0.5  # the response's Nyquist bin is split between +-f
                ir_spectrum = ir_spectrum * half
            padding = [[0, 0]] * (impulse_response.shape.rank - 1) + [[0, new_bins - n_bins]]
            ir_spectrum = tf.pad(ir_spectrum, padding)
        else:
            ir_spectrum = ir_spectrum[..., :new_bins]
    spectrum = tf.signal.rfft(audio, fft_length=[fft_length])
    if impulse_response.shape.rank == 1:
        ir_spectrum = ir_spectrum[None]
    return tf.signal.irfft(spectrum * ir_spectrum, fft_length=[fft_length])[:, :n_samples]


def resample_impulse_response(impulse_response, from_rate: float, to_rate: float):
    """Band-limited (Fourier) resampling of an impulse response to another sample rate.

    impulse_response: [ir_length] -> [round(ir_length * to_rate / from_rate)] float32, scaled so
    that the filter's frequency response is unchanged (below both Nyquists): a filter learned at
    16 kHz does the same thing to a 48 kHz signal. The Nyquist bin is split evenly on upsampling.
    Exact at the response's own FFT bins (multiples of from_rate / ir_length); in between, the
    interpolation's pre-ringing (wrapped onto the tail, as the method treats the response as
    periodic) moves it by a few hundredths of a dB and radian.
    """
    ir = tf.convert_to_tensor(impulse_response, dtype=tf.float32)
    length = int(ir.shape[-1])
    new_length = int(round(length * to_rate / from_rate))
    if new_length == length:
        return ir
    spectrum = tf.signal.rfft(ir, fft_length=[length])
    n_bins, new_bins = length // 2 + 1, new_length // 2 + 1
    if new_bins > n_bins:
        if length % 2 == 0:
            half = np.ones(n_bins, dtype=np.float32)
            half[-1] = 0.5
            spectrum = spectrum * tf.constant(half, dtype=tf.complex64)
        spectrum = tf.concat([spectrum, tf.zeros([new_bins - n_bins], tf.complex64)], axis=0)
    else:
        spectrum = spectrum[:new_bins]
    # irfft's 1/N makes the n-point result (new/old) times louder per sample; the rate change asks
    # for old_rate/new_rate fewer per sample; these cancel up to the rounding of new_length.
    gain = (new_length / length) * (from_rate / to_rate)
    return tf.signal.irfft(spectrum, fft_length=[new_length]) * gain


def apply_reverb(audio, impulse_response, ir_sample_rate: int | None = None,
                 sample_rate: int | None = None):
    """Dry + wet: audio + fft_convolve(audio, impulse_response, ...). [batch, n_samples] -> same.

    The impulse response is the wet part only (DDSP zeroes its first tap; the dry path is added).
    Give both rates when the response was learned at another rate than the audio's.
    """
    audio = tf.convert_to_tensor(audio, dtype=tf.float32)
    return audio + fft_convolve(audio, impulse_response, ir_sample_rate, sample_rate)


# ---------------------------------------------------------------------------------------------
# Loudness and losses.


def compute_loudness_db_tf(audio, sample_rate: int, frame_rate: int = FRAME_RATE,
                           n_fft: int | None = None):
    """TensorFlow twin of `compute_loudness_db` (same frames, window, weighting and reference).

    audio: [batch, n_samples] (or [n_samples]) -> [batch, n_frames] (or [n_frames]) float32, dB
    re a full-scale 1 kHz sine, floored at -120 dB. Differentiable.
    """
    audio = tf.convert_to_tensor(audio, dtype=tf.float32)
    squeeze = audio.shape.rank == 1
    if squeeze:
        audio = audio[None]
    n_samples = int(audio.shape[-1])
    n_fft = int(n_fft or default_loudness_n_fft(sample_rate))
    starts, _, window, weights = loudness_geometry(n_samples, int(sample_rate), int(frame_rate), n_fft)
    padded = tf.pad(audio, [[0, 0], [n_fft // 2, n_fft + 1]])
    frames = tf.gather(padded, starts[:, None] + np.arange(n_fft), axis=1)
    spectrum = tf.signal.rfft(frames * window, fft_length=[n_fft])
    power = tf.math.real(spectrum) ** 2 + tf.math.imag(spectrum) ** 2
    mean_square = tf.linalg.matvec(power, tf.constant(weights))
    loudness = 10.0 * tf.math.log(2.0 * mean_square + 10.0 ** (LOUDNESS_FLOOR_DB / 10.0)) / math.log(10.0)
    return loudness[0] if squeeze else loudness


def multiscale_spectral_loss(target_audio, predicted_audio,
                             fft_sizes=SPECTRAL_LOSS_FFT_SIZES, overlap: float = 0.75,
                             mag_weight: float = 1.0, logmag_weight: float = 1.0):
    """DDSP's multi-scale spectral loss (paper, section 4.2.1): a scalar.

    target_audio, predicted_audio: [batch, n_samples]. For each FFT size (Hann window, hop =
    size * (1 - overlap)), L1 distance of the magnitude spectrograms plus L1 distance of their
    logs (log(mag + 1e-7)), each averaged over batch, frames and bins, summed over sizes.
    0 for identical signals.
    """
    mag, logmag = multiscale_spectral_terms(target_audio, predicted_audio, fft_sizes, overlap)
    loss = 0.0
    if mag_weight:
        loss += mag_weight * tf.reduce_mean(mag)
    if logmag_weight:
        loss += logmag_weight * tf.reduce_mean(logmag)
    return loss


def log2_spectral_centroid(audio, sample_rate: int, fft_size: int = 1024):
    """Per example log2 of the power-weighted mean frequency (Hz) of the summed spectrum of the
    whole clip (TF, differentiable): audio [batch, n] -> [batch]. DC excluded; the same measure
    as `synth.metrics.spectral_centroid_hz`, on STFT frames instead of one FFT."""
    audio = tf.convert_to_tensor(audio, dtype=tf.float32)
    power = tf.reduce_sum(tf.square(tf.abs(tf.signal.stft(audio, fft_size, fft_size // 4, fft_size,
                                                          pad_end=True))), axis=-2)[:, 1:]
    freqs = tf.range(1, fft_size // 2 + 1, dtype=tf.float32) * (sample_rate / fft_size)
    centroid = tf.reduce_sum(power * freqs, axis=-1) / (tf.reduce_sum(power, axis=-1) + 1e-12)
    return tf.math.log(centroid + 1.0) / np.log(2.0)


def multiscale_spectral_terms(target_audio, predicted_audio,
                              fft_sizes=SPECTRAL_LOSS_FFT_SIZES, overlap: float = 0.75):
    """The two terms of `multiscale_spectral_loss` per example: (magnitude [batch],
    log-magnitude [batch]), each the L1 distance averaged over frames and bins, summed over
    FFT sizes. Their batch means weighted 1:1 are the loss."""
    target = tf.convert_to_tensor(target_audio, dtype=tf.float32)
    predicted = tf.convert_to_tensor(predicted_audio, dtype=tf.float32)
    mag, logmag = 0.0, 0.0
    for size in fft_sizes:
        step = max(1, int(size * (1.0 - overlap)))
        target_mag = tf.abs(tf.signal.stft(target, size, step, size, pad_end=True))
        predicted_mag = tf.abs(tf.signal.stft(predicted, size, step, size, pad_end=True))
        mag += tf.reduce_mean(tf.abs(target_mag - predicted_mag), axis=[-2, -1])
        logmag += tf.reduce_mean(
            tf.abs(tf.math.log(target_mag + 1e-7) - tf.math.log(predicted_mag + 1e-7)), axis=[-2, -1])
    return mag, logmag
