"""An echo's few bytes are parsed by the caller, not the feeder thread (screen.py,
``INLINE_MAX``): at once, in order with what is queued, and to the same screen as any
other way of feeding the same bytes."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from openova_sandbox.terminal.screen import INLINE_MAX, ScreenModel

# escape sequences, an OSC title, UTF-8 and C0 controls, to be cut anywhere
STREAM = (
    "prompt> \x1b[1;32mgreen\x1b[0m plain \x1b]2;a title\x07 é✓ 漢字\r\n"
    "\x1b[?2004h\x1b[?1049hon the alternate screen \x1b[3;5Hmoved\x1b[?25l"
    "\x1bP1$r0m\x1b\\ \x1b]0;second title\x1b\\ tab\there\r\n\x07bell"
).encode()


def test_an_echo_is_parsed_at_once_without_the_feeder() -> None:
    model = ScreenModel(8, 40)
    model.feed(b"k")
    assert model.fed_bytes == 1  # parsed before feed returned
    assert not model._scheduled  # and the feeder thread was not woken for it
    model.feed(b"\x1b]2;typed\x07")
    assert model.title == "typed"
    assert model.text().startswith("k")


def test_an_echo_behind_queued_output_waits_its_turn() -> None:
    model = ScreenModel(20, 80)
    big = b"first " * (INLINE_MAX // 6 + 1)
    with model._lock:  # as if the feeder were parsing: nothing is parsed inline now
        model.feed(b"k")
        model.feed(big)  # queued
        model.feed(b"|last")  # small, but behind queued output: queued too
        assert model.fed_bytes == 0
    text = model.text().replace("\n", "")
    assert text.startswith("kfirst first")
    assert text.endswith("first |last")


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=40))
def test_any_cut_into_small_feeds_gives_the_same_screen(cuts: list[int]) -> None:
    whole = ScreenModel(10, 40, background=False)
    whole.feed(STREAM)
    pieces = ScreenModel(10, 40)
    bounds = sorted({0, len(STREAM), *cuts})
    for start, end in itertools.pairwise(bounds):
        pieces.feed(STREAM[start:end])
    assert pieces.snapshot() == whole.snapshot()
    assert pieces.title == whole.title == "second title"
    whole.close()
    pieces.close()
