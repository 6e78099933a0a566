"""The snapshot's fast paths against straightforward references: same bytes, any screen.

``ScreenModel.snapshot`` finds the pen runs to check for never-written cells with one
regular expression that also drops, inside the search, the runs the pen check would drop
(``screen._pen_runs``, with a cache of pen decisions), and counts the rows the formatter
prints from a plain-text pass over the screen's rows only
(``ScreenModel._printed_count``). Here each is compared with the plain version it
replaced — every candidate checked in Python, a plain-text pass over scrollback and
screen — on formatter output of generated streams and on generated VT, and whole
snapshots are compared with both references patched in.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openova_sandbox.terminal import screen
from openova_sandbox.terminal.screen import ScreenModel

_REFERENCE_TEXT = re.compile(rb"m[^\x1b\r][^\x1b\r ]* ")
_RESET = b"\x1b[0m"


def reference_pen_runs(formatted: bytes) -> dict[int, list[tuple[int, int, bytes]]]:
    """Every text with a space after its first character, after an m; kept when the
    bytes since the last reset (within 256) are SGR sequences that show on a blank cell."""
    rows: dict[int, list[tuple[int, int, bytes]]] = {}
    for hit in _REFERENCE_TEXT.finditer(formatted):
        at = hit.start() + 1
        reset = formatted.rfind(_RESET, max(0, at - 256), at)
        pen = formatted[reset + len(_RESET) : at] if reset >= 0 else b""
        if not (pen and screen._PENS.fullmatch(pen) and screen._SHOWS_ON_BLANK.search(pen)):
            continue
        end = formatted.find(b"\x1b", at)
        start = formatted.rfind(b"\r\n", 0, at)
        run = (at, len(formatted) if end < 0 else end, pen)
        rows.setdefault(0 if start < 0 else start + 2, []).append(run)
    return rows


def reference_printed_count(model: ScreenModel, selection: Any, covered: int, height: int) -> int:
    return len(model._printed_rows(selection))


# VT as the formatter writes it, and what it never writes: pens that show on a blank cell
# and pens that do not (the ones the search drops itself among them), resets inside pens,
# pens longer than the 256 bytes looked back, text with spaces and letters m, "[0m" as text
_PEN_PARTS = [
    b"\x1b[0m",
    b"\x1b[1m",
    b"\x1b[2m",
    b"\x1b[3m",
    b"\x1b[4m",
    b"\x1b[4:3m",
    b"\x1b[5m",
    b"\x1b[7m",
    b"\x1b[8m",
    b"\x1b[9m",
    b"\x1b[53m",
    b"\x1b[22m",
    b"\x1b[38;5;1m",
    b"\x1b[38;5;12m",
    b"\x1b[38;5;200m",
    b"\x1b[38;2;1;2;3m",
    b"\x1b[48;5;4m",
    b"\x1b[48;2;10;20;30m",
    b"\x1b[58;5;3m",
    b"\x1b[m",
    b"\x1b[38;5;1m" * 30,
]
_OTHER = [b"\r\n", b"\x1b[5;3H", b"\x1b]8;;http://x/\x1b\\", b"\x1b(0", b"\x1bH", b"\r"]
_TEXT = st.binary(max_size=12).map(lambda b: b.translate(None, b"\x1b\r\n")) | st.sampled_from(
    [b" ", b"  ", b"a b", b"m x", b"5m ago", b"[0m x", b"mm m", " é ".encode(), "漢 字".encode()]
)
_RUN = st.tuples(
    st.sampled_from([b"", _RESET]), st.lists(st.sampled_from(_PEN_PARTS), max_size=3), _TEXT
).map(lambda run: run[0] + b"".join(run[1]) + run[2])
_VT = st.lists(_RUN | st.sampled_from(_OTHER), max_size=20).map(b"".join)


@settings(max_examples=400, deadline=None)
@given(_VT)
def test_the_runs_found_are_the_reference_ones_on_any_vt(formatted: bytes) -> None:
    assert screen._pen_runs(formatted) == reference_pen_runs(formatted)


# streams for real screens: styled runs with gaps (cursor moves, tabs), erases, scrolling,
# the alternate screen, origin mode, wide and combining characters, hyperlinks
_SEGMENTS = [
    b"\x1b[44m",
    b"\x1b[7m",
    b"\x1b[4m",
    b"\x1b[1m",
    b"\x1b[0m",
    b"\x1b[9m",
    b"\x1b[53m",
    b"\x1b[38;5;3m",
    b"\x1b[1;44m",
    b"\x1b[48;2;1;2;3m",
    b"\x1b[K",
    b"\x1b[2J",
    b"\x1b[3J",
    b"\r\n",
    b"\n",
    b"\r",
    b"\t",
    b"\x1b[H",
    b"\x1b[5;3H",
    b"\x1b[3C",
    b"\x1b[12C",
    b"\x1b[2;6r",
    b"\x1b[r",
    b"\x1bM",
    b"\x1b[3L",
    b"\x1b[2M",
    b"\x1b[S",
    b"\x1b[5X",
    b"\x1b[?1049h",
    b"\x1b[?1049l",
    b"\x1b[?47h",
    b"\x1b[?6h",
    b"\x1b[?6l",
    b"\x1b[?7l",
    "日本語".encode(),
    "e\u0301".encode(),
    b"\x1b]8;;http://x/\x1b\\",
    b"\x1b]8;;\x1b\\",
]
_STREAM = st.lists(
    st.sampled_from(_SEGMENTS) | st.text(alphabet="abm0 ", min_size=1, max_size=30).map(str.encode),
    max_size=60,
).map(b"".join)
_SIZES = st.sampled_from([(5, 10), (8, 20), (3, 7), (12, 40)])
_KEEP = st.sampled_from([0, 3, 10, 100])


def _model(size: tuple[int, int], keep: int, stream: bytes) -> ScreenModel:
    rows, cols = size
    model = ScreenModel(rows, cols, scrollback_lines=keep, background=False)
    model.feed(stream)
    model.flush()
    return model


@settings(max_examples=150, deadline=None)
@given(_SIZES, _KEEP, _STREAM)
def test_the_fast_paths_match_their_references_on_formatter_output(
    size: tuple[int, int], keep: int, stream: bytes
) -> None:
    model = _model(size, keep, stream)
    selection, covered, _ = model._selection(scrollback_lines=keep)
    for template in (screen._FULL, screen._CONTENT):
        formatted = model._format(template, selection)
        assert screen._pen_runs(formatted) == reference_pen_runs(formatted)
    height = size[0]
    fast = model._printed_count(selection, covered, height)
    assert fast == reference_printed_count(model, selection, covered, height)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(_SIZES, _KEEP, _STREAM)
def test_a_snapshot_is_byte_for_byte_the_reference_one(
    monkeypatch: pytest.MonkeyPatch, size: tuple[int, int], keep: int, stream: bytes
) -> None:
    model = _model(size, keep, stream)
    fast = model.snapshot()
    with monkeypatch.context() as patch:
        patch.setattr(screen, "_pen_runs", reference_pen_runs)
        patch.setattr(ScreenModel, "_printed_count", reference_printed_count)
        assert model.snapshot() == fast


def test_the_search_drops_common_pens_that_do_not_show_but_keeps_those_that_do() -> None:
    """The drops inside the search are the pen check's own: a bold or palette-coloured run
    is not returned by the search at all, an inverse or background one is."""
    for pen in (b"\x1b[1m", b"\x1b[3m", b"\x1b[38;5;7m", b"\x1b[38;5;123m"):
        assert not screen._SPACED_TEXT.search(_RESET + pen + b"a b\x1b[0m")
    for pen in (b"\x1b[7m", b"\x1b[4m", b"\x1b[9m", b"\x1b[48;5;4m"):
        formatted = _RESET + pen + b"a b\x1b[0m"
        assert screen._SPACED_TEXT.search(formatted)
        assert screen._pen_runs(formatted) == {0: [(4 + len(pen), len(formatted) - 4, pen)]}
