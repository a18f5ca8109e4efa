"""The note schema: the original system's inputs, clear errors, stable cache keys."""

import subprocess
import sys

import numpy as np
import pytest

from synth import NoteParams
from synth.params import LATENT_QUANTUM, QUALITIES, VELOCITY_LAYERS

SEED_INPUTS = {
    "velocity": 75,
    "pitch": 60,
    "source": "acoustic",
    "qualities": ["bright", "percussive"],
    "latent_sample": [0.0] * 16,
}


def test_seed_inputs_are_accepted_as_given():
    p = NoteParams.from_dict(SEED_INPUTS)
    assert (p.pitch, p.velocity, p.source) == (60, 75, "acoustic")
    assert p.qualities == ("bright", "percussive")
    assert p.latent_sample == (0.0,) * 16


def test_missing_keys_take_documented_defaults():
    p = NoteParams.from_dict({})
    assert (p.pitch, p.velocity, p.source, p.qualities) == (60, 100, "acoustic", ())
    assert p.latent_sample == (0.0,) * 16
    assert NoteParams.from_dict({"pitch": 72}).velocity == 100


def test_pure_data_floats_are_accepted_for_integer_fields():
    p = NoteParams.from_dict({"pitch": 60.0, "velocity": 127.0})
    assert (p.pitch, p.velocity) == (60, 127)
    assert isinstance(p.pitch, int) and isinstance(p.velocity, int)
    assert NoteParams.from_dict({"pitch": np.float32(61.0)}).pitch == 61


@pytest.mark.parametrize(
    "inputs, field",
    [
        ({"pitch": 8}, "pitch"),
        ({"pitch": 121}, "pitch"),
        ({"pitch": 60.5}, "pitch"),
        ({"pitch": "60"}, "pitch"),
        ({"pitch": True}, "pitch"),
        ({"pitch": float("nan")}, "pitch"),
        ({"velocity": 0}, "velocity"),
        ({"velocity": 128}, "velocity"),
        ({"velocity": 75.5}, "velocity"),
        ({"source": "analog"}, "source"),
        ({"source": 1}, "source"),
        ({"qualities": "bright"}, "qualities"),
        ({"qualities": ["bright", "shiny"]}, "qualities"),
        ({"qualities": [3]}, "qualities"),
        ({"latent_sample": [0.0] * 15}, "latent_sample"),
        ({"latent_sample": [0.0] * 17}, "latent_sample"),
        ({"latent_sample": 0.0}, "latent_sample"),
        ({"latent_sample": [0.0] * 15 + [7.5]}, "latent_sample[15]"),
        ({"latent_sample": [float("inf")] + [0.0] * 15}, "latent_sample[0]"),
        ({"latent_sample": ["a"] + [0.0] * 15}, "latent_sample[0]"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_input_names_the_field(inputs, field):
    with pytest.raises(ValueError) as info:
        NoteParams.from_dict(inputs)
    assert str(info.value).startswith(field + ":"), str(info.value)


def test_errors_say_what_is_allowed():
    with pytest.raises(ValueError, match="9..120"):
        NoteParams.from_dict({"pitch": 200})
    with pytest.raises(ValueError, match="acoustic, electronic, synthetic"):
        NoteParams.from_dict({"source": "x"})
    with pytest.raises(ValueError, match="long_release"):
        NoteParams.from_dict({"qualities": ["loud"]})
    with pytest.raises(ValueError, match=r"\[-7, 7\]"):
        NoteParams.from_dict({"latent_sample": [8.0] * 16})


def test_every_midi_velocity_is_playable_and_maps_to_a_layer():
    for v in range(1, 128):
        p = NoteParams.from_dict({"velocity": v})
        assert p.velocity_layer in VELOCITY_LAYERS
        assert abs(p.velocity_layer - v) == min(abs(layer - v) for layer in VELOCITY_LAYERS)
        assert p.velocity_gain == pytest.approx(v / p.velocity_layer)
    for layer in VELOCITY_LAYERS:
        assert NoteParams.from_dict({"velocity": layer}).velocity_gain == 1.0


def test_key_ignores_quality_order_and_alias_spelling():
    a = NoteParams.from_dict({"qualities": ["percussive", "bright", "tempo-synced"]})
    b = NoteParams.from_dict({"qualities": ["tempo_sync", "bright", "percussive", "bright"]})
    assert a.key == b.key
    assert a.qualities == ("bright", "percussive", "tempo_sync")


def test_key_ignores_float_noise_below_the_quantum():
    rng = np.random.default_rng(0)
    base = np.round(rng.uniform(-6.9, 6.9, 16), 3)  # well inside a quantum bucket
    noisy = base + rng.uniform(-LATENT_QUANTUM / 10, LATENT_QUANTUM / 10, 16)
    a = NoteParams.from_dict({"latent_sample": base.tolist()})
    b = NoteParams.from_dict({"latent_sample": noisy.astype(np.float32).tolist()})
    assert a.key == b.key
    assert NoteParams.from_dict({"latent_sample": [0.1 + 0.2] * 16}).key == NoteParams.from_dict(
        {"latent_sample": [0.3] * 16}
    ).key


def test_key_changes_with_every_field():
    base = NoteParams.from_dict(SEED_INPUTS)
    variants = [
        base.replace(pitch=61),
        base.replace(velocity=100),
        base.replace(source="synthetic"),
        base.replace(qualities=["bright"]),
        base.replace(latent_sample=[0.0] * 15 + [2 * LATENT_QUANTUM]),
    ]
    keys = {base.key} | {v.key for v in variants}
    assert len(keys) == 1 + len(variants)


def test_key_is_stable_across_processes():
    code = (
        "from synth import NoteParams;"
        "print(NoteParams.from_dict({'pitch': 64, 'velocity': 50, 'source': 'electronic',"
        "'qualities': ['dark', 'reverb'], 'latent_sample': [0.25 * i - 2 for i in range(16)]}).key)"
    )
    keys = set()
    for seed in ("0", "1", "random"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONHASHSEED": seed, "PATH": ""},
            capture_output=True,
            text=True,
            check=True,
        )
        keys.add(out.stdout.strip())
    here = NoteParams.from_dict(
        {
            "pitch": 64,
            "velocity": 50,
            "source": "electronic",
            "qualities": ["reverb", "dark"],
            "latent_sample": [0.25 * i - 2 for i in range(16)],
        }
    ).key
    assert keys == {here}
    assert len(here) == 32


def test_round_trip_and_quality_vector():
    p = NoteParams.from_dict(SEED_INPUTS)
    assert NoteParams.from_dict(p.to_dict()) == p
    assert p.quality_vector == tuple(1.0 if q in ("bright", "percussive") else 0.0 for q in QUALITIES)
    assert hash(p) == hash(NoteParams.from_dict(dict(SEED_INPUTS)))


def test_a_notes_key_is_computed_once_and_survives_pickling(monkeypatch):
    import hashlib
    import pickle

    import synth.params as P

    calls = []
    real = hashlib.sha256
    monkeypatch.setattr(P.hashlib, "sha256", lambda blob: calls.append(blob) or real(blob))
    p = NoteParams(pitch=60, velocity=100, source="synthetic", latent_sample=(0.5,) + (0.0,) * 15)
    key = p.key
    assert p.key == key and len(calls) == 1  # (a live note-on reads it several times)
    copy = pickle.loads(pickle.dumps(p))
    assert copy == p and copy.key == key and hash(copy) == hash(p)
    moved = p.replace(latent_sample=(0.25,) + (0.0,) * 15)
    assert moved.key != key and len(calls) == 2
    assert NoteParams(pitch=60, velocity=100, source="synthetic", latent_sample=(0.5,) + (0.0,) * 15).key == key
