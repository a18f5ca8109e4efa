"""Streaming DDSP synthesis: a voice rendered chunk by chunk while it plays (numpy only).

The offline renderer (`synth.fast_render.FastRenderer`) turns a whole note's controls into audio
in one pass. A live voice does not know its future: the decoder hands it the controls of the next
k frames (125 frames/s, `DECODER_FRAME_RATE`) and wants k frames of audio back at once. This
module renders exactly that, carrying all state from chunk to chunk, so that rendering a control
sequence in chunks of any sizes gives the same audio as one pass (to float32 rounding; the tests
check chunks of 1, 3, 7 and 13 frames at 44.1 and 48 kHz).

    StreamingSynthBank   n voices as a leading axis: harmonic + filtered noise, dry
    StreamingReverb      dry + wet through the learned impulse response, any number of channels
    StreamingSynth       one voice = a bank of one + its own reverb

Timing. Frame j of the bank's clock covers samples [ceil(j * sr / fr), ceil((j + 1) * sr / fr))
(`frame_start_sample`; exact integer arithmetic, so at 44.1 kHz, where a frame is 352.8 samples,
frames are 352 or 353 samples long and the total over any number of chunks is exact: 384 per
frame at 48 kHz, `chunk_samples(k)` says how many the next k frames get). The samples of frame j ramp
every control from frame j - 1 to frame j; the first frame of a voice ramps from itself (it is
held, as the offline renderer starts a note on its first frame). So the stream is the offline
rendering of the same controls with the first frame repeated: one frame (8 ms) later, with the
same interpolation. No future frame is needed, so the latency a control change adds is nothing
before it starts to sound and one frame before it is complete.

Easing (zipper noise). Controls move from one frame's value to the next along a linear ramp that
lasts `ease_fraction` of the frame and then hold. The default, 1, ramps over the whole frame,
which is exactly the offline renderer's linear interpolation (so a note played live and rendered
offline match, see the tests); DDSP-VST eases over the first half of each frame
(`ease_fraction=0.5`), which completes a change 4 ms sooner at twice the slope. Either way no
control ever steps: amplitude, harmonic and noise spectra, and f0 are continuous, and the
oscillator phase is the integral of f0 sample by sample (trapezoidal, float64, carried between
chunks), so a pitch bend never clicks.

Harmonics. All harmonics share the phase of the fundamental (harmonic k runs at k times its
phase, as in DDSP and the offline paths), so one phase per voice is the oscillator state. Each
frame's harmonic amplitudes become a one-period wavetable (irfft, `fast_render.wavetable_gain`);
a sample reads the previous and the current frame's tables at the phase (linear interpolation
within a table, droop pre-compensated) and cross-fades them with the eased ramp, which is the
linear interpolation of every harmonic's amplitude. Per sample the cost does not depend on the
number of harmonics; per frame it is one irfft. Tables are stored as complex64 (value, slope to
the next table sample) so one gather reads both interpolation points. Band limit: harmonic k of
a frame is weighted by a smooth (raised-cosine) taper of its frequency k * f0 that is 1 below
`(1 - MASK_TAPER) * limit` and 0 from `limit` = min(max_frequency_hz (8 kHz: the models only
heard 16 kHz audio), Nyquist) on. A harmonic crossing the limit in a glide therefore fades over
about half a semitone of f0 instead of switching; judged per frame, it can overshoot the limit
within one frame by the frame's f0 change (1.9 % in a glide of a decade per second), fading to
zero as it does, far below the 22.05/24 kHz Nyquist of a sound card.

Filtered noise. Frame j draws a random-phase grain (irfft of its band magnitudes interpolated to
bins, `fast_render.noise_band_matrix`, the same level as the offline renderer) that starts at
frame j - 1's end and lasts two frames; frame j's samples cross-fade grain j - 1 into grain j
with equal-power weights (cos, sin of pi/2 times the eased ramp). Grain j - 1 is the overlap tail
carried between chunks. Each voice draws from its own seeded generator, frame by frame, so the
draw does not depend on chunk sizes or on the other voices.

Reverb. The learned impulse response (1 s at 16 kHz) is resampled once to the output rate
(band-limited, `impulse_response_at_rate`) and applied by partitioned convolution with zero
latency: its first block of taps by an FFT of each incoming piece, the rest by uniformly
partitioned FFT convolution (frequency-domain delay line) in blocks of about one frame, whose
results land in the future part of an output ring. Every voice of a model shares one impulse
response (it is a weight of the decoder's synthesiser, not of the timbre), and the reverb is
linear, so reverberating the mix of the voices is the same sound as reverberating each voice:
`StreamingReverb` on the mix costs one reverb instead of 32 (`bench/dsp.py` measures both), and
a voice is over as soon as its dry sound is (`StreamingSynthBank.silent_voices`).
`tail_samples` / `is_silent` say when a reverb (or a `StreamingSynth`) has rung out: after that
many samples of silent input its output is exactly 0.

Measurements behind the choices (tests/synth/test_streaming.py, bench/dsp.py; AMD EPYC, 2 cores,
numpy 2.4, 2026-12-01):

* chunks of 1, 3, 7, 13 frames against one pass: max difference 1.5e-7 (peak 0.36), at 44.1
  and 48 kHz, with reverb;
* one harmonic at 55, 440, 1760 Hz: pitch error < 1e-5 cent, level error < 1e-5 dB, waveform
  within -117 dB of sin(2 pi f0 t) (64-harmonic tables of 1024 samples: interpolation images of
  the 64th harmonic are at most -48 dB of it, 3e-7 of the power of a flat 64-harmonic glide);
* against `FastRenderer` on the same controls (first frame repeated): dry harmonic part -66 dB
  waveform difference and -115 dB spectral difference; with the reverb -43.5 dB and -40 dB, all
  of it the pre-ringing a causal filter drops (`impulse_response_at_rate`);
* speed at 48 kHz, one frame (384 samples) per call, undisturbed (`chrt -f 10`): 32 voices in a
  bank take 11 % of one core dry and 13.6 % with the reverb on their mix (`voices32_cpu_pct`,
  target <= 40 %; 1.1 ms per 8 ms frame, 1.6 ms at most); with a reverb per voice 56 % (one
  partition level), or 28 % with two levels whose bursts take 7.5 ms of an 8 ms frame every 8
  frames: hence the reverb on the mix. With other jobs on the machine the same figures read
  14-21 %, 61-77 % and 32-47 %. One voice alone (`StreamingSynth`, with its reverb) takes
  0.43 ms per frame, 5 % of a core, mostly per-call overhead that a bank shares among its
  voices. Of a bank's time, the per-sample table and noise gathers take about half, the
  wavetable and grain FFTs a third.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import scipy.fft

from synth.fast_render import (
    MAX_FREQUENCY_HZ,
    N_HARMONICS,
    N_NOISE_BANDS,
    TRAIN_SAMPLE_RATE,
    noise_band_matrix,
    resampling_fft_sizes,
    wavetable_gain,
    wavetable_size,
)
from synth.models import DECODER_FRAME_RATE

# Noise grains get random phases from a table of unit phasors: 4096 phases (steps of 0.09 degrees)
# sound the same as continuous ones and cost one gather instead of a cos and a sin per bin.
_N_PHASORS = 4096
_PHASORS = np.exp(2j * np.pi * np.arange(_N_PHASORS) / _N_PHASORS).astype(np.complex64)

# A harmonic fades out over the top 3 % of the band limit (7.76..8 kHz): about half a semitone of
# f0 for any harmonic, long enough not to click in a glide, narrow enough that the notes the
# decoder makes (whose harmonics stop below 8 kHz) sound as the offline renderer plays them.
MASK_TAPER = 0.03


def frame_start_sample(frame_index, sample_rate: int, frame_rate: int):
    """First sample of frame j (int or int64 array): ceil(j * sample_rate / frame_rate). Frame j
    covers samples [frame_start_sample(j), frame_start_sample(j + 1))."""
    return -((-np.asarray(frame_index, dtype=np.int64) * int(sample_rate)) // int(frame_rate))


def harmonic_taper(f0_hz, n_harmonics: int, limit_hz: float, taper: float = MASK_TAPER) -> np.ndarray:
    """[..., n_harmonics] float32 weight of harmonic k = 1..n_harmonics at f0_hz [...]: 1 for
    k * f0 <= (1 - taper) * limit_hz, 0 for k * f0 >= limit_hz, raised cosine in between."""
    k = np.arange(1, n_harmonics + 1, dtype=np.float32)
    frequency_hz = np.asarray(f0_hz, dtype=np.float32)[..., None] * k
    x = np.clip((limit_hz - frequency_hz) / np.float32(taper * limit_hz), 0.0, 1.0)
    return np.square(np.sin(np.float32(0.5 * np.pi) * x), dtype=np.float32)


def impulse_response_at_rate(impulse_response, from_rate: int, to_rate: int) -> np.ndarray:
    """An impulse response learned at `from_rate` as a filter at `to_rate`: band-limited
    (Fourier) resampling, scaled so that the frequency response is the same (below from_rate/2).

    impulse_response: [n] -> float32 [ceil(n * to_rate / from_rate)]. The response is
    zero-padded to twice its length first, so that the interpolation's ringing before t = 0 wraps
    into the padding (and is dropped: a streaming filter is causal) instead of onto the tail.
    This is the filter `FastRenderer` applies (the response's DTFT, zero above from_rate / 2)
    but for that dropped pre-ringing: for a decaying-noise response like the learned ones, -41 dB
    of its energy (measured in tests/synth/test_streaming.py).
    """
    ir = np.asarray(impulse_response, dtype=np.float64).reshape(-1)
    from_rate, to_rate = int(from_rate), int(to_rate)
    n_out = -(-ir.size * to_rate // from_rate)
    if from_rate == to_rate or ir.size == 0:
        return ir.astype(np.float32)
    n_from, n_to = resampling_fft_sizes(2 * ir.size, from_rate, to_rate)
    spectrum = scipy.fft.rfft(ir, n_from)
    n_bins_to = n_to // 2 + 1
    if n_bins_to > spectrum.size:
        if n_from % 2 == 0:
            spectrum[-1] *= 0.5  # the Nyquist bin is split between +-f on upsampling
        spectrum = np.concatenate([spectrum, np.zeros(n_bins_to - spectrum.size, spectrum.dtype)])
    # irfft at the new length scales samples by n_from / n_to = from_rate / to_rate, which is
    # exactly the 1 / (rate ratio) a denser impulse response needs to keep its gain.
    return scipy.fft.irfft(spectrum[:n_bins_to], n_to)[:n_out].astype(np.float32)


def _fast_even_length(min_length: int) -> int:
    """Smallest even n >= min_length whose FFT is fast (2, 3, 5-smooth)."""
    n = scipy.fft.next_fast_len(int(min_length), real=True)
    while n % 2:
        n = scipy.fft.next_fast_len(n + 1, real=True)
    return n


@functools.lru_cache(maxsize=256)
def chunk_geometry(first_frame: int, n_frames: int, sample_rate: int, frame_rate: int,
                   ease_fraction: float, grain_size: int):
    """Where the samples of frames first_frame .. first_frame + n_frames - 1 read their controls.

    Call with first_frame reduced modulo frame_rate / gcd(sample_rate, frame_rate) (the pattern of
    frame lengths repeats with that period; 1 at 48 kHz, 5 at 44.1 kHz).
    Returns (n_samples, segment [n] int64 in [0, n_frames): the frame a sample belongs to,
    ramp [n] float32 in [0, 1]: the eased position between the previous frame (0) and its own
    (1), grain_a / grain_b [n] int64: flat indices into [n_frames + 1, grain_size] grains (row 0
    the previous chunk's last grain) of the sample's previous and own frame's grain, weight_a /
    weight_b [n] float32: the equal-power cross-fade of those grains).
    """
    j0, sr, fr = int(first_frame), int(sample_rate), int(frame_rate)
    start = int(frame_start_sample(j0, sr, fr))
    n_samples = int(frame_start_sample(j0 + n_frames, sr, fr)) - start
    s = start + np.arange(n_samples, dtype=np.int64)
    # Frame j covers samples s with j * sr / fr <= s < (j + 1) * sr / fr, i.e. j = s * fr // sr.
    frame = (s * fr) // sr
    segment = frame - j0
    position = (s * fr - frame * sr) / sr  # in [0, 1): how far the sample is into its frame
    ramp = np.minimum(1.0, position / float(ease_fraction))
    # Grain j starts with frame j and lasts two frames: frame j fades grain j - 1 into grain j.
    local_a = s - frame_start_sample(frame - 1, sr, fr)
    local_b = s - frame_start_sample(frame, sr, fr)
    if n_samples and max(local_a.max(), local_b.max()) >= grain_size:
        raise ValueError(f"grain_size {grain_size} is shorter than two frames")
    grain_a = segment * grain_size + local_a
    grain_b = (segment + 1) * grain_size + local_b
    angle = 0.5 * np.pi * ramp
    return (n_samples, segment, ramp.astype(np.float32), grain_a, grain_b,
            np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32))


def _frames(values, n_voices: int, n_channels: int | None, name: str) -> np.ndarray:
    """Controls as [n_voices, k] (n_channels None; [n_voices, k, 1] accepted) or
    [n_voices, k, n_channels] float32."""
    x = np.asarray(values, dtype=np.float32)
    if n_channels is None and x.ndim == 3 and x.shape[-1] == 1:
        x = x[..., 0]
    ndim = 2 if n_channels is None else 3
    if x.ndim != ndim or x.shape[0] != n_voices or (n_channels is not None and x.shape[2] != n_channels):
        want = "[n_voices, k]" if n_channels is None else f"[n_voices, k, {n_channels}]"
        raise ValueError(f"{name}: expected {want} with n_voices = {n_voices}, got {x.shape}")
    return x


# A bank voice's state between chunks, per voice (`copy_voice`, `save_state`).
_BANK_STATE = ("_f0_hz", "_tables", "_grains", "_phase_cycles", "_last_sample_f0_hz", "_silent", "_fresh")


class StreamingSynthBank:
    """`n_voices` streaming DDSP voices (harmonic + filtered noise, dry), voices as leading axis.

    All voices share one clock (frames rendered so far); a voice starts a note with `reset`,
    which makes its next frame its first (held, see the module doc). Controls are the
    synthesizer's physical controls, as `DDSPSynth.get_controls` makes them. Not thread-safe.
    """

    def __init__(self, n_voices: int, sample_rate: int, n_harmonics: int = N_HARMONICS,
                 n_noise_bands: int = N_NOISE_BANDS, frame_rate: int = DECODER_FRAME_RATE,
                 max_frequency_hz: float = MAX_FREQUENCY_HZ, ease_fraction: float = 1.0,
                 seeds=None, table_size: int | None = None):
        if not 0.0 < ease_fraction <= 1.0:
            raise ValueError(f"ease_fraction: expected 0 < x <= 1, got {ease_fraction}")
        self.n_voices = int(n_voices)
        self.sample_rate = int(sample_rate)
        self.frame_rate = int(frame_rate)
        self.n_harmonics = int(n_harmonics)
        self.n_noise_bands = int(n_noise_bands)
        self.ease_fraction = float(ease_fraction)
        self.limit_hz = min(float(max_frequency_hz), self.sample_rate / 2)
        self.samples_per_frame = self.sample_rate / self.frame_rate
        self.frame_period = self.frame_rate // math.gcd(self.sample_rate, self.frame_rate)
        self.table_size = int(table_size or wavetable_size(self.n_harmonics))
        self.table_gain = wavetable_gain(self.n_harmonics, self.table_size)
        self.grain_size = _fast_even_length(2 * math.ceil(self.samples_per_frame))
        self.band_matrix = noise_band_matrix(self.n_noise_bands, self.grain_size, float(self.sample_rate),
                                             float(max_frequency_hz))
        self.frame_index = 0  # frames rendered so far (the bank's clock)
        v = self.n_voices
        # Per voice: the last frame's f0 and wavetable (value + 1j * slope), the last grain, the
        # phase (cycles, float64) and f0 of the last sample, and the noise generator.
        self._f0_hz = np.zeros(v, np.float32)
        self._tables = np.zeros((v, self.table_size), np.complex64)
        self._grains = np.zeros((v, self.grain_size), np.float32)
        self._phase_cycles = np.zeros(v, np.float64)
        self._last_sample_f0_hz = np.zeros(v, np.float64)
        self._silent = np.ones(v, bool)
        self._fresh = np.ones(v, bool)
        self._rngs: list[np.random.Generator] = [None] * v  # type: ignore[list-item]
        self._offsets: dict[tuple[int, int, int], np.ndarray] = {}
        # The last chunk's noise draws: (its first frame, voices sorted, their angles, their
        # fresh voices' first-grain angles, or None), for `retake`.
        self._last_draws: tuple | None = None
        self.reset(seeds=seeds)

    # -----------------------------------------------------------------------------------------

    def reset(self, voices=None, seeds=None) -> None:
        """Start new notes on `voices` (indices, or one index; default all): the next frame
        rendered for each is its first. `seeds`: a sequence with one int or None per voice (an
        int alone for one voice), seeding its noise draw so that a note renders the same samples
        every time; None (default) draws fresh entropy."""
        voices = np.arange(self.n_voices) if voices is None else np.atleast_1d(np.asarray(voices, np.int64))
        if seeds is None:
            seeds = [None] * len(voices)
        elif np.ndim(seeds) == 0:
            seeds = [seeds]
        if len(seeds) != len(voices):
            raise ValueError(f"seeds: expected one per voice ({len(voices)}), got {len(seeds)}")
        for voice, seed in zip(voices, seeds):
            self._rngs[voice] = np.random.default_rng(seed)
        self._fresh[voices] = True
        self._silent[voices] = True

    def copy_voice(self, source: "StreamingSynthBank", source_voice: int, voice: int) -> None:
        """Continue `source`'s voice `source_voice` as this bank's `voice` (phase, tables, noise
        grain and generator): the next frame this bank renders for it follows the last one
        `source` rendered, as if one bank had rendered both. Both banks must share a frame clock
        (the same frame index) and settings. A live engine renders a new note's first frames in a
        bank of its own, at once, then hands it over to the bank that renders every voice."""
        if (source.sample_rate, source.n_harmonics, source.n_noise_bands, source.table_size) != \
                (self.sample_rate, self.n_harmonics, self.n_noise_bands, self.table_size):
            raise ValueError("copy_voice: the banks have different settings")
        if source.frame_index != self.frame_index:
            raise ValueError(f"copy_voice: frame clocks differ ({source.frame_index} != {self.frame_index})")
        for name in _BANK_STATE:
            getattr(self, name)[voice] = getattr(source, name)[source_voice]
        self._rngs[voice] = source._rngs[source_voice]

    def save_state(self, into: dict | None = None) -> dict:
        """Every voice's state between chunks (phase, tables, grains; not the noise generators),
        and the clock: what `retake` starts from. `into`: a dict this returned before, filled in
        place (a live engine saves before every frame: 14 us for 40 voices, nothing allocated)."""
        if into is None:
            into = {name: getattr(self, name).copy() for name in _BANK_STATE}
        else:
            for name in _BANK_STATE:
                np.copyto(into[name], getattr(self, name))
        into["frame_index"] = self.frame_index
        return into

    def retake(self, state: dict, voices, f0_hz, amplitude, harmonic_distribution, noise_magnitudes) -> np.ndarray:
        """Render the last chunk of `voices` again, with other controls: from `state` (`save_state`
        just before that chunk) -> float32 [len(voices), n], as `render_chunk`. The voices carry on
        from the new chunk; the others are left as they are. The noise draws the chunk made are
        drawn again alike (kept from the chunk, not from the generators, which have moved on), so
        a retake with the same controls gives the same samples. A live engine retakes the frame
        it wrote last, not yet played, when a bend reaches a sounding voice (`VoiceEngine.retake`)."""
        index = np.asarray(voices, np.int64).reshape(-1)
        k = np.shape(f0_hz)[1]
        draws = self._last_draws
        if draws is None or state["frame_index"] + k != self.frame_index or draws[0] != state["frame_index"]:
            raise ValueError("retake: the state is not from just before the last chunk")
        _, slots, angles, fresh_angles = draws
        rows = np.searchsorted(slots, index)
        if np.any(rows >= slots.size) or np.any(slots[np.minimum(rows, slots.size - 1)] != index):
            raise ValueError(f"retake: voices {index.tolist()} were not all in the last chunk")
        for name in _BANK_STATE:
            getattr(self, name)[index] = state[name][index]
        self.frame_index = state["frame_index"]
        return self.render_chunk(f0_hz, amplitude, harmonic_distribution, noise_magnitudes, voices=index,
                                 others_idle=False,
                                 _draws=(angles[rows], None if fresh_angles is None else fresh_angles[rows]))

    def chunk_samples(self, n_frames: int) -> int:
        """Samples the next `n_frames` frames will render (bank clock; 384 per frame at 48 kHz)."""
        j0 = self.frame_index
        return int(frame_start_sample(j0 + n_frames, self.sample_rate, self.frame_rate)
                   - frame_start_sample(j0, self.sample_rate, self.frame_rate))

    def silent_voices(self) -> np.ndarray:
        """[n_voices] bool: True where the voice's last frame had no sound (zero harmonic amplitudes
        and noise magnitudes): from then on, silent frames render exact zeros, so the voice is free."""
        return self._silent.copy()

    # -----------------------------------------------------------------------------------------

    def _table_offsets(self, n_voices: int, n_frames: int, first_frame: int,
                       segment: np.ndarray) -> np.ndarray:
        """[n_voices, n] int64: flat offset of each sample's previous-frame table in a
        [n_voices, n_frames + 1, table_size] array (cached: chunks come in few shapes).
        first_frame: the chunk's first frame modulo frame_period, as for `chunk_geometry`."""
        key = (n_voices, n_frames, first_frame)
        offsets = self._offsets.get(key)
        if offsets is None:
            if len(self._offsets) > 64:
                self._offsets.clear()
            voice = np.arange(n_voices, dtype=np.int64)[:, None] * ((n_frames + 1) * self.table_size)
            offsets = self._offsets[key] = voice + segment * self.table_size
        return offsets

    def _wavetables(self, harmonic_amps: np.ndarray) -> np.ndarray:
        """[..., n_harmonics] amplitudes -> [..., table_size] complex64 tables (value + 1j * slope)."""
        size = self.table_size
        spectrum = np.zeros(harmonic_amps.shape[:-1] + (size // 2 + 1,), np.complex64)
        np.multiply(harmonic_amps, self.table_gain, out=spectrum.imag[..., 1 : self.n_harmonics + 1])
        values = scipy.fft.irfft(spectrum, size, axis=-1)
        tables = np.empty(values.shape, np.complex64)
        tables.real = values
        np.subtract(values[..., 1:], values[..., :-1], out=tables.imag[..., :-1])
        np.subtract(values[..., 0], values[..., -1], out=tables.imag[..., -1])
        return tables

    def _noise_grains(self, noise_magnitudes: np.ndarray, phases: np.ndarray) -> np.ndarray:
        """[..., n_bands] magnitudes and [..., n_bins] random phases (cycles in [0, 1)) -> grains
        [..., grain_size] float32."""
        bin_magnitudes = noise_magnitudes @ self.band_matrix
        phases *= np.float32(_N_PHASORS)
        spectrum = np.take(_PHASORS, phases.astype(np.intp))
        spectrum *= bin_magnitudes
        spectrum.imag[..., 0] = 0.0
        spectrum.imag[..., -1] = 0.0
        return scipy.fft.irfft(spectrum, self.grain_size, axis=-1)

    def render_chunk(self, f0_hz, amplitude, harmonic_distribution, noise_magnitudes,
                     voices=None, others_idle: bool = True, _draws=None) -> np.ndarray:
        """The next k frames of the voices -> float32 [n_voices, n] audio (dry), n = chunk_samples(k).

        f0_hz, amplitude: [n_voices, k] (or [n_voices, k, 1]); harmonic_distribution:
        [n_voices, k, n_harmonics]; noise_magnitudes: [n_voices, k, n_bands]; k >= 1.
        `voices`: indices of the voices these controls are for (default all, in order); the
        others are idle for this chunk: they are reset (their next frame starts a new note), so
        only voices that are silent should be left out (others_idle False: they are left as
        they are, for `retake`).
        """
        index = np.arange(self.n_voices) if voices is None else np.asarray(voices, np.int64).reshape(-1)
        v = len(index)
        f0 = np.maximum(_frames(f0_hz, v, None, "f0_hz"), 0.0)  # no negative frequencies
        amp = _frames(amplitude, v, None, "amplitude")
        dist = _frames(harmonic_distribution, v, self.n_harmonics, "harmonic_distribution")
        mags = _frames(noise_magnitudes, v, self.n_noise_bands, "noise_magnitudes")
        k = f0.shape[1]
        if amp.shape[1] != k or dist.shape[1] != k or mags.shape[1] != k:
            raise ValueError("all controls need the same number of frames")
        if voices is not None and others_idle:
            idle = np.ones(self.n_voices, bool)
            idle[index] = False
            # Idle voices start afresh when next used (their generator keeps drawing where it was).
            self._fresh[idle] = True
            self._silent[idle] = True
        first_frame = self.frame_index % self.frame_period
        n, segment, ramp, grain_a, grain_b, weight_a, weight_b = chunk_geometry(
            first_frame, k, self.sample_rate, self.frame_rate, self.ease_fraction, self.grain_size)
        self.frame_index += k
        if k == 0 or v == 0:
            return np.zeros((v, n), np.float32)
        fresh = self._fresh[index]
        n_bins = self.grain_size // 2 + 1

        # Wavetables of the k frames after the carried one; a fresh voice's carried frame is its first.
        harmonic_amps = dist * amp[..., None]
        harmonic_amps *= harmonic_taper(f0, self.n_harmonics, self.limit_hz)
        tables = np.empty((v, k + 1, self.table_size), np.complex64)
        tables[:, 1:] = self._wavetables(harmonic_amps)
        tables[:, 0] = self._tables[index]
        tables[fresh, 0] = tables[fresh, 1]

        # Noise grains: frame by frame from each voice's generator (a fresh voice first draws the
        # grain of its held first frame), so the draw does not depend on chunk sizes.
        grains = np.empty((v, k + 1, self.grain_size), np.float32)
        any_fresh = bool(fresh.any())
        if _draws is not None:  # a retake: the chunk's own draws (`retake`)
            angles, fresh_angles = _draws
        else:
            angles = np.empty((v, k, n_bins), np.float32)
            fresh_angles = np.empty((v, 1, n_bins), np.float32) if any_fresh else None  # (rows of fresh voices)
            for row, voice in enumerate(index):
                rng = self._rngs[voice]
                if fresh[row]:
                    rng.random(dtype=np.float32, out=fresh_angles[row])
                rng.random(dtype=np.float32, out=angles[row])
            # Kept for a retake of this chunk, by voice (copies: `_noise_grains` scales its input).
            order = np.argsort(index, kind="stable")
            self._last_draws = (self.frame_index - k, index[order], angles[order],
                                None if fresh_angles is None else fresh_angles[order])
        grains[:, 1:] = self._noise_grains(mags, angles)
        grains[:, 0] = self._grains[index]
        if any_fresh:
            # (3-D operands: a 2-D matmul this small goes to threaded BLAS, 20x slower.)
            grains[fresh, 0] = self._noise_grains(mags[fresh, :1], fresh_angles[fresh])[:, 0]

        # Oscillator phase: f0 ramps from the carried frame to each frame, integrated per sample.
        f0_frames = np.empty((v, k + 1), np.float64)
        f0_frames[:, 1:] = f0
        f0_frames[:, 0] = np.where(fresh, f0[:, 0], self._f0_hz[index])
        if k == 1:  # the live case: broadcasting instead of gathers
            f0_prev = f0_frames[:, :1]
            f0_audio = f0_prev + ramp * (f0_frames[:, 1:] - f0_prev)
        else:
            f0_prev = f0_frames[:, segment]
            f0_audio = f0_prev + ramp * (f0_frames[:, segment + 1] - f0_prev)
        last_f0 = np.where(fresh, f0_audio[:, 0], self._last_sample_f0_hz[index])
        # A fresh voice's phase is 0 at its first sample.
        phase = np.where(fresh, -f0_audio[:, 0] / self.sample_rate, self._phase_cycles[index])
        increments = np.empty((v, n), np.float64)
        increments[:, 0] = last_f0
        increments[:, 1:] = f0_audio[:, :-1]
        increments += f0_audio
        increments *= 0.5 / self.sample_rate
        increments[:, 0] += phase
        cycles = np.cumsum(increments, axis=1)

        # Table lookups: position in the table, linear interpolation by the stored slope, then
        # the cross-fade from the previous frame's table to the frame's own.
        size = self.table_size
        position = cycles * size  # cycles >= 0: the integer part's low bits are the table index
        table_index = position.astype(np.int64)
        frac = np.empty((v, n), np.float32)
        np.subtract(position, table_index, out=frac, casting="same_kind")
        table_index &= size - 1
        table_index += self._table_offsets(v, k, first_frame, segment)
        flat_tables = tables.reshape(-1)
        held = np.take(flat_tables, table_index)
        table_index += size
        own = np.take(flat_tables, table_index)
        audio = held.imag * frac
        audio += held.real
        target = own.imag * frac
        target += own.real
        target -= audio
        target *= ramp
        audio += target

        # Noise: the previous frame's grain cross-faded into the frame's own.
        noise = np.take(grains.reshape(v, -1), grain_a, axis=1)
        noise *= weight_a
        other = np.take(grains.reshape(v, -1), grain_b, axis=1)
        other *= weight_b
        noise += other
        audio += noise

        # Carry the state to the next chunk.
        self._f0_hz[index] = f0[:, -1]
        self._tables[index] = tables[:, -1]
        self._grains[index] = grains[:, -1]
        self._phase_cycles[index] = cycles[:, -1] - np.floor(cycles[:, -1])
        self._last_sample_f0_hz[index] = f0_audio[:, -1]
        self._silent[index] = ~(np.any(harmonic_amps[:, -1] != 0.0, axis=-1)
                                | np.any(mags[:, -1] != 0.0, axis=-1))
        self._fresh[index] = False
        return audio


class StreamingReverb:
    """Dry + wet through an impulse response, streamed with zero latency: [n_channels, n] -> same.

    impulse_response: [ir_length], the wet part (first tap 0, as `processors.Reverb` keeps it) at
    `ir_sample_rate`; it is applied at `sample_rate` as the same band-limited filter
    (`impulse_response_at_rate`). Partitions: taps [0, B) are convolved with each incoming piece by
    FFT; the rest in `block_sizes` levels of uniformly partitioned FFT convolution, level s with
    blocks of B_s samples covering taps [B_s, B_{s+1}) (the last level: to the end), where
    B = block_sizes[0] and every B_s is a multiple of B. One level of blocks of about one frame
    (the default: 384 samples at 48 kHz, 360 at 44.1 kHz) costs the same every chunk: for a 1 s
    response at 48 kHz about 0.15 ms per frame and channel, 2 % of a core. A second level of 8x
    larger blocks, `block_sizes=(384, 3072)`, does 2-3x less work on average, in bursts every
    8 blocks (bench/dsp.py, `voices32_voice_reverb2_cpu_pct`). Not thread-safe.
    """

    def __init__(self, impulse_response, sample_rate: int, ir_sample_rate: int = TRAIN_SAMPLE_RATE,
                 n_channels: int = 1, block_sizes: tuple[int, ...] | None = None,
                 frame_rate: int = DECODER_FRAME_RATE):
        self.sample_rate = int(sample_rate)
        self.n_channels = int(n_channels)
        ir = impulse_response_at_rate(impulse_response, ir_sample_rate, self.sample_rate)
        nonzero = np.flatnonzero(ir)
        ir = ir[: nonzero[-1] + 1] if nonzero.size else ir[:0]
        self.impulse_response = ir
        if block_sizes is None:
            block_sizes = (_fast_even_length(2 * math.ceil(self.sample_rate / frame_rate)) // 2,)
        self.block_sizes = tuple(int(b) for b in block_sizes)
        head = self.block_sizes[0]
        if any(b % head for b in self.block_sizes) or list(self.block_sizes) != sorted(set(self.block_sizes)):
            raise ValueError(f"block_sizes: expected increasing multiples of the first, got {block_sizes}")
        self._head = ir[:head]
        self._head_spectra: dict[int, np.ndarray] = {}
        # Levels: (block size, number of partitions, partition spectra oldest-first).
        self._levels = []
        for level, block in enumerate(self.block_sizes):
            start = block
            stop = self.block_sizes[level + 1] if level + 1 < len(self.block_sizes) else ir.size
            stop = min(stop, ir.size)
            if stop <= start:
                break
            n_parts = -(-(stop - start) // block)
            taps = np.zeros(n_parts * block, np.float32)
            taps[: stop - start] = ir[start:stop]
            spectra = scipy.fft.rfft(taps.reshape(n_parts, block), 2 * block, axis=-1)
            # [bins, partitions], newest block's partition last, conjugated for np.vecdot.
            self._levels.append((block, n_parts, np.ascontiguousarray(spectra[::-1].T.conj(), np.complex64)))
        longest = max([head] + [b for b, _, _ in self._levels])
        self._ring_size = 1 << (4 * longest - 1).bit_length()
        # The longest any output still depends on input: head, or a level's last partition.
        self._tail_bound = max([head] + [b * (n + 2) for b, n, _ in self._levels])
        self.reset()

    def reset(self) -> None:
        """Forget all input: the output is silent until new input arrives."""
        c = self.n_channels
        self.time = 0  # samples processed
        self._ring = np.zeros((c, self._ring_size), np.float32)
        self._blocks = [np.zeros((c, b), np.float32) for b, _, _ in self._levels]
        # Frequency-domain delay lines [channels, bins, 2 * n_parts]: each block's spectrum is
        # written twice, so that the last n_parts blocks are always one slice (oldest first).
        self._delay_lines = [np.zeros((c, b + 1, 2 * n), np.complex64) for b, n, _ in self._levels]
        self._write = [0] * len(self._levels)
        self._last_input_end = np.full(c, -(1 << 40), np.int64)

    def checkpoint(self, into: dict | None = None) -> dict:
        """What `restore` needs to take back the next `process` call, when it is followed by one
        of the same length: the output ring, the blocks being filled and the clocks (about 10 KB
        for one channel; `into`: a dict this returned before, filled in place). The delay lines
        need nothing: a block the call completes overwrites the oldest one's columns, which no
        later output reads, and the call done again completes the same block. A live engine
        checkpoints before every frame, so that it can process that frame again with another
        mix (`VoiceEngine.retake`)."""
        if into is None:
            into = {"ring": self._ring.copy(), "blocks": [b.copy() for b in self._blocks],
                    "last_input_end": self._last_input_end.copy()}
        else:
            np.copyto(into["ring"], self._ring)
            for saved, block in zip(into["blocks"], self._blocks):
                np.copyto(saved, block)
            np.copyto(into["last_input_end"], self._last_input_end)
        into["write"] = list(self._write)
        into["time"] = self.time
        return into

    def restore(self, checkpoint: dict) -> None:
        """Back to `checkpoint`, taken before the last `process` call; the next call must have
        the same number of samples."""
        np.copyto(self._ring, checkpoint["ring"])
        for block, saved in zip(self._blocks, checkpoint["blocks"]):
            np.copyto(block, saved)
        np.copyto(self._last_input_end, checkpoint["last_input_end"])
        self._write = list(checkpoint["write"])
        self.time = checkpoint["time"]

    def add_past(self, audio) -> np.ndarray:
        """Input that belonged to the last m samples already processed: dry [n_channels, m] (or
        [m]) -> the wet output it makes over those m samples, same shape (the caller adds it to
        what it played, or will play, of them). From here on the output includes its wet part in
        full, as if it had come in its time (to float32 rounding).

        A live engine starts a note inside frames it has written already (`VoiceEngine._catch_up`):
        this is their reverb, the whole response, not only its first taps.

        How: a block of input already complete sits in the frequency-domain delay line, where its
        partitions meet the blocks completed from now on; its spectrum gets the new input's added.
        What those partitions did before now (the taps up to the current block) and the head
        taps are convolved directly, once: a few blocks of taps. Input in the block being filled
        goes into it. One level of partitions only (the default)."""
        x = np.asarray(audio, dtype=np.float32)
        squeeze = x.ndim == 1
        x = x.reshape(self.n_channels, -1)
        m = x.shape[-1]
        if len(self._levels) > 1:
            raise ValueError("add_past: one level of partitions only (block_sizes of one size)")
        t = self.time
        if m > t:
            raise ValueError(f"add_past: {m} samples, but only {t} were processed")
        block = self.block_sizes[0]
        ir = self.impulse_response
        past = np.zeros_like(x)
        done = t // block  # blocks complete
        start = t - m
        c = start // block
        while c * block < t:
            lo, hi = max(start, c * block), min(t, (c + 1) * block)
            piece = x[:, lo - start : hi - start]
            if c < done:
                if self._levels:  # into the delay line, where the partitions from (done - c) on meet it
                    _, n_parts, _ = self._levels[0]
                    if done - c > n_parts:
                        raise ValueError("add_past: input older than the delay line")
                    padded = np.zeros((self.n_channels, block), np.float32)
                    padded[:, lo - c * block : hi - c * block] = piece
                    spectrum = scipy.fft.rfft(padded, 2 * block, axis=-1).astype(np.complex64)
                    line, col = self._delay_lines[0], (self._write[0] - (done - c)) % n_parts
                    line[..., col] += spectrum
                    line[..., col + n_parts] += spectrum
                taps = ir[: block * (done - c + 1)]  # the head and the partitions before now
            else:  # the block being filled
                if self._blocks:
                    self._blocks[0][:, lo - c * block : hi - c * block] += piece
                taps = ir[:block]
            if taps.size:
                n_out = piece.shape[-1] + taps.size - 1
                n_fft = scipy.fft.next_fast_len(n_out, real=True)
                wet = scipy.fft.irfft(scipy.fft.rfft(piece, n_fft, axis=-1) * scipy.fft.rfft(taps, n_fft),
                                      n_fft, axis=-1)[:, :n_out].astype(np.float32)
                k = min(n_out, t - lo)  # before now: the caller's; from now on: the ring's
                past[:, lo - start : lo - start + k] += wet[:, :k]
                if n_out > k:
                    if n_out - k > self._ring_size:
                        raise ValueError("add_past: the output ring is too short")
                    self._ring_add(t, wet[:, k:])
            c += 1
        active = np.any(x != 0.0, axis=-1)
        self._last_input_end[active] = np.maximum(self._last_input_end[active], t)
        return past[0] if squeeze else past

    def tail_samples(self) -> np.ndarray:
        """[n_channels] int: samples of output that may still be non-zero if the input stays silent
        (0: the channel has rung out and outputs exact zeros)."""
        return np.maximum(0, self._last_input_end + self._tail_bound - self.time)

    def is_silent(self) -> bool:
        """True when every channel has rung out (see `tail_samples`)."""
        return bool(np.all(self.tail_samples() == 0))

    def _ring_add(self, start: int, values: np.ndarray) -> None:
        i = start % self._ring_size
        n = values.shape[-1]
        first = min(n, self._ring_size - i)
        self._ring[:, i : i + first] += values[:, :first]
        if first < n:
            self._ring[:, : n - first] += values[:, first:]

    def _ring_take(self, start: int, n: int) -> np.ndarray:
        i = start % self._ring_size
        first = min(n, self._ring_size - i)
        out = np.empty((self.n_channels, n), np.float32)
        out[:, :first] = self._ring[:, i : i + first]
        self._ring[:, i : i + first] = 0.0
        if first < n:
            out[:, first:] = self._ring[:, : n - first]
            self._ring[:, : n - first] = 0.0
        return out

    def _head_spectrum(self, n_fft: int) -> np.ndarray:
        spectrum = self._head_spectra.get(n_fft)
        if spectrum is None:
            spectrum = self._head_spectra[n_fft] = scipy.fft.rfft(self._head, n_fft).astype(np.complex64)
        return spectrum

    def _process_piece(self, x: np.ndarray) -> np.ndarray:
        """x [n_channels, m], not crossing a multiple of block_sizes[0] -> dry + wet."""
        m = x.shape[-1]
        t = self.time
        if self._head.size:
            n_out = m + self._head.size - 1
            n_fft = scipy.fft.next_fast_len(n_out, real=True)
            spectrum = scipy.fft.rfft(x, n_fft, axis=-1) * self._head_spectrum(n_fft)
            wet = scipy.fft.irfft(spectrum, n_fft, axis=-1)
            self._ring_add(t, wet[:, :n_out])
        for level, (block, n_parts, spectra) in enumerate(self._levels):
            offset = t % block
            buffer = self._blocks[level]
            buffer[:, offset : offset + m] = x
            if offset + m < block:
                continue
            # A block is complete: into the delay line, and the sum over partitions of its last
            # n_parts blocks times their partitions lands at the block's end (taps >= block).
            line, w = self._delay_lines[level], self._write[level]
            line[..., w] = line[..., w + n_parts] = scipy.fft.rfft(buffer, 2 * block, axis=-1)
            # sum over partitions p of block (newest - p) times partition p, per bin; np.vecdot
            # over the contiguous last axis is about 4x faster than einsum (measured).
            mixed = np.vecdot(spectra, line[..., w + 1 : w + n_parts + 1])
            self._ring_add(t + m, scipy.fft.irfft(mixed, 2 * block, axis=-1))
            self._write[level] = (w + 1) % n_parts
        active = np.any(x != 0.0, axis=-1)
        self._last_input_end[active] = t + m
        out = self._ring_take(t, m)
        out += x
        self.time = t + m
        return out

    def process(self, audio) -> np.ndarray:
        """Dry [n_channels, n] (or [n] for one channel) -> dry + wet, same shape, float32."""
        x = np.asarray(audio, dtype=np.float32)
        squeeze = x.ndim == 1
        x = x.reshape(self.n_channels, -1)
        head = self.block_sizes[0]
        pieces = []
        start = 0
        while start < x.shape[-1]:
            stop = min(x.shape[-1], start + head - (self.time % head))
            pieces.append(self._process_piece(x[:, start:stop]))
            start = stop
        if not pieces:
            out = np.zeros_like(x)
        else:
            out = np.concatenate(pieces, axis=-1) if len(pieces) > 1 else pieces[0]
        return out[0] if squeeze else out


class StreamingSynth:
    """One voice: its streaming synthesizer (a `StreamingSynthBank` of one) and its reverb.

    Created once per note with the note's static parts; `render_chunk` then renders its controls
    k frames at a time; when the note is over (silent controls), `is_silent()` turns True once the
    reverb has rung out (`tail_samples()` says when).
    impulse_response: [ir_length] at ir_sample_rate (the decoder's learned reverb,
    `Reverb.impulse_response_numpy()`), or None for none.
    """

    def __init__(self, sample_rate: int, impulse_response=None, n_harmonics: int = N_HARMONICS,
                 n_noise_bands: int = N_NOISE_BANDS, frame_rate: int = DECODER_FRAME_RATE,
                 seed: int | None = None, ir_sample_rate: int = TRAIN_SAMPLE_RATE,
                 max_frequency_hz: float = MAX_FREQUENCY_HZ, ease_fraction: float = 1.0,
                 reverb_block_sizes: tuple[int, ...] | None = None):
        self.bank = StreamingSynthBank(1, sample_rate, n_harmonics, n_noise_bands, frame_rate,
                                       max_frequency_hz, ease_fraction, seeds=[seed])
        self.reverb = None if impulse_response is None else StreamingReverb(
            impulse_response, sample_rate, ir_sample_rate, 1, reverb_block_sizes, frame_rate)
        self.sample_rate = int(sample_rate)
        self.samples_per_frame = self.bank.samples_per_frame

    def chunk_samples(self, n_frames: int) -> int:
        """Samples the next `n_frames` frames will render."""
        return self.bank.chunk_samples(n_frames)

    def render_chunk(self, f0_hz, amplitude, harmonic_distribution, noise_magnitudes) -> np.ndarray:
        """The next k frames' controls -> float32 [chunk_samples(k)].

        f0_hz, amplitude: [k] (or [k, 1]); harmonic_distribution: [k, n_harmonics];
        noise_magnitudes: [k, n_bands]; k >= 1.
        """
        dry = self.bank.render_chunk(np.asarray(f0_hz, np.float32).reshape(1, -1),
                                     np.asarray(amplitude, np.float32).reshape(1, -1),
                                     np.asarray(harmonic_distribution, np.float32)[None],
                                     np.asarray(noise_magnitudes, np.float32)[None])
        return (dry if self.reverb is None else self.reverb.process(dry))[0]

    def tail_samples(self) -> int:
        """Samples of output that may still be non-zero if the controls stay silent."""
        dry = 0 if self.bank.silent_voices()[0] else math.ceil(self.samples_per_frame)
        wet = 0 if self.reverb is None else int(self.reverb.tail_samples()[0])
        return max(dry, wet)

    def is_silent(self) -> bool:
        """True once the voice renders exact zeros for silent controls: it can end."""
        return bool(self.bank.silent_voices()[0]) and (self.reverb is None or self.reverb.is_silent())
