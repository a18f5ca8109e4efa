"""The `sound-generator` entry point: every subcommand answers --help, installed as a console script."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from synth.cli import COMMANDS

SCRIPT = Path(sys.executable).with_name("sound-generator")


def run(*args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120)


def test_top_level_help_lists_every_subcommand():
    out = run("--help")
    assert out.returncode == 0, out.stderr
    for name in COMMANDS:
        assert name in out.stdout


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_subcommand_help(name):
    out = run(name, "--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: sound-generator " + name)


def test_unknown_subcommand_is_refused():
    out = run("dance")
    assert out.returncode == 2
    assert "invalid choice: 'dance'" in out.stderr


# ---- sound-generator preset ----------------------------------------------------------------------


def preset_cli(presets_dir, *args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "synth.cli", "preset", *args, "--presets-dir", str(presets_dir)],
                          capture_output=True, text=True, env=env, timeout=60, cwd=Path(__file__).resolve().parents[1])


def test_preset_list_save_show_delete(tmp_path):
    from synth.presets import load_factory

    factory = sorted(load_factory(), key=lambda n: (n.casefold(), n))
    out = preset_cli(tmp_path, "list")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == factory  # one name per line
    latent = ["-1.5", "2", *["0"] * 13, "0.25"]
    out = preset_cli(tmp_path, "save", "My Pad", "--source", "synthetic", "--qualities", "reverb", "dark",
                     "--latent", *latent, "--description", "soft and dark")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "My Pad.json").is_file()
    assert "My Pad" in preset_cli(tmp_path, "list").stdout.splitlines()
    out = preset_cli(tmp_path, "show", "My Pad")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"name": "My Pad", "description": "soft and dark", "source": "synthetic",
                                      "qualities": ["dark", "reverb"], "latent_sample": [float(x) for x in latent]}
    out = preset_cli(tmp_path, "delete", "My Pad")
    assert out.returncode == 0, out.stderr
    assert preset_cli(tmp_path, "list").stdout.splitlines() == factory


def test_preset_refusals(tmp_path):
    from synth.presets import load_factory

    factory_name = next(iter(load_factory()))
    out = preset_cli(tmp_path, "delete", factory_name)
    assert out.returncode == 1
    assert f"name: {factory_name!r} is a factory preset and cannot be deleted" in out.stderr
    out = preset_cli(tmp_path, "show", "nope")
    assert out.returncode == 1 and "name: no preset 'nope'" in out.stderr
    out = preset_cli(tmp_path, "save", "../escape")
    assert out.returncode == 2 and "name: expected 1-64 characters" in out.stderr
    out = preset_cli(tmp_path, "save", "x", "--source", "brass")
    assert out.returncode == 2 and "source: expected one of acoustic, electronic, synthetic" in out.stderr
    out = preset_cli(tmp_path, "save", "x", "--latent", "1", "2")
    assert out.returncode == 2 and "--latent: expected 16 arguments" in out.stderr
    assert list(tmp_path.iterdir()) == []
