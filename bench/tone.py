"""A numpy stand-in for the generator (no TensorFlow, no weights), for the benchmark and the tests.

`ToneGenerator` has the real generator's call shape (`render(params, sample_rate)` -> 4 s of
1-D float32, `model_version`), so the live server, its render processes and the HTTP API run
with it unchanged. Factories for `serve --generator-factory` (and `RenderPool`):

    bench.tone:make        the harmonic tone, rendered at once
    bench.tone:make_sine   a steady sine of peak velocity / 127 / 2 (a level a test can check exactly)
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter

import numpy as np

from synth.params import NoteParams

HARMONICS = ((1, 1.0), (2, 0.3), (3, 0.15))  # (partial number, amplitude)
SINE = ((1, 1.0),)


def midi_hz(pitch: float) -> float:
    return 440.0 * 2.0 ** ((pitch - 69) / 12)


class ToneGenerator:
    """4 s of a harmonic tone at the note's pitch: 1 ms attack, then an exponential decay with
    time constant `decay_s` (math.inf: none); peak level about velocity / 127 / 2.

    The partials above Nyquist are left out. The latent knob 0 shifts the level a little so that
    timbres differ; `renders` counts calls by note key; each render sleeps `delay_s` first (a
    render that takes time).
    """

    model_version = "test-tone-1"

    def __init__(self, delay_s: float = 0.02, harmonics: tuple[tuple[int, float], ...] = HARMONICS,
                 decay_s: float = 3.0):
        self.delay_s = delay_s
        self.harmonics = harmonics
        self.decay_s = decay_s
        self.renders: Counter = Counter()
        self._lock = threading.Lock()

    def render(self, params: NoteParams, sample_rate: int) -> np.ndarray:
        with self._lock:
            self.renders[params.key] += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        n = 4 * sample_rate
        t = np.arange(n) / sample_rate
        f0 = midi_hz(params.pitch)
        tone = np.zeros(n)
        for k, a in self.harmonics:
            if k * f0 < sample_rate / 2:
                tone += a * np.sin(2 * np.pi * k * f0 * t)
        env = np.minimum(1.0, t / 0.001) * np.exp(-t / self.decay_s)
        level = 0.5 * params.velocity / 127 * (1 - 0.02 * params.latent_sample[0])
        return (level * env * tone / sum(a for _, a in self.harmonics)).astype(np.float32)


def make() -> ToneGenerator:
    """The harmonic tone without a render delay."""
    return ToneGenerator(delay_s=0.0)


def make_sine() -> ToneGenerator:
    """A steady sine (no decay) without a render delay: its peak is velocity / 127 / 2."""
    return ToneGenerator(delay_s=0.0, harmonics=SINE, decay_s=math.inf)
