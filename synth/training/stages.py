"""The four training stages and what each one writes.

Every stage reads the NSynth-format data set (`--data`), trains in `--out` (log, loss.png,
resumable `state/`), writes its finished model into `OUT/<model dir>/` in the layout of
`checkpoints/`, and copies it to `--export DIR/<model dir>/` when asked. Stages that build on an
earlier one read it from `--models DIR` (default: checkpoints/).

* `autoencoder`     encoder + DDSP decoder + learned reverb, multi-scale spectral loss on random
                    1 s crops of 16 kHz audio -> `ddsp_generator/` (with the data statistics
                    the other stages need: MFCC and z mean/std).
* `z_generator`     conditional VAE on the encoder's z trajectories (cached) -> `z_generator/`.
* `f0_ld_generator` (cond, z) -> loudness and cents curves, MSE on the data set's curves, with
                    the real z (plus noise) as input -> `f0_ld_generator/`.
* `end_to_end`      cond + posterior-mean latent -> z_generator -> f0_ld_generator -> frozen
                    decoder -> audio; spectral loss against the real note plus the two stages'
                    own losses as regularisers; fine-tunes `z_generator/` and `f0_ld_generator/`.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import shutil
import time
from typing import Any

import numpy as np
from dataclasses import asdict

from synth import checkpoint as CK
from synth import models as M
from synth.checkpoint import DDSPParts
from synth.training import data as D
from synth.training.loop import train

log = logging.getLogger("synth.training")

CROP_FRAMES = 250  # 1 s windows keep an autoencoder step cheap on a CPU
VALID_NOTES = 48  # notes of the valid split the audio stages validate on (2 crops each)
VALID_SPLIT = "valid"


def _setup_tf(threads: int):
    import tensorflow as tf

    if threads > 0 and tf.config.threading.get_intra_op_parallelism_threads() != threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1 if threads <= 2 else 2)
        except RuntimeError as e:
            # TF's runtime was already started in this process (a test session, a notebook):
            # its thread pools cannot change any more; train with them as they are.
            log.warning("--threads %d not applied: %s", threads, e)
    return tf


def _optimizer(lr: float, steps: int):
    import keras

    schedule = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, steps), alpha=0.1)
    return keras.optimizers.Adam(learning_rate=schedule, global_clipnorm=3.0)


def _cache_dir(args) -> str:
    return args.cache or os.path.join(os.path.dirname(os.path.abspath(args.out)) or ".", "cache")


def _load_split(args, split: str, cache: str, limit: int | None) -> dict:
    """One split as the stages train on it (`synth.training.data.load` with the run's options)."""
    return D.load(args.data, split, cache, limit=limit, progress=not args.no_progress, programs=args.programs,
                  pitches=args.pitches)


def _export(args, stage_dir: str, name: str) -> None:
    if args.export:
        dest = os.path.join(args.export, name)
        if os.path.abspath(dest) != os.path.abspath(stage_dir):
            if os.path.isdir(dest):
                shutil.rmtree(dest)
            shutil.copytree(stage_dir, dest)
            log.info("exported %s -> %s", stage_dir, dest)


def _fit(args, title: str, models: dict, optimizer, variables, step_fn, next_batch, validate):
    """Every stage's training loop (`synth.training.loop.train`) under the run's options."""
    return train(out_dir=args.out, title=title, models=models, optimizer=optimizer,
                 trainable_variables=variables, step_fn=step_fn, next_batch=next_batch,
                 steps=args.steps, seed=args.seed, resume=args.resume,
                 checkpoint_every=args.checkpoint_every, log_every=args.log_every,
                 validate=validate, validate_every=args.validate_every, progress=not args.no_progress,
                 time_limit_s=args.time_limit * 60 if args.time_limit else None, stop_at=args.stop_at)


def _save(args, name: str, files: dict[str, Any], config: dict[str, Any], logs_from: str | None = None,
          suffix: str = "") -> None:
    """A finished model into OUT/<name>/ in the layout of checkpoints/ (weights by file name, the
    learned reverb by `checkpoint.SYNTH`, then config.json), copied to --export when asked.

    The run's loss curve and log go with it as `loss{suffix}.png` and `training_log{suffix}.txt`,
    after those of the model it fine-tuned (`logs_from`, the model directory it started from),
    so the shipped directory shows every stage that made it."""
    stage_dir = os.path.join(args.out, name)
    for file, model in files.items():
        path = os.path.join(stage_dir, file)
        if file == CK.SYNTH:
            M.save_synth(model, path)
        else:
            M.save_weights(model, path)
    M.write_config(stage_dir, config)
    if logs_from and os.path.abspath(logs_from) != os.path.abspath(stage_dir):
        for pattern in ("loss*.png", "training_log*.txt"):
            for path in glob.glob(os.path.join(logs_from, pattern)):
                shutil.copy2(path, stage_dir)
    for src, dest in (("loss.png", f"loss{suffix}.png"), ("train.log", f"training_log{suffix}.txt")):
        if os.path.isfile(os.path.join(args.out, src)):
            shutil.copy2(os.path.join(args.out, src), os.path.join(stage_dir, dest))
    _export(args, stage_dir, name)


def _training_info(args, history, extra: dict | None = None) -> dict[str, Any]:
    last = history.train[-50:]
    final = {k: float(np.mean([v[k] for _, v in last])) for k in (last[0][1] if last else {})}
    info = {
        "steps": history.train[-1][0] if history.train else 0,
        "target_steps": args.steps,
        "learning_rate": args.lr,
        "batch_size": args.batch_size,
        "seconds": round(history.seconds, 1),
        "final_train_losses_mean_last_50": final,
        "final_valid_losses": history.valid[-1][1] if history.valid else {},
        "data": os.path.abspath(args.data),
        "programs": args.programs,
        "pitches": args.pitches,
        "finished_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }
    info.update(extra or {})
    return info


# ---------------------------------------------------------------------------------------------
# Loading trained pieces.


# ---------------------------------------------------------------------------------------------
# Stage 1: the autoencoder.


def autoencoder(args) -> int:
    tf = _setup_tf(args.threads)
    from synth import core

    cache = _cache_dir(args)
    tr = _load_split(args, "train", cache, args.limit)
    va = _load_split(args, VALID_SPLIT, cache, min(VALID_NOTES, args.limit or VALID_NOTES))
    cfg = M.ModelConfig.from_core(reverb_decay_db_per_s=args.reverb_decay)
    fmean, fstd = D.feature_stats(tr["features"])
    feats_tr = (tr["features"] - fmean) / fstd
    feats_va = (va["features"] - fmean) / fstd

    encoder, decoder = M.build_encoder(cfg), M.build_decoder(cfg)
    synth = M.make_synth(cfg)
    if args.init:
        parts = DDSPParts(os.path.join(args.init, "ddsp_generator"))
        encoder.set_weights(parts.encoder.get_weights())
        decoder.set_weights(parts.decoder.get_weights())
        M.copy_synth(parts.synth, synth)
    variables = encoder.trainable_variables + decoder.trainable_variables + list(synth.trainable_variables)
    opt = _optimizer(args.lr, args.steps)
    n_frames = CROP_FRAMES
    n_samples = n_frames * M.HOP
    z_noise = float(args.z_noise)

    def forward(feats, f0, ld, start, training):
        z = encoder(feats, training=training)
        zn = z + tf.random.normal(tf.shape(z), stddev=z_noise) if training and z_noise > 0 else z
        return M.decode_crop(decoder, synth, cfg, zn, f0, ld, start, n_frames, training), z

    spec = [tf.TensorSpec([None, M.N_COARSE, M.N_MFCC], tf.float32),
            tf.TensorSpec([None, n_frames], tf.float32), tf.TensorSpec([None, n_frames], tf.float32),
            tf.TensorSpec([None, n_samples], tf.float32), tf.TensorSpec([], tf.int32)]

    z_l2 = float(args.z_l2)

    @tf.function(input_signature=spec)
    def train_step(feats, f0, ld, audio, start):
        with tf.GradientTape() as tape:
            pred, z = forward(feats, f0, ld, start, True)
            spectral = core.multiscale_spectral_loss(audio, pred)
            penalty = tf.reduce_mean(tf.square(z))
            loss = spectral + z_l2 * penalty
        grads = tape.gradient(loss, variables)
        opt.apply_gradients(zip(grads, variables))
        return spectral, penalty

    @tf.function(input_signature=spec)
    def eval_step(feats, f0, ld, audio, start):
        return core.multiscale_spectral_loss(audio, forward(feats, f0, ld, start, False)[0])

    n_train = len(tr["pitch"])
    fixed_idx = np.arange(min(args.batch_size, n_train))

    def next_batch(rng):
        if args.fixed_batch:
            idx, start = fixed_idx, 0
        else:
            idx = rng.choice(n_train, size=args.batch_size, replace=n_train < args.batch_size)
            start = D.sample_start(rng, n_frames)
        b = D.crop_batch(tr, idx, start, n_frames)
        return {"feats": feats_tr[idx], **b, "start": start}

    def step_fn(b):
        spectral, penalty = train_step(b["feats"], b["f0_hz"], b["loudness_db"], b["audio"],
                                       tf.constant(b["start"], tf.int32))
        return {"spectral": spectral, "z_sq": penalty}

    n_va = len(va["pitch"])

    def validate():
        losses = []
        for start in (0, 375):
            for i in range(0, n_va, 16):
                idx = np.arange(i, min(n_va, i + 16))
                b = D.crop_batch(va, idx, start, n_frames)
                losses.append(float(eval_step(feats_va[idx], b["f0_hz"], b["loudness_db"], b["audio"],
                                              tf.constant(start, tf.int32))) * len(idx))
        return {"spectral": float(np.sum(losses) / (2 * n_va))}

    models = {"encoder": encoder, "decoder": decoder, "synth": M.SynthSaver(synth)}
    history = _fit(args, "autoencoder", models, opt, variables, step_fn, next_batch, validate)

    # Statistics of z over the training notes: the generators work on standardised z.
    z = encoder.predict(feats_tr, batch_size=256, verbose=0)
    stats = M.Stats(feature_mean=M.as_float_list(fmean), feature_std=M.as_float_list(fstd),
                    z_mean=M.as_float_list(z.reshape(-1, M.Z_DIM).mean(0)),
                    # Floor: a dimension the encoder barely uses stays ~0 after standardising
                    # instead of becoming amplified noise the generators would have to model.
                    z_std=M.as_float_list(np.maximum(z.reshape(-1, M.Z_DIM).std(0), 0.05)))
    _save(args, "ddsp_generator", {CK.ENCODER: encoder, CK.DECODER: decoder, CK.SYNTH: synth},
          {"model": cfg.to_dict(), "stats": asdict(stats),
           "training": _training_info(args, history, {"crop_frames": n_frames, "z_noise": z_noise, "z_l2": z_l2})})
    return 0


# ---------------------------------------------------------------------------------------------
# Stage 2: the z_generator (conditional VAE).


def _kl(mu, logvar):
    import tensorflow as tf

    return tf.reduce_mean(tf.reduce_sum(0.5 * (tf.square(mu) + tf.exp(logvar) - logvar - 1.0), axis=-1))


def _clip_logvar(logvar):
    import tensorflow as tf

    return tf.clip_by_value(logvar, -10.0, 4.0)


def _load_generator_data(args):
    """TensorFlow set up, the trained autoencoder, and the train/valid features the generators learn from."""
    tf = _setup_tf(args.threads)
    cache = _cache_dir(args)
    parts = DDSPParts(os.path.join(args.models, "ddsp_generator"))
    tr = _load_split(args, "train", cache, args.limit)
    va = _load_split(args, VALID_SPLIT, cache, args.limit)
    return tf, parts, tr, va


def z_generator(args) -> int:
    tf, parts, tr, va = _load_generator_data(args)
    z_tr, z_va = parts.z_norm(tr["features"]), parts.z_norm(va["features"])
    c_tr, c_va = tr["cond"], va["cond"]
    cfg = parts.cfg
    post, zdec = M.build_z_posterior(cfg), M.build_z_decoder(cfg)
    if args.init:
        d = os.path.join(args.init, "z_generator")
        post.load_weights(os.path.join(d, CK.Z_POSTERIOR))
        zdec.load_weights(os.path.join(d, CK.Z_DECODER))
    variables = post.trainable_variables + zdec.trainable_variables
    opt = _optimizer(args.lr, args.steps)
    tfe = tf.constant(M.time_features()[None])
    kl_w = float(args.kl_weight)

    def forward(z, c, training):
        mu, logvar = post([z, c], training=training)
        logvar = _clip_logvar(logvar)
        lat = mu + tf.exp(0.5 * logvar) * tf.random.normal(tf.shape(mu)) if training else mu
        t = tf.repeat(tfe, tf.shape(c)[0], axis=0)
        z_hat = M.z_from_raw(zdec([M.squash_latent(lat), c, t], training=training))
        return z_hat, mu, logvar

    spec = [tf.TensorSpec([None, M.N_COARSE, M.Z_DIM], tf.float32), tf.TensorSpec([None, M.COND_DIM], tf.float32)]

    @tf.function(input_signature=spec)
    def train_step(z, c):
        with tf.GradientTape() as tape:
            z_hat, mu, logvar = forward(z, c, True)
            recon = tf.reduce_mean(tf.square(z_hat - z))
            kl = _kl(mu, logvar)
            loss = recon + kl_w * kl
        grads = tape.gradient(loss, variables)
        opt.apply_gradients(zip(grads, variables))
        return recon, kl

    @tf.function(input_signature=spec)
    def eval_step(z, c):
        z_hat, mu, logvar = forward(z, c, False)
        t = tf.repeat(tfe, tf.shape(c)[0], axis=0)
        z_prior = M.z_from_raw(zdec([tf.zeros_like(mu), c, t], training=False))
        return (tf.reduce_mean(tf.square(z_hat - z)), _kl(mu, logvar),
                tf.reduce_mean(tf.square(z_prior - z)))

    n = len(c_tr)

    def next_batch(rng):
        idx = np.arange(min(args.batch_size, n)) if args.fixed_batch else rng.choice(
            n, size=args.batch_size, replace=n < args.batch_size)
        return {"z": z_tr[idx], "c": c_tr[idx]}

    def step_fn(b):
        recon, kl = train_step(b["z"], b["c"])
        return {"recon": recon, "kl": kl}

    def validate():
        recon, kl, prior = eval_step(z_va, c_va)
        return {"recon": float(recon), "kl": float(kl), "recon_latent0": float(prior)}

    history = _fit(args, "z_generator", {"z_posterior": post, "z_decoder": zdec}, opt, variables, step_fn,
                   next_batch, validate)
    _save(args, "z_generator", {CK.Z_POSTERIOR: post, CK.Z_DECODER: zdec},
          {"model": cfg.to_dict(), "kl_weight": kl_w, "knob_radius": M.KNOB_RADIUS,
           "training": _training_info(args, history)})
    return 0


# ---------------------------------------------------------------------------------------------
# Stage 3: the f0_ld_generator.


def _voiced_weight(ld_db):
    """Cents only matter where the note sounds: weight 0 below -80 dB, 1 above -60 dB."""
    import tensorflow as tf

    return tf.clip_by_value((ld_db + 80.0) / 20.0, 0.0, 1.0)


def f0_ld_losses(ld_pred, cents_pred, ld_true, cents_true):
    """(loudness MSE in (dB/10)^2, voiced-weighted cents MSE in (cents/10)^2)."""
    import tensorflow as tf

    ld_loss = tf.reduce_mean(tf.square((ld_pred - ld_true) / 10.0))
    w = _voiced_weight(ld_true)
    cents_loss = tf.reduce_sum(w * tf.square((cents_pred - cents_true) / 10.0)) / (tf.reduce_sum(w) + 1.0)
    return ld_loss, cents_loss


def f0_ld_generator(args) -> int:
    tf, parts, tr, va = _load_generator_data(args)
    z_tr, z_va = parts.z_norm(tr["features"]), parts.z_norm(va["features"])
    cfg = parts.cfg
    ld_min = float(np.min(tr["loudness_db"]))
    ld_max = float(np.max(tr["loudness_db"])) + 3.0
    net = M.build_f0_ld(cfg)
    if args.init:
        net.load_weights(os.path.join(args.init, "f0_ld_generator", CK.F0_LD))
    variables = net.trainable_variables
    opt = _optimizer(args.lr, args.steps)
    tfe = tf.constant(M.time_features()[None])
    z_noise = float(args.z_noise)
    # The generator feeds this network the z_generator's output, not the encoder's z: a latent
    # near 0 decodes to an "average" z that no real note has, and a network trained on real z
    # only answered such inputs with nonsense (full-scale loudness). So train on what it gets
    # at inference: z_generator(posterior sample of the note, cond), and with probability
    # P_LATENT0 z_generator(0, cond), for which the target becomes the mean envelope given cond.
    zgen_dir = os.path.join(args.models, "z_generator")
    use_zgen = os.path.exists(os.path.join(zgen_dir, "config.json"))
    if use_zgen:
        post, zdec = CK.load_z_generator(zgen_dir, cfg)
    else:
        log.warning("%s: no z_generator; training f0_ld_generator on encoder z only", zgen_dir)
    p_latent0 = 0.25

    def generated_z(c, z, training):
        if not use_zgen:
            return z
        mu, logvar = post([z, c], training=False)
        lat = mu + tf.exp(0.5 * _clip_logvar(logvar)) * tf.random.normal(tf.shape(mu)) if training else mu
        if training:
            keep = tf.cast(tf.random.uniform([tf.shape(mu)[0], 1]) >= p_latent0, tf.float32)
            lat = lat * keep
        t = tf.repeat(tfe, tf.shape(c)[0], axis=0)
        return tf.stop_gradient(M.z_from_raw(zdec([M.squash_latent(lat), c, t], training=False)))

    def forward(c, z, training):
        t = tf.repeat(tfe, tf.shape(c)[0], axis=0)
        ld_raw, cents_raw = net([c, z, t], training=training)
        return M.ld_from_raw(ld_raw, ld_min, ld_max), M.cents_from_raw(cents_raw)

    spec = [tf.TensorSpec([None, M.COND_DIM], tf.float32), tf.TensorSpec([None, M.N_COARSE, M.Z_DIM], tf.float32),
            tf.TensorSpec([None, M.N_FRAMES], tf.float32), tf.TensorSpec([None, M.N_FRAMES], tf.float32)]

    @tf.function(input_signature=spec)
    def train_step(c, z, ld, cents):
        z = generated_z(c, z, True)
        z = z + tf.random.normal(tf.shape(z), stddev=z_noise)
        with tf.GradientTape() as tape:
            ld_hat, cents_hat = forward(c, z, True)
            ld_loss, cents_loss = f0_ld_losses(ld_hat, cents_hat, ld, cents)
            loss = ld_loss + 0.1 * cents_loss
        grads = tape.gradient(loss, variables)
        opt.apply_gradients(zip(grads, variables))
        return ld_loss, cents_loss

    @tf.function(input_signature=spec)
    def eval_step(c, z, ld, cents):
        ld_hat, cents_hat = forward(c, generated_z(c, z, False), False)
        return f0_ld_losses(ld_hat, cents_hat, ld, cents)

    n = len(tr["cond"])

    def next_batch(rng):
        idx = np.arange(min(args.batch_size, n)) if args.fixed_batch else rng.choice(
            n, size=args.batch_size, replace=n < args.batch_size)
        return {"c": tr["cond"][idx], "z": z_tr[idx], "ld": tr["loudness_db"][idx], "cents": tr["cents"][idx]}

    def step_fn(b):
        ld_loss, cents_loss = train_step(b["c"], b["z"], b["ld"], b["cents"])
        return {"loudness": ld_loss, "cents": cents_loss}

    def validate():
        ld_loss, cents_loss = eval_step(va["cond"], z_va, va["loudness_db"], va["cents"])
        return {"loudness": float(ld_loss), "cents": float(cents_loss)}

    history = _fit(args, "f0_ld_generator", {"f0_ld_generator": net}, opt, variables, step_fn, next_batch,
                   validate)
    _save(args, "f0_ld_generator", {CK.F0_LD: net},
          {"model": cfg.to_dict(), "ld_min": ld_min, "ld_max": ld_max,
           # Inference settings, read by synth.generator.
           "tag_guidance_z": float(args.tag_guidance),
           "tag_guidance_loudness": float(args.tag_guidance_loudness),
           "guided_tags": list(args.guided_tags),
           "training": _training_info(args, history, {"z_noise": z_noise, "p_latent0": p_latent0,
                                                      "z_source": "z_generator" if use_zgen else "encoder"})})
    return 0


# ---------------------------------------------------------------------------------------------
# Stage 4: end-to-end fine-tuning through the frozen decoder.


LEVEL_WINDOWS = 4  # end_to_end level term: stretches of a 1 s crop (250 ms each)
PEAK_WINDOWS = 8  # end_to_end peak term: 125 ms stretches
LEVEL_FLOOR_DB = 50.0


def _crop_level_error(real, pred, peak: bool = False):
    """[batch] mean over LEVEL_WINDOWS equal stretches of |level(pred) - level(real)| / 10 dB,
    levels (mean square, dB) floored at the real crop's loudest stretch - LEVEL_FLOOR_DB.
    peak True: over PEAK_WINDOWS stretches, of their peak levels (largest |sample|, dB)."""
    import tensorflow as tf

    windows = PEAK_WINDOWS if peak else LEVEL_WINDOWS

    def levels(x):
        n = x.shape[-1] // windows
        w = tf.reshape(x[:, : n * windows], [-1, windows, n])
        if peak:
            return 20.0 * tf.math.log(tf.reduce_max(tf.abs(w), axis=-1) + 1e-5) / math.log(10.0)
        return 10.0 * tf.math.log(tf.reduce_mean(tf.square(w), axis=-1) + 1e-10) / math.log(10.0)

    lr, lp = levels(real), levels(pred)
    floor = tf.stop_gradient(tf.reduce_max(lr, axis=1, keepdims=True) - LEVEL_FLOOR_DB)
    return tf.reduce_mean(tf.abs(tf.maximum(lp, floor) - tf.maximum(lr, floor)), axis=1) / 10.0


def end_to_end(args) -> int:
    tf = _setup_tf(args.threads)
    from synth import core

    cache = _cache_dir(args)
    parts = DDSPParts(os.path.join(args.models, "ddsp_generator"))
    zdir = os.path.join(args.init or args.models, "z_generator")
    fdir = os.path.join(args.init or args.models, "f0_ld_generator")
    zconf, fconf = M.read_config(zdir), M.read_config(fdir)
    tr = _load_split(args, "train", cache, args.limit)
    va = _load_split(args, VALID_SPLIT, cache, min(VALID_NOTES, args.limit or VALID_NOTES))
    z_tr, z_va = parts.z_norm(tr["features"]), parts.z_norm(va["features"])
    cfg = parts.cfg
    post, zdec = CK.load_z_generator(zdir, cfg)
    f0ld = CK.load_f0_ld(fdir, cfg)
    ld_min, ld_max = float(fconf["ld_min"]), float(fconf["ld_max"])
    kl_w = float(zconf.get("kl_weight", args.kl_weight))
    decoder, synth = parts.decoder, parts.synth
    decoder.trainable = False
    variables = post.trainable_variables + zdec.trainable_variables + f0ld.trainable_variables
    opt = _optimizer(args.lr, args.steps)
    z_mean = tf.constant(np.asarray(parts.stats["z_mean"], np.float32))
    z_std = tf.constant(np.asarray(parts.stats["z_std"], np.float32))
    n_frames = CROP_FRAMES
    n_samples = n_frames * M.HOP
    reg_w = float(args.reg_weight)
    p_latent0 = float(args.p_latent0)
    centroid_w = float(args.centroid_weight)
    level_w = float(args.level_weight)
    peak_w = float(args.peak_weight)

    def forward(c, z_real, pitch, start, keep):
        mu, logvar = post([z_real, c])
        logvar = _clip_logvar(logvar)
        # keep [B, 1]: 1 = the note's posterior mean, 0 = latent 0 (the performer's default).
        # The curves as inference makes them, without tag guidance (trained through guidance,
        # the networks learned to cancel it: the tags moved less than before).
        z_norm, ld, cents_raw = M.generate_curves(zdec, f0ld, M.squash_latent(mu * keep), c, ld_min, ld_max,
                                                  training=True)
        cents = M.cents_from_raw(cents_raw)
        f0 = M.tf_midi_to_hz(pitch[:, None] + cents / 100.0)
        z_enc = z_norm * z_std + z_mean
        # No spectral-loss gradient into f0: through the oscillator phase it is large and
        # erratic (DDSP's known weakness) and would detune the note; f0 is on pitch by
        # construction and its cents head learns from the f0 regulariser only.
        f0c = tf.stop_gradient(M.crop_frames(f0, start, n_frames))
        ldc = M.crop_frames(ld, start, n_frames)
        audio = M.decode_crop(decoder, synth, cfg, z_enc, f0c, ldc, start, n_frames, False)
        return audio, z_norm, ld, cents, mu, logvar

    spec = [tf.TensorSpec([None, M.COND_DIM], tf.float32), tf.TensorSpec([None, M.N_COARSE, M.Z_DIM], tf.float32),
            tf.TensorSpec([None], tf.float32), tf.TensorSpec([None, M.N_FRAMES], tf.float32),
            tf.TensorSpec([None, M.N_FRAMES], tf.float32), tf.TensorSpec([None, n_samples], tf.float32),
            tf.TensorSpec([], tf.int32), tf.TensorSpec([None, 1], tf.float32)]

    def losses(c, z_real, pitch, ld_true, cents_true, audio, start, keep):
        pred, z_norm, ld, cents, mu, logvar = forward(c, z_real, pitch, start, keep)
        mag, logmag = core.multiscale_spectral_terms(audio, pred)
        # Posterior rows: DDSP's loss (magnitude + log magnitude). Latent-0 rows stand for
        # every note with these attributes, so they learn the per-bin median magnitude (L1 on
        # magnitudes) only: with the pitch fixed the harmonics line up across instruments and
        # the median is a typical spectrum. The log term would also fit the median of what lies
        # between harmonics (reverb, breath, bow noise), and that turned the default note into
        # hiss: +1.0 octave of centroid on the test split. Magnitudes alone still left it
        # 0.3 octave too dark, so these rows also match the real note's brightness: the L1
        # distance of log2 spectral centroids (octaves), whose optimum over all the notes with
        # these attributes is their median brightness.
        k = keep[:, 0]
        centroid = tf.abs(core.log2_spectral_centroid(pred, M.SAMPLE_RATE)
                          - tf.stop_gradient(core.log2_spectral_centroid(audio, M.SAMPLE_RATE)))
        # Only where the real note sounds: a crop of a faded tail has the centroid of its noise
        # floor. Weight 1 when the crop reaches within 30 dB of the note's peak, 0 below 50 dB.
        crop_peak = tf.reduce_max(M.crop_frames(ld_true, start, n_frames), axis=1)
        sounding = tf.clip_by_value((crop_peak - tf.reduce_max(ld_true, axis=1) + 50.0) / 20.0, 0.0, 1.0)
        centroid = centroid * sounding
        # And their level: L1 distance (per 10 dB) of the levels of LEVEL_WINDOWS stretches of the
        # crop, whose optimum is the median level of the notes with these attributes, as the
        # dynamics target measures it. The magnitude loss alone fits the per-bin median
        # magnitude, which sits below the notes' median level, and more so for loud notes: the
        # velocity layers came out compressed (21 dB from velocity 25 to 127 against the data's
        # 28). Levels under the crop's real peak - LEVEL_FLOOR_DB count as that floor (a faded
        # tail is not matched down to its noise).
        level = level_w * _crop_level_error(audio, pred) * sounding
        # And, with --peak-weight, their peaks the same way (125 ms stretches): the dynamics
        # target measures a note's peak, and at the quietest layer the level term alone left
        # generated notes peaking late in a held part that real notes do not have.
        if peak_w:
            level += peak_w * _crop_level_error(audio, pred, peak=True) * sounding
        spectral = tf.reduce_mean(k * (mag + logmag) + (1.0 - k) * (mag + centroid_w * centroid + level))
        ld_loss, cents_loss = f0_ld_losses(ld, cents, ld_true, cents_true)
        # The z regulariser only for posterior rows: for latent-0 rows it would pull z to the
        # conditional mean, and a mean z decodes to a dull, dark note that no instrument plays
        # (measured: -0.86 octaves of spectral centroid on the test split). Those rows learn
        # from the spectral loss alone: the typical sound for their attributes.
        zsq = tf.reduce_mean(tf.square(z_norm - z_real), axis=[1, 2])
        z_reg = tf.reduce_sum(k * zsq) / tf.maximum(tf.reduce_sum(k), 1.0)
        reg = z_reg + ld_loss + 0.1 * cents_loss + kl_w * _kl(mu, logvar)
        return spectral, reg

    @tf.function(input_signature=spec)
    def train_step(*a):
        with tf.GradientTape() as tape:
            spectral, reg = losses(*a)
            loss = spectral + reg_w * reg
        grads = tape.gradient(loss, variables)
        opt.apply_gradients(zip(grads, variables))
        return spectral, reg

    eval_step = tf.function(losses, input_signature=spec)
    n = len(tr["cond"])
    pitch_tr = np.asarray(tr["pitch"], np.float32)
    pitch_va = np.asarray(va["pitch"], np.float32)

    def next_batch(rng):
        if args.fixed_batch:
            idx, start = np.arange(min(args.batch_size, n)), 0
        else:
            idx = rng.choice(n, size=args.batch_size, replace=n < args.batch_size)
            start = D.sample_start(rng, n_frames)
        b = D.crop_batch(tr, idx, start, n_frames)
        keep = (rng.random((len(idx), 1)) >= p_latent0).astype(np.float32)
        return {"idx": idx, "audio": b["audio"], "start": start, "keep": keep}

    def step_fn(b):
        i = b["idx"]
        spectral, reg = train_step(tr["cond"][i], z_tr[i], pitch_tr[i], tr["loudness_db"][i], tr["cents"][i],
                                   b["audio"], tf.constant(b["start"], tf.int32), b["keep"])
        return {"spectral": spectral, "regulariser": reg}

    n_va = len(va["cond"])

    def validate():
        sums = np.zeros(3)
        for start in (0, 375):
            for i0 in range(0, n_va, 16):
                i = np.arange(i0, min(n_va, i0 + 16))
                b = D.crop_batch(va, i, start, n_frames)
                a = (va["cond"][i], z_va[i], pitch_va[i], va["loudness_db"][i], va["cents"][i],
                     b["audio"], tf.constant(start, tf.int32))
                s, r = eval_step(*a, np.ones((len(i), 1), np.float32))
                s0, _ = eval_step(*a, np.zeros((len(i), 1), np.float32))
                sums += np.array([float(s), float(r), float(s0)]) * len(i)
        return {"spectral": sums[0] / (2 * n_va), "regulariser": sums[1] / (2 * n_va),
                "spectral_latent0": sums[2] / (2 * n_va)}

    history = _fit(args, "end_to_end", {"z_posterior": post, "z_decoder": zdec, "f0_ld_generator": f0ld}, opt,
                   variables, step_fn, next_batch, validate)
    info = _training_info(args, history, {"reg_weight": reg_w, "crop_frames": n_frames, "p_latent0": p_latent0,
                                          "centroid_weight": centroid_w, "level_weight": level_w,
                                          "peak_weight": peak_w})
    _save(args, "z_generator", {CK.Z_POSTERIOR: post, CK.Z_DECODER: zdec}, {**zconf, "end_to_end": info},
          logs_from=zdir, suffix="_end_to_end")
    _save(args, "f0_ld_generator", {CK.F0_LD: f0ld}, {**fconf, "end_to_end": info}, logs_from=fdir,
          suffix="_end_to_end")
    return 0


STAGES = {
    "autoencoder": autoencoder,
    "z_generator": z_generator,
    "f0_ld_generator": f0_ld_generator,
    "end_to_end": end_to_end,
}

# Per-stage defaults: (steps, batch size, learning rate).
DEFAULTS = {
    "autoencoder": (6000, 8, 1e-3),
    "z_generator": (4000, 64, 1e-3),
    "f0_ld_generator": (4000, 64, 1e-3),
    "end_to_end": (1500, 8, 3e-4),
}
