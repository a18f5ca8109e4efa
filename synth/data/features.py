"""Frame-wise features of one note: a pitch-seeded f0 tracker and a short-time level envelope.

The f0 tracker replaces CREPE (no weights can be downloaded here). It knows the note's nominal
MIDI pitch, as every NSynth note does, and only looks for the period within +-1 semitone of it:

* frames are centred on ``i * hop`` (``hop = sample_rate / frame_rate``; 64 samples at 16 kHz and
  250 frames/s, so 1000 frames for a 4 s note), each ``window`` samples long (about 2.2 times the
  longest lag searched, at least 128 samples);
* long periods (low notes) are found in the signal decimated by a power of two (anti-aliased),
  so the period stays >= 40 samples and the correlation stays cheap;
* short periods are measured over m periods (m up to 5, lag about 48 samples), and lags below
  40 samples are searched on a quarter-sample grid (the autocorrelation Lanczos-interpolated
  from whole lags), which keeps the error at a few cents up to the top of the piano;
* per frame, the normalised cross-correlation ``nccf(lag) = 2 r(lag) / (e_head + e_tail)``
  (r from an FFT, the energies of the overlapping parts from cumulative sums) is evaluated at
  every integer lag in the search range; the best lag must be a local maximum, and parabolic
  interpolation around it gives a fractional period;
* ``confidence`` is the nccf at that peak (0 for silent frames, for frames more than 60 dB below
  the note's loudest frame, and where the best lag sits on the edge of the range);
* ``f0_hz`` is the measured value where ``confidence >= VOICED_CONFIDENCE`` and the nominal
  pitch elsewhere, so a silent tail or a noisy onset carries the note's pitch, not garbage.

Cost: a few ms per note (one batched FFT over all frames).
"""

from __future__ import annotations

import numpy as np
import scipy.fft
import scipy.signal

from synth.units import hz_to_midi, midi_to_hz  # noqa: F401  (re-exported for the data package)

FRAME_RATE = 250
VOICED_CONFIDENCE = 0.5
SEARCH_SEMITONES = 1.0
SILENCE_DB = -60.0  # frames this far below the loudest frame count as silent


def frame_signal(audio: np.ndarray, window: int, hop: int, n_frames: int) -> np.ndarray:
    """[n_frames, window] view of `audio` with frame i centred on sample i*hop (zero padded)."""
    pad = window // 2
    need = (n_frames - 1) * hop + window
    padded = np.zeros(need, dtype=np.float64)
    chunk = audio[: max(0, min(len(audio), need - pad))]
    padded[pad : pad + len(chunk)] = chunk
    return np.lib.stride_tricks.sliding_window_view(padded, window)[::hop][:n_frames]


def track_f0(
    audio: np.ndarray,
    sample_rate: int,
    pitch: float,
    frame_rate: int = FRAME_RATE,
    search_semitones: float = SEARCH_SEMITONES,
) -> tuple[np.ndarray, np.ndarray]:
    """Pitch-seeded f0 of one note.

    Args:
      audio: [n_samples] mono signal.
      sample_rate: Hz.
      pitch: nominal MIDI pitch of the note (the seed).
      frame_rate: frames per second; `sample_rate / frame_rate` must be an integer.
      search_semitones: half-width of the searched range around the nominal pitch.

    Returns:
      (f0_hz, confidence), both [n_frames] float32 with n_frames = n_samples * frame_rate //
      sample_rate. f0_hz is the nominal pitch where confidence < VOICED_CONFIDENCE.
    """
    audio = np.asarray(audio, dtype=np.float64)
    hop = sample_rate // frame_rate
    if hop * frame_rate != sample_rate:
        raise ValueError(f"frame_rate: {frame_rate} does not divide sample_rate {sample_rate}")
    n_frames = len(audio) // hop
    f_nom = float(midi_to_hz(pitch))
    ratio = 2.0 ** (search_semitones / 12.0)
    # Long periods: decimate (anti-aliased, by a power of two dividing the hop) so the period is
    # still >= 40 samples; the correlation then costs far less and loses nothing that matters.
    decim = 1
    while decim * 2 <= 16 and hop % (decim * 2) == 0 and sample_rate / f_nom / (decim * 2) >= 40:
        decim *= 2
    if decim > 1:
        audio = scipy.signal.resample_poly(audio, 1, decim)
    sr = sample_rate / decim
    hop_d = hop // decim
    # Short periods are measured over several periods (lag m * P): the lag resolution then costs
    # m times fewer cents. m stays small enough that the search range around m * P cannot reach
    # the neighbouring peaks at (m +- 1) * P.
    m_max = max(1, int(0.3 / (ratio - 1.0)))
    n_periods = int(max(1, min(m_max, 48.0 // (sr / f_nom))))
    period = n_periods * sr / f_nom
    lo = max(2.0, period / ratio)
    hi = period * ratio
    # Lags on a grid of 1/up samples; the correlation at fractional lags is interpolated from
    # whole lags with a Lanczos kernel (it is band-limited): a high note's correlation peak is
    # too narrow for whole-sample lags.
    up = 1 if period >= 40 else 4
    lags = np.arange(np.floor(lo * up) - 1, np.ceil(hi * up) + 2) / up
    taps = 8 if up > 1 else 0
    whole = np.arange(max(1, int(np.floor(lags[0])) - taps), int(np.ceil(lags[-1])) + taps + 1)
    window = max(128, int(np.ceil(2.2 * whole[-1] / 32.0)) * 32)

    frames = frame_signal(audio, window, hop_d, n_frames).astype(np.float32)
    n_fft = 1 << int(np.ceil(np.log2(2 * window)))
    spec = scipy.fft.rfft(frames, n_fft, axis=1)
    acf_whole = scipy.fft.irfft(spec.real**2 + spec.imag**2, n_fft, axis=1)[:, whole].astype(np.float64)
    if up > 1:
        d = lags[:, None] - whole[None, :]
        kernel = np.where(np.abs(d) < taps, np.sinc(d) * np.sinc(d / taps), 0.0)
        acf = acf_whole @ kernel.T
    else:
        lags = whole.astype(np.float64)
        acf = acf_whole
    csum = np.concatenate([np.zeros((n_frames, 1)), np.cumsum(np.square(frames, dtype=np.float64), axis=1)], axis=1)

    def csum_at(pos):  # linear interpolation of the cumulative energy at fractional positions
        i0 = np.floor(pos).astype(int)
        w = pos - i0
        i1 = np.minimum(i0 + 1, window)
        return csum[:, i0] * (1 - w) + csum[:, i1] * w

    e_head = csum_at(window - lags)
    e_tail = csum[:, window : window + 1] - csum_at(lags)
    nccf = 2.0 * acf / (e_head + e_tail + 1e-12)

    best = np.argmax(nccf, axis=1)
    rows = np.arange(n_frames)
    inner = (best > 0) & (best < len(lags) - 1)
    b = np.clip(best, 1, len(lags) - 2)
    y0, y1, y2 = nccf[rows, b - 1], nccf[rows, b], nccf[rows, b + 1]
    denom = y0 - 2 * y1 + y2
    shift = np.where(np.abs(denom) > 1e-12, 0.5 * (y0 - y2) / np.where(denom == 0, 1, denom), 0.0)
    shift = np.clip(shift, -0.5, 0.5)
    step = lags[1] - lags[0]
    lag = lags[b] + shift * step
    confidence = np.where(inner, np.clip(y1 - 0.25 * (y0 - y2) * shift, 0.0, 1.0), 0.0)

    energy = csum[:, -1] / window
    level_db = 10 * np.log10(energy + 1e-20)
    silent = (level_db < level_db.max() + SILENCE_DB) | (level_db < -100.0)
    confidence[silent] = 0.0
    f0 = np.where(confidence >= VOICED_CONFIDENCE, n_periods * sr / lag, f_nom)
    return f0.astype(np.float32), confidence.astype(np.float32)


def level_envelope_db(audio: np.ndarray, sample_rate: int, hop_s: float = 0.01) -> np.ndarray:
    """RMS level in dBFS per `hop_s` frame (window 2 hops, centred), [n_frames] float64."""
    audio = np.asarray(audio, dtype=np.float64)
    hop = max(1, int(round(hop_s * sample_rate)))
    n_frames = len(audio) // hop
    frames = frame_signal(audio, 2 * hop, hop, n_frames)
    return 10 * np.log10(np.mean(frames**2, axis=1) + 1e-20)


def voiced_fraction(
    audio: np.ndarray, sample_rate: int, pitch: float, hold_s: float = 3.0, frame_rate: int = 50
) -> float:
    """Share of the held part's loud frames (within 30 dB of the loudest) where the note's own
    pitch is found (`track_f0` confidence >= VOICED_CONFIDENCE); 0..1, 0 for a silent note.
    Strict on purpose: a note whose waveform only repeats at a lower octave (FluidR3's drawbar
    organ below about C6 is dominated by a component two octaves down) does not sound its pitch,
    and a harmonic model conditioned on that pitch could not reproduce it.

    The builder drops notes below `MIN_VOICED_FRACTION`: a preset that does not really sound the
    asked pitch (unpitched effects, drums, keys outside a preset's range that play something
    else) yields no periodicity at that pitch.
    """
    held = np.asarray(audio[: int(hold_s * sample_rate)], dtype=np.float64)
    _, confidence = track_f0(held, sample_rate, pitch, frame_rate=frame_rate)
    hop = sample_rate // frame_rate
    frames = frame_signal(held, hop, hop, len(confidence))
    level = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-20)
    loud = level >= level.max() - 30.0
    if not loud.any() or level.max() < -100:
        return 0.0
    return float(np.mean(confidence[loud] >= VOICED_CONFIDENCE))


MIN_VOICED_FRACTION = 0.3
