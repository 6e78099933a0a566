"""More crafted streams through the console's real xterm.js (support/xterm_render): a
snapshot then live output must show what the bytes themselves show — the cases of
tests/integration/agents/test_screen_true_xterm.py, for what the screen model's own
changes touch. Skipped without Node.js (fails under SANDBOX_TEST_REQUIRE_ALL=1).
"""

from __future__ import annotations

import pytest

from openova_sandbox.terminal.screen import ScreenModel
from support import xterm_render
from support.xterm_render import differences, render

COLS, ROWS = 40, 10

CASES = {
    # the screen's blank rows at the bottom come back by scrolling; xterm.js keeps a
    # saved cursor's row in its buffer, so DECSC/DECRC around that scroll left the
    # cursor one row up per line that went into the scrollback
    "output into the scrollback, the cursor on the blank row after it": (
        b"".join(b"l%d\r\n" % i for i in range(30)),
        b"$ ",
    ),
    "a cleared screen below scrollback": (
        b"".join(b"l%d\r\n" % i for i in range(15)) + b"\x1b[H\x1b[2Jtop",
        b"!",
    ),
    "a pending wrap on a screen over scrollback": (
        b"".join(b"l%d\r\n" % i for i in range(15)) + b"\x1b[5;1H" + b"A" * COLS,
        b"Z",
    ),
    # the formatter writes the cursor's screen row after the region, origin mode on
    "origin mode, the cursor below the region's top": (b"\x1b[3;6r\x1b[?6h\x1b[2;4H", b"q"),
    "origin mode over scrollback": (
        b"".join(b"l%d\r\n" % i for i in range(12)) + b"\x1b[2;8r\x1b[?6h\x1b[3;3H",
        b"q",
    ),
    "a coloured pen on the blank row after output": (
        b"".join(b"l%d\r\n" % i for i in range(12)) + b"\x1b[44m",
        b"x",
    ),
    "the alternate screen over output in the scrollback": (
        b"".join(b"l%d\r\n" % i for i in range(12)) + b"\x1b[?1049h\x1b[Hhi\r\n",
        b"\x1b[?1049lz",
    ),
    "a gap in an inverse run": (b"\x1b[7mAB\x1b[1;6HC\x1b[0m", b""),
    "a gap in an underlined run, the pen open": (b"\x1b[4mAB\x1b[1;6HC", b"D"),
    "underline styles and colours": (
        b"\x1b[4:3;58;2;10;20;30mcurly\x1b[4:5mdash\x1b[24m \x1b[21mdbl\x1b[0m",
        b"",
    ),
    "tab stops": (b"\x1b[3g\x1b[5G\x1bH\x1b[12G\x1bH\r", b"\ta\tb"),
    "the line drawing set in G1, shifted in": (b"\x1b)0\x0elqk\x0f ok", b"\x0ex"),
}

KNOWN = {
    "rows of background colour only (BCE)": (
        (b"".join(b"l%d\r\n" % i for i in range(12)) + b"\x1b[44m\r\n\r\n", b"x"),
        "libghostty's formatter skips rows without text as blank, colour and all",
    ),
    "a hyperlink (OSC 8)": (
        (b"see \x1b]8;;https://example.com/\x1b\\here\x1b]8;;\x1b\\ ok", b""),
        "libghostty 0.1.3's VT formatter writes no OSC 8 for linked cells",
    ),
    "a saved cursor (DECSC)": (
        (b"\x1b[3;7H\x1b7\x1b[1;1Hmoved", b"\x1b8here"),
        "libghostty's formatter does not carry the saved cursor",
    ),
}


@pytest.fixture(scope="module", autouse=True)
def renderer() -> None:
    xterm_render.available()


def _differences(before: bytes, after: bytes) -> list[str]:
    model = ScreenModel(ROWS, COLS, background=False)
    try:
        model.feed(before)
        snapshot = model.snapshot()
    finally:
        model.close()
    return differences(render(COLS, ROWS, [before + after]), render(COLS, ROWS, [snapshot, after]))


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_snapshot_then_live_output_shows_what_xterm_shows(case: str) -> None:
    diff = _differences(*CASES[case])
    assert not diff, f"{case}:\n" + "\n".join(diff)


@pytest.mark.parametrize("case", sorted(KNOWN))
def test_known_differences_are_still_there(case: str) -> None:
    """Listed in docs/terminal.md ("The screen model"); one that went away fails here."""
    streams, why = KNOWN[case]
    assert _differences(*streams), why
