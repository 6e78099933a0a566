"""ActivityTracker: busy / waiting / idle from output, input, notifications and the screen."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openova_sandbox.terminal.activity import (
    BUSY,
    IDLE,
    WAITING,
    ActivityTracker,
    excerpt,
    last_lines,
)

SHELL = (r"[$#]\s*$",)


def _screen(text: str):  # type: ignore[no-untyped-def]
    return lambda: text


def _tracker(**kw: object) -> ActivityTracker:
    kw.setdefault("now", 0.0)
    kw.setdefault("prompt_patterns", SHELL)
    return ActivityTracker(**kw)  # type: ignore[arg-type]


# -- quiet + prompt ----------------------------------------------------------------------


def test_starts_busy_and_waits_once_quiet_with_a_prompt_on_screen() -> None:
    t = _tracker()
    assert t.state == BUSY
    assert t.on_output(b"build ok\r\n$ ", 0.1) is None
    assert t.next_tick() == pytest.approx(1.1)
    assert t.tick(0.9, _screen("build ok\n$ ")) is None  # not quiet long enough
    assert t.tick(1.1, _screen("build ok\n$ ")) == WAITING
    assert t.state == WAITING
    assert t.since == 1.1


def test_quiet_without_a_prompt_stays_busy_and_rechecks_with_backoff() -> None:
    t = _tracker(idle_seconds=100.0)
    t.on_output(b"compiling...", 0.0)
    calls: list[float] = []

    def screen() -> str:
        calls.append(0)
        return "compiling..."

    assert t.tick(1.0, screen) is None
    assert t.state == BUSY and len(calls) == 1
    first = t.next_tick()
    assert first is not None and first >= 2.0
    assert t.tick(1.5, screen) is None and len(calls) == 1  # not due: screen not read
    t.tick(first, screen)
    second = t.next_tick()
    assert second is not None and second - first >= first - 1.0  # the interval grows
    assert t.tick(100.0, screen) == IDLE  # silent for idle_seconds: idle


def test_the_screen_is_not_read_while_output_flows() -> None:
    t = _tracker()
    for i in range(50):
        t.on_output(b".", i * 0.1)
        assert t.tick(i * 0.1, lambda: pytest.fail("screen read while busy")) is None


def test_prompt_is_searched_in_the_last_non_empty_lines_only() -> None:
    t = _tracker()
    screen = "$ \n" + "\n".join(f"line {i}" for i in range(10)) + "\n\n\n"
    assert not t.matches_prompt(screen)
    assert t.matches_prompt("line\n$   \n\n")


def test_without_prompt_patterns_quiet_is_not_waiting_but_long_silence_is_idle() -> None:
    t = _tracker(prompt_patterns=(), idle_seconds=10.0)
    t.on_output(b"> ", 0.0)
    assert t.next_tick() == 10.0
    assert t.tick(5.0, lambda: pytest.fail("no patterns: no screen")) is None
    assert t.tick(10.0, _screen("> ")) == IDLE


# -- notifications ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "signal",
    [
        b"\x07",
        b"\x1b]9;Claude needs your permission\x07",
        b"\x1b]9;done\x1b\\",
        b"\x1b]777;notify;opencode;waiting for you\x07",
        b"\x1b]99;i=1:d=0;Task finished\x1b\\",
    ],
)
def test_notifications_mean_waiting_at_once(signal: bytes) -> None:
    t = _tracker(prompt_patterns=())
    assert t.on_output(b"working\r\n" + signal, 0.5) == WAITING


@pytest.mark.parametrize(
    "chunk",
    [
        b"\x1b]0;my title\x07",  # BEL terminating a title OSC is no bell
        b"\x1b]2;x\x07\x1b]8;;http://a\x07link\x1b]8;;\x07",
        b"\x1b]9;4;1;50\x07",  # ConEmu progress bar, not a notification
        b"\x1b]9;4;0\x1b\\",
        b"\x1bPtmux;\x07\x1b\\",  # BEL inside a DCS string
        b"\x1b_Gbase64\x07data\x1b\\",  # inside an APC string
        b"\x1b]777;preexec\x07",
        b"\x1b]99;i=opentui-notifications:p=?;\x1b\\",  # opencode's capability query
    ],
)
def test_bel_inside_strings_and_other_oscs_are_not_notifications(chunk: bytes) -> None:
    t = _tracker(prompt_patterns=())
    assert t.on_output(chunk, 0.5) is None
    assert t.state == BUSY


def test_a_string_aborted_by_can_lets_the_next_bel_ring() -> None:
    t = _tracker(prompt_patterns=())
    assert t.on_output(b"\x1bPabc\x18then\x07", 0.5) == WAITING


@pytest.mark.parametrize("cut", range(1, len(b"\x1b]9;need input\x1b\\")))
def test_a_notification_split_anywhere_fires_only_when_complete(cut: int) -> None:
    seq = b"\x1b]9;need input\x1b\\"
    t = _tracker(prompt_patterns=())
    assert t.on_output(seq[:cut], 0.5) is None
    assert t.state == BUSY
    assert t.on_output(seq[cut:], 0.6) == WAITING


@pytest.mark.parametrize("cut", range(1, len(b"\x1b]0;title\x07")))
def test_a_title_split_anywhere_never_rings(cut: int) -> None:
    seq = b"\x1b]0;title\x07"
    t = _tracker(prompt_patterns=())
    t.on_output(seq[:cut], 0.5)
    t.on_output(seq[cut:], 0.6)
    assert t.state == BUSY


def test_the_frame_drawn_with_the_bell_does_not_undo_it() -> None:
    t = _tracker(prompt_patterns=())
    assert t.on_output(b"\x07\x1b[2J\x1b[HAllow? [y/n]", 1.0) == WAITING
    assert t.on_output(b"\x1b[5;1Hmore redraw", 1.2) is None  # within the echo window
    assert t.state == WAITING
    # it was not waiting after all: its spinner goes on
    assert _spin(t, 3.0, 3.9) is None
    assert _spin(t, 4.0, 4.1) == BUSY


def _spin(t: ActivityTracker, start: float, end: float, step: float = 0.1) -> str | None:
    """Spinner frames from ``start`` to ``end``; the last state change, if any."""
    changed = None
    now = start
    while now <= end + 1e-9:
        frame = b"\x1b[1;1H" + b"|/-\\"[int(now * 10) % 4 :][:1]
        changed = t.on_output(frame, now) or changed
        now = round(now + step, 6)
    return changed


# -- input --------------------------------------------------------------------------------


def _waiting(**kw: object) -> ActivityTracker:
    t = _tracker(**kw)
    t.on_output(b"$ ", 0.0)
    assert t.tick(1.0, _screen("$ ")) == WAITING
    return t


def test_typing_echo_is_not_busy() -> None:
    t = _waiting()
    now = 5.0
    for ch in b"ls -la":
        assert t.on_input(now, bytes([ch])) is None
        assert t.on_output(bytes([ch]), now + 0.01) is None
        now += 0.3
    assert t.state == WAITING
    assert t.tick(now + 2, _screen("$ ls -la")) is None


def test_output_after_submitting_is_busy_once_it_lasts() -> None:
    t = _waiting()
    t.on_input(5.0, b"make\r")
    assert t.on_output(b"\r\n", 5.01) is None  # the echo of Enter
    assert t.on_output(b"cc -c main.c\r\n", 5.6) is None  # output beyond the echo ...
    assert t.on_output(b"cc -c util.c\r\n", 6.2) is None
    assert t.on_output(b"cc -o app\r\n", 6.6) == BUSY  # ... for burst_seconds: busy
    t.on_output(b"$ ", 7.0)
    assert t.tick(8.0, _screen("cc -o app\n$ ")) == WAITING


def test_a_quick_answer_within_the_echo_window_stays_waiting() -> None:
    t = _waiting()
    t.on_input(5.0, b"ls\r")
    t.on_output(b"\r\na.txt\r\n$ ", 5.05)
    assert t.tick(6.1, _screen("$ ls\na.txt\n$ ")) is None
    assert t.state == WAITING


def test_a_silent_command_after_enter_is_busy_once_the_prompt_is_gone() -> None:
    t = _waiting()
    t.on_input(5.0, b"sleep 100\r")
    t.on_output(b"\r\n", 5.01)
    assert t.next_tick() == pytest.approx(6.01)
    assert t.tick(6.01, _screen("$ sleep 100\n")) == BUSY


def test_a_one_off_redraw_while_waiting_stays_waiting() -> None:
    t = _waiting()
    assert t.on_output(b"\x1b[25;70HNot logged in", 10.0) is None
    assert t.next_tick() == 11.0  # the prompt is checked again once quiet
    assert t.tick(11.0, _screen("Not logged in\n$ ")) is None
    assert t.state == WAITING


def test_unprompted_output_that_goes_on_is_busy() -> None:
    t = _waiting()
    assert _spin(t, 10.0, 11.0) == BUSY


def test_unprompted_output_that_removes_the_prompt_is_busy() -> None:
    t = _waiting()
    assert t.on_output(b"\x1b[2J\x1b[Hrunning tests", 10.0) is None
    assert t.tick(11.0, _screen("running tests")) == BUSY


def test_waiting_without_anything_turns_idle_and_input_brings_it_back() -> None:
    t = _waiting(idle_seconds=60.0)
    assert t.next_tick() == 61.0
    assert t.tick(30.0, _screen("$ ")) is None
    t.on_input(30.0, b"l")  # typing restarts the idle clock
    assert t.tick(61.0, _screen("$ ")) is None
    assert t.tick(90.0, _screen("$ l")) == IDLE
    assert t.next_tick() is None
    assert t.on_input(200.0, b"s") == WAITING


def test_a_notification_while_idle_is_waiting() -> None:
    t = _waiting(idle_seconds=5.0)
    assert t.tick(6.0, _screen("$ ")) == IDLE
    assert t.on_output(b"\x07", 7.0) == WAITING


# -- helpers -------------------------------------------------------------------------------


def test_excerpt_is_the_last_non_empty_lines_trimmed() -> None:
    screen = "a\n\nb\nc   \nd\ne\nf\n\n"
    assert last_lines(screen, 3) == ["d", "e", "f"]
    assert excerpt(screen) == "b\nc\nd\ne\nf"
    long = excerpt("x" * 2000)
    assert len(long) == 500 and long.startswith("…")


# -- properties -----------------------------------------------------------------------------

_PIECES = st.sampled_from(
    [
        b"\x07",
        b"\x1b",
        b"]",
        b"\x1b]",
        b"9;",
        b"9;4;1;5",
        b"777;notify;t;b",
        b"0;title",
        b"\x1b\\",
        b"\\",
        b"\x1bP",
        b"\x1b_",
        b"\x1b[2J",
        b"\x18",
        b"P",
        b"hello",
        b"$ ",
        b"\r\n",
    ]
)
_STEP = st.tuples(
    st.lists(_PIECES, max_size=12).map(b"".join),  # output (may be empty)
    st.floats(min_value=0.0, max_value=3.0),  # time passing before this step
    st.sampled_from([b"", b"x", b"\r"]),  # input before the output
    st.lists(st.integers(min_value=1, max_value=20), max_size=4),  # cut points
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_STEP, max_size=25), st.booleans())
def test_any_chunking_of_the_same_bytes_gives_the_same_states(
    steps: list[tuple[bytes, float, bytes, list[int]]], bytewise: bool
) -> None:
    whole = _tracker(idle_seconds=20.0)
    split = _tracker(idle_seconds=20.0)
    screen = _screen("$ ")
    now = 0.0
    for data, dt, typed, cuts in steps:
        now += dt
        for t in (whole, split):
            if typed:
                t.on_input(now, typed)
            t.tick(now, screen)
        whole.on_output(data, now)
        if bytewise:
            pieces = [data[i : i + 1] for i in range(len(data))]
        else:
            bounds = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
            pieces = [data[a:b] for a, b in itertools.pairwise(bounds)]
        for piece in pieces:
            split.on_output(piece, now)
        assert split.state == whole.state, (data, pieces)
        assert split.next_tick() == whole.next_tick()
