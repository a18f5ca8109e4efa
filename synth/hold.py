"""Held notes: a note sounds from note-on until its note-off, for any length, then plays the
release the model makes for its timbre, and ends in exact silence. Rendered frame by frame (the
decoder's 125 frames/s), so that the live engine runs the same code in chunks.

    HeldNote(generator, params, sample_rate)     one voice: note_off(), set_bend(cents),
                                                 set_latent(values), render_frames(k), finished
    render_held(generator, params, hold_s, ...)  the whole note (hold, release, reverb tail)

The model only knows NSynth's 4 s notes (3 s held + 1 s release), so a held note is built, in
control space, from the generated curves of its timbre (`Generator.controls`: f0, loudness and
z, averaged to the decoder's frame rate as the generator does) and then decoded and synthesised
like any note. Never an audio loop: nothing repeats, so nothing can have a seam.

* Attack: the generated curves from the start, as the 4 s note plays them.
* Sustain, past what the generated held part covers: from 2.4 s to 2.9 s (SUSTAIN_FROM_S,
  SUSTAIN_AT_S; the curves start to anticipate the note-off at about 2.98 s) z and the f0's
  cents cross-fade (raised cosine) into their mean over that window, and the loudness moves by
  increments that cross-fade from the curve's own to the sustain's: 0 dB/s for a sustaining
  timbre, the curve's fitted slope over 1.5-2.9 s (DECAY_FIT_S) for a decaying one (slope below
  DECAYING_BELOW_DB_PER_S, or the fast_decay tag, at least FAST_DECAY_DB / FAST_DECAY_S).
  The loudness input stops at the training minimum; the level of the sound keeps following
  the slope through the gain described below, down to silence.
* Release at note-off (any time, also during the attack): the loudness drops by the generated
  curve's drop after RELEASE_FROM_S (relative to its level there), from the current loudness;
  z joins the generated release's z trajectory by an offset that fades out over
  RELEASE_Z_JOIN_S; the pitch stays where it is. The level of the sound is capped by the
  release of the 4 s note's own sound (its control level after RELEASE_FROM_S, relative, running
  minimum), and after that 1 s falls on at the release's own rate (TAIL_DB_PER_S bounds) until
  it is END_DB below the note's peak; from then the controls are exactly 0, and the reverb rings
  out to exact zeros (`finished`).
* Bend: f0 times 2 ** (cents / 1200), reached linearly over BEND_EASE_S (the synthesizer ramps
  within each frame as well: no zipper, no step); the decoder hears the bent pitch.
* Latent changes: the networks run again for the new latent; z and the cents cross-fade to the
  new timbre's over LATENT_CROSSFADE_S (fast at first: `_ease_out`), the loudness input
  continues from where it is with the new timbre's increments, and the new timbre's sustain
  mode and release take over. The decoder also maps z to level (13 dB quieter for one change
  measured), so the level difference of the two z at the note's current f0 and loudness is
  compensated by a gain, cross-faded with the timbre: the timbre moves, the level neither dips
  nor jumps. A live engine may apply the change from the frame it rendered last
  (`apply_timbre(frame=...)`), which it then renders again.
* Envelope rules (`synth.envelope`, `synth.models.shape_envelope`): the released loudness never
  rises; fast_decay falls at least FAST_DECAY_DB within FAST_DECAY_S of its attack peak and then
  keeps falling at FAST_DECAY_DB / FAST_DECAY_S while held; long_release holds within
  LONG_RELEASE_HOLD_DB of its peak while held and its release never falls below the line that
  drops LONG_RELEASE_MAX_DB_PER_S from its note-off level. As in `synth.envelope` these act on
  the level of the sound, here as a gain on the decoder's amplitude and noise controls computed
  frame by frame, causally (so that it can stream), from the level that the controls make
  through the reverb (`LevelMeter`, `control_level_db`). The 4 s render applies them to its
  finished audio instead.
* The whole note gets the gain that `Generator.render` gives its 4 s note (1, or 1 / its peak
  where that exceeds 1), so held and 4 s notes of one timbre play at one level.

The decoder is frame-wise apart from its dilated depthwise convolutions: not recurrent, but
each output frame sees its inputs +-7 frames (sum of the dilations) around it. So HeldNote plans
its inputs ahead (the plan holds until an event changes it), decodes in fixed blocks of
DECODE_BLOCK frames with that context on both sides, and replans from the event's frame when
note_off / set_bend / set_latent arrive; frames already played keep what they were decoded
with. Events take effect at the next frame to render, so the same events at the same frames give
the same note whatever the chunk sizes (`render_held` splits chunks at event frames).

Synthesis is `synth.streaming.StreamingSynth` (phases, noise grains and reverb carried from chunk
to chunk) with the learned impulse response, whose last IR_FADE_S fade out by IR_FADE_DB
(`held_impulse_response`): the learned response does not decay (its energy after 0.1 s is
-19 dB of the whole, after 0.99 s still -26 dB, and its last millisecond holds a spike at
-42 dB), so a held note's reverb tail would stop 1 s after its note-off with a cliff ~26 dB
below the held level. A 4 s note is cut at exactly that point, which is why it never showed.

Measured with the shipped weights (tests/synth/test_hold.py, which prints these; 16 kHz, C4,
velocity 100; levels are RMS over 20 ms (10 ms for steps) of the rendered audio):

* sustain: synthetic, no tags, latent 0 (organ-like: its loudness curve moves -0.9 dB/s over
  1.5-2.9 s, acoustic -1.4, electronic -3.0, the percussive ones -6 to -11). Held 12 s, its
  level at 11.5 s is +0.7 dB from its level at 2.5 s; over 3.5-11.5 s it varies 0.28 dB peak to
  peak (the generated 4 s note wobbles 4.1 dB over 0.5-2.4 s, and the held note plays that part
  within 0.3 dB of it); the largest spectral step between 64 ms frames across the sustain join
  is 0.61 dB, half the largest within the generated attack (1.18 dB);
* fast_decay (acoustic): 36.8 dB down 1.5 s after its peak, 47.8 dB after 2 s, every half
  second quieter than the last, exactly silent at 4.7 s of a 12 s hold;
* release after a 3 s hold: synthetic 40 dB down after 2.5 s (the model's slow release, then
  20 dB/s), exact silence 5.9 s after note-off; electronic 40 dB down after 0.74 s, exact
  silence after 2.8 s (the reverb). Largest 10 ms level step above -80 dB of the held level:
  2.1 dB and 4.7 dB (a random sweep of 24 notes with bends and latent changes: 9.4 dB at most);
* long_release (acoustic): the release stays within 0.1 dB of the 40 dB/s line or above it;
* bend +200 cents: measured +200.05 cents;
* latent 0 -> (0, 0, 5, 0, ..., 0, -5) at 4 s of a 5 s hold: spectral centroid 265 -> 776 Hz,
  level -31.9 -> -32.4 dB, no 20 ms level below the lower of the two (-0.1 dB);
* chunks of 1, 5, 13 frames against 32 (48 kHz, with bends and a latent change): max difference
  3.7e-9 (peak 0.03), same length;
* the largest sample step at a chunk boundary is 0.99 of the largest within a frame around it
  (0.89 at mid-chunk points);
* 60 s hold: finite, 65.9 s with its release, rendered in 3.0 s on 2 busy cores. At 48 kHz,
  one frame per call, a voice costs about 1.4 ms per 8 ms frame: synthesis with its own reverb
  0.9 ms, level rules 0.25 ms, decoder 0.14 ms (4.5 ms per block of 32 frames).
"""

from __future__ import annotations

import math
import os
import threading
import weakref
from collections import deque
from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from synth.envelope import MAX_BOOST_DB
from synth.fast_render import TRAIN_SAMPLE_RATE, midi_to_hz
from synth.models import (DECODER_DOWN, DECODER_FRAME_RATE, FAST_DECAY_ATTACK_S, FAST_DECAY_DB, FAST_DECAY_S,
                          LONG_RELEASE_HOLD_DB, LONG_RELEASE_MAX_DB_PER_S, N_DECODER_FRAMES, Z_DIM)
from synth.params import LATENT_DIM, LATENT_MAX, LATENT_MIN, NoteParams
from synth.streaming import StreamingSynth, frame_start_sample

FRAME_RATE = DECODER_FRAME_RATE  # frames of a held note (8 ms)

# Sustain: z and cents cross-fade into their mean over [SUSTAIN_FROM_S, SUSTAIN_AT_S), the
# loudness increments into the sustain slope (see the module doc).
SUSTAIN_FROM_S = 2.4
SUSTAIN_AT_S = 2.9
# The late held part whose loudness slope says whether a timbre decays.
DECAY_FIT_S = (1.5, 2.9)
# A slope below this is a decaying timbre (measured at C4: sustaining timbres -3 to +1 dB/s,
# percussive ones -6 to -11 dB/s).
DECAYING_BELOW_DB_PER_S = -4.0
# fast_decay keeps falling while held at least at the tag's own rate (36 dB in 1.5 s).
FAST_DECAY_HOLD_DB_PER_S = FAST_DECAY_DB / FAST_DECAY_S
# ... counting the reverb of the louder frames before in: the dry part is cut by at most this
# much below the cap for it (no gating) ...
FAST_DECAY_WET_MARGIN_DB = 20.0
# ... and aiming this much lower: the frame levels that the rules read (`LevelMeter`) follow the
# rendered sound's 10 ms RMS within about 2 dB. C4 acoustic fast_decay fell 33.3 dB in 1.5 s
# with the rule on the dry level, 34.3 through the reverb's response, 36.0 with a 2 dB margin,
# 36.8 with this one.
FAST_DECAY_MARGIN_DB = 3.0
# Where the generated release starts: the curves begin to fall between 2.976 and 3.0 s.
RELEASE_FROM_S = 2.976
RELEASE_Z_JOIN_S = 0.08
# After the generated 1 s release the level falls on at the release's own rate within these.
TAIL_DB_PER_S = (20.0, 400.0)
# The note is over (controls exactly 0) once its level bound is this far below its peak.
END_DB = 90.0
LATENT_CROSSFADE_S = 0.05
# A latent change keeps the note's level: the decoder plays the new z at the note's current
# f0 and loudness, and the level difference to the old z is compensated (at most
# LATENT_LEVEL_MAX_DB), cross-faded with the timbre. Without it, moving C4 synthetic from latent 0
# to (0, 0, 5, 0, ..., 0, -5) dropped the level by 13 dB (the decoder maps z to level too).
LATENT_LEVEL_MAX_DB = 24.0
# One frame: the synthesizer ramps f0 linearly within the frame (the phase is its integral), so a
# bend of any size glides over 8 ms with no step, and it reaches the output a frame sooner than
# with 16 ms (the bend's `control_to_sound_ms`, BENCHMARKS.md "A shorter lead").
BEND_EASE_S = 0.008
# Pressure moves the decoder's loudness input: over two frames, so that a jump of the whole
# PRESSURE_DB range is two steps of the decoder, not one.
PRESSURE_EASE_S = 0.016
# Pressure (breath, bow, aftertouch) drives the model's loudness input: 0 is the note as played,
# 1 this much louder (the decoder makes louder notes brighter too), eased over PRESSURE_EASE_S. The
# decoder answers its loudness input with a smaller change of level: with the weights of
# 2026-12-01, at C4 velocity 100 held, +24 dB of loudness raises the sound 5.0-5.9 dB
# (electronic, acoustic, synthetic); +12 dB gave -0.3 to 2.1 dB, +36 dB runs into the loudness
# ceiling (ld_max) for some timbres.
PRESSURE_DB = 24.0
MAX_BEND_CENTS = 4800.0  # MPE's default per-note range, +-48 semitones
# Level used to start a cap: the loudest of the last frames played (dB), so a cap never bites
# into the level it starts from.
LEVEL_MEMORY_FRAMES = 5
# A Timbre reads the level of its controls from its release on (the level mean's edge before
# it): a timbre change of a held note decodes these frames only (`Generator.run_neural`'s
# decode_from), about a third of the 4 s note, rather than the whole note.
TIMBRE_CONTROLS_FROM = int(round(RELEASE_FROM_S * FRAME_RATE)) - LEVEL_MEMORY_FRAMES
IR_FADE_S = 0.25
IR_FADE_DB = 80.0
DECODE_BLOCK = 32  # frames per decoder call (+ context on both sides)
FORGET_EVERY = 8  # frames between clean-ups of the plan
HOLD_FRAMES_MAX = 3  # a live engine may hold a note's controls this many frames (24 ms) while it decodes
DEFAULT_CHUNK_FRAMES = 8  # render_held's chunk (any size renders the same note)
# render_held's output ends this long after the note is exactly silent (exact zeros), whatever
# the chunk size.
SILENT_END_S = 0.01
MAX_RELEASE_S = 60.0  # render_held gives up (RuntimeError) if a release lasts longer
PEAK_LIMIT = 1.0  # as synth.generator's: a note whose 4 s rendering peaks above it is scaled down


def _frames(seconds: float) -> int:
    return int(round(seconds * FRAME_RATE))


def _raised_cosine(x):
    """0 for x <= 0, 1 for x >= 1, a raised cosine in between (float or array)."""
    if isinstance(x, float):  # (the planner's scalars: math is 20x faster than numpy here)
        return 0.0 if x <= 0.0 else 1.0 if x >= 1.0 else 0.5 - 0.5 * math.cos(math.pi * x)
    x = np.clip(x, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * x)


def _ease_out(x: float) -> float:
    """0 for x <= 0, 1 for x >= 1, 1 - (1 - x) ** 2 in between: a timbre change moves fastest
    at once and lands with no slope. (A raised cosine, the first shape, moved 6.7 % in its first
    frame and 25 % in its second: a knob turn was heard 16 ms later than it reached the note. The
    synthesizer ramps every control within a frame, so the fast start is no step.)"""
    return 0.0 if x <= 0.0 else 1.0 if x >= 1.0 else 1.0 - (1.0 - x) * (1.0 - x)


def control_level_db(amplitude, harmonic_distribution, noise_magnitudes, f0_hz=None,
                     meter: "LevelMeter | None" = None) -> np.ndarray:
    """Level (dB, mean power per sample) of the sound that synthesizer controls make:
    amplitude [n] (or [n, 1]), harmonic_distribution [n, H], noise_magnitudes [n, B] -> [n].

    Harmonic k has amplitude a * d_k (power a^2 d_k^2 / 2); the noise is white between its band
    centres (linear interpolation) with 1/3 of the magnitude squared per sample, as
    `fast_render.noise_band_matrix` defines it. Dry (meter None) this is within 0.2 dB of the RMS
    that `StreamingSynth` renders (tests/synth/test_hold.py); with a `LevelMeter` each frequency
    is weighted by the power response of dry + reverb (needs f0_hz [n]).
    """
    amp = np.asarray(amplitude, np.float64).reshape(-1)
    dist = np.asarray(harmonic_distribution, np.float64)
    mags = np.asarray(noise_magnitudes, np.float64)
    if meter is None:
        harmonic = 0.5 * amp**2 * np.sum(dist**2, axis=-1)
    else:
        f0 = np.asarray(f0_hz, np.float64).reshape(-1, 1)
        weight = meter.power_response(f0 * np.arange(1, dist.shape[-1] + 1))
        harmonic = 0.5 * amp**2 * np.sum(dist**2 * weight, axis=-1)
        mags = mags * meter.band_amplitude(mags.shape[-1])
    a, b = mags[:, :-1], mags[:, 1:]
    noise = np.mean(a * a + a * b + b * b, axis=-1) / 9.0
    return 10.0 * np.log10(harmonic + noise + 1e-30)


class LevelMeter:
    """What the reverb does to the level of a note, for the level rules.

    The learned impulse response colours the sound more than it adds a room: its first
    millisecond holds most of its energy (-11 dB of the dry sound's; all the rest -18 dB). At C4
    it raised the acoustic fast_decay note by 3 dB at its bright attack and by 6 dB once it had
    darkened, so a rule checked on the dry level failed on the sound (33 dB down instead of 36).
    So levels are measured through the power response of dry + reverb at each harmonic's
    frequency: a held tone's level with its reverb, within 0.1 dB of what `StreamingSynth`
    renders (0.6 dB at worst; smoothing the response over 5 Hz made it 1.4 dB, up to 5.8 dB).
    For falling levels the rules also count the reverb of louder frames before
    (`late_energy`: energy per frame of lag 1, 2, ... frames).
    """

    def __init__(self, impulse_response: np.ndarray, ir_sample_rate: int = TRAIN_SAMPLE_RATE):
        ir = np.asarray(impulse_response, np.float64)
        hop = ir_sample_rate // FRAME_RATE
        full = np.zeros(max(1, len(ir)))
        full[: len(ir)] = ir
        full[0] += 1.0  # the dry sound (the learned response's first tap is 0)
        n_fft = 1 << (4 * len(full) - 1).bit_length()  # bins of a quarter of the response's resolution
        self._bin_hz = ir_sample_rate / n_fft
        self._response = np.abs(np.fft.rfft(full, n_fft)) ** 2
        edges = np.arange(hop // 2, len(ir) + hop, hop)
        edges = edges[edges < len(ir)]
        self.late_energy = np.add.reduceat(ir**2, edges) if edges.size else np.zeros(0)
        self._nyquist = ir_sample_rate / 2
        self._bands: dict[int, np.ndarray] = {}

    def power_response(self, frequency_hz) -> np.ndarray:
        """|H(f)|^2 of the dry sound plus its reverb (any shape; 0 above the IR's Nyquist)."""
        f = np.asarray(frequency_hz, np.float64)
        # Linear interpolation between the response's bins, which are evenly spaced: np.interp's
        # binary search over 32k bins took 0.9 ms of a timbre change's 2.5 ms per note.
        x = np.clip(f / self._bin_hz, 0.0, len(self._response) - 1.0)
        i = np.minimum(x.astype(np.int64), len(self._response) - 2)
        frac = x - i
        weight = self._response[i] * (1.0 - frac) + self._response[i + 1] * frac
        return np.where(f < self._nyquist, weight, 0.0)

    def band_amplitude(self, n_bands: int) -> np.ndarray:
        """[n_bands] amplitude response at the noise bands' centres (0 .. the IR's Nyquist)."""
        bands = self._bands.get(n_bands)
        if bands is None:
            centres = np.linspace(0.0, self._nyquist, n_bands)
            centres[-1] *= 0.999
            bands = self._bands[n_bands] = np.sqrt(self.power_response(centres))
        return bands


def held_impulse_response(generator) -> np.ndarray:
    """The generator's learned impulse response (at 16 kHz) with its last IR_FADE_S faded out by
    IR_FADE_DB (dB-linear), so that reverb tails end smoothly (see the module doc)."""
    ir = np.array(generator.impulse_response, np.float64)
    n_fade = min(len(ir), int(round(IR_FADE_S * TRAIN_SAMPLE_RATE)))
    if n_fade:
        ramp = np.arange(1, n_fade + 1) / n_fade
        ir[len(ir) - n_fade:] *= 10.0 ** (-IR_FADE_DB * ramp / 20.0)
    return ir.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# The decoder on inputs of any length.

_DECODERS: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()
_DECODERS_LOCK = threading.Lock()


_CONSTANTS: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


def model_constants(generator) -> dict:
    """What every held note of one generator shares, computed once: the faded impulse response
    ('ir'), its `LevelMeter` ('meter'), the trained loudness range ('ld_range') and the decoder's
    context ('context'). A live engine starts notes without reading files or taking FFTs."""
    with _DECODERS_LOCK:
        found = _CONSTANTS.get(generator)
    if found is None:
        ir = held_impulse_response(generator)
        found = {"ir": ir, "meter": LevelMeter(ir), "ld_range": loudness_range_db(generator),
                 "context": decoder_context(generator)}
        with _DECODERS_LOCK:
            _CONSTANTS[generator] = found
    return found


def loudness_range_db(generator) -> tuple[float, float]:
    """The loudness the f0_ld_generator was trained between (dB): held loudness stays inside."""
    from synth.models import read_config

    config = read_config(os.path.join(generator.checkpoint_dir, "f0_ld_generator"))
    return float(config["ld_min"]), float(config["ld_max"])


def decoder_context(generator) -> int:
    """Frames each side of an output frame that the decoder looks at (sum of its dilations)."""
    return int(sum(generator.config.decoder_dilations))


def decode_controls(generator, f0_hz, loudness_db, z) -> dict[str, np.ndarray]:
    """The DDSP decoder and the synthesizer's control scaling on one note's inputs at the
    decoder's frame rate: f0_hz [n], loudness_db [n], z [n, 16] -> {'f0_hz' [n],
    'amplitude' [n], 'harmonic_distribution' [n, H], 'noise_magnitudes' [n, B]} (float32), as
    the generator computes them (`synth.numpy_nets.NumpyDecoder`, with the output calibration).
    Output frames within `decoder_context` of either end see zero padding, as a whole note does
    at its ends."""
    f0 = np.asarray(f0_hz, np.float32).reshape(1, -1)
    ld = np.asarray(loudness_db, np.float32).reshape(1, -1)
    zz = np.asarray(z, np.float32).reshape(1, -1, Z_DIM)
    return {k: v[0] for k, v in decode_controls_batch(generator, f0, ld, zz).items()}


def decode_controls_tf(generator, f0_hz, loudness_db, z) -> dict[str, np.ndarray]:
    """`decode_controls` through the TensorFlow graph of `synth.models` (the reference the
    numpy decoder is tested against)."""
    with _DECODERS_LOCK:
        run = _DECODERS.get(generator)
        if run is None:
            run = _DECODERS[generator] = _make_decoder(generator)
    f0 = np.asarray(f0_hz, np.float32).reshape(-1)
    ld = np.asarray(loudness_db, np.float32).reshape(-1)
    zz = np.asarray(z, np.float32).reshape(-1, Z_DIM)
    amp, dist, noise = run(f0, ld, zz)
    from synth.models import scale_output

    # The output calibration, as the generator's graph applies it.
    return scale_output({"f0_hz": f0, "amplitude": amp.numpy(), "harmonic_distribution": dist.numpy(),
                         "noise_magnitudes": noise.numpy()}, generator.output_gain)


def decode_controls_batch(generator, f0_hz, loudness_db, z) -> dict[str, np.ndarray]:
    """`decode_controls` for several notes' windows of one length at once:
    f0_hz [b, n], loudness_db [b, n], z [b, n, 16] -> the same keys with a leading batch axis.
    Each window is decoded on its own (zero padding at its ends)."""
    return generator.numpy_decoder(f0_hz, loudness_db, z)


def _make_decoder(generator):
    import tensorflow as tf

    from synth import models

    decoder, synth, cfg = generator.decoder, generator.synth, generator.config

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32), tf.TensorSpec([None], tf.float32),
                                  tf.TensorSpec([None, Z_DIM], tf.float32)])
    def run(f0, ld, z):
        f0b, ldb = f0[None], ld[None]
        raw = decoder([models.scale_f0(f0b)[..., None], models.scale_ld(ldb)[..., None], z[None]],
                      training=False)
        amp, harm, noise = models.split_decoder_output(raw, cfg)
        c = synth.get_controls(amp, harm, noise, f0b[..., None])
        return c["amplitude"][0, :, 0], c["harmonic_distribution"][0], c["noise_magnitudes"][0]

    return run


# ---------------------------------------------------------------------------------------------
# A timbre: one latent's generated curves and what a held note takes from them.


def _pairs(x: np.ndarray) -> np.ndarray:
    """[1000, ...] at 250 frames/s -> [500, ...] at the decoder's rate (mean of each pair)."""
    x = np.asarray(x, np.float64)
    return x.reshape((N_DECODER_FRAMES, DECODER_DOWN) + x.shape[1:]).mean(axis=1)


class Timbre:
    """The curves of one note (params + latent) at the decoder's frame rate, and the sustain and
    release that a held note takes from them. Built from `Generator.controls(params)`."""

    def __init__(self, curves: Mapping[str, np.ndarray], params: NoteParams, meter: LevelMeter):
        self.params = params
        f0 = _pairs(curves["f0_hz"])
        self.cents = 1200.0 * np.log2(f0 / midi_to_hz(params.pitch))
        self.loudness_db = _pairs(curves["loudness_db"])
        self.z = _pairs(curves["z"])
        # The level of the sound, read for the release only: the synthesizer controls may start
        # at TIMBRE_CONTROLS_FROM (`controls_from`; a timbre change decodes no more).
        first = int(curves.get("controls_from", 0))
        if not 0 <= first <= TIMBRE_CONTROLS_FROM:
            raise ValueError(f"curves: controls_from must be in 0..{TIMBRE_CONTROLS_FROM}, got {first}")
        power = 10.0 ** (control_level_db(curves["synth_amplitude"], curves["synth_harmonic_distribution"],
                                          curves["synth_noise_magnitudes"], curves["synth_f0_hz"], meter) / 10.0)
        # Centred power mean over LEVEL_MEMORY_FRAMES: robust to the single-frame dips that the
        # decoder makes at very low loudness.
        kernel = np.ones(LEVEL_MEMORY_FRAMES) / LEVEL_MEMORY_FRAMES
        level_db = 10.0 * np.log10(np.convolve(power, kernel, mode="same") + 1e-30)

        self.sustain_from = _frames(SUSTAIN_FROM_S)
        self.sustain_at = _frames(SUSTAIN_AT_S)
        held = slice(self.sustain_from, self.sustain_at)
        self.z_hold = self.z[held].mean(axis=0)
        self.cents_hold = float(self.cents[held].mean())
        fit = slice(_frames(DECAY_FIT_S[0]), _frames(DECAY_FIT_S[1]))
        t = np.arange(N_DECODER_FRAMES)[fit] / FRAME_RATE
        self.fitted_db_per_s = float(np.polyfit(t, self.loudness_db[fit], 1)[0])
        fast_decay = "fast_decay" in params.qualities
        self.decaying = fast_decay or self.fitted_db_per_s < DECAYING_BELOW_DB_PER_S
        slope = min(self.fitted_db_per_s, 0.0) if self.decaying else 0.0
        if fast_decay:
            slope = min(slope, -FAST_DECAY_HOLD_DB_PER_S)
        self.sustain_db_per_s = slope

        self.release_from = _frames(RELEASE_FROM_S)
        r0 = self.release_from
        # Released curves never rise (shape_envelope's rule 1, here from the release origin on).
        self.release_loudness_db = np.minimum.accumulate(self.loudness_db[r0:] - self.loudness_db[r0])
        self.release_level_db = np.minimum.accumulate(level_db[r0 - first:] - level_db[r0 - first])
        n = len(self.release_level_db)
        drop_rate = -self.release_level_db[-1] * FRAME_RATE / n
        half = np.arange(n // 2, n) / FRAME_RATE
        end_rate = -float(np.polyfit(half, self.release_level_db[n // 2:], 1)[0])
        self.tail_db_per_s = float(np.clip(max(drop_rate, end_rate), *TAIL_DB_PER_S))

    # Per frame j (decoder frames since note-on) -------------------------------------------

    def _join(self, j: int) -> float:
        return float(_raised_cosine((j - self.sustain_from + 1) / (self.sustain_at - self.sustain_from)))

    def held_cents(self, j: int) -> float:
        if j < self.sustain_from:
            return float(self.cents[j])
        if j < self.sustain_at:
            w = self._join(j)
            return (1.0 - w) * float(self.cents[j]) + w * self.cents_hold
        return self.cents_hold

    def held_z(self, j: int) -> np.ndarray:
        if j < self.sustain_from:
            return self.z[j]
        if j < self.sustain_at:
            w = self._join(j)
            return (1.0 - w) * self.z[j] + w * self.z_hold
        return self.z_hold

    def released_z(self, tau: int, z_at_release: np.ndarray) -> np.ndarray:
        """z `tau` frames after the note-off: the generated release's z, joined from the z the
        note had at its note-off by an offset that fades out."""
        r0 = self.release_from
        here = self.z[min(r0 + tau, N_DECODER_FRAMES - 1)]
        fade = 1.0 - _raised_cosine((tau + 1) / max(1, _frames(RELEASE_Z_JOIN_S)))
        if fade == 0.0:
            return here
        return here + (z_at_release - self.z[r0]) * fade

    def held_loudness_step(self, j: int) -> float:
        """Loudness change (dB) from frame j - 1 to frame j while held (j >= 1)."""
        sustain = self.sustain_db_per_s / FRAME_RATE
        if j < self.sustain_from:
            return float(self.loudness_db[j] - self.loudness_db[j - 1])
        if j < self.sustain_at:
            w = self._join(j)
            return (1.0 - w) * float(self.loudness_db[j] - self.loudness_db[j - 1]) + w * sustain
        return sustain

    def released_loudness_step(self, tau: int) -> float:
        """Loudness change from `tau - 1` to `tau` frames after the note-off (0 at tau = 0)."""
        curve = self.release_loudness_db
        if tau <= 0:
            return 0.0
        if tau < len(curve):
            return float(curve[tau] - curve[tau - 1])
        return -self.tail_db_per_s / FRAME_RATE

    def released_level_step(self, tau: int) -> float:
        """Change of the release's level bound from `tau - 1` to `tau` frames after note-off."""
        curve = self.release_level_db
        if tau <= 0:
            return 0.0
        if tau < len(curve):
            return float(curve[tau] - curve[tau - 1])
        return -self.tail_db_per_s / FRAME_RATE


# ---------------------------------------------------------------------------------------------
# The plan: decoder inputs frame by frame, from the note's state (events change the state).


@dataclass(frozen=True)
class _PlanState:
    """Everything the next planned frame depends on (small and immutable: a copy per frame is
    the snapshot that an event rewinds to)."""

    frame: int = 0
    loudness_db: float = 0.0
    # ((Timbre, first frame, level compensation dB), ...), oldest first; each later one
    # cross-fades in from its first frame.
    timbres: tuple = ()
    released_at: int | None = None
    z_at_release: Any = None
    bend_from: float = 0.0
    bend_to: float = 0.0
    bend_at: int = 0
    bend_frames: int = 0  # 0: BEND_EASE_S (a glide sets its own)
    pressure_from: float = 0.0  # loudness offsets (dB), eased like a bend
    pressure_to: float = 0.0
    pressure_at: int = 0
    # A move of the loudness itself, this much per frame for this many frames: a note that
    # started with a stand-in's controls joins its own loudness curve (`apply_timbre`).
    ld_shift_db: float = 0.0
    ld_shift_frames: int = 0


@dataclass(frozen=True)
class _PlannedFrame:
    f0_hz: float
    loudness_db: float
    z: np.ndarray
    timbre: Timbre  # the newest (its sustain and release rules apply)
    released_at: int | None
    gain_db: float  # the note's gain: its peak gain and the level compensation of latent changes
    bend_cents: float = 0.0  # the bend in f0_hz
    pressure_db: float = 0.0  # the pressure in loudness_db


def _weights(timbres: tuple, j: int) -> list[float]:
    n = max(1, _frames(LATENT_CROSSFADE_S))
    weights = [1.0]
    for _, start, _ in timbres[1:]:
        r = _ease_out((j - start + 1) / n)
        weights = [w * (1.0 - r) for w in weights] + [r]
    return weights


def _bend_cents(state: _PlanState, j: int) -> float:
    n = state.bend_frames or max(1, _frames(BEND_EASE_S))
    r = min(1.0, max(0.0, (j - state.bend_at + 1) / n))
    return state.bend_from + (state.bend_to - state.bend_from) * r


def _pressure_db(state: _PlanState, j: int) -> float:
    n = max(1, _frames(PRESSURE_EASE_S))
    r = min(1.0, max(0.0, (j - state.pressure_at + 1) / n))
    return state.pressure_from + (state.pressure_to - state.pressure_from) * r


def _plan_frame(state: _PlanState, base_hz: float, ld_range: tuple[float, float]) -> tuple[_PlannedFrame, _PlanState]:
    j = state.frame
    timbres = state.timbres
    if len(timbres) == 1:
        return _plan_frame_one(state, base_hz, ld_range)
    weights = _weights(timbres, j)
    if weights[-1] >= 1.0 and len(timbres) > 1:  # the cross-fade is over
        timbres, weights = timbres[-1:], [1.0]
    cents = sum(w * tb.held_cents(j) for w, (tb, _, _) in zip(weights, timbres))
    released_at, z_at_release = state.released_at, state.z_at_release
    if released_at is not None and j >= released_at:
        tau = j - released_at
        if z_at_release is None:  # the note-off frame: remember where z was
            z_at_release = sum(w * tb.held_z(j) for w, (tb, _, _) in zip(weights, timbres))
        z = sum(w * tb.released_z(tau, z_at_release) for w, (tb, _, _) in zip(weights, timbres))
        step = sum(w * tb.released_loudness_step(tau) for w, (tb, _, _) in zip(weights, timbres))
    else:
        z = sum(w * tb.held_z(j) for w, (tb, _, _) in zip(weights, timbres))
        step = sum(w * tb.held_loudness_step(j) for w, (tb, _, _) in zip(weights, timbres)) if j else 0.0
    if j == 0:
        ld = sum(w * float(tb.loudness_db[0]) for w, (tb, _, _) in zip(weights, timbres))
    else:
        ld = state.loudness_db + step
    shift_left = state.ld_shift_frames
    if shift_left:
        ld, shift_left = ld + state.ld_shift_db, shift_left - 1
    ld = float(min(max(ld, ld_range[0]), ld_range[1]))
    # Pressure rides on top of the planned loudness (the state keeps the loudness without it).
    pressed = ld
    if state.pressure_to or state.pressure_from:
        pressed = float(min(ld + _pressure_db(state, j), ld_range[1]))
    gain = sum(w * comp for w, (_, _, comp) in zip(weights, timbres))
    bend = _bend_cents(state, j)
    f0 = base_hz * 2.0 ** ((cents + bend) / 1200.0)
    frame = _PlannedFrame(f0, pressed, np.asarray(z, np.float64), timbres[-1][0], released_at, gain, bend,
                          pressed - ld)
    return frame, replace(state, frame=j + 1, loudness_db=ld, timbres=timbres, z_at_release=z_at_release,
                          ld_shift_frames=shift_left)


def _plan_frame_one(state: _PlanState, base_hz: float, ld_range: tuple[float, float]):
    """`_plan_frame` for a note with one timbre (no cross-fade): the same arithmetic without the
    weighted sums, 3-4x faster (a live engine plans every voice's every frame)."""
    j = state.frame
    tb, _, comp = state.timbres[0]
    cents = tb.held_cents(j)
    released_at, z_at_release = state.released_at, state.z_at_release
    if released_at is not None and j >= released_at:
        tau = j - released_at
        if z_at_release is None:
            z_at_release = tb.held_z(j)
        z = tb.released_z(tau, z_at_release)
        step = tb.released_loudness_step(tau)
    else:
        z = tb.held_z(j)
        step = tb.held_loudness_step(j) if j else 0.0
    ld = float(tb.loudness_db[0]) if j == 0 else state.loudness_db + step
    shift_left = state.ld_shift_frames
    if shift_left:
        ld, shift_left = ld + state.ld_shift_db, shift_left - 1
    ld = float(min(max(ld, ld_range[0]), ld_range[1]))
    pressed = ld
    if state.pressure_to or state.pressure_from:
        pressed = float(min(ld + _pressure_db(state, j), ld_range[1]))
    bend = _bend_cents(state, j) if (state.bend_to or state.bend_from) else 0.0
    f0 = base_hz * 2.0 ** ((cents + bend) / 1200.0)
    frame = _PlannedFrame(f0, pressed, z, tb, released_at, comp, bend, pressed - ld)
    new = object.__new__(_PlanState)  # dataclasses.replace, without its cost
    new.__dict__.update(state.__dict__)
    new.__dict__.update(frame=j + 1, loudness_db=ld, z_at_release=z_at_release, ld_shift_frames=shift_left)
    return frame, new


# ---------------------------------------------------------------------------------------------
# The level rules (a VCA on the controls), causal, frame by frame in playing order.


class _Vca:
    """The level rules of one note (see the module doc), on levels measured with `meter`, whose
    late reverb the fast_decay rule counts in."""

    def __init__(self, params: NoteParams, meter: LevelMeter):
        self.fast_decay = "fast_decay" in params.qualities
        self.long_release = "long_release" in params.qualities
        self.attack_frames = max(1, _frames(FAST_DECAY_ATTACK_S))
        self.recent: deque = deque(maxlen=LEVEL_MEMORY_FRAMES)
        self.peak = -math.inf
        self.attack_peak, self.attack_frame = -math.inf, 0
        self.decay_cap: float | None = None
        self.release_cap: float | None = None
        self.release_level: float | None = None
        self.ended = False
        # The late reverb: the wet power of frame j is about sum_tau P(j - tau) * late[tau - 1].
        self.late = meter.late_energy[::-1].copy()  # oldest lag first, as the power history
        self.powers = np.zeros(len(self.late))  # dry power of the last frames, oldest first

    def copy(self) -> "_Vca":
        """Its state now (a live engine keeps the one before each frame, to render it again)."""
        other = object.__new__(_Vca)
        other.__dict__.update(self.__dict__)
        other.recent = self.recent.copy()
        other.powers = self.powers.copy()
        return other

    def gain_db(self, j: int, level_db: float, planned: _PlannedFrame) -> float | None:
        """The gain (dB) for frame j whose controls have `level_db`; None once the note is over."""
        if self.ended:
            return None
        recent = max(self.recent) if self.recent else level_db
        tb = planned.timbre
        caps = []
        fast_cap = math.inf
        if self.fast_decay:
            if j < self.attack_frames and level_db > self.attack_peak:
                self.attack_peak, self.attack_frame = level_db, j
            since = (j - self.attack_frame) / FRAME_RATE
            fast_cap = (self.attack_peak - (FAST_DECAY_DB + FAST_DECAY_MARGIN_DB) * min(since / FAST_DECAY_S, 1.0)
                        - FAST_DECAY_HOLD_DB_PER_S * max(0.0, since - FAST_DECAY_S))
            caps.append(fast_cap)
            # The rule holds for the sound with its reverb (as synth.envelope applies it to the
            # rendered note): the dry part gets what the reverb of louder frames before leaves
            # (the meter counts the reverb of frames as loud as this one), but never less than
            # FAST_DECAY_WET_MARGIN_DB below the cap (no gating).
            cap_power = 10.0 ** (fast_cap / 10.0)
            wet = float(np.dot(np.maximum(self.powers - cap_power, 0.0), self.late))
            allowed = max(cap_power - wet, cap_power * 10.0 ** (-FAST_DECAY_WET_MARGIN_DB / 10.0))
            fast_cap = 10.0 * math.log10(allowed)
        floor = -math.inf
        if planned.released_at is None:
            if tb.decaying and j >= tb.sustain_from:
                self.decay_cap = recent if self.decay_cap is None else self.decay_cap + tb.sustain_db_per_s / FRAME_RATE
            if self.decay_cap is not None:  # (a sustaining timbre after a decaying one holds it)
                caps.append(self.decay_cap)
            if self.long_release and math.isfinite(self.peak):
                floor = self.peak - LONG_RELEASE_HOLD_DB
        else:
            tau = j - planned.released_at
            if self.release_cap is None:
                self.release_cap = self.release_level = recent
            else:
                self.release_cap += tb.released_level_step(tau)
            caps.append(self.release_cap)
            if self.long_release:
                floor = self.release_level - LONG_RELEASE_MAX_DB_PER_S * tau / FRAME_RATE
        ceiling = min(caps) if caps else math.inf
        if max(ceiling, floor) < self.peak - END_DB:
            self.ended = True
            return None
        out = min(level_db, ceiling, fast_cap)
        out += min(max(floor - out, 0.0), MAX_BOOST_DB)
        self.recent.append(out)
        self.peak = max(self.peak, out)
        if len(self.powers):
            self.powers[:-1] = self.powers[1:]
            self.powers[-1] = 10.0 ** (out / 10.0)
        return out - level_db


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoteStart:
    """What a held note starts from, computed once per note (the networks' curves as a `Timbre`,
    and the 4 s note's peak gain): `prepare_notes` makes them in one network call, so a live
    engine can keep them and start the same note again without the networks."""

    params: NoteParams
    timbre: Timbre
    peak_gain: float


def _peak_gain(generator, params: NoteParams, curves: Mapping[str, np.ndarray]) -> float:
    controls = {key[len("synth_"):]: value for key, value in curves.items() if key.startswith("synth_")}
    peak = float(np.max(np.abs(generator.render_numpy(controls, TRAIN_SAMPLE_RATE, rng=np.random.default_rng(0)))))
    return min(1.0, PEAK_LIMIT / peak) if peak > 0 else 1.0


def prepare_notes(generator, notes: Sequence[NoteParams], peak_gain: bool = True) -> list[NoteStart]:
    """`NoteStart`s for `notes`, the networks run in batches (`Generator.run_neural`). With
    peak_gain False the peak gain is 1 (for a timbre change of a sounding note, which keeps its
    own; the decoder then runs over the frames a `Timbre` reads only, TIMBRE_CONTROLS_FROM)."""
    from synth.generator import BATCH_CHUNK

    meter = model_constants(generator)["meter"]
    out: list[NoteStart] = []
    notes = list(notes)
    decode_from = 0 if peak_gain else TIMBRE_CONTROLS_FROM
    for i in range(0, len(notes), BATCH_CHUNK):
        chunk = notes[i : i + BATCH_CHUNK]
        neural = generator.run_neural(chunk, decode_from)
        for j, params in enumerate(chunk):
            curves = {k: neural[k][j] for k in ("z", "f0_hz", "loudness_db", "cents")}
            curves.update({f"synth_{k}": v[j] for k, v in neural["controls"].items()})
            curves["controls_from"] = decode_from
            gain = _peak_gain(generator, params, curves) if peak_gain else 1.0
            out.append(NoteStart(params, Timbre(curves, params, meter), gain))
    return out


@dataclass(frozen=True)
class TimbreChangeInputs:
    """A held note's part of the level compensation of a timbre change (`HeldNote.timbre_change_inputs`)."""

    state: _PlanState  # the plan state now, without its timbres
    f0_hz: float  # the frame planned now: f0, loudness, z and gain in the old timbre
    loudness_db: float
    z: np.ndarray
    gain_db: float
    base_hz: float
    ld_range: tuple


def level_compensations(generator, inputs: Sequence[TimbreChangeInputs], timbres: Sequence[Timbre]) -> list[float]:
    """The gain (dB) each note takes into its new timbre, so that a latent change moves the
    timbre, not the level: the decoder on the old and the new z at the note's f0 and loudness
    now, each held constant over the decoder's context, compared by level (at most
    LATENT_LEVEL_MAX_DB either way), on top of the note's gain now. All notes in one decoder call."""
    if len(inputs) != len(timbres):
        raise ValueError(f"timbres: expected one per note ({len(inputs)}), got {len(timbres)}")
    if not inputs:
        return []
    constants = model_constants(generator)
    context = constants["context"]
    n = 2 * context + 1
    f0, ld, z = [], [], []
    for note, timbre in zip(inputs, timbres):
        new, _ = _plan_frame(replace(note.state, timbres=((timbre, 0, 0.0),)), note.base_hz, note.ld_range)
        f0 += [note.f0_hz] * 2
        ld += [note.loudness_db] * 2
        z += [note.z, new.z]
    k = len(f0)
    out = decode_controls_batch(generator, np.repeat(np.asarray(f0)[:, None], n, axis=1),
                                np.repeat(np.asarray(ld)[:, None], n, axis=1),
                                np.repeat(np.stack(z)[:, None], n, axis=1))
    level = control_level_db(out["amplitude"].reshape(-1), out["harmonic_distribution"].reshape(k * n, -1),
                             out["noise_magnitudes"].reshape(k * n, -1), out["f0_hz"].reshape(-1),
                             constants["meter"]).reshape(k, n)[:, context]
    return [note.gain_db + float(np.clip(level[2 * i] - level[2 * i + 1], -LATENT_LEVEL_MAX_DB, LATENT_LEVEL_MAX_DB))
            for i, note in enumerate(inputs)]


class HeldNote:
    """One held note, rendered k frames at a time (see the module doc).

    generator: a loaded `synth.generator.Generator`; params: the note (its latent is the first
    timbre); sample_rate: the output rate; peak_gain: a gain for the whole note, by default the
    one `Generator.render` gives its 4 s note (1, or 1 / its peak where that exceeds 1: one note
    in 24 of a random sweep peaked at 1.2), so that a held note and the cached 4 s note play at
    the same level. `note_off`, `set_bend` and `set_latent` take effect
    at the next frame rendered. Not thread-safe; the decoder runs inside `render_frames`, so a
    live engine runs HeldNotes in render processes, not in its audio callback.
    """

    def __init__(self, generator, params: NoteParams, sample_rate: int = 16000, peak_gain: float | None = None,
                 start: NoteStart | None = None, synth: bool = True, decode_block: int = DECODE_BLOCK,
                 grid_frame: int = 0):
        if start is not None:
            params = start.params
            peak_gain = start.peak_gain if peak_gain is None else peak_gain
        if not isinstance(params, NoteParams):
            raise ValueError(f"params: expected NoteParams, got {params!r}")
        self.generator = generator
        self.params = params
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) \
                or not 8000 <= int(sample_rate) <= 192000:
            raise ValueError(f"sample_rate: expected an integer number of Hz in 8000..192000, got {sample_rate!r}")
        self.sample_rate = int(sample_rate)
        self._base_hz = float(midi_to_hz(params.pitch))
        constants = model_constants(generator)
        self._ld_range = constants["ld_range"]
        self._context = constants["context"]
        cfg = generator.config
        self._meter = constants["meter"]
        # synth False: controls only (`controls_frames`), for an engine that synthesises many
        # notes in one bank and reverberates their mix.
        self.synth = StreamingSynth(self.sample_rate, constants["ir"], n_harmonics=cfg.n_harmonics,
                                    n_noise_bands=cfg.n_noise_bands, seed=int(params.key[:16], 16)) if synth else None
        # Where the note's first frame falls in the pattern of frame lengths (44.1 kHz: five frames
        # of 353 or 352 samples; one of 384 at 48 kHz): a live voice's frames fall on the server's
        # grid, wherever its note-on came. `render_held(grid_frame=...)` renders one like it.
        if isinstance(grid_frame, bool) or not isinstance(grid_frame, (int, np.integer)) or grid_frame < 0:
            raise ValueError(f"grid_frame: expected an integer >= 0, got {grid_frame!r}")
        self._grid = int(grid_frame)
        if self.synth is not None:
            self.synth.bank.frame_index = self._grid
        self.frame = 0  # frames rendered so far
        # Frames per decoder window (+ the context each side): any size gives the same note; a
        # live engine takes small ones, so that replanning after a note-off is quick.
        self.decode_block = int(decode_block)
        self._live: dict[str, tuple] = {}  # bend / pressure set without replanning (set_bend)
        self._plan_end = 0  # frames planned so far (the newest snapshot's frame)
        self.generation = 0  # bumped whenever the plan from the next frame on changes
        self._stale: dict[int, dict[str, np.ndarray]] = {}  # block -> controls of an older plan
        self._last_row: tuple | None = None  # the last frame's controls (controls_frame_into)
        self._rendered_live = (1.0, 1.0)  # the last frame's live factors (gain, f0), for retake_factors
        self._holding = 0  # frames they have been held for
        # (frame, its state before it was rendered) for the last frame controls_frame_into gave:
        # `apply_timbre(frame=...)` renders it again.
        self._before_last: tuple | None = None
        self._forgot_at = 0
        if start is not None:
            timbre = start.timbre
        else:
            curves = generator.controls(params)
            timbre = Timbre(curves, params, self._meter)
            if peak_gain is None:
                peak_gain = _peak_gain(generator, params, curves)
        if not (isinstance(peak_gain, (int, float, np.floating)) and 0.0 < float(peak_gain) <= 1e6):
            raise ValueError(f"peak_gain: expected a positive gain, got {peak_gain!r}")
        self.peak_gain_db = 20.0 * math.log10(float(peak_gain))
        # state before planning frame f (from the frame being rendered on)
        first = (timbre, 0, self.peak_gain_db)
        self._snapshots: dict[int, _PlanState] = {0: _PlanState(timbres=(first,))}
        self._plan: dict[int, _PlannedFrame] = {}
        self._decoded: dict[int, dict[str, np.ndarray]] = {}  # block index -> controls
        self._vca = _Vca(params, self._meter)
        self._released = False
        # Samples from which the note is exactly silent: set when its controls end (the dry sound
        # stops within that frame, the reverb one impulse response later; after that only FFT
        # rounding, below 1e-9, would remain, and is written as exact zeros).
        self._silent_from: int | None = None

    def _timbre(self, params: NoteParams) -> Timbre:
        return Timbre(self.generator.controls(params, TIMBRE_CONTROLS_FROM), params, self._meter)

    # Events ---------------------------------------------------------------------------------

    @property
    def time_s(self) -> float:
        """Seconds of the note rendered so far."""
        return self.frame / FRAME_RATE

    @property
    def released(self) -> bool:
        return self._released

    @property
    def ended(self) -> bool:
        """True once the note's controls are silent for good (the reverb may still ring)."""
        return self._vca.ended

    @property
    def finished(self) -> bool:
        """True once the note has ended and its reverb has rung out: it renders exact zeros."""
        return self._silent_from is not None and self._samples(self.frame) >= self._silent_from

    def _samples(self, frame: int) -> int:
        g = self._grid
        return int(frame_start_sample(frame + g, self.sample_rate, FRAME_RATE)
                   - frame_start_sample(g, self.sample_rate, FRAME_RATE))

    def _rewind(self) -> _PlanState:
        """Forget the plan from the next frame on; the state before planning it."""
        n = self.frame
        self._before_last = None  # (a changed plan: the last frame is not rendered again)
        self._plan = {f: p for f, p in self._plan.items() if f < n}
        self._snapshots = {f: s for f, s in self._snapshots.items() if f <= n}
        self._plan_end = n
        self.generation += 1  # blocks decoded from the old plan elsewhere are stale
        first_stale = n // self.decode_block
        # Blocks decoded from the old plan are kept aside: a live engine may play one for a
        # frame or two while the new plan is decoded elsewhere (controls_frames(stale_ok=True)).
        for b in [b for b in self._decoded if b >= first_stale]:
            self._stale[b] = self._decoded.pop(b)
        state = self._snapshots[n]
        # Live bends and pressures become the plan's again (it is replanned from here anyway).
        bend = self._live.pop("bend", None)
        if bend is not None:
            state = replace(state, bend_from=bend[0], bend_to=bend[1], bend_at=bend[2], bend_frames=bend[3])
        pressure = self._live.pop("pressure", None)
        if pressure is not None:
            state = replace(state, pressure_from=pressure[0], pressure_to=pressure[1], pressure_at=pressure[2])
        return state

    def _apply(self, state: _PlanState) -> None:
        self._snapshots[self.frame] = state

    def note_off(self) -> None:
        """Release the note from the next frame on (a second call does nothing)."""
        if self._released:
            return
        self._released = True
        self._apply(replace(self._rewind(), released_at=self.frame))

    def _live_from(self, frame: int | None) -> int:
        """The frame a live (not replanned) change starts at: the next one, or (`frame`, a live
        engine that renders it again: `retake_factors`) the last one rendered."""
        if frame is None:
            return self.frame
        if frame != self.frame - 1 or frame not in self._plan:
            raise ValueError(f"frame: expected the last frame rendered ({self.frame - 1}) or None, got {frame!r}")
        return frame

    def set_bend(self, cents: float, ease_s: float = BEND_EASE_S, replan: bool = True,
                 frame: int | None = None) -> None:
        """Bend the pitch to `cents` (relative to the note's pitch, |cents| <= MAX_BEND_CENTS),
        reached linearly over `ease_s` (BEND_EASE_S; a glide gives its own) from the next frame on.

        replan False (live playing): the frames already planned and decoded keep their inputs and
        the bend is applied to their f0 on the way out; frames planned from now on hand the bent
        pitch to the decoder. So a pitch wheel costs no decoder call, and the timbre follows the
        pitch within one decoder block (DECODE_BLOCK frames). `frame` (replan False only): from
        that frame on instead, the last one rendered, which the caller renders again."""
        if isinstance(cents, bool) or not isinstance(cents, (int, float, np.integer, np.floating)) \
                or not math.isfinite(float(cents)) or abs(float(cents)) > MAX_BEND_CENTS:
            raise ValueError(f"bend: expected cents in [-{MAX_BEND_CENTS:g}, {MAX_BEND_CENTS:g}], got {cents!r}")
        ease = _check_time("ease_s", ease_s)
        if not replan:
            at = self._live_from(frame)
            now = self._live_value("bend", at)
            if now is None:
                now = self._plan[at].bend_cents if at < self.frame else _bend_cents(self._snapshots[at], at)
            self._live["bend"] = (now, float(cents), at, max(1, _frames(ease)))
            last = self._plan_end  # the plan's future: planned bent (cheap, no rewind)
            self._snapshots[last] = replace(self._snapshots[last], bend_from=float(cents), bend_to=float(cents),
                                            bend_at=last)
            return
        if frame is not None:
            raise ValueError("frame: only for a live bend (replan=False)")
        state = self._rewind()
        now = _bend_cents(state, self.frame)
        self._live.pop("bend", None)
        self._apply(replace(state, bend_from=now, bend_to=float(cents), bend_at=self.frame,
                            bend_frames=max(1, _frames(ease))))

    def _live_value(self, name: str, j: int) -> float | None:
        """A live (not replanned) bend or pressure at frame j, or None if there is none."""
        live = self._live.get(name)
        if live is None:
            return None
        start, end, at, n = live
        r = min(1.0, max(0.0, (j - at + 1) / n))
        return start + (end - start) * r

    @property
    def bend_cents(self) -> float:
        """The bend the note is heading for (cents)."""
        return self._snapshots[max(self._snapshots)].bend_to if self._snapshots else 0.0

    def set_pressure(self, value: float, replan: bool = True, frame: int | None = None) -> None:
        """Pressure 0..1 (0: the note as played): the loudness input rises by up to PRESSURE_DB,
        eased over PRESSURE_EASE_S from the next frame on (`frame`: as `set_bend`'s)."""
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                or not math.isfinite(float(value)) or not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"pressure: expected a number in [0, 1], got {value!r}")
        if not replan:  # as set_bend: a gain now, the decoder's loudness input from the next block
            at = self._live_from(frame)
            now = self._live_value("pressure", at)
            target = PRESSURE_DB * float(value)
            self._live["pressure"] = (now if now is not None else target, target, at,
                                      max(1, _frames(PRESSURE_EASE_S)))
            last = self._plan_end
            self._snapshots[last] = replace(self._snapshots[last], pressure_from=target, pressure_to=target,
                                            pressure_at=last)
            return
        if frame is not None:
            raise ValueError("frame: only for a live pressure (replan=False)")
        state = self._rewind()
        now = _pressure_db(state, self.frame)
        self._live.pop("pressure", None)
        self._apply(replace(state, pressure_from=now, pressure_to=PRESSURE_DB * float(value),
                            pressure_at=self.frame))

    def set_latent(self, values: Sequence[float]) -> None:
        """Move the note's timbre to the latent `values` (16 numbers in [-7, 7]): the networks
        run for the new latent and the note cross-fades to it over LATENT_CROSSFADE_S."""
        self.set_timbre(self.params.replace(latent_sample=list(values)))

    def set_timbre(self, params: NoteParams, timbre: Timbre | None = None, gain_db: float | None = None) -> None:
        """Move the note to another timbre of the same pitch and velocity (latent, source,
        qualities): `prepare_timbre` then `apply_timbre`."""
        self.apply_timbre(self.prepare_timbre(params, timbre, gain_db))

    def prepare_timbre(self, params: NoteParams, timbre: Timbre | None = None, gain_db: float | None = None,
                       compensation_db: float | None = None) -> tuple:
        """The slow half of a timbre change (the networks, and the decoder for the level
        compensation, against the note's state as it is now): safe to run on another thread
        while the note plays; `apply_timbre` then takes effect at the next frame.

        gain_db: the note's gain in the new timbre, instead of the level compensation. A note
        started with another note's controls while its own were computed (a live voice's
        stand-in) takes its own start's peak gain, so that it ends up as loud as it would have
        started: keeping the stand-in's level held a synthetic C4 8 dB below its own.
        compensation_db: the level compensation, computed already (`level_compensations` on this
        note's `timbre_change_inputs`, as a live engine's networks process does)."""
        if not isinstance(params, NoteParams) or (params.pitch, params.velocity) != (self.params.pitch,
                                                                                        self.params.velocity):
            raise ValueError(f"params: expected NoteParams of pitch {self.params.pitch} and velocity "
                             f"{self.params.velocity}, got {params!r}")
        if timbre is None:
            timbre = self._timbre(params)
        if gain_db is not None:
            if not math.isfinite(float(gain_db)):
                raise ValueError(f"gain_db: expected a finite gain in dB, got {gain_db!r}")
            return params, timbre, float(gain_db), True
        if compensation_db is None:
            compensation_db = level_compensations(self.generator, [self.timbre_change_inputs()], [timbre])[0]
        return params, timbre, float(compensation_db), False

    def timbre_change_inputs(self) -> "TimbreChangeInputs":
        """What the level compensation of a timbre change needs of this note as it is now (small
        and picklable: a live engine has it computed in its networks process, with the new
        timbre, by `level_compensations`, and then only applies it)."""
        snapshots = dict(self._snapshots)  # (one C call: a consistent copy while the note plays)
        state = snapshots.get(self.frame) or snapshots[min(snapshots)]
        old, _ = _plan_frame(state, self._base_hz, self._ld_range)
        # The state without its timbres (large), which the new one replaces.
        return TimbreChangeInputs(replace(state, timbres=()), old.f0_hz, old.loudness_db,
                                  np.array(old.z), old.gain_db, self._base_hz, self._ld_range)

    @property
    def last_frame_retakable(self) -> bool:
        """True if `apply_timbre(frame=self.frame - 1)` can take the last frame back."""
        before = self._before_last
        return before is not None and before[0] == self.frame - 1

    def apply_timbre(self, prepared: tuple, frame: int | None = None) -> None:
        """Take the prepared change from the next frame on; `frame`: from the last frame
        `controls_frame_into` gave (`note.frame - 1`), which the caller must then render again
        with `controls_frame_into` (a live engine's retake: the change reaches the sound card a
        frame sooner, and the note is what it would have been with the change before that
        frame)."""
        params, timbre, comp, own_level = prepared
        if frame is not None:
            before = self._before_last
            if not self.last_frame_retakable or frame != self.frame - 1 or frame not in self._snapshots:
                raise ValueError(f"frame: expected the last frame rendered by controls_frame_into "
                                 f"({self.frame - 1}) or None, got {frame!r}")
            (self.frame, vca, self._last_row, self._holding, self._rendered_live, self._silent_from) = before
            self._vca = vca.copy()
            self._before_last = None
        state = self._rewind()
        self.params = params
        state = replace(state, timbres=state.timbres + ((timbre, self.frame, comp),))
        if own_level and state.released_at is None:
            # Join the new timbre's own loudness curve over the cross-fade (the loudness is
            # planned step by step, so it would otherwise stay on the stand-in's curve).
            n = max(1, _frames(LATENT_CROSSFADE_S))
            target = float(timbre.loudness_db[min(self.frame + n, len(timbre.loudness_db) - 1)])
            state = replace(state, ld_shift_db=(target - state.loudness_db) / n, ld_shift_frames=n)
        self._apply(state)

    # Rendering ------------------------------------------------------------------------------

    def _plan_until(self, end: int) -> None:
        """Plan frames up to `end` (exclusive) from the last snapshot."""
        last = self._plan_end
        if end <= last:
            return
        state = self._snapshots[last]
        plan, snapshots = self._plan, self._snapshots
        for f in range(last, end):
            planned, state = _plan_frame(state, self._base_hz, self._ld_range)
            plan[f] = planned
            snapshots[f + 1] = state
        self._plan_end = end

    def _block(self, b: int, stale_ok: bool = False) -> dict[str, np.ndarray]:
        controls = self._decoded.get(b)
        if controls is None and stale_ok:
            controls = self._stale.get(b)
        if controls is None:
            start, stop = b * self.decode_block, (b + 1) * self.decode_block
            lo, hi = max(0, start - self._context), stop + self._context
            self._plan_until(hi)
            frames = [self._plan[f] for f in range(lo, hi)]
            out = decode_controls(self.generator, [p.f0_hz for p in frames], [p.loudness_db for p in frames],
                                  np.stack([p.z for p in frames]))
            self.put_block(b, {k: v[start - lo : stop - lo] for k, v in out.items()})
            controls = self._decoded[b]
        return controls

    def plan_ahead(self, n_frames: int, budget: int | None = None) -> int:
        """Plan the decoder's inputs up to `n_frames` frames ahead of the next frame, at most
        `budget` frames now; returns the frames planned. (Planning frame by frame as a note plays
        keeps a live engine's work even: no block plans 46 frames at once.)"""
        end = self.frame + int(n_frames)
        if budget is not None:
            end = min(end, self._plan_end + int(budget))
        before = self._plan_end
        self._plan_until(end)
        return max(0, self._plan_end - before)

    def block_planned(self, b: int) -> bool:
        """True if block b's decoder inputs are planned (`block_inputs` costs no planning)."""
        return self._plan_end >= (b + 1) * self.decode_block + self._context

    def block_needed(self, n_frames: int = 1, ahead: int = 0) -> int | None:
        """The decoder block that the next `n_frames` frames (looking `ahead` frames further)
        need and that is not decoded yet, or None. With `block_inputs` and `put_block`, an engine
        decodes the blocks of many notes in one batched call (`decode_controls_batch`)."""
        n = self.frame
        for b in range(n // self.decode_block, (n + n_frames + ahead - 1) // self.decode_block + 1):
            if b not in self._decoded:
                return b
        return None

    def block_inputs(self, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """The decoder's inputs for block b (its frames with the context each side): f0_hz [m],
        loudness_db [m], z [m, 16], and the offset of the block's first frame in them."""
        start, stop = b * self.decode_block, (b + 1) * self.decode_block
        lo, hi = max(0, start - self._context), stop + self._context
        self._plan_until(hi)
        frames = [self._plan[f] for f in range(lo, hi)]
        return (np.array([p.f0_hz for p in frames]), np.array([p.loudness_db for p in frames]),
                np.stack([p.z for p in frames]), start - lo)

    def put_block(self, b: int, controls: Mapping[str, np.ndarray]) -> None:
        """The decoded controls of block b (self.decode_block frames): kept with their levels."""
        self._stale.pop(b, None)
        block = {k: np.asarray(v[:self.decode_block]) for k, v in controls.items()}
        if "level_db" not in block:  # (an engine decoding many notes computes them in one go)
            block["level_db"] = control_level_db(block["amplitude"], block["harmonic_distribution"],
                                                 block["noise_magnitudes"], block["f0_hz"], self._meter)
        self._decoded[b] = block

    def decoded_block(self, b: int) -> dict[str, np.ndarray] | None:
        """Block b's decoded controls (with their levels), if decoded."""
        return self._decoded.get(b)

    def playable_stale(self) -> bool:
        """True if the next frame's block is not decoded for the current plan but an older plan's
        is (after note_off / a timbre change): `controls_frames(1, stale_ok=True)` plays it."""
        b = self.frame // self.decode_block
        return b not in self._decoded and b in self._stale

    def controls_frames(self, n_frames: int, stale_ok: bool = False) -> dict[str, np.ndarray]:
        """The synthesizer controls of the next `n_frames` frames (and advance the note):
        f0_hz, amplitude [k], harmonic_distribution [k, H], noise_magnitudes [k, B]. For an
        engine that synthesises many notes in one `StreamingSynthBank` (then reverberate the mix
        with `held_impulse_response`); `render_frames` does both for one note."""
        k = int(n_frames)
        if k < 1:
            raise ValueError(f"n_frames: expected an integer >= 1, got {n_frames!r}")
        n = self.frame
        self._plan_until(n + k)  # (the level rules read the plan of the frames played)
        parts = []
        for b in range(n // self.decode_block, (n + k - 1) // self.decode_block + 1):
            block = self._block(b, stale_ok)
            lo, hi = max(n, b * self.decode_block), min(n + k, (b + 1) * self.decode_block)
            parts.append({key: v[lo - b * self.decode_block : hi - b * self.decode_block] for key, v in block.items()})
        if len(parts) == 1:
            controls = {key: v.astype(np.float32) for key, v in parts[0].items()}
        else:
            controls = {key: np.concatenate([p[key] for p in parts]).astype(np.float32) for key in parts[0]}
        levels = controls.pop("level_db")
        gain = np.zeros(k, np.float32)
        for i in range(k):
            gain[i], f0_factor = self._frame_gain(n + i, float(levels[i]))
            if f0_factor != 1.0:
                controls["f0_hz"][i] *= f0_factor
        controls["amplitude"] = controls["amplitude"] * gain
        controls["noise_magnitudes"] = controls["noise_magnitudes"] * gain[:, None]
        self.frame = n + k
        self._forget(n + k)
        return controls

    def _frame_gain(self, j: int, level_db: float) -> tuple[float, float]:
        """Frame j's gain on the decoded amplitudes (the note's gain and its level rules, and a
        live pressure) and the factor on its decoded f0 (a live bend); marks the note's end."""
        planned = self._plan[j]
        g = self._vca.gain_db(j, level_db + planned.gain_db, planned)
        gain = 0.0 if g is None else 10.0 ** ((planned.gain_db + g) / 20.0)
        live_gain, f0_factor = self._live_factors(j, planned) if self._live else (1.0, 1.0)
        gain *= live_gain
        self._rendered_live = (live_gain, f0_factor)
        if g is None and self._silent_from is None:
            ir = self.synth.reverb.impulse_response.size if self.synth is not None \
                and self.synth.reverb is not None else 0
            self._silent_from = self._samples(j + 1) + ir
        return gain, f0_factor

    def _live_factors(self, j: int, planned: _PlannedFrame) -> tuple[float, float]:
        """Frame j's factors from a live pressure (on its amplitudes) and a live bend (on its f0)."""
        gain = f0_factor = 1.0
        bend = self._live_value("bend", j)
        if bend is not None and bend != planned.bend_cents:
            f0_factor = 2.0 ** ((bend - planned.bend_cents) / 1200.0)
        pressure = self._live_value("pressure", j)
        if pressure is not None and pressure != planned.pressure_db:
            gain = 10.0 ** ((pressure - planned.pressure_db) / 20.0)
        return gain, f0_factor

    def retake_factors(self) -> tuple[float, float]:
        """For a live engine that renders the note's last frame again (`VoiceEngine.retake`)
        after a live bend or pressure set with `frame=note.frame - 1`: that frame's (gain, f0)
        factors, new against the ones it was rendered with (and rendered with from now on)."""
        j = self.frame - 1
        gain, f0_factor = self._live_factors(j, self._plan[j])
        old_gain, old_f0 = self._rendered_live
        # A live value replanned since (a note-off after the bend) is the plan's from the next
        # frame on: this frame keeps what it had.
        gain = gain if "pressure" in self._live else old_gain
        f0_factor = f0_factor if "bend" in self._live else old_f0
        self._rendered_live = (gain, f0_factor)
        return gain / old_gain, f0_factor / old_f0

    def urgent(self) -> bool:
        """True if the next frame's block is decoded neither for the current plan nor an older one."""
        b = self.frame // self.decode_block
        return b not in self._decoded and b not in self._stale

    def must_decode(self) -> bool:
        """True if the next frame cannot be played without decoding now (`controls_frame_into`
        with hold_ok holds the last frame's controls for at most HOLD_FRAMES_MAX frames)."""
        return self.urgent() and (self._last_row is None or self._holding >= HOLD_FRAMES_MAX)

    def controls_frame_into(self, f0_hz: np.ndarray, amplitude: np.ndarray, harmonic_distribution: np.ndarray,
                            noise_magnitudes: np.ndarray, row: int, gain: float = 1.0,
                            stale_ok: bool = False, hold_ok: bool = False) -> None:
        """`controls_frames(1)` written into row `row` of a bank's input arrays ([v, 1], [v, 1],
        [v, 1, H], [v, 1, B]), times `gain`: the same controls, without building a dict and
        copies for every voice every frame. stale_ok: play an older plan's block while this
        plan's is not decoded yet; hold_ok: with neither, hold the last frame's controls (for up
        to HOLD_FRAMES_MAX frames), so that a live engine can spread the decoding of many notes
        over a few frames."""
        n = self.frame
        self._plan_until(n + 1)
        self._before_last = (n, self._vca.copy(), self._last_row, self._holding, self._rendered_live,
                             self._silent_from)
        if hold_ok and self.urgent() and not self.must_decode():
            f0, amp, dist, noise, level = self._last_row
            self._holding += 1
        else:
            b = n // self.decode_block
            block = self._block(b, stale_ok)
            i = n - b * self.decode_block
            f0, amp, dist, noise, level = (block["f0_hz"][i], block["amplitude"][i], block["harmonic_distribution"][i],
                                           block["noise_magnitudes"][i], float(block["level_db"][i]))
            self._last_row = (f0, amp, dist, noise, level)
            self._holding = 0
        g, f0_factor = self._frame_gain(n, level)
        g *= gain
        f0_hz[row] = f0 * f0_factor
        amplitude[row] = amp * g
        harmonic_distribution[row] = dist
        np.multiply(noise, g, out=noise_magnitudes[row, 0])
        self.frame = n + 1
        self._forget(n + 1)

    def _forget(self, n: int) -> None:
        """Drop plan entries no future decoder window can read (every FORGET_EVERY frames)."""
        if n - self._forgot_at < FORGET_EVERY:
            return
        self._forgot_at = n
        # (From the block of the last frame: a retake of it decodes that block again.)
        keep = ((n - 1) // self.decode_block) * self.decode_block - self._context
        for f in [f for f in self._plan if f < keep]:
            del self._plan[f]
        for f in [f for f in self._snapshots if f < n - 1]:  # (n - 1: a retake of the last frame)
            del self._snapshots[f]
        for b in [b for b in self._decoded if (b + 1) * self.decode_block <= n]:
            del self._decoded[b]
        for b in [b for b in self._stale if (b + 1) * self.decode_block <= n]:
            del self._stale[b]

    def chunk_samples(self, n_frames: int) -> int:
        """Samples the next `n_frames` frames render."""
        return self.synth.chunk_samples(n_frames)

    def render_frames(self, n_frames: int) -> np.ndarray:
        """The next `n_frames` frames of audio: float32 [chunk_samples(n_frames)]."""
        start = self._samples(self.frame)
        c = self.controls_frames(n_frames)
        audio = self.synth.render_chunk(c["f0_hz"], c["amplitude"], c["harmonic_distribution"], c["noise_magnitudes"])
        if self._silent_from is not None:
            audio[max(0, self._silent_from - start):] = 0.0
        return audio


# ---------------------------------------------------------------------------------------------


def _check_time(option: str, t: Any) -> float:
    if isinstance(t, bool) or not isinstance(t, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(t)) or float(t) < 0.0:
        raise ValueError(f"{option}: expected a time in seconds >= 0, got {t!r}")
    return float(t)


def check_latent(option: str, values: Any) -> list[float]:
    """16 numbers in [-7, 7] (one number is repeated 16 times); ValueError naming `option`."""
    allowed = f"{LATENT_DIM} numbers in [{LATENT_MIN:g}, {LATENT_MAX:g}] (or one, repeated)"
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"{option}: expected {allowed}, got {values!r}") from None
    if len(out) == 1:
        out = out * LATENT_DIM
    if len(out) != LATENT_DIM or not all(math.isfinite(v) and LATENT_MIN <= v <= LATENT_MAX for v in out):
        raise ValueError(f"{option}: expected {allowed}, got {values!r}")
    return out


def render_held(generator, params: NoteParams, hold_s: float, sample_rate: int = 16000,
                bend: Iterable[tuple[float, float]] = (), latent_at: Iterable[tuple[float, Sequence[float]]] = (),
                chunk_frames: int = DEFAULT_CHUNK_FRAMES, grid_frame: int = 0) -> np.ndarray:
    """A note held for `hold_s` seconds, its release and its reverb tail: 1-D float32 at
    `sample_rate`, until it has rung out to exact silence (a decaying timbre may get there
    before its note-off). `bend`: (time_s, cents) pairs; `latent_at`: (time_s, 16 values)
    pairs; each takes effect at the frame nearest its time. Rendered by `HeldNote` in chunks of
    `chunk_frames` (split at events), exactly as a live voice would be. `grid_frame`: the
    note's first frame's place in the pattern of frame lengths (`HeldNote`): at 44.1 kHz a live
    voice started on frame j of the server's grid is the note rendered with grid_frame j % 5."""
    hold_s = _check_time("hold", hold_s)
    if isinstance(chunk_frames, bool) or not isinstance(chunk_frames, (int, np.integer)) or chunk_frames < 1:
        raise ValueError(f"chunk_frames: expected an integer >= 1, got {chunk_frames!r}")
    events: list[tuple[int, int, str, Any]] = []
    for t, values in latent_at:
        events.append((_frames(_check_time("latent_at", t)), 0, "latent", check_latent("latent_at", values)))
    for t, cents in bend:
        events.append((_frames(_check_time("bend", t)), 1, "bend", cents))
    off = _frames(hold_s)
    events.append((off, 2, "off", None))
    events.sort(key=lambda e: (e[0], e[1]))
    note = HeldNote(generator, params, sample_rate, grid_frame=grid_frame)
    limit = off + _frames(MAX_RELEASE_S)
    pieces = []
    i = 0
    while not note.finished:  # (a chunk may end after the note has rung out: trimmed below)
        while i < len(events) and events[i][0] <= note.frame:
            _, _, kind, value = events[i]
            if kind == "latent":
                note.set_latent(value)
            elif kind == "bend":
                note.set_bend(value)
            else:
                note.note_off()
            i += 1
        if note.frame >= limit:
            raise RuntimeError(f"the note did not end within {MAX_RELEASE_S:g} s of its note-off")
        k = int(chunk_frames)
        if i < len(events):
            k = min(k, events[i][0] - note.frame)
        pieces.append(note.render_frames(k))
    audio = np.concatenate(pieces)
    end = note._silent_from + int(round(SILENT_END_S * note.sample_rate))
    if len(audio) < end:
        audio = np.concatenate([audio, np.zeros(end - len(audio), np.float32)])
    return audio[:end]
