"""The `sound-generator` entry point: every subcommand answers --help, installed as a console script."""

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
