"""Bulk export speed (`export --bank`): notes per second on this machine's cores, on one worker and
through a local Ray, with what a cluster projection needs (per-worker rate, start-up, driver cost).

A bank of BANK_PRESETS factory presets x keys BANK_KEYS x layers BANK_LAYERS (152 notes; --quick:
2 x 2 x 2), exported three times into a temporary folder (each run from scratch):

* `export_notes_per_s`          a process pool with one worker per core (the default), wall time of
  the whole call: starting the processes, loading the model in each, rendering, writing the files.
* `export_notes_per_s_steady`   the same run once every worker has returned its first batch.
* `export_worker_notes_per_s`   one worker process (steady, after its first batch): the per-worker
  rate a cluster multiplies.
* `export_worker_cpu_ms_per_note` the worker's CPU time per note (process time around each batch,
  one compute thread): 1000 / it is what one core does when nothing else wants it.
* `export_worker_start_s`       that worker's start: spawn, import, load the model, compile the
  batched shape (its first batch back, less the batch's time at the steady rate).
* `export_ray_notes_per_s`, `_steady`: the same bank on a local Ray with 2 CPUs (2 actors), started
  in this process (`ray_address="local"`), wall time including `export_ray_init_s`.
* `export_driver_ms_per_note`   the driver's time per note writing the WAV (atomically), its
  journal line and, when a preset completes, its .sfz (receiving not included), in the pool run.
* `export_result_kb_per_note`   the WAV bytes that travel back per note.
`export_load_avg_start`, `_end`: the machine's 1-minute load average before and after (other jobs).
Ray figures are left out (with `export_ray_skipped` = 1) when Ray is not installed; a steady rate
is left out when a run has no more batches than workers. --quick uses batches of 2 notes.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import time

BANK_PRESETS = ["dark-swell-acoustic", "bright-pluck-acoustic", "mellow-swell-synthetic", "bright-sustain-electronic"]
BANK_KEYS = (24, 96, 4)     # lo, hi, every: 19 keys
BANK_LAYERS = (64, 127)
QUICK_KEYS = (60, 63, 3)


def _steady(report, workers: int) -> float | None:
    """Notes per second after every worker has returned one batch (arrivals after the workers-th);
    None when there are no more batches than workers."""
    arrivals = report.arrivals
    if len(arrivals) <= workers:
        return None
    t0 = arrivals[workers - 1][0]
    notes = sum(n for _, n in arrivals[workers:])
    return notes / max(arrivals[-1][0] - t0, 1e-9)


def run(quick: bool = False) -> dict[str, float]:
    from synth.export import ExportOptions, sampled_keys
    from synth.export_bank import DEFAULT_BATCH, export_bank
    from synth.presets import PresetStore

    store = PresetStore(tempfile.mkdtemp(prefix="bench-presets-"))
    presets = [store.load(name) for name in (BANK_PRESETS[:2] if quick else BANK_PRESETS)]
    lo, hi, every = QUICK_KEYS if quick else BANK_KEYS
    options = ExportOptions.make(sampled_keys(lo, hi, every), BANK_LAYERS, lo, hi)
    n_notes = len(presets) * len(options.regions())
    cores = os.cpu_count() or 1
    batch = 2 if quick else DEFAULT_BATCH  # --quick: small batches, so that there is a steady part
    out: dict[str, float] = {"export_bank_notes": float(n_notes), "export_batch_notes": float(batch),
                             "export_load_avg_start": os.getloadavg()[0]}

    def export(**kwargs):
        folder = tempfile.mkdtemp(prefix="bench-export-")
        try:
            t0 = time.perf_counter()
            report = export_bank(presets, folder, options, progress=False, batch=batch, **kwargs)
            wall = time.perf_counter() - t0
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        assert report.rendered == n_notes, report
        return report, wall

    report, wall = export(workers=cores, in_process=False)
    out["export_notes_per_s"] = n_notes / wall
    steady = {"export_notes_per_s_steady": _steady(report, cores)}
    out["export_workers"] = float(cores)
    out["export_driver_ms_per_note"] = report.write_s / report.rendered * 1000
    out["export_result_kb_per_note"] = report.result_bytes / report.rendered / 1024

    report, wall = export(workers=1, in_process=False)
    rate = steady["export_worker_notes_per_s"] = _steady(report, 1)
    out["export_worker_cpu_ms_per_note"] = report.worker_cpu_s / report.rendered * 1000
    if rate:
        out["export_worker_start_s"] = report.first_result_s - report.arrivals[0][1] / rate
    out["export_worker_wall_notes_per_s"] = n_notes / wall

    if importlib.util.find_spec("ray") is None:
        out["export_ray_skipped"] = 1.0
    else:
        report, wall = export(workers=2, ray_address="local")
        out["export_ray_notes_per_s"] = n_notes / wall
        steady["export_ray_notes_per_s_steady"] = _steady(report, 2)
        out["export_ray_init_s"] = float(report.ray_init_s)
    out.update({k: v for k, v in steady.items() if v is not None})
    out["export_load_avg_end"] = os.getloadavg()[0]
    return out
