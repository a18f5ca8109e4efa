"""The note schema: what one note of the instrument is.

`NoteParams.from_dict(inputs)` accepts the original system's input dict::

    {'pitch': 60, 'velocity': 75, 'source': 'acoustic',
     'qualities': ['bright', 'percussive'], 'latent_sample': [0.0] * 16}

Fields, allowed values and defaults (a missing key takes its default):

==============  ==========================================================  ===============
field           allowed                                                     default
==============  ==========================================================  ===============
pitch           integer MIDI note 9..120                                     60
velocity        25, 50, 75, 100, 127 (NSynth's layers), or any MIDI          100
                velocity 1..127 for live playing (see below)
source          'acoustic', 'electronic', 'synthetic'                        'acoustic'
qualities       any subset of the ten NSynth tags in `QUALITIES`             []
                (NSynth's spelling 'tempo-synced' is read as 'tempo_sync')
latent_sample   16 finite numbers in [-7, 7]                                 16 zeros
==============  ==========================================================  ===============

Integral floats such as ``60.0`` are accepted for integer fields, because Pure Data sends every
number as a float. Anything else raises `ValueError` whose message names the field and what is
allowed.

Velocity: the models are trained on NSynth's five velocity layers and condition on velocity as a
continuous number (velocity / 127), so any MIDI velocity 1..127 renders a note whose loudness and
brightness lie between those of the neighbouring layers. `NoteParams.velocity_layer` is the
nearest of the five layers (ties go to the louder one); the live server uses it to find a
pre-rendered note and scales that note's level by `velocity_gain` so dynamics stay continuous.

The cache key: `params.key` is a SHA-256 (first 32 hex digits) of the canonical form: pitch,
velocity, source, the qualities sorted in NSynth's order, and each latent value rounded to a
multiple of `LATENT_QUANTUM` (1e-4). So the same note gives the same key in every process and
run, quality order does not matter, and float noise well below the quantum (for instance
0.3 vs 0.30000000000000004) does not change it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

PITCH_MIN, PITCH_MAX = 9, 120
VELOCITY_LAYERS = (25, 50, 75, 100, 127)
VELOCITY_MIN, VELOCITY_MAX = 1, 127
SOURCES = ("acoustic", "electronic", "synthetic")
# NSynth's order (its `qualities` vector is in this order).
QUALITIES = (
    "bright",
    "dark",
    "distortion",
    "fast_decay",
    "long_release",
    "multiphonic",
    "nonlinear_env",
    "percussive",
    "reverb",
    "tempo_sync",
)
QUALITY_ALIASES = {"tempo-synced": "tempo_sync", "tempo_synced": "tempo_sync"}
LATENT_DIM = 16
LATENT_MIN, LATENT_MAX = -7.0, 7.0
LATENT_QUANTUM = 1e-4
FIELDS = ("pitch", "velocity", "source", "qualities", "latent_sample")

DEFAULTS: dict[str, Any] = {
    "pitch": 60,
    "velocity": 100,
    "source": "acoustic",
    "qualities": (),
    "latent_sample": (0.0,) * LATENT_DIM,
}


def _integer(name: str, value: Any, lo: int, hi: int, extra: str = "") -> int:
    allowed = f"an integer {lo}..{hi}{extra}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name}: expected {allowed}, got {value!r}")
    as_float = float(value)
    if not math.isfinite(as_float) or as_float != int(as_float):
        raise ValueError(f"{name}: expected {allowed}, got {value!r}")
    as_int = int(as_float)
    if not lo <= as_int <= hi:
        raise ValueError(f"{name}: expected {allowed}, got {value!r}")
    return as_int


def canonical_quality(name: Any) -> str:
    """The NSynth name of one quality tag; raises ValueError for anything else."""
    if not isinstance(name, str):
        raise ValueError(f"qualities: expected names from {list(QUALITIES)}, got {name!r}")
    tag = QUALITY_ALIASES.get(name.strip().lower(), name.strip().lower())
    if tag not in QUALITIES:
        raise ValueError(f"qualities: unknown quality {name!r}; allowed: {', '.join(QUALITIES)}")
    return tag


@dataclass(frozen=True)
class NoteParams:
    """One note: everything the generator needs, validated and canonical.

    Build it with `from_dict` (or the constructor with canonical values); it is immutable and
    hashable. `qualities` is a tuple in NSynth's order; `latent_sample` a tuple of 16 floats.
    """

    pitch: int = DEFAULTS["pitch"]
    velocity: int = DEFAULTS["velocity"]
    source: str = DEFAULTS["source"]
    qualities: tuple[str, ...] = ()
    latent_sample: tuple[float, ...] = field(default=(0.0,) * LATENT_DIM)

    def __post_init__(self) -> None:
        # Validate and canonicalise whatever came in, so that direct construction is safe too.
        object.__setattr__(self, "pitch", _integer("pitch", self.pitch, PITCH_MIN, PITCH_MAX))
        object.__setattr__(
            self,
            "velocity",
            _integer(
                "velocity",
                self.velocity,
                VELOCITY_MIN,
                VELOCITY_MAX,
                f" (NSynth layers {', '.join(map(str, VELOCITY_LAYERS))})",
            ),
        )
        source = self.source
        if not isinstance(source, str) or source.strip().lower() not in SOURCES:
            raise ValueError(f"source: expected one of {', '.join(SOURCES)}, got {source!r}")
        object.__setattr__(self, "source", source.strip().lower())

        qualities = self.qualities
        if isinstance(qualities, str) or not isinstance(qualities, (Sequence, set, frozenset)):
            raise ValueError(
                f"qualities: expected a list of names from {list(QUALITIES)}, got {qualities!r}"
            )
        tags = {canonical_quality(q) for q in qualities}
        object.__setattr__(self, "qualities", tuple(q for q in QUALITIES if q in tags))

        latent = self.latent_sample
        if isinstance(latent, (str, bytes)) or not hasattr(latent, "__len__"):
            raise ValueError(
                f"latent_sample: expected a list of {LATENT_DIM} numbers in "
                f"[{LATENT_MIN:g}, {LATENT_MAX:g}], got {latent!r}"
            )
        values = list(latent)
        if len(values) != LATENT_DIM:
            raise ValueError(
                f"latent_sample: expected {LATENT_DIM} numbers in [{LATENT_MIN:g}, {LATENT_MAX:g}],"
                f" got {len(values)}"
            )
        clean = []
        for i, v in enumerate(values):
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
                raise ValueError(
                    f"latent_sample[{i}]: expected a finite number in "
                    f"[{LATENT_MIN:g}, {LATENT_MAX:g}], got {v!r}"
                )
            v = float(v)
            if not LATENT_MIN <= v <= LATENT_MAX:
                raise ValueError(
                    f"latent_sample[{i}]: expected a number in [{LATENT_MIN:g}, {LATENT_MAX:g}],"
                    f" got {v!r}"
                )
            # Quantise so that the stored value is exactly what the key describes.
            clean.append(round(v / LATENT_QUANTUM) * LATENT_QUANTUM + 0.0)
        object.__setattr__(self, "latent_sample", tuple(clean))

    @classmethod
    def from_dict(cls, inputs: Mapping[str, Any]) -> "NoteParams":
        """Validate the original system's input dict; missing keys take `DEFAULTS`."""
        if not isinstance(inputs, Mapping):
            raise ValueError(f"inputs: expected a dict with keys {list(FIELDS)}, got {inputs!r}")
        unknown = [k for k in inputs if k not in FIELDS]
        if unknown:
            raise ValueError(f"{unknown[0]}: unknown field; allowed fields: {', '.join(FIELDS)}")
        merged = {**DEFAULTS, **inputs}
        return cls(**merged)

    def to_dict(self) -> dict[str, Any]:
        """The canonical form as a JSON-friendly dict (accepted back by `from_dict`)."""
        return {
            "pitch": self.pitch,
            "velocity": self.velocity,
            "source": self.source,
            "qualities": list(self.qualities),
            "latent_sample": list(self.latent_sample),
        }

    def replace(self, **changes: Any) -> "NoteParams":
        """A copy with some fields changed (validated like `from_dict`)."""
        return NoteParams.from_dict({**self.to_dict(), **changes})

    @functools.cached_property
    def key(self) -> str:
        """Stable hash of the canonical form (same in every process; see the module docstring).
        Computed once per instance (the instance is immutable): a live note-on reads it several
        times, and JSON + SHA-256 cost 0.1 ms each time on the 2-core machine."""
        canonical = {
            "pitch": self.pitch,
            "velocity": self.velocity,
            "source": self.source,
            "qualities": list(self.qualities),
            # Integers of quanta: no float formatting enters the hash.
            "latent_q": [int(round(v / LATENT_QUANTUM)) for v in self.latent_sample],
        }
        blob = json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:32]

    @property
    def velocity_layer(self) -> int:
        """The nearest of NSynth's five velocity layers (ties go to the louder layer)."""
        return min(VELOCITY_LAYERS, key=lambda layer: (abs(layer - self.velocity), -layer))

    @property
    def velocity_gain(self) -> float:
        """Linear gain that takes a note rendered at `velocity_layer` to this velocity's level.

        Amplitude is taken as proportional to velocity between layers (the MIDI habit); it is
        1.0 exactly on a layer.
        """
        return self.velocity / self.velocity_layer

    @property
    def quality_vector(self) -> tuple[float, ...]:
        """The ten tags as 0/1 in NSynth's order."""
        return tuple(1.0 if q in self.qualities else 0.0 for q in QUALITIES)
