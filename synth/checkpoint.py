"""A checkpoint directory: its layout, its file names and how its parts load, in one place.

    CHECKPOINT/
      ddsp_generator/   encoder.weights.h5  decoder.weights.h5  synth.npz  config.json
      z_generator/      z_posterior.weights.h5  z_decoder.weights.h5  config.json
      f0_ld_generator/  model.weights.h5  config.json

`synth.generator.Generator` (inference), the training stages and `evaluate` all load through
here; the training stages save under the same names.
"""

from __future__ import annotations

import os

import numpy as np

from synth import models as M

DDSP_DIR, Z_DIR, F0_LD_DIR = M.STAGE_DIRS
ENCODER = "encoder.weights.h5"
DECODER = "decoder.weights.h5"
SYNTH = "synth.npz"
Z_POSTERIOR = "z_posterior.weights.h5"
Z_DECODER = "z_decoder.weights.h5"
F0_LD = "model.weights.h5"
CONFIG = "config.json"


def stage_dirs(checkpoint_dir: str) -> tuple[str, str, str]:
    """(ddsp_generator, z_generator, f0_ld_generator) directories of a checkpoint."""
    return tuple(os.path.join(checkpoint_dir, d) for d in M.STAGE_DIRS)  # type: ignore[return-value]


def model_files(checkpoint_dir: str) -> list[str]:
    """The files inference uses (weights and the three configs): what the model version hashes."""
    ddsp, z, f = stage_dirs(checkpoint_dir)
    return [os.path.join(ddsp, DECODER), os.path.join(ddsp, SYNTH), os.path.join(z, Z_DECODER),
            os.path.join(f, F0_LD), *(os.path.join(d, CONFIG) for d in (ddsp, z, f))]


def load_z_generator(z_dir: str, cfg: M.ModelConfig, posterior: bool = True):
    """(z_posterior or None, z_decoder) with the weights of a z_generator/ directory."""
    zdec = M.build_z_decoder(cfg)
    zdec.load_weights(os.path.join(z_dir, Z_DECODER))
    if not posterior:
        return None, zdec
    post = M.build_z_posterior(cfg)
    post.load_weights(os.path.join(z_dir, Z_POSTERIOR))
    return post, zdec


def load_f0_ld(f_dir: str, cfg: M.ModelConfig):
    """The f0_ld_generator network with the weights of an f0_ld_generator/ directory."""
    net = M.build_f0_ld(cfg)
    net.load_weights(os.path.join(f_dir, F0_LD))
    return net


def load_decoder_and_synth(ddsp_dir: str, cfg: M.ModelConfig):
    """(decoder, synth) of a ddsp_generator/ directory."""
    decoder = M.build_decoder(cfg)
    decoder.load_weights(os.path.join(ddsp_dir, DECODER))
    synth = M.make_synth(cfg)
    M.load_synth(synth, os.path.join(ddsp_dir, SYNTH))
    return decoder, synth


def load_network_weights(ddsp_dir: str, z_dir: str, f_dir: str, cfg: M.ModelConfig) -> dict:
    """The three inference networks' weights ({'decoder', 'z_decoder', 'f0_ld'}: layer name ->
    numpy arrays), read from their weight files without TensorFlow (`numpy_nets.read_weights`)."""
    from synth.numpy_nets import layer_order, read_weights

    order = layer_order(cfg)
    return {"decoder": read_weights(os.path.join(ddsp_dir, DECODER), order["decoder"]),
            "z_decoder": read_weights(os.path.join(z_dir, Z_DECODER), order["z_decoder"]),
            "f0_ld": read_weights(os.path.join(f_dir, F0_LD), order["f0_ld"])}


def load_impulse_response(ddsp_dir: str, cfg: M.ModelConfig) -> np.ndarray:
    """The learned reverb of a ddsp_generator/ directory, as `processors.Reverb` applies it (wet
    only: first tap 0, its decay envelope on), read from its .npz without TensorFlow."""
    from synth.fast_render import TRAIN_SAMPLE_RATE, reverb_tap_mask

    with np.load(os.path.join(ddsp_dir, SYNTH)) as saved:
        ir = np.asarray(saved["arr_0"], np.float32).reshape(-1)  # (models.save_synth: its one weight)
    return ir * reverb_tap_mask(ir.size, TRAIN_SAMPLE_RATE, cfg.reverb_decay_db_per_s)


class DDSPParts:
    """Encoder, decoder and synthesizer of a `ddsp_generator/` directory (training, evaluation)."""

    def __init__(self, directory: str):
        self.directory = directory
        self.config = M.read_config(directory)
        self.cfg = M.ModelConfig.from_dict(self.config["model"])
        self.stats = self.config["stats"]
        self.encoder = M.build_encoder(self.cfg)
        self.encoder.load_weights(os.path.join(directory, ENCODER))
        self.decoder, self.synth = load_decoder_and_synth(directory, self.cfg)

    def z_norm(self, features: np.ndarray) -> np.ndarray:
        """Standardised encoder z [N, 50, 16] of cached features."""
        fm = np.asarray(self.stats["feature_mean"], np.float32)
        fs = np.asarray(self.stats["feature_std"], np.float32)
        z = self.encoder.predict((features - fm) / fs, batch_size=256, verbose=0)
        return ((z - np.asarray(self.stats["z_mean"], np.float32))
                / np.asarray(self.stats["z_std"], np.float32)).astype(np.float32)
