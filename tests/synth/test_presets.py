"""Presets: the file format and its validation, the store (atomic writes, no path tricks), morphing,
and the factory presets (read-only, shadowed by a user preset of the same name)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from synth.params import LATENT_DIM, NoteParams
from synth.presets import (
    FACTORY_PATH,
    NAME_MAX,
    Preset,
    PresetError,
    PresetStore,
    ReadOnlyPreset,
    UnknownPreset,
    check_name,
    default_presets_dir,
    load_factory,
    morph,
)

LATENT = tuple(round(0.25 * i - 2, 4) for i in range(LATENT_DIM))
FACTORY = {
    "pad": Preset("pad", "synthetic", ("dark", "long_release"), (1.0,) * LATENT_DIM, "a factory pad"),
    "bell": Preset("bell", "acoustic", ("bright",), (-1.0,) * LATENT_DIM),
}


@pytest.fixture
def store(tmp_path: Path) -> PresetStore:
    return PresetStore(tmp_path / "presets", factory=FACTORY)


def preset(name: str = "mine", **changes) -> Preset:
    fields = {"name": name, "source": "electronic", "qualities": ["percussive", "bright"],
              "latent_sample": list(LATENT), "description": "a test timbre"}
    return Preset.from_dict({**fields, **changes})


# ---- the format --------------------------------------------------------------------------------


def test_dict_round_trip_is_canonical():
    p = preset(qualities=["percussive", "Bright", "tempo-synced"], latent_sample=[0.30000000000000004] * 16)
    assert p.qualities == ("bright", "percussive", "tempo_sync")  # NSynth's order, aliases read
    assert p.latent_sample == (0.3,) * 16
    assert Preset.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    assert list(p.to_dict()) == ["name", "description", "source", "qualities", "latent_sample"]
    assert "description" not in preset(description="").to_dict()
    assert p.note(64, 90) == NoteParams(64, 90, "electronic", p.qualities, p.latent_sample)
    assert Preset.from_timbre("x", p.note()) == dataclasses.replace(p, name="x", description="")


@pytest.mark.parametrize("changes,reason", [
    ({"source": "brass"}, "source: expected one of acoustic, electronic, synthetic, got 'brass'"),
    ({"qualities": ["loud"]}, "qualities: unknown quality 'loud'"),
    ({"latent_sample": [0.0] * 15}, "latent_sample: expected 16 numbers in [-7, 7], got 15"),
    ({"latent_sample": [0.0] * 15 + [9.0]}, "latent_sample[15]: expected a number in [-7, 7]"),
    ({"latent_sample": [0.0] * 15 + [float("nan")]}, "latent_sample[15]: expected a finite number"),
    ({"description": "two\nlines"}, "description: expected one line of at most 200 characters"),
    ({"description": "x" * 201}, "description: expected one line of at most 200 characters"),
    ({"pitch": 60}, "pitch: unknown field; allowed fields: name, description, source, qualities, latent_sample"),
    ({"name": "../x"}, "name: expected 1-64 characters of letters, digits, '-', '_', '.', ' '"),
])
def test_invalid_presets_name_the_field(changes, reason):
    with pytest.raises(PresetError) as e:
        preset(**changes)
    assert reason in str(e.value)
    assert isinstance(e.value, ValueError)


def test_missing_fields_are_named():
    with pytest.raises(PresetError, match="latent_sample: missing"):
        Preset.from_dict({"name": "x", "source": "acoustic", "qualities": []})
    with pytest.raises(PresetError, match="preset: expected a JSON object"):
        Preset.from_dict(["x"])


@pytest.mark.parametrize("name", [
    "../x", "..", ".", ".hidden", "a/b", "a\\b", "/etc/passwd", "a..b", "", " lead", "trail ", "trail.",
    "x" * (NAME_MAX + 1), "nul\x00byte", "new\nline", "tab\tname", "ünïcode", "~home", "a:b", None, 7,
])
def test_names_that_could_be_paths_are_refused(name, store: PresetStore):
    with pytest.raises(PresetError) as e:
        check_name(name)
    assert str(e.value).startswith("name: expected 1-64 characters of letters, digits, '-', '_', '.', ' '")
    assert str(e.value).endswith(f"got {name!r}")
    for action in (store.load, store.delete):
        with pytest.raises(PresetError):
            action(name)
    if isinstance(name, str) and name and "\n" not in name:
        with pytest.raises(PresetError):
            store.save(dataclasses.replace(preset(), name=name))
    assert not store.directory.exists()  # nothing was written anywhere


@pytest.mark.parametrize("name", ["a", "Warm Pad 2", "bright-pluck_v1.2", "x" * NAME_MAX, "3"])
def test_good_names(name):
    assert check_name(name) == name


# ---- the store ----------------------------------------------------------------------------------


def test_save_load_list_delete(store: PresetStore):
    assert not store.directory.exists()
    assert store.list() == ["bell", "pad"]  # the factory presets, with no folder yet
    path = store.save(preset("Mine"))
    assert path == store.directory / "Mine.json"
    assert json.loads(path.read_text()) == preset("Mine").to_dict()
    assert store.load("Mine") == preset("Mine")
    store.save(preset("another one", source="synthetic"))
    assert store.list() == ["another one", "bell", "Mine", "pad"]  # case-insensitive order
    store.save(preset("Mine", source="acoustic"))  # replaces
    assert store.load("Mine").source == "acoustic"
    store.delete("Mine")
    assert store.list() == ["another one", "bell", "pad"]
    with pytest.raises(UnknownPreset, match="name: no preset 'Mine'"):
        store.load("Mine")
    with pytest.raises(UnknownPreset, match="name: no preset 'Mine'"):
        store.delete("Mine")
    assert sorted(os.listdir(store.directory)) == ["another one.json"]  # no temporary files left


def test_writes_are_atomic(store: PresetStore, monkeypatch: pytest.MonkeyPatch):
    store.save(preset("keep"))
    before = (store.directory / "keep.json").read_text()

    def fail(src, dst):
        raise OSError(28, "No space left on device", str(dst))

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="No space left"):
        store.save(preset("keep", source="synthetic"))
    assert (store.directory / "keep.json").read_text() == before  # the old preset is intact
    assert sorted(os.listdir(store.directory)) == ["keep.json"]  # and the temporary file is gone


def test_the_file_name_is_the_preset_name(store: PresetStore):
    store.directory.mkdir(parents=True)
    (store.directory / "renamed.json").write_text(json.dumps(preset("old name").to_dict()))
    assert store.load("renamed").name == "renamed"


def test_files_that_are_not_presets(store: PresetStore):
    store.directory.mkdir(parents=True)
    (store.directory / "broken.json").write_text("{not json")
    (store.directory / "wrong.json").write_text(json.dumps({**preset("wrong").to_dict(), "source": "brass"}))
    (store.directory / ".tmp123.tmp").write_text("")
    (store.directory / ".hidden.json").write_text("{}")
    (store.directory / "notes.txt").write_text("")
    (store.directory / "folder.json").mkdir()
    assert store.list() == ["bell", "broken", "pad", "wrong"]
    with pytest.raises(PresetError, match="name: the file of preset 'broken' .* is not JSON"):
        store.load("broken")
    with pytest.raises(PresetError, match="source: expected one of .* \\(in .*wrong.json\\)"):
        store.load("wrong")


# ---- factory presets ----------------------------------------------------------------------------


def test_a_user_preset_shadows_a_factory_one_and_factory_presets_are_read_only(store: PresetStore):
    assert store.load("pad") == FACTORY["pad"]
    assert store.is_factory("pad")
    with pytest.raises(ReadOnlyPreset, match="name: 'pad' is a factory preset and cannot be deleted"):
        store.delete("pad")
    mine = preset("pad", source="acoustic")
    store.save(mine)
    assert store.list() == ["bell", "pad"]  # listed once
    assert store.load("pad") == mine and not store.is_factory("pad")
    store.delete("pad")  # the user's copy
    assert store.load("pad") == FACTORY["pad"]  # the factory preset is back


def test_shipped_factory_presets():
    shipped = load_factory()
    assert 16 <= len(shipped) <= 24
    doc = json.loads(FACTORY_PATH.read_text())
    assert [p["name"] for p in doc["presets"]] == list(shipped)  # no name twice
    assert doc["measured"]["candidates"] >= 200
    for name, p in shipped.items():
        assert check_name(name) == p.name
        assert p.description and max(map(abs, p.latent_sample)) <= 4.0
    # Spread over the sources, and no two alike.
    assert {p.source for p in shipped.values()} == {"acoustic", "electronic", "synthetic"}
    assert len({p.latent_sample for p in shipped.values()}) == len(shipped)


def test_default_store_uses_the_user_data_dir_and_the_shipped_factory(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_presets_dir() == tmp_path / "sound-generator" / "presets"
    store = PresetStore()
    assert store.directory == tmp_path / "sound-generator" / "presets"
    assert set(load_factory()) <= set(store.list())


# ---- morph --------------------------------------------------------------------------------------


def test_morph_interpolates_the_latent_and_takes_the_nearer_ends_tags():
    a = preset("a", source="acoustic", qualities=["dark"], latent_sample=[-2.0] * 16)
    b = preset("b", source="synthetic", qualities=["bright", "reverb"], latent_sample=[2.0] * 16)
    assert morph(a, b, 0).latent_sample == a.latent_sample
    assert morph(a, b, 1).latent_sample == b.latent_sample
    m = morph(a, b, 0.25)
    assert m.latent_sample == (-1.0,) * 16
    assert (m.source, m.qualities) == ("acoustic", ("dark",))
    m = morph(a, b, 0.5)  # the midpoint belongs to b
    assert m.latent_sample == (0.0,) * 16
    assert (m.source, m.qualities) == ("synthetic", ("bright", "reverb"))
    assert m.name == "a~b@0.5"
    assert morph(a, a, 0.3).latent_sample == a.latent_sample


@pytest.mark.parametrize("t", [-0.1, 1.5, float("nan"), float("inf"), "0.5", None, True])
def test_morph_refuses_t_outside_0_1(t):
    with pytest.raises(PresetError, match=r"t: expected a number in \[0, 1\], got"):
        morph(FACTORY["pad"], FACTORY["bell"], t)


def test_a_morph_label_is_not_a_storable_name(store: PresetStore):
    m = morph(FACTORY["pad"], FACTORY["bell"], 0.5)
    with pytest.raises(PresetError, match="name: expected"):
        store.save(m)
    store.save(dataclasses.replace(m, name="between"))
    assert store.load("between").latent_sample == (0.0,) * LATENT_DIM
