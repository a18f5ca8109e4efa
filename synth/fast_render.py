"""The numpy side of the DDSP signal core: constants, shared geometry, loudness, fast rendering.

This module imports numpy and scipy only (never TensorFlow), so the live server and the data-set
builder can use it without loading TF. `synth.core` re-exports its constants and
`compute_loudness_db`, and builds its TensorFlow functions on the same geometry helpers, so both
paths share one definition of "frame i", "noise grain i" and "band b".

Conventions shared with `synth.core`:

* Controls live at `FRAME_RATE` frames/s. Rendering `n_frames` frames to `n_samples` samples puts
  frame i at sample i * n_samples / n_frames; between frames controls are interpolated linearly
  and the last frame is held (`interpolation_geometry`).
* The model is trained at `TRAIN_SAMPLE_RATE`; everything it produces is band-limited to
  `MAX_FREQUENCY_HZ` (the training Nyquist), whatever the render rate: harmonics at or above it
  are removed and noise bands span 0..MAX_FREQUENCY_HZ. So a 48 kHz render is the same sound as
  the 16 kHz render the model was trained on, not an extrapolation into frequencies it never saw.

The fast renderer (`FastRenderer`) exploits that: it synthesises at the training rate, where the
signal is fully described, applies the reverb and resamples to the sound card's rate in one
FFT pass (band-limited Fourier interpolation), so the learned impulse response is used at its
native rate and no separate resampling step is needed.
"""

from __future__ import annotations

import functools
import math
import os

import numpy as np
import scipy.fft

from synth.units import SAMPLE_RATE as TRAIN_SAMPLE_RATE
from synth.units import hz_to_midi, midi_to_hz  # noqa: F401  (re-exported: synth.core's public API)

FRAME_RATE = 250  # frames per second: a 4 s note is 1000 frames
MAX_FREQUENCY_HZ = TRAIN_SAMPLE_RATE / 2
N_HARMONICS = 64
N_NOISE_BANDS = 65  # 0..8000 Hz in 125 Hz steps at the training rate
REVERB_LENGTH = TRAIN_SAMPLE_RATE  # samples of learned impulse response (1 s at 16 kHz)
LOUDNESS_FLOOR_DB = -120.0
# The filtered noise's bias on its raw band magnitudes: DDSP starts the noise quiet
# (exp_sigmoid(-5) ~ 1e-4) so that the harmonic part learns first.
NOISE_INITIAL_BIAS = -5.0

# Wavetable size per harmonic number: >= 16 table samples per period of the highest harmonic keeps
# the images that linear interpolation makes (two, each about (k / size)**2 of harmonic k) more
# than 42 dB below that harmonic, and far lower for the strong low harmonics.
_TABLE_OVERSAMPLING = 16


BLAS_THREADS = 1  # see single_threaded_blas
# The compute pools of TensorFlow and OpenMP, sized by these variables when TensorFlow is imported.
THREAD_ENV = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")


def limit_compute_threads(threads: int) -> None:
    """A rendering process's thread pools: `threads` for TensorFlow and OpenMP (a variable already
    set wins; call it before TensorFlow is imported) and one for numpy's BLAS
    (`single_threaded_blas`: numpy is imported already, so the variables come too late for it)."""
    for name in THREAD_ENV:
        os.environ.setdefault(name, str(threads))
    single_threaded_blas()


def single_threaded_blas() -> None:
    """Run this process's BLAS (numpy's OpenBLAS) on one thread, for good.

    The synthesis' matrix products are small ([frames, 65 bands] @ [65, bins]); OpenBLAS splits
    them over one thread per core, and its threads then spin while they wait. On the 2-core
    machine a 4 s note took the same wall-clock time on one thread as on two but twice the CPU,
    and two notes rendered at once (the pre-render's thread pool) took no less time than one
    after the other (measured: 440 notes 6.6 s with two BLAS threads, 4.7 s with one). In the
    server that spinning core is the one the audio and the live voices need.
    Setting OMP_NUM_THREADS does not help once numpy is imported, so the pool is resized
    through threadpoolctl (an installable library made for exactly this).
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=BLAS_THREADS, user_api="blas")


def reverb_tap_mask(length: int, sample_rate: int, decay_db_per_s: float) -> np.ndarray:
    """[length] float32: the fixed factor on a learned impulse response (`processors.Reverb`):
    its first tap held at 0 (the dry sound is added instead) and an exponential decay of
    `decay_db_per_s` (0: none)."""
    mask = np.ones(int(length), dtype=np.float32)
    mask[0] = 0.0
    t = np.arange(int(length)) / float(sample_rate)
    return (mask * 10.0 ** (-float(decay_db_per_s) * t / 20.0)).astype(np.float32)


def n_samples_for(n_frames: int, sample_rate: int, frame_rate: int = FRAME_RATE) -> int:
    """Number of audio samples covered by `n_frames` control frames at `sample_rate`."""
    return int(n_frames) * int(sample_rate) // int(frame_rate)


def n_frames_for(n_samples: int, sample_rate: int, frame_rate: int = FRAME_RATE) -> int:
    """Number of control/loudness frames for `n_samples` audio samples: n_samples * fr // sr."""
    return int(n_samples) * int(frame_rate) // int(sample_rate)


# ---------------------------------------------------------------------------------------------
# Geometry shared by the numpy and TensorFlow paths (cached: notes come in few shapes).


@functools.lru_cache(maxsize=64)
def interpolation_geometry(n_frames: int, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation of frame-rate controls to audio rate.

    Sample j sits at frame position p = j * n_frames / n_samples (exact integer arithmetic).
    Returns (frame_index [n_samples] int64 in [0, n_frames - 1], alpha [n_samples] float32 in
    [0, 1)); sample j = (1 - alpha) * frame[i] + alpha * frame[i + 1] where the frame array is
    extended by one copy of its last frame (so the last frame is held to the end).
    """
    j = np.arange(n_samples, dtype=np.int64) * n_frames
    index = j // n_samples
    alpha = ((j - index * n_samples) / n_samples).astype(np.float32)
    return index, alpha


def extend_last_frame(frames: np.ndarray, axis: int = 0) -> np.ndarray:
    """Append a copy of the last frame along `axis` ([..., n_frames, ...] -> n_frames + 1)."""
    last = np.take(frames, [-1], axis=axis)
    return np.concatenate([frames, last], axis=axis)


@functools.lru_cache(maxsize=64)
def noise_geometry(n_frames: int, n_samples: int):
    """Where each audio sample reads the noise grains of its two neighbouring frames.

    Grain i is a stationary noise segment covering frames i - 1 .. i + 1 (it starts at sample
    floor((i - 1) * n_samples / n_frames)); sample j between frames i and i + 1 mixes grain i and
    grain i + 1 with an equal-power cross-fade (cos, sin of pi/2 * alpha), so independent grains
    keep a constant noise power however the frames fall on samples.

    Returns (grain_size M (even), index_a [n_samples], index_b [n_samples] (flat indices into a
    [n_frames + 1, M] grain array), weight_a [n_samples], weight_b [n_samples] float32).
    """
    frame, alpha = interpolation_geometry(n_frames, n_samples)
    j = np.arange(n_samples, dtype=np.int64)
    start_a = ((frame - 1) * n_samples) // n_frames
    start_b = (frame * n_samples) // n_frames
    local_a = j - start_a
    local_b = j - start_b
    grain_size = int(max(local_a.max(), local_b.max())) + 1
    grain_size += grain_size % 2
    index_a = frame * grain_size + local_a
    index_b = (frame + 1) * grain_size + local_b
    angle = 0.5 * np.pi * alpha.astype(np.float64)
    return (grain_size, index_a, index_b, np.cos(angle).astype(np.float32),
            np.sin(angle).astype(np.float32))


@functools.lru_cache(maxsize=64)
def noise_band_matrix(n_bands: int, grain_size: int, sample_rate: float,
                      max_frequency_hz: float) -> np.ndarray:
    """[n_bands, grain_size // 2 + 1] float32: bin magnitude = band magnitudes @ matrix.

    Bands are equally spaced from 0 Hz to `max_frequency_hz` (band b at b * f_max / (n_bands - 1));
    each FFT bin takes the linear interpolation of the two bands around it; bins above f_max
    (and above Nyquist) are 0. The matrix also carries the noise level: with all magnitudes 1 the
    noise is white from 0 to f_max with a variance of 1/3 per sample at any render rate, i.e. the
    power density of DDSP's uniform[-1, 1] noise through that filter at the training rate.
    Bins get a random phase, so E|X_k|^2 = s |H_k|^2 with
    s = M * sample_rate / (6 f_max); DC and Nyquist keep only their real part, hence sqrt(2).
    """
    n_bins = grain_size // 2 + 1
    bin_hz = np.arange(n_bins) * sample_rate / grain_size
    band_position = bin_hz / max_frequency_hz * (n_bands - 1)
    matrix = np.zeros((n_bands, n_bins))
    inside = band_position <= (n_bands - 1) + 1e-9
    lower = np.minimum(np.floor(band_position).astype(np.int64), n_bands - 2)
    frac = band_position - lower
    cols = np.nonzero(inside)[0]
    matrix[lower[cols], cols] = 1.0 - frac[cols]
    matrix[lower[cols] + 1, cols] = frac[cols]
    scale = np.full(n_bins, math.sqrt(grain_size * sample_rate / (6.0 * max_frequency_hz)))
    scale[0] *= math.sqrt(2.0)
    scale[-1] *= math.sqrt(2.0)
    return (matrix * scale).astype(np.float32)


def harmonic_mask(f0_hz: np.ndarray, n_harmonics: int, max_frequency_hz: float) -> np.ndarray:
    """[n_frames, n_harmonics] float32: 1 where harmonic k * f0 < max_frequency_hz, else 0.

    A harmonic is judged by the highest f0 of its frame and both neighbours: amplitudes are
    interpolated linearly between frames, so a harmonic alive at frame i must stay below the
    limit for the whole of the two segments touching frame i, even while f0 glides upwards.
    f0_hz: [n_frames] (or [..., n_frames]; the mask then gains those leading axes).
    """
    f0 = np.asarray(f0_hz, dtype=np.float64)
    padded = np.concatenate([f0[..., :1], f0, f0[..., -1:]], axis=-1)
    f0_max = np.maximum(np.maximum(padded[..., :-2], padded[..., 1:-1]), padded[..., 2:])
    k = np.arange(1, n_harmonics + 1)
    return (f0_max[..., None] * k < max_frequency_hz).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Loudness.


def a_weighting_db(frequency_hz) -> np.ndarray:
    """IEC 61672-1 A-weighting in dB (0 dB at 1 kHz; -19.1 dB at 100 Hz; -inf at 0 Hz)."""
    f2 = np.asarray(frequency_hz, dtype=np.float64) ** 2
    ra = (12194.0**2 * f2**2) / (
        (f2 + 20.6**2) * np.sqrt((f2 + 107.7**2) * (f2 + 737.9**2)) * (f2 + 12194.0**2))
    with np.errstate(divide="ignore"):
        return 20.0 * np.log10(ra) + 2.0


def default_loudness_n_fft(sample_rate: int) -> int:
    """About 32 ms of audio (512 samples at 16 kHz), rounded up to a fast FFT length."""
    return scipy.fft.next_fast_len(int(round(0.032 * sample_rate)), real=True)


@functools.lru_cache(maxsize=32)
def loudness_geometry(n_samples: int, sample_rate: int, frame_rate: int, n_fft: int):
    """Frame start offsets (into audio padded by n_fft // 2 zeros at the start), window, weights.

    Returns (starts [n_frames] int64, hop (int, or 0 when sample_rate / frame_rate is
    fractional), window [n_fft] float32, weights [n_fft // 2 + 1] float32) where
    mean-square(A-weighted frame) = |rfft(window * frame)|^2 @ weights.
    """
    n_frames = n_frames_for(n_samples, sample_rate, frame_rate)
    # Centre of frame i: round(i * sample_rate / frame_rate).
    starts = (2 * np.arange(n_frames, dtype=np.int64) * sample_rate + frame_rate) // (2 * frame_rate)
    hop = sample_rate // frame_rate if sample_rate % frame_rate == 0 else 0
    window = np.hanning(n_fft + 1)[:n_fft]  # periodic Hann
    freqs = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    weights = 10.0 ** (a_weighting_db(freqs) / 10.0)
    # One-sided spectrum: interior bins stand for two (positive and negative frequency).
    weights[1:] *= 2.0
    if n_fft % 2 == 0:
        weights[-1] /= 2.0
    weights /= n_fft * np.sum(window**2)
    return starts, hop, window.astype(np.float32), weights.astype(np.float32)


def compute_loudness_db(audio, sample_rate: int, frame_rate: int = FRAME_RATE,
                        n_fft: int | None = None) -> np.ndarray:
    """A-weighted loudness in dB per frame (numpy; a few ms for a 4 s note at 16 kHz).

    audio: [n_samples] or [batch, n_samples], float, full scale = +-1.
    Returns float32 [n_frames] or [batch, n_frames], n_frames = n_samples * frame_rate //
    sample_rate (64000 samples at 16 kHz -> 1000 frames).

    Frame i is centred on sample round(i * sample_rate / frame_rate) (zeros before the start and
    after the end), Hann-windowed over `n_fft` samples (default about 32 ms). Its loudness is
    the mean square of the A-weighted (IEC 61672) signal, in dB relative to a full-scale sine:
    0 dB = a sine of amplitude 1 at 1 kHz, so a sine of amplitude a at 1 kHz reads 20 log10(a)
    and at 100 Hz about 20 log10(a) - 19.1. Silence reads LOUDNESS_FLOOR_DB (-120 dB).
    """
    x = np.asarray(audio, dtype=np.float32)
    squeeze = x.ndim == 1
    x = np.atleast_2d(x)
    n_samples = x.shape[-1]
    n_fft = int(n_fft or default_loudness_n_fft(sample_rate))
    starts, hop, window, weights = loudness_geometry(n_samples, int(sample_rate), int(frame_rate), n_fft)
    half = n_fft // 2
    padded = np.zeros((x.shape[0], n_samples + n_fft + 1), dtype=np.float32)
    padded[:, half:half + n_samples] = x
    if hop:
        view = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=-1)
        frames = view[:, :len(starts) * hop:hop] if len(starts) else view[:, :0]
    else:
        frames = padded[:, starts[:, None] + np.arange(n_fft)]
    spectrum = scipy.fft.rfft(frames * window, axis=-1)
    power = spectrum.real**2 + spectrum.imag**2
    mean_square = power @ weights
    # 2 * mean square: a full-scale sine (mean square 1/2) is 0 dB.
    loudness = 10.0 * np.log10(2.0 * mean_square + 10.0 ** (LOUDNESS_FLOOR_DB / 10.0))
    loudness = loudness.astype(np.float32)
    return loudness[0] if squeeze else loudness


# ---------------------------------------------------------------------------------------------
# Fast numpy rendering (inference).
#
# Speed comes from three things: wavetables instead of per-harmonic sines, synthesis at the
# training rate followed by one FFT pass that does reverb and resampling together, and reusing
# work buffers between notes (`workspace`), because page faults on fresh multi-megabyte arrays
# otherwise cost as much as the arithmetic.


def _buffer(workspace: dict | None, name: str, shape, dtype, zero: bool = False) -> np.ndarray:
    """A work array, reused from `workspace` when one is given (contents are stale unless new).

    Arrays made with zero=True start zeroed; callers keep their untouched parts zero."""
    if workspace is None:
        return np.zeros(shape, dtype) if zero else np.empty(shape, dtype)
    key = (name, tuple(np.atleast_1d(shape)), np.dtype(dtype).str)
    array = workspace.get(key)
    if array is None:
        array = workspace[key] = np.zeros(shape, dtype) if zero else np.empty(shape, dtype)
    return array


def _one_note(values, n_channels: int | None = None) -> np.ndarray:
    """Controls of one note as [n_frames] (n_channels None) or [n_frames, n_channels] float32.

    Accepts [n_frames], [n_frames, ch] or [1, n_frames, ch] (a batch of one)."""
    x = np.asarray(values, dtype=np.float32)
    if x.ndim == 3:
        if x.shape[0] != 1:
            raise ValueError(f"render one note at a time, got a batch of {x.shape[0]}")
        x = x[0]
    if n_channels is None:
        if x.ndim == 2:
            if x.shape[1] != 1:
                raise ValueError(f"expected [n_frames] or [n_frames, 1], got {x.shape}")
            x = x[:, 0]
        return x
    if x.ndim != 2:
        raise ValueError(f"expected [n_frames, channels], got {x.shape}")
    return x


def wavetable_size(k_max: int) -> int:
    """Samples in a one-period wavetable whose highest harmonic is `k_max`: a power of two with
    at least 16 samples per period of that harmonic (64 at least); 1024 for 64 harmonics."""
    return max(64, 1 << (_TABLE_OVERSAMPLING * int(k_max) - 1).bit_length())


def wavetable_gain(k_max: int, table_size: int) -> np.ndarray:
    """[k_max] float32 factors g_k such that a table spectrum with imaginary part
    g_k * a_k at bin k (k = 1..k_max, all else 0) irfft's to sum_k a_k sin(2 pi k n / L), read
    through linear interpolation: irfft(-0.5j * L * a_k) = a_k sin(...), and 1 / sinc**2 undoes
    the droop of linear interpolation at harmonic k."""
    k = np.arange(1, int(k_max) + 1)
    return (-0.5 * table_size / np.sinc(k / table_size) ** 2).astype(np.float32)


def harmonic_synthesis_np(f0_hz, amplitude, harmonic_distribution, n_samples: int,
                          sample_rate: float, max_frequency_hz: float | None = None,
                          out: np.ndarray | None = None, workspace: dict | None = None) -> np.ndarray:
    """Numpy twin of `synth.core.harmonic_synthesis` for one note, by wavetables.

    f0_hz: [n_frames]; amplitude: [n_frames]; harmonic_distribution: [n_frames, n_harmonics].
    Returns float32 [n_samples] (written into `out` if given).

    Harmonics are exact multiples of f0, so frame i's waveform is one period, a table
    T_i = irfft of its harmonic amplitudes. Reading T_i and T_{i+1} at the oscillator phase
    and cross-fading them linearly is exactly the linear interpolation of harmonic amplitudes
    that the TensorFlow path does. Tables hold >= 16 samples per period of the highest active
    harmonic and are read with linear interpolation, whose droop is pre-compensated; what is
    left is images more than 42 dB below the highest harmonic and about 2 (k / table_size)**2
    of harmonic k below it (so -70 dB and less for the strong low harmonics).
    """
    f0 = _one_note(f0_hz)
    amp = _one_note(amplitude)
    dist = _one_note(harmonic_distribution, 0)
    n_frames, n_harmonics = dist.shape
    n_samples = int(n_samples)
    y = np.empty(n_samples, np.float32) if out is None else out
    limit = sample_rate / 2 if max_frequency_hz is None else min(sample_rate / 2, max_frequency_hz)
    harmonic_amps = dist * amp[:, None]
    harmonic_amps *= harmonic_mask(f0, n_harmonics, limit)
    active = np.flatnonzero(np.any(harmonic_amps != 0.0, axis=0))
    if active.size == 0 or n_samples == 0:
        y[:] = 0.0
        return y
    k_max = int(active[-1]) + 1
    table_size = wavetable_size(k_max)
    gain = wavetable_gain(k_max, table_size)
    # irfft(-0.5j * L * a_k at bin k) = a_k * sin(2 pi k n / L); sinc**2 undoes the droop of
    # linear interpolation. Only bins 1..L/16 are ever written, so the rest stays zero.
    spectrum = _buffer(workspace, "table_spectrum", (n_frames, table_size // 2 + 1), np.complex64, zero=True)
    top = table_size // _TABLE_OVERSAMPLING + 1
    spectrum[:, k_max + 1 : top] = 0.0
    np.multiply(harmonic_amps[:, :k_max], gain, out=spectrum.imag[:, 1 : k_max + 1])
    tables = _buffer(workspace, "tables", (n_frames, table_size), np.float32)
    np.fft.irfft(spectrum, table_size, axis=-1, out=tables)
    tables = tables.reshape(-1)

    frame, alpha = interpolation_geometry(n_frames, n_samples)
    # Same trapezoidal phase as core.oscillator_cycles, accumulated in float64.
    f0_ext = np.append(f0, f0[-1]).astype(np.float64)
    f0_audio = _buffer(workspace, "f0_audio", n_samples, np.float64)
    np.take(np.diff(f0_ext), frame, out=f0_audio)
    f0_audio *= alpha
    f0_audio += np.take(f0_ext, frame)
    cycles = _buffer(workspace, "cycles", n_samples, np.float64)
    cycles[0] = 0.0
    np.add(f0_audio[:-1], f0_audio[1:], out=cycles[1:])
    cycles[1:] *= 0.5 / sample_rate
    np.cumsum(cycles[1:], out=cycles[1:])
    # Table position: fractional cycles times table size; index wraps (it can round up to L).
    np.floor(cycles, out=f0_audio)
    cycles -= f0_audio
    cycles *= table_size
    index = _buffer(workspace, "index", n_samples, np.int64)
    np.copyto(index, cycles, casting="unsafe")
    frac = _buffer(workspace, "frac", n_samples, np.float32)
    np.subtract(cycles, index, out=frac, casting="same_kind")
    index &= table_size - 1
    index_next = _buffer(workspace, "index_next", n_samples, np.int64)
    np.add(index, 1, out=index_next)
    index_next &= table_size - 1
    # Flat table offsets of this frame's and the next frame's table (the last is held).
    offsets = _buffer(workspace, "offsets", n_samples, np.int64)
    np.multiply(frame, table_size, out=offsets)
    index += offsets
    index_next += offsets
    value = _buffer(workspace, "value", n_samples, np.float32)
    slope = _buffer(workspace, "slope", n_samples, np.float32)
    np.take(tables, index, out=y)
    np.take(tables, index_next, out=slope)
    slope -= y
    slope *= frac
    y += slope
    # The next frame's table, except that the last frame is held.
    held = int(np.searchsorted(frame, n_frames - 1))
    index += table_size
    index_next += table_size
    index[held:] -= table_size
    index_next[held:] -= table_size
    np.take(tables, index, out=value)
    np.take(tables, index_next, out=slope)
    slope -= value
    slope *= frac
    value += slope
    value -= y
    value *= alpha
    y += value
    return y


def filtered_noise_np(noise_magnitudes, n_samples: int, sample_rate: float,
                      max_frequency_hz: float | None = None,
                      rng: np.random.Generator | None = None,
                      workspace: dict | None = None) -> np.ndarray:
    """Numpy twin of `synth.core.filtered_noise` for one note (same algorithm, own random draw).

    noise_magnitudes: [n_frames, n_bands] linear; returns float32 [n_samples].
    """
    magnitudes = _one_note(noise_magnitudes, 0)
    n_frames, n_bands = magnitudes.shape
    rng = np.random.default_rng() if rng is None else rng
    f_max = sample_rate / 2 if max_frequency_hz is None else float(max_frequency_hz)
    grain_size, index_a, index_b, weight_a, weight_b = noise_geometry(n_frames, int(n_samples))
    bands = noise_band_matrix(n_bands, grain_size, float(sample_rate), f_max)
    # (matmul into an out= slice leaves BLAS for a loop 100x slower, hence a fresh array.)
    bin_magnitudes = extend_last_frame(magnitudes) @ bands
    shape = bin_magnitudes.shape
    angle = _buffer(workspace, "noise_angle", shape, np.float32)
    rng.random(dtype=np.float32, out=angle)
    angle *= np.float32(2.0 * np.pi)
    spectrum = _buffer(workspace, "noise_spectrum", shape, np.complex64)
    np.cos(angle, out=spectrum.real)
    np.sin(angle, out=spectrum.imag)
    spectrum.real *= bin_magnitudes
    spectrum.imag *= bin_magnitudes
    spectrum.imag[:, 0] = 0.0
    spectrum.imag[:, -1] = 0.0
    grains = _buffer(workspace, "noise_grains", (shape[0], grain_size), np.float32)
    np.fft.irfft(spectrum, grain_size, axis=-1, out=grains)
    grains = grains.reshape(-1)
    out = np.take(grains, index_a)
    out *= weight_a
    other = _buffer(workspace, "noise_other", int(n_samples), np.float32)
    np.take(grains, index_b, out=other)
    other *= weight_b
    out += other
    return out


def _is_fast_length(n: int) -> bool:
    for p in (2, 3, 5, 7):
        while n % p == 0:
            n //= p
    return n == 1


@functools.lru_cache(maxsize=64)
def resampling_fft_sizes(min_length: int, from_rate: int, to_rate: int) -> tuple[int, int]:
    """FFT sizes for moving a spectrum between rates: n_from >= min_length samples at from_rate
    and n_to = n_from * to_rate / from_rate at to_rate (the same duration), both 7-smooth."""
    step = from_rate // math.gcd(from_rate, to_rate)
    m = -(-min_length // step)
    while True:
        n_from = m * step
        n_to = n_from * to_rate // from_rate
        if _is_fast_length(n_from) and _is_fast_length(n_to):
            return n_from, n_to
        m += 1


class FastRenderer:
    """Renders one note's controls to audio at any sample rate, fast (numpy, float32).

    Harmonic and noise parts are synthesised at `base_sample_rate` (the training rate, where the
    controls' band limit puts everything), then one real FFT pass applies the reverb (dry + wet,
    the learned impulse response at its native rate) and resamples to the requested rate by
    band-limited Fourier interpolation (zero-padding the spectrum). Spectra of the impulse
    response are cached per (note length, sample rate), work buffers per note shape.
    About 6 ms of CPU for a 4 s note at 48 kHz with 64 harmonics (see bench/dsp.py).

    impulse_response: [ir_length] at base_sample_rate, wet part only (first tap should be 0),
    or None for no reverb. Not thread-safe (shared buffers): one renderer per thread.
    """

    def __init__(self, impulse_response=None, base_sample_rate: int = TRAIN_SAMPLE_RATE,
                 frame_rate: int = FRAME_RATE, max_frequency_hz: float = MAX_FREQUENCY_HZ):
        ir = np.zeros(1, np.float32) if impulse_response is None else impulse_response
        self.impulse_response = np.array(ir, dtype=np.float32).reshape(-1)
        self.base_sample_rate = int(base_sample_rate)
        self.frame_rate = int(frame_rate)
        self.max_frequency_hz = float(max_frequency_hz)
        self._spectra: dict[tuple[int, int], tuple[int, int, np.ndarray]] = {}
        self._workspace: dict = {}

    def _transfer(self, n_base: int, sample_rate: int) -> tuple[int, int, np.ndarray]:
        key = (n_base, sample_rate)
        if key not in self._spectra:
            ir = self.impulse_response
            n_from, n_to = resampling_fft_sizes(n_base + ir.size - 1, self.base_sample_rate, sample_rate)
            transfer = np.fft.rfft(ir.astype(np.float64), n_from)
            transfer += 1.0  # the dry path: a unit impulse at t = 0
            n_bins_to = n_to // 2 + 1
            if n_bins_to > transfer.size and n_from % 2 == 0:
                transfer[-1] *= 0.5  # the base Nyquist bin is split between +-f on upsampling
            transfer = transfer[:n_bins_to] * (n_to / n_from)  # irfft's 1/n at the new length
            self._spectra[key] = (n_from, n_to, transfer.astype(np.complex64))
        return self._spectra[key]

    def render_controls(self, controls, sample_rate: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """`render` for a dict of controls ('f0_hz', 'amplitude', 'harmonic_distribution',
        'noise_magnitudes'; numpy arrays or anything `np.asarray` takes, as `get_controls` and
        `Generator.run_neural` give them)."""
        c = {key: np.asarray(value) for key, value in controls.items()}
        return self.render(c["f0_hz"], c["amplitude"], c["harmonic_distribution"], c["noise_magnitudes"],
                           sample_rate, rng)

    def render(self, f0_hz, amplitude, harmonic_distribution, noise_magnitudes,
               sample_rate: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """One note -> float32 [n_frames * sample_rate // frame_rate] (a new array).

        f0_hz, amplitude: [n_frames]; harmonic_distribution: [n_frames, n_harmonics];
        noise_magnitudes: [n_frames, n_bands] (physical controls, as from `get_controls`).
        """
        sample_rate = int(sample_rate)
        f0 = _one_note(f0_hz)
        n_frames = f0.shape[0]
        base = self.base_sample_rate
        n_base = n_samples_for(n_frames, base, self.frame_rate)
        n_out = n_samples_for(n_frames, sample_rate, self.frame_rate)
        n_from, n_to, transfer = self._transfer(n_base, sample_rate)
        ws = self._workspace
        if len(ws) > 200:  # many note shapes seen: start afresh rather than grow without bound
            ws.clear()
        # The dry signal sits in a zero-padded FFT buffer whose tail is never written.
        dry = _buffer(ws, f"dry_{n_base}", n_from, np.float32, zero=True)
        harmonic_synthesis_np(f0, amplitude, harmonic_distribution, n_base, base,
                              self.max_frequency_hz, out=dry[:n_base], workspace=ws)
        dry[:n_base] += filtered_noise_np(noise_magnitudes, n_base, base, self.max_frequency_hz,
                                          rng, workspace=ws)
        # scipy's 1-D transforms, unlike numpy's with out=, do not page-fault a fresh scratch
        # buffer of the transform's size on every call.
        spectrum = scipy.fft.rfft(dry)
        n_common = min(spectrum.size, transfer.size)
        ratio = n_to // n_from
        if ratio >= 2 and ratio * n_from == n_to and n_from % 2 == 0:
            return self._upsample_polyphase(spectrum[:n_common] * transfer[:n_common], n_from, ratio, n_out)
        # Bins above the base Nyquist stay zero: that is the band-limited interpolation.
        out_spectrum = _buffer(ws, f"out_spectrum_{n_from}", n_to // 2 + 1, np.complex64, zero=True)
        np.multiply(spectrum[:n_common], transfer[:n_common], out=out_spectrum[:n_common])
        return scipy.fft.irfft(out_spectrum, n_to)[:n_out]

    def _upsample_polyphase(self, spectrum: np.ndarray, n_from: int, ratio: int, n_out: int) -> np.ndarray:
        """The inverse transform of `spectrum` (bins 0..n_from / 2, zero above) at n_from * ratio
        points, as `ratio` inverse transforms of n_from points, one per output phase: the same
        band-limited interpolation, about 30 % faster at 48 kHz (three of 80 000 points instead
        of one of 240 000; an integer rate ratio, which 48 and 32 kHz have and 44.1 kHz has not).

        Output sample ratio * m + r is (1 / ratio) * irfft_n(Z_r)[m] with Z_r[k] = X[k] w^(k r),
        w = exp(2 pi i / (n_from * ratio)): the spectrum's bins k and -k of the long transform
        land in the short one's k and n_from - k. Its top bin n_from / 2 meets its own mirror
        -n_from / 2 there, so Z_r takes twice the real part of that bin."""
        half = n_from // 2
        key = ("twiddles", n_from, ratio)
        twiddles = self._workspace.get(key)
        if twiddles is None:
            k = np.arange(half + 1)
            twiddles = self._workspace[key] = np.exp(
                2j * np.pi * np.outer(np.arange(ratio), k) / (n_from * ratio)).astype(np.complex64)
        out = np.empty(n_out, np.float32)
        z = np.empty(half + 1, np.complex64)
        for r in range(ratio):
            np.multiply(spectrum, twiddles[r], out=z)
            z[half] = 2.0 * z[half].real
            phase = scipy.fft.irfft(z, n_from)
            m = len(range(r, n_out, ratio))
            np.multiply(phase[:m], np.float32(1.0 / ratio), out=out[r::ratio])
        return out
