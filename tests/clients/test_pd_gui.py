"""The Pd patch as a performer first sees it: patches/sound_generator.pd opened in the real Pd GUI
on a virtual X display (Xvfb), photographed, and checked against what Tk actually drew.

- The window is as large as the patch asks (`#N canvas ...`), Pd shows no scrollbars, and every
  item drawn lies inside it; the builder's layout model (Pd's font metrics) is never smaller than
  what Pd draws, so its own checks (tests/clients/test_patches.py) hold on screen too.
- No label or box is cut: none sticks out of its panel or lies under a panel drawn after it (the
  issue's "zer" and "dic"), and no patch cord runs across a panel.
- The screenshot is not blank, and docs/pd_patch.png (the README's picture) has its size.
- The "server" panel shows replies: [pd replies] fills the displays through receive names.

Needs Xvfb and the Pd GUI (Debian: xvfb, puredata-gui; scripts/setup.sh installs both). About 2 s.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from pd_runner import MAIN_PATCH, PATCHES, pd_errors

pytestmark = pytest.mark.puredata

REPO = PATCHES.parent
# Replies as [pd network]'s [oscparse] hands them to [r sg-reply], in the order they arrive.
REPLIES = (
    "sg-reply list error /note pitch",
    "sg-reply list ready 64 100",
    "sg-reply list prerender progress 5 10",
    "sg-reply list preset loaded warm-pad",
    "sg-reply list preset list bell warm-pad",
    "sg-reply list status 1 2 0.5 3 4 0 0 -6 0",
)


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"patches_{name}", PATCHES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


screenshot = load("screenshot")
builder = load("build_patches")


@pytest.fixture(scope="module")
def window():
    missing = screenshot.require_tools()
    if missing and not shutil.which("apt-get"):
        pytest.skip(f"{missing}, and this machine has no apt-get to install it with")
    assert missing is None, f"{missing}: run scripts/setup.sh"
    return screenshot.photograph(MAIN_PATCH, sends=REPLIES)


def panels(window) -> list:
    """The panels ([cnv]) as drawn: filled rectangles tagged ...RECT."""
    return [i for i in window.items if i.type == "rectangle" and i.tags and i.tags[-1].endswith("RECT") and i.fill]


def inside(outer, inner, slack: int = 1) -> bool:
    return (inner[0] >= outer[0] - slack and inner[1] >= outer[1] - slack
            and inner[2] <= outer[2] + slack and inner[3] <= outer[3] + slack)


def overlap(a, b, slack: int = 1) -> bool:
    return min(a[2], b[2]) - max(a[0], b[0]) > slack and min(a[3], b[3]) - max(a[1], b[1]) > slack


def test_the_patch_loads_in_the_gui_without_errors(window) -> None:
    assert pd_errors(window.pd_output) == [], window.pd_output


def test_the_window_holds_the_whole_patch(window) -> None:
    _, _, width, height = builder.MAIN_WINDOW
    assert window.canvas[2:] == (width, height), "the canvas is not the size the patch asks for"
    assert window.scrollbars == (False, False), "Pd shows scrollbars: part of the patch is off-window"
    drawn = [i.bbox for i in window.items if i.bbox]
    union = (min(b[0] for b in drawn), min(b[1] for b in drawn), max(b[2] for b in drawn), max(b[3] for b in drawn))
    assert inside((0, 0, width, height), union), f"content {union} is larger than the {width}x{height} window"
    # The model the builder lays the panel out with, against the canvas Pd made.
    model = builder.pd_panel()
    assert builder.layout_problems(model) == []
    assert all(inside((0, 0, width, height), s.rect, slack=0) for s in model.shapes)


def test_the_layout_model_is_never_smaller_than_what_pd_draws(window) -> None:
    """Each label and box text the GUI drew lies within the model's estimate of it (3 px of
    slack for Tk's outline), so a layout that passes the model's checks passes on screen."""
    model = [s for s in builder.pd_panel().shapes if s.kind in ("label", "box")]
    texts = [i for i in window.items if i.type == "text" and i.text.strip()]
    matched = 0
    for item in texts:
        candidates = [s for s in model if s.what == item.text or " ".join(s.what.split()) == item.text]
        if not candidates:
            continue  # numbers in boxes, texts inside the abstractions
        best = min(candidates, key=lambda s: abs(s.rect[0] - item.bbox[0]) + abs(s.rect[1] - item.bbox[1]))
        assert inside(best.rect, item.bbox, slack=3), f"{item.text!r} is drawn at {item.bbox}, modelled at {best.rect}"
        matched += 1
    assert matched >= 40, f"only {matched} of the GUI's texts found in the model"


def test_no_label_is_cut_and_no_cord_crosses_a_panel(window) -> None:
    boards = panels(window)
    assert len(boards) >= 8, f"only {len(boards)} panels drawn"
    stacking = {item.ident: rank for rank, item in enumerate(window.items)}
    _, _, width, height = builder.MAIN_WINDOW
    board_ids = {b.ident for b in boards}
    for item in window.items:
        if not item.bbox or item.ident in board_ids or "cord" in item.tags:
            continue
        what = f"{item.type} {item.text or item.tags[-1]!r} at {item.bbox}"
        assert inside((0, 0, width, height), item.bbox), f"{what} is outside the window"
        for board in boards:
            if not overlap(board.bbox, item.bbox):
                continue
            assert inside(board.bbox, item.bbox), f"{what} sticks out of the panel at {board.bbox}"
            if item.type == "text":
                assert stacking[board.ident] < stacking[item.ident], f"{what} is under the panel at {board.bbox}"
    for cord in (i for i in window.items if "cord" in i.tags):
        for board in boards:
            if overlap(board.bbox, cord.bbox, slack=0):
                assert inside(board.bbox, cord.bbox), f"a patch cord {cord.coords} crosses the panel at {board.bbox}"


def test_the_labels_named_in_the_issue_are_whole(window) -> None:
    labels = {i.text: i.bbox for i in window.items if "label" in i.tags}
    for text in ("zero", "dice", "clear", "tempo_sync", "nonlinear_env", "bend_cents", "pressure", "sustain",
                 "mode", "glide_ms"):
        assert text in labels, f"no label {text!r}"
    qualities = next(b.bbox for b in panels(window) if inside(b.bbox, labels["tempo_sync"]))
    assert labels["tempo_sync"][2] < qualities[2] - 2, "the qualities column reaches the panel's edge"


def test_the_screenshot_is_not_blank_and_the_docs_picture_is_current(window, tmp_path: Path) -> None:
    image = window.image()
    _, _, width, height = builder.MAIN_WINDOW
    assert image.shape == (height + window.menubar_height(), width, 3)
    rgb = (image[..., 0].astype(np.uint32) << 16) | (image[..., 1].astype(np.uint32) << 8) | image[..., 2]
    colours, counts = np.unique(rgb, return_counts=True)
    assert len(colours) > 20, "the window is (nearly) one colour"
    assert counts.max() < 0.8 * image.shape[0] * image.shape[1], "one colour covers most of the window"
    panel_grey = np.all(image == (0xE8, 0xE8, 0xE8), axis=-1).mean()
    assert panel_grey > 0.3, f"the panels cover only {panel_grey:.0%} of the window"
    screenshot.save_png(image, tmp_path / "pd_patch.png")
    docs = screenshot.DOCS_PNG
    assert docs.exists(), "docs/pd_patch.png is missing: run python patches/screenshot.py"
    from PIL import Image

    with Image.open(docs) as shipped:
        assert shipped.size == (image.shape[1], image.shape[0]), \
            "docs/pd_patch.png is not the current window's size: run python patches/screenshot.py"


def test_the_server_panel_shows_the_replies(window) -> None:
    shown = [i.text for i in window.items if i.type == "text" and "atom" in i.tags]
    for text in ("/note pitch", "64 100", "loaded warm-pad", "bell warm-pad", "status 1 2 0.5 3 4 0 0 -6 0"):
        assert text in shown, f"{text!r} is not shown; the boxes show {shown}"
    # The status figures, one box each, and the pre-render counts.
    for figure in ("1", "2", "0.5", "3", "4", "-6", "5", "10"):
        assert figure in shown, f"{figure!r} is not shown"
