"""Opens a patch in the real Pd GUI on a virtual X display (Xvfb) and photographs it.

    python patches/screenshot.py                      # writes docs/pd_patch.png
    python patches/screenshot.py PATCH.pd OUT.png

Needs `Xvfb` (Debian: xvfb) and the Pd GUI (Debian: puredata-gui); no window manager and no
X client tools. Xvfb keeps its screen as an XWD file (`-fbdir`), which is read here; a small Pd
GUI plugin, written to a temporary folder on Pd's search path, reports what Tk drew once the
patch has loaded: the window's geometry, whether Pd showed scrollbars, and every canvas item
(type, tags, bounding box, text). tests/clients/test_pd_gui.py checks that report.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
MAIN_PATCH = HERE / "sound_generator.pd"
DOCS_PNG = HERE.parent / "docs" / "pd_patch.png"
SCREEN = (1600, 1200)  # larger than any window the patches ask for
# Once the window has loaded, Pd may still be sending drawing commands (values that `-send`
# messages set, for one); the report waits this long, a wide margin on this machine's few ms.
SETTLE_MS = 800

# The plugin: SETTLE_MS after the patch named in SG_PD_WATCH has loaded, hide the Pd main window
# (without a window manager every window sits where it asks to, and that one would overlap the
# patch), let Tk draw, make a round trip to the X server (so the framebuffer holds every drawing
# request made so far), then write the report to SG_PD_REPORT (through a rename, so that a reader
# never sees half a file).
PLUGIN_TCL = r"""
namespace eval ::sg_report {}
proc ::sg_report::write {mytoplevel} {
    catch {wm withdraw .pdwindow}
    update
    set c [tkcanvas_name $mytoplevel]
    winfo pointerxy $mytoplevel
    set path $::env(SG_PD_REPORT)
    set f [open $path.part w]
    fconfigure $f -encoding utf-8
    puts $f [join [list window [winfo rootx $mytoplevel] [winfo rooty $mytoplevel] \
        [winfo width $mytoplevel] [winfo height $mytoplevel]] \t]
    puts $f [join [list canvas [winfo rootx $c] [winfo rooty $c] [winfo width $c] [winfo height $c]] \t]
    puts $f [join [list scrollbars [winfo ismapped $mytoplevel.xscroll] [winfo ismapped $mytoplevel.yscroll]] \t]
    foreach item [$c find all] {
        set type [$c type $item]
        set text ""
        if {$type eq "text"} { set text [string map [list \n " " \t " "] [$c itemcget $item -text]] }
        set fill ""
        catch {set fill [$c itemcget $item -fill]}
        puts $f [join [list item $item $type [join [$c bbox $item] ,] [join [$c gettags $item] ,] \
            $fill [join [$c coords $item] ,] $text] \t]
    }
    close $f
    file rename -force $path.part $path
}
# The patch may have loaded before this plugin did (pd opens it while the GUI starts): poll.
proc ::sg_report::poll {} {
    foreach w [winfo children .] {
        if {[winfo class $w] eq "PatchWindow" && [info exists ::loaded($w)] && $::loaded($w)
                && [string first $::env(SG_PD_WATCH) [wm title $w]] >= 0} {
            after $::env(SG_PD_SETTLE_MS) [list ::sg_report::write $w]
            return
        }
    }
    after 50 ::sg_report::poll
}
::sg_report::poll
"""


@dataclass
class CanvasItem:
    """One Tk canvas item as Pd drew it (coordinates in canvas pixels)."""

    ident: int
    type: str
    bbox: tuple[int, int, int, int] | None
    tags: tuple[str, ...]
    fill: str
    coords: tuple[float, ...]
    text: str


@dataclass
class PdWindow:
    """What the Pd GUI reported about the patch window, and the screen as it was then."""

    window: tuple[int, int, int, int]  # root x, y, width, height of the window (below its menu bar)
    canvas: tuple[int, int, int, int]  # root x, y, width, height of the Tk canvas inside it
    scrollbars: tuple[bool, bool]  # horizontal, vertical: Pd shows them when content is off-window
    items: list[CanvasItem] = field(default_factory=list)
    screen: np.ndarray | None = None  # [height, width, 3] uint8, the whole X screen
    pd_output: str = ""  # what Pd printed (-stderr)

    def image(self) -> np.ndarray:
        """The patch window as on screen, from the menu bar down ([height, width, 3] uint8)."""
        x, y, w, h = self.window
        menu_top = y - self.menubar_height()
        return self.screen[menu_top:y + h, x:x + w]

    def menubar_height(self) -> int:
        # The menu bar is drawn above the window's interior: the rows of uniform menu colour
        # directly above it (the black screen background starts above the menu bar).
        x, y, w, _ = self.window
        row = y - 1
        while row > 0 and self.screen[row, x:x + w].any():
            row -= 1
        return y - 1 - row


def read_xwd(path: Path) -> np.ndarray:
    """The pixels of an XWD file of a 24/32-bit TrueColor screen, as [height, width, 3] uint8.

    The header is 25 big-endian 32-bit fields (X11's XWDFileHeader), then the window name up to
    header_size, then ncolors 12-byte colour entries, then the rows (bytes_per_line each)."""
    data = path.read_bytes()
    header = struct.unpack(">25I", data[:100])
    header_size, version, width, height, byte_order = header[0], header[1], header[4], header[5], header[7]
    bits_per_pixel, bytes_per_line, masks, ncolors = header[11], header[12], header[14:17], header[19]
    assert version == 7 and bits_per_pixel == 32, f"unexpected XWD: version {version}, {bits_per_pixel} bits/pixel"
    assert masks == (0xFF0000, 0x00FF00, 0x0000FF), "not a 24-bit RGB screen"
    offset = header_size + 12 * ncolors
    words = np.frombuffer(data, dtype="<u4" if byte_order == 0 else ">u4", count=bytes_per_line * height // 4,
                          offset=offset).reshape(height, bytes_per_line // 4)[:, :width]
    return np.stack([(words >> 16) & 0xFF, (words >> 8) & 0xFF, words & 0xFF], axis=-1).astype(np.uint8)


def parse_report(text: str) -> PdWindow:
    fields: dict[str, list[str]] = {}
    items = []
    for line in text.splitlines():
        kind, *rest = line.split("\t")
        if kind == "item":
            ident, type_, bbox, tags, fill, coords, label = rest
            items.append(CanvasItem(
                int(ident), type_, tuple(int(v) for v in bbox.split(",")) if bbox else None,
                tuple(tags.split(",")) if tags else (), fill,
                tuple(float(v) for v in coords.split(",")) if coords else (), label))
        else:
            fields[kind] = rest
    window = tuple(int(v) for v in fields["window"])
    canvas = tuple(int(v) for v in fields["canvas"])
    h, v = (s == "1" for s in fields["scrollbars"])
    return PdWindow(window, canvas, (h, v), items)


def require_tools() -> str | None:
    """Why the GUI cannot be photographed here, or None if it can."""
    if not shutil.which("Xvfb"):
        return "Xvfb is not installed (Debian: xvfb)"
    if not shutil.which("pd"):
        return "Pure Data is not installed (Debian: puredata-core)"
    gui = [Path(p) / "tcl" / "pd-gui.tcl" for p in ("/usr/lib/puredata", "/usr/local/lib/pd", "/usr/lib/pd")]
    if not any(p.exists() for p in gui):
        return "the Pd GUI is not installed (Debian: puredata-gui)"
    return None


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Xvfb:
    """A virtual X server on a display number it picks itself (-displayfd), its screen in a file."""

    def __init__(self, size: tuple[int, int], workdir: Path) -> None:
        self.fbdir = workdir / "fb"
        self.fbdir.mkdir()
        read_fd, write_fd = os.pipe()
        self.proc = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", f"{size[0]}x{size[1]}x24",
             "-fbdir", str(self.fbdir), "-nolisten", "tcp", "-br", "-noreset"],
            pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        os.close(write_fd)
        with os.fdopen(read_fd) as pipe:
            number = pipe.readline().strip()
        if not number:
            self.proc.kill()
            raise RuntimeError(f"Xvfb did not start: {self.proc.stderr.read()}")
        self.display = f":{number}"

    def screen(self) -> np.ndarray:
        return read_xwd(self.fbdir / "Xvfb_screen0")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def photograph(patch: Path = MAIN_PATCH, sends: tuple[str, ...] = (), timeout: float = 30.0) -> PdWindow:
    """Open `patch` in the Pd GUI under Xvfb; return what the GUI reported, with the screen.

    The patch talks to unused UDP ports (its server and reply port are set with -send), and Pd's
    GUI keeps its preferences and recent files in a temporary HOME. `sends` are more `pd -send`
    messages (they reach the patch as it loads)."""
    with tempfile.TemporaryDirectory(prefix="sg-pd-gui-") as tmp:
        work = Path(tmp)
        plugins = work / "plugins"
        plugins.mkdir()
        (plugins / "sg_report-plugin.tcl").write_text(PLUGIN_TCL)
        report = work / "report.txt"
        xvfb = Xvfb(SCREEN, work)
        env = dict(os.environ, DISPLAY=xvfb.display, HOME=str(work), XDG_CONFIG_HOME=str(work / "config"),
                   SG_PD_REPORT=str(report), SG_PD_WATCH=patch.name, SG_PD_SETTLE_MS=str(SETTLE_MS))
        pd = subprocess.Popen(
            ["pd", "-nosound", "-nomidi", "-stderr", "-path", str(plugins),
             "-send", f"sg-reply-port {free_udp_port()}", "-send", f"sg-server 127.0.0.1 {free_udp_port()}",
             *[arg for message in sends for arg in ("-send", message)], "-open", str(patch)],
            cwd=patch.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        result = None
        try:
            deadline = time.monotonic() + timeout
            while not report.exists() and pd.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if report.exists():
                result = parse_report(report.read_text(encoding="utf-8"))
                result.screen = xvfb.screen()
        finally:
            output = stop(pd)
            xvfb.close()
    if result is None:
        raise RuntimeError(f"the Pd GUI never reported the patch window; Pd said:\n{output}")
    result.pd_output = output
    return result


def stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.terminate()
    out, _ = proc.communicate(timeout=10)
    return out


def save_png(image: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, optimize=True)


def main(argv: list[str]) -> int:
    patch = Path(argv[0]) if argv else MAIN_PATCH
    out = Path(argv[1]) if len(argv) > 1 else DOCS_PNG
    missing = require_tools()
    if missing:
        print(f"screenshot: {missing}", file=sys.stderr)
        return 1
    save_png(photograph(patch.resolve()).image(), out)
    print(f"screenshot: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
