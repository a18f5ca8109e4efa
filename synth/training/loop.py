"""The training loop every stage shares: progress bar, log, resumable checkpoints, loss curve.

A stage hands `train` a `step(batch) -> dict[str, float]` function, a `next_batch(rng)` function,
the Keras models and the optimizer to checkpoint, and optionally a `validate() -> dict` function.
The loop owns everything else:

* `OUT/train.log`   - one line per `log_every` steps (and per validation), also echoed to the
  `synth.training` logger;
* `OUT/loss.png`    - the loss curves (training losses smoothed, validation points), redrawn at
  every checkpoint and at the end;
* `OUT/state/`      - the resumable checkpoint: each model's weights, the optimizer's variables,
  the step, the loss history and the random generator's state. `--resume` continues from it
  exactly where it stopped (same batches, same optimizer moments).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

log = logging.getLogger("synth.training")


@dataclass
class History:
    train: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    valid: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {"train": self.train, "valid": self.valid, "seconds": self.seconds}

    @classmethod
    def from_json(cls, d: dict) -> "History":
        return cls(
            train=[(int(s), dict(v)) for s, v in d["train"]],
            valid=[(int(s), dict(v)) for s, v in d["valid"]],
            seconds=float(d.get("seconds", 0.0)),
        )


def _file_logger(out_dir: str) -> Callable[[str], None]:
    path = os.path.join(out_dir, "train.log")

    def write(line: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(path, "a") as f:
            f.write(f"{stamp} {line}\n")
        log.info(line)

    return write


def _fmt(values: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in values.items())


def plot_history(history: History, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({k for _, v in history.train for k in v})
    if not keys:
        return
    fig, axes = plt.subplots(len(keys), 1, figsize=(7, 2.4 * len(keys)), squeeze=False)
    steps = np.array([s for s, _ in history.train])
    for ax, key in zip(axes[:, 0], keys):
        vals = np.array([v.get(key, np.nan) for _, v in history.train], dtype=np.float64)
        ax.plot(steps, vals, color="0.75", lw=0.6, label="train")
        if len(vals) >= 5:
            k = max(1, len(vals) // 50)
            kernel = np.ones(k) / k
            smooth = np.convolve(np.nan_to_num(vals), kernel, mode="valid")
            ax.plot(steps[k - 1 :], smooth, color="C0", lw=1.2, label=f"train (mean of {k})")
        vsteps = [s for s, v in history.valid if key in v]
        if vsteps:
            ax.plot(vsteps, [v[key] for _, v in history.valid if key in v], "o-", color="C3", ms=3,
                    label="valid")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("step")
    axes[0, 0].set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _weights_file(name: str, model) -> str:
    return getattr(model, "weights_file", None) or f"{name}.weights.h5"


def save_state(state_dir: str, models: dict, optimizer, step: int, history: History,
               rng: np.random.Generator) -> None:
    os.makedirs(state_dir, exist_ok=True)
    for name, model in models.items():
        model.save_weights(os.path.join(state_dir, _weights_file(name, model)))
    opt_vars = [np.asarray(v) for v in optimizer.variables]
    np.savez(os.path.join(state_dir, "optimizer.npz"), *opt_vars)
    tmp = os.path.join(state_dir, "state.json.tmp")
    with open(tmp, "w") as f:
        json.dump({"step": step, "history": history.to_json(), "rng": rng.bit_generator.state}, f)
    os.replace(tmp, os.path.join(state_dir, "state.json"))


def load_state(state_dir: str, models: dict, optimizer, rng: np.random.Generator) -> tuple[int, History]:
    with open(os.path.join(state_dir, "state.json")) as f:
        state = json.load(f)
    for name, model in models.items():
        model.load_weights(os.path.join(state_dir, _weights_file(name, model)))
    saved = np.load(os.path.join(state_dir, "optimizer.npz"))
    values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    if len(values) != len(optimizer.variables):
        raise ValueError(f"{state_dir}: optimizer state has {len(values)} variables, expected "
                         f"{len(optimizer.variables)} (different model sizes?)")
    for var, value in zip(optimizer.variables, values):
        var.assign(value)
    rng.bit_generator.state = state["rng"]
    return int(state["step"]), History.from_json(state["history"])


def train(
    *,
    out_dir: str,
    title: str,
    models: dict,
    optimizer,
    trainable_variables: list,
    step_fn: Callable[[dict], dict[str, float]],
    next_batch: Callable[[np.random.Generator], dict],
    steps: int,
    seed: int = 0,
    resume: bool = False,
    checkpoint_every: int = 200,
    log_every: int = 20,
    validate: Callable[[], dict[str, float]] | None = None,
    validate_every: int = 200,
    progress: bool = True,
    time_limit_s: float | None = None,
    stop_at: int | None = None,
) -> History:
    """Run `steps` optimisation steps in total (counting those done before a resume).

    `time_limit_s` (wall time of this call) and `stop_at` (a step) end the run early, with a
    checkpoint; the learning-rate schedule still follows `steps`, so `--resume` later continues
    exactly as if the run had not been interrupted.
    """
    from tqdm import tqdm

    os.makedirs(out_dir, exist_ok=True)
    write = _file_logger(out_dir)
    state_dir = os.path.join(out_dir, "state")
    rng = np.random.default_rng(seed)
    optimizer.build(trainable_variables)
    step, history = 0, History()
    if resume and os.path.exists(os.path.join(state_dir, "state.json")):
        step, history = load_state(state_dir, models, optimizer, rng)
        write(f"{title}: resumed at step {step} from {state_dir}")
    elif resume:
        write(f"{title}: --resume given but {state_dir} holds no checkpoint; starting afresh")
    write(f"{title}: training steps {step}..{steps}")

    def checkpoint() -> None:
        save_state(state_dir, models, optimizer, step, history, rng)
        plot_history(history, os.path.join(out_dir, "loss.png"), title)

    bar = tqdm(total=steps, initial=step, desc=title, disable=not progress, dynamic_ncols=True,
               mininterval=2.0)
    window: list[dict[str, float]] = []
    t_start = t_last = time.perf_counter()
    end = steps if stop_at is None else min(steps, stop_at)
    while step < end:
        if time_limit_s is not None and time.perf_counter() - t_start > time_limit_s:
            write(f"{title}: time limit of {time_limit_s:.0f} s reached at step {step}")
            break
        batch = next_batch(rng)
        losses = step_fn(batch)
        losses = {k: float(v) for k, v in losses.items()}
        if not all(np.isfinite(v) for v in losses.values()):
            checkpoint()
            raise FloatingPointError(f"{title}: non-finite loss at step {step}: {losses}")
        step += 1
        history.train.append((step, losses))
        window.append(losses)
        bar.update(1)
        bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()}, refresh=False)
        now = time.perf_counter()
        history.seconds += now - t_last
        t_last = now
        if step % log_every == 0 or step == end:
            mean = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
            write(f"step {step} {_fmt(mean)} ({history.seconds:.0f} s)")
            window = []
        if validate is not None and (step % validate_every == 0 or step == end):
            v = validate()
            history.valid.append((step, v))
            write(f"step {step} valid {_fmt(v)}")
            t_last = time.perf_counter()
        if step % checkpoint_every == 0 or step == end:
            checkpoint()
            t_last = time.perf_counter()
    if step % checkpoint_every != 0 and step != end:
        if validate is not None:
            history.valid.append((step, validate()))
            write(f"step {step} valid {_fmt(history.valid[-1][1])}")
        checkpoint()
    bar.close()
    write(f"{title}: done at step {step}, {history.seconds:.0f} s of training")
    return history
