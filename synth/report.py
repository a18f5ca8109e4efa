"""How an evaluation report reads: one row per target, for the terminal table and the model card.

`synth.evaluate` measures and returns a report (a dict); this module only formats it, so the two
places that show the results (`evaluate`'s table and `synth.figures.write_model_card`) say the
same thing. Each target's summary carries the thresholds it was judged by (`limit` or `limits`,
filled by `synth.evaluate` from its constants), and the limit column is written from those, never
typed again here. Nothing here imports `synth.evaluate` or `synth.figures`.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class Row(NamedTuple):
    name: str
    measured: str
    limit: str
    passed: bool | None  # None: skipped, or shown for information only


def fmt_value(x: Any, spec: str = ".2f") -> str:
    """A report value for a table: numbers with `spec`, None as n/a, anything else as text."""
    if x is None:
        return "n/a"
    return format(x, spec) if isinstance(x, (int, float)) and not isinstance(x, bool) else str(x)


def verdict(passed: bool | None) -> str:
    return "PASS" if passed is True else "FAIL" if passed is False else "skip"


def target_rows(t: dict) -> list[Row]:
    """The rows of a report's "targets" dict, in the evaluation's order."""
    rows: list[Row] = []
    if "pitch" in t:
        p, lim = t["pitch"], t["pitch"]["limits"]
        rows.append(Row(f"pitch ({p.get('n_notes')} notes)",
                        f"median |error| {fmt_value(p['median_abs_cents'])} cents, max {fmt_value(p['max_abs_cents'])}, "
                        f"{p['n_over_limit']} over {lim['max_abs_cents']:g}, {p['n_unmeasurable']} unmeasurable",
                        f"median <= {lim['median_abs_cents']:g}, none over {lim['max_abs_cents']:g}", p["pass"]))
    if "velocity" in t:
        v = t["velocity"]
        levels = ", ".join(f"{k}: {fmt_value(x, '.1f')}" for k, x in v["mean_loudness_db_per_velocity"].items())
        rows.append(Row(f"velocity ({v['n_combos']} combos)",
                        f"{v['n_rising']}/{v['n_steps']} steps louder ({fmt_value(v['fraction_rising'], '.1%')}); "
                        f"mean dB per velocity {levels}", f">= {v['limit']:.0%} of steps", v["pass"]))
    if "dynamics" in t:
        dy = t["dynamics"]
        rows.append(Row(f"dynamics ({dy['n_cells']} pitch x velocity cells)",
                        f"{dy['n_within']} within the limit of the data's median peak (largest "
                        f"{fmt_value(dy['max_abs_difference_db'], '.1f')} dB, median "
                        f"{fmt_value(dy['median_difference_db'], '+.1f')}); velocity 25 to 127 spans "
                        f"{fmt_value(dy['generated_velocity_span_db'], '.1f')} dB, the data "
                        f"{fmt_value(dy['data_velocity_span_db'], '.1f')} dB (model level, before the output gain)",
                        f"every cell within {dy['limits']['max_abs_difference_db']:g} dB", dy["pass"]))
    if "tags" in t:
        tg = t["tags"]
        moved = ", ".join(f"{q} {fmt_value(tg['per_tag'][q]['fraction'], '.0%')}" for q in tg["target_tags"])
        rows.append(Row("tags (pairs moving the analyzer score up)", moved, f"each >= {tg['limit']:.0%}", tg["pass"]))
    if "latent" in t:
        la, lim = t["latent"], t["latent"]["limits"]
        rows.append(Row(f"latent sweeps -7..+7 ({la['n_dims']} dims)",
                        f"{la['n_dims_moving']} dims move (median {fmt_value(la['median_endpoint_distance_db'])} dB), max "
                        f"local jump ratio {fmt_value(la['max_local_jump_ratio'])}, finite {la['all_finite']}, peak "
                        f"{fmt_value(la['peak_max'], '.3f')} (raw {fmt_value(la['raw_peak_max'], '.3f')})",
                        f"every dim >= {lim['min_endpoint_distance_db']:g} dB, jump <= {lim['max_local_jump_ratio']:g}, "
                        f"finite, peak <= {lim['max_peak']:g}", la["pass"]))
    if "knobs" in t:
        k, lim = t["knobs"], t["knobs"]["limits"]
        rows.append(Row(f"knobs ({k['n_notes']} random settings of the cube)",
                        f"{k['n_inaudible']} inaudible (min peak {fmt_value(k['min_peak_dbfs'], '.1f')} dBFS, largest drop "
                        f"vs latent 0 {fmt_value(k['max_drop_vs_latent0_db'], '.1f')} dB), "
                        f"{fmt_value(k['fraction_on_pitch'], '.1%')} within {lim['pitch_cents']:g} cents, "
                        f"{k['n_non_finite']} non-finite, {k['n_clipped']} clipped",
                        f"every note >= {lim['min_peak_dbfs']:g} dBFS and within {lim['max_drop_db']:g} dB of latent 0; "
                        f">= {lim['min_fraction_on_pitch']:.0%} on pitch", k["pass"]))
    if "level" in t:
        lv, lim = t["level"], t["level"]["limits"]
        rows.append(Row(f"level (velocity {lim['velocity']}, latent 0, pitches {lim['pitches'][0]}-{lim['pitches'][1]})",
                        f"median peak {fmt_value(lv['median_peak_dbfs'], '.1f')} dBFS ({fmt_value(lv['min_peak_dbfs'], '.1f')} "
                        f"to {fmt_value(lv['max_peak_dbfs'], '.1f')}), {lv['n_pitches_in_band']}/{lv['n_pitches']} pitches "
                        f"in the band; output gain {fmt_value(lv['output_gain_db'], '.2f')} dB",
                        f"{lim['target_dbfs']:g} +- {lim['tolerance_db']:g} dBFS", lv["pass"]))
    if "releases" in t:
        r, lr, lim = t["releases"], t["releases"]["long_release"], t["releases"]["limits"]
        rows.append(Row(f"releases ({r['n_timbres']} timbres at latent 0)",
                        f"{fmt_value(r['fraction_ending'], '.0%')} fall {lim['drop_db']:g} dB within {lim['within_s']:g} s "
                        f"of note-off (median {fmt_value(r['median_release_s'])} s, {r['n_never_falling']} never); "
                        f"long_release: {fmt_value(lr['fraction_pass'], '.0%')} of pairs pass (longer "
                        f"{fmt_value(lr['fraction_longer'], '.0%')}, held level kept {fmt_value(lr['fraction_held_kept'], '.0%')})",
                        f">= {lim['min_fraction']:.0%}; long_release >= {lim['long_release_growth']:g}x with the held level "
                        f"within {lim['long_release_max_held_drop_db']:g} dB in >= {lim['long_release_min_fraction']:.0%}",
                        r["pass"]))
    if "realism" in t:
        r = t["realism"]
        if "skipped" in r:
            rows.append(Row("realism", r["skipped"], "beats the baselines", None))
        else:
            must_beat = r.get("limits", {}).get("must_beat", {})
            alone = f", {r['n_notes_without_random']} notes without one" if r.get("n_notes_without_random") else ""
            for name, label in (("envelope_error", "loudness envelope error"), ("centroid_error", "centroid error"),
                                ("log_mel_error", "log-mel error")):
                if name not in r:  # a report from before the measure
                    continue
                e, parts = r[name], []
                if "random_mean" in e:
                    parts.append(f"a random other test instrument {fmt_value(e['random_mean'], '.3f')} (beaten on "
                                 f"{fmt_value(e['fraction_notes_beating_random'], '.0%')} of notes{alone})")
                if "baseline_mean" in e:
                    parts.append(f"the training mean {fmt_value(e['baseline_mean'], '.3f')} (beaten on "
                                 f"{fmt_value(e['fraction_notes_beating_baseline'], '.0%')})")
                rows.append(Row(f"realism: {label} ({r['n_notes']} notes)",
                                f"generated {fmt_value(e['generated_mean'], '.3f')} {e['unit']} (median "
                                f"{fmt_value(e['generated_median'], '.3f')}) vs " + ", ".join(parts),
                                "mean below " + " and ".join(must_beat.get(name, ["the baseline"])), e["pass"]))
    if "reach" in t:
        r = t["reach"]
        if "skipped" in r:
            rows.append(Row("reach", r["skipped"], "closest draw as close as the nearest other instrument", None))
        else:
            lim = r["limits"]
            few = f"; only {r['n_draws']} draws, fewer than {lim['min_draws']}: no verdict" if r["too_few_draws"] else ""
            ratio = "" if lim["max_ratio"] == 1.0 else f"{lim['max_ratio']:g} x "
            rows.append(Row(f"reach ({r['n_notes']} notes of {r['n_instruments']} instruments, {r['n_draws']} knob draws each)",
                            f"closest draw {fmt_value(r['best_generated_mean_db'])} dB log-mel (median "
                            f"{fmt_value(r['best_generated_median_db'])}) vs nearest of "
                            f"{fmt_value(r['mean_others_used'], '.0f')} other test instruments "
                            f"{fmt_value(r['nearest_real_mean_db'])} (median {fmt_value(r['nearest_real_median_db'])}); "
                            f"as close or closer on {fmt_value(r['fraction_generated_at_least_as_close'], '.0%')} of notes"
                            f"{few}",
                            f"mean closest draw <= {ratio}mean nearest other instrument, >= {lim['min_draws']} draws",
                            r["pass"]))
    if "reconstruction" in t:
        r = t["reconstruction"]
        if r["pass"] is None:
            rows.append(Row("reconstruction", r.get("skipped", ""), "test <= limit x train", None))
        else:
            rows.append(Row("reconstruction (autoencoder spectral loss)",
                            f"test {fmt_value(r['test_loss_mean'], '.3f')} vs train {fmt_value(r['train_loss_mean'], '.3f')} "
                            f"(x{fmt_value(r['test_over_train'])}; silence scores "
                            f"{fmt_value(r.get('test_loss_of_silence_mean'), '.3f')})",
                            f"test <= {r['limit']:g} x train", r["pass"]))
    return rows


def tag_rows(t: dict) -> list[tuple[str, str, bool | None]]:
    """Every tag's line (name, text, verdict; None for the tags that are not targets)."""
    if "tags" not in t:
        return []
    tg = t["tags"]
    out = []
    for q, r in tg["per_tag"].items():
        sat = f", {r['n_saturated']} at the ceiling" if r.get("n_saturated") else ""
        ok = (r["fraction"] is not None and r["fraction"] >= tg["limit"]) if r["target"] else None
        out.append((f"tag {q}", f"{r['n_up']}/{r['n_defined']} pairs move up ({fmt_value(r['fraction'], '.0%')}{sat}), "
                                f"mean delta {fmt_value(r['mean_delta'], '.3g')}", ok))
    return out


def format_table(report: dict) -> str:
    """The terminal summary of a report: a line per target (and per tag), the verdict first."""
    t = report["targets"]
    lines = [f"model {report['model_version']}  data {report['data']} ({report['split']}: "
             f"{report['n_split_notes']} notes, {report['n_split_instruments']} instruments, unseen in "
             f"train: {report['split_instruments_unseen_in_train']})", ""]
    rows = [(name, text, verdict(ok) if ok is not None else "info") for name, text, ok in tag_rows(t)]
    rows += [(r.name, f"{r.measured}  [target: {r.limit}]", verdict(r.passed)) for r in target_rows(t)]
    width = max(len(r[0]) for r in rows) if rows else 10
    lines += [f"{name:<{width}}  {mark:<4}  {text}" for name, text, mark in rows]
    lines += ["", f"overall: {verdict(report['pass'])}  ({report['seconds']} s)"]
    return "\n".join(lines)


def card_rows(t: dict) -> list[str]:
    """The model card's results table rows (Markdown)."""
    marks = {True: "pass", False: "**FAIL**", None: "skipped"}
    return [f"| {r.name} | {r.measured} | {r.limit} | {marks[r.passed]} |" for r in target_rows(t)]
