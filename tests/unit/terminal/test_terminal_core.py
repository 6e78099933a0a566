"""Session core: atomic first frame + subscribe, resume, fan-out by reference, flow control."""

from __future__ import annotations

import pytest

from openova_sandbox.terminal.core import SessionCore


class History:
    """A screen stand-in whose snapshot is every byte fed so far, marked."""

    def __init__(self) -> None:
        self.fed = b""

    def feed(self, data: bytes) -> None:
        self.fed += data

    def snapshot(self) -> bytes:
        return b"SNAP:" + self.fed


def _core(**options: int) -> tuple[SessionCore, History]:
    screen = History()
    return SessionCore(screen=screen, **options), screen


def test_attach_is_a_snapshot_of_the_screen_then_live_frames_continue_at_its_end() -> None:
    core, _ = _core(ring_bytes=100)
    core.feed(b"before ")
    first = core.attach("a")
    assert (first.data, first.start, first.end, first.kind, first.reason) == (
        b"SNAP:before ",
        7,
        7,
        "snapshot",
        "attach",
    )
    result = core.feed(b"after")
    assert [(f.viewer_id, f.data, f.start, f.end) for f in result.frames] == [
        ("a", b"after", 7, 12)
    ]


def test_since_held_by_the_ring_resumes_with_exactly_the_missed_bytes() -> None:
    core, _ = _core(ring_bytes=100)
    core.feed(b"0123456789")
    first = core.attach("a", since=4)
    assert (first.data, first.start, first.end, first.kind) == (b"456789", 4, 10, "resume")
    at_end = core.attach("b", since=10)
    assert (at_end.data, at_end.start, at_end.end, at_end.kind) == (b"", 10, 10, "resume")
    assert [f.start for f in core.feed(b"x").frames] == [10, 10]


def test_since_no_longer_held_or_in_the_future_is_a_snapshot_marked_gap() -> None:
    core, _ = _core(ring_bytes=4)
    core.feed(b"0123456789")  # the ring keeps 6..9
    evicted = core.attach("a", since=5)
    future = core.attach("b", since=11)
    for frame in (evicted, future):
        assert (frame.kind, frame.reason, frame.start, frame.end) == ("snapshot", "gap", 10, 10)
        assert frame.data == b"SNAP:0123456789"


def test_a_resume_bigger_than_the_window_is_a_snapshot_marked_gap() -> None:
    core, _ = _core(ring_bytes=100)
    core.feed(b"0123456789")
    assert core.attach("a", since=2, window=8).kind == "resume"
    frame = core.attach("b", since=1, window=8)
    assert (frame.kind, frame.reason, frame.end) == ("snapshot", "gap", 10)


def test_feed_hands_the_same_bytes_object_to_every_viewer_and_the_screen() -> None:
    core, screen = _core(ring_bytes=100)
    for name in ("a", "b", "c"):
        core.attach(name)
    result = core.feed(bytearray(b"shared"))
    assert len(result.frames) == 3
    assert len({id(f.data) for f in result.frames}) == 1
    assert isinstance(result.frames[0].data, bytes)
    assert screen.fed == b"shared"


def test_duplicate_attach_is_refused_and_detach_forgets() -> None:
    core, _ = _core(ring_bytes=10)
    core.attach("a")
    with pytest.raises(ValueError, match="already attached"):
        core.attach("a")
    assert core.detach("a") is True
    assert core.detach("a") is False
    assert core.feed(b"x").frames == []


def test_empty_feed_produces_nothing() -> None:
    core, screen = _core(ring_bytes=10)
    core.attach("a")
    result = core.feed(b"")
    assert result.frames == []
    assert result.resynced == []
    assert core.ring.end == 0
    assert screen.fed == b""


def test_slow_raw_viewer_is_resynced_with_a_snapshot_not_the_raw_tail() -> None:
    core, _ = _core(ring_bytes=64, viewer_queue_bytes=10)
    core.attach("slow")
    core.attach("fast")
    first = core.feed(b"12345678")
    assert {f.viewer_id for f in first.frames} == {"slow", "fast"}
    core.delivered("fast", 8)
    second = core.feed(b"abcd")
    assert [f.viewer_id for f in second.frames] == ["fast"]
    assert second.resynced == ["slow"]
    assert core.needs_resync("slow")
    assert core.queued_bytes("slow") == 0
    # While marked, the laggard gets nothing live and accumulates nothing.
    third = core.feed(b"XY")
    assert [f.viewer_id for f in third.frames] == ["fast"]
    assert third.resynced == []
    frame = core.resync("slow")
    assert frame is not None
    assert (frame.data, frame.start, frame.end, frame.kind, frame.reason) == (
        b"SNAP:12345678abcdXY",
        14,
        14,
        "snapshot",
        "resync",
    )
    assert core.resync("slow") is None
    assert [f.start for f in core.feed(b"z").frames] == [14, 14]


def test_delivered_never_goes_negative_and_ignores_unknown_viewers() -> None:
    core, _ = _core(ring_bytes=10, viewer_queue_bytes=5)
    core.attach("a")
    core.feed(b"abc")
    core.delivered("a", 99)
    core.delivered("ghost", 1)
    assert core.queued_bytes("a") == 0


def test_window_viewer_may_run_ahead_of_its_acks_by_the_window_only() -> None:
    core, _ = _core(ring_bytes=100)
    core.attach("v2", window=10)
    core.attach("raw")
    assert [f.viewer_id for f in core.feed(b"123456").frames] == ["v2", "raw"]
    core.handed("v2", 6)  # taken for the socket, not yet acknowledged
    core.delivered("v2", 6)
    assert core.queued_bytes("v2") == 6
    result = core.feed(b"abcde")  # 11 bytes past the last ack (0) > 10
    assert [f.viewer_id for f in result.frames] == ["raw"]
    assert result.resynced == ["v2"]
    # the snapshot waits until the client has rendered what it was sent
    assert core.resync("v2") is None
    assert core.ack("v2", 3) is False
    assert core.resync("v2") is None
    assert core.ack("v2", 6) is True
    frame = core.resync("v2")
    assert frame is not None
    assert (frame.kind, frame.reason, frame.start, frame.end) == ("snapshot", "resync", 11, 11)
    # the snapshot itself does not count against the window
    assert [f.viewer_id for f in core.feed(b"0123456789").frames] == ["v2", "raw"]


def test_acks_never_run_past_what_was_sent() -> None:
    core, _ = _core(ring_bytes=100)
    core.attach("v", window=8)
    core.feed(b"1234")
    core.ack("v", 1000)  # a lying client does not widen its window
    assert core.queued_bytes("v") == 4
    core.handed("v", 4)
    core.ack("v", 4)
    assert core.queued_bytes("v") == 0


def test_refresh_marks_a_snapshot_with_its_reason_without_waiting_for_acks() -> None:
    core, _ = _core(ring_bytes=100)
    core.attach("v", window=100)
    core.feed(b"abc")
    assert core.refresh("v", "resize") is True
    assert core.refresh("ghost", "resize") is False
    assert core.feed(b"d").frames == []
    frame = core.resync("v")
    assert frame is not None
    assert (frame.reason, frame.end, frame.data) == ("resize", 4, b"SNAP:abcd")


def test_limit_and_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        SessionCore(ring_bytes=10, viewer_queue_bytes=0)
    with pytest.raises(ValueError, match="positive"):
        SessionCore(ring_bytes=10).attach("a", window=0)
