"""Evaluation metrics: pure numpy functions on audio and numbers (no models, no TensorFlow).

`synth.evaluate` runs the generator and feeds what it renders through these; each function is
tested on synthetic signals in `tests/synth/test_metrics.py`.

Note timing follows NSynth: note-on at 0 s, note-off at `NOTE_OFF_S` (3 s), audio to 4 s.

=====================  ==========================================================================
function               what it measures
=====================  ==========================================================================
`measure_pitch_hz`     the fundamental of a note from one long FFT over its sustained part
                       (harmonic-comb search, then the power-weighted frequency of each harmonic
                       and a weighted least-squares fit f_k = k f0); independent of any f0
                       curve a model produced
`cents`                1200 log2(f / f_ref)
`held_loudness_db`     mean A-weighted loudness (`compute_loudness_db` frames, dB) over the held
                       part [0, note-off)
`rising_steps`         how many neighbouring levels (e.g. velocities 25->50->...) get louder
`log_mel_db`           log-mel spectrogram (dB re full scale, floored) for distances
`spectral_distance_db` mean |difference| of two log-mel spectrograms (dB)
`smoothness`           of a sweep's neighbouring-step distances: global max/median and the local
                       jump ratio (a step against the mean of its two neighbours)
`envelope_error_db`    mean |difference| of two loudness curves, each floored at -80 dB
`spectral_centroid_hz` power-weighted mean frequency of the held part's summed spectrum
`NaiveBaseline`        per (pitch, velocity) mean envelope and mean log2 centroid of a training set
`moved_up`             how many (without, with) score pairs move the right way
=====================  ==========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.fft

from synth.fast_render import compute_loudness_db
from synth.units import midi_to_hz  # noqa: F401  (also part of this module's API)

NOTE_OFF_S = 3.0
# Where a note is sustained: after the attack, before the note-off.
SUSTAIN_S = (0.25, 2.75)
# Loudness and envelopes below this are treated as silence (inaudible differences do not count).
ENVELOPE_FLOOR_DB = -80.0
LOG_MEL_FLOOR_DB = -100.0
# A harmonic's f0 estimate this far from the median of a frame's harmonics is not the note's.
OUTLIER_CENTS = 15.0


def cents(f_hz, ref_hz):
    """1200 log2(f / ref): the interval in cents (any shapes that broadcast)."""
    return 1200.0 * np.log2(np.asarray(f_hz, np.float64) / np.asarray(ref_hz, np.float64))


# ---------------------------------------------------------------------------------------------
# Pitch.


def _segment(audio: np.ndarray, sample_rate: int, start_s: float, end_s: float) -> np.ndarray:
    a = np.asarray(audio, np.float64).reshape(-1)
    i0 = max(0, int(round(start_s * sample_rate)))
    i1 = min(len(a), int(round(end_s * sample_rate)))
    return a[i0:i1]


def measure_pitch_hz(
    audio: np.ndarray,
    sample_rate: int,
    expected_hz: float,
    segment_s: tuple[float, float] = SUSTAIN_S,
    search_semitones: float = 13.0,
    n_harmonics: int = 10,
    fit_harmonics: int = 5,
    max_frequency_hz: float | None = None,
    dynamic_range_db: float = 60.0,
) -> float:
    """The fundamental frequency (Hz) of one note, measured from its audio alone.

    Over `segment_s` (default the sustained part, 0.25-2.75 s):

    1. coarse, on one Hann-windowed FFT of the whole segment zero-padded 4x (0.1 Hz bins at
       16 kHz): every candidate f0 on a 5-cent grid within +-`search_semitones` of `expected_hz`
       (wide enough to catch octave errors) is scored by a harmonic comb with troughs,
       sum over k = 1..K of (s(k f0) - s((k - 1/2) f0)) / k, where s is the salience (dB above
       the spectrum's maximum minus `dynamic_range_db`, floored at 0) and K <= `n_harmonics`
       harmonics lie below `max_frequency_hz`. The 1/k weights halve the score of a sub-octave
       (whose odd teeth fall on nothing); the troughs sink an octave above the true f0 (they
       fall on its odd harmonics) unless those harmonics really are missing, when the octave
       above is the pitch heard; a missing fundamental alone does not move the estimate;
    2. fine (`_frame_pitch_hz`): short frames (0.1 s, or 8 periods of a low note), in each
       the peaks of harmonics k <= `fit_harmonics` (the low harmonics dominate the pitch heard;
       the higher partials of stiff strings, a piano's, run sharp) within +-80 cents of
       k * coarse, located by parabolic interpolation of the dB spectrum (8x zero-padded), the
       peaks that disagree with the others dropped, and frame f0 = sum(w k f_k) / sum(w k^2)
       (least squares on f_k = k f0, w = peak power); the
       note's pitch is the mean of the frames' f0 in cents over the frames within 30 dB of the
       loudest. Short frames follow a drifting or vibrato note (its harmonics stay one peak per
       frame; the long FFT would split them into sidebands), and a peak picker ignores
       inharmonic resonances beside a harmonic (which would drag a spectral centroid).

    `expected_hz` only sets the search range (the nominal pitch of the note). Returns NaN for a
    silent or too short segment. Accurate to about 0.05 cent on steady harmonic tones from MIDI
    24 to 96 at 16 kHz, and to 0.1 cent on +-50-cent vibrato (see the tests).
    """
    x = _segment(audio, sample_rate, *segment_s)
    if len(x) < 256 or not np.all(np.isfinite(x)):
        return float("nan")
    x = x - x.mean()
    if not np.any(x):
        return float("nan")
    n_fft = scipy.fft.next_fast_len(4 * len(x), real=True)
    window = np.hanning(len(x) + 1)[:-1]
    mag = np.abs(scipy.fft.rfft(x * window, n_fft))
    db = 20.0 * np.log10(mag + 1e-300)
    db -= db.max()
    salience = np.maximum(db + dynamic_range_db, 0.0)
    df = sample_rate / n_fft
    f_max = float(max_frequency_hz or 0.475 * sample_rate)

    step = 2.0 ** (5.0 / 1200.0)
    n_steps = int(round(search_semitones * 100 / 5))
    candidates = expected_hz * step ** np.arange(-n_steps, n_steps + 1)
    def peak_salience(f: float) -> float:
        # A harmonic may sit up to half a grid step (2.5 cents of f0, so 2.5 k cents) away.
        tol = max(2.0, f * (2.0 ** (2.5 / 1200.0) - 1.0) / df)
        lo, hi = int(np.floor(f / df - tol)), int(np.ceil(f / df + tol)) + 1
        return float(salience[max(lo, 0) : hi].max())

    scores = np.full(len(candidates), -np.inf)
    for i, c in enumerate(candidates):
        n_k = min(n_harmonics, int(f_max // c))
        if n_k >= 1:
            scores[i] = sum((peak_salience(k * c) - peak_salience((k - 0.5) * c)) / k
                            for k in range(1, n_k + 1))
    if not np.isfinite(scores).any() or scores.max() <= 0.0:
        return float("nan")
    coarse = float(candidates[int(np.argmax(scores))])

    return _frame_pitch_hz(x, sample_rate, coarse, min(fit_harmonics, int(f_max // coarse)))


def _frame_pitch_hz(x: np.ndarray, sample_rate: int, coarse_hz: float, n_harmonics: int,
                    frame_range_db: float = 30.0) -> float:
    """Mean f0 over short frames, each measured by harmonic peak interpolation.

    Frames: Hann, max(0.1 s, 8 periods) long, half overlapping, zero-padded 8x. In each frame the
    peak of harmonic k is the largest bin within +-80 cents of k * coarse_hz (a strict local
    maximum within 40 dB of the frame's strongest, else the harmonic is skipped in that frame),
    refined by parabolic interpolation of the dB spectrum; harmonics whose own estimate f_k / k
    lies more than OUTLIER_CENTS from the frame's median over harmonics are dropped (a noise
    resonance beside a harmonic, stronger than it); frame f0 = sum(w k f_k) / sum(w k^2) with w
    the peak power. The frames within `frame_range_db` of the loudest are averaged in cents, each
    counting equally (a level weighting would tilt a decaying vibrato note towards the phase of
    its first frames).
    """
    n = int(max(0.1 * sample_rate, 8 * sample_rate / coarse_hz))
    if len(x) < n or n_harmonics < 1:
        return float("nan")
    hop = n // 2
    frames = np.lib.stride_tricks.sliding_window_view(x, n)[::hop]
    n_fft = scipy.fft.next_fast_len(8 * n, real=True)
    power = np.abs(scipy.fft.rfft(frames * np.hanning(n + 1)[:-1], n_fft, axis=-1)) ** 2
    db = 10.0 * np.log10(power + 1e-300)
    df = sample_rate / n_fft
    rows = np.arange(len(frames))
    f_k = np.full((len(frames), n_harmonics), np.nan)
    w_k = np.zeros((len(frames), n_harmonics))
    for k in range(1, n_harmonics + 1):
        centre = k * coarse_hz / df
        half = centre * (2.0 ** (80.0 / 1200.0) - 1.0)
        lo, hi = max(1, int(np.floor(centre - half))), min(power.shape[1] - 2, int(np.ceil(centre + half)))
        if hi - lo < 2:
            continue
        b = lo + np.argmax(db[:, lo : hi + 1], axis=1)
        left, mid, right = db[rows, b - 1], db[rows, b], db[rows, b + 1]
        peak = (b > lo) & (b < hi) & (mid > left) & (mid > right)
        denom = left - 2.0 * mid + right
        offset = np.where(denom < 0, 0.5 * (left - right) / np.where(denom < 0, denom, -1.0), 0.0)
        f_k[:, k - 1] = np.where(peak, (b + np.clip(offset, -0.5, 0.5)) * df, np.nan)
        w_k[:, k - 1] = np.where(peak, power[rows, b], 0.0)
    # Peaks more than 40 dB under the frame's strongest are the floor, not harmonics.
    strongest = w_k.max(axis=1, keepdims=True)
    f_k = np.where(w_k >= strongest * 1e-4, f_k, np.nan)
    # Each harmonic's own f0 estimate; a peak that disagrees with the frame's median by more than
    # OUTLIER_CENTS is not this note's harmonic (a noise resonance beside it) and is left out.
    ks = np.arange(1, n_harmonics + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        est = cents(f_k / ks, coarse_hz)
    if not np.isfinite(est).any():
        return float("nan")
    with np.errstate(invalid="ignore"):
        median = np.nanmedian(np.where(np.isfinite(est), est, np.nan), axis=1, keepdims=True)
        keep = np.isfinite(est) & (np.abs(est - median) <= OUTLIER_CENTS)
    w = np.where(keep, w_k, 0.0)
    num = np.sum(w * ks * np.where(keep, f_k, 0.0), axis=1)
    den = np.sum(w * ks * ks, axis=1)
    ok = den > 0
    if not ok.any():
        return float("nan")
    # sum over harmonics of w k^2: the frame's level, favouring no harmonic.
    ok &= den >= den.max() * 10.0 ** (-frame_range_db / 10.0)
    mean_cents = float(np.mean(cents(num[ok] / den[ok], coarse_hz)))
    return float(coarse_hz * 2.0 ** (mean_cents / 1200.0))


def pitch_error_cents(audio: np.ndarray, sample_rate: int, pitch: float, **kwargs) -> float:
    """Measured pitch of `audio` minus MIDI `pitch`, in cents (NaN if unmeasurable)."""
    ref = float(midi_to_hz(pitch))
    return float(cents(measure_pitch_hz(audio, sample_rate, ref, **kwargs), ref))


def pitch_summary(errors_cents, max_median: float = 5.0, max_any: float = 25.0) -> dict:
    """Median and max |error| of pitch errors (cents); NaN (unmeasurable) counts as a failure.

    pass: median |error| <= max_median and no note over max_any (and none unmeasurable).
    """
    e = np.abs(np.asarray(errors_cents, np.float64))
    finite = e[np.isfinite(e)]
    n_nan = int(np.sum(~np.isfinite(e)))
    median = float(np.median(finite)) if len(finite) else float("nan")
    worst = float(finite.max()) if len(finite) else float("nan")
    n_over = int(np.sum(finite > max_any))
    ok = bool(len(finite) > 0 and median <= max_median and n_over == 0 and n_nan == 0)
    return {"n_notes": int(len(e)), "median_abs_cents": median, "max_abs_cents": worst,
            "n_over_limit": n_over, "n_unmeasurable": n_nan, "pass": ok}


# ---------------------------------------------------------------------------------------------
# Loudness and velocity.


def held_loudness_db(audio: np.ndarray, sample_rate: int, start_s: float = 0.0,
                     end_s: float = NOTE_OFF_S) -> float:
    """Mean A-weighted loudness (dB, `compute_loudness_db` frames at 250/s) over [start_s, end_s)."""
    ld = compute_loudness_db(np.asarray(audio, np.float32), sample_rate, frame_rate=250)
    return float(np.mean(ld[int(start_s * 250) : int(end_s * 250)]))


def release_time_s(audio: np.ndarray, sample_rate: int, off_s: float = 3.0, drop_db: float = 30.0) -> float:
    """Seconds after the note-off (`off_s`) until the level (`synth.envelope.level_db`, RMS of 10 ms
    frames) first falls `drop_db` below the note-off level (the median of the last 5 frames before
    it); inf when it never does within the audio. (The data set's long_release analyzer,
    `synth.data.qualities.long_release_score`, measures the same fall on its smoothed envelope,
    capped at the end of the file.)"""
    from synth.envelope import HOP_S, level_db

    hop_s = HOP_S
    level = level_db(np.asarray(audio, np.float32), sample_rate)
    n = len(level)
    off = int(round(off_s / hop_s))
    if not 5 <= off < n:
        raise ValueError(f"off_s: expected a time with 5 frames before it inside the audio, got {off_s}")
    at_off = float(np.median(level[off - 5 : off]))
    below = np.nonzero(level[off:] <= at_off - drop_db)[0]
    return float((below[0] + 1) * hop_s) if len(below) else float("inf")


def rising_steps(levels) -> tuple[int, int]:
    """(steps that rise, steps) over rows of `levels` [n_rows, n_levels] (or one row).

    A step is a pair of neighbouring columns (e.g. velocity 25 -> 50); it rises when the later
    value is strictly larger. NaN never rises.
    """
    v = np.atleast_2d(np.asarray(levels, np.float64))
    d = np.diff(v, axis=1)
    return int(np.sum(d > 0)), int(d.size)


# ---------------------------------------------------------------------------------------------
# Spectral distances and smoothness.


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int = 64, fmin: float = 30.0,
                   fmax: float | None = None) -> np.ndarray:
    """[n_fft // 2 + 1, n_mels] triangular filters on the HTK mel scale."""
    fmax = float(fmax or sample_rate / 2)
    mel = lambda f: 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)  # noqa: E731
    edges = hz(np.linspace(mel(fmin), mel(fmax), n_mels + 2))
    freqs = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    lo, mid, hi = edges[:-2], edges[1:-1], edges[2:]
    up = (freqs[:, None] - lo) / (mid - lo)
    down = (hi - freqs[:, None]) / (hi - mid)
    return np.maximum(0.0, np.minimum(up, down))


def log_mel_db(audio: np.ndarray, sample_rate: int, n_fft: int = 1024, hop: int = 256,
               n_mels: int = 64, floor_db: float = LOG_MEL_FLOOR_DB) -> np.ndarray:
    """[n_frames, n_mels] mel power in dB re a full-scale sine, floored at `floor_db`."""
    x = np.asarray(audio, np.float64).reshape(-1)
    x = np.pad(x, (n_fft // 2, n_fft // 2))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]
    window = np.hanning(n_fft + 1)[:-1]
    power = np.abs(scipy.fft.rfft(frames * window, axis=-1)) ** 2
    # Normalise so that a full-scale sine reads about 0 dB in its band.
    power *= 4.0 / np.sum(window) ** 2
    mel = power @ mel_filterbank(sample_rate, n_fft, n_mels)
    return np.maximum(10.0 * np.log10(mel + 1e-30), floor_db)


def spectral_distance_db(a: np.ndarray, b: np.ndarray) -> float:
    """Mean |a - b| of two log-mel spectrograms (dB)."""
    return float(np.mean(np.abs(np.asarray(a) - np.asarray(b))))


def step_distances(features) -> np.ndarray:
    """[n - 1] distances between neighbouring items of a sweep (list of log-mel spectrograms)."""
    return np.array([spectral_distance_db(features[i], features[i + 1]) for i in range(len(features) - 1)])


def smoothness(distances, floor_fraction: float = 0.05) -> dict:
    """Jump statistics of a sweep's neighbouring-step distances (>= 3 steps).

    * ``max_over_median``: max step / median step (the plain statistic; a smooth sweep whose
      speed varies, e.g. through the generator's tanh squash of the latent, also scores high);
    * ``local_jump_ratio``: max over steps of d_i / mean(d_{i-1}, d_{i+1}) (one neighbour at the
      ends), the denominator floored at `floor_fraction` x the largest step so that steps that
      are all tiny do not count as jumps. A discontinuity gives a step much larger than both
      neighbours; a smooth change of speed does not.
    * ``argmax_jump``: index of the step with the largest local ratio.
    """
    d = np.asarray(distances, np.float64)
    if len(d) < 3:
        raise ValueError(f"smoothness: need at least 3 steps, got {len(d)}")
    med = float(np.median(d))
    floor = floor_fraction * float(d.max())
    neighbours = np.empty_like(d)
    neighbours[0], neighbours[-1] = d[1], d[-2]
    neighbours[1:-1] = 0.5 * (d[:-2] + d[2:])
    ratios = d / np.maximum(neighbours, max(floor, 1e-12))
    return {
        "max_over_median": float(d.max() / med) if med > 0 else float("inf"),
        "local_jump_ratio": float(ratios.max()),
        "argmax_jump": int(np.argmax(ratios)),
    }


# ---------------------------------------------------------------------------------------------
# Realism: envelope and centroid against the real note and against a naive baseline.


def envelope_error_db(ld_a, ld_b, floor_db: float = ENVELOPE_FLOOR_DB) -> float:
    """Mean |a - b| of two loudness curves (dB, same frames), each floored at `floor_db`."""
    a = np.maximum(np.asarray(ld_a, np.float64), floor_db)
    b = np.maximum(np.asarray(ld_b, np.float64), floor_db)
    return float(np.mean(np.abs(a - b)))


def spectral_centroid_hz(audio: np.ndarray, sample_rate: int, start_s: float = 0.05,
                         end_s: float = NOTE_OFF_S) -> float:
    """Power-weighted mean frequency (Hz) of the summed spectrum of [start_s, end_s).

    One Hann-windowed FFT of the whole segment (its power spectrum is the sum over the
    segment's time); DC excluded. NaN for silence.
    """
    x = _segment(audio, sample_rate, start_s, end_s)
    x = x - x.mean()
    power = np.abs(scipy.fft.rfft(x * np.hanning(len(x) + 1)[:-1])) ** 2
    freqs = np.arange(len(power)) * sample_rate / (2 * (len(power) - 1))
    total = power[1:].sum()
    return float((freqs[1:] * power[1:]).sum() / total) if total > 0 else float("nan")


def centroid_error_octaves(centroid_a_hz: float, centroid_b_hz: float) -> float:
    """|log2(a / b)|: centroid error in octaves (scale-free across pitches)."""
    return float(abs(np.log2(centroid_a_hz / centroid_b_hz)))


@dataclass
class NaiveBaseline:
    """The training set's mean loudness envelope and mean log2 centroid per (pitch, velocity).

    `predict(pitch, velocity)` returns (envelope [n_frames] dB, centroid Hz) of the training notes
    with that pitch and velocity; where there are none, of the nearest pitch with that velocity,
    else of the nearest pitch at any velocity. Envelopes are floored at ENVELOPE_FLOOR_DB before
    averaging (as `envelope_error_db` compares them).
    """

    envelopes: dict = field(default_factory=dict)
    log2_centroids: dict = field(default_factory=dict)

    @classmethod
    def fit(cls, pitch, velocity, envelopes_db, centroids_hz) -> "NaiveBaseline":
        pitch = np.asarray(pitch, np.int64)
        velocity = np.asarray(velocity, np.int64)
        env = np.maximum(np.asarray(envelopes_db, np.float64), ENVELOPE_FLOOR_DB)
        cen = np.log2(np.asarray(centroids_hz, np.float64))
        out = cls()
        for key in sorted(set(zip(pitch.tolist(), velocity.tolist()))):
            sel = (pitch == key[0]) & (velocity == key[1])
            ok = sel & np.isfinite(cen)
            out.envelopes[key] = env[sel].mean(axis=0)
            out.log2_centroids[key] = float(cen[ok].mean()) if ok.any() else float("nan")
        if not out.envelopes:
            raise ValueError("NaiveBaseline.fit: no training notes")
        return out

    def _key(self, pitch: int, velocity: int) -> tuple[int, int]:
        keys = list(self.envelopes)
        same_vel = [k for k in keys if k[1] == velocity]
        pool = same_vel or keys
        return min(pool, key=lambda k: (abs(k[0] - pitch), abs(k[1] - velocity), k))

    def predict(self, pitch: int, velocity: int) -> tuple[np.ndarray, float]:
        key = self._key(int(pitch), int(velocity))
        return self.envelopes[key], float(2.0 ** self.log2_centroids[key])


# ---------------------------------------------------------------------------------------------
# Tags.


def moved_up(without, with_, ceiling: float | None = None) -> dict:
    """How often a score rises from the note without a tag to the note with it.

    without, with_: [n_pairs] scores (higher = more of the quality). Pairs where either is NaN
    are left out (``n_undefined``); so are pairs whose note without the tag already scores at
    the analyzer's `ceiling` (``n_saturated``: no rise can be measured there, e.g. a release
    already lasting to the end of the file). Of the rest (``n_defined``), equal scores are
    ``n_tied`` and do not count as moved. ``fraction`` = n_up / n_defined (NaN when no pair is
    defined); ``fraction_all`` = n_up / (n_defined + n_saturated); ``mean_delta`` the mean of
    (with - without) over the defined pairs.
    """
    a = np.asarray(without, np.float64)
    b = np.asarray(with_, np.float64)
    finite = np.isfinite(a) & np.isfinite(b)
    saturated = finite & (a >= ceiling) if ceiling is not None else np.zeros_like(finite)
    ok = finite & ~saturated
    n = int(ok.sum())
    up = int(np.sum(b[ok] > a[ok]))
    n_sat = int(saturated.sum())
    return {
        "n_pairs": int(len(a)),
        "n_defined": n,
        "n_undefined": int(np.sum(~finite)),
        "n_saturated": n_sat,
        "n_up": up,
        "n_tied": int(np.sum(b[ok] == a[ok])),
        "fraction": up / n if n else float("nan"),
        "fraction_all": up / (n + n_sat) if n + n_sat else float("nan"),
        "mean_delta": float(np.mean(b[ok] - a[ok])) if n else float("nan"),
    }
