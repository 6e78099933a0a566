"""Plain-text floods: a screen model that leaves plain lines out of a large batch ends
with the same screen, byte for byte, as one that parses every byte.

Each case feeds one stream to two models: one whose batches take the skip
(``SKIP_MIN`` lowered so small streams qualify) and one that parses everything (the
skip's size gate out of reach). Their snapshots (screen, scrollback, modes, cursor, pen,
title) and texts must be equal; the cases that are meant to skip also check that bytes
were actually left out, and the ones where skipping would be wrong check that none were.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from openova_sandbox.terminal import screen
from openova_sandbox.terminal.screen import ScreenModel

ROWS, COLS, KEEP = 8, 20, 12
SMALL_SKIP = 256  # bytes: small enough that the tests' streams take the skip


def _line(i: int, width: int) -> bytes:
    text = (f"{i:05d}-" + "abcdefghijklmnopqrstuvwxyz" * 4)[:width]
    return text.encode() + b"\r\n"


def plain_flood(n: int, width: int = 30, start: int = 0, ragged: bool = False) -> bytes:
    """``n`` plain lines; ``ragged``: widths vary from line to line up to ``width``."""
    return b"".join(
        _line(start + i, (start + i) * 7 % width + 1 if ragged else width) for i in range(n)
    )


def _pair(monkeypatch: pytest.MonkeyPatch, stream: list[bytes]) -> tuple[ScreenModel, ScreenModel]:
    """The stream fed to a skipping model and to a parse-everything model."""
    models = []
    for skip_min in (SMALL_SKIP, 1 << 40):
        monkeypatch.setattr(screen, "SKIP_MIN", skip_min)
        model = ScreenModel(ROWS, COLS, scrollback_lines=KEEP, background=False)
        for part in stream:  # one call each: each part is one batch, as the feeder joins
            model.feed(part)
        models.append(model)
    monkeypatch.setattr(screen, "SKIP_MIN", SMALL_SKIP)
    return models[0], models[1]


def assert_same(skipping: ScreenModel, full: ScreenModel) -> None:
    assert skipping.snapshot() == full.snapshot()
    assert skipping.text() == full.text()
    assert skipping.fed_bytes == full.fed_bytes
    assert full.skipped_bytes == 0


def test_a_plain_flood_is_left_out_and_the_screen_is_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = [b"\x1b[1;31mred prompt\x1b[0m $ cat log\r\n" + plain_flood(400, width=45)]
    skipping, full = _pair(monkeypatch, stream)
    assert skipping.skipped_bytes > len(stream[0]) // 2
    assert_same(skipping, full)
    assert "00399-" in skipping.text()


def test_styled_pen_and_modes_survive_the_skip(monkeypatch: pytest.MonkeyPatch) -> None:
    # a pen left set before the flood, bracketed paste and app cursor keys on, a title,
    # then a flood, then a prompt with escapes after it
    head = b"\x1b]2;build\x07\x1b[?2004h\x1b[?1h\x1b[4;44m" + plain_flood(20)
    tail = b"\x1b[0m\x1b[32mdone\x1b[0m $ "
    skipping, full = _pair(monkeypatch, [head + plain_flood(400, start=20) + tail])
    assert skipping.skipped_bytes > 0
    assert_same(skipping, full)


def test_no_skip_when_the_cursor_is_below_the_scroll_region(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # region rows 1-4, cursor on row 8: line feeds do not scroll, every line overwrites
    # the bottom row; a longer line among short ones leaves its end there (nothing may
    # be left out)
    short = plain_flood(200, width=10)
    stream = [b"\x1b[1;4r\x1b[8;1H" + short + _line(0, 19) + short]
    skipping, full = _pair(monkeypatch, stream)
    assert skipping.skipped_bytes == 0
    assert_same(skipping, full)


def test_no_skip_on_the_alternate_screen(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = [b"\x1b[?1049h" + plain_flood(400)]
    skipping, full = _pair(monkeypatch, stream)
    assert skipping.skipped_bytes == 0
    assert_same(skipping, full)


def test_a_region_below_the_top_row_is_never_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = [b"\x1b[3;8r\x1b[8;1H" + plain_flood(400)]
    skipping, full = _pair(monkeypatch, stream)
    assert skipping.skipped_bytes == 0
    assert_same(skipping, full)


def test_shift_out_in_the_flood_stops_the_skip(monkeypatch: pytest.MonkeyPatch) -> None:
    # SO selects G1 (DEC graphics): the text after it prints differently
    stream = [b"\x1b)0" + plain_flood(200) + b"\x0e" + plain_flood(200, start=200)]
    skipping, full = _pair(monkeypatch, stream)
    assert_same(skipping, full)


def test_alternate_screen_after_the_flood_keeps_the_primary_right(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the snapshot carries the primary screen under the alternate one
    stream = [plain_flood(400) + b"\x1b[?1049h\x1b[Htui"]
    skipping, full = _pair(monkeypatch, stream)
    assert skipping.skipped_bytes > 0
    assert_same(skipping, full)


_SEGMENTS = st.one_of(
    st.builds(
        plain_flood, st.integers(0, 300), st.integers(1, 50), st.integers(0, 9), st.booleans()
    ),
    st.sampled_from(
        [
            b"\x1b[1;4r",
            b"\x1b[r",
            b"\x1b[2;6r\x1b[6;1H",
            b"\x1b[8;1H",
            b"\x1b[1;4r\x1b[8;1H",
            b"\x1b[H",
            b"\x1b[5A",
            b"\x1b[?1049h",
            b"\x1b[?1049l",
            b"\x1b[?7l",
            b"\x1b[?7h",
            b"\x1b[31;1m",
            b"\x1b[0m",
            b"\x1b[4h",
            b"\x1b[4l",
            b"\x1b[20h",
            b"\x1b[20l",
            b"\x1b[?69h\x1b[3;15s",
            b"\x1b[?69l",
            b"\x1b)0\x0e",
            b"\x0f",
            b"\x1b[2J",
            b"\x1b]2;t\x07",
            b"\x1b[3b",
            b"tail without newline",
            b"bare\nline\nfeeds\n",
            b"\r\x1b[K",
            b"\xc3\xa9t\xc3\xa9\r\n",
            b"\x1b[",
            b"\t|\t|\r\n",
        ]
    ),
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batches=st.lists(st.lists(_SEGMENTS, max_size=8).map(b"".join), min_size=1, max_size=4))
def test_any_stream_gives_the_same_screen(
    monkeypatch: pytest.MonkeyPatch, batches: list[bytes]
) -> None:
    skipping, full = _pair(monkeypatch, batches)
    event("skipped" if skipping.skipped_bytes else "parsed whole")
    assert_same(skipping, full)
