"""A snapshot carries the configured lines of scrollback once that much output went by.

libghostty drops scrollback a page (hundreds of rows) at a time, so the model must keep
room for a page more than the lines asked; checked across widths (a page holds fewer
rows the wider the terminal) and all through the pages' rotation.
"""

from __future__ import annotations

import pytest
from pyghostty import Terminal
from pyghostty._ffi import ffi, lib

from openova_sandbox.terminal.screen import ScreenModel


def _roomy(cols: int, rows: int) -> Terminal:
    """A terminal whose scrollback holds everything (the byte limit is libghostty's)."""
    term = Terminal(cols, rows, scrollback=100_000)
    room = ffi.new("size_t*", 1 << 30)
    assert (
        lib.ghostty_terminal_set(term._t[0], lib.GHOSTTY_TERMINAL_OPT_SCROLLBACK_MAX_BYTES, room)
        == 0
    )
    return term


@pytest.mark.parametrize(
    ("rows", "cols", "keep"),
    [(24, 80, 1000), (40, 120, 1000), (50, 200, 1000), (20, 40, 300), (30, 300, 2000)],
)
def test_a_snapshot_carries_the_configured_scrollback(rows: int, cols: int, keep: int) -> None:
    model = ScreenModel(rows, cols, scrollback_lines=keep, background=False)
    try:
        total = 0
        page_rows = 48_000 // cols  # a page's rows, and more
        while total < keep + rows + 4 * page_rows:  # (the scrollback rotates pages)
            model.feed(b"".join(b"line %d\r\n" % (total + i) for i in range(97)))
            total += 97
            if total <= keep + rows:
                continue
            restored = _roomy(cols, rows)
            restored.feed(model.snapshot())
            lines = restored.contents().splitlines()
            # the lines asked, then the screen (its last row is the cursor's, blank)
            first = total - keep - (rows - 1)
            assert lines == [f"line {i}" for i in range(first, total)], total
    finally:
        model.close()


def test_no_scrollback_when_none_is_asked() -> None:
    model = ScreenModel(5, 20, scrollback_lines=0, background=False)
    model.feed(b"".join(b"n%d\r\n" % i for i in range(100)))
    restored = _roomy(20, 5)
    restored.feed(model.snapshot())
    assert restored.contents().splitlines() == [f"n{i}" for i in range(96, 100)]
