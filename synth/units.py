"""Units and rates shared by the whole package: one home for each (see issue 12's clean-up).

* SAMPLE_RATE: the rate of the data set's audio, of training, of evaluation and of the original
  API's `get_prediction` default (16 kHz, as NSynth).
* midi_to_hz / hz_to_midi: equal temperament, A4 = MIDI 69 = 440 Hz, numpy (any shape, float64).
  The TensorFlow twins for graphs are `synth.core.midi_to_hz_tf` / `hz_to_midi_tf`.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000


def midi_to_hz(midi):
    """MIDI note number (A4 = 69) -> frequency in Hz. Any shape, float64 for array input."""
    return 440.0 * np.power(2.0, (np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


def hz_to_midi(frequency_hz):
    """Frequency in Hz -> MIDI note number (fractional). Any shape; 0 Hz maps to -inf."""
    with np.errstate(divide="ignore"):
        return 69.0 + 12.0 * np.log2(np.asarray(frequency_hz, dtype=np.float64) / 440.0)
