"""The GM table, the split rule and the `dataset` command line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from synth import cli
from synth.data import build, gm
from synth.params import SOURCES


def test_table_covers_all_programs_with_valid_labels():
    assert sorted(gm.GM_PROGRAMS) == list(range(128))
    for prog in range(128):
        row = gm.gm_program(prog)
        assert row.family in gm.FAMILIES and row.source in SOURCES
        assert row.slug and row.slug == gm.slugify(row.name)


@pytest.mark.parametrize(
    "program, family, source",
    [(0, "keyboard", "acoustic"), (4, "keyboard", "electronic"), (19, "organ", "acoustic"),
     (16, "organ", "electronic"), (30, "guitar", "electronic"), (33, "bass", "electronic"),
     (38, "bass", "synthetic"), (40, "string", "acoustic"), (56, "brass", "acoustic"),
     (62, "brass", "synthetic"), (66, "reed", "acoustic"), (73, "flute", "acoustic"),
     (81, "synth_lead", "synthetic"), (52, "vocal", "acoustic"), (12, "mallet", "acoustic")],
)
def test_known_rows(program, family, source):
    row = gm.gm_program(program)
    assert (row.family, row.source) == (family, source)
    assert row.family_id == gm.FAMILIES.index(family) and row.source_id == SOURCES.index(source)


def test_every_family_and_source_is_used():
    assert {gm.gm_program(p).family for p in range(128)} == set(gm.FAMILIES)
    assert {gm.gm_program(p).source for p in range(128)} == set(SOURCES)


def test_split_rule_is_80_10_10_and_each_split_has_every_source():
    splits = {s: [p for p in range(128) if build.split_of(p) == s] for s in build.SPLITS}
    assert [len(splits[s]) for s in build.SPLITS] == [102, 13, 13]
    for s, progs in splits.items():
        assert {gm.gm_program(p).source for p in progs} == set(SOURCES), s


def test_names_follow_nsynth_style():
    inst = build.instrument_str("/x/FluidR3_GM.sf2", 0)
    assert inst == "fluidr3_gm_000_acoustic_grand_piano"
    assert build.note_str(inst, 60, 25) == "fluidr3_gm_000_acoustic_grand_piano-060-025"


def test_bad_program_is_rejected_with_the_option_named(capsys):
    with pytest.raises(SystemExit):
        cli.main(["dataset", "build", "--soundfont", "x.sf2", "--out", "d", "--programs", "0,200"])
    err = capsys.readouterr().err
    assert "--programs" in err and "0..127" in err


@pytest.mark.parametrize(
    "option, value, allowed",
    [("--pitches", "21-x", "0..127"), ("--velocities", "0,64", "1..127"), ("--workers", "0", "positive")],
)
def test_other_bad_options(capsys, option, value, allowed):
    with pytest.raises(SystemExit):
        cli.main(["dataset", "build", "--soundfont", "x.sf2", "--out", "d", option, value])
    err = capsys.readouterr().err
    assert option in err and allowed in err


def test_missing_soundfont_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="--soundfont"):
        cli.main(["dataset", "build", "--soundfont", str(tmp_path / "none.sf2"), "--out", str(tmp_path / "d")])


def test_help_lists_actions():
    out = subprocess.run([sys.executable, "-m", "synth.cli", "dataset", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "build" in out.stdout and "stats" in out.stdout
