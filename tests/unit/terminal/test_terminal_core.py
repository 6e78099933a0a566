"""Session core: atomic replay + subscribe, fan-out by reference, slow-viewer resync."""

from __future__ import annotations

import pytest

from openova_sandbox.terminal.core import SessionCore


def test_attach_replays_ring_then_live_frames_continue_at_its_end() -> None:
    core = SessionCore(ring_bytes=100)
    core.feed(b"before ")
    replay = core.attach("a")
    assert (replay.data, replay.start, replay.end, replay.kind) == (b"before ", 0, 7, "replay")
    result = core.feed(b"after")
    assert [(f.viewer_id, f.data, f.start, f.end) for f in result.frames] == [
        ("a", b"after", 7, 12)
    ]


def test_feed_hands_the_same_bytes_object_to_every_viewer() -> None:
    core = SessionCore(ring_bytes=100)
    for name in ("a", "b", "c"):
        core.attach(name)
    result = core.feed(bytearray(b"shared"))
    assert len(result.frames) == 3
    assert len({id(f.data) for f in result.frames}) == 1
    assert isinstance(result.frames[0].data, bytes)


def test_duplicate_attach_is_refused_and_detach_forgets() -> None:
    core = SessionCore(ring_bytes=10)
    core.attach("a")
    with pytest.raises(ValueError, match="already attached"):
        core.attach("a")
    assert core.detach("a") is True
    assert core.detach("a") is False
    assert core.feed(b"x").frames == []


def test_empty_feed_produces_nothing() -> None:
    core = SessionCore(ring_bytes=10)
    core.attach("a")
    result = core.feed(b"")
    assert result.frames == []
    assert result.resynced == []
    assert core.ring.end == 0


def test_slow_viewer_is_marked_for_resync_without_affecting_others() -> None:
    core = SessionCore(ring_bytes=64, viewer_queue_bytes=10)
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
    assert (frame.data, frame.start, frame.end, frame.kind) == (
        b"12345678abcdXY",
        0,
        14,
        "resync",
    )
    assert core.resync("slow") is None
    assert [f.start for f in core.feed(b"z").frames] == [14, 14]


def test_delivered_never_goes_negative_and_ignores_unknown_viewers() -> None:
    core = SessionCore(ring_bytes=10, viewer_queue_bytes=5)
    core.attach("a")
    core.feed(b"abc")
    core.delivered("a", 99)
    core.delivered("ghost", 1)
    assert core.queued_bytes("a") == 0


def test_resync_after_eviction_starts_at_the_retained_tail() -> None:
    core = SessionCore(ring_bytes=4, viewer_queue_bytes=3)
    core.attach("a")
    core.feed(b"ab")
    core.feed(b"cdef")  # 2 + 4 > 3: marked
    frame = core.resync("a")
    assert frame is not None
    assert (frame.data, frame.start, frame.end) == (b"cdef", 2, 6)


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        SessionCore(ring_bytes=10, viewer_queue_bytes=0)
