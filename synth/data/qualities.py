"""NSynth's ten quality tags, measured from audio.

Every analyzer maps (audio, sample_rate, MIDI pitch) to one continuous **score** in which higher
means "more of the quality", and a **tag** ``score' >= threshold`` where ``score'`` is the score
minus a pitch trend for the pitch-aware qualities (see `Thresholds`). The notes are NSynth
shaped: note-on at 0, note-off at ``note_off_s`` (3 s), audio to 4 s; audio is mono float.

==============  ========================================================================  =======
quality         score (unit)                                                              pitch
==============  ========================================================================  =======
bright          log2(spectral centroid / f0) of the held part's summed power spectrum     trend
                (octaves above the fundamental; content below f0/2 ignored)
dark            minus the bright score: a lack of high-frequency content                  trend
distortion      clipping: share of samples within 10 % of the peak ("flat tops") in the   -
                held part's segments (a whole number of periods, about 4096 samples),
                minus the same share after giving the
                segment's spectrum fixed pseudo-random phases (which keeps its spectrum
                and removes any flattening of the waveform); averaged over segments
                within 30 dB of the peak (4 segments spread over 0.1-3 s). ~0 for clean tones (a sine, a sawtooth), up to
                ~0.8 for a hard-clipped one
fast_decay      note_off_s minus the time at which the level first falls 30 dB below its  -
                peak (s); 0 when it never does before note-off
long_release    time after note-off until the level falls 30 dB below its level at        -
                note-off (s, capped at the end of the file); 0 when the note had already
                decayed 40 dB below its peak at note-off
multiphonic     share of the spectral peak energy (held part, peaks within 40 dB of the   -
                strongest) that lies off the harmonic series of the refined f0
nonlinear_env   the largest envelope excursion against a rise-then-fall shape (dB): a     -
                re-rise after the peak above the lowest level reached so far, or a dip
                before the peak (held part, 100 ms smoothing, floor 40 dB below peak)
percussive      non-periodic power of the first 50 ms after the onset (what a comb filter  trend
                at the note's period does not cancel, less what it leaves 0.3-0.8 s
                later), in dB relative to the note's loudest 10 ms frame, floored at -60
reverb          level of a room tail relative to the sound where it stops (dB): 0.4-0.6 s -
                after the end of the sound (note-off, or the peak for notes already
                decayed); counted only where that tail stands TAIL_EXCESS_DB above the
                extrapolated first 20-120 ms of the decay (a second, slower decay) and
                within 70 dB of the peak, else NO_TAIL_DB (-100)
tempo_sync      periodicity (normalised autocorrelation peak, 1-10 Hz) of the detrended   -
                dB envelope of the held part, times min(1, modulation depth / 6 dB)
==============  ========================================================================  =======

Thresholds are set from a data set's scores by `fit_thresholds` (see its docstring for the
rule); the ones from the FluidR3_GM build ship in ``quality_thresholds.json`` next to this file
and are what `load_thresholds()` returns by default, so generated notes can be judged without
the data set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from synth.data.features import VOICED_CONFIDENCE, level_envelope_db, midi_to_hz, track_f0
from synth.params import QUALITIES

NOTE_OFF_S = 3.0
ENV_HOP_S = 0.01
TAIL_EXCESS_DB = 6.0  # a second decay must stand this far above the first one's extrapolation
NO_TAIL_DB = -100.0  # reverb score of a note without a distinct tail
DEFAULT_THRESHOLDS_PATH = Path(__file__).with_name("quality_thresholds.json")

# How each threshold is set from the data set: the percentile of the (pitch-detrended) scores
# above which a note is tagged, the floor below which no note is tagged whatever the data say
# (the weakest score at which the quality is still audible), and whether a quadratic trend in
# pitch is removed first. fast_decay and long_release are defined in seconds by NSynth's
# wording ("well before note-off", "well after note-off"), so their percentile is None and the
# floor is the threshold.
RULES: dict[str, dict] = {
    "bright": {"percentile": 80.0, "floor": 0.0, "pitch_trend": True},
    "dark": {"percentile": 80.0, "floor": 0.0, "pitch_trend": True},
    "distortion": {"percentile": 95.0, "floor": 0.12, "pitch_trend": False},
    "fast_decay": {"percentile": None, "floor": 1.5, "pitch_trend": False},
    "long_release": {"percentile": None, "floor": 0.5, "pitch_trend": False},
    "multiphonic": {"percentile": 90.0, "floor": 0.15, "pitch_trend": False},
    "nonlinear_env": {"percentile": 90.0, "floor": 4.0, "pitch_trend": False},
    "percussive": {"percentile": 80.0, "floor": -30.0, "pitch_trend": True},
    "reverb": {"percentile": 75.0, "floor": -60.0, "pitch_trend": False},
    "tempo_sync": {"percentile": 97.0, "floor": 0.5, "pitch_trend": False},
}


# ----------------------------------------------------------------------------- shared analysis


class NoteAnalysis:
    """Intermediate measurements of one note, computed once and shared by the analyzers."""

    def __init__(self, audio: np.ndarray, sample_rate: int, pitch: float, note_off_s: float = NOTE_OFF_S):
        self.audio = np.nan_to_num(np.asarray(audio, dtype=np.float64))
        self.sr = int(sample_rate)
        self.pitch = float(pitch)
        self.f0 = float(midi_to_hz(pitch))
        self.note_off_s = note_off_s
        self.env = level_envelope_db(self.audio, self.sr, ENV_HOP_S)  # dBFS per 10 ms
        self.n_env = len(self.env)
        self.off_idx = min(self.n_env - 1, int(round(note_off_s / ENV_HOP_S)))
        held = self.env[: self.off_idx]
        self.peak_idx = int(np.argmax(held)) if len(held) else 0
        self.peak_db = float(held[self.peak_idx]) if len(held) else -200.0
        self._held_spec = None
        self._f0 = None

    def smooth_env(self, width_s: float = 0.05) -> np.ndarray:
        n = max(1, int(round(width_s / ENV_HOP_S)))
        kernel = np.ones(n) / n
        padded = np.pad(self.env, (n // 2, n - 1 - n // 2), mode="edge")
        return np.convolve(padded, kernel, mode="valid")

    def held_spectrum(self) -> tuple[np.ndarray, np.ndarray]:
        """(freqs_hz, mean power) over the held part, 4096-point Hann frames, hop 2048."""
        if self._held_spec is None:
            n_fft, hop = 4096, 2048
            start = int(0.05 * self.sr)
            stop = int(self.note_off_s * self.sr)
            seg = self.audio[start:stop]
            if len(seg) < n_fft:
                seg = np.pad(seg, (0, n_fft - len(seg)))
            frames = np.lib.stride_tricks.sliding_window_view(seg, n_fft)[::hop]
            power = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1)) ** 2
            self._held_spec = (np.fft.rfftfreq(n_fft, 1.0 / self.sr), power.mean(axis=0))
        return self._held_spec

    def refined_f0(self) -> float:
        """Median f0 of the held part's voiced frames (`track_f0` at 50 frames/s), else nominal."""
        if self._f0 is None:
            held = self.audio[: int(self.note_off_s * self.sr)]
            f0, conf = track_f0(held, self.sr, self.pitch, frame_rate=50)
            voiced = conf >= VOICED_CONFIDENCE
            f0_track = float(np.median(f0[voiced])) if voiced.any() else self.f0
            # Sharpen with the strongest harmonic's peak in the held spectrum (parabolic
            # interpolation of log power): accurate to a small fraction of a cent.
            freqs, power = self.held_spectrum()
            df = freqs[1]
            k_max = max(1, int(0.45 * self.sr // f0_track))
            ks = np.arange(1, min(k_max, 40) + 1)
            bins = np.round(ks * f0_track / df).astype(int)
            ok = (bins > 1) & (bins < len(power) - 2)
            self._f0 = f0_track
            if ok.any():
                ks, bins = ks[ok], bins[ok]
                # search +-2 bins around each harmonic for its local maximum
                near = bins[:, None] + np.arange(-2, 3)[None, :]
                near = np.clip(near, 1, len(power) - 2)
                local = near[np.arange(len(bins)), np.argmax(power[near], axis=1)]
                j = int(np.argmax(power[local]))
                b, k = int(local[j]), int(ks[j])
                y0, y1, y2 = np.log(power[b - 1 : b + 2] + 1e-30)
                den = y0 - 2 * y1 + y2
                shift = 0.5 * (y0 - y2) / den if den < 0 else 0.0
                f_peak = (b + float(np.clip(shift, -0.5, 0.5))) * df
                if abs(1200 * np.log2(f_peak / (k * f0_track))) < 50:
                    self._f0 = f_peak / k
        return self._f0


# ----------------------------------------------------------------------------- the ten scores


def bright_score(an: NoteAnalysis) -> float:
    freqs, power = an.held_spectrum()
    keep = freqs >= 0.5 * an.f0
    total = power[keep].sum()
    if total <= 1e-20:
        return float("nan")
    centroid = float((freqs[keep] * power[keep]).sum() / total)
    return float(np.log2(centroid / an.f0))


def dark_score(an: NoteAnalysis) -> float:
    return -bright_score(an)


def distortion_score(an: NoteAnalysis) -> float:
    held = an.audio[: int(an.note_off_s * an.sr)]
    # A whole number of periods, so a stationary tone's spectrum has no leakage to scramble.
    n = _whole_periods_length(an.sr / an.refined_f0(), 4096)
    rng = np.random.default_rng(0)  # fixed phases: the score is deterministic
    scores = []
    for start in np.linspace(int(0.1 * an.sr), len(held) - n, 4).astype(int):
        x = held[start : start + n]
        level = 10 * np.log10(np.mean(x**2) + 1e-20)
        if level < an.peak_db - 30.0:
            continue
        spec = np.fft.rfft(x)
        phases = np.exp(2j * np.pi * rng.random(len(spec)))
        phases[0] = phases[-1] = 1.0
        y = np.fft.irfft(np.abs(spec) * phases, n)
        scores.append(_flat_top_fraction(x) - _flat_top_fraction(y))
    return float(np.mean(scores)) if scores else float("nan")


def _whole_periods_length(period: float, target: int) -> int:
    """A length near `target` samples that holds a whole number of periods most exactly."""
    m = np.arange(max(1, int(0.75 * target / period)), int(1.25 * target / period) + 2)
    lengths = m * period
    best = int(np.argmin(np.abs(lengths - np.round(lengths))))
    return int(round(lengths[best]))


def _flat_top_fraction(x: np.ndarray) -> float:
    """Share of samples within 10 % of the segment's peak magnitude (about 0.29 for a sine,
    about 1 for a hard-clipped wave)."""
    mag = np.abs(x - x.mean())
    return float(np.mean(mag >= 0.9 * mag.max())) if mag.max() > 0 else 0.0


def fast_decay_score(an: NoteAnalysis) -> float:
    after = an.env[an.peak_idx : an.off_idx]
    below = np.nonzero(after <= an.peak_db - 30.0)[0]
    if len(below) == 0:
        return 0.0
    t30 = (an.peak_idx + below[0]) * ENV_HOP_S
    return float(an.note_off_s - t30)


def long_release_score(an: NoteAnalysis) -> float:
    off = an.off_idx
    level_off = float(np.median(an.env[max(0, off - 10) : off]))
    if level_off < an.peak_db - 40.0:
        return 0.0
    after = an.env[off:]
    below = np.nonzero(after <= level_off - 30.0)[0]
    if len(below) == 0:
        return float(len(after) * ENV_HOP_S)
    return float(below[0] * ENV_HOP_S)


def multiphonic_score(an: NoteAnalysis) -> float:
    freqs, power = an.held_spectrum()
    df = freqs[1]
    f0 = an.refined_f0()
    p = power[1:-1]
    is_peak = (p > power[:-2]) & (p >= power[2:])
    idx = np.nonzero(is_peak)[0] + 1
    if len(idx) == 0:
        return 0.0
    top = power[idx].max()
    idx = idx[power[idx] >= top * 1e-4]  # within 40 dB of the strongest peak
    idx = idx[freqs[idx] >= 0.25 * f0]
    if len(idx) == 0:
        return 0.0
    f = freqs[idx]
    k = np.maximum(1, np.round(f / f0))
    tol = np.maximum(3 * df, 0.04 * f0 * np.sqrt(k))
    harmonic = np.abs(f - k * f0) <= tol
    e = power[idx]
    return float(e[~harmonic].sum() / e.sum())


def nonlinear_env_score(an: NoteAnalysis) -> float:
    env = an.smooth_env(0.1)[: an.off_idx]
    peak = int(np.argmax(env))
    floor = env[peak] - 40.0
    env = np.maximum(env, floor)
    # After the peak: the largest re-rise above the lowest level reached so far.
    after = env[peak:]
    rise = float(np.max(after - np.minimum.accumulate(after))) if len(after) else 0.0
    # Before the peak: the largest dip below the highest level reached so far.
    before = env[: peak + 1]
    dip = float(np.max(np.maximum.accumulate(before) - before)) if len(before) else 0.0
    return max(rise, dip)


def _onset_idx(an: NoteAnalysis) -> int:
    above = np.nonzero(an.env >= an.peak_db - 40.0)[0]
    return int(above[0]) if len(above) else 0


def _comb_residual(x: np.ndarray, an: NoteAnalysis) -> np.ndarray:
    """x[n] - x[n - P] with P the (fractional) period of the refined f0: periodic content cancels."""
    period = an.sr / an.refined_f0()
    spec = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(len(x), 1.0 / an.sr)
    delayed = np.fft.irfft(spec * np.exp(-2j * np.pi * freqs * period / an.sr), len(x))
    resid = x - delayed
    resid[: int(np.ceil(period))] = x[: int(np.ceil(period))]  # no past before the note
    return resid


def percussive_score(an: NoteAnalysis) -> float:
    hop = int(ENV_HOP_S * an.sr)
    onset = _onset_idx(an) * hop
    n = int(0.05 * an.sr)
    resid = _comb_residual(an.audio[onset : onset + int(0.8 * an.sr)], an)
    # A comb passes noise with power gain 2; halve to read the onset's non-periodic power.
    onset_power = float(np.mean(resid[:n] ** 2)) / 2.0
    # What the note keeps producing anyway (breath, detuned layers) is not an onset.
    steady = resid[int(0.3 * an.sr) :]
    steady_power = float(np.mean(steady**2)) / 2.0 if len(steady) else 0.0
    peak_power = 10 ** (an.peak_db / 10.0)
    # Floored at -60 dB: below that nothing is audible, and a floor keeps the pitch trend sane.
    return float(10 * np.log10(max(onset_power - steady_power, 0.0) / peak_power + 1e-6))


def reverb_score(an: NoteAnalysis) -> float:
    off = an.off_idx
    level_off = float(np.median(an.env[max(0, off - 10) : off]))
    start = off if level_off >= an.peak_db - 40.0 else an.peak_idx
    if start + 60 > an.n_env:
        start = an.n_env - 60
    t_early = np.arange(2, 13)
    early = an.env[start + 2 : start + 13]
    slope = np.polyfit(t_early, early, 1)[0]  # dB per frame
    late = float(np.median(an.env[start + 40 : start + 60]))
    predicted = early[0] + min(slope, 0.0) * (50 - 2)
    excess = late - max(predicted, an.peak_db - 100.0)
    if excess < TAIL_EXCESS_DB or late < an.peak_db - 70.0:
        return NO_TAIL_DB
    return float(late - an.env[start])


def tempo_sync_score(an: NoteAnalysis) -> float:
    env = an.env[int(0.3 / ENV_HOP_S) : an.off_idx - 10]
    if len(env) < 100 or env.max() < an.peak_db - 50.0:
        return 0.0
    env = np.maximum(env, an.peak_db - 60.0)
    t = np.arange(len(env))
    resid = env - np.polyval(np.polyfit(t, env, 2), t)
    depth = float(np.std(resid)) * np.sqrt(2)
    if depth < 1e-6:
        return 0.0
    ac = np.correlate(resid, resid, mode="full")[len(resid) - 1 :]
    ac = ac / ac[0]
    lags = np.arange(len(ac))
    lo, hi = int(0.1 / ENV_HOP_S), int(1.0 / ENV_HOP_S)
    seg = ac[lo : hi + 1]
    # Unbiased: divide by the overlap so slow lags are not penalised.
    seg = seg * len(resid) / (len(resid) - lags[lo : hi + 1])
    inner = (seg[1:-1] > seg[:-2]) & (seg[1:-1] >= seg[2:])
    if not inner.any():
        return 0.0
    rho = float(np.clip(seg[1:-1][inner].max(), 0.0, 1.0))
    return rho * min(1.0, depth / 6.0)


SCORERS: dict[str, Callable[[NoteAnalysis], float]] = {
    "bright": bright_score,
    "dark": dark_score,
    "distortion": distortion_score,
    "fast_decay": fast_decay_score,
    "long_release": long_release_score,
    "multiphonic": multiphonic_score,
    "nonlinear_env": nonlinear_env_score,
    "percussive": percussive_score,
    "reverb": reverb_score,
    "tempo_sync": tempo_sync_score,
}
assert tuple(SCORERS) == QUALITIES


SILENT_DBFS = -100.0  # a note whose loudest 10 ms frame is below this has no qualities (NaN)


def _score(quality: str, an: NoteAnalysis) -> float:
    if an.peak_db < SILENT_DBFS:
        return float("nan")
    return float(SCORERS[quality](an))


def score_note(audio: np.ndarray, sample_rate: int, pitch: float, note_off_s: float = NOTE_OFF_S) -> dict[str, float]:
    """All ten scores of one note (NaN where undefined: a silent note, a segment-less distortion)."""
    an = NoteAnalysis(audio, sample_rate, pitch, note_off_s)
    return {q: _score(q, an) for q in SCORERS}


# ----------------------------------------------------------------------------- thresholds


@dataclass(frozen=True)
class QualityResult:
    score: float
    tag: bool


class Thresholds:
    """Per-quality threshold and optional quadratic pitch trend, as stored in qualities.json.

    ``tag = (score - trend(pitch)) >= threshold`` with ``trend = polyval(coeffs, pitch)`` (zero
    when the quality has no pitch trend); NaN scores are never tagged.
    """

    def __init__(self, table: Mapping[str, Mapping]):
        missing = [q for q in QUALITIES if q not in table]
        if missing:
            raise ValueError(f"thresholds: missing qualities {missing}")
        self.table = {q: dict(table[q]) for q in QUALITIES}

    def residual(self, quality: str, score: float, pitch: float) -> float:
        entry = self.table[quality]
        trend = entry.get("pitch_trend")
        return float(score - (np.polyval(trend, pitch) if trend else 0.0))

    def tag(self, quality: str, score: float, pitch: float) -> bool:
        if not np.isfinite(score):
            return False
        return self.residual(quality, score, pitch) >= self.table[quality]["threshold"]

    def tags(self, scores: Mapping[str, float], pitch: float) -> dict[str, bool]:
        return {q: self.tag(q, scores[q], pitch) for q in QUALITIES}

    def to_json(self) -> dict:
        return {"qualities": self.table}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")


def load_thresholds(path: str | Path | None = None) -> Thresholds:
    """Thresholds from a data set's ``qualities.json`` (default: the shipped FluidR3_GM ones)."""
    data = json.loads(Path(path or DEFAULT_THRESHOLDS_PATH).read_text())
    return Thresholds(data["qualities"])


def fit_thresholds(scores: Mapping[str, np.ndarray], pitches: np.ndarray) -> Thresholds:
    """Thresholds from a data set's scores ([n] per quality) and pitches ([n]).

    For each quality (see `RULES`): if it has a pitch trend, a quadratic in pitch is fitted to
    its finite scores by least squares and removed; the threshold is then
    ``max(floor, percentile(residuals))`` (just ``floor`` where the percentile is None), so a
    data set that lacks a quality does not get its top notes tagged anyway.
    """
    pitches = np.asarray(pitches, dtype=np.float64)
    table = {}
    for q in QUALITIES:
        rule = RULES[q]
        s = np.asarray(scores[q], dtype=np.float64)
        ok = np.isfinite(s)
        trend = None
        resid = s[ok]
        n_distinct = len(np.unique(pitches[ok]))
        if rule["pitch_trend"] and ok.sum() >= 10 and n_distinct >= 2:
            trend = np.polyfit(pitches[ok], s[ok], min(2, n_distinct - 1))
            resid = s[ok] - np.polyval(trend, pitches[ok])
        if rule["percentile"] is None or len(resid) == 0:
            thr = float(rule["floor"])
        else:
            thr = max(float(rule["floor"]), float(np.percentile(resid, rule["percentile"])))
        entry = {
            "threshold": thr,
            "pitch_trend": [float(c) for c in trend] if trend is not None else None,
            "percentile": rule["percentile"],
            "floor": rule["floor"],
            "n_scored": int(ok.sum()),
        }
        if len(resid):
            entry["tagged_fraction"] = float(np.mean(resid >= thr))
        table[q] = entry
    return Thresholds(table)


# ----------------------------------------------------------------------------- one call per quality


def _make(quality: str) -> Callable[..., QualityResult]:
    def analyzer(
        audio: np.ndarray,
        sample_rate: int,
        pitch: float,
        thresholds: Thresholds | None = None,
        note_off_s: float = NOTE_OFF_S,
    ) -> QualityResult:
        score = _score(quality, NoteAnalysis(audio, sample_rate, pitch, note_off_s))
        th = thresholds or load_thresholds()
        return QualityResult(float(score), th.tag(quality, score, pitch))

    analyzer.__name__ = quality
    analyzer.__doc__ = f"Score and tag of NSynth's '{quality}' quality for one note (see module docstring)."
    return analyzer


bright = _make("bright")
dark = _make("dark")
distortion = _make("distortion")
fast_decay = _make("fast_decay")
long_release = _make("long_release")
multiphonic = _make("multiphonic")
nonlinear_env = _make("nonlinear_env")
percussive = _make("percussive")
reverb = _make("reverb")
tempo_sync = _make("tempo_sync")
ANALYZERS = {q: globals()[q] for q in QUALITIES}


def analyze(
    audio: np.ndarray, sample_rate: int, pitch: float, thresholds: Thresholds | None = None
) -> dict[str, QualityResult]:
    """All ten qualities of one note: {quality: QualityResult(score, tag)}."""
    th = thresholds or load_thresholds()
    scores = score_note(audio, sample_rate, pitch)
    return {q: QualityResult(scores[q], th.tag(q, scores[q], pitch)) for q in QUALITIES}
