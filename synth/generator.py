"""The generator: note parameters -> 4 s of audio, through the three trained stages.

    NoteParams -> conditioning (21) + latent (16)
               -> z_generator        z on 50 coarse steps (standardised)
               -> f0_ld_generator    loudness [1000] dB, f0 [1000] Hz on the requested pitch
               -> DDSP decoder       synthesizer controls per frame (250 frames/s)
               -> numpy synthesis    at the requested sample rate (harmonics + noise + reverb)

The neural part (all three networks, the control scaling of `DDSPSynth.get_controls`) runs in
numpy (`synth.numpy_nets`, from the Keras models' weights): 4.5 ms a note on the 2-core CPU,
any batch size, nothing to compile. The TensorFlow graph of the same part (`run_neural_tf`) is
the reference it is tested against, and what training uses. The audio is rendered by
`DDSPSynth.render_numpy` (numpy only, at any sample rate, band-limited to the training Nyquist).

Three inference-time choices, each documented where it lives:

* the performer's 16 `latent_sample` knobs are mixed into the VAE latent by a fixed orthogonal
  (Hadamard) matrix, so that every knob changes the sound (`synth.models.knobs_to_latent`);
* quality-tag guidance (`tag_guidance_z`, `tag_guidance_loudness` and `guided_tags` in
  f0_ld_generator/config.json; 2 on the timbre for five tags in the shipped weights, see
  `synth.models.generate_curves`): the generators also run without those tags and the result
  moves that many times the tagged-minus-untagged difference, which makes the tags audible.
* envelope rules (`synth.models.shape_envelope` on the loudness curve, `synth.envelope` on the
  rendered sound): a release never swells above the held note, a fast_decay note decays and a
  long_release note keeps something to release, whatever other tags it carries.

Public interface (the live server relies on exactly this):

* `get_generator(checkpoint_dir=None) -> Generator` - process-wide, created lazily once per
  directory under a lock (concurrent first calls load the models once).
* `Generator.model_version` - a hash of the weight and config files and of INFERENCE_VERSION
  (part of cache keys).
* `Generator.render(params, sample_rate=16000)` - 1-D float32, 4 s, peak <= 1. Thread-safe.
* `Generator.render_batch(list_of_params, sample_rate)` - the same for many notes, on two threads.
* `Generator.controls(params)` - the intermediate curves (z, f0_hz, loudness_db and the
  synthesizer controls) for evaluation and plots.
* `Generator.run_neural(notes)` and `Generator.render_controls(controls, sample_rate, params)` -
  the two halves of `render_batch` (networks, then synthesis), for timing each;
  `Generator.run_neural_tf(notes)` - the networks through TensorFlow (the reference).
* `get_prediction(inputs, sample_rate=16000)` - the original system's call: a dict as in the
  seed README; invalid input raises `NoteParams`' ValueError.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping, Sequence

import numpy as np

from synth import checkpoint as CK
from synth import models as M
from synth.envelope import apply_envelope_tags
from synth.fast_render import (MAX_FREQUENCY_HZ, NOISE_INITIAL_BIAS, TRAIN_SAMPLE_RATE, FastRenderer,
                               single_threaded_blas)
from synth.numpy_nets import NumpyDecoder, NumpyNetworks
from synth.params import LATENT_DIM, QUALITIES, NoteParams

log = logging.getLogger("synth.generator")

DEFAULT_CHECKPOINT_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "checkpoints")
N_SECONDS = 4.0
PEAK_LIMIT = 1.0
# Notes per call of `run_neural` at most (its outputs for 64 notes take about 20 MB).
BATCH_CHUNK = 64
# XLA for the TensorFlow reference graph (`run_neural_tf`); SOUND_GENERATOR_JIT=0 turns it off.
JIT_DEFAULT = os.environ.get("SOUND_GENERATOR_JIT", "1") != "0"
# Bumped whenever inference code changes what the same weights render (part of model_version, so
# the server's persisted note caches never serve a note rendered by older rules).
INFERENCE_VERSION = "6: the networks in numpy (float32 rounding differs from XLA's)"


def _hash_files(paths: Sequence[str], extra: str = "") -> str:
    h = hashlib.sha256(extra.encode())
    for path in sorted(paths):
        h.update(os.path.basename(os.path.dirname(path)).encode() + b"/" + os.path.basename(path).encode())
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:16]


def model_version_of(checkpoint_dir: str | None = None) -> str:
    """`Generator.model_version` for `checkpoint_dir` without loading TensorFlow."""
    from synth.checkpoint import model_files

    return _hash_files(model_files(os.path.abspath(checkpoint_dir or DEFAULT_CHECKPOINT_DIR)), INFERENCE_VERSION)


class Generator:
    """The three trained stages, loaded from a checkpoint directory (see module doc)."""

    def __init__(self, checkpoint_dir: str | None = None, jit: bool = JIT_DEFAULT):
        single_threaded_blas()
        self.checkpoint_dir = os.path.abspath(checkpoint_dir or DEFAULT_CHECKPOINT_DIR)
        ddsp_dir, z_dir, f_dir = CK.stage_dirs(self.checkpoint_dir)
        ddsp_conf, f_conf = M.read_config(ddsp_dir), M.read_config(f_dir)
        z_conf = M.read_config(z_dir)
        # Where the knobs' cube lands in the VAE latent (synth.models.knob_region).
        self.knob_radius = float(z_conf.get("knob_radius", M.KNOB_RADIUS))
        # The output calibration (`sound-generator calibrate`): a gain on the synthesizer's
        # amplitude and noise controls, so that every path that renders from controls (one-shot
        # notes, held notes, the live voices) plays at the calibrated level.
        self.output_gain_db = float(ddsp_conf.get("output_gain_db", 0.0))
        self.output_gain = float(10.0 ** (self.output_gain_db / 20.0))
        cfg = M.ModelConfig.from_dict(ddsp_conf["model"])
        self.config = cfg
        stats = ddsp_conf["stats"]
        self._z_mean = np.asarray(stats["z_mean"], np.float32)
        self._z_std = np.asarray(stats["z_std"], np.float32)
        self._ld_min, self._ld_max = float(f_conf["ld_min"]), float(f_conf["ld_max"])

        self.model_version = _hash_files(CK.model_files(self.checkpoint_dir), INFERENCE_VERSION)

        # Guidance strengths for the timbre (z) and the loudness curve; configs with one
        # "tag_guidance" use it for both.
        g_all = float(f_conf.get("tag_guidance", 1.0))
        self.tag_guidance_z = float(f_conf.get("tag_guidance_z", g_all))
        self.tag_guidance_loudness = float(f_conf.get("tag_guidance_loudness", g_all))
        # The tags guidance strengthens ("guided_tags"; default all of them); the others pass as trained.
        self.guided_tags = list(f_conf.get("guided_tags", QUALITIES))

        # Inference needs no TensorFlow: the networks run in numpy (synth.numpy_nets) from the
        # weight files read with h5py, and the synthesis reads the learned reverb from its .npz.
        # A process that only plays (render, voice and networks processes) so starts in about a
        # second and stays 0.5 GB smaller. The Keras models (`decoder`, `synth`, `z_decoder`,
        # `f0_ld`) load on first use, for the TensorFlow reference (`run_neural_tf`) and tools.
        self._jit = bool(jit)
        self._tf_graph = None
        self._tf_lock = threading.RLock()  # (the graph's first trace loads the Keras parts)
        self._keras: dict[str, Any] | None = None
        weights = CK.load_network_weights(ddsp_dir, z_dir, f_dir, cfg)
        self.impulse_response = CK.load_impulse_response(ddsp_dir, cfg)
        self._renderers = threading.local()
        self.numpy_decoder = NumpyDecoder(weights["decoder"], cfg, NOISE_INITIAL_BIAS, MAX_FREQUENCY_HZ,
                                          self.output_gain)
        self.networks = NumpyNetworks(
            weights["z_decoder"], weights["f0_ld"], self.numpy_decoder, z_mean=self._z_mean, z_std=self._z_std,
            ld_min=self._ld_min, ld_max=self._ld_max, knob_radius=self.knob_radius,
            guidance_z=self.tag_guidance_z, guidance_loudness=self.tag_guidance_loudness,
            guided_tags=self.guided_tags)

    def _keras_parts(self) -> dict[str, Any]:
        """The Keras models of the checkpoint (TensorFlow), loaded on first use."""
        with self._tf_lock:
            if self._keras is None:
                ddsp_dir, z_dir, f_dir = CK.stage_dirs(self.checkpoint_dir)
                decoder, synth = CK.load_decoder_and_synth(ddsp_dir, self.config)
                _, z_decoder = CK.load_z_generator(z_dir, self.config, posterior=False)
                self._keras = {"decoder": decoder, "synth": synth, "z_decoder": z_decoder,
                               "f0_ld": CK.load_f0_ld(f_dir, self.config)}
            return self._keras

    @property
    def decoder(self):
        """The DDSP decoder as a Keras model (loads TensorFlow)."""
        return self._keras_parts()["decoder"]

    @property
    def synth(self):
        """The synthesizer (`processors.DDSPSynth`, a Keras layer; loads TensorFlow)."""
        return self._keras_parts()["synth"]

    @property
    def z_decoder(self):
        """The z_generator's decoder as a Keras model (loads TensorFlow)."""
        return self._keras_parts()["z_decoder"]

    @property
    def f0_ld(self):
        """The f0_ld_generator as a Keras model (loads TensorFlow)."""
        return self._keras_parts()["f0_ld"]

    def render_numpy(self, controls: Mapping[str, np.ndarray], sample_rate: int,
                     rng: np.random.Generator | None = None) -> np.ndarray:
        """One note's synthesizer controls -> float32 audio at `sample_rate`, as
        `DDSPSynth.render_numpy` renders it, without TensorFlow. Thread-safe (a renderer per
        thread: renderers reuse work buffers)."""
        renderer = getattr(self._renderers, "renderer", None)
        if renderer is None:
            renderer = self._renderers.renderer = FastRenderer(self.impulse_response, TRAIN_SAMPLE_RATE,
                                                               M.DECODER_FRAME_RATE, MAX_FREQUENCY_HZ)
        return renderer.render_controls(controls, sample_rate, rng)

    def _tf_neural(self):
        """The TensorFlow graph of the neural half (traced once, on first use)."""
        import tensorflow as tf

        with self._tf_lock:
            if self._tf_graph is not None:
                return self._tf_graph
            cfg = self.config
            z_mean, z_std = tf.constant(self._z_mean), tf.constant(self._z_std)
            ld_min, ld_max = self._ld_min, self._ld_max
            knob_radius, out_gain = self.knob_radius, self.output_gain
            g_z, g_ld, guided = self.tag_guidance_z, self.tag_guidance_loudness, self.guided_tags
            decoder, z_decoder, f0_ld, synth = self.decoder, self.z_decoder, self.f0_ld, self.synth

            # XLA fuses the many small element-wise ops (control scaling, bounds, upsampling).
            @tf.function(input_signature=[tf.TensorSpec([None, M.COND_DIM], tf.float32),
                                          tf.TensorSpec([None, LATENT_DIM], tf.float32),
                                          tf.TensorSpec([None], tf.float32)],
                         jit_compile=self._jit)
            def neural(cond, latent, pitch):
                lat = M.squash_latent(M.knob_region(M.knobs_to_latent(latent), knob_radius))
                z_norm, ld, cents_raw = M.generate_curves(z_decoder, f0_ld, lat, cond, ld_min, ld_max, g_z, g_ld,
                                                           guided_tags=guided)
                cents = M.cents_from_raw(cents_raw)
                f0 = M.tf_midi_to_hz(pitch[:, None] + cents / 100.0)
                z_enc = z_norm * z_std + z_mean
                z_dec = M.tf_upsample(z_enc, M.N_DECODER_FRAMES)
                f0d, ldd = M.to_decoder_rate(f0), M.to_decoder_rate(ld)
                raw = decoder([M.scale_f0(f0d)[..., None], M.scale_ld(ldd)[..., None], z_dec], training=False)
                amp, harm, noise = M.split_decoder_output(raw, cfg)
                controls = synth.get_controls(amp, harm, noise, f0d[..., None])
                controls = M.scale_output(controls, out_gain)
                return {"controls": controls, "z": M.tf_upsample(z_enc, M.N_FRAMES), "f0_hz": f0,
                        "loudness_db": ld, "cents": cents}

            self._tf_graph = neural
            return neural

    # -----------------------------------------------------------------------------------------

    @staticmethod
    def _inputs(notes: Sequence[NoteParams]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cond = np.stack([M.condition_vector(p) for p in notes]).astype(np.float32)
        latent = np.asarray([p.latent_sample for p in notes], np.float32).reshape(len(notes), LATENT_DIM)
        pitch = np.asarray([p.pitch for p in notes], np.float32)
        return cond, latent, pitch

    def run_neural(self, notes: Sequence[NoteParams], decode_from: int = 0) -> dict[str, Any]:
        """The neural half for up to BATCH_CHUNK notes, in numpy (`synth.numpy_nets`).

        Returns, for n notes: `controls` (the synthesizer controls as `render_controls` takes
        them, batched: amplitude [n, 500, 1], harmonic_distribution [n, 500, n_harmonics],
        noise_magnitudes [n, 500, n_noise_bands], f0_hz [n, 500, 1] at the decoder's 125
        frames/s), `z` [n, 1000, 16], `f0_hz`, `loudness_db` and `cents` [n, 1000] (250 frames/s).
        decode_from: the controls of the decoder frames from this one on only ([n, 500 -
        decode_from, ...]; the decoder runs over them and its context, not the whole note: what
        a timbre change of a held note needs, `synth.hold.Timbre`).
        Raises ValueError for none or more than BATCH_CHUNK notes.
        """
        n = len(notes)
        if not 1 <= n <= BATCH_CHUNK:
            raise ValueError(f"notes: 1..{BATCH_CHUNK} notes per network call, got {n}")
        return self.networks(*self._inputs(notes), decode_from=decode_from)

    def run_neural_tf(self, notes: Sequence[NoteParams]) -> dict[str, Any]:
        """`run_neural` through the TensorFlow graph of `synth.models` (the reference the numpy
        networks are tested against; traced, and compiled by XLA, on first use)."""
        import tensorflow as tf

        n = len(notes)
        if not 1 <= n <= BATCH_CHUNK:
            raise ValueError(f"notes: 1..{BATCH_CHUNK} notes per network call, got {n}")
        cond, latent, pitch = self._inputs(notes)
        out = self._tf_neural()(tf.constant(cond), tf.constant(latent), tf.constant(pitch))
        return {
            "controls": {k: v.numpy() for k, v in out["controls"].items()},
            **{k: out[k].numpy() for k in ("z", "f0_hz", "loudness_db", "cents")},
        }

    def render_controls(self, controls: Mapping[str, np.ndarray], sample_rate: int,
                        params: NoteParams | None = None) -> np.ndarray:
        """The numpy half for one note: its controls (one note of `run_neural`'s `controls`,
        the batch axis dropped: [500, ...]) -> 1-D float32, 4 s at `sample_rate`, peak <= 1.
        `params` seeds the noise and applies the envelope tags; None: seed 0, no tags."""
        # The noise draw is seeded by the note's key: the same note renders the same samples in
        # every call and process (cache-friendly, testable).
        rng = np.random.default_rng(int(params.key[:16], 16) if params is not None else 0)
        audio = np.asarray(self.render_numpy(controls, sample_rate, rng=rng), np.float32).reshape(-1)
        n = int(round(N_SECONDS * sample_rate))
        if len(audio) != n:
            raise RuntimeError(f"render_numpy returned {len(audio)} samples, expected {n}")
        if not np.all(np.isfinite(audio)):
            raise FloatingPointError("the generator produced non-finite audio")
        if params is not None:
            audio = apply_envelope_tags(audio, sample_rate, "fast_decay" in params.qualities,
                                        "long_release" in params.qualities)
        peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
        if peak > PEAK_LIMIT:
            # The data set peaks near -9 dBFS, so this is rare; scaling keeps the waveform intact.
            audio *= np.float32(PEAK_LIMIT / peak)
        return audio

    @staticmethod
    def _check_rate(sample_rate: int) -> int:
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
            raise ValueError(f"sample_rate: expected an integer number of Hz, got {sample_rate!r}")
        if not 8000 <= int(sample_rate) <= 192000:
            raise ValueError(f"sample_rate: expected 8000..192000 Hz, got {sample_rate!r}")
        return int(sample_rate)

    def controls(self, params: NoteParams, decode_from: int = 0) -> dict[str, np.ndarray]:
        """Intermediate curves of one note: z [1000, 16], f0_hz [1000], loudness_db [1000],
        cents [1000] (250 frames/s, as the data set) and the synthesizer controls `synth_*`
        (amplitude, harmonic_distribution, noise_magnitudes, f0_hz; each [500, ...] at the
        decoder's 125 frames/s; from decoder frame `decode_from` on, `controls_from`)."""
        out = self.run_neural([params], decode_from)
        result = {k: out[k][0] for k in ("z", "f0_hz", "loudness_db", "cents")}
        result["controls_from"] = int(decode_from)
        result.update({f"synth_{k}": v[0] for k, v in out["controls"].items()})
        return result

    def render(self, params: NoteParams, sample_rate: int = 16000) -> np.ndarray:
        """One note: 1-D float32, 4 s at `sample_rate`, peak <= 1."""
        return self.render_batch([params], sample_rate)[0]

    def _render_one(self, params: NoteParams, sample_rate: int) -> np.ndarray:
        out = self.run_neural([params])
        return self.render_controls({k: v[0] for k, v in out["controls"].items()}, sample_rate, params)

    def render_batch(self, notes: Sequence[NoteParams], sample_rate: int = 16000) -> list[np.ndarray]:
        """Many notes, each through the networks and the synthesis on a small thread pool."""
        sample_rate = self._check_rate(sample_rate)
        notes = list(notes)
        for p in notes:
            if not isinstance(p, NoteParams):
                raise ValueError(f"notes: expected NoteParams, got {p!r}")
        if len(notes) == 1:
            return [self._render_one(notes[0], sample_rate)]
        # numpy releases the GIL in its matrix products, FFTs and large array operations, so two
        # threads each rendering whole notes keep two cores busy. (Measured, 440 notes at 48 kHz
        # on the 2-core machine: 4.8 s, against 5.9 s with the networks on the calling thread
        # feeding a pool that only synthesised, and 7.1 s on one thread.)
        pool = _dsp_pool()
        return list(pool.map(lambda p: self._render_one(p, sample_rate), notes))


_LOCK = threading.Lock()
_GENERATORS: dict[str, Generator] = {}
_POOL: ThreadPoolExecutor | None = None


def _dsp_pool() -> ThreadPoolExecutor:
    global _POOL
    with _LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1)),
                                       thread_name_prefix="synth-render")
        return _POOL


def get_generator(checkpoint_dir: str | None = None) -> Generator:
    """The process-wide generator for `checkpoint_dir` (default: the shipped checkpoints/)."""
    key = os.path.abspath(checkpoint_dir or DEFAULT_CHECKPOINT_DIR)
    gen = _GENERATORS.get(key)
    if gen is not None:
        return gen
    with _LOCK:
        gen = _GENERATORS.get(key)
        if gen is None:
            log.info("loading generator from %s", key)
            gen = Generator(key)
            _GENERATORS[key] = gen
    return gen


def get_prediction(inputs: Mapping[str, Any], sample_rate: int = 16000) -> np.ndarray:
    """The original system's API: `inputs` as in its README -> 1-D float32 audio, 4 s.

    Invalid input raises the ValueError of `NoteParams.from_dict` (before any model loads).
    """
    params = NoteParams.from_dict(inputs)
    return get_generator().render(params, sample_rate=sample_rate)


_AUTOENCODERS: dict[str, Any] = {}


def reconstruct(audio: np.ndarray, f0_hz: np.ndarray, loudness_db: np.ndarray,
                checkpoint_dir: str | None = None, batch_size: int = 16) -> np.ndarray:
    """The DDSP autoencoder on real notes (for evaluation): audio -> encoder z -> decoder -> audio.

    audio [N, 64000] at 16 kHz, f0_hz and loudness_db [N, 1000] (the data set's curves, as
    `synth.data.load_split` gives them). Returns [N, 64000] float32 at 16 kHz, the decoder's
    rendering of each note from its own f0, loudness and encoded timbre.
    """
    import tensorflow as tf

    from synth.checkpoint import DDSPParts

    key = os.path.abspath(checkpoint_dir or DEFAULT_CHECKPOINT_DIR)
    with _LOCK:
        if key not in _AUTOENCODERS:
            parts = DDSPParts(CK.stage_dirs(key)[0])
            fm = np.asarray(parts.stats["feature_mean"], np.float32)
            fs = np.asarray(parts.stats["feature_std"], np.float32)

            @tf.function(input_signature=[tf.TensorSpec([None, M.N_FRAMES * M.HOP], tf.float32),
                                          tf.TensorSpec([None, M.N_FRAMES], tf.float32),
                                          tf.TensorSpec([None, M.N_FRAMES], tf.float32)])
            def run(a, f0, ld):
                z = parts.encoder((M.tf_mfcc_coarse(a) - fm) / fs, training=False)
                return M.decode_crop(parts.decoder, parts.synth, parts.cfg, z, f0, ld, 0, M.N_FRAMES, False)

            _AUTOENCODERS[key] = run
        run = _AUTOENCODERS[key]
    audio = np.asarray(audio, np.float32).reshape(-1, M.N_FRAMES * M.HOP)
    f0_hz = np.asarray(f0_hz, np.float32).reshape(-1, M.N_FRAMES)
    loudness_db = np.asarray(loudness_db, np.float32).reshape(-1, M.N_FRAMES)
    out = [run(audio[i : i + batch_size], f0_hz[i : i + batch_size], loudness_db[i : i + batch_size]).numpy()
           for i in range(0, len(audio), batch_size)]
    return np.concatenate(out, axis=0) if out else np.zeros((0, M.N_FRAMES * M.HOP), np.float32)
