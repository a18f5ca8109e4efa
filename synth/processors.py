"""DDSP processors: network outputs -> physical controls (`get_controls`) -> audio (`get_signal`).

`DDSPSynth` is the decoder's synthesiser: harmonic oscillator bank + filtered noise, through a
reverb whose impulse response is a learned Keras weight. Its TensorFlow path is differentiable
and renders at any sample rate (training uses 16 kHz); `render_numpy` renders one note with the
fast numpy path (`synth.fast_render`) at the sound card's rate.

Band limit: the model only ever hears 16 kHz audio, so every control is band-limited to the
training Nyquist (`MAX_FREQUENCY_HZ`, 8 kHz): harmonics at or above it are removed before the
harmonic distribution is renormalised, and noise bands span 0..8 kHz. A 48 kHz render is then
the same sound as the 16 kHz one, not an extrapolation to frequencies the model never heard.
"""

from __future__ import annotations

import threading

import keras
import numpy as np
import tensorflow as tf

from synth import core
from synth.fast_render import NOISE_INITIAL_BIAS, FastRenderer, reverb_tap_mask


class Harmonic:
    """Harmonic oscillator bank: amplitude, harmonic distribution and f0 -> tone."""

    def __init__(self, n_harmonics: int = core.N_HARMONICS,
                 max_frequency_hz: float = core.MAX_FREQUENCY_HZ):
        self.n_harmonics = int(n_harmonics)
        self.max_frequency_hz = float(max_frequency_hz)

    def get_controls(self, amplitude, harmonic_distribution, f0_hz) -> dict:
        """Raw network outputs -> controls.

        amplitude: [batch, n_frames, 1] raw; harmonic_distribution: [batch, n_frames,
        n_harmonics] raw; f0_hz: [batch, n_frames, 1] in Hz. Returns {'amplitude': exp_sigmoid,
        [batch, n_frames, 1]; 'harmonic_distribution': exp_sigmoid, harmonics at or above
        max_frequency_hz removed, renormalised to sum 1, [batch, n_frames, n_harmonics];
        'f0_hz': [batch, n_frames, 1]}.
        """
        f0_hz = tf.convert_to_tensor(f0_hz, dtype=tf.float32)
        distribution = core.exp_sigmoid(harmonic_distribution)
        distribution = core.remove_above_frequency(f0_hz, distribution, self.max_frequency_hz)
        return {
            "amplitude": core.exp_sigmoid(amplitude),
            "harmonic_distribution": core.normalize_harmonics(distribution),
            "f0_hz": f0_hz,
        }

    def get_signal(self, controls: dict, n_samples: int, sample_rate: float):
        """Controls -> [batch, n_samples] float32 at `sample_rate`."""
        return core.harmonic_synthesis(controls["f0_hz"], controls["amplitude"],
                                       controls["harmonic_distribution"], n_samples, sample_rate,
                                       self.max_frequency_hz)


class FilteredNoise:
    """Noise shaped by `n_bands` band magnitudes spanning 0..max_frequency_hz."""

    def __init__(self, n_bands: int = core.N_NOISE_BANDS, initial_bias: float = NOISE_INITIAL_BIAS,
                 max_frequency_hz: float = core.MAX_FREQUENCY_HZ):
        self.n_bands = int(n_bands)
        self.initial_bias = float(initial_bias)
        self.max_frequency_hz = float(max_frequency_hz)

    def get_controls(self, noise_magnitudes) -> dict:
        """[batch, n_frames, n_bands] raw -> {'noise_magnitudes': linear, same shape}."""
        raw = tf.convert_to_tensor(noise_magnitudes, dtype=tf.float32)
        return {"noise_magnitudes": core.exp_sigmoid(raw + self.initial_bias)}

    def get_signal(self, controls: dict, n_samples: int, sample_rate: float,
                   seed: int | None = None):
        """Controls -> [batch, n_samples] float32 at `sample_rate`."""
        return core.filtered_noise(controls["noise_magnitudes"], n_samples, sample_rate,
                                   self.max_frequency_hz, seed)


@keras.saving.register_keras_serializable(package="synth")
class Reverb(keras.layers.Layer):
    """Reverb with a learned impulse response (a Keras weight) at `sample_rate`.

    The weight is the wet part only: its first tap is held at 0 and the dry signal is added, so
    a zero impulse response is no reverb. At another sample rate the response is applied as
    the same band-limited filter (see `core.fft_convolve`), so it colours the sound the same way.
    """

    def __init__(self, reverb_length: int = core.REVERB_LENGTH,
                 sample_rate: int = core.TRAIN_SAMPLE_RATE, decay_db_per_s: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.reverb_length = int(reverb_length)
        self.sample_rate = int(sample_rate)
        # A fixed exponential envelope on the learned response (0: none). Left free, the learned
        # response does not decay: the shipped one keeps its energy flat over its whole second
        # (-8 dB of its total after 10 ms, still -15 dB at 0.99 s), so no note could fall 30 dB
        # within 1 s of its note-off. With an envelope, training learns the colour of the
        # reverb and the envelope makes it end, as the data's (FluidSynth's) reverb does.
        self.decay_db_per_s = float(decay_db_per_s)
        # DDSP's initialisation: almost no reverb, random so that gradients differ per tap.
        self.ir = self.add_weight(
            name="impulse_response", shape=(self.reverb_length,),
            initializer=keras.initializers.RandomNormal(mean=0.0, stddev=1e-6), trainable=True)
        # The dry-tap mask and the decay envelope in one fixed factor.
        self._dry_tap_mask = reverb_tap_mask(self.reverb_length, self.sample_rate, self.decay_db_per_s)

    def impulse_response(self):
        """[reverb_length] float32 tensor at `self.sample_rate`, first tap 0."""
        return tf.convert_to_tensor(self.ir) * self._dry_tap_mask

    def impulse_response_numpy(self) -> np.ndarray:
        """[reverb_length] float32 numpy copy of `impulse_response()`."""
        return tf.convert_to_tensor(self.ir).numpy().astype(np.float32) * self._dry_tap_mask

    def get_signal(self, audio, sample_rate: float | None = None):
        """[batch, n_samples] dry -> [batch, n_samples] dry + wet at `sample_rate`."""
        return core.apply_reverb(audio, self.impulse_response(), self.sample_rate,
                                 self.sample_rate if sample_rate is None else int(sample_rate))

    def build(self, input_shape=None):
        # The weight is made in __init__ (its shape does not depend on the input).
        self.built = True

    def call(self, audio):
        return self.get_signal(audio)

    def get_config(self):
        return {**super().get_config(), "reverb_length": self.reverb_length,
                "sample_rate": self.sample_rate, "decay_db_per_s": self.decay_db_per_s}


@keras.saving.register_keras_serializable(package="synth")
class DDSPSynth(keras.layers.Layer):
    """Harmonic + filtered noise -> reverb: the DDSP decoder's synthesiser.

    Controls are at `frame_rate`; audio at any sample rate (the model trains at `sample_rate`).
    """

    def __init__(self, n_harmonics: int = core.N_HARMONICS, n_noise_bands: int = core.N_NOISE_BANDS,
                 reverb_length: int = core.REVERB_LENGTH, sample_rate: int = core.TRAIN_SAMPLE_RATE,
                 frame_rate: int = core.FRAME_RATE, reverb_decay_db_per_s: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.n_harmonics = int(n_harmonics)
        self.n_noise_bands = int(n_noise_bands)
        self.sample_rate = int(sample_rate)
        self.frame_rate = int(frame_rate)
        max_frequency_hz = self.sample_rate / 2
        self.harmonic = Harmonic(self.n_harmonics, max_frequency_hz)
        self.noise = FilteredNoise(self.n_noise_bands, max_frequency_hz=max_frequency_hz)
        self.reverb = Reverb(reverb_length, self.sample_rate, reverb_decay_db_per_s, name="reverb")
        # One numpy renderer per thread: renderers reuse work buffers between notes.
        self._render_state = threading.local()

    def get_controls(self, amplitude, harmonic_distribution, noise_magnitudes, f0_hz) -> dict:
        """Raw network outputs -> physical controls (a dict of tensors).

        amplitude [batch, n_frames, 1], harmonic_distribution [batch, n_frames, n_harmonics],
        noise_magnitudes [batch, n_frames, n_noise_bands] (raw), f0_hz [batch, n_frames, 1] (Hz).
        Returns {'amplitude', 'harmonic_distribution', 'f0_hz', 'noise_magnitudes'}, same shapes.
        """
        return {**self.harmonic.get_controls(amplitude, harmonic_distribution, f0_hz),
                **self.noise.get_controls(noise_magnitudes)}

    def n_samples(self, n_frames: int, sample_rate: int | None = None) -> int:
        """Samples rendered for `n_frames` frames at `sample_rate` (default: the training rate)."""
        return core.n_samples_for(n_frames, sample_rate or self.sample_rate, self.frame_rate)

    def get_signal(self, controls: dict, n_samples: int | None = None,
                   sample_rate: int | None = None, seed: int | None = None):
        """Controls -> [batch, n_samples] float32 (harmonic + noise, then reverb).

        Defaults: the training sample rate, and n_frames * sample_rate // frame_rate samples.
        Differentiable in the controls and in the reverb's impulse response.
        """
        sample_rate = int(sample_rate or self.sample_rate)
        if n_samples is None:
            n_samples = self.n_samples(int(controls["f0_hz"].shape[1]), sample_rate)
        dry = (self.harmonic.get_signal(controls, n_samples, sample_rate)
               + self.noise.get_signal(controls, n_samples, sample_rate, seed))
        return self.reverb.get_signal(dry, sample_rate)

    def build(self, *input_shapes):
        # All weights (the reverb's) are made in __init__; nothing depends on input shapes.
        self.built = True

    def call(self, amplitude, harmonic_distribution, noise_magnitudes, f0_hz):
        """Raw network outputs -> [batch, n_frames * sample_rate // frame_rate] at the training rate."""
        controls = self.get_controls(amplitude, harmonic_distribution, noise_magnitudes, f0_hz)
        return self.get_signal(controls)

    def render_numpy(self, controls: dict, sample_rate: int,
                     rng: np.random.Generator | None = None) -> np.ndarray:
        """One note's controls (numpy arrays, as from `get_controls`, batch of 1 or none) ->
        float32 [n_frames * sample_rate // frame_rate], the same sound as `get_signal`.

        Fast path for live use: numpy only, apart from reading the reverb weight; the impulse
        response's spectra are cached and rebuilt only when the weight changes. `rng` draws the
        noise (seed it for a repeatable note). Safe to call from several threads at once.
        """
        ir = self.reverb.impulse_response_numpy()
        renderer = getattr(self._render_state, "renderer", None)
        if renderer is None or not np.array_equal(renderer.impulse_response, ir):
            renderer = FastRenderer(ir, self.sample_rate, self.frame_rate, self.sample_rate / 2)
            self._render_state.renderer = renderer
        return renderer.render_controls(controls, sample_rate, rng)

    def get_config(self):
        return {**super().get_config(), "n_harmonics": self.n_harmonics,
                "n_noise_bands": self.n_noise_bands, "reverb_length": self.reverb.reverb_length,
                "sample_rate": self.sample_rate, "frame_rate": self.frame_rate,
                "reverb_decay_db_per_s": self.reverb.decay_db_per_s}
