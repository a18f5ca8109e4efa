"""The shipped patches, read as files: Max JSON structure, and the OSC addresses both patches send.

Max does not run here, so the Max patch is checked as data: valid patcher JSON, every box with
an id and a class, every patch cord between existing boxes on existing outlets/inlets, and
every OSC message box / [prepend /address] wired into [udpsend]. For both patches, every OSC
address they send is looked up in the server's own table (`osc_server.addresses`) and parsed
with the arguments the patch sends (or, for a control's value, a typical one).
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from osc_server import addresses

REPO = Path(__file__).resolve().parents[2]
PATCHES = REPO / "patches"
MAXPAT = PATCHES / "sound_generator.maxpat"

# A typical value for controls whose argument comes from a knob or box at play time.
SAMPLE_ARGS = {
    "/note": [60, 100],
    "/note/off": [60],
    "/latent/<i>": [1.5],
    "/source": ["electronic"],
    "/quality/<name>": [1],
    "/gain": [-6.0],
    "/preset/save": ["my pad"],
    "/preset/load": ["my pad"],
    "/preset/morph": ["my pad", "bright-pluck", 0.5],
    "/bend": [-150.0],
    "/note/bend": [60, -50],
    "/pressure": [0.6],
    "/note/pressure": [60, 0.8],
    "/sustain": [1],
    "/mode": ["mono"],
    "/glide": [120],
}
LIVE_CONTROLS = {"/bend", "/note/bend", "/pressure", "/note/pressure", "/sustain", "/mode", "/glide"}


def load_builder():
    spec = importlib.util.spec_from_file_location("build_patches", PATCHES / "build_patches.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_patches_are_what_the_builder_writes() -> None:
    for name, text in load_builder().outputs().items():
        assert (PATCHES / name).read_text() == text, f"{name} is stale: run python patches/build_patches.py"


# ---- Pure Data ---------------------------------------------------------------------------


def pd_records(path: Path) -> list[list[str]]:
    """The records of a .pd file as atom lists (a record ends at an unescaped ';')."""
    text = path.read_text()
    return [rec.split() for rec in re.split(r"(?<!\\);\s*\n?", text) if rec.strip()]


def pd_osc_sends() -> list[tuple[str, list]]:
    """(address, literal args) of every [sg_send ADDRESS] the panel instantiates, with the
    abstractions' $1 expanded for each instance ([sg_latent 3] -> /latent/3)."""
    instances: dict[str, list[list[str]]] = {}
    sends: dict[str, list[str]] = {}
    for path in sorted(PATCHES.glob("*.pd")):
        for rec in pd_records(path):
            if rec[:2] == ["#X", "obj"] and len(rec) > 4:
                cls, args = rec[4], rec[5:]
                if (PATCHES / f"{cls}.pd").exists() and cls != "sg_send":
                    instances.setdefault(cls, []).append(args)
                if cls == "sg_send":
                    sends.setdefault(path.stem, []).append(args[0])
    out = []
    for patch, addrs in sends.items():
        for address in addrs:
            if "\\$1" in address:
                assert patch in instances, f"{patch}.pd uses $1 but is never instantiated"
                out += [(address.replace("\\$1", args[0]), []) for args in instances[patch]]
            else:
                out.append((address, []))
    return out


def test_all_pd_osc_leaves_through_sg_send() -> None:
    formats = [(p.name, rec) for p in PATCHES.glob("*.pd") for rec in pd_records(p)
               if rec[:2] == ["#X", "obj"] and len(rec) > 4 and rec[4] == "oscformat"]
    assert formats == [("sg_send.pd", ["#X", "obj", "20", "100", "oscformat", "\\$1"])]


def test_pd_addresses_are_in_the_server_table() -> None:
    sends = pd_osc_sends()
    found = {a for a, _ in sends}
    assert {f"/latent/{i}" for i in range(16)} <= found
    assert {f"/quality/{q}" for q in addresses.QUALITIES} <= found
    assert {"/note", "/note/off", "/source", "/qualities", "/prerender", "/panic", "/gain", "/status",
            "/reply/port", "/preset/save", "/preset/load", "/preset/list", "/preset/morph"} <= found
    assert LIVE_CONTROLS <= found
    for address, _ in sends:
        entry = addresses.lookup(address)
        assert entry is not None, f"{address} is not in the server's address table"
        args = SAMPLE_ARGS.get(entry.pattern, [9001] if address == "/reply/port" else [])
        addresses.parse_message(address, [float(a) if isinstance(a, int) else a for a in args])


def main_canvas_records() -> list[list[str]]:
    """The records of sound_generator.pd's own window, without those of its subpatches."""
    depth, out = 0, []
    for rec in pd_records(PATCHES / "sound_generator.pd"):
        if rec[:2] == ["#N", "canvas"]:
            depth += 1
        if depth == 1:
            out.append(rec)
        if rec[:2] == ["#X", "restore"]:
            depth -= 1
    return out


def test_pd_panel_layout_fits_its_window() -> None:
    """The builder's model of the panel (Pd's font metrics; tests/clients/test_pd_gui.py holds it
    to what Pd draws): everything inside the window, every box and label inside its panel, nothing
    drawn over anything else, and no patch cords in the window (controls reach [pd logic] through
    send/receive names). Inside the subpatches, boxes do not overlap either."""
    builder = load_builder()
    panel = builder.pd_panel()
    assert builder.layout_problems(panel) == []
    assert [p for sub in panel.subpatches for p in builder.layout_problems(sub, cords=True)] == []
    records = main_canvas_records()
    assert records[0][:6] == ["#N", "canvas", *map(str, builder.MAIN_WINDOW)]
    assert [r for r in records if r[:2] == ["#X", "connect"]] == []


def test_the_layout_check_catches_what_a_performer_saw() -> None:
    # What the issue showed: a button label running into the next panel (cut to "zer"), a
    # column past the window's edge, and cords across the panel.
    builder = load_builder()
    c = builder.PdCanvas(300, 200)
    c.cnv(5, 5, 140, 150, "timbre")
    c.cnv(150, 5, 140, 150, "qualities")
    c.bng(110, 40, 25, label="zero")
    c.obj(160, 185, "sg_quality reverb", size=builder.QUALITY_GOP)
    c.connect(c.msg(10, 160, "1"), 0, c.obj(200, 60, "s x"), 0)
    problems = "\n".join(builder.layout_problems(c))
    assert "label 'zero'" in problems and "sticks out of panel 'timbre'" in problems
    assert "'sg_quality reverb' (160, 185, 290, 206) is outside the 300x200 window" in problems
    assert "1 patch cords on the panel" in problems


def test_pd_status_display_names_the_reply_figures() -> None:
    (reply,) = [a for a in addresses.ADDRESSES if a.pattern == "/status" and a.parse is None]
    assert tuple(reply.arguments.split()) == load_builder().STATUS_FIELDS


# ---- Max ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def maxpat() -> dict:
    return json.loads(MAXPAT.read_text())


def test_max_patch_is_valid_patcher_json(maxpat: dict) -> None:
    patcher = maxpat["patcher"]
    assert patcher["fileversion"] == 1
    assert {"major", "minor", "revision"} <= set(patcher["appversion"])
    assert len(patcher["rect"]) == 4
    boxes = {}
    for entry in patcher["boxes"]:
        box = entry["box"]
        assert box["id"] not in boxes, f"duplicate id {box['id']}"
        assert isinstance(box["maxclass"], str) and box["maxclass"]
        assert len(box["patching_rect"]) == 4
        if box["maxclass"] == "newobj":
            assert box["text"].strip(), f"{box['id']}: an object box without text"
        boxes[box["id"]] = box
    assert patcher["lines"], "no patch cords"
    for entry in patcher["lines"]:
        (src, outlet), (dst, inlet) = entry["patchline"]["source"], entry["patchline"]["destination"]
        assert src in boxes and dst in boxes, f"cord between missing boxes: {entry}"
        assert 0 <= outlet < boxes[src]["numoutlets"], f"{src} ({boxes[src].get('text')}) has no outlet {outlet}"
        assert 0 <= inlet < boxes[dst]["numinlets"], f"{dst} ({boxes[dst].get('text')}) has no inlet {inlet}"
    texts = [b.get("text", "") for b in boxes.values()]
    assert "udpsend 127.0.0.1 9000" in texts
    assert "udpreceive 9001" in texts
    classes = {b["maxclass"] for b in boxes.values()}
    assert {"kslider", "number", "slider", "toggle", "umenu", "button", "message"} <= classes
    assert sum(b["maxclass"] == "slider" and b.get("min") == -7.0 for b in boxes.values()) == 16  # timbre knobs
    named = {b["varname"]: b for b in boxes.values() if "varname" in b}
    for name, lo, hi in (("morph", 0.0, 1.0), ("pressure", 0.0, 1.0), ("bend", -1200.0, 1200.0)):
        slider = named[name]
        assert slider["maxclass"] == "slider" and slider["floatoutput"] == 1, name
        assert (slider["min"], slider["min"] + slider["size"]) == (lo, hi), name
    assert sum(b["maxclass"] == "textedit" for b in boxes.values()) == 3  # preset name, morph a and b
    assert sum(b["maxclass"] == "toggle" for b in boxes.values()) >= 10


def number_or_word(word: str) -> int | float | str:
    """A message box's atom as Max reads it: an int, a float, or else a symbol."""
    for kind in (int, float):
        try:
            return kind(word)
        except ValueError:
            pass
    return word


def max_osc_sends(maxpat: dict) -> list[tuple[str, list, bool]]:
    """(address, literal args, wired to udpsend) for OSC message boxes and [prepend /address]."""
    patcher = maxpat["patcher"]
    boxes = {e["box"]["id"]: e["box"] for e in patcher["boxes"]}
    udpsend = [i for i, b in boxes.items() if b.get("text", "").startswith("udpsend")]
    assert len(udpsend) == 1
    wired = {e["patchline"]["source"][0] for e in patcher["lines"] if e["patchline"]["destination"][0] == udpsend[0]}
    out = []
    for ident, box in boxes.items():
        text = box.get("text", "")
        if box["maxclass"] == "message":
            for message in text.split(","):
                words = message.split()
                if words and words[0].startswith("/"):
                    args = [number_or_word(w) for w in words[1:]]
                    out.append((words[0], args, ident in wired))
        elif box["maxclass"] == "newobj" and text.startswith("prepend /"):
            out.append((text.split()[1], None, ident in wired))
    return out


def test_max_addresses_are_in_the_server_table_and_reach_udpsend(maxpat: dict) -> None:
    sends = max_osc_sends(maxpat)
    for address, args, wired in sends:
        assert wired, f"{address} is not connected to [udpsend]"
        entry = addresses.lookup(address)
        assert entry is not None, f"{address} is not in the server's address table"
        addresses.parse_message(address, SAMPLE_ARGS.get(entry.pattern, []) if args is None else args)
    assert ("/reply/port", [9001], True) in sends


def test_both_patches_send_the_same_addresses(maxpat: dict) -> None:
    assert {a for a, _, _ in max_osc_sends(maxpat)} == {a for a, _ in pd_osc_sends()}


def test_the_address_check_would_catch_a_wrong_address() -> None:
    # The checks above rely on lookup/parse refusing unknown addresses; make sure they do.
    assert addresses.lookup("/notes") is None
    with pytest.raises(addresses.CommandError):
        addresses.parse_message("/latent/16", [1.0])
    with pytest.raises(addresses.CommandError):
        addresses.parse_message("/quality/shiny", [1])
