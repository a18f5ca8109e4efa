"""Writes the performer patches: Pure Data (sound_generator.pd + its abstractions) and Max.

    python patches/build_patches.py          # rewrite the files next to this script
    python patches/build_patches.py --check  # exit 1 if a shipped file differs from what it would write

The patches are generated because Pd and Max files address objects by their index in the file
(Pd) or by id with outlet/inlet numbers (Max): 16 knobs and 10 toggles wired by hand is where
mistakes hide. Edit this script, run it, and commit the patches it writes; the tests open the
shipped files (Pd headless), so a patch edited in Pd and saved keeps working too, but it is then
no longer what this script writes (`--check` says so).

Both patches send the same OSC addresses to 127.0.0.1:9000, announce their reply port with
``/reply/port 9001`` when they load, and show what the server answers.

The Pd panel's window holds only controls, displays and comments, in panels side by side; what
they do lives in subpatches ([pd logic], [pd network], [pd replies]) reached through send and
receive names, so no patch cord crosses a panel. `layout_problems` checks a model of the layout
(Pd's font metrics) and this script refuses to write a panel that fails it;
tests/clients/test_pd_gui.py checks the real Pd GUI too (with patches/screenshot.py, which also
writes docs/pd_patch.png).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
SERVER = ("127.0.0.1", 9000)
REPLY_PORT = 9001
SOURCES = ("acoustic", "electronic", "synthetic")
QUALITIES = (
    "bright", "dark", "distortion", "fast_decay", "long_release",
    "multiphonic", "nonlinear_env", "percussive", "reverb", "tempo_sync",
)
N_LATENT = 16
GAIN_DB = (-60, 12)
# Live control (osc_server/addresses.py: /bend takes +-4800 cents, /glide up to 5000 ms). The bend
# sliders span one octave either way; their number boxes reach the whole range.
BEND_CENTS_MAX = 4800
BEND_SLIDER_CENTS = 1200
GLIDE_MS_MAX = 5000

# ------------------------------------------------------------------------------------------
# Pure Data
# ------------------------------------------------------------------------------------------

BG, FG, LBL = "#fcfcfc", "#000000", "#000000"
PANEL_BG, PANEL_FG = "#e8e8e8", "#404040"

# Sizes of what Pd draws, for the layout model below (canvas pixels). Measured in Pd 0.53's GUI
# (DejaVu Sans Mono) under Xvfb, see tests/clients/test_pd_gui.py, which holds the model to them.
# Boxes (objects, messages, comments, number atoms) use Pd's font at the patch's size, 12: 7 px a
# character and 16 px a line (a 40-character comment is 282 px wide); they wrap at 60 characters.
BOX_CHAR_W, BOX_LINE_H, BOX_WRAP = 7, 16, 60
# IEM GUI labels are Tk fonts of the label's own size: 7.25 px a character at 12 and 8.1 at 14
# ("velocity" is 58 px, "sound-generator" at 14 is 122 px); rounded up, so an estimate is never short.
LABEL_CHAR_W = {12: 7.5, 14: 8.5}
LABEL_SIZE, PANEL_LABEL_SIZE = 12, 14
# Graph-on-parent areas of the abstractions: one timbre knob, one quality toggle.
LATENT_GOP = (34, 152)
QUALITY_GOP = (130, 21)
# The main window: where Pd puts it and how big (its interior; the menu bar comes on top).
MAIN_WINDOW = (40, 40, 1000, 765)

Rect = tuple[float, float, float, float]  # x1, y1, x2, y2


def pd_escape(text: str) -> str:
    """Pd's file escaping: `$`, `;` and `,` inside a box are written `\\$`, `\\;`, `\\,`."""
    text = text.replace("$", "\\$")
    # The separators stand alone as atoms: "a, b" is written "a \\, b".
    return re.sub(r"\s*([;,])\s*", r" \\\1 ", text).strip()


def box_lines(text: str, wrap: int = BOX_WRAP) -> list[str]:
    """The lines Pd shows in a box: a `;` ends a line (in a message), words wrap at `wrap` characters."""
    lines: list[str] = []
    for part in re.split(r"(?<=;)\s*", text):
        line = ""
        for word in part.split():
            if line and len(line) + 1 + len(word) > wrap:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}" if line else word
        lines.append(line)
    return [line for line in lines if line] or [""]


def label_rect(x: float, y: float, label: str, size: int = LABEL_SIZE) -> Rect:
    """An IEM label drawn at (x, y), anchored on its left edge and centred vertically."""
    return (x, y - size * 0.7, x + len(label) * LABEL_CHAR_W[size], y + size * 0.7)


def contains(outer: Rect, inner: Rect, slack: float = 0) -> bool:
    return (inner[0] >= outer[0] - slack and inner[1] >= outer[1] - slack
            and inner[2] <= outer[2] + slack and inner[3] <= outer[3] + slack)


def overlap(a: Rect, b: Rect, slack: float = 0) -> bool:
    return (min(a[2], b[2]) - max(a[0], b[0]) > slack) and (min(a[3], b[3]) - max(a[1], b[1]) > slack)


class Shape(NamedTuple):
    """Where something on a canvas is drawn: a box, a GUI, a label or a panel."""

    kind: str  # "box", "gui", "label" or "panel"
    what: str  # its text, label or a description
    rect: Rect


class PdCanvas:
    """One canvas of a .pd file; `add` returns the object's index for `connect`.

    It also keeps a model of the layout (`shapes`): where each box, GUI and label will be drawn,
    estimated from Pd's font metrics, so that `layout_problems` can check a panel before anyone
    opens it."""

    def __init__(self, width: int, height: int, name: str | None = None, font: int = 12, x: int = 40, y: int = 40):
        self.size = (width, height)
        self.header = f"#N canvas {x} {y} {width} {height} {name + ' 0' if name else font};"
        self.records: list[str] = []
        self.connections: list[str] = []
        self.shapes: list[Shape] = []
        self.subpatches: list[PdCanvas] = []
        self.count = 0

    def _add(self, record: str, *shapes: Shape) -> int:
        self.records.append(record)
        self.shapes.extend(shapes)
        self.count += 1
        return self.count - 1

    def _label(self, x: float, y: float, label: str, size: int = LABEL_SIZE) -> tuple[Shape, ...]:
        if label in ("empty", "-", ""):
            return ()
        return (Shape("label", label, label_rect(x, y, label, size)),)

    def _box(self, x: int, y: int, text: str, extra_w: int) -> Shape:
        lines = box_lines(text)
        w = max(len(line) for line in lines) * BOX_CHAR_W + extra_w
        return Shape("box", text, (x, y, x + w, y + len(lines) * BOX_LINE_H + 6))

    def obj(self, x: int, y: int, text: str, size: tuple[int, int] | None = None) -> int:
        """An object box; `size` is its graph-on-parent area if it shows one."""
        shape = Shape("gui", text, (x, y, x + size[0], y + size[1])) if size else self._box(x, y, text, 6)
        return self._add(f"#X obj {x} {y} {pd_escape(text)};", shape)

    def msg(self, x: int, y: int, text: str) -> int:
        return self._add(f"#X msg {x} {y} {pd_escape(text)};", self._box(x, y, text, 11))

    def text(self, x: int, y: int, text: str, width: int | None = None) -> int:
        """A comment; `width` (characters) where it should wrap later than Pd's 60."""
        lines = box_lines(text, width or BOX_WRAP)
        shape = Shape("box", text, (x, y, x + max(map(len, lines)) * BOX_CHAR_W + 4, y + len(lines) * BOX_LINE_H + 2))
        suffix = f", f {width}" if width else ""
        return self._add(f"#X text {x} {y} {pd_escape(text)}{suffix};", shape)

    def _atom(self, kind: str, x: int, y: int, width: int, label: str, receive: str, send: str, where: int) -> int:
        """Number, symbol and list boxes; the label goes left (0) or above (2)."""
        box = Shape("gui", f"{kind} {label}", (x, y, x + width * BOX_CHAR_W + 6, y + 22))
        if label == "-":
            shapes: tuple[Shape, ...] = ()
        elif where == 2:
            shapes = (Shape("label", label, (x, y - 17, x + len(label) * LABEL_CHAR_W[12], y - 1)),)
        else:
            shapes = (Shape("label", label, (x - len(label) * LABEL_CHAR_W[12] - 3, y + 2, x - 1, y + 19)),)
        return self._add(f"#X {kind} {x} {y} {width} 0 0 {where} {label} {receive} {send} 0;", box, *shapes)

    def floatatom(self, x: int, y: int, width: int, label: str = "-", receive: str = "-", send: str = "-",
                  where: int = 0) -> int:
        return self._atom("floatatom", x, y, width, label, receive, send, where)

    def symbolatom(self, x: int, y: int, width: int, label: str = "-", receive: str = "-", send: str = "-",
                   where: int = 0) -> int:
        return self._atom("symbolatom", x, y, width, label, receive, send, where)

    def listbox(self, x: int, y: int, width: int, label: str = "-", receive: str = "-", where: int = 0) -> int:
        """A list box (Pd 0.52+): shows the last list its receive name got, cut to `width` characters."""
        return self._atom("listbox", x, y, width, label, receive, "-", where)

    def subpatch(self, x: int, y: int, canvas: "PdCanvas", name: str) -> int:
        self.subpatches.append(canvas)
        body = "\n".join([canvas.header, *canvas.records, *canvas.connections])
        return self._add(f"{body}\n#X restore {x} {y} pd {name};", self._box(x, y, f"pd {name}", 6))

    # IEM GUIs. `send`/`receive` "empty" = none; a receive name hides the inlet, a send name the outlet.
    def _iem(self, x: int, y: int, text: str, *shapes: Shape) -> int:
        return self._add(f"#X obj {x} {y} {pd_escape(text)};", *shapes)

    def bng(self, x, y, size, label="empty", send="empty", receive="empty", colour=BG, lx=None, ly=None) -> int:
        lx, ly = (size + 4 if lx is None else lx), (size // 2 if ly is None else ly)
        return self._iem(
            x, y, f"bng {size} 250 50 0 {send} {receive} {label} {lx} {ly} 0 {LABEL_SIZE} "
            f"{colour} {FG} {LBL}",
            Shape("gui", f"bng {label}", (x, y, x + size, y + size)), *self._label(x + lx, y + ly, label))

    def tgl(self, x, y, size, label="empty", send="empty", receive="empty") -> int:
        lx, ly = size + 4, size // 2
        return self._iem(
            x, y, f"tgl {size} 0 {send} {receive} {label} {lx} {ly} 0 {LABEL_SIZE} {BG} {FG} {LBL} 0 1",
            Shape("gui", f"tgl {label}", (x, y, x + size, y + size)), *self._label(x + lx, y + ly, label))

    def nbx(self, x, y, digits, lo, hi, init_value=None, label="empty", send="empty", receive="empty",
            height=20) -> int:
        init = 0 if init_value is None else 1
        # g_numbox.c: digits * size * 31 / 36 px of digits, then the triangle (height / 2) and 4 px.
        width = digits * LABEL_SIZE * 31 // 36 + height // 2 + 4
        return self._iem(
            x, y, f"nbx {digits} {height} {lo} {hi} 0 {init} {send} {receive} {label} 0 -10 0 "
            f"{LABEL_SIZE} {BG} {FG} {LBL} {init_value or 0} 256",
            Shape("gui", f"nbx {label}", (x, y, x + width, y + height)), *self._label(x, y - 10, label))

    def slider(self, kind, x, y, w, h, lo, hi, label="empty", send="empty", receive="empty", lx=0, ly=-10) -> int:
        # The knob may stand 3 px outside the slider's box at either end.
        rect = (x - 3, y, x + w + 3, y + h) if kind == "hsl" else (x, y - 3, x + w, y + h + 3)
        return self._iem(
            x, y, f"{kind} {w} {h} {lo} {hi} 0 0 {send} {receive} {label} {lx} {ly} 0 {LABEL_SIZE} "
            f"{BG} {FG} {LBL} 0 1",
            Shape("gui", f"{kind} {label}", rect), *self._label(x + lx, y + ly, label))

    def radio(self, kind, x, y, size, number, label="empty", send="empty", receive="empty") -> int:
        w, h = (size * number, size) if kind == "hradio" else (size, size * number)
        return self._iem(
            x, y, f"{kind} {size} 1 0 {number} {send} {receive} {label} 0 -10 0 {LABEL_SIZE} "
            f"{BG} {FG} {LBL} 0",
            Shape("gui", f"{kind} {label}", (x, y, x + w, y + h)), *self._label(x, y - 10, label))

    def cnv(self, x, y, w, h, label, colour=PANEL_BG) -> int:
        """A panel: a coloured rectangle with a title (one word: an IEM label ends at a space)."""
        assert " " not in label, f"panel label {label!r}: Pd would read the words after the space as arguments"
        return self._iem(
            x, y, f"cnv 15 {w} {h} empty empty {label} 8 12 0 {PANEL_LABEL_SIZE} {colour} {PANEL_FG} 0",
            Shape("panel", label, (x, y, x + w, y + h)), *self._label(x + 8, y + 12, label, PANEL_LABEL_SIZE))

    def connect(self, a: int, outlet: int, b: int, inlet: int) -> None:
        self.connections.append(f"#X connect {a} {outlet} {b} {inlet};")

    def chain(self, *indices: int) -> None:
        for a, b in zip(indices, indices[1:]):
            self.connect(a, 0, b, 0)

    def render(self, gop: str | None = None) -> str:
        lines = [self.header, *self.records, *self.connections]
        if gop:
            lines.append(gop)
        return "\n".join(lines) + "\n"


def layout_problems(canvas: PdCanvas, cords: bool = False) -> list[str]:
    """What a performer would see go wrong in the canvas's layout model: anything outside the
    window, a box or label that sticks out of its panel (or overlaps one it is not in), panels on
    top of each other, boxes and labels on top of each other, and, unless `cords`, patch cords (a
    panel is a surface for controls; what they do lives in the subpatches, reached by
    send/receive names)."""
    width, height = canvas.size
    window = (0, 0, width, height)
    panels = [s for s in canvas.shapes if s.kind == "panel"]
    others = [s for s in canvas.shapes if s.kind != "panel"]
    problems = [f"{s.kind} {s.what!r} {s.rect} is outside the {width}x{height} window"
                for s in canvas.shapes if not contains(window, s.rect)]
    for i, a in enumerate(panels):
        problems += [f"panels {a.what!r} and {b.what!r} overlap" for b in panels[i + 1:] if overlap(a.rect, b.rect)]
    for s in others:
        for p in panels:
            if overlap(s.rect, p.rect) and not contains(p.rect, s.rect):
                problems.append(f"{s.kind} {s.what!r} {s.rect} sticks out of panel {p.what!r} {p.rect}")
    for i, a in enumerate(others):
        problems += [f"{a.kind} {a.what!r} {a.rect} overlaps {b.kind} {b.what!r} {b.rect}"
                     for b in others[i + 1:] if overlap(a.rect, b.rect)]
    if canvas.connections and not cords:
        problems.append(f"{len(canvas.connections)} patch cords on the panel")
    return problems


def pd_sg_send() -> str:
    c = PdCanvas(560, 300)
    inlet = c.obj(20, 20, "inlet")
    to_list = c.obj(20, 60, "list")
    fmt = c.obj(20, 100, "oscformat $1")
    out = c.obj(20, 140, "s sg-osc-out")
    c.chain(inlet, to_list, fmt, out)
    c.text(150, 20, "[sg_send ADDRESS]: whatever comes in (a float, a list, a symbol; a bang = no "
                    "arguments) leaves as one OSC message ADDRESS args... for the server, through "
                    "[r sg-osc-out] in sound_generator.pd. Pd numbers go as OSC floats; the server "
                    "accepts 60.0 for a pitch.")
    c.text(150, 150, "Examples: [60 100( -> [sg_send /note] plays key 60 at velocity 100. Per note "
                     "(MPE): [60 -50( -> [sg_send /note/bend] bends the sounding key 60 down 50 cents; "
                     "[60 0.8( -> [sg_send /note/pressure] presses it (0..1). [symbol mono( -> "
                     "[sg_send /mode]; a bang -> [sg_send /panic].")
    return c.render()


def pd_sg_latent() -> str:
    """One timbre knob: [sg_latent I] shows a slider -7..7 sending /latent/I (graph on parent)."""
    c = PdCanvas(420, 300)
    slider = c.slider("vsl", 4, 18, 18, 110, -7, 7, label="$1", receive="sg-latent-$1", lx=2, ly=-9)
    shown = c.floatatom(0, 132, 4)
    send = c.obj(120, 40, "sg_send /latent/$1")
    c.connect(slider, 0, send, 0)
    c.connect(slider, 0, shown, 0)
    reset = c.obj(120, 90, "r sg-latent-reset")
    zero = c.msg(120, 120, "0")
    rnd = c.obj(260, 90, "r sg-latent-random")
    draw = c.obj(260, 120, "random 1401")
    centre = c.obj(260, 150, "- 700")
    scale = c.obj(260, 180, "/ 100")
    to_knob = c.obj(120, 220, "s sg-latent-$1")
    c.chain(reset, zero, to_knob)
    c.chain(rnd, draw, centre, scale, to_knob)
    c.text(120, 250, "knob value -7..7 -> /latent/$1")
    return c.render(gop=f"#X coords 0 -1 1 1 {LATENT_GOP[0]} {LATENT_GOP[1]} 2 0 0;")


def pd_sg_quality() -> str:
    """One quality tag: [sg_quality NAME] shows a toggle sending /quality/NAME 0|1 (graph on parent)."""
    c = PdCanvas(420, 220)
    toggle = c.tgl(2, 2, 17, label="$1", receive="sg-quality-$1")
    send = c.obj(20, 60, "sg_send /quality/$1")
    c.connect(toggle, 0, send, 0)
    clear = c.obj(200, 60, "r sg-qualities-clear")
    off = c.msg(200, 90, "set 0")
    to_toggle = c.obj(200, 120, "s sg-quality-$1")
    c.chain(clear, off, to_toggle)
    c.text(20, 160, "toggle -> /quality/$1 0|1; 'clear' in the panel only redraws it")
    return c.render(gop=f"#X coords 0 -1 1 1 {QUALITY_GOP[0]} {QUALITY_GOP[1]} 2 0 0;")


def pd_logic() -> PdCanvas:
    """[pd logic]: what the panel's controls do (they reach it through their send names)."""
    c = PdCanvas(1000, 900, name="logic")
    c.text(10, 10, "panel controls -> OSC. Each [r sg-...-out] is the send name of a control.", width=90)
    # Notes: pitch and velocity are remembered; play / off send them.
    r_pitch = c.obj(10, 50, "r sg-pitch-out")
    r_vel = c.obj(150, 50, "r sg-velocity-out")
    r_play = c.obj(10, 90, "r sg-play-out")
    pitch_on = c.obj(10, 130, "f 60")
    pack = c.obj(10, 170, "pack 0 100")
    note = c.obj(10, 210, "sg_send /note")
    c.chain(r_play, pitch_on, pack, note)
    c.connect(r_pitch, 0, pitch_on, 1)
    c.connect(r_vel, 0, pack, 1)
    r_off = c.obj(150, 90, "r sg-off-out")
    pitch_off = c.obj(150, 130, "f 60")
    note_off = c.obj(150, 170, "sg_send /note/off")
    c.chain(r_off, pitch_off, note_off)
    c.connect(r_pitch, 0, pitch_off, 1)
    # One-octave keyboard: key 0..11 + 12 * (octave + 1) -> pitch box, then play.
    r_key = c.obj(300, 50, "r sg-key-out")
    r_oct = c.obj(420, 50, "r sg-octave-out")
    oct1 = c.obj(420, 80, "+ 1")
    oct12 = c.obj(420, 110, "* 12")
    add = c.obj(300, 140, "+ 60")
    c.chain(r_oct, oct1, oct12)
    c.connect(r_key, 0, add, 0)
    c.connect(oct12, 0, add, 1)
    key_t = c.obj(300, 170, "t b f")
    c.connect(add, 0, key_t, 0)
    to_pitch = c.obj(360, 210, "s sg-pitch")
    to_play = c.obj(300, 240, "s sg-play")
    c.connect(key_t, 1, to_pitch, 0)
    c.connect(key_t, 0, to_play, 0)
    # MIDI keyboard through Pd's own MIDI settings (velocity 0 = note off, as the server reads it).
    notein = c.obj(560, 50, "notein")
    midi_pack = c.obj(560, 90, "pack 0 0")
    midi_note = c.obj(560, 130, "sg_send /note")
    c.connect(notein, 1, midi_pack, 1)
    c.connect(notein, 0, midi_pack, 0)
    c.connect(midi_pack, 0, midi_note, 0)
    # Source.
    r_src = c.obj(10, 290, "r sg-source-out")
    sel = c.obj(10, 320, "sel 0 1 2")
    src_send = c.obj(10, 400, "sg_send /source")
    c.connect(r_src, 0, sel, 0)
    for i, name in enumerate(SOURCES):
        m = c.msg(10 + 135 * i, 360, f"symbol {name}")
        c.connect(sel, i, m, 0)
        c.connect(m, 0, src_send, 0)
    # Qualities: 'clear' empties the set on the server and redraws the toggles.
    r_clear = c.obj(440, 290, "r sg-qualities-clear-out")
    clear_t = c.obj(440, 320, "t b b")
    redraw = c.obj(500, 360, "s sg-qualities-clear")
    qualities = c.obj(440, 400, "sg_send /qualities")
    c.connect(r_clear, 0, clear_t, 0)
    c.connect(clear_t, 1, redraw, 0)
    c.connect(clear_t, 0, qualities, 0)
    # Actions and gain.
    for i, (name, address) in enumerate([("prerender", "/prerender"), ("panic", "/panic"), ("gain", "/gain")]):
        r = c.obj(560 + i * 140, 200, f"r sg-{name}-out")
        s = c.obj(560 + i * 140, 230, f"sg_send {address}")
        c.connect(r, 0, s, 0)
    # /status, by hand or polled; each is preceded by /reply/port (see [pd network]).
    r_status = c.obj(700, 290, "r sg-status-out")
    r_poll = c.obj(830, 290, "r sg-poll-out")
    metro = c.obj(830, 320, "metro 1000")
    c.chain(r_poll, metro)
    ask = c.obj(700, 360, "t b b")
    c.connect(r_status, 0, ask, 0)
    c.connect(metro, 0, ask, 0)
    announce = c.obj(780, 400, "s sg-announce")
    status = c.obj(700, 440, "sg_send /status")
    c.connect(ask, 1, announce, 0)
    c.connect(ask, 0, status, 0)
    # Presets: save and load send the name box's name; list has no arguments.
    r_name = c.obj(10, 490, "r sg-preset-name-out")
    for i, action in enumerate(("save", "load")):
        r = c.obj(10 + 160 * i, 530, f"r sg-preset-{action}-out")
        name = c.obj(10 + 160 * i, 560, "symbol")
        s = c.obj(10 + 160 * i, 590, f"sg_send /preset/{action}")
        c.connect(r_name, 0, name, 1)
        c.chain(r, name, s)
    r_list = c.obj(330, 530, "r sg-preset-list-out")
    list_send = c.obj(330, 590, "sg_send /preset/list")
    c.connect(r_list, 0, list_send, 0)
    # Morph: moving the slider sends /preset/morph a b t with the two names boxes' names.
    r_a = c.obj(500, 490, "r sg-preset-a-out")
    r_b = c.obj(640, 490, "r sg-preset-b-out")
    r_t = c.obj(780, 490, "r sg-preset-morph-out")
    t_bf = c.obj(780, 520, "t b f")
    name_a = c.obj(500, 550, "symbol")
    pack = c.obj(500, 580, "pack s s f")
    morph = c.obj(500, 610, "sg_send /preset/morph")
    c.connect(r_a, 0, name_a, 1)
    c.connect(r_b, 0, pack, 1)
    c.connect(r_t, 0, t_bf, 0)
    c.connect(t_bf, 1, pack, 2)
    c.connect(t_bf, 0, name_a, 0)
    c.chain(name_a, pack, morph)
    # Expression. Bend: the slider and the cents box (the whole range) send the same name; each
    # value sent also sets both displays ("set" redraws without sending again).
    r_bend = c.obj(10, 680, "r sg-bend-out")
    bend_t = c.obj(10, 710, "t f f f")
    bend = c.obj(10, 800, "sg_send /bend")
    show_slider = c.msg(80, 740, "set $1")
    show_cents = c.msg(160, 740, "set $1")
    to_slider = c.obj(80, 770, "s sg-bend")
    to_cents = c.obj(160, 770, "s sg-bend-cents")
    c.connect(r_bend, 0, bend_t, 0)
    c.connect(bend_t, 2, show_slider, 0)
    c.connect(bend_t, 1, show_cents, 0)
    c.connect(bend_t, 0, bend, 0)
    c.connect(show_slider, 0, to_slider, 0)
    c.connect(show_cents, 0, to_cents, 0)
    r_centre = c.obj(300, 680, "r sg-bend-centre")
    centre = c.msg(300, 710, "0")
    recentre = c.obj(300, 740, "s sg-bend")
    c.chain(r_centre, centre, recentre)
    # An IEM slider that does not send on load is drawn at its low end: show 0 cents (the
    # centre) from the start; "set" moves it without sending.
    shown_at_load = c.obj(300, 780, "loadbang")
    centred = c.msg(300, 810, "set 0")
    c.chain(shown_at_load, centred, recentre)
    for i, (name, address) in enumerate([("pressure", "/pressure"), ("sustain", "/sustain"), ("glide", "/glide")]):
        r = c.obj(430 + i * 140, 680, f"r sg-{name}-out")
        s = c.obj(430 + i * 140, 710, f"sg_send {address}")
        c.connect(r, 0, s, 0)
    r_mode = c.obj(430, 760, "r sg-mode-out")
    mode_sel = c.obj(430, 790, "sel 0 1")
    mode_send = c.obj(430, 850, "sg_send /mode")
    c.connect(r_mode, 0, mode_sel, 0)
    for i, mode in enumerate(("poly", "mono")):
        m = c.msg(430 + 100 * i, 820, f"symbol {mode}")
        c.connect(mode_sel, i, m, 0)
        c.connect(m, 0, mode_send, 0)
    # Per-note (MPE) examples in the panel: message boxes sending "pitch cents" / "pitch value".
    for i, (name, address) in enumerate([("note-bend", "/note/bend"), ("note-pressure", "/note/pressure")]):
        r = c.obj(680, 760 + 60 * i, f"r sg-{name}")
        s = c.obj(680, 790 + 60 * i, f"sg_send {address}")
        c.connect(r, 0, s, 0)
    return c


def pd_network() -> PdCanvas:
    """[pd network]: netsend / netreceive, the server address and the reply port.

    Settings are applied once the patch has loaded ([del 0]), unless `sg-server` /
    `sg-reply-port` were already sent (e.g. with `pd -send`), so a test or a second copy of the
    patch can pick its own ports without first binding 9001.
    """
    c = PdCanvas(1000, 560, name="network")
    c.text(10, 10, f"server: sg-server HOST PORT (default {SERVER[0]} {SERVER[1]}) - replies: sg-reply-port N "
                   f"(default {REPLY_PORT}), announced with /reply/port N", width=130)
    # Outgoing: every [sg_send] ends here.
    r_out = c.obj(10, 50, "r sg-osc-out")
    prepend = c.obj(10, 80, "list prepend send")
    trim = c.obj(10, 110, "list trim")
    netsend = c.obj(10, 150, "netsend -u -b")
    c.chain(r_out, prepend, trim, netsend)
    connected = c.obj(10, 190, "s sg-connected")
    c.connect(netsend, 0, connected, 0)
    # Start-up: default reply port first, then the default server (each unless already set).
    loadbang = c.obj(300, 50, "loadbang")
    later = c.obj(300, 80, "del 0")
    start = c.obj(300, 110, "t b b")
    c.chain(loadbang, later, start)
    gate_reply = c.obj(380, 150, "spigot 1")
    gate_server = c.obj(300, 150, "spigot 1")
    c.connect(start, 1, gate_reply, 0)
    c.connect(start, 0, gate_server, 0)
    # Reply port: stored, then [listen N( and /reply/port N (the latter only once connected).
    r_reply = c.obj(560, 50, "r sg-reply-port")
    reply_t = c.obj(560, 80, "t b f")
    reply_once = c.obj(560, 110, "t b b")
    reply_closed = c.msg(640, 140, "0")
    reply_store = c.obj(560, 190, f"f {REPLY_PORT}")
    c.connect(r_reply, 0, reply_t, 0)
    c.connect(reply_t, 1, reply_store, 1)
    c.connect(reply_t, 0, reply_once, 0)
    c.connect(reply_once, 1, reply_closed, 0)
    c.connect(reply_closed, 0, gate_reply, 1)
    c.connect(reply_once, 0, reply_store, 0)
    c.connect(gate_reply, 0, reply_store, 0)
    reply_apply = c.obj(560, 230, "t f f")
    listen = c.msg(640, 270, "listen $1")
    netreceive = c.obj(640, 310, "netreceive -u -b")
    c.connect(reply_store, 0, reply_apply, 0)
    c.connect(reply_apply, 1, listen, 0)
    c.connect(listen, 0, netreceive, 0)
    if_connected = c.obj(560, 350, "spigot")
    announce = c.obj(560, 390, "sg_send /reply/port")
    c.connect(reply_apply, 0, if_connected, 0)
    c.connect(if_connected, 0, announce, 0)
    c.connect(netsend, 0, if_connected, 1)
    # Announce again without listening again: after a (re)connect, and before each /status, so
    # a server started after the patch still learns where to answer.
    r_announce = c.obj(760, 50, "r sg-announce")
    announce_store = c.obj(760, 190, f"f {REPLY_PORT}")
    c.connect(r_announce, 0, announce_store, 0)
    c.connect(reply_t, 1, announce_store, 1)
    c.connect(announce_store, 0, if_connected, 0)
    # Server: stored; applying it reconnects, then re-announces the reply port to the new server.
    r_server = c.obj(300, 200, "r sg-server")
    server_list = c.obj(400, 200, "list")  # "127.0.0.1 9000" arrives with a symbol as selector
    server_t = c.obj(300, 230, "t b l")
    server_once = c.obj(300, 260, "t b b")
    server_closed = c.msg(400, 290, "0")
    server_store = c.obj(300, 330, f"list append {SERVER[0]} {SERVER[1]}")
    c.chain(r_server, server_list, server_t)
    c.connect(server_t, 1, server_store, 1)
    c.connect(server_t, 0, server_once, 0)
    c.connect(server_once, 1, server_closed, 0)
    c.connect(server_closed, 0, gate_server, 1)
    c.connect(server_once, 0, server_store, 0)
    c.connect(gate_server, 0, server_store, 0)
    server_apply = c.obj(300, 370, "t b l")
    connect = c.msg(300, 410, "disconnect, connect $1 $2")
    c.connect(server_store, 0, server_apply, 0)
    c.connect(server_apply, 1, connect, 0)
    c.connect(connect, 0, netsend, 0)
    c.connect(server_apply, 0, announce_store, 0)
    # Incoming: parsed replies go to [r sg-reply] (the panel) and to the Pd window.
    parse = c.obj(720, 350, "oscparse")
    c.connect(netreceive, 0, parse, 0)
    to_panel = c.obj(720, 390, "s sg-reply")
    reply_trim = c.obj(830, 390, "list trim")
    printer = c.obj(830, 420, "print sg-reply")
    c.connect(parse, 0, to_panel, 0)
    c.connect(parse, 0, reply_trim, 0)
    c.connect(reply_trim, 0, printer, 0)
    return c


# The figures of a /status reply, in order (osc_server/addresses.py's table; tests compare them).
STATUS_FIELDS = ("voices", "cache_notes", "cache_mb", "hits", "misses", "renders_queued", "underruns",
                 "gain_db", "rendering")


def pd_replies() -> PdCanvas:
    """[pd replies]: the server's replies -> the displays in the panel's "server" section, each
    reached through its receive name (sg-show-...)."""
    c = PdCanvas(1000, 520, name="replies")
    c.text(10, 10, "replies from [pd network] -> displays in the panel (their receive names: sg-show-...)", width=90)
    r = c.obj(10, 50, "r sg-reply")
    last = c.obj(10, 80, "s sg-show-last")
    c.connect(r, 0, last, 0)
    trim = c.obj(200, 50, "list trim")
    route = c.obj(200, 80, "route ready error status prerender preset")
    c.connect(r, 0, trim, 0)
    c.connect(trim, 0, route, 0)
    ready = c.obj(200, 130, "t l b")
    c.connect(route, 0, ready, 0)
    c.connect(ready, 0, c.obj(200, 190, "s sg-show-ready"), 0)
    c.connect(ready, 1, c.obj(260, 160, "s sg-ready-flash"), 0)
    error = c.obj(400, 130, "list")  # "/note reason" leaves [route] with /note as its selector
    c.connect(route, 1, error, 0)
    c.connect(error, 0, c.obj(400, 160, "s sg-show-error"), 0)
    # /status: one number box per figure.
    unpack = c.obj(10, 240, "unpack " + " ".join("f" * len(STATUS_FIELDS)))
    c.connect(route, 2, unpack, 0)
    for i, name in enumerate(STATUS_FIELDS):
        c.connect(unpack, i, c.obj(10 + 95 * i, 270 + 30 * (i % 2), f"s sg-show-{name}"), 0)
    # /prerender/progress done total -> the two boxes and the bar; /prerender/done -> a full bar.
    pre = c.obj(560, 130, "route progress done")
    c.connect(route, 3, pre, 0)
    unpack_pre = c.obj(560, 160, "unpack f f")
    c.connect(pre, 0, unpack_pre, 0)
    ratio = c.obj(560, 200, "/ 1")
    c.connect(unpack_pre, 1, ratio, 1)
    c.connect(unpack_pre, 0, ratio, 0)
    c.connect(unpack_pre, 0, c.obj(640, 200, "s sg-show-done"), 0)
    c.connect(unpack_pre, 1, c.obj(760, 200, "s sg-show-total"), 0)
    to_bar = c.obj(560, 230, "s sg-progress")
    c.connect(ratio, 0, to_bar, 0)
    full = c.msg(760, 160, "1")
    c.connect(pre, 1, full, 0)
    c.connect(full, 0, to_bar, 0)
    # /preset/loaded and /preset/saved -> "loaded NAME" / "saved NAME"; /preset/list -> the names
    # (a list message: what [route] passes on through its reject outlet).
    preset_route = c.obj(10, 360, "route loaded saved")
    c.connect(route, 4, preset_route, 0)
    to_preset = c.obj(10, 450, "s sg-show-preset")
    for outlet, word in ((0, "loaded"), (1, "saved")):
        word_first = c.obj(10 + 160 * outlet, 400, f"list prepend {word}")
        c.connect(preset_route, outlet, word_first, 0)
        c.connect(word_first, 0, to_preset, 0)
    c.connect(preset_route, 2, c.obj(340, 450, "s sg-show-names"), 0)
    return c


def pd_panel() -> PdCanvas:
    """The main window: the panel a performer plays, with the subpatches that do the work."""
    x0, y0, width, height = MAIN_WINDOW
    c = PdCanvas(width, height, x=x0, y=y0)
    c.cnv(5, 5, 990, 36, "sound-generator", colour="#c8d8e8")
    c.text(200, 14, f"plays the server at {SERVER[0]}:{SERVER[1]} over OSC (UDP) - "
                    f"replies come back on port {REPLY_PORT}", width=100)

    # NOTE
    c.cnv(5, 48, 420, 150, "note")
    c.nbx(15, 90, 4, 9, 120, init_value=60, label="pitch", send="sg-pitch-out", receive="sg-pitch")
    c.nbx(85, 90, 4, 1, 127, init_value=100, label="velocity", send="sg-velocity-out", receive="sg-velocity")
    c.bng(170, 80, 30, label="play", send="sg-play-out", receive="sg-play")
    c.bng(250, 80, 30, label="off", send="sg-off-out", receive="sg-off")
    c.radio("hradio", 15, 150, 20, 12, label="keys_C..B", send="sg-key-out", receive="sg-key")
    c.nbx(275, 150, 2, 0, 8, init_value=4, label="octave", send="sg-octave-out", receive="sg-octave")
    c.text(15, 176, "MIDI notes from Pd's MIDI input play too")

    # SOURCE
    c.cnv(430, 48, 150, 150, "source")
    c.radio("vradio", 440, 85, 20, 3, send="sg-source-out", receive="sg-source")
    for i, name in enumerate(SOURCES):
        c.text(465, 85 + 20 * i, name)

    # ACTIONS
    c.cnv(585, 48, 410, 150, "play")
    c.bng(600, 80, 30, label="prerender", send="sg-prerender-out", receive="sg-prerender")
    c.bng(720, 80, 30, label="PANIC", send="sg-panic-out", receive="sg-panic", colour="#fc8080")
    c.bng(830, 80, 20, label="status", send="sg-status-out", receive="sg-status")
    c.tgl(830, 110, 20, label="poll", send="sg-poll-out", receive="sg-poll")
    c.slider("hsl", 600, 160, 200, 20, GAIN_DB[0], GAIN_DB[1], label="gain_dB", send="sg-gain-out",
             receive="sg-gain")
    c.floatatom(815, 159, 5, receive="sg-gain-out")

    # TIMBRE: 16 knobs; zero / dice carry their labels above them (the panel ends just right of them).
    c.cnv(5, 205, 695, 190, "timbre")
    for i in range(N_LATENT):
        c.obj(15 + 40 * i, 235, f"sg_latent {i}", size=LATENT_GOP)
    c.bng(660, 255, 25, label="zero", send="sg-latent-reset", lx=0, ly=-10)
    c.bng(660, 320, 25, label="dice", send="sg-latent-random", lx=0, ly=-10)

    # QUALITIES
    c.cnv(705, 205, 290, 190, "qualities")
    for i, name in enumerate(QUALITIES):
        c.obj(715 + 140 * (i // 5), 235 + 26 * (i % 5), f"sg_quality {name}", size=QUALITY_GOP)
    c.bng(715, 368, 20, label="clear", send="sg-qualities-clear-out")

    # EXPRESSION: bend (the slider spans +-BEND_SLIDER_CENTS, the box the whole range), pressure,
    # sustain, mode (poly / mono), glide.
    c.cnv(5, 400, 490, 130, "expression")
    c.slider("hsl", 18, 445, 200, 18, -BEND_SLIDER_CENTS, BEND_SLIDER_CENTS, label="bend_cents",
             send="sg-bend-out", receive="sg-bend")
    c.nbx(232, 444, 5, -BEND_CENTS_MAX, BEND_CENTS_MAX, send="sg-bend-out", receive="sg-bend-cents", height=20)
    c.bng(312, 445, 18, label="centre", send="sg-bend-centre")
    c.slider("hsl", 18, 495, 200, 18, 0, 1, label="pressure", send="sg-pressure-out", receive="sg-pressure")
    c.floatatom(232, 493, 5, receive="sg-pressure-out")
    c.tgl(400, 425, 20, label="sustain", send="sg-sustain-out", receive="sg-sustain")
    c.radio("vradio", 400, 470, 18, 2, label="mode", send="sg-mode-out", receive="sg-mode")
    c.text(422, 470, "poly")
    c.text(422, 488, "mono")
    c.nbx(312, 493, 4, 0, GLIDE_MS_MAX, label="glide_ms", send="sg-glide-out", receive="sg-glide")

    # PRESETS
    c.cnv(500, 400, 495, 130, "presets")
    c.symbolatom(550, 432, 16, label="name", receive="sg-preset-name", send="sg-preset-name-out")
    c.bng(690, 433, 20, label="save", send="sg-preset-save-out", receive="sg-preset-save")
    c.bng(760, 433, 20, label="load", send="sg-preset-load-out", receive="sg-preset-load")
    c.bng(830, 433, 20, label="list", send="sg-preset-list-out", receive="sg-preset-list")
    c.symbolatom(525, 472, 10, label="a", receive="sg-preset-a", send="sg-preset-a-out")
    c.slider("hsl", 620, 474, 200, 18, 0, 1, label="morph_a..b", send="sg-preset-morph-out",
             receive="sg-preset-morph", lx=0, ly=-9)
    c.symbolatom(850, 472, 10, label="b", receive="sg-preset-b", send="sg-preset-b-out")
    c.listbox(565, 504, 20, label="preset", receive="sg-show-preset")
    c.listbox(775, 504, 28, label="names", receive="sg-show-names")

    # SERVER SAYS: what the server answers ([pd replies] fills these in).
    c.cnv(5, 535, 990, 150, "server")
    c.listbox(100, 565, 44, label="last_reply", receive="sg-show-last")
    c.slider("hsl", 525, 567, 160, 18, 0, 1, label="pre-render", receive="sg-progress", lx=-82, ly=9)
    c.floatatom(700, 565, 5, receive="sg-show-done")
    c.floatatom(765, 565, 5, label="/", receive="sg-show-total")
    c.text(815, 568, "notes")
    c.floatatom(950, 565, 2, label="connected", receive="sg-connected")
    c.bng(100, 601, 20, label="ready", receive="sg-ready-flash", lx=-42, ly=10)
    c.listbox(125, 600, 10, receive="sg-show-ready")
    c.listbox(290, 600, 90, label="error", receive="sg-show-error")
    c.text(15, 652, "status")
    for i, name in enumerate(STATUS_FIELDS):
        c.floatatom(70 + 106 * i, 650, 6, label=name, receive=f"sg-show-{name}", where=2)

    # SETTINGS and per-note examples: click a message box to send it (edit it first, if need be).
    c.msg(15, 695, f"; sg-server {SERVER[0]} {SERVER[1]}")
    c.msg(215, 695, f"; sg-reply-port {REPLY_PORT}")
    c.msg(370, 695, "; sg-note-bend 60 -50")
    c.msg(545, 695, "; sg-note-pressure 60 0.8")
    c.text(745, 695, "click to send: server, reply port, per-note (MPE) bend and pressure", width=36)
    c.text(15, 740, "replies also print in the Pd window - all objects are Pd vanilla (0.52+) - "
                    "built by build_patches.py", width=100)
    c.subpatch(745, 740, pd_logic(), "logic")
    c.subpatch(820, 740, pd_network(), "network")
    c.subpatch(910, 740, pd_replies(), "replies")
    return c


def pd_main() -> str:
    panel = pd_panel()
    problems = layout_problems(panel)
    for sub in panel.subpatches:
        problems += [f"{sub.header} {p}" for p in layout_problems(sub, cords=True)]
    if problems:
        raise ValueError("sound_generator.pd would be hard to read:\n" + "\n".join(problems))
    return panel.render()


# ------------------------------------------------------------------------------------------
# Max
# ------------------------------------------------------------------------------------------

# (inlets, outlets) of the Max objects used, keyed by class or by a newobj's first word.
MAX_IO = {
    "udpsend": (1, 0), "udpreceive": (1, 1), "prepend": (2, 1), "pack": (2, 1), "int": (2, 1),
    "t": (1, 2), "route": (2, 1), "loadbang": (1, 1), "print": (1, 0), "metro": (2, 1),
    "kslider": (2, 2), "number": (1, 2), "flonum": (1, 2), "slider": (1, 1), "toggle": (1, 1),
    "button": (1, 1), "umenu": (1, 3), "message": (2, 1), "comment": (1, 0), "textedit": (1, 4),
    "zl": (2, 2),
}


class MaxPatcher:
    def __init__(self) -> None:
        self.boxes: list[dict] = []
        self.lines: list[dict] = []

    def box(self, maxclass: str, x: float, y: float, w: float, h: float, text: str | None = None,
            **attrs) -> str:
        ident = f"obj-{len(self.boxes) + 1}"
        if maxclass == "newobj":
            word = text.split()[0]
            inlets, outlets = MAX_IO[word]
            if word == "route":
                inlets, outlets = 2, len(text.split())
            if word == "t":
                outlets = len(text.split()) - 1
            if word == "pack":
                inlets = max(2, len(text.split()) - 1)
        else:
            inlets, outlets = MAX_IO[maxclass]
        box = {"id": ident, "maxclass": maxclass, "numinlets": inlets, "numoutlets": outlets,
               "patching_rect": [float(x), float(y), float(w), float(h)]}
        if text is not None:
            box["text"] = text
        box.update(attrs)
        self.boxes.append({"box": box})
        return ident

    def obj(self, x, y, text, w=None) -> str:
        return self.box("newobj", x, y, w or max(40, 7 * len(text) + 12), 22, text)

    def connect(self, a: str, outlet: int, b: str, inlet: int) -> None:
        self.lines.append({"patchline": {"source": [a, outlet], "destination": [b, inlet]}})

    def render(self) -> str:
        patcher = {
            "patcher": {
                "fileversion": 1,
                "appversion": {"major": 8, "minor": 5, "revision": 5, "architecture": "x64", "modernui": 1},
                "classnamespace": "box",
                "rect": [60.0, 80.0, 1420.0, 1060.0],
                "bglocked": 0,
                "openinpresentation": 0,
                "default_fontsize": 12.0,
                "default_fontface": 0,
                "default_fontname": "Arial",
                "gridonopen": 1,
                "gridsize": [15.0, 15.0],
                "gridsnaponopen": 1,
                "objectsnaponopen": 1,
                "statusbarvisible": 2,
                "toolbarvisible": 1,
                "description": "sound-generator front panel: plays the OSC server (udpsend) and shows its replies",
                "boxes": self.boxes,
                "lines": self.lines,
            }
        }
        return json.dumps(patcher, indent=1) + "\n"


def max_patch() -> str:
    m = MaxPatcher()
    m.box("comment", 10, 10, 700, 20,
          f"sound-generator: plays the server at {SERVER[0]}:{SERVER[1]} over OSC; replies on {REPLY_PORT}")
    udpsend = m.obj(620, 615, f"udpsend {SERVER[0]} {SERVER[1]}")

    def send(source: str, outlet: int = 0) -> None:
        m.connect(source, outlet, udpsend, 0)

    # Reply port on load; initial pitch / velocity.
    loadbang = m.obj(620, 40, "loadbang")
    start = m.obj(620, 70, "t b b")
    m.connect(loadbang, 0, start, 0)
    announce = m.box("message", 620, 100, 120, 22, f"/reply/port {REPLY_PORT}")
    m.connect(start, 0, announce, 0)
    send(announce)

    # Note entry: keyboard (pitch + velocity, note-offs included) and number boxes with play / off.
    m.box("comment", 10, 40, 200, 20, "note: click keys, or set pitch/velocity and play")
    keys = m.box("kslider", 10, 65, 336, 53, None, offset=36, range=61)
    key_pack = m.obj(10, 130, "pack 0 0")
    m.connect(keys, 1, key_pack, 1)
    m.connect(keys, 0, key_pack, 0)
    key_note = m.obj(10, 160, "prepend /note")
    m.connect(key_pack, 0, key_note, 0)
    send(key_note)
    pitch = m.box("number", 360, 65, 50, 22, None, minimum=9, maximum=120)
    velocity = m.box("number", 420, 65, 50, 22, None, minimum=1, maximum=127)
    m.box("comment", 360, 45, 110, 20, "pitch   velocity")
    defaults = m.box("message", 700, 70, 60, 22, "60")
    vdefault = m.box("message", 770, 70, 60, 22, "100")
    m.connect(start, 1, defaults, 0)
    m.connect(start, 1, vdefault, 0)
    m.connect(defaults, 0, pitch, 0)
    m.connect(vdefault, 0, velocity, 0)
    play = m.box("button", 480, 65, 24, 24)
    off = m.box("button", 520, 65, 24, 24)
    m.box("comment", 476, 92, 80, 20, "play  off")
    pitch_on = m.obj(360, 130, "int 60")
    pitch_off = m.obj(520, 130, "int 60")
    m.connect(pitch, 0, pitch_on, 1)
    m.connect(pitch, 0, pitch_off, 1)
    num_pack = m.obj(360, 160, "pack 0 100")
    m.connect(velocity, 0, num_pack, 1)
    m.connect(play, 0, pitch_on, 0)
    m.connect(pitch_on, 0, num_pack, 0)
    num_note = m.obj(360, 190, "prepend /note")
    m.connect(num_pack, 0, num_note, 0)
    send(num_note)
    m.connect(off, 0, pitch_off, 0)
    note_off = m.obj(520, 160, "prepend /note/off")
    m.connect(pitch_off, 0, note_off, 0)
    send(note_off)

    # Timbre: 16 sliders -7..7.
    m.box("comment", 10, 230, 300, 20, "timbre (latent_sample): 16 knobs, -7..7")
    for i in range(N_LATENT):
        x = 10 + 36 * i
        s = m.box("slider", x, 255, 20, 120, None, size=14.0, min=-7.0, floatoutput=1,
                  orientation=2)
        p = m.obj(10 + 144 * (i // 4), 385 + 24 * (i % 4), f"prepend /latent/{i}", w=130)
        m.connect(s, 0, p, 0)
        send(p)

    # Source.
    m.box("comment", 620, 230, 100, 20, "source")
    menu = m.box("umenu", 620, 255, 120, 22, None,
                 items=["acoustic", ",", "electronic", ",", "synthetic"])
    source = m.obj(620, 285, "prepend /source")
    m.connect(menu, 1, source, 0)
    send(source)

    # Qualities: ten toggles, and 'clear' (empties the set and redraws the toggles).
    m.box("comment", 780, 230, 200, 20, "qualities")
    toggles = []
    for i, name in enumerate(QUALITIES):
        y = 255 + 24 * i
        t = m.box("toggle", 780, y, 20, 20)
        m.box("comment", 805, y, 100, 20, name)
        p = m.obj(910, y, f"prepend /quality/{name}")
        m.connect(t, 0, p, 0)
        send(p)
        toggles.append(t)
    clear = m.box("button", 780, 500, 24, 24)
    m.box("comment", 808, 502, 60, 20, "clear")
    clear_t = m.obj(780, 530, "t b b")
    m.connect(clear, 0, clear_t, 0)
    redraw = m.box("message", 860, 530, 50, 22, "set 0")
    m.connect(clear_t, 1, redraw, 0)
    for t in toggles:
        m.connect(redraw, 0, t, 0)
    empty = m.box("message", 780, 560, 80, 22, "/qualities")
    m.connect(clear_t, 0, empty, 0)
    send(empty)

    # Actions and gain.
    m.box("comment", 10, 500, 300, 20, "actions")
    for i, address in enumerate(("/prerender", "/panic", "/status")):
        b = m.box("message", 10 + 90 * i, 525, 80, 22, address)
        send(b)
    poll = m.box("toggle", 280, 525, 20, 20)
    m.box("comment", 302, 525, 40, 20, "poll")
    metro = m.obj(280, 555, "metro 1000")
    m.connect(poll, 0, metro, 0)
    status = m.box("message", 280, 585, 60, 22, "/status")
    m.connect(metro, 0, status, 0)
    send(status)
    gain = m.box("flonum", 360, 525, 60, 22, None, minimum=float(GAIN_DB[0]), maximum=float(GAIN_DB[1]))
    m.box("comment", 425, 525, 60, 20, "gain dB")
    gain_p = m.obj(360, 555, "prepend /gain")
    m.connect(gain, 0, gain_p, 0)
    send(gain_p)

    # Presets: a name field with save / load / list, and a morph slider between two names. A
    # textedit's text goes through [route text] on both outlets: with or without the "text"
    # prefix (its outputmode), the name is what comes out.
    m.box("comment", 1080, 40, 300, 20, "presets: type a name, press Return")

    def name_field(x: float, y: float, w: float) -> str:
        field = m.box("textedit", x, y, w, 22, None, lines=1, wordwrap=0)
        strip = m.obj(x, y + 30, "route text")
        m.connect(field, 0, strip, 0)
        return strip

    name = name_field(1080, 65, 200)
    for i, action in enumerate(("save", "load")):
        x = 1080 + 90 * i
        b = m.box("button", x, 130, 24, 24)
        m.box("comment", x + 26, 132, 50, 20, action)
        held = m.obj(x, 165, "zl reg", w=60)
        m.connect(b, 0, held, 0)
        m.connect(name, 0, held, 1)
        m.connect(name, 1, held, 1)
        p = m.obj(x, 195, f"prepend /preset/{action}", w=85)
        m.connect(held, 0, p, 0)
        send(p)
    listing = m.box("message", 1260, 130, 80, 22, "/preset/list")
    send(listing)
    m.box("comment", 1080, 240, 300, 20, "morph: a, b, then move the slider (0 = a, 1 = b)")
    a = name_field(1080, 265, 120)
    b = name_field(1220, 265, 120)
    morph = m.box("slider", 1080, 330, 260, 20, None, size=1.0, min=0.0, floatoutput=1, orientation=1,
                  varname="morph")
    t_bf = m.obj(1080, 360, "t b f")
    held_a = m.obj(1080, 390, "zl reg", w=60)
    pack = m.obj(1080, 420, "pack s s 0.")
    m.connect(morph, 0, t_bf, 0)
    m.connect(t_bf, 1, pack, 2)
    m.connect(t_bf, 0, held_a, 0)
    m.connect(a, 0, held_a, 1)
    m.connect(a, 1, held_a, 1)
    m.connect(b, 0, pack, 1)
    m.connect(b, 1, pack, 1)
    m.connect(held_a, 0, pack, 0)
    morph_p = m.obj(1080, 450, "prepend /preset/morph", w=150)
    m.connect(pack, 0, morph_p, 0)
    send(morph_p)

    # Expression: bend (the slider spans +-1200 cents, the number box the whole +-4800; the
    # slider shows 0 from the start), pressure 0..1, sustain, mode, glide; per-note examples.
    m.box("comment", 1080, 495, 300, 20, "expression: bend (cents), pressure, sustain, mode, glide")
    bend = m.box("slider", 1080, 520, 200, 20, None, size=2.0 * BEND_SLIDER_CENTS, min=-float(BEND_SLIDER_CENTS),
                 floatoutput=1, orientation=1, varname="bend")
    bend_cents = m.box("flonum", 1290, 520, 60, 22, None, minimum=-float(BEND_CENTS_MAX), maximum=float(BEND_CENTS_MAX))
    centred = m.box("message", 1360, 520, 45, 22, "set 0")
    m.connect(start, 1, centred, 0)
    m.connect(centred, 0, bend, 0)
    bend_p = m.obj(1080, 550, "prepend /bend")
    m.connect(bend, 0, bend_p, 0)
    m.connect(bend_cents, 0, bend_p, 0)
    send(bend_p)
    bend_shown = m.obj(1290, 550, "prepend set")
    m.connect(bend, 0, bend_shown, 0)
    m.connect(bend_shown, 0, bend_cents, 0)
    m.box("comment", 1080, 585, 200, 20, "pressure 0..1")
    pressure = m.box("slider", 1080, 605, 200, 20, None, size=1.0, min=0.0, floatoutput=1, orientation=1,
                     varname="pressure")
    pressure_p = m.obj(1080, 635, "prepend /pressure")
    m.connect(pressure, 0, pressure_p, 0)
    send(pressure_p)
    m.box("comment", 1080, 670, 260, 20, "sustain    mode        glide ms")
    sustain = m.box("toggle", 1080, 692, 20, 20)
    sustain_p = m.obj(1080, 722, "prepend /sustain")
    m.connect(sustain, 0, sustain_p, 0)
    send(sustain_p)
    mode = m.box("umenu", 1155, 692, 70, 22, None, items=["poly", ",", "mono"])
    mode_p = m.obj(1155, 752, "prepend /mode")
    m.connect(mode, 1, mode_p, 0)
    send(mode_p)
    glide = m.box("number", 1240, 692, 60, 22, None, minimum=0, maximum=int(GLIDE_MS_MAX))
    glide_p = m.obj(1240, 782, "prepend /glide")
    m.connect(glide, 0, glide_p, 0)
    send(glide_p)
    m.box("comment", 1080, 815, 320, 20, "per note (MPE), key 60: click to send, edit the numbers")
    for x, text in ((1080, "/note/bend 60 -50"), (1240, "/note/pressure 60 0.8")):
        send(m.box("message", x, 840, 150, 22, text))

    # What the server says.
    m.box("comment", 10, 640, 200, 20, "server says")
    receive = m.obj(10, 665, f"udpreceive {REPLY_PORT}")
    printer = m.obj(200, 695, "print sg-reply")
    m.connect(receive, 0, printer, 0)
    set_last = m.obj(10, 695, "prepend set")
    m.connect(receive, 0, set_last, 0)
    last = m.box("message", 10, 725, 400, 22, "")
    m.connect(set_last, 0, last, 0)
    route = m.obj(10, 755, "route /ready /error /status /prerender/progress /prerender/done /preset/loaded "
                           "/preset/saved /preset/list")
    m.connect(receive, 0, route, 0)
    for outlet, label in enumerate(("ready", "error", "status", "progress", "done", "loaded", "saved", "presets")):
        y = 785 + 30 * outlet
        m.box("comment", 10, y, 60, 20, label)
        setter = m.obj(80, y, "prepend set")
        shown = m.box("message", 170, y, 400, 22, "")
        m.connect(route, outlet, setter, 0)
        m.connect(setter, 0, shown, 0)
    return m.render()


# ------------------------------------------------------------------------------------------


def outputs() -> dict[str, str]:
    return {
        "sound_generator.pd": pd_main(),
        "sg_send.pd": pd_sg_send(),
        "sg_latent.pd": pd_sg_latent(),
        "sg_quality.pd": pd_sg_quality(),
        "sound_generator.maxpat": max_patch(),
    }


def main(argv: list[str]) -> int:
    stale = []
    for name, text in outputs().items():
        path = HERE / name
        if "--check" in argv:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print("out of date (run python patches/build_patches.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
