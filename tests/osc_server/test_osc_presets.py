"""/preset/save, /preset/load, /preset/list, /preset/morph: the address table's parsing and
refusals, the engine's replies and timbre changes, and /error for everything refused (through the
transport's message handler, no socket traffic). The generator is the numpy ToneGenerator."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from osc_server import addresses as A
from osc_server.audio import Mixer
from osc_server.cache import NoteCache
from osc_server.engine import Engine
from osc_server.transport import OscTransport
from synth.params import LATENT_DIM, NoteParams
from synth.presets import Preset, PresetStore
from test_osc_engine import NoClock, Replies
from tone import ToneGenerator

SR = 48000
FACTORY = {
    "pad": Preset("pad", "synthetic", ("dark", "long_release"), (2.0,) * LATENT_DIM, "factory pad"),
    "bell": Preset("bell", "acoustic", ("bright",), (-2.0,) * LATENT_DIM),
}
SENDER = ("127.0.0.1", 5555)




@pytest.fixture
def engine(tmp_path: Path):
    e = Engine(ToneGenerator(delay_s=0.0), Mixer(SR), NoClock(), NoteCache(64 * 2**20), workers=1)
    e.presets = PresetStore(tmp_path / "presets", factory=FACTORY)
    yield e
    e.close()


@pytest.fixture
def transport(engine):
    t = OscTransport(engine, "127.0.0.1", 0, realtime=False)  # not started: messages are handed in
    yield t
    t.sock.close()


def send(transport: OscTransport, address: str, *args) -> list:
    """The replies to one message, as the transport handles it (parse, engine, /error)."""
    r = Replies()
    transport.handle_message(address, list(args), None, SENDER, r)
    return r.got


# ---- the address table --------------------------------------------------------------------------


def test_commands():
    assert A.parse_message("/preset/save", ["Warm Pad 2"]) == A.PresetSave("Warm Pad 2")
    assert A.parse_message("/preset/load", ["pad"]) == A.PresetLoad("pad")
    assert A.parse_message("/preset/list", []) == A.PresetList()
    assert A.parse_message("/preset/morph", ["pad", "bell", 0.25]) == A.PresetMorph("pad", "bell", 0.25)
    assert A.parse_message("/preset/morph", ["pad", "bell", 1]) == A.PresetMorph("pad", "bell", 1.0)


@pytest.mark.parametrize("address,args,reason", [
    ("/preset/load", ["../x"], "name: expected 1-64 characters of letters, digits, '-', '_', '.', ' '"),
    ("/preset/save", ["a/b"], "name: expected 1-64 characters"),
    ("/preset/save", [".hidden"], "got '.hidden'"),
    ("/preset/save", [3.0], "name: expected 1-64 characters"),
    ("/preset/save", [], "expected name, got 0 argument(s)"),
    ("/preset/load", ["a", "b"], "expected name, got 2 argument(s)"),
    ("/preset/list", ["x"], "expected no arguments"),
    ("/preset/morph", ["pad", "bell", 1.5], "t: expected a number in [0, 1], got 1.5"),
    ("/preset/morph", ["pad", "bell", "half"], "t: expected a number in [0, 1], got 'half'"),
    ("/preset/morph", ["pad", "../bell", 0.5], "b: expected 1-64 characters"),
    ("/preset/morph", ["..", "bell", 0.5], "a: expected 1-64 characters"),
    ("/preset/morph", ["pad", "bell"], "expected a b t"),
])
def test_refusals_name_the_field(address, args, reason):
    with pytest.raises(A.CommandError) as e:
        A.parse_message(address, args)
    assert e.value.address == address
    assert reason in e.value.reason


def test_the_table_lists_the_preset_addresses():
    table = A.markdown()
    for row in ("| `/preset/save` | `name`", "| `/preset/load` | `name`", "| `/preset/list` |  |",
                "| `/preset/morph` | `a b t`", "| `/preset/saved` (reply)", "| `/preset/loaded` (reply)",
                "| `/preset/list` (reply) | `[part parts] name ...`"):
        assert row in table, row
    assert "sounding one-shots keep their timbre, live voices cross-fade to it" in table


# ---- the engine ---------------------------------------------------------------------------------


def test_save_writes_the_current_timbre(engine, transport):
    for message in (("/source", "electronic"), ("/qualities", "percussive", "reverb"), ("/latent/3", 1.5)):
        assert send(transport, *message) == []
    assert send(transport, "/preset/save", "mine") == [("/preset/saved", ["mine"])]
    saved = json.loads((engine.presets.directory / "mine.json").read_text())
    assert saved == {"name": "mine", "source": "electronic", "qualities": ["percussive", "reverb"],
                     "latent_sample": [0.0] * 3 + [1.5] + [0.0] * 12}


def test_load_sets_the_whole_timbre_at_once(engine, transport):
    epoch = engine.epoch
    assert send(transport, "/preset/load", "pad") == [("/preset/loaded", ["pad"])]
    assert engine.timbre == NoteParams(source="synthetic", qualities=("dark", "long_release"),
                                       latent_sample=(2.0,) * LATENT_DIM)
    assert engine.epoch == epoch + 1  # one timbre change, not three
    assert send(transport, "/preset/load", "pad") == [("/preset/loaded", ["pad"])]
    assert engine.epoch == epoch + 1  # the same timbre again changes nothing
    # The next note is rendered with the preset's timbre.
    r = Replies()
    engine.handle(A.NoteOn(64, 100), None, r)
    deadline = time.monotonic() + 10
    while ("/ready", [64, 100]) not in r.got:
        assert time.monotonic() < deadline, r.got
        time.sleep(0.01)
    assert set(engine.generator.renders) == {FACTORY["pad"].note(64, 100).key}


def test_save_then_load_round_trips_and_shadows_a_factory_preset(engine, transport):
    send(transport, "/latent", *[0.5] * LATENT_DIM)
    assert send(transport, "/preset/save", "pad") == [("/preset/saved", ["pad"])]  # shadows the factory pad
    send(transport, "/preset/load", "bell")
    assert send(transport, "/preset/load", "pad") == [("/preset/loaded", ["pad"])]
    assert engine.timbre == NoteParams(latent_sample=(0.5,) * LATENT_DIM)
    assert send(transport, "/preset/list") == [("/preset/list", ["bell", "pad"])]


def test_list_names_user_and_factory_presets_sorted(engine, transport):
    send(transport, "/preset/save", "Zed")
    send(transport, "/preset/save", "alpha")
    assert send(transport, "/preset/list") == [("/preset/list", ["alpha", "bell", "pad", "Zed"])]


def test_a_long_list_is_split_into_numbered_parts_of_at_most_8_kb(engine, transport):
    names = [f"preset {i:03d} " + "x" * 52 for i in range(300)]
    engine.presets = PresetStore(engine.presets.directory, factory={n: Preset(n) for n in names})
    got = send(transport, "/preset/list")
    assert len(got) > 1
    total = len(got)
    listed = []
    for part, (address, args) in enumerate(got, start=1):
        assert address == "/preset/list"
        assert args[:2] == [part, total]
        assert len(A.build(address, *args)) <= A.PRESET_LIST_BYTES
        listed += args[2:]
    assert listed == sorted(names)
    # Full parts: each holds as many names as fit (the next name would not).
    first = got[0][1]
    assert len(A.build("/preset/list", *first, names[0])) > A.PRESET_LIST_BYTES


def test_a_list_that_fits_is_one_message_without_part_numbers():
    names = [f"n{i}" for i in range(500)]  # 4 bytes each: 2000 + type tags, under 8 KB
    [args] = A.preset_list_replies(names)
    assert args == names
    assert A.preset_list_replies([]) == [[]]


def test_morph_sets_the_interpolated_timbre(engine, transport):
    assert send(transport, "/preset/morph", "bell", "pad", 0.25) == [("/preset/loaded", ["bell~pad@0.25"])]
    assert engine.timbre == NoteParams(source="acoustic", qualities=("bright",), latent_sample=(-1.0,) * 16)
    assert send(transport, "/preset/morph", "bell", "pad", 0.5) == [("/preset/loaded", ["bell~pad@0.5"])]
    assert engine.timbre == NoteParams(source="synthetic", qualities=("dark", "long_release"),
                                       latent_sample=(0.0,) * 16)
    send(transport, "/preset/morph", "bell", "pad", 1)
    assert engine.timbre.latent_sample == FACTORY["pad"].latent_sample


@pytest.mark.parametrize("message,reason", [
    (("/preset/load", "nope"), "name: no preset 'nope'"),
    (("/preset/morph", "pad", "nope", 0.5), "b: no preset 'nope'"),
    (("/preset/morph", "nope", "pad", 0.5), "a: no preset 'nope'"),
    (("/preset/load", "../../etc/passwd"), "name: expected 1-64 characters"),
    (("/preset/morph", "pad", "bell", -0.5), "t: expected a number in [0, 1], got -0.5"),
])
def test_refused_preset_messages_are_answered_with_error(engine, transport, message, reason):
    timbre = engine.timbre
    [(address, args)] = send(transport, *message)
    assert address == "/error"
    assert args[0] == message[0]
    assert args[1].startswith(reason), args[1]
    assert engine.timbre == timbre  # unchanged


def test_file_errors_are_answered_with_error(engine, transport, tmp_path: Path):
    blocker = tmp_path / "a file"
    blocker.write_text("")
    engine.presets = PresetStore(blocker / "presets", factory=FACTORY)  # cannot be created
    [(address, args)] = send(transport, "/preset/save", "mine")
    assert (address, args[0]) == ("/error", "/preset/save")
    assert args[1].startswith("presets_dir: ")
    # A broken user file costs that preset only.
    engine.presets = PresetStore(tmp_path / "ok", factory=FACTORY)
    engine.presets.directory.mkdir()
    (engine.presets.directory / "broken.json").write_text("{")
    [(address, args)] = send(transport, "/preset/load", "broken")
    assert (address, args[0]) == ("/error", "/preset/load")
    assert "is not JSON" in args[1]
    assert send(transport, "/preset/load", "pad") == [("/preset/loaded", ["pad"])]


def test_a_server_without_presets_answers_error(engine, transport):
    engine.presets = None
    [(address, args)] = send(transport, "/preset/list")
    assert (address, args[0]) == ("/error", "/preset/list")
    assert args[1].startswith("presets: ")


# ---- serve --presets-dir ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.jack
def test_serve_keeps_presets_in_presets_dir(tmp_path: Path):
    from pythonosc.osc_message import OscMessage

    from test_osc_cli import Serve
    from tone import msg

    folder = tmp_path / "my presets"
    s = Serve("--no-jack-fallback", "--presets-dir", str(folder))
    try:
        s.wait_for("ready")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.bind(("127.0.0.1", 0))
            client.settimeout(10)
            replies = []
            for message in (msg("/source", "synthetic"), msg("/preset/save", "live one"), msg("/preset/list")):
                client.sendto(message, ("127.0.0.1", s.port))
            for _ in range(2):
                m = OscMessage(client.recv(65536))
                replies.append((m.address, list(m.params)))
    finally:
        assert s.stop() == 0
    assert replies[0] == ("/preset/saved", ["live one"])
    assert replies[1][0] == "/preset/list" and "live one" in replies[1][1]
    assert json.loads((folder / "live one.json").read_text())["source"] == "synthetic"
    assert "Traceback" not in s.log
