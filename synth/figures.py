"""Model-card pictures and the model card itself.

`write_figures(checkpoint_dir, out_dir)` renders example notes with the generator and writes
log-mel spectrograms (64 mel bands, 30 Hz-8 kHz, dB re full scale) as PNGs:

* ``sources.png``       pitch 60, velocity 100, each instrument source;
* ``qualities.png``     pitch 60, velocity 100, acoustic: no tag, then each of the ten tags alone;
* ``pitches.png``       acoustic, velocity 100, pitches 36, 48, 60, 72, 84;
* ``velocities.png``    acoustic, pitch 60, velocities 25, 50, 75, 100, 127;
* ``latent_sweep.png``  pitch 60, velocity 100, acoustic: one latent dimension at -7 .. +7.

and, from an evaluation's per-note details (`details`, as `synth.evaluate` returns them or
eval.json holds them; a picture whose target did not run is skipped):

* ``envelopes.png``     realism: real, generated (latent 0) and random-instrument loudness curves;
* ``timbre_map.png``    reach: the time-averaged log-mel spectra of real test notes, their nearest
                        other instruments and the knob draws, on two principal axes.

`write_model_card(report, path, pictures)` fills `MODEL_CARD_TEMPLATE` with an evaluation
report (`synth.evaluate`), the checkpoints' training records (their config.json files) and the
pictures, linking checkpoints/RECIPE.md for the recipe.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import time
from typing import Sequence

import numpy as np

from synth import metrics
from synth.cli import int_ranges
from synth.report import card_rows, fmt_value
from synth.params import LATENT_DIM, QUALITIES, SOURCES, VELOCITY_LAYERS, NoteParams
from synth.units import SAMPLE_RATE

log = logging.getLogger("synth.figures")

BASE = NoteParams(pitch=60, velocity=100, source="acoustic")
# The pictures drawn from an evaluation's details (from which target's), and what the model card
# says under each.
PICTURE_TARGETS = {"envelopes": "realism", "timbre_map": "reach"}
CAPTIONS = {
    "envelopes": "Loudness curves of test notes from instruments never trained on: the real note (black), "
                 "the generator's note with the same pitch, velocity, source and tags at latent 0 (orange; the "
                 "output calibration's gain taken off), and a random other test instrument's note at the same "
                 "pitch and velocity (grey), the baseline it must beat.",
    "timbre_map": "Each note's log-mel spectrum averaged over time, on the two principal axes of all the "
                  "points: the reach target's real test notes, the nearest other test instrument at the same "
                  "pitch and velocity, and the generator's random knob settings for the same note; lines join "
                  "each real note to its closest draw and to its nearest other instrument.",
}


def _spectrogram_grid(panels: Sequence[tuple[str, np.ndarray]], path: str, title: str, ncols: int = 5) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(panels)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.6 * nrows), squeeze=False,
                             sharex=True, sharey=True)
    image = None
    for ax, (label, audio) in zip(axes.flat, panels):
        spec = metrics.log_mel_db(audio, SAMPLE_RATE)
        image = ax.imshow(spec.T, origin="lower", aspect="auto", extent=[0, len(audio) / SAMPLE_RATE, 0, spec.shape[1]],
                          vmin=-100, vmax=-10, cmap="magma")
        ax.set_title(label, fontsize=9)
        ax.axvline(3.0, color="w", lw=0.6, ls="--")
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("time (s)")
    for ax in axes[:, 0]:
        ax.set_ylabel("mel band")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="dB")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=64)
    plt.close(fig)
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=72)
    _pyplot().close(fig)
    return path


def _instrument(note_str: str) -> str:
    """The instrument part of an NSynth note name (name-PPP-VVV)."""
    return note_str.rsplit("-", 2)[0]


def draw_envelopes(realism: dict, path: str, floor_db: float = metrics.ENVELOPE_FLOOR_DB) -> str:
    """realism details ("curves") -> envelopes.png."""
    plt = _pyplot()
    curves = realism["curves"]
    ncols = min(4, len(curves))
    nrows = -(-len(curves) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.6 * nrows), squeeze=False, sharex=True, sharey=True)
    for ax, c in zip(axes.flat, curves):
        t = np.arange(len(c["real"])) / c["frame_rate"]
        if c["random"] is not None:
            ax.plot(t, np.maximum(c["random"], floor_db), color="0.55", lw=1.0, alpha=0.7,
                    label="random other instrument")
        if c["generated"] is not None:
            ax.plot(t, np.maximum(c["generated"], floor_db), color="tab:orange", lw=1.3, label="generated (latent 0)")
        ax.plot(t, np.maximum(c["real"], floor_db), color="k", lw=1.3, label="real test note")
        ax.axvline(metrics.NOTE_OFF_S, color="0.3", lw=0.6, ls="--")
        ax.set_title(f"{_instrument(c['note_str'])}\npitch {c['pitch']}, velocity {c['velocity']}", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(curves):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("time (s)")
    for ax in axes[:, 0]:
        ax.set_ylabel("loudness (dB)")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles[::-1], labels[::-1], loc="lower center", ncol=3, fontsize=9, frameon=False)
    fig.suptitle("Loudness envelopes, unseen test instruments: real vs generated vs a random other instrument "
                 f"(floored at {floor_db:g} dB; note-off dashed)", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
    return _save(fig, path)


def draw_timbre_map(reach: dict, path: str) -> str:
    """reach details ("mel_mean_db") -> timbre_map.png: PCA (SVD) of the time-averaged log-mel vectors."""
    plt = _pyplot()
    mel = reach["mel_mean_db"]
    real, near = np.asarray(mel["real"], np.float64), np.asarray(mel["nearest_real"], np.float64)
    draws = [[d for d in per_note if d is not None] for per_note in mel["generated"]]
    best = reach["notes"]["best_draw"]
    gen_all = np.asarray([d for per_note in draws for d in per_note], np.float64).reshape(-1, real.shape[1])
    points = np.concatenate([real, near, gen_all])
    mean = points.mean(axis=0)
    _, sv, vt = np.linalg.svd(points - mean, full_matrices=False)
    share = sv**2 / np.sum(sv**2)

    def proj(x):
        return (np.asarray(x, np.float64) - mean) @ vt[:2].T

    p_real, p_near, p_gen = proj(real), proj(near), proj(gen_all)
    fig, ax = plt.subplots(figsize=(8.5, 6.5))
    ax.scatter(p_gen[:, 0], p_gen[:, 1], s=10, color="tab:orange", alpha=0.35, lw=0,
               label=f"generated: random knob settings ({len(gen_all)})")
    for k, per_note in enumerate(mel["generated"]):
        b = per_note[best[k]]
        if b is None:
            continue
        pb = proj([b])[0]
        ax.plot([p_real[k, 0], pb[0]], [p_real[k, 1], pb[1]], color="tab:orange", lw=0.8, alpha=0.8)
        ax.plot([p_real[k, 0], p_near[k, 0]], [p_real[k, 1], p_near[k, 1]], color="tab:blue", lw=0.8, alpha=0.6)
        ax.scatter([pb[0]], [pb[1]], s=30, color="tab:orange", edgecolor="k", lw=0.5, zorder=3,
                   label="closest draw to the real note" if k == 0 else None)
    ax.scatter(p_near[:, 0], p_near[:, 1], s=36, marker="^", color="tab:blue", edgecolor="k", lw=0.5, zorder=3,
               label="nearest other test instrument (same pitch, velocity)")
    ax.scatter(p_real[:, 0], p_real[:, 1], s=40, color="k", zorder=4, label=f"real test note ({len(real)})")
    ax.set_xlabel(f"principal axis 1 ({share[0]:.0%} of the variance)")
    ax.set_ylabel(f"principal axis 2 ({share[1]:.0%} of the variance)")
    ax.set_title(f"Timbre map: time-averaged log-mel spectra (64 bands, dB), {len(real)} unseen test notes, "
                 f"{len(draws[0]) if draws else 0} knob draws each", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best", framealpha=0.9)
    fig.tight_layout()
    return _save(fig, path)


def write_figures(checkpoint_dir: str | None, out_dir: str, latent_dim: int = 0,
                  details: dict | None = None) -> dict[str, str]:
    """Render the example notes and write the PNGs; with an evaluation's `details`, also the
    pictures drawn from them (`CAPTIONS`). Returns {name: path}."""
    from synth.generator import get_generator

    gen = get_generator(checkpoint_dir)
    os.makedirs(out_dir, exist_ok=True)
    sets: dict[str, tuple[str, list[tuple[str, NoteParams]]]] = {
        "sources": ("sources (pitch 60, velocity 100)",
                    [(s, BASE.replace(source=s)) for s in SOURCES]),
        "qualities": ("quality tags (pitch 60, velocity 100, acoustic)",
                      [("no tag", BASE)] + [(q, BASE.replace(qualities=[q])) for q in QUALITIES]),
        "pitches": ("pitches (acoustic, velocity 100)",
                    [(f"pitch {p}", BASE.replace(pitch=p)) for p in (36, 48, 60, 72, 84)]),
        "velocities": ("velocities (acoustic, pitch 60)",
                       [(f"velocity {v}", BASE.replace(velocity=v)) for v in VELOCITY_LAYERS]),
    }
    sweep = []
    for v in (-7.0, -3.5, 0.0, 3.5, 7.0):
        lat = [0.0] * LATENT_DIM
        lat[latent_dim] = v
        sweep.append((f"latent[{latent_dim}] = {v:+g}", BASE.replace(latent_sample=lat)))
    sets["latent_sweep"] = (f"latent dimension {latent_dim} from -7 to +7 (pitch 60, velocity 100, acoustic)", sweep)
    out = {}
    for name, (title, items) in sets.items():
        audio = gen.render_batch([p for _, p in items], SAMPLE_RATE)
        ncols = 4 if name == "qualities" else 5
        out[name] = _spectrogram_grid(list(zip([label for label, _ in items], audio)),
                                      os.path.join(out_dir, f"{name}.png"), title, ncols)
    details = details or {}
    for name, key, draw in (("envelopes", "curves", draw_envelopes), ("timbre_map", "mel_mean_db", draw_timbre_map)):
        target = PICTURE_TARGETS[name]
        if details.get(target, {}).get(key):
            out[name] = draw(details[target], os.path.join(out_dir, f"{name}.png"))
        else:
            log.info("%s.png not drawn: no %s details in this evaluation", name, target)
    return out


# ---------------------------------------------------------------------------------------------
# The model card.

def _inference_line(inf: dict | None) -> str:
    if not inf:
        return "not recorded"
    tags = inf.get("guided_tags")
    return (f"quality-tag guidance {inf.get('tag_guidance_z', '?')} on the timbre and "
            f"{inf.get('tag_guidance_loudness', '?')} on the loudness curve, for "
            f"{', '.join(tags) if tags else 'every tag'}. The envelope tags fast_decay and long_release "
            f"hold by construction, not by learning alone: rules on the loudness curve "
            f"(`synth.models.shape_envelope`) and a gain envelope on the rendered note (`synth.envelope`). "
            f"Inference rules version \"{inf.get('inference_version', '?')}\"")


MODEL_CARD_TEMPLATE = """# Model card: sound-generator neural instrument

*Generated by `sound-generator evaluate --model-card` on {evaluated_utc} UTC; edit the template
in `synth/figures.py`, not this file.*

## Model

Model version `{model_version}` (hash of the weight and config files in `{checkpoints}`).
Three stages, each a small Keras 3 model (see `synth/models.py`):
z_generator (conditioning + 16 performer latents -> timbre trajectory z) -> f0_ld_generator
(-> pitch and loudness curves) -> DDSP decoder (-> harmonic + filtered-noise synthesizer controls,
learned reverb). Renders 4 s notes (3 s held + 1 s release) at any sample rate from
`NoteParams`: pitch, velocity, source, NSynth quality tags, latent_sample.
Inference settings: {inference}.

Intended use: a live instrument played over OSC/MIDI, and offline note rendering. Not intended as
a faithful model of any particular recorded instrument.

## Data

{data_section}

## Training

How the weights were made, step by step, with times: [RECIPE.md](RECIPE.md).

{training_section}

## Evaluation

On the **{split}** split: {n_split_notes} notes of {n_split_instruments} instruments never trained on
(instruments unseen in train: {unseen}). Evaluated on {eval_hardware} in {seconds} s. Command:
`{command}` (full results with per-note details: `eval.json` beside this card where
written with `--out`). Metric definitions: `synth/evaluate.py`, `synth/metrics.py`.

| target | measured | target value | verdict |
|---|---|---|---|
{metrics_rows}

Overall: **{overall}**.

{tag_section}

## Pictures

{pictures_section}

## Limitations

- Trained only on notes rendered from {training_soundfonts}, not on
  recorded instruments; timbres outside that palette are out of reach.
- Quality tags are measured by heuristics (`synth/data/qualities.py`), so the tag conditioning
  is only as meaningful as those analyzers.
- The networks generate 4 s notes (note-off at 3 s). A longer hold (`render --hold`, the live
  voices) is built in control space from those curves (`synth.hold`): its sustain is extended
  from the generated held part, not generated anew.
"""


def _rel(path: str, start: str) -> str:
    return os.path.relpath(os.path.abspath(path), os.path.dirname(os.path.abspath(start)))


def _shown(path: str) -> str:
    """A path as the card shows it: relative to the working directory when inside it."""
    rel = os.path.relpath(os.path.abspath(path))
    return path if rel.startswith("..") else rel


def _build_record(data_dir: str | None) -> dict | None:
    path = os.path.join(data_dir or "", "build.json")
    if not data_dir or not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def _sets_table(b: dict) -> list[str]:
    """The SoundFonts of a multi-set build (`dataset build --sets`), with packages and licences."""
    per_set = b.get("counts", {}).get("per_set", {})
    rows = ["| set | file | Debian package | licence | instruments train / valid / test | notes train / valid / test |",
            "|---|---|---|---|---|---|"]
    for st in b.get("sets", []):
        c = per_set.get(st.get("tag"), {})
        ins, notes = c.get("instruments_per_split", {}), c.get("notes_per_split", {})
        rows.append(f"| {st.get('tag')} | {st.get('file')} | {st.get('package')} ({st.get('package_version')}) | "
                    f"{st.get('licence')} | {' / '.join(str(ins.get(k, 0)) for k in ('train', 'valid', 'test'))} | "
                    f"{' / '.join(str(notes.get(k, 0)) for k in ('train', 'valid', 'test'))} |")
    return rows


def _data_section(data_dir: str, report: dict) -> str:
    b = _build_record(data_dir)
    if b is None:
        return (f"Evaluation data set `{_shown(data_dir)}` (NSynth layout): {report.get('n_train_instruments')} "
                f"training instruments; {report.get('n_split_notes')} {report.get('split')} notes of "
                f"{report.get('n_split_instruments')} instruments.")
    counts = b.get("counts", {})
    pitches = b.get("pitches", [0])
    common = (f"pitches {min(pitches)}-{max(pitches)}{' (even)' if len(pitches) < max(pitches) - min(pitches) else ''}, "
              f"velocities {b.get('velocities', '?')}, 16 kHz, 4 s notes (3 s held + 1 s release).")
    if b.get("kind") == "multi":
        lines = [f"Evaluation data set `{_shown(data_dir)}` (NSynth layout), rendered with FluidSynth from "
                 f"{len(b.get('sets', []))} freely licensed General MIDI SoundFonts that Debian ships; {common} "
                 f"Split by instrument ({b.get('split_rule')}), so near-duplicate presets never straddle splits.", "",
                 *_sets_table(b), ""]
    else:
        sf = b.get("soundfont", {})
        lines = [f"Evaluation data set `{_shown(data_dir)}` (NSynth layout), split by instrument (GM program "
                 f"p: test if p % 10 == 0, valid if p % 10 == 5, else train), rendered with FluidSynth from "
                 f"`{os.path.basename(sf.get('path', '?'))}`: {len(b.get('programs', []))} programs, {common}"]
    if counts:
        lines.append(f"Notes per split: {counts.get('per_split')}; instruments per split: "
                     f"{counts.get('instruments_per_split')}; notes per source: {counts.get('per_source')}.")
    return "\n".join(lines)


def _training_soundfonts(checkpoint_dir: str) -> str:
    """What the autoencoder was trained on, from its training record and that data set's build.json."""
    path = os.path.join(checkpoint_dir, "ddsp_generator", "config.json")
    if not os.path.isfile(path):
        return "an unrecorded data set"
    with open(path) as f:
        data = json.load(f).get("training", {}).get("data")
    b = _build_record(data)
    if b is None:
        return f"the data set `{_shown(data)}` (no build record found)" if data else "an unrecorded data set"
    if b.get("kind") == "multi":
        files = ", ".join(st.get("file", "?") for st in b.get("sets", []))
        return f"{len(b.get('sets', []))} General MIDI SoundFonts ({files})"
    return f"one General MIDI SoundFont ({os.path.basename(b.get('soundfont', {}).get('path', '?'))})"


def _selection(info: dict) -> str:
    """The training run's note filters (`train --programs/--pitches`), as the command took them."""
    parts = [f"{key} {int_ranges(info[key])}" for key in ("programs", "pitches") if info.get(key)]
    return ", ".join(parts) or "all"


def _training_section(checkpoint_dir: str) -> str:
    rows = ["| stage | steps | batch | seconds | finished (UTC) | data | notes of |", "|---|---|---|---|---|---|---|"]
    found = False
    for stage in ("ddsp_generator", "z_generator", "f0_ld_generator"):
        path = os.path.join(checkpoint_dir, stage, "config.json")
        if not os.path.isfile(path):
            continue
        with open(path) as f:
            conf = json.load(f)
        for key, label in (("training", stage), ("end_to_end", f"{stage} (end-to-end fine-tuning)")):
            info = conf.get(key)
            if info:
                found = True
                rows.append(f"| {label} | {info.get('steps', '?')} | {info.get('batch_size', '?')} | "
                            f"{info.get('seconds', '?')} | {info.get('finished_utc', '?')} | "
                            f"`{_shown(info.get('data', '?'))}` | {_selection(info)} |")
    return "\n".join(rows) if found else "No training records found in the checkpoints' config.json files."


def _command(report: dict) -> str:
    """The evaluate command line that reproduces the report's sampling."""
    st = report.get("settings", {})
    flags = {"--max-notes": st.get("max_notes"), "--recon-notes": st.get("recon_notes"),
             "--pitch-repeats": st.get("pitch_repeats"), "--velocity-combos": st.get("velocity_combos"),
             "--tag-pairs": st.get("tag_pairs"), "--latent-steps": st.get("latent_steps"),
             "--reach-notes": st.get("reach_notes"), "--reach-draws": st.get("reach_draws"), "--seed": st.get("seed")}
    data = _shown(report.get("data", "DIR"))
    parts = [f"sound-generator evaluate --data {data}"] + [f"{k} {v}" for k, v in flags.items() if v is not None]
    return " ".join(parts)


def write_model_card(report: dict, path: str, pictures: dict[str, str] | None = None) -> str:
    """Fill MODEL_CARD_TEMPLATE from an evaluation report; returns the path written."""
    t = report.get("targets", {})
    checkpoint_dir = report.get("checkpoints", "checkpoints")
    hw = report.get("hardware", {})
    tag_section = ""
    if "tags" in t:
        lines = ["All ten tags (share of with/without pairs whose analyzer score rises; the five targets "
                 "marked *; pairs whose note without the tag already scores at the analyzer's ceiling "
                 "cannot rise and are counted apart):", "",
                 "| tag | pairs up / defined | share | at ceiling | mean score change |", "|---|---|---|---|---|"]
        for q, r in t["tags"]["per_tag"].items():
            lines.append(f"| {q}{' *' if r['target'] else ''} | {r['n_up']}/{r['n_defined']} | "
                         f"{fmt_value(r['fraction'], '.0%')} | {r.get('n_saturated', 0)} | {fmt_value(r['mean_delta'], '.3g')} |")
        tag_section = "\n".join(lines)
    pics = []
    for name, p in (pictures or {}).items():
        caption = f"{CAPTIONS[name]}\n\n" if name in CAPTIONS else ""
        pics.append(f"**{name.replace('_', ' ')}**\n\n{caption}![{name}]({_rel(p, path)})\n")
    for name, target in PICTURE_TARGETS.items():
        if pictures and name not in pictures:
            pics.append(f"**{name.replace('_', ' ')}**: not drawn (no per-note details of the {target} target "
                        f"in this evaluation).\n")
    for loss in sorted(glob.glob(os.path.join(checkpoint_dir, "**", "loss*.png"), recursive=True)):
        pics.append(f"**training loss: {os.path.relpath(loss, checkpoint_dir)}**\n\n![loss]({_rel(loss, path)})\n")
    text = MODEL_CARD_TEMPLATE.format(
        evaluated_utc=report.get("evaluated_utc", time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())),
        model_version=report.get("model_version", "?"),
        inference=_inference_line(report.get("inference")),
        checkpoints=os.path.basename(os.path.normpath(checkpoint_dir)) + "/",
        data_section=_data_section(report.get("data", ""), report),
        training_section=_training_section(checkpoint_dir),
        training_soundfonts=_training_soundfonts(checkpoint_dir),
        split=report.get("split", "test"),
        n_split_notes=report.get("n_split_notes"),
        n_split_instruments=report.get("n_split_instruments"),
        unseen=report.get("split_instruments_unseen_in_train"),
        eval_hardware=f"{hw.get('cpu', '?')} ({hw.get('cpu_count', '?')} CPUs, {hw.get('gpus', 0)} GPUs, "
                      f"TensorFlow {hw.get('tensorflow', '?')})",
        seconds=report.get("seconds"),
        command=_command(report),
        metrics_rows="\n".join(card_rows(t)),
        overall="pass" if report.get("pass") else "FAIL (see the table)",
        tag_section=tag_section,
        pictures_section="\n".join(pics) if pics else "No pictures were written (run with --figures).",
    )
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path
