"""The address table and packet decoding, from literal datagram bytes (no socket, no sound card)."""

from __future__ import annotations

import struct
import subprocess
import sys

import pytest

from osc_server import addresses as A


def s(text: str) -> bytes:
    b = text.encode() + b"\x00"
    return b + b"\x00" * (-len(b) % 4)


def i32(v: int) -> bytes:
    return struct.pack(">i", v)


def f32(v: float) -> bytes:
    return struct.pack(">f", v)


NOTE_60_100 = b"/note\x00\x00\x00,ii\x00\x00\x00\x00<\x00\x00\x00d"  # written out by hand


def test_golden_note_message():
    assert NOTE_60_100 == s("/note") + s(",ii") + i32(60) + i32(100)
    [item] = A.decode_packet(NOTE_60_100)
    assert item == A.Timed(None, "/note", [60, 100])
    assert A.parse_message(item.address, item.args) == A.NoteOn(60, 100)


def test_pure_data_floats_are_accepted_and_velocity_zero_is_note_off():
    [item] = A.decode_packet(s("/note") + s(",ff") + f32(60.0) + f32(0.0))
    assert A.parse_message(item.address, item.args) == A.NoteOff(60)
    assert A.parse_message("/note", [61.0, 127.0]) == A.NoteOn(61, 127)
    assert A.parse_message("/note/off", [61.0]) == A.NoteOff(61)


def test_bundle_timetags_nested_and_immediate():
    seconds = 2208988800 + 1_900_000_000  # NTP seconds of Unix time 1.9e9
    inner = s("#bundle") + struct.pack(">II", seconds, 2**31) + i32(len(NOTE_60_100)) + NOTE_60_100
    outer = s("#bundle") + struct.pack(">II", 0, 1) + i32(len(NOTE_60_100)) + NOTE_60_100 + i32(len(inner)) + inner
    items = A.decode_packet(outer)
    assert items[0].time is None
    assert items[1].time == pytest.approx(1_900_000_000.5)


@pytest.mark.parametrize("data,why", [
    (b"", "empty"),
    (b"\x00\x01\x02\x03", "must start"),
    (s("/note") + s(",ii") + i32(60), "not an OSC packet"),  # second int missing
    (s("/note") + s(",iX") + i32(60) + i32(1), "unsupported OSC type tag"),
    (s("#bundle") + struct.pack(">II", 0, 1) + i32(400) + NOTE_60_100, "bad bundle element size"),
    (s("#bundle") + b"\x00\x00", "truncated bundle"),
])
def test_malformed_packets_raise(data, why):
    with pytest.raises(A.MalformedPacket, match=why):
        A.decode_packet(data)


@pytest.mark.parametrize("address,args,reason", [
    ("/note", [200, 100], "pitch: expected an integer 9..120, got 200"),
    ("/note", [60, 128], "velocity: expected an integer 1..127"),
    ("/note", [60, True], "velocity"),
    ("/note", ["60", 100], "pitch"),
    ("/note", [60], "expected pitch velocity, got 1 argument"),
    ("/latent", [0.0] * 16 + [1.0], "expected 16 numbers"),
    ("/latent", [0.0] * 15 + [8.0], "latent_sample[15]: expected a number in [-7, 7]"),
    ("/latent/16", [1.0], "latent knobs are /latent/0 .. /latent/15"),
    ("/latent/2", [float("nan")], "latent_sample[2]: expected a number in [-7, 7]"),
    ("/source", ["brass"], "source: expected one of acoustic, electronic, synthetic"),
    ("/qualities", ["bright", "loud"], "qualities: unknown quality 'loud'; allowed: bright, dark"),
    ("/quality/bright", [2], "bright: expected 0 or 1"),
    ("/gain", [30.0], "db: expected a number in [-80, 24]"),
    ("/prerender", [70, 60], "lo: expected lo <= hi"),
    ("/reply/port", [70000], "port: expected an integer 0..65535"),
    ("/panic", [1], "expected no arguments"),
    ("/foo", [], "unknown address"),
])
def test_refusals_name_the_field_and_what_is_allowed(address, args, reason):
    with pytest.raises(A.CommandError) as e:
        A.parse_message(address, args)
    assert e.value.address == address
    assert reason in e.value.reason


def test_commands():
    assert A.parse_message("/latent/3", [2]) == A.SetLatentOne(3, 2.0)
    assert A.parse_message("/qualities", ["dark", "tempo-synced"]) == A.SetQualities(("dark", "tempo_sync"))
    assert A.parse_message("/qualities", []) == A.SetQualities(())
    assert A.parse_message("/quality/tempo-synced", [True]) == A.SetQuality("tempo_sync", True)
    assert A.parse_message("/prerender", []) == A.Prerender(A.PRERENDER_LO, A.PRERENDER_HI)
    assert A.parse_message("/sync", ["x"]) == A.Sync("x")
    assert A.parse_message("/source", ["Electronic"]) == A.SetSource("electronic")


def test_reply_bytes_are_osc():
    assert A.build("/error", "/note", "pitch: bad") == s("/error") + s(",ss") + s("/note") + s("pitch: bad")
    assert A.build("/status", 1, 2.5) == s("/status") + s(",if") + i32(1) + f32(2.5)


def test_markdown_table_lists_every_agreed_address():
    out = subprocess.run([sys.executable, "-m", "osc_server.addresses", "--markdown"], capture_output=True,
                         text=True, check=True).stdout
    for address in ("/note", "/note/off", "/latent", "/latent/<i>", "/source", "/qualities", "/quality/<name>",
                    "/prerender", "/panic", "/gain", "/status", "/sync", "/reply/port", "/error", "/synced",
                    "/ready", "/prerender/progress", "/prerender/done"):
        assert f"| `{address}`" in out, address
    assert out.splitlines()[0].startswith("| address | arguments | ranges | effect | replies |")


def bundle(*elements: bytes, seconds: int = 0, fraction: int = 1) -> bytes:
    return s("#bundle") + struct.pack(">II", seconds, fraction) + b"".join(i32(len(e)) + e for e in elements)


def test_a_packet_holds_at_most_256_messages_nested_bundles_included():
    assert A.MAX_BUNDLE_MESSAGES == 256
    items = A.decode_packet(bundle(*[NOTE_60_100] * 256))
    assert len(items) == 256 and items[-1] == A.Timed(None, "/note", [60, 100])
    with pytest.raises(A.MalformedPacket, match="bundle: at most 256 messages"):
        A.decode_packet(bundle(*[NOTE_60_100] * 257))
    # Counted across nested bundles: 200 + 56 pass, one more does not.
    assert len(A.decode_packet(bundle(bundle(*[NOTE_60_100] * 200), *[NOTE_60_100] * 56))) == 256
    with pytest.raises(A.MalformedPacket, match="at most 256 messages"):
        A.decode_packet(bundle(bundle(*[NOTE_60_100] * 200), bundle(*[NOTE_60_100] * 57)))


def test_parsing_stops_at_the_first_message_past_the_limit():
    # The 257th message is garbage: the limit is reported (parsing stopped there), not the garbage.
    with pytest.raises(A.MalformedPacket, match="at most 256 messages"):
        A.decode_packet(bundle(*[NOTE_60_100] * 256, s("/note") + s(",iX") + i32(1) + i32(2)))


def test_bundles_nest_at_most_8_deep():
    assert A.MAX_BUNDLE_DEPTH == 8
    packet = NOTE_60_100
    for _ in range(8):
        packet = bundle(packet)
    assert A.decode_packet(packet) == [A.Timed(None, "/note", [60, 100])]
    with pytest.raises(A.MalformedPacket, match="bundle: nested at most 8 deep"):
        A.decode_packet(bundle(packet))
