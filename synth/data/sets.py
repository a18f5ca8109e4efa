"""The General MIDI SoundFont sets a multi-set data set is rendered from, and the reserved ones.

A **set** is one SoundFont file with a short tag (used in every note and instrument name), the
Debian package that ships it and its licence. `SETS` lists the freely licensed General MIDI sets
Debian 12 ships that FluidSynth loads and that hold melodic presets (surveyed in
checkpoints/RECIPE.md, section 1):

======== ========================== ===================================== ==================
tag      Debian package             file                                  licence
======== ========================== ===================================== ==================
fluidr3  fluid-soundfont-gm         /usr/share/sounds/sf2/FluidR3_GM.sf2  MIT
opl3     opl3-soundfont             /usr/share/sounds/sf2/OPL-3_FM_128M.sf2 CC-BY-SA-4.0
csound   csound-soundfont           /usr/share/sounds/sf2/sf_GMbank.sf2   public domain
fluidr3mono fluidr3mono-gm-soundfont /usr/share/sounds/sf3/FluidR3Mono_GM.sf3 MIT
======== ========================== ===================================== ==================

Not used: fluid-soundfont-gs (FluidR3_GS.sf2 holds only 32 GS sound-effect variations of
programs 120-127, which have no pitch) and freepats (GUS ``.pat`` patches, which FluidSynth does
not load).

**Reserved**: TimGM6mb and MuseScore General (every variant) are kept for independent evaluation;
the builder refuses them (`check_not_reserved`) by file name (as given and after following links),
by the SoundFont's own name (RIFF ``LIST INFO`` ``INAM``) and by the Debian package owning the file.
"""

from __future__ import annotations

import re
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class SoundFontSet:
    """One SoundFont of a multi-set build."""

    tag: str  # lower-case letters and digits: the prefix of its instruments' names
    path: str
    package: str | None = None  # Debian package shipping it (None: a file given by path)
    licence: str = "unknown"
    licence_note: str = ""
    # NSynth source for every instrument of the set (None: from the GM table, `synth.data.gm`).
    source: str | None = None
    # A fixed number per set (registered 1..99, TAG=PATH sets 100 on): instrument ids are
    # code * 16384 + bank * 128 + program, never a bare GM program (0..127), so code that still
    # takes `instrument` for the GM program finds nothing instead of a wrong subset.
    code: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)


SETS: dict[str, SoundFontSet] = {
    s.tag: s
    for s in (
        SoundFontSet(
            "fluidr3", "/usr/share/sounds/sf2/FluidR3_GM.sf2", "fluid-soundfont-gm", "MIT",
            "Frank Wen 2000-2002, 2008; Toby Smithe 2008 (/usr/share/doc/fluid-soundfont-gm/copyright)",
            code=1,
        ),
        SoundFontSet(
            "opl3", "/usr/share/sounds/sf2/OPL-3_FM_128M.sf2", "opl3-soundfont", "CC-BY-SA-4.0",
            "Zandro Reveille 2009; sampled from a Yamaha YMF262 (OPL3) FM chip "
            "(/usr/share/doc/opl3-soundfont/copyright)",
            # Every preset is a 2/4-operator FM patch: a synthesis engine, whatever GM instrument
            # it imitates.
            source="synthetic", code=2,
        ),
        SoundFontSet(
            "csound", "/usr/share/sounds/sf2/sf_GMbank.sf2", "csound-soundfont", "public-domain",
            "'The file has Public Domain in its license field' (/usr/share/doc/csound-soundfont/copyright)",
            code=3,
        ),
        SoundFontSet(
            "fluidr3mono", "/usr/share/sounds/sf3/FluidR3Mono_GM.sf3", "fluidr3mono-gm-soundfont", "MIT",
            "Michael Cowgill 2014-2017, based on Fluid (R3) by Frank Wen "
            "(/usr/share/doc/fluidr3mono-gm-soundfont/copyright); most presets are near-duplicates of fluidr3",
            code=4,
        ),
    )
}
# What `--sets debian` means, in this order: earlier sets win when two hold near-duplicates.
DEBIAN_SETS = ("fluidr3", "opl3", "csound", "fluidr3mono")

# Reserved for independent evaluation: never rendered, trained, tuned or evaluated on.
RESERVED_PACKAGES = (
    "timgm6mb-soundfont",
    "musescore-general-soundfont",
    "musescore-general-soundfont-small",
    "musescore-general-soundfont-lossless",
)
# Matched against names with everything but letters and digits removed, lower-cased.
RESERVED_NAME_PATTERNS = (
    ("TimGM6mb", re.compile(r"timgm|timsgm")),
    ("MuseScore General", re.compile(r"musescoregeneral")),
)


class ReservedSoundFontError(ValueError):
    """The SoundFont is reserved for independent evaluation."""


def _squash(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", text.lower())


def reserved_name(text: str) -> str | None:
    """The reserved set `text` (a file name or a SoundFont name) names, or None."""
    squashed = _squash(text)
    for name, pattern in RESERVED_NAME_PATTERNS:
        if pattern.search(squashed):
            return name
    return None


def read_info(path: str | Path) -> dict[str, str]:
    """The RIFF ``LIST INFO`` strings of a SoundFont (.sf2 or .sf3): {'INAM': ..., 'ICOP': ...}.

    ``ifil`` (the format version) is returned as 'major.minor'. Raises ValueError when the file is
    not a RIFF ``sfbk`` file.
    """
    out: dict[str, str] = {}
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"sfbk":
            raise ValueError(f"{path}: not a SoundFont (no RIFF sfbk header)")
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return out
            cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"LIST" and f.read(4) == b"INFO":
                end = f.tell() + size - 4
                while f.tell() + 8 <= end:
                    sid, ssize = struct.unpack("<4sI", f.read(8))
                    data = f.read(ssize + (ssize & 1))[:ssize]
                    key = sid.decode("latin-1")
                    if key == "ifil" and len(data) >= 4:
                        out[key] = "%d.%d" % struct.unpack("<HH", data[:4])
                    else:
                        raw = data.split(b"\0")[0]
                        try:
                            out[key] = raw.decode("utf-8").strip()
                        except UnicodeDecodeError:  # older SoundFonts: Latin-1 (e.g. OPL3's '\xa9 Yamaha')
                            out[key] = raw.decode("latin-1").strip()
                return out
            if cid == b"LIST":
                f.seek(size - 4, 1)
            else:
                f.seek(size + (size & 1), 1)


def debian_package_of(path: str | Path) -> str | None:
    """The Debian package that installed `path` (links followed), or None (not dpkg's, no dpkg)."""
    for candidate in dict.fromkeys([str(Path(path).absolute()), str(Path(path).resolve())]):
        try:
            res = subprocess.run(["dpkg-query", "-S", candidate], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if res.returncode == 0 and ":" in res.stdout:
            line = res.stdout.splitlines()[0]
            return line.split(":", 1)[0].split(",")[0].strip()
    return None


def package_version(package: str) -> str | None:
    try:
        res = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if res.returncode != 0:
        return None
    return res.stdout.strip() or None


def check_not_reserved(path: str | Path, check_package: bool = True) -> dict[str, str]:
    """Raise `ReservedSoundFontError` if `path` is a reserved SoundFont; else its INFO strings.

    Checks the file name as given and after following links, the SoundFont's INAM and (with
    `check_package`) the Debian package that owns the file.
    """
    p = Path(path)
    for name in dict.fromkeys([p.name, p.resolve().name]):
        hit = reserved_name(name)
        if hit:
            raise ReservedSoundFontError(
                f"--soundfont: {path} is named like {hit} ({name}), which is reserved for independent "
                f"evaluation: never render, train, tune or evaluate on it")
    if not p.is_file():
        raise FileNotFoundError(f"--soundfont: no such file: {path}")
    info = read_info(p)
    hit = reserved_name(info.get("INAM", ""))
    if hit:
        raise ReservedSoundFontError(
            f"--soundfont: {path} calls itself {info['INAM']!r} (INFO/INAM), i.e. {hit}, which is reserved "
            f"for independent evaluation: never render, train, tune or evaluate on it")
    if check_package:
        pkg = debian_package_of(p)
        if pkg in RESERVED_PACKAGES:
            raise ReservedSoundFontError(
                f"--soundfont: {path} belongs to the Debian package {pkg}, which is reserved for "
                f"independent evaluation: never render, train, tune or evaluate on it")
    return info


def resolve_sets(spec: str) -> list[SoundFontSet]:
    """`--sets` text -> sets, in order. Items: a registered tag, 'debian' (all of `DEBIAN_SETS`),
    or TAG=PATH for another SoundFont (its licence is recorded as unknown)."""
    out: list[SoundFontSet] = []
    extra = 0
    for item in [t.strip() for t in spec.split(",") if t.strip()]:
        if item == "debian":
            out.extend(SETS[t] for t in DEBIAN_SETS)
        elif "=" in item:
            tag, path = (x.strip() for x in item.split("=", 1))
            if not re.fullmatch(r"[a-z][a-z0-9]*", tag):
                raise ValueError(f"--sets: tag {tag!r} must be lower-case letters and digits, starting with a letter")
            if tag in SETS:
                raise ValueError(f"--sets: tag {tag!r} is a registered set ({SETS[tag].path}); pick another tag")
            out.append(SoundFontSet(tag, path, None, code=100 + extra))
            extra += 1
        elif item in SETS:
            out.append(SETS[item])
        else:
            hit = reserved_name(item)
            if hit:
                raise ReservedSoundFontError(f"--sets: {item} is {hit}, reserved for independent evaluation")
            raise ValueError(f"--sets: unknown set {item!r}: expected 'debian', one of "
                             f"{', '.join(SETS)} or TAG=PATH")
    if not out:
        raise ValueError("--sets: no set named")
    tags = [s.tag for s in out]
    dup = sorted({t for t in tags if tags.count(t) > 1})
    if dup:
        raise ValueError(f"--sets: {', '.join(dup)} named twice")
    return out
