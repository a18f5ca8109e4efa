"""`sound-generator midi-bridge`: play the OSC server from a MIDI controller.

    sound-generator midi-bridge --list                  # MIDI inputs this machine offers
    sound-generator midi-bridge                         # virtual input port "sound-generator"
    sound-generator midi-bridge --in nanoKONTROL        # open the first input whose name contains it
    sound-generator midi-bridge --to 192.168.1.20:9000 --map my_map.json
    sound-generator midi-bridge --show-map              # the active mapping as a table

Notes: note-on (velocity 1..127) -> ``/note pitch velocity``; note-off and note-on with velocity 0
-> ``/note pitch 0``. Pitches outside 9..120 (the models' range) are dropped with a warning.

Controls follow a mapping. Its defaults are written in one place, the shipped
``osc_server/midi_map.json`` (``--show-map`` prints the active mapping, ``--help`` sums it up);
``--map FILE`` overrides any of its keys, the rest keep their defaults; null or an empty
list/dict switches a control off:

==============  ==========================================================================
key             value: what it sends
==============  ==========================================================================
channel         null (omni), or the one MIDI channel 1..16 that is read
latent_cc       up to 16 CCs, the i-th -> ``/latent/<i> v``: 0 -> -7, 64 -> 0, 127 -> +7
gain_cc         a CC -> ``/gain db``: 0..127 -> gain_db_range, linear in dB
gain_db_range   [low_db, high_db]
source_program  {program: source}: program change -> ``/source <source>``
source_cc       a CC -> ``/source``: 0..42 acoustic, 43..85 electronic, 86..127 synthetic
quality_cc      {CC: quality} -> ``/quality/<quality> 1`` at value >= 64, else 0
prerender_cc    a CC -> ``/prerender`` when the value goes >= 64
panic_cc        CCs -> ``/panic``
==============  ==========================================================================

Everything else (pitch bend, aftertouch, clock, sysex) is ignored. The bridge sends from one UDP
socket and logs what the server answers (``/error`` as warnings), so a mistyped map shows up.

MIDI goes through mido's python-rtmidi backend; ``--api jack`` uses JACK MIDI instead of the ALSA
sequencer (on Linux the default), which is what a machine without ``/dev/snd/seq`` can still offer.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import socket
import sys
import threading
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

import mido
from pythonosc.osc_message_builder import OscMessageBuilder

from osc_server.addresses import MalformedPacket, decode_packet
from synth.params import LATENT_DIM, LATENT_MAX, LATENT_MIN, PITCH_MAX, PITCH_MIN, SOURCES, canonical_quality

log = logging.getLogger("osc_server.midi")

DEFAULT_TARGET = ("127.0.0.1", 9000)
DEFAULT_PORT_NAME = "sound-generator"
SWITCH_ON = 64  # MIDI's convention for on/off controllers (sustain pedal and friends)
# mido backend names for --api (python-rtmidi's APIs).
APIS = {"alsa": "LINUX_ALSA", "jack": "UNIX_JACK", "coremidi": "MACOSX_CORE", "windows": "WINDOWS_MM"}
# At most one warning per this many seconds about replies that are not OSC (the rest are counted).
MALFORMED_LOG_INTERVAL_S = 10.0

OscOut = tuple[str, tuple[Any, ...]]  # (address, arguments) with Python types = OSC types


def _cc(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 127:
        raise ValueError(f"{where}: expected a MIDI controller number 0..127, got {value!r}")
    return value


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

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MidiMap":
        """Validate a mapping such as ``midi_map.json``; raises ValueError naming the key. Keys
        it leaves out keep the shipped defaults (`default_map_data`)."""
        known = set(cls.__dataclass_fields__)
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

        used: dict[int, str] = {}
        roles = [(c, f"latent_cc[{i}]") for i, c in enumerate(latent_cc)]
        roles += [(gain_cc, "gain_cc"), (source_cc, "source_cc"), (prerender_cc, "prerender_cc")]
        roles += [(c, f"quality_cc[{c}]") for c in qualities] + [(c, f"panic_cc[{i}]") for i, c in enumerate(panic_cc)]
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
        )

    def rows(self) -> list[tuple[str, str]]:
        """(MIDI input, OSC output) pairs, for `--show-map` and the README."""
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


class Translator:
    """MIDI message -> OSC messages, following a `MidiMap`. Keeps only the pre-render switch state."""

    def __init__(self, mapping: MidiMap) -> None:
        self.mapping = mapping
        self._latent = {c: i for i, c in enumerate(mapping.latent_cc)}
        self._prerender_down = False

    def __call__(self, msg: mido.Message) -> list[OscOut]:
        m = self.mapping
        channel = getattr(msg, "channel", None)
        if channel is None or (m.channel is not None and channel != m.channel - 1):
            return []
        if msg.type in ("note_on", "note_off"):
            velocity = msg.velocity if msg.type == "note_on" else 0
            if not PITCH_MIN <= msg.note <= PITCH_MAX:
                log.warning("note %d dropped: the instrument plays %d..%d", msg.note, PITCH_MIN, PITCH_MAX)
                return []
            return [("/note", (msg.note, velocity))]
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
        if cc == m.prerender_cc:
            # A button sends 127 then 0: one pre-render per press.
            down = value >= SWITCH_ON
            pressed, self._prerender_down = down and not self._prerender_down, down
            return [("/prerender", ())] if pressed else []
        if cc in m.panic_cc:
            return [("/panic", ())]
        return []


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


def bridge(port: Iterable[mido.Message], translator: Translator, sender: OscSender) -> None:
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
        for midi_in, osc_out in mapping.rows():
            print(f"{midi_in:<22} {osc_out}")
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
    log.info("MIDI %r -> OSC %s:%d", port.name, *args.to)
    try:
        bridge(port, Translator(mapping), sender)
    except KeyboardInterrupt:
        log.info("stopped")
    finally:
        port.close()
        sender.close()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="midi-bridge")
    configure(parser)
    logging.basicConfig(level=logging.INFO)
    sys.exit(run(parser.parse_args()))
