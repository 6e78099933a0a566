"""Property tests: any interleaving of output, attach, detach, sends and resyncs gives
every viewer exactly the stream from its attach point (or from its last resync).

The model plays the part of the asyncio layer: each viewer has a FIFO of frames handed
out by ``feed``; a "send" step pops the oldest frame and reports it delivered; a viewer
marked for resync has its FIFO dropped and, once drained, asks ``resync`` for the tail.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import pyte
from hypothesis import given, settings
from hypothesis import strategies as st

from openova_sandbox.terminal.core import Frame, SessionCore

_ops = st.lists(
    st.one_of(
        st.tuples(st.just("out"), st.binary(min_size=1, max_size=24)),
        st.tuples(st.just("attach"), st.integers(0, 4)),
        st.tuples(st.just("detach"), st.integers(0, 4)),
        st.tuples(st.just("send"), st.integers(0, 4)),
        st.tuples(st.just("drain"), st.integers(0, 4)),
    ),
    max_size=80,
)


@dataclass
class _Model:
    queue: deque[Frame] = field(default_factory=deque)
    received: list[Frame] = field(default_factory=list)


def _check_stream(frames: list[Frame], history: bytes) -> None:
    """Frames are contiguous between resyncs and each equals the history at its range."""
    assert frames, "a viewer always gets its replay first"
    assert frames[0].kind == "replay"
    position = frames[0].start
    for frame in frames:
        assert frame.data == history[frame.start : frame.end]
        if frame.kind == "live":
            assert frame.start == position, "live frames continue exactly where we were"
        position = frame.end


def _run(ops: list[tuple[str, object]], *, ring_bytes: int, limit: int) -> None:
    core = SessionCore(ring_bytes=ring_bytes, viewer_queue_bytes=limit)
    history = b""
    viewers: dict[str, _Model] = {}
    finished: list[list[Frame]] = []

    def send_one(name: str) -> None:
        model = viewers[name]
        if model.queue:
            frame = model.queue.popleft()
            model.received.append(frame)
            core.delivered(name, len(frame.data))
        elif core.needs_resync(name):
            frame = core.resync(name)
            assert frame is not None
            tail, start, end = core.ring.snapshot()
            assert (frame.data, frame.start, frame.end) == (tail, start, end)
            model.received.append(frame)

    for op, arg in ops:
        if op == "out":
            assert isinstance(arg, bytes)
            history += arg
            result = core.feed(arg)
            assert len({id(f.data) for f in result.frames}) <= 1
            for frame in result.frames:
                viewers[frame.viewer_id].queue.append(frame)
            for name in result.resynced:
                viewers[name].queue.clear()
            marked = {n for n in viewers if core.needs_resync(n)}
            got = {f.viewer_id for f in result.frames}
            assert got | marked == set(viewers)
            assert not got & marked
        else:
            name = f"v{arg}"
            if op == "attach" and name not in viewers:
                replay = core.attach(name)
                assert replay.end == len(history)
                viewers[name] = _Model(received=[replay])
            elif op == "detach" and name in viewers:
                assert core.detach(name)
                finished.append(viewers.pop(name).received)
            elif op == "send" and name in viewers:
                send_one(name)
            elif op == "drain" and name in viewers:
                while viewers[name].queue or core.needs_resync(name):
                    send_one(name)
            for n in viewers:
                assert core.queued_bytes(n) <= limit
    for name in list(viewers):
        while viewers[name].queue or core.needs_resync(name):
            send_one(name)
        finished.append(viewers[name].received)
        resynced = any(f.kind == "resync" for f in viewers[name].received)
        if not resynced:
            # Never resynced: what it received is the stream from its attach point.
            frames = viewers[name].received
            joined = b"".join(f.data for f in frames)
            assert joined == history[frames[0].start :]
        else:
            assert viewers[name].received[-1].end == len(history)
    for frames in finished:
        _check_stream(frames, history)


@settings(max_examples=300, deadline=None)
@given(ops=_ops)
def test_every_viewer_gets_exactly_its_stream_with_a_big_ring(
    ops: list[tuple[str, object]],
) -> None:
    _run(ops, ring_bytes=1 << 20, limit=1 << 20)


@settings(max_examples=300, deadline=None)
@given(ops=_ops, ring_bytes=st.integers(8, 64), limit=st.integers(1, 48))
def test_every_viewer_gets_its_stream_or_a_true_resync_under_pressure(
    ops: list[tuple[str, object]], ring_bytes: int, limit: int
) -> None:
    _run(ops, ring_bytes=ring_bytes, limit=limit)


def _screen(data: bytes, *, cols: int = 40, rows: int = 8) -> list[str]:
    screen = pyte.Screen(cols, rows)
    stream = pyte.ByteStream(screen)
    stream.feed(data)
    return list(screen.display)


_text = st.lists(
    st.sampled_from(
        [
            b"hello",
            b" ",
            b"\r\n",
            b"\x1b[2J\x1b[H",
            b"\x1b[1;31mred\x1b[0m",
            b"\x1b[3;5H*",
            b"x" * 17,
        ]
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(before=_text, after=_text)
def test_replay_plus_live_renders_the_same_screen_as_the_whole_stream(
    before: list[bytes], after: list[bytes]
) -> None:
    core = SessionCore(ring_bytes=1 << 16)
    for chunk in before:
        core.feed(chunk)
    replay = core.attach("late")
    live = [f.data for chunk in after for f in core.feed(chunk).frames]
    everything = b"".join(before) + b"".join(after)
    assert _screen(replay.data + b"".join(live)) == _screen(everything)


def test_replay_of_a_full_screen_app_redraw_matches_pyte_screen() -> None:
    """A clear-screen redraw inside the retained tail replays to the identical screen."""
    core = SessionCore(ring_bytes=256)
    for i in range(50):
        core.feed(f"line {i}\r\n".encode())
    redraw = b"\x1b[2J\x1b[H" + b"".join(f"row {r}\r\n".encode() for r in range(5))
    core.feed(redraw)
    replay = core.attach("v")
    assert replay.start > 0  # old lines were evicted
    full = b"".join(f"line {i}\r\n".encode() for i in range(50)) + redraw
    assert _screen(replay.data) == _screen(full)
