"""Bulk export: many presets as sample instruments into one folder, on this machine's cores or on
a Ray cluster, resumable.

    export_bank(presets, out_dir, options, workers=None, ray_address=None) -> BankReport

`DIR/<preset name>/` gets exactly what `export --preset` writes (`<name>.sfz` and
`samples/<key>_v<layer>.wav`), from the same two functions (`synth.export.render_samples`,
`synth.export.sfz_text`), so the files are the same bytes whichever way they were made.

* **Where notes render.** Every (preset, sampled key, velocity layer) is one note; notes go out in
  batches (`batch`, default DEFAULT_BATCH) to workers that load the generator once each:
  - in this process (`workers=1`);
  - a pool of `workers` processes started with "spawn" (default: one per core), each with one
    compute thread (WORKER_THREADS);
  - Ray actors (`ray_address`: "auto" = the running cluster, as Ray finds it; "local" = a private
    Ray started for this run; else a cluster address), one CPU each, `workers` of them (default:
    the cluster's CPUs), each with at most IN_FLIGHT batches queued. Every node needs this package
    and the same checkpoints: a worker whose model version differs from the driver's stops the run.
  Workers return each note's WAV bytes and region facts; only the driver writes files.
* **Same bytes everywhere.** A sample is a pure function of the note, the sample rate and the model
  (see `render_samples`: noise seeded by the note, the network always batched the same way), not of
  the batch, the process or the number of threads. Checked by the tests against `export --preset`,
  file by file. (Machines of another CPU type may differ in the last bits of the network's floats.)
* **Resume.** Each sample is written atomically (`write_atomic`) and then recorded, one JSON line,
  in `DIR/.export-journal.jsonl` under its `sample_id`: a hash of the note (timbre, key, layer), the
  sample rate, the model version and `SAMPLE_FORMAT`. A later run reuses a sample only when its
  record has the id the run would render and the file is there with the recorded size; anything
  else is rendered again. `--pitches`, `--every`, `--velocities` and `--bend` choose which samples
  exist and write the .sfz, not a sample's bytes, so runs that differ only there share samples.
  A preset's .sfz is written (atomically) once all its samples are there. Stopping a run (Ctrl-C,
  kill) loses at most the batches in flight; the same command again renders only what is missing.
* **Progress**: one tqdm bar over every note of the bank (those already there count as done).

No OSC here; the command line is `sound-generator export --bank` (synth/export_cli.py).
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing as mp
import os
import signal
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from synth import export
from synth.export import SAMPLES_DIR, ExportOptions, Region, RenderedSample, sample_from_meta, sample_id, sfz_text
from synth.fast_render import limit_compute_threads
from synth.generator import model_version_of
from synth.presets import Preset, PresetError, PresetStore

log = logging.getLogger("synth.export")

JOURNAL = ".export-journal.jsonl"
DEFAULT_BATCH = 16      # notes per task: one network call serves up to 64, the rest is numpy per note
IN_FLIGHT = 2           # Ray: batches queued per actor (one rendering, one waiting)
WORKER_THREADS = 1      # compute threads per worker process (TensorFlow's and OpenMP's pools)
RAY_EXTRA_HINT = "pip install '.[ray]' (or: pip install 'ray>=2.31')"


class BankError(PresetError):
    """A bank file that is not a list of presets; the message names the item and the field."""


# ---- the bank file ----------------------------------------------------------------------------------

def load_bank(path: str | os.PathLike, store: PresetStore) -> list[Preset]:
    """The presets of a bank file: a JSON list whose items are preset names (looked up in `store`,
    user then factory, as `--preset`) or preset objects (the schema of a preset file).

    Raises OSError for a file that cannot be read, UnknownPreset (naming the item) for a name that
    is not there, BankError (naming the item and the field) for anything else wrong."""
    text = Path(path).expanduser().read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise BankError(f"bank: {path} is not JSON: {e}") from None
    if not isinstance(data, list) or not data:
        raise BankError(f"bank: expected a non-empty JSON list of preset names or preset objects, got "
                        f"{type(data).__name__ if data else data!r}")
    presets: list[Preset] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(data):
        try:
            if isinstance(item, str):
                preset = store.load(item)
            elif isinstance(item, dict):
                preset = Preset.from_dict(item)
            else:
                raise BankError(f"expected a preset name or a preset object, got {item!r}"[:200])
        except PresetError as e:
            raise type(e)(f"bank item {i}: {e}") from None
        folded = preset.name.casefold()  # one folder each, also on case-insensitive file systems
        if folded in seen:
            raise BankError(f"bank item {i}: name: {preset.name!r} is already item {seen[folded]}; "
                            "each preset gets its own folder, so names must differ (ignoring case)")
        seen[folded] = i
        presets.append(preset)
    return presets


# ---- workers ----------------------------------------------------------------------------------------

# A batch: [(job index, NoteParams)]; its result: (model_version, [(job index, RenderedSample)],
# the worker's CPU seconds for the batch).
Batch = list
BatchResult = tuple

_WORKER: dict[str, Any] = {}


def _init_worker(checkpoint_dir: str | None, threads: int | None, ignore_sigint: bool) -> None:
    """Load the generator once in this worker (and compile the batched network's shape)."""
    if ignore_sigint:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group; the driver stops us
    if threads:
        limit_compute_threads(threads)  # before TensorFlow is imported
    t0 = time.perf_counter()
    try:
        from synth.generator import get_generator
        from synth.params import NoteParams

        gen = get_generator(checkpoint_dir)
        gen.run_neural([NoteParams()])  # a first pass through the networks before timing starts
        _WORKER.update(generator=gen, load_s=time.perf_counter() - t0, error=None)
    except Exception as e:  # noqa: BLE001 - kept and raised with the first batch: a pool whose
        # initializer raises starts the worker again, forever
        _WORKER.update(generator=None, error=f"{type(e).__name__}: {e}")


def _render(gen, batch: Batch, sample_rate: int) -> BatchResult:
    cpu = time.process_time()
    samples = export.render_samples(gen, [note for _, note in batch], sample_rate)
    return gen.model_version, [(job, s) for (job, _), s in zip(batch, samples)], time.process_time() - cpu


def render_batch(batch: Batch, sample_rate: int) -> BatchResult:
    """Render one batch in this worker: (the generator's model_version, [(job, sample)], CPU s)."""
    if "generator" not in _WORKER:
        _init_worker(None, None, False)
    if _WORKER["error"]:
        raise RuntimeError(f"export worker could not load the generator: {_WORKER['error']}")
    return _render(_WORKER["generator"], batch, sample_rate)


def _pool_render(args: tuple) -> BatchResult:
    batch, sample_rate = args
    return render_batch(batch, sample_rate)


def run_in_process(batches: Iterable[Batch], sample_rate: int, checkpoint_dir: str | None) -> Iterator[BatchResult]:
    from synth.generator import get_generator

    gen = get_generator(checkpoint_dir)
    for batch in batches:
        yield _render(gen, batch, sample_rate)


def run_pool(batches: Sequence[Batch], sample_rate: int, checkpoint_dir: str | None,
             workers: int) -> Iterator[BatchResult]:
    """Batches on `workers` spawned processes, results in the order they finish."""
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(checkpoint_dir, WORKER_THREADS, True)) as pool:
        yield from pool.imap_unordered(_pool_render, [(b, sample_rate) for b in batches], chunksize=1)
    # Leaving the `with` (finished, an error, Ctrl-C, or the consumer closing us) terminates the pool.


def import_ray():
    """The ray module, or ImportError naming the extra to install."""
    try:
        import ray
    except ImportError as e:
        raise ImportError(f"--ray needs Ray, which is not installed here ({e}): {RAY_EXTRA_HINT}") from None
    return ray


class _ExportActor:
    """A Ray actor: the generator loaded once; `render` takes a batch (the pool's function)."""

    def __init__(self, checkpoint_dir: str | None, threads: int | None):
        _init_worker(checkpoint_dir, threads, False)

    def render(self, batch: Batch, sample_rate: int) -> BatchResult:
        return render_batch(batch, sample_rate)


def run_ray(batches: Sequence[Batch], sample_rate: int, checkpoint_dir: str | None, workers: int | None,
            address: str, stats: dict | None = None) -> Iterator[BatchResult]:
    """Batches on Ray actors (one CPU each), results streamed back as each batch finishes.

    `address`: "auto" (the running cluster: RAY_ADDRESS or the one `ray start` made on this
    machine), "local" (start a private Ray here for this run, `workers` CPUs) or a cluster address.
    A Ray already initialised in this process is used as it is."""
    ray = import_ray()
    started = not ray.is_initialized()
    t0 = time.perf_counter()
    if started:
        if address == "local":
            ray.init(num_cpus=workers or os.cpu_count(), include_dashboard=False, logging_level=logging.WARNING,
                     log_to_driver=False)
        else:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    actors: list = []
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        n = min(workers or cpus, len(batches))
        if n > cpus:
            log.warning("%d actors asked for, the cluster has %d CPUs: the others wait for a CPU", n, cpus)
        actor_cls = ray.remote(num_cpus=1, max_restarts=1, max_task_retries=1)(_ExportActor)
        actors = [actor_cls.remote(checkpoint_dir, WORKER_THREADS) for _ in range(n)]
        if stats is not None:
            stats.update(ray_actors=n, ray_init_s=time.perf_counter() - t0)
        todo = deque(batches)
        pending: dict = {}
        for actor in actors:
            for _ in range(IN_FLIGHT):
                if todo:
                    pending[actor.render.remote(todo.popleft(), sample_rate)] = actor
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            actor = pending.pop(ref)
            if todo:
                pending[actor.render.remote(todo.popleft(), sample_rate)] = actor
            yield ray.get(ref)
    finally:
        for actor in actors:
            ray.kill(actor)
        if started:
            ray.shutdown()


# ---- the driver -------------------------------------------------------------------------------------

@dataclass
class Job:
    preset: int         # index in the bank
    region: Region
    note: Any           # NoteParams
    id: str             # sample_id


@dataclass
class BankReport:
    out_dir: Path
    n_presets: int
    n_samples: int
    rendered: int = 0
    reused: int = 0
    sfz_written: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    first_result_s: float | None = None     # from the start of rendering to the first batch back
    arrivals: list[tuple[float, int]] = field(default_factory=list)  # (s since rendering started, notes)
    write_s: float = 0.0                    # driver time writing samples, records and .sfz files
    result_bytes: int = 0                   # WAV bytes received
    worker_cpu_s: float = 0.0               # the workers' CPU time rendering (not loading)
    mode: str = ""
    workers: int = 0
    ray_init_s: float | None = None         # starting or joining Ray, and asking for the actors


class Journal:
    """DIR/.export-journal.jsonl: one JSON object a line per written sample (the last one of a file
    wins). A line cut short by a kill is skipped."""

    def __init__(self, path: Path):
        self.path = path
        self.records: dict[tuple[str, str], dict] = {}
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                    self.records[(rec["preset"], rec["file"])] = rec
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue
        self._f = None

    def done(self, preset_dir: Path, preset_name: str, region: Region, sid: str) -> dict | None:
        rec = self.records.get((preset_name, region.file))
        if rec is None or rec.get("id") != sid:
            return None
        try:
            if (preset_dir / SAMPLES_DIR / region.file).stat().st_size != rec.get("bytes"):
                return None
        except OSError:
            return None
        return rec

    def add(self, rec: dict) -> None:
        if self._f is None:
            cut = False
            if self.path.exists() and self.path.stat().st_size > 0:
                with open(self.path, "rb") as f:
                    f.seek(-1, os.SEEK_END)
                    cut = f.read(1) != b"\n"
            self._f = open(self.path, "a", encoding="utf-8")
            if cut:  # the last line was cut short by a kill: ours starts on a line of its own
                self._f.write("\n")
        self._f.write(json.dumps(rec) + "\n")
        self._f.flush()
        self.records[(rec["preset"], rec["file"])] = rec

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def check_bank_out(out_dir: str | os.PathLike, force: bool = False) -> Path:
    """Create `out_dir`. A non-empty folder is refused (FileExistsError) unless it holds an earlier
    bank export's journal (which this run resumes) or `force`."""
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"out: {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / JOURNAL).exists() and not force:
        raise FileExistsError(f"out: {out} is not empty and holds no bank export to resume "
                              "(use --force to write into it)")
    out.mkdir(parents=True, exist_ok=True)
    (out / JOURNAL).touch()
    return out


def make_batches(jobs: Sequence[int], batch: int, workers: int) -> list[list[int]]:
    """Job indices in batches of at most `batch`, smaller when there are too few to keep every
    worker busy (each worker gets at least one batch when there are enough notes)."""
    size = max(1, min(batch, math.ceil(len(jobs) / max(1, workers))))
    return [list(jobs[i : i + size]) for i in range(0, len(jobs), size)]


def export_bank(presets: Sequence[Preset], out_dir: str | os.PathLike, options: ExportOptions, *,
                checkpoint_dir: str | None = None, workers: int | None = None, ray_address: str | None = None,
                batch: int = DEFAULT_BATCH, force: bool = False, progress: bool = True,
                in_process: bool | None = None) -> BankReport:
    """Export every preset of the bank into `out_dir/<name>/` (see the module doc).

    workers: processes (default: this machine's cores) or, with `ray_address`, actors (default: the
    cluster's CPUs). in_process: render in this process (default: when workers == 1 without Ray)."""
    from tqdm import tqdm

    t_start = time.perf_counter()
    out = check_bank_out(out_dir, force)
    model_version = model_version_of(checkpoint_dir)
    regions = options.regions()
    journal = Journal(out / JOURNAL)
    jobs: list[Job] = []
    known: dict[int, dict[str, dict]] = {i: {} for i in range(len(presets))}  # preset -> file -> meta
    todo: list[int] = []
    for p, preset in enumerate(presets):
        pdir = out / preset.name
        (pdir / SAMPLES_DIR).mkdir(parents=True, exist_ok=True)
        for stale in [*pdir.glob(".*.tmp"), *(pdir / SAMPLES_DIR).glob(".*.tmp")]:  # a kill -9 mid-write
            stale.unlink(missing_ok=True)
        for region in regions:
            note = preset.note(region.key, region.layer)
            job = Job(p, region, note, sample_id(note, options.sample_rate, model_version))
            rec = journal.done(pdir, preset.name, region, job.id)
            if rec is None:
                todo.append(len(jobs))
            else:
                known[p][region.file] = rec["meta"]
            jobs.append(job)
    report = BankReport(out, len(presets), len(jobs), reused=len(jobs) - len(todo))

    def finish_preset(p: int) -> None:
        preset = presets[p]
        samples = [sample_from_meta(r, known[p][r.file]) for r in regions]
        path = export.sfz_path(out / preset.name, preset)
        text = sfz_text(preset, model_version, options, samples)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            export.write_atomic(path, text)
            report.sfz_written.append(path)

    remaining = Counter(jobs[j].preset for j in todo)
    for p in range(len(presets)):
        if remaining[p] == 0:
            finish_preset(p)  # complete already: (re)write its .sfz if missing or different
    if not todo:
        journal.close()
        report.seconds = time.perf_counter() - t_start
        report.mode = "nothing to render"
        return report

    if ray_address is not None:
        import_ray()  # before anything starts: ImportError naming the extra
        report.mode, n_workers = f"Ray {ray_address}", workers or 0
    else:
        n_workers = max(1, workers or os.cpu_count() or 1)
        in_process = n_workers == 1 if in_process is None else in_process
        report.mode = "in this process" if in_process else f"{n_workers} processes"
    index_batches = make_batches(todo, batch, n_workers or max(1, os.cpu_count() or 1))
    batches = [[(j, jobs[j].note) for j in b] for b in index_batches]
    stats: dict = {}
    if ray_address is not None:
        results = run_ray(batches, options.sample_rate, checkpoint_dir, workers, ray_address, stats)
    elif in_process:
        results = run_in_process(batches, options.sample_rate, checkpoint_dir)
    else:
        results = run_pool(batches, options.sample_rate, checkpoint_dir, n_workers)
    log.info("%d of %d samples to render (%d presets), %d notes a batch, %s", len(todo), len(jobs),
             len(presets), len(batches[0]), report.mode)
    bar = tqdm(total=len(jobs), initial=report.reused, unit="note", desc="export", disable=not progress,
               dynamic_ncols=True, smoothing=0.05)
    t_render = time.perf_counter()
    try:
        for version, samples, cpu_s in results:
            now = time.perf_counter() - t_render
            if report.first_result_s is None:
                report.first_result_s = now
            report.arrivals.append((now, len(samples)))
            report.worker_cpu_s += cpu_s
            if version != model_version:
                raise RuntimeError(f"a worker rendered with model version {version}, this run expects "
                                   f"{model_version} (from {checkpoint_dir or 'the shipped checkpoints'}); "
                                   "every worker needs the same checkpoints")
            t_write = time.perf_counter()
            for j, sample in samples:
                _write_sample(out, presets, jobs[j], sample, journal, known)
                report.rendered += 1
                report.result_bytes += len(sample.data)
                remaining[jobs[j].preset] -= 1
                if remaining[jobs[j].preset] == 0:
                    finish_preset(jobs[j].preset)
            report.write_s += time.perf_counter() - t_write
            bar.update(len(samples))
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()  # stops the pool or the actors at once, also on Ctrl-C
        bar.close()
        journal.close()
    report.workers = stats.get("ray_actors", n_workers)
    if "ray_actors" in stats:
        report.mode = f"Ray {ray_address}, {report.workers} actors"
        report.ray_init_s = stats["ray_init_s"]
    report.seconds = time.perf_counter() - t_start
    return report


def _write_sample(out: Path, presets: Sequence[Preset], job: Job, sample: RenderedSample, journal: Journal,
                  known: dict) -> None:
    preset = presets[job.preset]
    if (sample.key, sample.layer) != (job.region.key, job.region.layer):
        raise RuntimeError(f"a worker returned key {sample.key} layer {sample.layer} for job "
                           f"{job.region.key}/{job.region.layer}")
    export.write_atomic(out / preset.name / SAMPLES_DIR / job.region.file, sample.data)
    meta = sample.meta()
    journal.add({"preset": preset.name, "file": job.region.file, "id": job.id, "bytes": len(sample.data),
                 "meta": meta})
    known[job.preset][job.region.file] = meta
