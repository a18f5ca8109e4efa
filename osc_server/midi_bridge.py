"""`sound-generator midi-bridge`: play the OSC server from a MIDI controller.

    sound-generator midi-bridge --list                  # MIDI inputs this machine offers
    sound-generator midi-bridge                         # virtual input port "sound-generator"
    sound-generator midi-bridge --in nanoKONTROL        # open the first input whose name contains it
    sound-generator midi-bridge --to 192.168.1.20:9000 --map my_map.json
    sound-generator midi-bridge --in Seaboard --mpe     # an MPE controller, one channel per note
    sound-generator midi-bridge --show-map              # the active mapping as a table

Notes: note-on (velocity 1..127) -> ``/note pitch velocity``; note-off and note-on with velocity 0
-> ``/note pitch 0``. Pitches outside 9..120 (the models' range) are dropped with a warning.

Controls follow a mapping. Its defaults are written in one place, the shipped
``osc_server/midi_map.json`` (``--show-map`` prints the active mapping, ``--help`` sums it up);
``--map FILE`` overrides any of its keys, the rest keep their defaults; null or an empty
list/dict switches a control off:

========================  ================================================================================
key                       value: what it sends
========================  ================================================================================
channel                   null (omni), or the one MIDI channel 1..16 that is read (ignored with ``--mpe``)
latent_cc                 up to 16 CCs, the i-th -> ``/latent/<i> v``: 0 -> -7, 64 -> 0, 127 -> +7
gain_cc                   a CC -> ``/gain db``: 0..127 -> gain_db_range, linear in dB
gain_db_range             [low_db, high_db]
source_program            {program: source}: program change -> ``/source <source>``
source_cc                 a CC -> ``/source``: 0..42 acoustic, 43..85 electronic, 86..127 synthetic
quality_cc                {CC: quality} -> ``/quality/<quality> 1`` at value >= 64, else 0
prerender_cc              a CC -> ``/prerender`` when the value goes >= 64
panic_cc                  CCs -> ``/panic``
bend_range_semitones      R (0 < R <= 48): pitch bend -> ``/bend cents``; -8192 -> -100 R, 0 (MIDI 8192)
                          -> 0, +8191 -> exactly +100 R cents, linear on each side (as the latent knobs)
mpe_bend_range_semitones  R: with ``--mpe``, a member channel's bend -> ``/note/bend pitch cents``, as above
aftertouch                true: channel pressure -> ``/pressure v``, polyphonic aftertouch ->
                          ``/note/pressure pitch v``, 0..127 -> 0..1; false ignores both
sustain_cc                a CC (the pedal, 64) -> ``/sustain 1`` at value >= 64, ``/sustain 0`` below; sent
                          when the pedal changes side (and for its first message)
cc74_latent               i: CC 74 (MPE's timbre dimension) -> ``/latent/<i> v``, scaled as latent_cc.
                          Default 0: latent_cc already gives every dimension a knob, so CC 74 shares the
                          first with CC 20 (the value moved last wins)
========================  ================================================================================

A map file that leaves sustain_cc or cc74_latent out but uses CC 64 or CC 74 for another key
(written before these existed, like ``{"latent_cc": [70, 71, 72, 73, 74, 75, 76, 77]}``) keeps
working: that default is switched off, with a log line. Given explicitly, a clash is refused.

``--mpe`` reads an MPE controller's lower zone (the MPE spec's default): channel 1 is the master
channel, 2..16 the member channels, one sounding note each. The master channel plays as without
``--mpe`` (its bend -> ``/bend``, ±bend_range_semitones, default 2; its pressure -> ``/pressure``).
On a member channel, note-on makes its pitch the channel's note and note-off (of that pitch) ends
it; the channel's pitch bend -> ``/note/bend pitch cents`` (±mpe_bend_range_semitones, default 48)
and its channel pressure -> ``/note/pressure pitch v``, both for the channel's note. Bend and
pressure on a member channel with no sounding note are not sent but remembered (MIDI channel
state): MPE controllers send them just before note-on, so a note-on is followed by its channel's
bend and pressure when they are not 0. Control changes on any channel follow the map: the server
has no per-note latent (or gain, sustain, ...), so a member channel's CC 74 moves the one global
``/latent/<cc74_latent>``, and since the server gives a timbre change to later notes only, it is
sent whether or not a note sounds on that channel (the CC 74 sent before a note-on sets that
note's timbre).

Rate: controllers send bend and pressure at up to a few kHz. Continuous controls (``/bend``,
``/note/bend``, ``/pressure``, ``/note/pressure``, ``/latent/<i>``, ``/gain``) are coalesced: at
most one message per control (and per pitch) every COALESCE_INTERVAL_S (2 ms); a value that
arrives sooner is held and the latest one is sent when the interval is over, so the last value is
never lost. The server eases bend over a frame (8 ms), so 2 ms steps are finer than it plays. Events (notes,
switches, ``/source``, ``/panic``) go at once, after any held values, so the order is kept.

Everything else (clock, sysex, RPNs such as a controller's own bend range) is ignored. The bridge
sends from one UDP socket and logs what the server answers (``/error`` as warnings), so a mistyped
map shows up.

MIDI goes through mido's python-rtmidi backend; ``--api jack`` uses JACK MIDI instead of the ALSA
sequencer (on Linux the default), which is what a machine without ``/dev/snd/seq`` can still offer.
"""

from __future__ import annotations

import argparse
import faulthandler
import functools
import json
import logging
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import mido
from pythonosc.osc_message_builder import OscMessageBuilder

from osc_server.addresses import BEND_CENTS_MAX, MalformedPacket, decode_packet
from synth.params import LATENT_DIM, LATENT_MAX, LATENT_MIN, PITCH_MAX, PITCH_MIN, SOURCES, canonical_quality

log = logging.getLogger("osc_server.midi")

DEFAULT_TARGET = ("127.0.0.1", 9000)
DEFAULT_PORT_NAME = "sound-generator"
SWITCH_ON = 64  # MIDI's convention for on/off controllers (sustain pedal and friends)
TIMBRE_CC = 74  # MPE's third dimension ("timbre", often a key's vertical slide)
# mido backend names for --api (python-rtmidi's APIs).
APIS = {"alsa": "LINUX_ALSA", "jack": "UNIX_JACK", "coremidi": "MACOSX_CORE", "windows": "WINDOWS_MM"}
# At most one warning per this many seconds about replies that are not OSC (the rest are counted).
MALFORMED_LOG_INTERVAL_S = 10.0
# mido's pitchwheel values: MIDI's 14-bit 0..16383 less the centre 8192.
BEND_MIN, BEND_MAX = -8192, 8191
# MPE lower zone, the spec's default layout (1-based channels, as a performer counts them).
MPE_MASTER_CHANNEL = 1
MPE_MEMBER_CHANNELS = range(2, 17)
# At most one message per continuous control per this many seconds (see the module docstring):
# 500 per second per control, finer than the 8 ms frame over which the server eases a bend.
COALESCE_INTERVAL_S = 0.002
COALESCED = frozenset({"/bend", "/note/bend", "/pressure", "/note/pressure", "/gain"})  # and /latent/<i>
PER_NOTE = frozenset({"/note/bend", "/note/pressure"})  # coalesced per pitch (their first argument)

OscOut = tuple[str, tuple[Any, ...]]  # (address, arguments) with Python types = OSC types


def _cc(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 127:
        raise ValueError(f"{where}: expected a MIDI controller number 0..127, got {value!r}")
    return value


def _bend_range(where: str, value: Any) -> float | None:
    most = BEND_CENTS_MAX / 100
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= most:
        raise ValueError(f"{where}: expected null (bend ignored) or semitones in (0, {most:g}], got {value!r}")
    return float(value)


@dataclass(frozen=True)
class MidiMap:
    """Which MIDI messages drive which OSC controls. See the module docstring for the table.

    No defaults here: build it with `from_dict` or `load_map`, whose defaults are the shipped
    ``midi_map.json``.
    """

    channel: int | None  # 1..16, None = omni
    latent_cc: tuple[int, ...]  # position i -> /latent/i
    gain_cc: int | None
    gain_db_range: tuple[float, float]
    source_program: Mapping[int, str]
    source_cc: int | None
    quality_cc: Mapping[int, str]
    prerender_cc: int | None
    panic_cc: tuple[int, ...]
    bend_range_semitones: float | None  # pitch bend -> /bend (the master channel's with --mpe)
    mpe_bend_range_semitones: float | None  # --mpe: a member channel's bend -> /note/bend
    aftertouch: bool  # channel -> /pressure, polyphonic -> /note/pressure
    sustain_cc: int | None
    cc74_latent: int | None  # CC 74 -> /latent/<cc74_latent>

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MidiMap":
        """Validate a mapping such as ``midi_map.json``; raises ValueError naming the key. Keys
        it leaves out keep the shipped defaults (`default_map_data`); the defaults of sustain_cc
        and cc74_latent are switched off (with a log line) where the mapping's other keys use their
        controller."""
        known = set(cls.__dataclass_fields__)
        given = set(data)
        for key in data:
            if key not in known:
                raise ValueError(f"{key}: unknown mapping key; allowed: {', '.join(sorted(known))}")
        data = {**default_map_data(), **data}
        channel = data.get("channel")
        if channel is not None and (isinstance(channel, bool) or not isinstance(channel, int) or not 1 <= channel <= 16):
            raise ValueError(f"channel: expected null (omni) or a MIDI channel 1..16, got {channel!r}")
        latent = data.get("latent_cc") or []
        if len(latent) > LATENT_DIM:
            raise ValueError(f"latent_cc: expected at most {LATENT_DIM} controller numbers, got {len(latent)}")
        latent_cc = tuple(_cc(f"latent_cc[{i}]", c) for i, c in enumerate(latent))
        gain_cc = None if data.get("gain_cc") is None else _cc("gain_cc", data["gain_cc"])
        lo_hi = data.get("gain_db_range")
        if (
            not isinstance(lo_hi, (list, tuple))
            or len(lo_hi) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in lo_hi)
            or not lo_hi[0] < lo_hi[1]
        ):
            raise ValueError(f"gain_db_range: expected [low_db, high_db] with low < high, got {lo_hi!r}")
        programs: dict[int, str] = {}
        for number, name in (data.get("source_program") or {}).items():
            if not str(number).isdigit() or not 0 <= int(number) <= 127:
                raise ValueError(f"source_program: expected program numbers 0..127 as keys, got {number!r}")
            if name not in SOURCES:
                raise ValueError(f"source_program[{number}]: expected one of {', '.join(SOURCES)}, got {name!r}")
            programs[int(number)] = name
        source_cc = None if data.get("source_cc") is None else _cc("source_cc", data["source_cc"])
        qualities: dict[int, str] = {}
        for number, name in (data.get("quality_cc") or {}).items():
            if not str(number).isdigit():
                raise ValueError(f"quality_cc: expected controller numbers as keys, got {number!r}")
            try:
                qualities[_cc("quality_cc", int(number))] = canonical_quality(name)
            except ValueError as exc:
                raise ValueError(f"quality_cc[{number}]: {exc}") from None
        prerender_cc = None if data.get("prerender_cc") is None else _cc("prerender_cc", data["prerender_cc"])
        panic_cc = tuple(_cc(f"panic_cc[{i}]", c) for i, c in enumerate(data.get("panic_cc") or []))
        bend_range = _bend_range("bend_range_semitones", data.get("bend_range_semitones"))
        mpe_bend_range = _bend_range("mpe_bend_range_semitones", data.get("mpe_bend_range_semitones"))
        aftertouch = data.get("aftertouch")
        if not isinstance(aftertouch, bool):
            raise ValueError(f"aftertouch: expected true or false, got {aftertouch!r}")
        sustain_cc = None if data.get("sustain_cc") is None else _cc("sustain_cc", data["sustain_cc"])
        cc74_latent = data.get("cc74_latent")
        if cc74_latent is not None and (
            isinstance(cc74_latent, bool) or not isinstance(cc74_latent, int) or not 0 <= cc74_latent < LATENT_DIM
        ):
            raise ValueError(f"cc74_latent: expected null or a latent index 0..{LATENT_DIM - 1}, got {cc74_latent!r}")

        used: dict[int, str] = {}
        roles = [(c, f"latent_cc[{i}]") for i, c in enumerate(latent_cc)]
        roles += [(gain_cc, "gain_cc"), (source_cc, "source_cc"), (prerender_cc, "prerender_cc")]
        roles += [(c, f"quality_cc[{c}]") for c in qualities] + [(c, f"panic_cc[{i}]") for i, c in enumerate(panic_cc)]
        # Maps written before the pedal and CC 74 had defaults may use those controllers (the
        # README's example puts latent knobs on CC 70..77): there, the new defaults give way.
        owners = {number: role for number, role in reversed(roles) if number is not None}
        if "sustain_cc" not in given and sustain_cc in owners:
            log.info("sustain_cc: CC %d is the map's %s, so the sustain pedal is off", sustain_cc, owners[sustain_cc])
            sustain_cc = None
        if "cc74_latent" not in given and cc74_latent is not None and TIMBRE_CC in owners:
            log.info("cc74_latent: CC %d is the map's %s, so it does not also move /latent/%d",
                     TIMBRE_CC, owners[TIMBRE_CC], cc74_latent)
            cc74_latent = None
        roles += [(sustain_cc, "sustain_cc"), (None if cc74_latent is None else TIMBRE_CC, "cc74_latent")]
        for number, role in roles:
            if number is None:
                continue
            if number in used:
                raise ValueError(f"{role}: controller {number} is already used by {used[number]}")
            used[number] = role
        return cls(
            channel=channel,
            latent_cc=latent_cc,
            gain_cc=gain_cc,
            gain_db_range=(float(lo_hi[0]), float(lo_hi[1])),
            source_program=programs,
            source_cc=source_cc,
            quality_cc=qualities,
            prerender_cc=prerender_cc,
            panic_cc=panic_cc,
            bend_range_semitones=bend_range,
            mpe_bend_range_semitones=mpe_bend_range,
            aftertouch=aftertouch,
            sustain_cc=sustain_cc,
            cc74_latent=cc74_latent,
        )

    def rows(self, mpe: bool = False) -> list[tuple[str, str]]:
        """(MIDI input, OSC output) pairs, for `--show-map` (with `--mpe` or not) and the README."""
        if mpe:
            members = f"{MPE_MEMBER_CHANNELS[0]}..{MPE_MEMBER_CHANNELS[-1]}"
            rows = [("channel", f"MPE lower zone: master {MPE_MASTER_CHANNEL}, members {members}")]
        else:
            rows = [("channel", "omni" if self.channel is None else str(self.channel))]
        rows.append(("note on 1..127 / off", f"/note pitch velocity | /note pitch 0 (pitch {PITCH_MIN}..{PITCH_MAX})"))
        rows += [(f"CC {c}", f"/latent/{i}  (0..127 -> -7..7, 64 = 0)") for i, c in enumerate(self.latent_cc)]
        if self.gain_cc is not None:
            lo, hi = self.gain_db_range
            rows.append((f"CC {self.gain_cc}", f"/gain  (0..127 -> {lo:g}..{hi:g} dB)"))
        rows += [(f"program {p}", f"/source {name}") for p, name in sorted(self.source_program.items())]
        if self.source_cc is not None:
            rows.append((f"CC {self.source_cc}", "/source  (0..42 acoustic, 43..85 electronic, 86..127 synthetic)"))
        rows += [(f"CC {c}", f"/quality/{name}  (>= 64 on)") for c, name in sorted(self.quality_cc.items())]
        if self.prerender_cc is not None:
            rows.append((f"CC {self.prerender_cc}", "/prerender  (on >= 64)"))
        rows += [(f"CC {c}", "/panic") for c in self.panic_cc]
        master = f" ch {MPE_MASTER_CHANNEL}" if mpe else ""
        if self.bend_range_semitones is not None:
            cents = 100 * self.bend_range_semitones
            rows.append((f"pitch bend{master}", f"/bend cents  (-8192..0..+8191 -> {-cents:g}..0..{cents:+g})"))
        if self.aftertouch:
            rows.append((f"channel pressure{master}", "/pressure  (0..127 -> 0..1)"))
            rows.append(("poly pressure", "/note/pressure pitch  (0..127 -> 0..1)"))
        if self.sustain_cc is not None:
            rows.append((f"CC {self.sustain_cc}", "/sustain  (>= 64 -> 1, < 64 -> 0, on change)"))
        if self.cc74_latent is not None:
            rows.append((f"CC {TIMBRE_CC}", f"/latent/{self.cc74_latent}  (0..127 -> -7..7, 64 = 0)"))
        members = f"{MPE_MEMBER_CHANNELS[0]}..{MPE_MEMBER_CHANNELS[-1]}"
        if self.mpe_bend_range_semitones is not None:
            cents = 100 * self.mpe_bend_range_semitones
            rows.append((f"--mpe bend ch {members}", f"/note/bend pitch cents  ({-cents:g}..0..{cents:+g})"))
        if self.aftertouch:
            rows.append((f"--mpe pressure ch {members}", "/note/pressure pitch  (0..127 -> 0..1)"))
        return rows

    def summary(self, width: int = 76) -> list[str]:
        """The mapping in a few lines of at most about `width` characters, for `--help`."""
        parts = [] if self.channel is None else [f"channel {self.channel} only"]
        parts.append("notes -> /note")
        n = len(self.latent_cc)
        if n:
            parts.append(f"CC {_numbers(self.latent_cc)} -> /latent/0" + (f"..{n - 1}" if n > 1 else ""))
        if self.gain_cc is not None:
            parts.append(f"CC {self.gain_cc} -> /gain")
        source = [f"program {'/'.join(map(str, sorted(self.source_program)))}"] if self.source_program else []
        source += [] if self.source_cc is None else [f"CC {self.source_cc}"]
        if source:
            parts.append(f"{' and '.join(source)} -> /source")
        if self.quality_cc:
            parts.append(f"CC {_numbers(sorted(self.quality_cc))} -> /quality/<name>")
        if self.prerender_cc is not None:
            parts.append(f"CC {self.prerender_cc} -> /prerender")
        if self.panic_cc:
            parts.append(f"CC {_numbers(self.panic_cc)} -> /panic")
        if self.bend_range_semitones is not None:
            parts.append(f"bend -> /bend (+-{self.bend_range_semitones:g} semitones)")
        if self.aftertouch:
            parts.append("aftertouch -> /pressure, /note/pressure")
        if self.sustain_cc is not None:
            parts.append(f"CC {self.sustain_cc} -> /sustain")
        if self.cc74_latent is not None:
            parts.append(f"CC {TIMBRE_CC} -> /latent/{self.cc74_latent}")
        if self.mpe_bend_range_semitones is not None:
            parts.append(f"--mpe: member bend -> /note/bend (+-{self.mpe_bend_range_semitones:g} semitones)")
        lines = [parts[0]]
        for part in parts[1:]:
            if len(lines[-1]) + 2 + len(part) > width:
                lines[-1] += ";"
                lines.append(part)
            else:
                lines[-1] += "; " + part
        return [*lines[:-1], lines[-1] + "."]


def _numbers(numbers: Iterable[int]) -> str:
    """20, 21, 22, 30 -> '20..22, 30': runs of three or more as a range."""
    runs: list[list[int]] = []
    for x in numbers:
        if runs and x == runs[-1][-1] + 1:
            runs[-1].append(x)
        else:
            runs.append([x])
    return ", ".join(f"{r[0]}..{r[-1]}" if len(r) >= 3 else ", ".join(map(str, r)) for r in runs)


@functools.cache
def _shipped_map_text() -> str:
    return resources.files("osc_server").joinpath("midi_map.json").read_text()


def default_map_data() -> dict[str, Any]:
    """The shipped ``midi_map.json`` (read once) as a new dict: the one place the defaults are."""
    return json.loads(_shipped_map_text())


def load_map(path: str | Path | None = None) -> MidiMap:
    """The shipped mapping, with the keys of the JSON file at `path` (if any) replacing its own."""
    override: Any = {}
    if path is not None:
        override = json.loads(Path(path).read_text())
        if not isinstance(override, dict):
            raise ValueError(f"{path}: expected a JSON object of mapping keys")
    return MidiMap.from_dict(override)


def cc_to_latent(value: int) -> float:
    """0 -> -7, 64 -> 0 (the knob's centre detent), 127 -> +7; linear on each side."""
    if value <= 64:
        return LATENT_MIN * (64 - value) / 64
    return LATENT_MAX * (value - 64) / 63


def cc_to_gain_db(value: int, gain_db_range: tuple[float, float]) -> float:
    lo, hi = gain_db_range
    return lo + (hi - lo) * value / 127


def cc_to_source(value: int) -> str:
    return SOURCES[min(value * len(SOURCES) // 128, len(SOURCES) - 1)]


def bend_to_cents(bend: int, range_semitones: float) -> float:
    """mido's pitchwheel -8192..8191 -> cents: -8192 -> -range, 0 -> 0, +8191 -> exactly +range.

    Linear on each side of the centre (as `cc_to_latent`), so both extremes reach the range; one
    step is 100 * range / 8192 cents below the centre and 100 * range / 8191 above it.
    """
    cents = 100 * range_semitones
    return cents * bend / -BEND_MIN if bend <= 0 else cents * bend / BEND_MAX


def pressure_to_value(value: int) -> float:
    """MIDI aftertouch 0..127 -> 0..1."""
    return value / 127


class Translator:
    """MIDI message -> OSC messages, following a `MidiMap`. Keeps the switch states (pre-render,
    sustain pedal) and, with `mpe`, each member channel's sounding pitch, bend and pressure."""

    def __init__(self, mapping: MidiMap, mpe: bool = False) -> None:
        self.mapping = mapping
        self.mpe = mpe
        self._latent = {c: i for i, c in enumerate(mapping.latent_cc)}
        if mapping.cc74_latent is not None:
            self._latent[TIMBRE_CC] = mapping.cc74_latent
        self._prerender_down = False
        self._sustain_down: bool | None = None  # unknown until the pedal's first message
        # --mpe, by (0-based) member channel: the pitch sounding there; its last bend and pressure.
        self._pitch: dict[int, int] = {}
        self._bend_cents: dict[int, float] = {}
        self._pressure: dict[int, float] = {}
        if mpe and mapping.channel is not None:
            log.warning("channel %d of the map is ignored with --mpe (the MPE lower zone is channels %d..%d)",
                        mapping.channel, MPE_MASTER_CHANNEL, MPE_MEMBER_CHANNELS[-1])

    def __call__(self, msg: mido.Message) -> list[OscOut]:
        m = self.mapping
        channel = getattr(msg, "channel", None)
        if channel is None:
            return []
        if self.mpe:
            if channel + 1 in MPE_MEMBER_CHANNELS and msg.type in ("note_on", "note_off", "pitchwheel", "aftertouch"):
                return self._member(channel, msg)
        elif m.channel is not None and channel != m.channel - 1:
            return []
        if msg.type in ("note_on", "note_off"):
            played = self._played(msg)
            return [] if played is None else [("/note", played)]
        if msg.type == "pitchwheel":
            if m.bend_range_semitones is None:
                return []
            return [("/bend", (round(bend_to_cents(msg.pitch, m.bend_range_semitones), 3),))]
        if msg.type == "aftertouch":
            return [("/pressure", (round(pressure_to_value(msg.value), 4),))] if m.aftertouch else []
        if msg.type == "polytouch":
            if not m.aftertouch or not PITCH_MIN <= msg.note <= PITCH_MAX:
                return []  # a pitch outside the range was warned about at its note-on
            return [("/note/pressure", (msg.note, round(pressure_to_value(msg.value), 4)))]
        if msg.type == "program_change":
            name = m.source_program.get(msg.program)
            return [("/source", (name,))] if name else []
        if msg.type != "control_change":
            return []
        cc, value = msg.control, msg.value
        if cc in self._latent:
            return [(f"/latent/{self._latent[cc]}", (round(cc_to_latent(value), 4),))]
        if cc == m.gain_cc:
            return [("/gain", (round(cc_to_gain_db(value, m.gain_db_range), 3),))]
        if cc == m.source_cc:
            return [("/source", (cc_to_source(value),))]
        if cc in m.quality_cc:
            return [(f"/quality/{m.quality_cc[cc]}", (int(value >= SWITCH_ON),))]
        if cc == m.sustain_cc:
            # A pedal sends a stream of positions; the server needs only the side of 64 it is on.
            down = value >= SWITCH_ON
            changed, self._sustain_down = down != self._sustain_down, down
            return [("/sustain", (int(down),))] if changed else []
        if cc == m.prerender_cc:
            # A button sends 127 then 0: one pre-render per press.
            down = value >= SWITCH_ON
            pressed, self._prerender_down = down and not self._prerender_down, down
            return [("/prerender", ())] if pressed else []
        if cc in m.panic_cc:
            return [("/panic", ())]
        return []

    @staticmethod
    def _played(msg: mido.Message) -> tuple[int, int] | None:
        """(pitch, velocity) of a note-on/off, velocity 0 for off; None (and a warning) outside the range."""
        if not PITCH_MIN <= msg.note <= PITCH_MAX:
            log.warning("note %d dropped: the instrument plays %d..%d", msg.note, PITCH_MIN, PITCH_MAX)
            return None
        return msg.note, msg.velocity if msg.type == "note_on" else 0

    def _member(self, channel: int, msg: mido.Message) -> list[OscOut]:
        """A note, bend or pressure on an MPE member channel (0-based `channel`)."""
        m = self.mapping
        if msg.type in ("note_on", "note_off"):
            played = self._played(msg)
            if played is None:
                return []
            pitch, velocity = played
            if not velocity:
                if self._pitch.get(channel) == pitch:
                    del self._pitch[channel]
                return [("/note", (pitch, 0))]
            self._pitch[channel] = pitch
            out: list[OscOut] = [("/note", (pitch, velocity))]
            # MPE controllers set a channel's bend and pressure just before its note-on.
            if self._bend_cents.get(channel, 0.0):
                out.append(("/note/bend", (pitch, self._bend_cents[channel])))
            if self._pressure.get(channel, 0.0):
                out.append(("/note/pressure", (pitch, self._pressure[channel])))
            return out
        if msg.type == "pitchwheel":
            if m.mpe_bend_range_semitones is None:
                return []
            self._bend_cents[channel] = value = round(bend_to_cents(msg.pitch, m.mpe_bend_range_semitones), 3)
            address = "/note/bend"
        else:
            if not m.aftertouch:
                return []
            self._pressure[channel] = value = round(pressure_to_value(msg.value), 4)
            address = "/note/pressure"
        pitch = self._pitch.get(channel)
        return [] if pitch is None else [(address, (pitch, value))]


def encode(address: str, args: Iterable[Any]) -> bytes:
    """One OSC message; Python int -> 'i', float -> 'f', str -> 's'."""
    builder = OscMessageBuilder(address)
    for arg in args:
        builder.add_arg(arg)
    return builder.build().dgram


def parse_target(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT (for example 127.0.0.1:9000), got {text!r}")
    return host, int(port)


class OscSender:
    """Sends OSC from one UDP socket and logs the server's replies (they come back to it)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("0.0.0.0", 0))
        self.malformed = 0  # replies that were not OSC
        self._malformed_unlogged = 0
        self._malformed_logged_at = -float("inf")
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read_replies, name="midi-bridge-replies", daemon=True)
        self._reader.start()

    def send(self, messages: Iterable[OscOut]) -> None:
        for address, args in messages:
            log.debug("-> %s %s", address, " ".join(map(str, args)))
            self.sock.sendto(encode(address, args), self.target)

    def _read_replies(self) -> None:
        self.sock.settimeout(0.2)
        while not self._closed.is_set():
            try:
                data, sender = self.sock.recvfrom(65536)
            except (socket.timeout, OSError):
                continue
            try:
                replies = decode_packet(data)
            except MalformedPacket as exc:
                self._malformed(len(data), sender, exc)
                continue
            for reply in replies:
                level = logging.WARNING if reply.address == "/error" else logging.DEBUG
                log.log(level, "server: %s %s", reply.address, " ".join(map(str, reply.args)))

    def _malformed(self, size: int, sender: tuple[str, int], exc: MalformedPacket) -> None:
        """Count a datagram that is not OSC; warn about it unless one was warned about less than
        MALFORMED_LOG_INTERVAL_S ago (a flood of garbage must not flood the log)."""
        self.malformed += 1
        now = time.monotonic()
        if now - self._malformed_logged_at < MALFORMED_LOG_INTERVAL_S:
            self._malformed_unlogged += 1
            return
        since = f"; {self._malformed_unlogged} more since the last such warning" if self._malformed_unlogged else ""
        log.warning("<- %d bytes from %s:%d that are not OSC (%s)%s", size, sender[0], sender[1], exc, since)
        self._malformed_logged_at, self._malformed_unlogged = now, 0

    def close(self) -> None:
        self._closed.set()
        self._reader.join(timeout=1)
        self.sock.close()


ControlKey = str | tuple[str, Any]  # the control a message sets: its address, and its pitch if per-note


class Coalescer:
    """Thins continuous controls to at most one message per control per `interval_s`, never
    losing the last value; any other message goes at once, after the held values (order is kept).

    `send` takes the translator's messages and passes what may go now to `out`. A value that comes
    sooner than `interval_s` after its control's last message is held (a newer one replaces it)
    and sent when the interval is over: by `flush_due`, which the thread of `start` runs when the
    next held value is due. `close` sends what is held and stops the thread. `clock` is a parameter
    so that a test can drive the logic without the thread.
    """

    def __init__(
        self,
        out: Callable[[list[OscOut]], None],
        interval_s: float = COALESCE_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s = interval_s
        self._out = out
        self._clock = clock
        self._sent_at: dict[ControlKey, float] = {}
        self._held: dict[ControlKey, OscOut] = {}
        self._wake = threading.Condition()  # re-entrant: _run calls the public methods
        self._closed = False
        self._thread: threading.Thread | None = None

    @staticmethod
    def control(address: str, args: tuple[Any, ...]) -> ControlKey | None:
        """The control a message sets, or None for a message that is not coalesced."""
        if address in PER_NOTE:
            return address, args[0]
        if address in COALESCED or address.startswith("/latent/"):
            return address
        return None

    def send(self, messages: Iterable[OscOut]) -> None:
        with self._wake:
            now = self._clock()
            out: list[OscOut] = []
            for address, args in messages:
                key = self.control(address, args)
                if key is None:
                    out += self._take_held(now)
                    out.append((address, args))
                elif key in self._held or now - self._sent_at.get(key, -float("inf")) < self.interval_s:
                    self._held[key] = (address, args)
                else:
                    self._sent_at[key] = now
                    out.append((address, args))
            if out:
                self._out(out)
            if self._held:
                self._wake.notify()

    def next_due(self) -> float | None:
        """When (on `clock`) the earliest held value is due; None when nothing is held."""
        with self._wake:
            if not self._held:
                return None
            return min(self._sent_at[key] for key in self._held) + self.interval_s

    def flush_due(self) -> None:
        """Send the held values whose interval is over."""
        with self._wake:
            now = self._clock()
            due = [key for key in self._held if self._sent_at[key] + self.interval_s <= now]
            for key in due:
                self._sent_at[key] = now
            if due:
                self._out([self._held.pop(key) for key in due])

    def _take_held(self, now: float) -> list[OscOut]:
        held = list(self._held.values())
        for key in self._held:
            self._sent_at[key] = now
        self._held.clear()
        return held

    def start(self) -> "Coalescer":
        self._thread = threading.Thread(target=self._run, name="midi-bridge-coalescer", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        with self._wake:
            while not self._closed:
                due = self.next_due()
                if due is None:
                    self._wake.wait()
                elif due > self._clock():
                    self._wake.wait(due - self._clock())
                else:
                    self.flush_due()

    def close(self) -> None:
        """Send what is held and stop the thread."""
        with self._wake:
            self._closed = True
            held = self._take_held(self._clock())
            if held:
                self._out(held)
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=1)


def backend(api: str | None) -> mido.Backend:
    name = "mido.backends.rtmidi" + (f"/{APIS[api]}" if api else "")
    return mido.Backend(name, load=True)


def open_input(midi: mido.Backend, fragment: str | None, virtual_name: str = DEFAULT_PORT_NAME):
    """The input port whose name contains `fragment` (case-insensitive), or a new virtual port."""
    if fragment is None:
        return midi.open_input(virtual_name, virtual=True, client_name=virtual_name)
    names = midi.get_input_names()
    matches = [n for n in names if fragment.lower() in n.lower()]
    if not matches:
        raise LookupError(f"no MIDI input matches {fragment!r}; inputs: {', '.join(names) or 'none'}")
    exact = [n for n in matches if n == fragment]
    return midi.open_input((exact or matches)[0])


CLOSE_TIMEOUT_S = 5.0  # closing the port and the senders after Ctrl-C takes at most this


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def bridge(port: Iterable[mido.Message], translator: Translator, sender: OscSender | Coalescer) -> None:
    """Forward every message from `port` until it ends (or Ctrl-C)."""
    for msg in port:
        sender.send(translator(msg))


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "\n".join(["default mapping (osc_server/midi_map.json):",
                               *("  " + line for line in load_map().summary(width=70)),
                               "--show-map prints it; --map FILE changes it."])
    parser.add_argument("--list", action="store_true", help="list MIDI input ports and exit")
    parser.add_argument(
        "--in",
        dest="port",
        metavar="PORT",
        help=f"open the MIDI input whose name contains PORT (default: a virtual input named '{DEFAULT_PORT_NAME}')",
    )
    parser.add_argument(
        "--to",
        type=parse_target,
        default=DEFAULT_TARGET,
        metavar="HOST:PORT",
        help=f"the OSC server (default: {DEFAULT_TARGET[0]}:{DEFAULT_TARGET[1]})",
    )
    parser.add_argument("--map", metavar="FILE", help="JSON file whose keys replace the default mapping's")
    parser.add_argument("--show-map", action="store_true", help="print the active mapping and exit")
    parser.add_argument(
        "--mpe",
        action="store_true",
        help=f"MPE controller, lower zone: channel {MPE_MASTER_CHANNEL} is the master channel, "
        f"{MPE_MEMBER_CHANNELS[0]}..{MPE_MEMBER_CHANNELS[-1]} carry one note each, whose bend and pressure "
        "become /note/bend and /note/pressure",
    )
    parser.add_argument(
        "--api",
        choices=sorted(APIS),
        help="MIDI system to use (default: rtmidi's choice, ALSA on Linux); 'jack' needs a running JACK server",
    )
    parser.add_argument(
        "--name", default=DEFAULT_PORT_NAME, help=f"name of the virtual input port (default: {DEFAULT_PORT_NAME})"
    )


def run(args: argparse.Namespace) -> int:
    mapping = load_map(args.map)
    if args.show_map:
        for midi_in, osc_out in mapping.rows(mpe=args.mpe):
            print(f"{midi_in:<26} {osc_out}")
        return 0
    midi = backend(args.api)
    try:
        if args.list:
            names = midi.get_input_names()
            print("\n".join(names) if names else "no MIDI inputs")
            return 0
        port = open_input(midi, args.port, args.name)
    except (OSError, LookupError) as exc:  # rtmidi's errors are OSErrors
        hint = " (no ALSA sequencer here? try --api jack with a JACK server running)" if args.api is None else ""
        log.error("MIDI: %s%s", exc, hint)
        return 1
    sender = OscSender(args.to)
    coalescer = Coalescer(sender.send).start()
    zone = f", MPE lower zone (master channel {MPE_MASTER_CHANNEL})" if args.mpe else ""
    log.info("MIDI %r -> OSC %s:%d%s", port.name, *args.to, zone)
    if threading.current_thread() is threading.main_thread():
        # Ctrl-C and SIGTERM stop the bridge, even when it was started with SIGINT ignored (a
        # background job of a script inherits that, and Python then installs no Ctrl-C handler:
        # `kill -INT` did nothing and the bridge read on until killed).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _interrupt)
        if hasattr(signal, "SIGUSR1"):  # `kill -USR1 <pid>`: every thread's stack to stderr
            faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        bridge(port, Translator(mapping, mpe=args.mpe), coalescer)
    except KeyboardInterrupt:
        log.info("stopped")
    finally:
        # Closing talks to the MIDI system (a JACK client's close waits for the server): if it
        # hangs, say where and exit anyway rather than ignore Ctrl-C.
        faulthandler.dump_traceback_later(CLOSE_TIMEOUT_S, exit=True)
        port.close()
        coalescer.close()
        sender.close()
        faulthandler.cancel_dump_traceback_later()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="midi-bridge")
    configure(parser)
    logging.basicConfig(level=logging.INFO)
    sys.exit(run(parser.parse_args()))
