"""Bulk export (`export --bank`): the bank file's validation, the options, resume after an
interruption, and the same bytes from `export --preset`, a local process pool and a Ray cluster.

The bank is tiny: 2 presets (a factory name and a preset object) x 2 keys x 2 velocity layers."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from synth import export
from synth.cli import main

ROOT = Path(__file__).resolve().parents[2]
NAMED = "dark-swell-acoustic"
OBJECT = {"name": "My Pluck", "description": "a pluck from the bank file", "source": "acoustic",
          "qualities": ["bright", "fast_decay"], "latent_sample": [0.5, -1.0] + [0.0] * 13 + [1.5]}
KEYS = ["--pitches", "60-63", "--every", "3", "--velocities", "64", "127"]   # keys 60, 63; layers 64, 127
N_NOTES = 2 * 2 * 2


def write_bank(path: Path, items) -> Path:
    path.write_text(json.dumps(items), encoding="utf-8")
    return path


def file_hashes(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of every file, the journal left out."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".export-journal.jsonl"}


def bank_cli(bank: Path, out: Path, presets_dir: Path, *extra: str, keys: list[str] = KEYS) -> list[str]:
    return ["export", "--bank", str(bank), "--out", str(out), *keys, "--presets-dir", str(presets_dir),
            "--no-progress", *extra]


@pytest.fixture
def bank(tmp_path) -> Path:
    return write_bank(tmp_path / "bank.json", [NAMED, OBJECT])


# ---- the bank file and the options (no model) -------------------------------------------------------

@pytest.mark.parametrize("items, code, message", [
    ("not json", 2, "bank: "),
    ({"presets": [NAMED]}, 2, "bank: expected a non-empty JSON list"),
    ([], 2, "bank: expected a non-empty JSON list"),
    ([NAMED, {**OBJECT, "latent_sample": [0.0] * 3}], 2, "bank item 1: latent_sample"),
    ([{k: v for k, v in OBJECT.items() if k != "source"}], 2, "bank item 0: source: missing"),
    ([{**OBJECT, "colour": "red"}], 2, "bank item 0: colour: unknown field"),
    ([{**OBJECT, "qualities": ["shiny"]}], 2, "bank item 0: qualities"),
    ([{**OBJECT, "name": "../etc"}], 2, "bank item 0: name: expected"),
    ([NAMED, NAMED, 5], 2, "bank item 1: name: 'dark-swell-acoustic' is already item 0"),
    ([OBJECT, {**OBJECT, "name": "my pluck"}], 2, "bank item 1: name: 'my pluck' is already item 0"),
    ([NAMED, 5], 2, "bank item 1: expected a preset name or a preset object, got 5"),
    (["../x"], 2, "bank item 0: name: expected"),
    ([NAMED, "no-such-preset"], 1, "bank item 1: name: no preset 'no-such-preset'"),
])
def test_bank_errors_name_the_item_and_field(tmp_path, capsys, items, code, message):
    path = tmp_path / "bank.json"
    path.write_text(items if isinstance(items, str) else json.dumps(items))
    out = tmp_path / "out"
    assert main(bank_cli(path, out, tmp_path)) == code
    assert message in capsys.readouterr().err
    assert not out.exists()  # refused before anything is written


def test_bank_resolves_names_like_preset_and_reads_objects(tmp_path, bank):
    from synth.export_bank import load_bank
    from synth.presets import Preset, PresetStore

    store = PresetStore(tmp_path / "user")
    presets = load_bank(bank, store)
    assert [p.name for p in presets] == [NAMED, "My Pluck"]
    assert presets[0] == store.load(NAMED) and presets[1] == Preset.from_dict(OBJECT)
    # A user preset shadows the factory one, as with --preset.
    store.save(Preset(NAMED, "synthetic", ("dark",)))
    assert load_bank(bank, store)[0].source == "synthetic"


def test_missing_bank_file_exits_1(tmp_path, capsys):
    assert main(bank_cli(tmp_path / "nope.json", tmp_path / "out", tmp_path)) == 1
    assert "nope.json" in capsys.readouterr().err


def test_preset_and_bank_are_mutually_exclusive_and_one_is_required(tmp_path, bank, capsys):
    with pytest.raises(SystemExit) as e:
        main(["export", "--preset", NAMED, "--bank", str(bank), "--out", str(tmp_path / "o")])
    assert e.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["export", "--out", str(tmp_path / "o")])
    assert e.value.code == 2 and "one of the arguments --preset --bank is required" in capsys.readouterr().err
    for option in (["--workers", "2"], ["--ray", "auto"], ["--batch", "4"]):
        assert main(["export", "--preset", NAMED, "--out", str(tmp_path / "o"), *option]) == 2
        assert f"{option[0]}: only with --bank" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(bank_cli(bank, tmp_path / "o", tmp_path, "--workers", "0"))
    assert e.value.code == 2 and "--workers: expected an integer >= 1" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_ray_without_ray_installed_names_the_extra(tmp_path, bank, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    assert main(bank_cli(bank, tmp_path / "o", tmp_path, "--ray", "auto")) == 1
    assert "pip install '.[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_non_empty_folder_without_a_bank_run_is_refused(tmp_path, bank, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(bank_cli(bank, out, tmp_path)) == 1
    assert "not empty and holds no bank export" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_sample_id_changes_with_what_the_bytes_depend_on():
    from synth.params import NoteParams

    note = NoteParams(60, 127, "acoustic", ("bright",), [0.5] * 16)
    base = export.sample_id(note, 48000, "v1")
    assert export.sample_id(note, 48000, "v1") == base
    assert len({base, export.sample_id(note, 44100, "v1"), export.sample_id(note, 48000, "v2"),
                export.sample_id(note.replace(pitch=61), 48000, "v1"),
                export.sample_id(note.replace(velocity=100), 48000, "v1"),
                export.sample_id(note.replace(latent_sample=[0.5] * 15 + [0.6]), 48000, "v1"),
                export.sample_id(note.replace(qualities=("dark",)), 48000, "v1")}) == 7


def test_journal_skips_a_line_cut_short_and_starts_the_next_on_its_own_line(tmp_path):
    from synth.export_bank import Journal

    path = tmp_path / "j.jsonl"
    path.write_text('{"preset": "a", "file": "060_v127.wav", "id": "x", "bytes": 3, "meta": {}}\n{"preset": "a", "fi')
    journal = Journal(path)
    assert list(journal.records) == [("a", "060_v127.wav")]
    journal.add({"preset": "b", "file": "061_v127.wav", "id": "y", "bytes": 4, "meta": {}})
    journal.close()
    assert list(Journal(path).records) == [("a", "060_v127.wav"), ("b", "061_v127.wav")]


def test_batches_keep_every_worker_busy():
    from synth.export_bank import make_batches

    assert make_batches(list(range(8)), 16, 2) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert make_batches(list(range(40)), 16, 2) == [list(range(16)), list(range(16, 32)), list(range(32, 40))]
    assert make_batches(list(range(3)), 2, 1) == [[0, 1], [2]]


def test_model_version_of_is_the_generators(generator):
    from synth.generator import model_version_of

    assert model_version_of() == generator.model_version


# ---- rendering (the generator in this process) ------------------------------------------------------

@pytest.fixture(scope="module")
def generator():
    from synth.generator import get_generator

    return get_generator()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, generator) -> dict[str, str]:
    """`export --preset` of each preset of the bank (its folder as the bank writes it): the hashes."""
    from synth.presets import Preset, PresetStore

    root = tmp_path_factory.mktemp("reference")
    for preset in (PresetStore(root / "none").load(NAMED), Preset.from_dict(OBJECT)):
        export.export_instrument(preset, root / preset.name, generator, [60, 63], [64, 127])
    hashes = file_hashes(root)
    assert len(hashes) == 2 * (1 + 4)
    return hashes


def test_bank_in_process_writes_what_export_preset_writes(tmp_path, bank, reference, capsys):
    out = tmp_path / "o"
    assert main(bank_cli(bank, out, tmp_path, "--workers", "1")) == 0
    assert f"wrote {N_NOTES} samples" in capsys.readouterr().out
    assert file_hashes(out) == reference


def test_resume_after_an_interruption_renders_only_what_is_missing(tmp_path, bank, reference, generator,
                                                                    capsys, monkeypatch):
    real = export.render_samples
    calls: list[list[tuple[int, int]]] = []

    def counting(gen, notes, sample_rate):
        calls.append([(n.pitch, n.velocity) for n in notes])
        return real(gen, notes, sample_rate)

    def interrupted(gen, notes, sample_rate):
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C while the third batch renders
        return counting(gen, notes, sample_rate)

    out = tmp_path / "o"
    samples = [out / name / "samples" for name in (NAMED, "My Pluck")]
    # A temporary file left by a kill -9 in the middle of a write: cleaned up, never used.
    samples[1].mkdir(parents=True)
    (samples[1] / ".060_v064.wav.tmp").write_bytes(b"half a file")
    (out / ".export-journal.jsonl").write_text("")
    monkeypatch.setattr(export, "render_samples", interrupted)
    assert main(bank_cli(bank, out, tmp_path, "--workers", "1", "--batch", "2")) == 130
    assert "run the same command again" in capsys.readouterr().err
    assert len(calls) == 2
    assert sorted(p.name for p in samples[0].iterdir()) == ["060_v064.wav", "060_v127.wav", "063_v064.wav",
                                                            "063_v127.wav"]
    assert list(samples[1].iterdir()) == []  # nothing of the second preset, no temporary file
    assert (out / NAMED / f"{NAMED}.sfz").is_file()       # its samples are complete
    assert not (out / "My Pluck" / "My Pluck.sfz").exists()  # not before its samples are
    first = {p: p.stat().st_mtime_ns for p in samples[0].iterdir()}

    calls.clear()
    monkeypatch.setattr(export, "render_samples", counting)
    assert main(bank_cli(bank, out, tmp_path, "--workers", "1", "--batch", "2")) == 0
    assert "wrote 4 samples" in capsys.readouterr().out
    assert sorted(k for batch in calls for k in batch) == [(60, 64), (60, 127), (63, 64), (63, 127)]
    assert len(calls) == 2
    assert {p: p.stat().st_mtime_ns for p in samples[0].iterdir()} == first  # not written again
    assert file_hashes(out) == reference  # the resumed run's files are the uninterrupted run's

    calls.clear()
    assert main(bank_cli(bank, out, tmp_path, "--workers", "1")) == 0
    assert calls == []
    assert f"nothing to render: all {N_NOTES} samples" in capsys.readouterr().out
    assert file_hashes(out) == reference


def test_changed_preset_model_or_lost_file_is_rendered_again(tmp_path, bank, generator, capsys, monkeypatch):
    real = export.render_samples
    rendered: list[tuple[int, int]] = []

    def counting(gen, notes, sample_rate):
        rendered.extend((n.pitch, n.velocity) for n in notes)
        return real(gen, notes, sample_rate)

    monkeypatch.setattr(export, "render_samples", counting)
    out = tmp_path / "o"
    assert main(bank_cli(bank, out, tmp_path, "--workers", "1")) == 0
    assert len(rendered) == N_NOTES

    # The object preset's timbre changes (same name): its 4 samples again, the other's reused.
    rendered.clear()
    write_bank(bank, [NAMED, {**OBJECT, "latent_sample": [0.25] * 16}])
    assert main(bank_cli(bank, out, tmp_path, "--workers", "1")) == 0
    assert len(rendered) == 4 and "4 were already there" in capsys.readouterr().out

    # A sample that is gone, or cut short, is rendered again.
    rendered.clear()
    (out / NAMED / "samples" / "063_v127.wav").unlink()
    wav = out / "My Pluck" / "samples" / "060_v064.wav"
    wav.write_bytes(wav.read_bytes()[:1000])
    assert main(bank_cli(bank, out, tmp_path, "--workers", "1")) == 0
    assert sorted(rendered) == [(60, 64), (63, 127)]

    # Another model version: everything again, and the .sfz says which model.
    rendered.clear()
    monkeypatch.setattr(generator, "model_version", "0123456789abcdef")
    monkeypatch.setattr("synth.export_bank.model_version_of", lambda checkpoint_dir=None: "0123456789abcdef")
    assert main(bank_cli(bank, out, tmp_path, "--workers", "1")) == 0
    assert len(rendered) == N_NOTES
    assert "// model version: 0123456789abcdef" in (out / NAMED / f"{NAMED}.sfz").read_text()


def test_a_worker_with_another_model_version_stops_the_run(tmp_path, bank, generator, monkeypatch):
    monkeypatch.setattr("synth.export_bank.model_version_of", lambda checkpoint_dir=None: "0123456789abcdef")
    with pytest.raises(RuntimeError, match="every worker needs the same checkpoints"):
        main(bank_cli(bank, tmp_path / "o", tmp_path, "--workers", "1"))
    assert list((tmp_path / "o" / NAMED / "samples").iterdir()) == []


def test_changed_keys_reuse_the_samples_they_share(tmp_path, bank, generator, monkeypatch, capsys):
    """--pitches/--every/--velocities/--bend choose the samples and the .sfz, not a sample's bytes."""
    out = tmp_path / "o"
    assert main(bank_cli(bank, out, tmp_path, "--workers", "1")) == 0
    real = export.render_samples
    rendered: list[tuple[int, int]] = []

    def counting(gen, notes, sample_rate):
        rendered.extend((n.pitch, n.velocity) for n in notes)
        return real(gen, notes, sample_rate)

    monkeypatch.setattr(export, "render_samples", counting)
    keys = ["--pitches", "60-66", *KEYS[2:]]  # adds key 66
    assert main(bank_cli(bank, out, tmp_path, "--workers", "1", "--bend", "700", keys=keys)) == 0
    assert sorted(set(rendered)) == [(66, 64), (66, 127)] and len(rendered) == 4
    text = (out / NAMED / f"{NAMED}.sfz").read_text()
    assert "bend_up=700" in text and text.count("<region>") == 6


# ---- other processes: a local pool, a Ray cluster ---------------------------------------------------

@pytest.mark.slow
def test_local_pool_writes_the_same_bytes(tmp_path, bank, reference, capsys):
    out = tmp_path / "o"
    assert main(bank_cli(bank, out, tmp_path, "--workers", "2", "--batch", "2")) == 0
    assert "2 processes" in capsys.readouterr().out
    assert file_hashes(out) == reference


@pytest.fixture
def ray_cluster():
    """A local Ray cluster with 2 CPUs, started by a child process (`ray.init`) that stops it when
    told to (its stdin closes): the cluster's processes are ended by the process that started them.
    Yields the environment that reaches it: RAY_ADDRESS, and token authentication (on by default
    for local clusters since Ray 2.59; a driver that connects needs RAY_AUTH_MODE=token and the
    token, here ours, in RAY_AUTH_TOKEN)."""
    pytest.importorskip("ray")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env.pop("RAY_ADDRESS", None)
    code = ("import sys, ray\n"
            "ctx = ray.init(num_cpus=2, include_dashboard=False)\n"
            "print(ctx.address_info['gcs_address'], flush=True)\n"
            "sys.stdin.read()\n"
            "ray.shutdown()\n")
    head = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, cwd=ROOT, env=env)
    try:
        address = head.stdout.readline().strip()
        assert address, "the Ray head did not start"
        yield {**env, "RAY_ADDRESS": address}
    finally:
        head.stdin.close()
        head.wait(timeout=120)


@pytest.mark.slow
def test_ray_cluster_writes_the_same_bytes_as_the_local_run(tmp_path, bank, reference, ray_cluster):
    out = tmp_path / "o"
    run = subprocess.run([sys.executable, "-m", "synth.cli", *bank_cli(bank, out, tmp_path, "--ray", "auto")],
                         capture_output=True, text=True, env=ray_cluster, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"wrote {N_NOTES} samples" in run.stdout and "Ray auto, 2 actors" in run.stdout
    assert file_hashes(out) == reference
