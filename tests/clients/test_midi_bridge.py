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
import signal
import subprocess
import sys
import time
from pathlib import Path

import mido
import pytest

from osc_server import addresses
from osc_server.midi_bridge import (
    COALESCE_INTERVAL_S,
    Coalescer,
    MidiMap,
    OscSender,
    Translator,
    bend_to_cents,
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
    assert translate(mido.Message("clock")) == []
    assert translate(mido.Message("sysex", data=[1, 2, 3])) == []


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
        for value in (0, 1, 63, 64, 126, 127, 0):
            produced += translate(cc(number, value))
            produced += translate(mido.Message("aftertouch", value=value))
            produced += translate(mido.Message("polytouch", note=number, value=value))
        produced += translate(mido.Message("program_change", program=number))
    mpe = Translator(load_map(), mpe=True)
    for bend in (-8192, -1, 0, 1, 8191):
        produced += translate(mido.Message("pitchwheel", pitch=bend))
        produced += mpe(mido.Message("pitchwheel", pitch=bend, channel=0))
        produced += mpe(mido.Message("note_on", note=60, velocity=90, channel=1))
        produced += mpe(mido.Message("pitchwheel", pitch=bend, channel=1))
        produced += mpe(mido.Message("aftertouch", value=127, channel=1))
    addresses_seen = {address for address, _ in produced}
    # note, latents, gain, source, qualities, pre, panic, sustain, bend, pressure, note/bend, note/pressure
    assert len(addresses_seen) == 1 + 16 + 1 + 1 + 10 + 1 + 1 + 1 + 1 + 1 + 1 + 1
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
        ({"bend_range_semitones": 49}, "bend_range_semitones: expected null (bend ignored) or semitones in (0, 48]"),
        ({"mpe_bend_range_semitones": 0}, "mpe_bend_range_semitones: expected null"),
        ({"bend_range_semitones": True}, "bend_range_semitones: expected null"),
        ({"aftertouch": None}, "aftertouch: expected true or false"),
        ({"sustain_cc": 7}, "sustain_cc: controller 7 is already used by gain_cc"),
        ({"latent_cc": [74]}, "cc74_latent: controller 74 is already used by latent_cc[0]"),
        ({"cc74_latent": 16}, "cc74_latent: expected null or a latent index 0..15"),
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
        "CC 118 -> /prerender; CC 120, 123 -> /panic;",
        "bend -> /bend (+-2 semitones); aftertouch -> /pressure, /note/pressure;",
        "CC 64 -> /sustain; CC 74 -> /latent/0;",
        "--mpe: member bend -> /note/bend (+-48 semitones).",
    ]
    custom = MidiMap.from_dict({"channel": 3, "latent_cc": [70, 71, 72, 80], "source_program": {}, "panic_cc": [],
                                "bend_range_semitones": 12, "aftertouch": False, "sustain_cc": None,
                                "cc74_latent": 3, "mpe_bend_range_semitones": None})
    assert custom.summary(width=200) == [
        "channel 3 only; notes -> /note; CC 70..72, 80 -> /latent/0..3; CC 7 -> /gain; CC 9 -> /source; "
        "CC 102..111 -> /quality/<name>; CC 118 -> /prerender; bend -> /bend (+-12 semitones); CC 74 -> /latent/3."]


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


def bend(value: int, channel: int = 0) -> mido.Message:
    return mido.Message("pitchwheel", pitch=value, channel=channel)


@pytest.mark.parametrize("semitones", [2, 12, 48, 0.5])
def test_bend_reaches_the_range_at_both_extremes_and_is_linear_on_each_side(semitones) -> None:
    cents = 100 * semitones
    assert bend_to_cents(-8192, semitones) == -cents
    assert bend_to_cents(0, semitones) == 0.0  # MIDI's centre, 8192
    assert bend_to_cents(8191, semitones) == cents  # the top reaches the range exactly
    assert bend_to_cents(-4096, semitones) == -cents / 2
    values = [bend_to_cents(b, semitones) for b in range(-8192, 8192)]
    steps = [b - a for a, b in zip(values, values[1:])]
    below, above = steps[:8192], steps[8192:]
    assert max(below) - min(below) < 1e-9 and abs(below[0] - cents / 8192) < 1e-9
    assert max(above) - min(above) < 1e-9 and abs(above[0] - cents / 8191) < 1e-9


def test_pitch_bend_becomes_bend_with_the_maps_range(translate: Translator) -> None:
    assert translate(bend(-8192)) == [("/bend", (-200.0,))]
    assert translate(bend(0)) == [("/bend", (0.0,))]
    assert translate(bend(8191)) == [("/bend", (200.0,))]
    assert translate(bend(2048)) == [("/bend", (round(200 * 2048 / 8191, 3),))]
    wide = Translator(MidiMap.from_dict({"bend_range_semitones": 12}))
    assert wide(bend(-8192, channel=9)) == [("/bend", (-1200.0,))]
    assert wide(bend(8191)) == [("/bend", (1200.0,))]
    assert Translator(MidiMap.from_dict({"bend_range_semitones": None}))(bend(8191)) == []


def test_aftertouch_channel_and_polyphonic(translate: Translator) -> None:
    def pressure(value: int) -> mido.Message:
        return mido.Message("aftertouch", value=value)

    def poly(note: int, value: int) -> mido.Message:
        return mido.Message("polytouch", note=note, value=value)

    assert translate(pressure(0)) == [("/pressure", (0.0,))]
    assert translate(pressure(127)) == [("/pressure", (1.0,))]
    assert translate(pressure(64)) == [("/pressure", (round(64 / 127, 4),))]
    assert translate(poly(60, 127)) == [("/note/pressure", (60, 1.0))]
    assert translate(poly(61, 32)) == [("/note/pressure", (61, round(32 / 127, 4)))]
    assert translate(poly(5, 100)) == []  # outside the models' range: the server would refuse it
    off = Translator(MidiMap.from_dict({"aftertouch": False}))
    assert off(pressure(127)) == [] and off(poly(60, 127)) == []


def test_the_sustain_pedal_is_sent_when_it_changes_side_of_64(translate: Translator) -> None:
    pedal = [0, 10, 63, 64, 127, 100, 63, 0, 64]
    assert [translate(cc(64, v)) for v in pedal] == [
        [("/sustain", (0,))], [], [], [("/sustain", (1,))], [], [], [("/sustain", (0,))], [], [("/sustain", (1,))]]
    moved = Translator(MidiMap.from_dict({"sustain_cc": 66}))
    assert moved(cc(64, 127)) == [] and moved(cc(66, 127)) == [("/sustain", (1,))]
    assert Translator(MidiMap.from_dict({"sustain_cc": None}))(cc(64, 127)) == []


def test_the_first_pedal_message_is_sent_whichever_side_it_is_on() -> None:
    assert Translator(load_map())(cc(64, 127)) == [("/sustain", (1,))]
    assert Translator(load_map())(cc(64, 3)) == [("/sustain", (0,))]


def test_cc74_drives_the_maps_latent_dimension(translate: Translator) -> None:
    assert translate(cc(74, 127)) == [("/latent/0", (7.0,))]
    assert translate(cc(74, 64)) == [("/latent/0", (0.0,))]
    assert translate(cc(74, 32)) == [("/latent/0", (round(cc_to_latent(32), 4),))]
    fifth = Translator(MidiMap.from_dict({"cc74_latent": 5}))
    assert fifth(cc(74, 0)) == [("/latent/5", (-7.0,))]
    assert Translator(MidiMap.from_dict({"cc74_latent": None}))(cc(74, 127)) == []


def note_on(note: int, channel: int, velocity: int = 90) -> mido.Message:
    return mido.Message("note_on", note=note, velocity=velocity, channel=channel)


def test_mpe_gives_each_member_channel_its_own_note_bend_and_pressure() -> None:
    mpe = Translator(load_map(), mpe=True)
    # Channels as mido counts them: 0 is MIDI channel 1 (the master), 1..15 are members 2..16.
    assert mpe(note_on(60, channel=1)) == [("/note", (60, 90))]
    assert mpe(note_on(64, channel=15)) == [("/note", (64, 90))]
    assert mpe(bend(8191, channel=1)) == [("/note/bend", (60, 4800.0))]
    assert mpe(bend(-8192, channel=15)) == [("/note/bend", (64, -4800.0))]
    assert mpe(bend(-4096, channel=1)) == [("/note/bend", (60, -2400.0))]
    assert mpe(mido.Message("aftertouch", value=127, channel=15)) == [("/note/pressure", (64, 1.0))]
    # The master channel is the zone's: bend +-2 semitones, pressure for every note.
    assert mpe(bend(8191, channel=0)) == [("/bend", (200.0,))]
    assert mpe(mido.Message("aftertouch", value=0, channel=0)) == [("/pressure", (0.0,))]
    # A member CC 74 moves the one global latent knob; other CCs follow the map too.
    assert mpe(cc(74, 127, channel=1)) == [("/latent/0", (7.0,))]
    assert mpe(cc(64, 127, channel=0)) == [("/sustain", (1,))]
    # Note-off ends the channel's note; its bend and pressure are then not sent.
    assert mpe(mido.Message("note_off", note=60, channel=1)) == [("/note", (60, 0))]
    assert mpe(bend(0, channel=1)) == []
    assert mpe(mido.Message("aftertouch", value=50, channel=1)) == []
    assert mpe(bend(100, channel=15)) == [("/note/bend", (64, round(4800 * 100 / 8191, 3)))]  # still sounding
    # A channel never played on drops them as well.
    assert mpe(bend(8191, channel=7)) == [] and mpe(mido.Message("aftertouch", value=9, channel=7)) == []


def test_mpe_bend_and_pressure_sent_before_a_note_on_apply_to_that_note() -> None:
    mpe = Translator(load_map(), mpe=True)
    assert mpe(bend(2048, channel=3)) == []
    assert mpe(mido.Message("aftertouch", value=127, channel=3)) == []
    assert mpe(note_on(70, channel=3)) == [
        ("/note", (70, 90)), ("/note/bend", (70, round(4800 * 2048 / 8191, 3))), ("/note/pressure", (70, 1.0))]
    # Back at rest before the next note: nothing extra.
    mpe(mido.Message("note_off", note=70, channel=3))
    assert mpe(bend(0, channel=3)) == [] and mpe(mido.Message("aftertouch", value=0, channel=3)) == []
    assert mpe(note_on(72, channel=3)) == [("/note", (72, 90))]


def test_mpe_note_off_of_another_pitch_keeps_the_channels_note() -> None:
    mpe = Translator(load_map(), mpe=True)
    mpe(note_on(60, channel=2))
    assert mpe(note_on(62, channel=2, velocity=0)) == [("/note", (62, 0))]
    assert mpe(bend(8191, channel=2)) == [("/note/bend", (60, 4800.0))]


def test_mpe_range_comes_from_the_map_and_the_channel_filter_is_ignored(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="osc_server.midi"):
        mpe = Translator(MidiMap.from_dict({"mpe_bend_range_semitones": 24, "channel": 5}), mpe=True)
    assert "channel 5 of the map is ignored with --mpe" in caplog.text
    mpe(note_on(50, channel=9))
    assert mpe(bend(8191, channel=9)) == [("/note/bend", (50, 2400.0))]
    assert mpe(bend(8191, channel=0)) == [("/bend", (200.0,))]
    assert Translator(MidiMap.from_dict({"mpe_bend_range_semitones": None}), mpe=True)(bend(8191, channel=9)) == []


def test_without_mpe_member_channels_are_plain_channels(translate: Translator) -> None:
    translate(note_on(60, channel=1))
    assert translate(bend(8191, channel=1)) == [("/bend", (200.0,))]
    assert translate(mido.Message("aftertouch", value=127, channel=1)) == [("/pressure", (1.0,))]


def test_a_map_file_sets_the_new_controls(tmp_path: Path) -> None:
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"bend_range_semitones": 7, "mpe_bend_range_semitones": 12, "sustain_cc": 65,
                                "cc74_latent": 9, "aftertouch": False}))
    plain, mpe = Translator(load_map(path)), Translator(load_map(path), mpe=True)
    assert plain(bend(-8192)) == [("/bend", (-700.0,))]
    assert plain(cc(65, 127)) == [("/sustain", (1,))] and plain(cc(64, 127)) == []
    assert plain(cc(74, 127)) == [("/latent/9", (7.0,))]
    assert plain(mido.Message("aftertouch", value=127)) == []
    mpe(note_on(60, channel=4))
    assert mpe(bend(8191, channel=4)) == [("/note/bend", (60, 1200.0))]
    assert plain(cc(7, 0)) == [("/gain", (-60.0,))]  # the rest keeps its defaults


def test_the_new_default_controllers_give_way_to_a_map_file_that_uses_them(tmp_path: Path, caplog) -> None:
    """Maps written before sustain_cc and cc74_latent existed keep working (the README's example
    puts latent knobs on CC 70..77); a clash written out in the file is still refused."""
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"latent_cc": [70, 71, 72, 73, 74, 75, 76, 77], "gain_cc": None, "panic_cc": [64]}))
    with caplog.at_level(logging.INFO, logger="osc_server.midi"):
        translate = Translator(load_map(path))
    assert translate(cc(74, 127)) == [("/latent/4", (7.0,))]
    assert translate(cc(64, 127)) == [("/panic", ())]
    assert "cc74_latent: CC 74 is the map's latent_cc[4]" in caplog.text
    assert "sustain_cc: CC 64 is the map's panic_cc[0]" in caplog.text
    path.write_text(json.dumps({"latent_cc": [74], "cc74_latent": 2}))
    with pytest.raises(ValueError, match=r"cc74_latent: controller 74 is already used by latent_cc\[0\]"):
        load_map(path)
    path.write_text(json.dumps({"latent_cc": [64], "sustain_cc": 64}))
    with pytest.raises(ValueError, match=r"sustain_cc: controller 64 is already used by latent_cc\[0\]"):
        load_map(path)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_coalescing_holds_fast_values_and_sends_the_last_one_after_the_interval() -> None:
    clock, batches = FakeClock(), []
    coalescer = Coalescer(batches.append, interval_s=0.002, clock=clock)

    def at(t_ms: float, *messages) -> None:
        clock.now = 100.0 + t_ms / 1000
        coalescer.send(list(messages))

    at(0.0, ("/bend", (10.0,)))
    at(0.5, ("/bend", (20.0,)))
    at(1.0, ("/bend", (30.0,)))  # replaces 20, which is never sent
    at(1.2, ("/note/bend", (60, 5.0)), ("/note/bend", (62, 6.0)), ("/latent/3", (1.0,)))  # other controls
    assert batches == [
        [("/bend", (10.0,))], [("/note/bend", (60, 5.0)), ("/note/bend", (62, 6.0)), ("/latent/3", (1.0,))]]
    assert coalescer.next_due() == pytest.approx(100.002)
    clock.now = 100.0019
    coalescer.flush_due()
    assert len(batches) == 2
    clock.now = 100.002
    coalescer.flush_due()
    assert batches[2:] == [[("/bend", (30.0,))]]
    assert coalescer.next_due() is None
    # An event sends what is held first, so a bend is never sent after its note's release.
    at(2.5, ("/note/bend", (60, 7.0)))
    at(3.0, ("/note/bend", (60, 8.0)))
    at(3.1, ("/note", (60, 0)))
    assert batches[3:] == [[("/note/bend", (60, 8.0)), ("/note", (60, 0))]]
    at(3.2, ("/pressure", (0.5,)), ("/pressure", (0.6,)))
    assert batches[4:] == [[("/pressure", (0.5,))]]
    coalescer.close()  # the last value is not lost at the end either
    assert batches[5:] == [[("/pressure", (0.6,))]]


def test_coalescing_in_real_time_sends_the_last_value_of_a_fast_bend(osc_catcher) -> None:
    """A 300-message sweep pushed as fast as Python can: the catcher gets a few, ending on the last."""
    sender = OscSender(("127.0.0.1", osc_catcher.port))
    coalescer = Coalescer(sender.send).start()
    sweep = [round(bend_to_cents(b, 2), 3) for b in range(-8192, 8192, 55)][:300]
    try:
        started = time.monotonic()
        for cents in sweep:
            coalescer.send([("/bend", (cents,))])
        elapsed = time.monotonic() - started
        got = []
        while not got or got[-1] != pytest.approx(sweep[-1], abs=1e-3):
            got += [m.params[0] for m, _ in osc_catcher.receive(1, timeout=5)]
        assert osc_catcher.nothing_more(wait=0.1)
    finally:
        coalescer.close()
        sender.close()
    assert got[0] == pytest.approx(sweep[0], abs=1e-3)  # the first goes at once
    assert len(got) <= elapsed / COALESCE_INTERVAL_S + 2, (len(got), elapsed)
    assert got == sorted(got)  # in order


def test_mpe_over_udp_two_member_channels_get_their_own_note_bend(osc_catcher) -> None:
    sender = OscSender(("127.0.0.1", osc_catcher.port))
    coalescer = Coalescer(sender.send).start()
    mpe = Translator(load_map(), mpe=True)
    played = [note_on(60, channel=1), note_on(67, channel=2), bend(8191, channel=1), bend(-8192, channel=2),
              bend(0, channel=0)]
    try:
        for msg in played:
            coalescer.send(mpe(msg))
        got = osc_catcher.receive(5)
    finally:
        coalescer.close()
        sender.close()
    assert [(m.address, m.params) for m, _ in got] == [
        ("/note", [60, 90]), ("/note", [67, 90]), ("/note/bend", [60, 4800.0]), ("/note/bend", [67, -4800.0]),
        ("/bend", [0.0])]


def start_bridge_cli(catcher, name: str, *options: str, ignore_sigint: bool = False) -> tuple[subprocess.Popen, str]:
    """`sound-generator -v midi-bridge --api jack` sending to `catcher`, and its virtual port's name
    once it is there. ignore_sigint: started as a script's background job is (SIGINT ignored)."""
    bridge = subprocess.Popen(
        [sys.executable, "-m", "synth.cli", "-v", "midi-bridge", "--api", "jack",
         "--to", f"127.0.0.1:{catcher.port}", "--name", name, *options],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None,
    )
    midi = mido.Backend("mido.backends.rtmidi/UNIX_JACK")
    deadline = time.monotonic() + 20
    while not any(name in n for n in midi.get_output_names()):
        if bridge.poll() is not None or time.monotonic() > deadline:
            bridge.kill()
            raise AssertionError(f"the bridge's virtual MIDI port did not appear: {bridge.communicate()[0]}")
        time.sleep(0.1)
    return bridge, next(n for n in midi.get_output_names() if name in n)


def open_heard(midi, port_name: str, catcher) -> mido.ports.BaseOutput:
    """A keyboard's output port into the bridge, once the bridge hears it. Opening the port connects
    it to the bridge's in JACK a cycle or more later, and on a busy machine the first message sent
    at once was lost (a CI run got 5 of 6). So All Notes Off (CC 123, which the bridge forwards as
    `/panic`) is played until one comes back, and any late copies are drained."""
    keyboard = midi.open_output(port_name)
    deadline = time.monotonic() + 20
    while True:
        keyboard.send(cc(123, 0))
        if not catcher.nothing_more(0.25):
            break
        if time.monotonic() > deadline:
            keyboard.close()
            raise AssertionError("the bridge never forwarded what was played into its port")
    while not catcher.nothing_more(0.3):
        pass
    return keyboard


def stop_bridge(bridge: subprocess.Popen) -> str:
    """Ctrl-C: the bridge closes its port and exits 0 within 10 s; its output. If it does not,
    its threads' stacks (SIGUSR1, faulthandler) go into the failure."""
    bridge.send_signal(signal.SIGINT)
    try:
        return bridge.communicate(timeout=10)[0]
    except subprocess.TimeoutExpired:
        bridge.send_signal(signal.SIGUSR1)
        time.sleep(1.0)
        bridge.kill()
        raise AssertionError(f"the bridge did not exit within 10 s of Ctrl-C:\n{bridge.communicate()[0]}") from None


@pytest.mark.jack
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_stops_on_ctrl_c_or_sigterm_even_started_with_sigint_ignored(jack_server, osc_catcher, sig) -> None:
    """A script's background job inherits SIGINT ignored; the bridge still stops on it (and on
    SIGTERM), closing its port, exit status 0."""
    bridge, _ = start_bridge_cli(osc_catcher, f"sg-test-sig{int(sig)}", ignore_sigint=True)
    bridge.send_signal(sig)
    try:
        out = bridge.communicate(timeout=10)[0]
    except subprocess.TimeoutExpired:
        bridge.kill()
        raise AssertionError(f"signal {sig.name} did not stop the bridge: {bridge.communicate()[0]}") from None
    assert bridge.returncode == 0, out
    assert "stopped" in out


@pytest.mark.jack
@pytest.mark.slow
def test_cli_bridges_a_virtual_midi_port_to_osc(jack_server, osc_catcher) -> None:
    """`sound-generator midi-bridge --api jack --to ...` with a controller played into its port."""
    bridge, port_name = start_bridge_cli(osc_catcher, "sg-test-in")
    try:
        midi = mido.Backend("mido.backends.rtmidi/UNIX_JACK")
        played = [
            mido.Message("program_change", program=2),
            cc(25, 127),
            cc(109, 127),
            mido.Message("note_on", note=7, velocity=80),  # out of range: dropped
            mido.Message("note_on", note=64, velocity=90),
            mido.Message("note_off", note=64),
            cc(123, 0),
        ]
        with open_heard(midi, port_name, osc_catcher) as keyboard:
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
        out = stop_bridge(bridge)
    assert bridge.returncode == 0, out
    assert "note 7 dropped" in out


@pytest.mark.jack
@pytest.mark.slow
def test_cli_mpe_with_a_map_file(jack_server, osc_catcher, tmp_path: Path) -> None:
    """`midi-bridge --mpe --map FILE`: an MPE controller (two notes on two member channels, a burst
    of bend faster than the bridge forwards) played into the bridge's port."""
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"mpe_bend_range_semitones": 24, "cc74_latent": 3}))
    bridge, port_name = start_bridge_cli(osc_catcher, "sg-test-mpe", "--mpe", "--map", str(path))
    try:
        midi = mido.Backend("mido.backends.rtmidi/UNIX_JACK")
        played = [
            cc(74, 127, channel=1),  # before its note: sets the timbre the note starts with
            note_on(60, channel=1),
            note_on(67, channel=2),
            bend(8191, channel=1),
            bend(-8192, channel=2),
            mido.Message("aftertouch", value=127, channel=2),
            bend(-8192, channel=0),  # the master channel: every note, +-2 semitones
            cc(64, 127, channel=0),
            mido.Message("note_off", note=60, channel=1),
            bend(0, channel=1),  # channel 2 has no note now: dropped
        ]
        with open_heard(midi, port_name, osc_catcher) as keyboard:
            for msg in played:
                keyboard.send(msg)
                time.sleep(0.02)  # JACK MIDI delivers per process cycle (5.3 ms here)
            got = osc_catcher.receive(9)
            assert [(m.address, m.params) for m, _ in got] == [
                ("/latent/3", [7.0]),
                ("/note", [60, 90]),
                ("/note", [67, 90]),
                ("/note/bend", [60, 2400.0]),
                ("/note/bend", [67, -2400.0]),
                ("/note/pressure", [67, 1.0]),
                ("/bend", [-200.0]),
                ("/sustain", [1]),
                ("/note", [60, 0]),
            ]
            assert osc_catcher.nothing_more()
            burst = list(range(0, 8192, 512)) + [8191]  # 17 bends in one JACK cycle
            for value in burst:
                keyboard.send(bend(value, channel=2))
            swept = []
            while not swept or swept[-1] != [67, 2400.0]:
                swept += [m.params for m, _ in osc_catcher.receive(1)]
            assert osc_catcher.nothing_more()
        assert len(swept) < len(burst), swept
    finally:
        out = stop_bridge(bridge)
    assert bridge.returncode == 0, out
    assert "MPE lower zone" in out
