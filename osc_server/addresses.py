"""The OSC address space of the live server, defined once.

Bytes in, typed commands out: `decode_packet(datagram)` walks messages and (nested) bundles and
returns `Timed(time, address, args)` items; `parse_message(address, args)` validates one message
against `ADDRESSES` and returns a typed command, or raises `CommandError(address, reason)` whose
reason names the field and what is allowed (NoteParams' own messages where they apply). Nothing
here touches a socket, a thread or the sound card, so it is tested with literal datagram bytes.

`python -m osc_server.addresses --markdown` prints the table the README carries.
"""

from __future__ import annotations

import math
import numbers
import sys
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from synth.params import (
    LATENT_DIM,
    LATENT_MAX,
    LATENT_MIN,
    PITCH_MAX,
    PITCH_MIN,
    VELOCITY_MAX,
    VELOCITY_MIN,
    QUALITIES,
    SOURCES,
    NoteParams,
    canonical_quality,
)
from synth.presets import NAME_MAX, PresetError, check_name, check_t

GAIN_DB_MIN, GAIN_DB_MAX = -80.0, 24.0
# A keyboard: the 88 piano keys, the default range of /prerender.
PRERENDER_LO, PRERENDER_HI = 21, 108
SCHEDULE_HORIZON_S = 60.0
# One packet holds at most this many messages, nested bundles included, and nests bundles at most
# this deep (the outer bundle is level 1); past either, the whole packet is refused.
MAX_BUNDLE_MESSAGES = 256
MAX_BUNDLE_DEPTH = 8
MALFORMED = "?"  # the <address> of an /error about a packet that could not be parsed
# A /preset/list reply larger than this is split (a UDP datagram that fits any client's buffer).
PRESET_LIST_BYTES = 8192
# OSC timetags count NTP seconds, from 1900-01-01; Unix time counts from 1970-01-01. The offset
# is 70 years, 17 of them leap: (70 * 365 + 17) * 86400 s.
NTP_EPOCH_OFFSET_S = 2208988800
# Live control of sounding notes. Bend as MPE's per-note default (+-48 semitones); glide up to 5 s.
BEND_CENTS_MAX = 4800.0
GLIDE_MS_MAX = 5000.0
MODES = ("poly", "mono")


class CommandError(Exception):
    """A refused message: answered with `/error <address> <reason>`."""

    def __init__(self, address: str, reason: str):
        super().__init__(f"{address}: {reason}")
        self.address = address
        self.reason = reason


class MalformedPacket(Exception):
    """A datagram that is not OSC."""


# ---- typed commands -------------------------------------------------------------------------


@dataclass(frozen=True)
class NoteOn:
    pitch: int
    velocity: int


@dataclass(frozen=True)
class NoteOff:
    pitch: int


@dataclass(frozen=True)
class SetLatent:
    values: tuple[float, ...]


@dataclass(frozen=True)
class SetLatentOne:
    index: int
    value: float


@dataclass(frozen=True)
class SetSource:
    source: str


@dataclass(frozen=True)
class SetQualities:
    qualities: tuple[str, ...]


@dataclass(frozen=True)
class SetQuality:
    quality: str
    on: bool


@dataclass(frozen=True)
class Prerender:
    lo: int = PRERENDER_LO
    hi: int = PRERENDER_HI


@dataclass(frozen=True)
class Panic:
    pass


@dataclass(frozen=True)
class SetGain:
    db: float


@dataclass(frozen=True)
class Status:
    pass


@dataclass(frozen=True)
class Sync:
    id: Any


@dataclass(frozen=True)
class ReplyPort:
    port: int


@dataclass(frozen=True)
class PresetSave:
    name: str


@dataclass(frozen=True)
class PresetLoad:
    name: str


@dataclass(frozen=True)
class PresetList:
    pass


@dataclass(frozen=True)
class Bend:
    cents: float


@dataclass(frozen=True)
class NoteBend:
    pitch: int
    cents: float


@dataclass(frozen=True)
class Pressure:
    value: float


@dataclass(frozen=True)
class NotePressure:
    pitch: int
    value: float


@dataclass(frozen=True)
class Sustain:
    down: bool


@dataclass(frozen=True)
class Mode:
    mode: str  # "poly" or "mono"


@dataclass(frozen=True)
class Glide:
    ms: float


@dataclass(frozen=True)
class PresetMorph:
    a: str
    b: str
    t: float


# ---- argument checks ------------------------------------------------------------------------


def _n_args(address: str, args: list, lo: int, hi: int | None, usage: str) -> None:
    if len(args) < lo or (hi is not None and len(args) > hi):
        raise CommandError(address, f"expected {usage}, got {len(args)} argument(s)")


def _number(address: str, name: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise CommandError(address, f"{name}: expected a number in [{lo:g}, {hi:g}], got {value!r}")
    if not lo <= float(value) <= hi:
        raise CommandError(address, f"{name}: expected a number in [{lo:g}, {hi:g}], got {value!r}")
    return float(value)


def _int(address: str, name: str, value: Any, lo: int, hi: int) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(float(value))
        or float(value) != int(value)
        or not lo <= int(value) <= hi
    ):
        raise CommandError(address, f"{name}: expected an integer {lo}..{hi}, got {value!r}")
    return int(value)


def _note_fields(address: str, **fields: Any) -> NoteParams:
    """Validate pitch/velocity with NoteParams itself, so the reasons are the schema's."""
    try:
        return NoteParams.from_dict(fields)
    except ValueError as e:
        raise CommandError(address, str(e)) from None


def _in_range(value: Any, lo: int, hi: int) -> bool:
    """Fast path for the common case (an int, or Pd's integral float, in range)."""
    t = type(value)
    return (t is int or (t is float and value.is_integer())) and lo <= value <= hi


def _pitch(address: str, value: Any) -> int:
    if _in_range(value, PITCH_MIN, PITCH_MAX):
        return int(value)
    return _note_fields(address, pitch=value).pitch  # raises with the schema's reason


# ---- one parser per address -----------------------------------------------------------------


def _note(address: str, args: list) -> NoteOn | NoteOff:
    _n_args(address, args, 2, 2, "pitch velocity")
    pitch = _pitch(address, args[0])
    velocity = args[1]
    if _in_range(velocity, VELOCITY_MIN, VELOCITY_MAX):
        return NoteOn(pitch, int(velocity))
    if not isinstance(velocity, bool) and isinstance(velocity, numbers.Real) and velocity == 0:
        return NoteOff(pitch)
    return NoteOn(pitch, _note_fields(address, pitch=pitch, velocity=velocity).velocity)


def _note_off(address: str, args: list) -> NoteOff:
    _n_args(address, args, 1, 2, "pitch [velocity]")
    return NoteOff(_pitch(address, args[0]))


def _latent(address: str, args: list) -> SetLatent:
    _n_args(address, args, LATENT_DIM, LATENT_DIM, f"{LATENT_DIM} numbers in [{LATENT_MIN:g}, {LATENT_MAX:g}]")
    try:
        return SetLatent(NoteParams(latent_sample=tuple(args)).latent_sample)
    except ValueError as e:
        raise CommandError(address, str(e)) from None


def _latent_one(address: str, args: list) -> SetLatentOne:
    index_text = address.rsplit("/", 1)[1]
    if not index_text.isdigit() or not 0 <= int(index_text) < LATENT_DIM:
        raise CommandError(address, f"unknown address; latent knobs are /latent/0 .. /latent/{LATENT_DIM - 1}")
    index = int(index_text)
    _n_args(address, args, 1, 1, "value")
    value = _number(address, f"latent_sample[{index}]", args[0], LATENT_MIN, LATENT_MAX)
    return SetLatentOne(index, value)


def _source(address: str, args: list) -> SetSource:
    _n_args(address, args, 1, 1, f"one of {', '.join(SOURCES)}")
    return SetSource(_note_fields(address, source=args[0]).source)


def _qualities(address: str, args: list) -> SetQualities:
    return SetQualities(_note_fields(address, qualities=list(args)).qualities)


def _quality_one(address: str, args: list) -> SetQuality:
    name = address.split("/", 2)[2]
    try:
        quality = canonical_quality(name)
    except ValueError as e:
        raise CommandError(address, str(e)) from None
    _n_args(address, args, 1, 1, "0 or 1")
    value = args[0]
    if value is True or value is False:
        return SetQuality(quality, bool(value))
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and value in (0, 1):
        return SetQuality(quality, bool(value))
    raise CommandError(address, f"{quality}: expected 0 or 1, got {value!r}")


def _prerender(address: str, args: list) -> Prerender:
    if not args:
        return Prerender()
    _n_args(address, args, 2, 2, "no arguments, or lo hi (pitches)")
    lo, hi = _pitch(address, args[0]), _pitch(address, args[1])
    if lo > hi:
        raise CommandError(address, f"lo: expected lo <= hi, got {lo} > {hi}")
    return Prerender(lo, hi)


def _no_args(command: Callable[[], Any]) -> Callable[[str, list], Any]:
    def parse(address: str, args: list) -> Any:
        _n_args(address, args, 0, 0, "no arguments")
        return command()

    return parse


def _gain(address: str, args: list) -> SetGain:
    _n_args(address, args, 1, 1, "db")
    return SetGain(_number(address, "db", args[0], GAIN_DB_MIN, GAIN_DB_MAX))


def _sync(address: str, args: list) -> Sync:
    _n_args(address, args, 1, 1, "id (int, float or string)")
    if not isinstance(args[0], (int, float, str)) or isinstance(args[0], bool):
        raise CommandError(address, f"id: expected an int, float or string, got {args[0]!r}")
    return Sync(args[0])


def _reply_port(address: str, args: list) -> ReplyPort:
    _n_args(address, args, 1, 1, "port")
    return ReplyPort(_int(address, "port", args[0], 0, 65535))


def _bend(address: str, args: list) -> Bend:
    _n_args(address, args, 1, 1, "cents")
    return Bend(_number(address, "cents", args[0], -BEND_CENTS_MAX, BEND_CENTS_MAX))


def _note_bend(address: str, args: list) -> NoteBend:
    _n_args(address, args, 2, 2, "pitch cents")
    return NoteBend(_pitch(address, args[0]), _number(address, "cents", args[1], -BEND_CENTS_MAX, BEND_CENTS_MAX))


def _pressure(address: str, args: list) -> Pressure:
    _n_args(address, args, 1, 1, "value")
    return Pressure(_number(address, "value", args[0], 0.0, 1.0))


def _note_pressure(address: str, args: list) -> NotePressure:
    _n_args(address, args, 2, 2, "pitch value")
    return NotePressure(_pitch(address, args[0]), _number(address, "value", args[1], 0.0, 1.0))


def _sustain(address: str, args: list) -> Sustain:
    _n_args(address, args, 1, 1, "0 or 1")
    value = args[0]
    if value is True or value is False:
        return Sustain(bool(value))
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and value in (0, 1):
        return Sustain(bool(value))
    raise CommandError(address, f"down: expected 0 or 1, got {value!r}")


def _mode(address: str, args: list) -> Mode:
    _n_args(address, args, 1, 1, " or ".join(MODES))
    if not isinstance(args[0], str) or args[0].strip().lower() not in MODES:
        raise CommandError(address, f"mode: expected one of {', '.join(MODES)}, got {args[0]!r}")
    return Mode(args[0].strip().lower())


def _glide(address: str, args: list) -> Glide:
    _n_args(address, args, 1, 1, "ms")
    return Glide(_number(address, "ms", args[0], 0.0, GLIDE_MS_MAX))


def _preset_name(address: str, value: Any, field: str = "name") -> str:
    try:
        return check_name(value)
    except PresetError as e:
        raise CommandError(address, field + str(e)[len("name"):]) from None


def _preset_one(command: Callable[[str], Any]) -> Callable[[str, list], Any]:
    def parse(address: str, args: list) -> Any:
        _n_args(address, args, 1, 1, "name")
        return command(_preset_name(address, args[0]))

    return parse


def _preset_morph(address: str, args: list) -> PresetMorph:
    _n_args(address, args, 3, 3, "a b t (two preset names and a number in [0, 1])")
    a, b = _preset_name(address, args[0], "a"), _preset_name(address, args[1], "b")
    try:
        return PresetMorph(a, b, check_t(args[2]))
    except PresetError as e:
        raise CommandError(address, str(e)) from None


# ---- the table ------------------------------------------------------------------------------


class Address(NamedTuple):
    pattern: str  # literal address, or with a <placeholder> last part
    arguments: str
    ranges: str
    effect: str
    replies: str
    parse: Callable[[str, list], Any] | None  # None: a reply the server sends


_Q = ", ".join(QUALITIES)
_NAME = f"1..{NAME_MAX} of letters, digits, `-`, `_`, `.`, space; no path"
ADDRESSES: tuple[Address, ...] = (
    Address("/note", "pitch velocity", f"pitch int {PITCH_MIN}..{PITCH_MAX}; velocity int 0..127 (ints or integral floats)",
            "Note on with the current timbre; velocity 0 is a note off. A cached note sounds in the next audio block; "
            "a missing one is rendered and sounds as soon as it lands (it is played from the nearest of the five NSynth "
            "velocity layers, scaled to the velocity). Live voices (`serve`'s default): the note sounds until its "
            "note-off, from the next block when its timbre's controls are known, else once the networks ran (tens of ms).", "`/ready` when a missing note lands; `/error` if refused", _note),
    Address("/note/off", "pitch [velocity]", f"pitch int {PITCH_MIN}..{PITCH_MAX}; velocity ignored",
            "Note off: every voice of that pitch fades out (20 ms raised cosine); live voices play their timbre's release "
            "(held on while `/sustain` is down).", "`/error` if refused", _note_off),
    Address("/latent", f"{LATENT_DIM} floats", f"each in [{LATENT_MIN:g}, {LATENT_MAX:g}]",
            "Set all 16 timbre knobs (`latent_sample`). Later notes use the new timbre; one-shots keep theirs, live "
            "voices cross-fade to it (50 ms, level kept).",
            "`/error` if refused", _latent),
    Address("/latent/<i>", "value", f"i 0..{LATENT_DIM - 1}; value in [{LATENT_MIN:g}, {LATENT_MAX:g}]",
            "Set one timbre knob.", "`/error` if refused", _latent_one),
    Address("/source", "name", ", ".join(SOURCES), "Set the instrument source.", "`/error` if refused", _source),
    Address("/qualities", "name ...", f"zero or more of {_Q} (`tempo-synced` accepted)",
            "Set the quality tags (no arguments: none).", "`/error` if refused", _qualities),
    Address("/quality/<name>", "0|1", f"name one of {_Q}", "Switch one quality tag off (0) or on (1).",
            "`/error` if refused", _quality_one),
    Address("/bend", "cents", f"[-{BEND_CENTS_MAX:g}, {BEND_CENTS_MAX:g}]",
            "Global pitch bend of every sounding and later note (added to its own `/note/bend`), reached over 8 ms (a frame). "
            "Live voices only (`serve`'s default), as the addresses below; a `--voice-mode oneshot` server answers "
            "`/error`.",
            "`/error` if refused", _bend),
    Address("/note/bend", "pitch cents", f"pitch int {PITCH_MIN}..{PITCH_MAX}; cents in [-{BEND_CENTS_MAX:g}, {BEND_CENTS_MAX:g}]",
            "Per-note bend (MPE): the sounding voice of that key.", "`/error` if refused", _note_bend),
    Address("/pressure", "value", "[0, 1]", "Pressure of every sounding note, as breath or bow pressure: 0 is the "
            "note as played, 1 drives the model 12 dB louder (louder and brighter).", "`/error` if refused", _pressure),
    Address("/note/pressure", "pitch value", f"pitch int {PITCH_MIN}..{PITCH_MAX}; value in [0, 1]",
            "Per-note pressure (polyphonic aftertouch, MPE).", "`/error` if refused", _note_pressure),
    Address("/sustain", "0|1", "0 or 1", "Sustain pedal: notes released while it is down keep sounding until "
            "it lifts.", "`/error` if refused", _sustain),
    Address("/mode", "poly|mono", ", ".join(MODES), "Mono: one voice, legato (a new key while one is held moves "
            "the sounding voice without a new attack, gliding over `/glide`), with a note stack.",
            "`/error` if refused", _mode),
    Address("/glide", "ms", f"[0, {GLIDE_MS_MAX:g}]", "Glide time of legato notes in mono mode.",
            "`/error` if refused", _glide),
    Address("/prerender", "[lo hi]", f"pitches {PITCH_MIN}..{PITCH_MAX}; default {PRERENDER_LO}..{PRERENDER_HI}",
            "Render the keyboard (every pitch x the five velocity layers) for the current timbre in the background; "
            "a later timbre change or `/prerender` supersedes it. Live voices: each note's controls, computed in the "
            "voice process (no one-shots are rendered); a note of them then starts without the networks.",
            "`/prerender/progress`, then `/prerender/done`",
            _prerender),
    Address("/panic", "", "", "Silence everything at once (5 ms fade), drop scheduled events and waiting notes.",
            "", _no_args(Panic)),
    Address("/gain", "db", f"[{GAIN_DB_MIN:g}, {GAIN_DB_MAX:g}] dB", "Master gain (smoothed per sample); a limiter "
            "keeps the output below full scale.", "`/error` if refused", _gain),
    Address("/status", "", "", "Ask for the server's figures.", "`/status`", _no_args(Status)),
    Address("/sync", "id", "int, float or string", "Answered once every render requested before it has landed "
            "(scsynth's habit).", "`/synced id`", _sync),
    Address("/reply/port", "port", "int 0..65535", "Send replies for this sender (its host and port) to that "
            "UDP port (0: back to the sending port, the default).", "", _reply_port),
    Address("/preset/save", "name", _NAME, "Save the current timbre (source, qualities, latent_sample) as a user "
            "preset, replacing a user preset of that name; a factory preset of that name is shadowed, not changed.",
            "`/preset/saved name`; `/error` if refused", _preset_one(PresetSave)),
    Address("/preset/load", "name", _NAME, "Set the timbre to the preset's source, qualities and latent_sample at "
            "once (one timbre change, as `/source` + `/qualities` + `/latent`). Later notes use it; sounding one-shots "
            "keep their timbre, live voices cross-fade to it.",
            "`/preset/loaded name`; `/error` if refused", _preset_one(PresetLoad)),
    Address("/preset/list", "", "", "Ask for the names of every preset, user and factory, sorted.",
            "`/preset/list name ...`", _no_args(PresetList)),
    Address("/preset/morph", "a b t", f"{_NAME} for a and b; t in [0, 1]", "Set the timbre between two presets: "
            "latent_sample is (1 - t) a + t b; source and qualities are those of the nearer end (a's for t < 0.5, "
            "b's from 0.5 on). Sounding one-shots keep their timbre; live voices follow it.", "`/preset/loaded a~b@t`; `/error` if refused",
            _preset_morph),
    # Replies (server -> client).
    Address("/error", "address reason", "strings", "A message was refused: `address` is the refused message's "
            f"address (`{MALFORMED}` for a packet that is not OSC), `reason` names the field and what is allowed.",
            "(reply)", None),
    Address("/status", "voices cache_notes cache_mb hits misses renders_queued underruns gain_db rendering",
            "ints, except cache_mb and gain_db (floats)",
            "Reply to `/status`: sounding voices, notes in the memory cache, its size in MB, cache hits and misses, "
            "renders waiting in the queue, output under-runs, master gain, renders in progress.", "(reply)", None),
    Address("/synced", "id", "the id of `/sync`", "All renders requested before the `/sync` have landed.",
            "(reply)", None),
    Address("/ready", "pitch velocity", "ints", "A requested (or pre-rendered) note landed in the cache; velocity "
            "is the layer it was rendered at. Live voices: a note-on's own controls were computed (it sounded at "
            "once with a neighbour's); none for a note known already.", "(reply)", None),
    Address("/prerender/progress", "done total", "ints", "Progress of `/prerender` (about every 5%).", "(reply)", None),
    Address("/prerender/done", "total", "int", "`/prerender` finished: that many notes are cached (live voices: computed).",
            "(reply)", None),
    Address("/preset/saved", "name", "string", "`/preset/save` wrote the preset.", "(reply)", None),
    Address("/preset/loaded", "name", "string", "The timbre is now that preset's (`/preset/load`), or the label "
            "`a~b@t` of a `/preset/morph`.", "(reply)", None),
    Address("/preset/list", "[part parts] name ...", "strings; part and parts ints",
            f"Reply to `/preset/list`: every preset name, each an OSC string. A reply that would pass "
            f"{PRESET_LIST_BYTES // 1024} KB is split into several messages, each starting with two ints: its part "
            "number (1-based) and the number of parts; an unsplit reply has no ints.", "(reply)", None),
)

# Incoming addresses by pattern ("/status" is both a request and a reply: the request's entry).
_INCOMING = {a.pattern: a for a in ADDRESSES if a.parse is not None}


def lookup(address: str) -> Address | None:
    """The table entry for an incoming address, or None."""
    if address in _INCOMING:
        return _INCOMING[address]
    if address.startswith("/latent/"):
        return _INCOMING["/latent/<i>"]
    if address.startswith("/quality/") and address.count("/") == 2:
        return _INCOMING["/quality/<name>"]
    return None


def parse_message(address: str, args: list) -> Any:
    """A typed command for one message; raises CommandError (with the reply's reason)."""
    entry = lookup(address)
    if entry is None:
        raise CommandError(address, "unknown address; see the README's OSC table (python -m osc_server.addresses)")
    return entry.parse(address, list(args))


# ---- packets --------------------------------------------------------------------------------


class Timed(NamedTuple):
    time: float | None  # Unix time at which to act; None = at once
    address: str
    args: list


_TYPE_TAGS = set("ifdsbhrmtTFN[]")  # what python-osc decodes; anything else is refused


def decode_packet(dgram: bytes) -> list[Timed]:
    """The messages of one datagram, in packet order, with their bundle timetags.

    An immediate timetag gives time None. Raises MalformedPacket for anything that is not OSC,
    including type tags and bundle elements python-osc would skip with only a log line, and for
    a packet of more than MAX_BUNDLE_MESSAGES messages or bundles nested deeper than
    MAX_BUNDLE_DEPTH (parsing stops at the first message or bundle past the limit).
    """
    if not dgram:
        raise MalformedPacket("empty packet")
    out: list[Timed] = []
    _decode(bytes(dgram), None, out, depth=0)
    return out


def _decode(dgram: bytes, when: float | None, out: list[Timed], depth: int) -> None:
    if dgram.startswith(b"#bundle\x00"):
        if depth >= MAX_BUNDLE_DEPTH:
            raise MalformedPacket(f"bundle: nested at most {MAX_BUNDLE_DEPTH} deep, got more")
        if len(dgram) < 16:
            raise MalformedPacket("truncated bundle header")
        seconds = int.from_bytes(dgram[8:12], "big")
        fraction = int.from_bytes(dgram[12:16], "big")
        # NTP time 0.1 (seconds 0, fraction 1) means "immediately".
        stamp = None if (seconds, fraction) == (0, 1) else seconds - NTP_EPOCH_OFFSET_S + fraction / 2**32
        i = 16
        while i < len(dgram):
            if i + 4 > len(dgram):
                raise MalformedPacket(f"truncated bundle element size at byte {i}")
            size = int.from_bytes(dgram[i:i + 4], "big", signed=True)
            if size <= 0 or size % 4 or i + 4 + size > len(dgram):
                raise MalformedPacket(f"bad bundle element size {size} at byte {i}")
            _decode(dgram[i + 4:i + 4 + size], stamp, out, depth + 1)
            i += 4 + size
        return
    if not dgram.startswith(b"/"):
        raise MalformedPacket("not an OSC packet (must start with '/' or '#bundle')")
    if len(out) >= MAX_BUNDLE_MESSAGES:
        raise MalformedPacket(f"bundle: at most {MAX_BUNDLE_MESSAGES} messages, got more")
    bad = set(_type_tags(dgram)) - _TYPE_TAGS
    if bad:
        raise MalformedPacket(f"unsupported OSC type tag(s) {''.join(sorted(bad))!r}")
    try:
        msg = OscMessage(dgram)
    # python-osc raises its ParseError, but also struct/index/unicode errors on some garbage;
    # every one of them means "not OSC" and is answered, never swallowed.
    except Exception as e:  # noqa: BLE001
        raise MalformedPacket(f"not an OSC packet ({type(e).__name__}: {e})"[:200]) from None
    out.append(Timed(when, msg.address, list(msg.params)))


def _type_tags(dgram: bytes) -> str:
    end = dgram.find(b"\x00")
    start = (end // 4 + 1) * 4
    if start >= len(dgram) or dgram[start:start + 1] != b",":
        return ""
    stop = dgram.find(b"\x00", start)
    return dgram[start + 1:stop if stop >= 0 else len(dgram)].decode("ascii", "replace")


def build(address: str, *args: Any) -> bytes:
    """One OSC message as bytes (for replies)."""
    builder = OscMessageBuilder(address=address)
    for a in args:
        if isinstance(a, bool):
            a = int(a)
        elif isinstance(a, float):
            builder.add_arg(a, "f")
            continue
        builder.add_arg(a)
    return builder.build().dgram


def _osc_string_bytes(text: str) -> int:
    return (len(text.encode("utf-8")) // 4 + 1) * 4


def preset_list_replies(names: list[str], limit: int = PRESET_LIST_BYTES) -> list[list]:
    """The argument lists of the `/preset/list` reply: all names in one message when it fits in
    `limit` bytes, else several messages of `part parts name ...` (ints, 1-based), each within
    `limit` (names are at most NAME_MAX characters, so one always fits)."""
    address = _osc_string_bytes("/preset/list")

    def size(n_strings: int, string_bytes: int, n_ints: int) -> int:
        return address + _osc_string_bytes("," + "i" * n_ints + "s" * n_strings) + 4 * n_ints + string_bytes

    if size(len(names), sum(map(_osc_string_bytes, names)), 0) <= limit:
        return [list(names)]
    parts: list[list[str]] = [[]]
    used = 0
    for name in names:
        b = _osc_string_bytes(name)
        if parts[-1] and size(len(parts[-1]) + 1, used + b, 2) > limit:
            parts.append([])
            used = 0
        parts[-1].append(name)
        used += b
    return [[i + 1, len(parts), *part] for i, part in enumerate(parts)]


def markdown() -> str:
    rows = ["| address | arguments | ranges | effect | replies |", "|---|---|---|---|---|"]
    for a in ADDRESSES:
        name = f"`{a.pattern}`" + (" (reply)" if a.parse is None else "")
        cells = [name, a.arguments and f"`{a.arguments}`", a.ranges, a.effect, a.replies if a.parse else ""]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    if "--markdown" in sys.argv[1:]:
        print(markdown())
    else:
        print("usage: python -m osc_server.addresses --markdown", file=sys.stderr)
        sys.exit(2)
