"""The MIDI bridge (`sound-generator midi-bridge`, `osc_server.midi_bridge`).

Three layers:
- message level: MIDI message -> OSC messages under the shipped mapping and overrides, and every
  OSC message it makes is accepted by the server's own address table (`parse_message`);
- UDP: the sender's datagrams decode to the right addresses and OSC types, and server replies
  reach its log;
- the real thing: the CLI runs as a subprocess with a *virtual MIDI input port*; the test plays a
  controller into it and catches the OSC on a UDP socket. This machine has no ALSA sequencer
  (/dev/snd/seq), so the virtual port is a JACK MIDI port on a private JACK server (dummy driver),
  through python-rtmidi's JACK API (`--api jack`); with ALSA the same code path opens an ALSA port.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import mido
import pytest

from osc_server import addresses
from osc_server.midi_bridge import (
    MidiMap,
    OscSender,
    Translator,
    cc_to_gain_db,
    cc_to_latent,
    cc_to_source,
    default_map_data,
    encode,
    load_map,
    parse_target,
)
from synth.params import QUALITIES

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def translate() -> Translator:
    return Translator(load_map())


def cc(control: int, value: int, channel: int = 0) -> mido.Message:
    return mido.Message("control_change", control=control, value=value, channel=channel)


def test_notes_become_note_messages(translate: Translator) -> None:
    assert translate(mido.Message("note_on", note=60, velocity=100)) == [("/note", (60, 100))]
    assert translate(mido.Message("note_on", note=61, velocity=1)) == [("/note", (61, 1))]
    assert translate(mido.Message("note_on", note=60, velocity=0)) == [("/note", (60, 0))]
    assert translate(mido.Message("note_off", note=60, velocity=64)) == [("/note", (60, 0))]


@pytest.mark.parametrize("note", [0, 8, 121, 127])
def test_notes_outside_the_models_range_are_dropped_with_a_warning(translate, note, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="osc_server.midi"):
        assert translate(mido.Message("note_on", note=note, velocity=90)) == []
        assert translate(mido.Message("note_off", note=note)) == []
    assert f"note {note} dropped" in caplog.text


@pytest.mark.parametrize("note", [9, 120])
def test_range_edges_are_played(translate: Translator, note: int) -> None:
    assert translate(mido.Message("note_on", note=note, velocity=90)) == [("/note", (note, 90))]


def test_latent_knobs_cover_the_range_with_64_at_the_centre() -> None:
    assert cc_to_latent(0) == -7.0
    assert cc_to_latent(64) == 0.0
    assert cc_to_latent(127) == 7.0
    values = [cc_to_latent(v) for v in range(128)]
    assert all(a < b for a, b in zip(values, values[1:]))


def test_default_cc_mapping(translate: Translator) -> None:
    for i in range(16):
        assert translate(cc(20 + i, 127)) == [(f"/latent/{i}", (7.0,))]
        assert translate(cc(20 + i, 0)) == [(f"/latent/{i}", (-7.0,))]
    assert translate(cc(7, 127)) == [("/gain", (6.0,))]
    assert translate(cc(7, 0)) == [("/gain", (-60.0,))]
    for i, name in enumerate(QUALITIES):
        assert translate(cc(102 + i, 127)) == [(f"/quality/{name}", (1,))]
        assert translate(cc(102 + i, 63)) == [(f"/quality/{name}", (0,))]
        assert translate(cc(102 + i, 64)) == [(f"/quality/{name}", (1,))]
    for program, source in enumerate(["acoustic", "electronic", "synthetic"]):
        assert translate(mido.Message("program_change", program=program)) == [("/source", (source,))]
    assert translate(mido.Message("program_change", program=3)) == []
    assert [cc_to_source(v) for v in (0, 42, 43, 85, 86, 127)] == [
        "acoustic", "acoustic", "electronic", "electronic", "synthetic", "synthetic"]
    assert translate(cc(9, 100)) == [("/source", ("synthetic",))]
    assert translate(cc(120, 0)) == [("/panic", ())]
    assert translate(cc(123, 0)) == [("/panic", ())]
    assert translate(cc(1, 64)) == []  # the mod wheel is not mapped
    assert translate(mido.Message("pitchwheel", pitch=4000)) == []
    assert translate(mido.Message("clock")) == []


def test_prerender_fires_once_per_button_press(translate: Translator) -> None:
    presses = [translate(cc(118, v)) for v in (127, 127, 0, 0, 100, 0)]
    assert presses == [[("/prerender", ())], [], [], [], [("/prerender", ())], []]


def test_every_message_the_bridge_makes_is_accepted_by_the_server_table(translate: Translator) -> None:
    produced = []
    for note in (9, 60, 120):
        for velocity in (0, 1, 64, 127):
            produced += translate(mido.Message("note_on", note=note, velocity=velocity))
        produced += translate(mido.Message("note_off", note=note))
    for number in range(128):
        for value in (0, 1, 63, 64, 126, 127):
            produced += translate(cc(number, value))
        produced += translate(mido.Message("program_change", program=number))
    addresses_seen = {address for address, _ in produced}
    assert len(addresses_seen) == 1 + 16 + 1 + 1 + 10 + 1 + 1  # note, latents, gain, source, qualities, pre, panic
    for address, args in produced:
        addresses.parse_message(address, list(args))  # raises CommandError if the server would refuse it


def test_a_channel_in_the_map_filters_other_channels() -> None:
    translate = Translator(MidiMap.from_dict({**default_map_data(), "channel": 2}))
    assert translate(mido.Message("note_on", note=60, velocity=100, channel=0)) == []
    assert translate(mido.Message("note_on", note=60, velocity=100, channel=1)) == [("/note", (60, 100))]
    assert translate(cc(20, 127, channel=5)) == []


def test_a_map_file_overrides_keys_and_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"latent_cc": [70, 71], "gain_cc": None, "quality_cc": {"1": "tempo-synced"}}))
    translate = Translator(load_map(path))
    assert translate(cc(70, 64)) == [("/latent/0", (0.0,))]
    assert translate(cc(71, 127)) == [("/latent/1", (7.0,))]
    assert translate(cc(20, 127)) == []  # the default latent CCs are gone
    assert translate(cc(7, 127)) == []  # gain switched off
    assert translate(cc(1, 127)) == [("/quality/tempo_sync", (1,))]
    assert translate(mido.Message("program_change", program=1)) == [("/source", ("electronic",))]  # kept


@pytest.mark.parametrize(
    "override, words",
    [
        ({"latent_cc": [20, 20]}, "latent_cc[1]: controller 20 is already used by latent_cc[0]"),
        ({"gain_cc": 20}, "gain_cc: controller 20 is already used"),
        ({"gain_cc": 128}, "gain_cc: expected a MIDI controller number 0..127"),
        ({"quality_cc": {"102": "shiny"}}, "quality_cc[102]: qualities: unknown quality 'shiny'"),
        ({"source_program": {"5": "brass"}}, "source_program[5]: expected one of acoustic"),
        ({"channel": 0}, "channel: expected null (omni) or a MIDI channel 1..16"),
        ({"latent_cc": list(range(40, 57))}, "latent_cc: expected at most 16"),
        ({"gain_db_range": [6, -60]}, "gain_db_range"),
        ({"velocity_curve": "soft"}, "velocity_curve: unknown mapping key"),
    ],
)
def test_bad_maps_are_refused_naming_the_key(override, words) -> None:
    with pytest.raises(ValueError) as err:
        MidiMap.from_dict({**default_map_data(), **override})
    assert words in str(err.value)


def test_gain_scale_is_linear_in_db() -> None:
    assert cc_to_gain_db(0, (-60.0, 6.0)) == -60.0
    assert cc_to_gain_db(127, (-60.0, 6.0)) == 6.0
    assert cc_to_gain_db(127 // 2, (-127.0, 0.0)) == -64.0


def test_target_parsing() -> None:
    assert parse_target("127.0.0.1:9000") == ("127.0.0.1", 9000)
    assert parse_target("stage-laptop.local:57120") == ("stage-laptop.local", 57120)
    for bad in ("9000", "host:", "host:port", "host:70000"):
        with pytest.raises(Exception, match="HOST:PORT"):
            parse_target(bad)


def test_udp_sender_sends_typed_osc_and_logs_server_errors(osc_catcher, caplog) -> None:
    sender = OscSender(("127.0.0.1", osc_catcher.port))
    with caplog.at_level(logging.WARNING, logger="osc_server.midi"):
        sender.send([("/note", (60, 100)), ("/latent/3", (2.5,)), ("/source", ("synthetic",)), ("/panic", ())])
        got = osc_catcher.receive(4)
        assert [(m.address, m.params) for m, _ in got] == [
            ("/note", [60, 100]), ("/latent/3", [2.5]), ("/source", ["synthetic"]), ("/panic", [])]
        # Integers go as OSC int32 ('i'), knob values as float32 ('f').
        assert [m.dgram[m.dgram.index(b",") : m.dgram.index(b",") + 4] for m, _ in got] == [
            b",ii\x00", b",f\x00\x00", b",s\x00\x00", b",\x00\x00\x00"]
        # The server answers the sending port: the bridge logs a refusal as a warning.
        osc_catcher.sock.sendto(encode("/error", ("/note", "pitch: expected an integer 9..120, got 3")), got[0][1])
        deadline = time.monotonic() + 5
        while "server: /error" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.02)
    sender.close()
    assert "server: /error /note pitch: expected an integer 9..120, got 3" in caplog.text


def test_a_reply_that_is_not_osc_is_logged_once_and_the_next_reply_is_still_handled(osc_catcher, caplog) -> None:
    sender = OscSender(("127.0.0.1", osc_catcher.port))
    bridge_port = ("127.0.0.1", sender.sock.getsockname()[1])
    garbage = [
        b"/note\x00\x00\x00,i\x00\x00",  # an int promised and missing (python-osc raises on it)
        b"\xff" * 13,
        b"#bundle\x00\x00\x00",  # a truncated bundle header
    ]
    try:
        with caplog.at_level(logging.DEBUG, logger="osc_server.midi"):
            for data in garbage:
                osc_catcher.sock.sendto(data, bridge_port)
            osc_catcher.sock.sendto(encode("/error", ("/gain", "db: expected a number")), bridge_port)
            deadline = time.monotonic() + 5
            while "server: /error /gain" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.02)
        assert "server: /error /gain db: expected a number" in caplog.text
        assert sender._reader.is_alive()
        assert sender.malformed == len(garbage)
        # Rate-limited: one warning for the three, naming the first.
        warned = [r.getMessage() for r in caplog.records if "not OSC" in r.getMessage()]
        assert len(warned) == 1 and warned[0].startswith("<- 12 bytes from 127.0.0.1:"), warned
    finally:
        sender.close()


def test_help_sums_up_the_shipped_map() -> None:
    assert load_map().summary(width=70) == [
        "notes -> /note; CC 20..35 -> /latent/0..15; CC 7 -> /gain;",
        "program 0/1/2 and CC 9 -> /source; CC 102..111 -> /quality/<name>;",
        "CC 118 -> /prerender; CC 120, 123 -> /panic.",
    ]
    custom = MidiMap.from_dict({"channel": 3, "latent_cc": [70, 71, 72, 80], "source_program": {}, "panic_cc": []})
    assert custom.summary(width=200) == [
        "channel 3 only; notes -> /note; CC 70..72, 80 -> /latent/0..3; CC 7 -> /gain; CC 9 -> /source; "
        "CC 102..111 -> /quality/<name>; CC 118 -> /prerender."]


def test_the_readme_table_shows_the_shipped_defaults() -> None:
    """midi_map.json holds the defaults; the README's table describes them, and must agree."""
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("| MIDI in | OSC out | scaling |"):]
    rows = {}
    for line in table.split("\n\n")[0].splitlines()[2:]:
        midi_in, osc_out, scaling = (cell.strip() for cell in line.strip("|").split("|"))
        rows[osc_out.split("`")[1] if "`" in osc_out else midi_in] = (midi_in, osc_out, scaling)
    m = load_map()
    assert rows["/latent/0"][0] == f"CC {m.latent_cc[0]} .. CC {m.latent_cc[-1]}"
    assert rows["/gain db"][0].startswith(f"CC {m.gain_cc} ")
    lo, hi = m.gain_db_range
    assert f"0..127 -> {lo:g}..{hi:+g} dB" in rows["/gain db"][2]
    midi_in, osc_out, _ = rows["/source acoustic"]
    assert midi_in == "program change " + ", ".join(map(str, sorted(m.source_program)))
    assert re.findall(r"`(?:/source )?(\w+)`", osc_out) == [m.source_program[p] for p in sorted(m.source_program)]
    assert rows["/source"][0] == f"CC {m.source_cc}"
    first, last = min(m.quality_cc), max(m.quality_cc)
    midi_in, osc_out, _ = rows[f"/quality/{m.quality_cc[first]}"]
    assert midi_in == f"CC {first} .. CC {last}"
    assert re.findall(r"`(?:/quality/)?(\w+)`", osc_out) == [m.quality_cc[c] for c in sorted(m.quality_cc)]
    assert rows["/prerender"][0] == f"CC {m.prerender_cc}"
    assert re.findall(r"CC (\d+)", rows["/panic"][0]) == [str(c) for c in m.panic_cc]
    assert (m.channel is None) == ("all channels" in rows)


@pytest.mark.jack
@pytest.mark.slow
def test_cli_bridges_a_virtual_midi_port_to_osc(jack_server, osc_catcher) -> None:
    """`sound-generator midi-bridge --api jack --to ...` with a controller played into its port."""
    bridge = subprocess.Popen(
        [sys.executable, "-m", "synth.cli", "-v", "midi-bridge", "--api", "jack",
         "--to", f"127.0.0.1:{osc_catcher.port}", "--name", "sg-test-in"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    try:
        midi = mido.Backend("mido.backends.rtmidi/UNIX_JACK")
        deadline = time.monotonic() + 20
        while not any("sg-test-in" in n for n in midi.get_output_names()):
            assert bridge.poll() is None, f"the bridge exited: {bridge.stdout.read()}"
            assert time.monotonic() < deadline, "the bridge's virtual MIDI port did not appear"
            time.sleep(0.1)
        port_name = next(n for n in midi.get_output_names() if "sg-test-in" in n)
        played = [
            mido.Message("program_change", program=2),
            cc(25, 127),
            cc(109, 127),
            mido.Message("note_on", note=7, velocity=80),  # out of range: dropped
            mido.Message("note_on", note=64, velocity=90),
            mido.Message("note_off", note=64),
            cc(123, 0),
        ]
        with midi.open_output(port_name) as keyboard:
            for msg in played:
                keyboard.send(msg)
                time.sleep(0.02)  # JACK MIDI delivers per process cycle (5.3 ms here)
            got = osc_catcher.receive(6)
        assert [(m.address, m.params) for m, _ in got] == [
            ("/source", ["synthetic"]),
            ("/latent/5", [7.0]),
            ("/quality/percussive", [1]),
            ("/note", [64, 90]),
            ("/note", [64, 0]),
            ("/panic", []),
        ]
        assert osc_catcher.nothing_more()
    finally:
        bridge.send_signal(2)  # Ctrl-C: the bridge closes its port and exits 0
        out, _ = bridge.communicate(timeout=10)
    assert bridge.returncode == 0, out
    assert "note 7 dropped" in out
