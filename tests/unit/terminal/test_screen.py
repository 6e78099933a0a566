"""The server-side screen model: a snapshot rebuilds the same screen on a fresh terminal.

Round trip: bytes go into model 1, its snapshot into a fresh ``pyghostty`` terminal, and
the two are compared by text, scrollback, cursor, modes, styles and title. The console's
xterm.js renders the same snapshots in tests/integration/agents/test_screen_true*.py.
"""

from __future__ import annotations

import re
import threading

import pytest
from pyghostty import Terminal
from pyghostty._ffi import ffi, lib

from openova_sandbox.terminal.screen import RESET, ScreenModel

ROWS, COLS = 8, 40

# modes an input-affecting viewer must get back: app cursor, insert(ansi 4 not here),
# autowrap off, mouse tracking (any-event) + SGR encoding, focus, bracketed paste,
# synchronized output, alternate scroll
MODES = (1, 7, 25, 1003, 1004, 1006, 2004, 2026)
SETUP = (
    b"\x1b[?1h\x1b="  # application cursor keys and keypad
    b"\x1b[?1003h\x1b[?1006h\x1b[?1004h\x1b[?2004h\x1b[?2026h"
    b"\x1b[>5u"  # kitty keyboard flags
    b"\x1b[?25l"  # cursor hidden
    b"\x1b[3 q"  # blinking underline cursor
    b"\x1b]2;agent: thinking\x07"
)


def _fresh(data: bytes, *, rows: int = ROWS, cols: int = COLS) -> Terminal:
    term = Terminal(cols, rows, scrollback=10_000)
    term.feed(data)
    return term


def _model(data: bytes = b"", **options: int) -> ScreenModel:
    model = ScreenModel(ROWS, COLS, background=False, **options)
    model.feed(data)
    return model


def _get(term: Terminal, key: int, ctype: str) -> object:
    out = ffi.new(ctype + "*")
    assert lib.ghostty_terminal_get(term._t[0], key, out) == 0
    return out[0]


def _state(term: Terminal) -> dict[str, object]:
    cols, rows = term.size
    return {
        "text": term.text(),
        "contents": term.contents(),
        "cursor": term.cursor,
        "modes": {m: term.mode(m) for m in (*MODES, 47, 1047, 1049)},
        "keypad": term.mode(66),
        "kitty": _get(term, lib.GHOSTTY_TERMINAL_DATA_KITTY_KEYBOARD_FLAGS, "uint8_t"),
        "visible": _get(term, lib.GHOSTTY_TERMINAL_DATA_CURSOR_VISIBLE, "bool"),
        "styles": [term.style(x, y) for y in range(rows) for x in range(cols)],
    }


def _roundtrip(data: bytes) -> tuple[Terminal, Terminal, bytes]:
    live = _fresh(data)
    snap = _model(data).snapshot()
    return live, _fresh(snap), snap


def test_snapshot_starts_with_a_full_reset() -> None:
    assert _model(b"hello").snapshot().startswith(RESET)


def test_text_styles_cursor_and_input_modes_round_trip() -> None:
    data = SETUP + (
        b"plain \x1b[1mbold\x1b[0m \x1b[3;4mitalic-underline\x1b[0m\r\n"
        b"\x1b[38;2;10;20;30mrgb\x1b[48;5;202mon-palette\x1b[0m\r\n"
        b"\x1b[7minverse\x1b[27m \x1b[9mstrike\x1b[0m\x1b[5;7H\x1b[1;32m"
    )
    live, restored, _ = _roundtrip(data)
    assert _state(restored) == _state(live)
    # the pen carries on: the next character is written bold green in both
    live.feed(b"X")
    restored.feed(b"X")
    assert restored.style(6, 4) == live.style(6, 4)
    assert restored.style(6, 4)["bold"]


def test_alternate_screen_with_the_primary_and_its_scrollback_behind_it() -> None:
    primary = b"".join(b"shell line %d\r\n" % i for i in range(20)) + b"$ opencode"
    data = primary + b"\x1b[?1049h\x1b[?2004h\x1b[H\x1b[44m box \x1b[0m\x1b[4;4Hcursor"
    live, restored, _ = _roundtrip(data)
    assert restored.mode(1049) and restored.mode(2004)
    assert _state(restored) == _state(live)
    # leaving the alternate screen shows the primary screen, cursor where it was saved
    for term in (live, restored):
        term.feed(b"\x1b[?1049l!")
    assert restored.text() == live.text()
    assert restored.text().endswith("$ opencode!")
    assert restored.cursor == live.cursor
    assert restored.contents() == live.contents()


def test_the_model_is_unchanged_by_a_snapshot_under_the_alternate_screen() -> None:
    data = b"primary\x1b[?1049h\x1b[3;3H\x1b[1malt"
    model = _model(data)
    model.snapshot()
    model.feed(b"X\x1b[?1049l Y")
    live = _fresh(data + b"X\x1b[?1049l Y")
    assert _fresh(model.snapshot()).text() == live.text()
    assert _state(_fresh(model.snapshot())) == _state(live)


def test_scrolling_region_and_title_round_trip() -> None:
    data = b"".join(b"row %d\r\n" % i for i in range(6)) + b"\x1b[2;5r\x1b[5;1H"
    data += b"\x1b]0;my title\x07"
    model = _model(data)
    assert model.title == "my title"
    restored = _fresh(model.snapshot())
    live = _fresh(data)
    for term in (live, restored):
        term.feed(b"\n\n\nscrolled in the region")
    assert restored.text() == live.text()
    assert b"\x1b]2;my title\x1b\\" in model.snapshot()


def test_cursor_shape_is_carried_and_the_default_is_left_to_the_viewer() -> None:
    assert b"\x1b[3 q" in _model(b"\x1b[3 q").snapshot()
    assert b"\x1b[6 q" in _model(b"\x1b[6 q").snapshot()
    assert b" q" not in _model(b"\x1b[2 q").snapshot()  # steady block: the default


QUERIES = re.compile(
    rb"\x1b\[[0-9;]*c|\x1b\[>[0-9;]*c|\x1b\[\??[0-9;]*n|\x1b\]1[01];\?|\x1b\[>q|"
    rb"\x1b\[\??[0-9;]*\$p|\x1b\[[0-9;]*t|\x1bP\+q|\x1b\[\?u"
)


def test_queries_in_the_stream_are_never_in_a_snapshot() -> None:
    queries = (
        b"\x1b[c\x1b[>c\x1b[6n\x1b[5n\x1b]11;?\x07\x1b]10;?\x1b\\\x1b[>q"
        b"\x1b[?2004$p\x1b[14t\x1bP+q544e\x1b\\\x1b[?u\x1b[?996n"
    )
    snap = _model(b"before " + queries + b"after").snapshot()
    assert QUERIES.search(snap) is None, snap
    assert _fresh(snap).text() == "before after"


def test_an_unfinished_sequence_at_the_end_is_carried_so_live_bytes_complete_it() -> None:
    for head, rest in (
        (b"a\x1b[38;2;", b"200;0;0mB"),
        (b"a\x1b[", b"1mB"),
        (b"a\x1b", b"[1mB"),
        (b"a" + "é".encode()[:1], "é".encode()[1:] + b"B"),
        (b"a" + "€".encode()[:2], "€".encode()[2:] + b"B"),
    ):
        snap = _model(head).snapshot()
        restored = _fresh(snap + rest)
        live = _fresh(head + rest)
        assert restored.text() == live.text(), head
        assert restored.style(1 + (len(live.text()) - 2), 0) == live.style(
            1 + (len(live.text()) - 2), 0
        )


def test_scrollback_is_bounded_by_the_configured_lines() -> None:
    data = b"".join(b"line %d\r\n" % i for i in range(20_000))
    restored = _fresh(_model(data, scrollback_lines=50).snapshot())
    lines = restored.contents().splitlines()
    # exactly the lines asked for, then the screen (its last row is the cursor's, blank)
    assert lines == [f"line {i}" for i in range(20_000 - 50 - (ROWS - 1), 20_000)]


def test_resizes_are_applied_in_order_with_the_output() -> None:
    background = ScreenModel(ROWS, COLS)
    direct = Terminal(COLS, ROWS, scrollback=1000)
    steps: list[bytes | tuple[int, int]] = [b"x" * 35 + b"\r\n", (ROWS, 20), b"y" * 30, (5, 60)]
    for step in steps:
        if isinstance(step, tuple):
            background.resize(*step)
            direct.resize(step[1], step[0])
        else:
            background.feed(step)
            direct.feed(step)
    assert (background.rows, background.cols) == (5, 60)
    restored = _fresh(background.snapshot(), rows=5, cols=60)
    assert restored.text() == direct.text()
    assert restored.cursor == direct.cursor


def test_feeding_on_the_feeder_thread_never_loses_or_reorders_bytes() -> None:
    background = ScreenModel(ROWS, COLS)
    titles: list[tuple[str, str]] = []
    background.on_title = lambda t: titles.append((t, threading.current_thread().name))
    chunks = [b"\x1b]2;t%d\x07%05d\r\n" % (i % 3, i) for i in range(3000)]
    for index, chunk in enumerate(chunks):
        background.feed(chunk)
        if index == 1500:  # a snapshot mid-way covers exactly the bytes fed so far
            assert _fresh(background.snapshot()).text() == _fresh(b"".join(chunks[:1501])).text()
    assert background.text() == _fresh(b"".join(chunks)).text()
    assert background.fed_bytes == sum(map(len, chunks))
    assert background.title == "t2"
    assert titles and all(name in ("screen-feeder", "MainThread") for _, name in titles)


@pytest.mark.parametrize("scrollback", [0, 5, 1000])
def test_text_is_the_visible_screen(scrollback: int) -> None:
    model = _model(b"".join(b"n%d\r\n" % i for i in range(20)) + b"> ", scrollback_lines=scrollback)
    assert model.text().splitlines()[-1] == ">"
    assert "n0" not in model.text()
