"""The envelope tags by construction: an amplitude envelope (a VCA) on a rendered note.

`synth.models.shape_envelope` already shapes the loudness curve the DDSP decoder is given, but
that curve is A-weighted and the decoder also listens to z: on low notes a curve that falls
36 dB can come out of the synthesizer only 6 dB quieter (the fundamental, which A-weighting
hides, carries the energy). What a listener hears, and what NSynth's tag definitions speak
of, is the level of the sound itself. So for notes tagged fast_decay or long_release the
rendered note goes through a gain curve, as a synthesizer's VCA would shape it:

* fast_decay: after the loudest point of its attack (the first FAST_DECAY_ATTACK_S) the level
  falls at least FAST_DECAY_DB within FAST_DECAY_S (a cap: a note that decays faster is
  untouched; the attack is never changed);
* long_release: after its peak the held level stays within LONG_RELEASE_HOLD_DB of the peak, and
  after note-off (3 s) the release falls at most LONG_RELEASE_MAX_DB_PER_S (a floor, raised by
  at most MAX_BOOST_DB: a note that has gone silent stays silent).

Both tags on one note: the decay to FAST_DECAY_DB below the peak, then the hold there until the
slow release. Notes without either tag are returned unchanged. Numpy only (runs in the
generator's synthesis threads, about 0.4 ms per note at 48 kHz).
"""

from __future__ import annotations

import numpy as np

from synth.models import (FAST_DECAY_ATTACK_S, FAST_DECAY_DB, FAST_DECAY_S, FRAME_RATE, LONG_RELEASE_HOLD_DB,
                          LONG_RELEASE_MAX_DB_PER_S, NOTE_OFF_FRAME)

HOP_S = 0.01  # 10 ms level frames (the tag analyzers' resolution)
NOTE_OFF_S = NOTE_OFF_FRAME / FRAME_RATE
MAX_BOOST_DB = 40.0


def level_db(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """RMS level (dBFS) of consecutive HOP_S frames: [n_frames] float64."""
    hop = max(1, int(round(HOP_S * sample_rate)))
    n = len(audio) // hop
    frames = np.asarray(audio[: n * hop], np.float32).reshape(n, hop)
    power = np.einsum("ij,ij->i", frames, frames, dtype=np.float64) / hop
    return 10.0 * np.log10(power + 1e-20)


def tag_gain_db(env_db: np.ndarray, fast_decay: bool, long_release: bool) -> np.ndarray:
    """The gain (dB per HOP_S frame) that makes a level envelope obey the envelope tags."""
    env = np.asarray(env_db, np.float64)
    gain = np.zeros_like(env)
    if not (fast_decay or long_release) or len(env) == 0:
        return gain
    fps = 1.0 / HOP_S
    off = min(len(env), int(round(NOTE_OFF_S * fps)))
    t = np.arange(len(env))
    if fast_decay:
        a_i = int(np.argmax(env[: max(1, int(round(FAST_DECAY_ATTACK_S * fps)))]))
        cap = env[a_i] - FAST_DECAY_DB * np.clip((t - a_i) / (FAST_DECAY_S * fps), 0.0, 1.0)
        gain = np.where(t >= a_i, np.minimum(0.0, cap - env), 0.0)
    if long_release:
        shaped = env + gain
        peak_i = int(np.argmax(shaped[:off])) if off > 0 else 0
        peak = shaped[peak_i]
        held = (t >= peak_i) & (t < off)
        gain += np.where(held, np.clip(peak - LONG_RELEASE_HOLD_DB - shaped, 0.0, MAX_BOOST_DB), 0.0)
        shaped = env + gain
        level_off = float(np.median(shaped[max(0, off - 10) : off])) if off > 0 else float(peak)
        line = level_off - LONG_RELEASE_MAX_DB_PER_S * (t - off + 1) / fps
        gain += np.where(t >= off, np.clip(line - shaped, 0.0, MAX_BOOST_DB), 0.0)
    return gain


def apply_envelope_tags(audio: np.ndarray, sample_rate: int, fast_decay: bool,
                        long_release: bool) -> np.ndarray:
    """`audio` (1-D) with the envelope tags' gain curve applied (a new float32 array; the same
    values when neither tag is set). The gain ramps linearly across each frame, between the
    means of neighbouring frames' gains, so it never steps."""
    audio = np.asarray(audio, np.float32)
    if not (fast_decay or long_release):
        return audio
    gain_db = tag_gain_db(level_db(audio, sample_rate), fast_decay, long_release)
    if not np.any(gain_db):
        return audio
    hop = max(1, int(round(HOP_S * sample_rate)))
    # Linear gain at frame boundaries (each frame's gain at its centre, ramped in between),
    # applied frame by frame: no per-sample exponentials (0.35 ms for 4 s at 48 kHz).
    g = np.power(10.0, gain_db / 20.0).astype(np.float32)
    edges = np.concatenate([g[:1], 0.5 * (g[:-1] + g[1:]), g[-1:]])
    n = len(gain_db)
    ramp = (np.arange(hop, dtype=np.float32) + 0.5) / hop
    out = np.empty_like(audio)
    body = audio[: n * hop].reshape(n, hop)
    out[: n * hop] = (body * (edges[:-1, None] + (edges[1:] - edges[:-1])[:, None] * ramp[None, :])).reshape(-1)
    out[n * hop :] = audio[n * hop :] * edges[-1]
    return out
