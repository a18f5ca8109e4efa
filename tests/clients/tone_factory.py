"""A generator for `serve --generator-factory tone_factory:make` in subprocess tests (no TensorFlow).

4 s of sine at the note's pitch, level velocity / 127 / 2: enough to tell notes apart.
"""

from __future__ import annotations

import numpy as np

from synth.params import NoteParams


class Tone:
    model_version = "clients-test-tone"

    def render(self, params: NoteParams, sample_rate: int) -> np.ndarray:
        t = np.arange(4 * sample_rate) / sample_rate
        f0_hz = 440.0 * 2 ** ((params.pitch - 69) / 12)
        return (0.5 * params.velocity / 127 * np.sin(2 * np.pi * f0_hz * t)).astype(np.float32)


def make() -> Tone:
    return Tone()
