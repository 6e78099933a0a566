"""The server's screen snapshot, written into the console's xterm.js, shows what xterm.js
shows for the bytes themselves — the same property as test_screen_true.py, on small
crafted streams instead of a real agent, so a difference points at one feature.

Each case is ``(before, after)``: the screen model is fed ``before`` and snapshotted; a
fresh xterm.js (support/xterm_render) gets the snapshot then ``after`` (live output
that follows, relying on the state the snapshot set up: pen, modes, a half-read escape
sequence, a pending wrap). It must equal an xterm.js that got ``before + after``: every
cell, the cursor, the buffer, the modes, the title.
"""

from __future__ import annotations

import pytest

from openova_sandbox.terminal.screen import ScreenModel
from support import xterm_render
from support.xterm_render import differences, render

COLS, ROWS = 40, 10

CASES = {
    # cells never written between two styled runs stay default (not the first run's pen)
    "unwritten cells between styled runs": (b"\x1b[41mAB\x1b[0m\x1b[1;6HC", b""),
    "a gap after a coloured run, then text": (
        b"\x1b[38;2;128;128;128m\x1b[48;2;10;10;10mdim\x1b[0m\x1b[1;6H\x1b[1mX\x1b[0m",
        b"",
    ),
    "the pen carries into live output": (b"\x1b[1;3;4;31;42mAB", b" C\x1b[0m D"),
    "erase with a background colour": (b"row\r\n\x1b[44m\x1b[K\x1b[0mnext", b"\x1b[45m\x1b[2K"),
    "alternate screen over a primary one, with input modes": (
        b"primary text\r\n\x1b[?1049h\x1b[?2004h\x1b[?1000h\x1b[?1006h\x1b[?1004h\x1b[?1h\x1b=",
        b"\x1b[Halt screen",
    ),
    "mouse any-motion with SGR encoding, synchronized output off": (
        b"\x1b[?1003h\x1b[?1006h\x1b[?2026h\x1b[?2026l",
        b"x",
    ),
    "wide characters": ("漢字 ok 漢 ok".encode(), "→ é".encode()),
    "a scrolling region with scrolled content": (
        b"\x1b[2;5r" + b"".join(b"\x1b[5;1Hline %d\n" % i for i in range(8)),
        b"\x1b[5;1Hafter\n",
    ),
    "a hidden cursor with a shape": (b"\x1b[?25l\x1b[4 qhidden", b"\x1b[?25h"),
    "a title": (b"\x1b]2;my title\x07text", b""),
    "live output completes a half-read escape sequence": (b"X\x1b[3", b"1mRED\x1b[0m"),
    "a pending wrap at the right margin": (b"A" * COLS, b"Z"),
    "origin mode in a region": (b"\x1b[3;6r\x1b[?6h\x1b[1;1Hin region", b"\x1b[2;1Hmore"),
}


@pytest.fixture(scope="module", autouse=True)
def renderer() -> None:
    xterm_render.available()


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_snapshot_rebuilds_what_xterm_shows(case: str) -> None:
    before, after = CASES[case]
    model = ScreenModel(ROWS, COLS)
    try:
        model.feed(before)
        snapshot = model.snapshot()
    finally:
        model.close()
    want = render(COLS, ROWS, [before + after])
    got = render(COLS, ROWS, [snapshot, after])
    diff = differences(want, got)
    assert not diff, f"{case}: snapshot {snapshot!r}\n" + "\n".join(diff)


def test_an_emoji_takes_the_same_cells() -> None:
    """The console counts Unicode 11 widths (an emoji is two cells), as libghostty and the
    agents' own width tables do: with xterm.js's default Unicode 6 the snapshot's cursor
    would land a column right of the live one after every emoji."""
    before, after = "ok 🙂 ok".encode(), b"!"
    model = ScreenModel(ROWS, COLS)
    try:
        model.feed(before)
        snapshot = model.snapshot()
    finally:
        model.close()
    assert not differences(
        render(COLS, ROWS, [before + after]), render(COLS, ROWS, [snapshot, after])
    )
