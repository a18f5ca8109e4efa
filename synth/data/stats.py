"""`sound-generator dataset stats DIR`: what a data set is made of, as text and as a picture."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import scipy.signal

from synth.data.gm import FAMILIES
from synth.data.reader import read_audio, read_examples
from synth.params import QUALITIES, SOURCES

SPLITS = ("train", "valid", "test")


def _table(title: str, rows: dict[str, Counter], keys: list) -> str:
    width = max([len(str(k)) for k in keys] + [len(title)])
    head = f"{title:<{width}}  " + "  ".join(f"{s:>7}" for s in rows) + "    total"
    lines = [head, "-" * len(head)]
    for k in keys:
        counts = [rows[s][k] for s in rows]
        lines.append(f"{str(k):<{width}}  " + "  ".join(f"{c:>7}" for c in counts) + f"  {sum(counts):>7}")
    return "\n".join(lines)


def _family_name(e: dict) -> str:
    fam = e.get("instrument_family_str")
    if fam is None:
        fam = FAMILIES[int(e["instrument_family"])]
    return fam


def dataset_stats(data_dir: Path, png: Path | None = None) -> tuple[str, Path]:
    """(text report, path of the PNG written). Works on ours and on NSynth's json/wav layout."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data_dir = Path(data_dir)
    splits = [s for s in SPLITS if (data_dir / s / "examples.json").is_file()]
    if not splits:
        raise FileNotFoundError(f"DIR: no <split>/examples.json under {data_dir} (splits: {', '.join(SPLITS)})")
    examples = {s: read_examples(data_dir, s) for s in splits}
    by = {name: {s: Counter() for s in splits} for name in ("source", "family", "velocity", "quality", "pitch")}
    instruments = {s: set() for s in splits}
    # Multi-set builds (`dataset build --sets`) name each example's SoundFont set.
    sets = sorted({e["soundfont_set"] for s in splits for e in examples[s] if "soundfont_set" in e})
    by_set = {s: Counter() for s in splits}
    inst_by_set = {s: Counter() for s in splits}
    for s in splits:
        for e in examples[s]:
            if "soundfont_set" in e:
                by_set[s][e["soundfont_set"]] += 1
            by["source"][s][SOURCES[e["source_id"]]] += 1
            by["family"][s][_family_name(e)] += 1
            by["velocity"][s][int(e["velocity"])] += 1
            by["pitch"][s][int(e["pitch"])] += 1
            for q, v in zip(QUALITIES, e["qualities"]):
                by["quality"][s][q] += int(v)
            instruments[s].add(e["instrument_str"] if "instrument_str" in e else e["instrument"])
    total = sum(len(examples[s]) for s in splits)
    lines = [f"data set {data_dir}: {total} notes"]
    lines.append("  ".join(f"{s}: {len(examples[s])} notes, {len(instruments[s])} instruments" for s in splits))
    shared = set.intersection(*instruments.values()) if len(splits) > 1 else set()
    lines.append(f"instruments in more than one split: {len(shared)}")
    pitches = [p for s in splits for p in by["pitch"][s].elements()]
    lines.append(f"pitch range: {min(pitches)}..{max(pitches)}")
    lines.append("")
    lines.append(_table("source", by["source"], list(SOURCES)))
    lines.append("")
    lines.append(_table("family", by["family"], [f for f in FAMILIES if any(by["family"][s][f] for s in splits)]))
    lines.append("")
    lines.append(_table("velocity", by["velocity"], sorted({v for s in splits for v in by["velocity"][s]})))
    lines.append("")
    lines.append(_table("quality", by["quality"], list(QUALITIES)))
    if sets:
        for s in splits:
            for name in {e["instrument_str"]: e for e in examples[s]}.values():
                inst_by_set[s][name["soundfont_set"]] += 1
        lines.append("")
        lines.append(_table("notes per set", by_set, sets))
        lines.append("")
        lines.append(_table("instruments per set", inst_by_set, sets))
    text = "\n".join(lines)

    png = png or data_dir / "stats.png"
    rows = 5 if sets else 4
    fig = plt.figure(figsize=(16, 14 if rows == 4 else 17.5))
    grid = fig.add_gridspec(rows, 4, hspace=0.6, wspace=0.35)

    def bars(ax, title, keys, counter_by_split, rotate=False):
        x = np.arange(len(keys))
        bottom = np.zeros(len(keys))
        for s in splits:
            vals = np.array([counter_by_split[s][k] for k in keys], dtype=float)
            ax.bar(x, vals, bottom=bottom, label=s)
            bottom += vals
        ax.set_xticks(x)
        ax.set_xticklabels([str(k) for k in keys], rotation=60 if rotate else 0, ha="right" if rotate else "center", fontsize=8)
        ax.set_title(title)
        ax.legend(fontsize=7)

    bars(fig.add_subplot(grid[0, 0]), "notes per source", list(SOURCES), by["source"])
    bars(fig.add_subplot(grid[0, 1:3]), "notes per family", list(FAMILIES), by["family"], rotate=True)
    bars(fig.add_subplot(grid[0, 3]), "notes per velocity",
         sorted({v for s in splits for v in by["velocity"][s]}), by["velocity"])
    bars(fig.add_subplot(grid[1, 0:2]), "notes tagged per quality", list(QUALITIES), by["quality"], rotate=True)
    ax = fig.add_subplot(grid[1, 2:4])
    prange = range(min(pitches), max(pitches) + 1)
    bottom = np.zeros(len(prange))
    for s in splits:
        vals = np.array([by["pitch"][s][p] for p in prange], dtype=float)
        ax.bar(list(prange), vals, bottom=bottom, width=1.0, label=s)
        bottom += vals
    ax.set_title("notes per MIDI pitch")
    ax.legend(fontsize=7)

    # Score distributions (our builds carry the continuous scores; NSynth's download does not).
    scored = [e for s in splits for e in examples[s] if "quality_scores" in e]
    if scored:
        for i, q in enumerate(("bright", "fast_decay", "percussive", "reverb")):
            ax = fig.add_subplot(grid[2, i])
            v = np.array([e["quality_scores"][q] for e in scored if e["quality_scores"][q] is not None], dtype=float)
            tagged = np.array([e["qualities"][QUALITIES.index(q)] for e in scored if e["quality_scores"][q] is not None])
            ax.hist([v[tagged == 0], v[tagged == 1]], bins=40, stacked=True, label=["untagged", "tagged"])
            ax.set_title(f"{q} score")
            ax.legend(fontsize=7)

    # A few example spectrograms: one note per source, mid pitch, loudest velocity available.
    picks = []
    for src in range(len(SOURCES)):
        cands = [e for s in splits for e in examples[s] if e["source_id"] == src]
        if cands:
            cands.sort(key=lambda e: (abs(int(e["pitch"]) - 60), -int(e["velocity"]), e["note_str"]))
            picks.append(cands[0])
    all_ex = sorted((e for s in splits for e in examples[s]), key=lambda e: e["note_str"])
    for e in all_ex[:: max(1, len(all_ex) // 3)]:
        if len(picks) >= 4:
            break
        if e not in picks and Path(e["path"]).is_file():
            picks.append(e)
    for i, e in enumerate(picks[:4]):
        ax = fig.add_subplot(grid[3, i])
        audio = read_audio(e["path"])
        freqs, times, power = scipy.signal.spectrogram(audio, fs=16000, window="hann", nperseg=512, noverlap=384)
        db = 10 * np.log10(power + 1e-20)
        ax.pcolormesh(times, freqs, db, cmap="magma", vmin=db.max() - 90, vmax=db.max(), shading="auto")
        ax.axvline(3.0, color="w", lw=0.8, ls="--")
        ax.set_title(f"{e['note_str']}", fontsize=7)
        ax.set_xlabel("s")
        ax.set_ylabel("Hz")
    if sets:
        bars(fig.add_subplot(grid[4, 0:2]), "notes per SoundFont set", sets, by_set)
        bars(fig.add_subplot(grid[4, 2:4]), "instruments per SoundFont set", sets, inst_by_set)
    fig.suptitle(f"{data_dir.name}: {total} notes")
    fig.savefig(png, dpi=80)
    plt.close(fig)
    return text, png
