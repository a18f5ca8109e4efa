"""Presets: named timbres (source, qualities, latent_sample), kept as small JSON files.

A preset is one JSON object in ``<presets dir>/<name>.json``::

    {"name": "warm-pad", "description": "dark, slow attack; centroid 610 Hz",
     "source": "synthetic", "qualities": ["dark", "long_release"],
     "latent_sample": [0.5, -1.2, ...16 numbers...]}

`source`, `qualities` and `latent_sample` follow the note schema (`synth.params.NoteParams`,
same error messages); `description` is optional, one line. The file's name is the preset's
name (rename the file to rename the preset; the ``name`` inside is informative).

Directory: `default_presets_dir()` is the user's data directory chosen by platformdirs
(``~/.local/share/sound-generator/presets`` on Linux); `PresetStore(directory)` takes another.
Factory presets (`synth/factory_presets.json`, chosen by measurement: see
`scripts/make_factory_presets.py`) are read-only and always listed; a user preset of the same
name shadows one, and deleting a factory preset is refused.

Names are 1..NAME_MAX characters of letters, digits, ``-``, ``_``, ``.`` and space, neither
starting nor ending with ``.`` or a space, without ``..``: never a path. They are checked
wherever a name becomes a file name (load, save, delete) and in `Preset.from_dict`.
No OSC here: the live server's `/preset/...` addresses call this module.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from synth.params import LATENT_DIM, NoteParams

APP_NAME = "sound-generator"
NAME_MAX = 64
DESCRIPTION_MAX = 200
SUFFIX = ".json"
FIELDS = ("name", "description", "source", "qualities", "latent_sample")
REQUIRED = ("name", "source", "qualities", "latent_sample")
FACTORY_PATH = Path(__file__).with_name("factory_presets.json")
_NAME_CHARS = re.compile(r"[A-Za-z0-9_. -]+")
NAME_RULE = (f"1-{NAME_MAX} characters of letters, digits, '-', '_', '.', ' ' "
             "(not starting or ending with '.' or ' ', no '..')")


class PresetError(ValueError):
    """A refused preset operation; the message starts with the field it is about."""


class UnknownPreset(PresetError):
    pass


class ReadOnlyPreset(PresetError):
    pass


def check_name(name: Any) -> str:
    """`name` if it is a valid preset name, else PresetError naming the rule (no path tricks)."""
    ok = (
        isinstance(name, str)
        and 1 <= len(name) <= NAME_MAX
        and _NAME_CHARS.fullmatch(name) is not None
        and name[0] not in ". "
        and name[-1] not in ". "
        and ".." not in name
    )
    if not ok:
        raise PresetError(f"name: expected {NAME_RULE}; got {name!r}")
    return name


def _check_description(text: Any) -> str:
    if (not isinstance(text, str) or len(text) > DESCRIPTION_MAX
            or any(ord(c) < 32 or ord(c) == 127 for c in text)):
        shown = text if not isinstance(text, str) or len(text) <= 60 else text[:60] + "..."
        raise PresetError(f"description: expected one line of at most {DESCRIPTION_MAX} characters, got {shown!r}")
    return text


@dataclass(frozen=True)
class Preset:
    """One timbre with a name. The timbre fields are validated and canonicalised by NoteParams
    (qualities in NSynth's order, latent values quantised), so equal timbres compare equal.

    The constructor accepts any one-line `name` (a morph is labelled ``a~b@0.5``); a name that
    is stored or read from a file is checked with `check_name`.
    """

    name: str
    source: str = "acoustic"
    qualities: tuple[str, ...] = ()
    latent_sample: tuple[float, ...] = field(default=(0.0,) * LATENT_DIM)
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or "\n" in self.name:
            raise PresetError(f"name: expected {NAME_RULE}; got {self.name!r}")
        timbre = NoteParams(source=self.source, qualities=self.qualities, latent_sample=self.latent_sample)
        object.__setattr__(self, "source", timbre.source)
        object.__setattr__(self, "qualities", timbre.qualities)
        object.__setattr__(self, "latent_sample", timbre.latent_sample)
        object.__setattr__(self, "description", _check_description(self.description))

    @classmethod
    def from_timbre(cls, name: str, timbre: NoteParams, description: str = "") -> "Preset":
        """The timbre fields of a note (pitch and velocity are not part of a preset)."""
        return cls(name, timbre.source, timbre.qualities, timbre.latent_sample, description)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Preset":
        """A preset from its JSON object; PresetError (a ValueError) naming the field."""
        if not isinstance(data, Mapping):
            raise PresetError(f"preset: expected a JSON object with keys {', '.join(FIELDS)}, got {data!r}"[:200])
        unknown = [k for k in data if k not in FIELDS]
        if unknown:
            raise PresetError(f"{unknown[0]}: unknown field; allowed fields: {', '.join(FIELDS)}")
        missing = [k for k in REQUIRED if k not in data]
        if missing:
            raise PresetError(f"{missing[0]}: missing; a preset has {', '.join(REQUIRED)} "
                              "and optionally description")
        try:
            return cls(check_name(data["name"]), data["source"], data["qualities"], data["latent_sample"],
                       data.get("description", ""))
        except PresetError:
            raise
        except ValueError as e:  # NoteParams' own reason, which names the field
            raise PresetError(str(e)) from None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        # Rounded to the quantum's 4 decimals: the same values, written without float noise.
        out.update(source=self.source, qualities=list(self.qualities),
                   latent_sample=[round(v, 4) + 0.0 for v in self.latent_sample])
        return out

    def to_json(self) -> str:
        """The file's text: one field per line, lists on one line."""
        fields = (f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in self.to_dict().items())
        return "{\n" + ",\n".join(fields) + "\n}\n"

    def note(self, pitch: int = 60, velocity: int = 100) -> NoteParams:
        """A note with this timbre."""
        return NoteParams(pitch, velocity, self.source, self.qualities, self.latent_sample)


def check_t(t: Any) -> float:
    if isinstance(t, bool) or not isinstance(t, numbers.Real) or not math.isfinite(float(t)) or not 0 <= t <= 1:
        raise PresetError(f"t: expected a number in [0, 1], got {t!r}")
    return float(t)


def morph(a: Preset, b: Preset, t: float) -> Preset:
    """The timbre `t` of the way from `a` (t = 0) to `b` (t = 1).

    The latent is the linear interpolation (1 - t) a + t b; source and qualities, which cannot be
    interpolated, are those of the nearer end: a's for t < 0.5, b's from t = 0.5 on. The result
    is labelled ``<a>~<b>@<t>``, which is not a storable name: give it one
    (`dataclasses.replace(p, name=...)`) to save it.
    """
    t = check_t(t)
    latent = tuple((1.0 - t) * x + t * y for x, y in zip(a.latent_sample, b.latent_sample))
    near = a if t < 0.5 else b
    return Preset(f"{a.name}~{b.name}@{t:g}", near.source, near.qualities, latent)


def default_presets_dir() -> Path:
    """The user's presets folder: platformdirs' user data directory for this application."""
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)) / "presets"


@lru_cache(maxsize=4)
def load_factory(path: Path = FACTORY_PATH) -> dict[str, Preset]:
    """name -> Preset of the shipped factory presets (validated; a bad file is an error)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    presets: dict[str, Preset] = {}
    for i, entry in enumerate(data["presets"]):
        try:
            preset = Preset.from_dict(entry)
        except PresetError as e:
            raise PresetError(f"factory preset {i} in {path}: {e}") from None
        presets[preset.name] = preset
    return presets


class PresetStore:
    """The user's presets in one folder (created on the first save), over the factory ones.

    Every name is checked before it becomes a path. Writes are atomic (a temporary file in the
    same folder, then `os.replace`), so a reader never sees half a preset. File errors are
    OSError; everything else a PresetError (a ValueError) whose message names the field.
    """

    def __init__(self, directory: str | os.PathLike | None = None, factory: Mapping[str, Preset] | None = None):
        self.directory = Path(directory).expanduser() if directory is not None else default_presets_dir()
        self.factory = dict(load_factory() if factory is None else factory)

    def _path(self, name: str) -> Path:
        return self.directory / (check_name(name) + SUFFIX)

    def user_names(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        names = []
        for entry in self.directory.iterdir():
            stem = entry.name[: -len(SUFFIX)] if entry.name.endswith(SUFFIX) else None
            if stem is not None and entry.is_file():
                try:
                    names.append(check_name(stem))
                except PresetError:
                    continue  # not ours (a temporary file starts with '.')
        return names

    def list(self) -> list[str]:
        """Every name, user and factory (each once), sorted case-insensitively."""
        return sorted(set(self.user_names()) | set(self.factory), key=lambda n: (n.casefold(), n))

    def is_factory(self, name: str) -> bool:
        """True when `name` loads the factory preset (no user preset shadows it)."""
        return name in self.factory and not self._path(name).is_file()

    def load(self, name: str) -> Preset:
        path = self._path(name)
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise PresetError(f"name: the file of preset {name!r} ({path}) is not JSON: {e}") from None
            if isinstance(data, dict):
                data = {**data, "name": name}  # the file's name is the preset's name
            try:
                return Preset.from_dict(data)
            except PresetError as e:
                raise PresetError(f"{e} (in {path})") from None
        if name in self.factory:
            return self.factory[name]
        raise UnknownPreset(f"name: no preset {name!r} (in {self.directory} or the factory presets)")

    def save(self, preset: Preset) -> Path:
        """Write `preset` (replacing a user preset of that name; shadowing a factory one)."""
        path = self._path(preset.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = preset.to_json()
        fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=path.parent)
        try:
            # No fsync: the live server saves on its OSC thread, which must not wait on the disk;
            # the rename alone keeps readers (and a crash of this process) from half a file.
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return path

    def delete(self, name: str) -> None:
        """Remove a user preset (a factory preset it shadowed comes back); factory presets are
        read-only."""
        path = self._path(name)
        if path.is_file():
            path.unlink()
        elif name in self.factory:
            raise ReadOnlyPreset(f"name: {name!r} is a factory preset and cannot be deleted "
                                 "(save a preset of that name to shadow it)")
        else:
            raise UnknownPreset(f"name: no preset {name!r} (in {self.directory})")
