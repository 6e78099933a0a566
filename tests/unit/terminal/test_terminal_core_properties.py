"""Property tests: any interleaving of output, attach (fresh or resuming ``since`` an
offset), detach, sends, acks and resyncs gives every viewer a contiguous stream — no gap,
no duplicate — where the only jumps are snapshots, marked as such and equal to the screen
as of their offset.

The model plays the part of the asyncio layer: each viewer has a FIFO of frames handed
out by ``feed``; a "send" step pops the oldest frame and reports it delivered; an "ack"
step acknowledges everything received (``sandbox.v2`` viewers); a viewer whose snapshot is
due gets it once its FIFO is empty.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st
from pyghostty import Terminal

from openova_sandbox.terminal.core import Frame, SessionCore
from openova_sandbox.terminal.screen import ScreenModel

_since = st.one_of(st.none(), st.just("last"), st.integers(0, 400))
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("out"), st.binary(min_size=1, max_size=24)),
        st.tuples(st.just("attach"), st.tuples(st.integers(0, 4), _since)),
        st.tuples(st.just("detach"), st.integers(0, 4)),
        st.tuples(st.just("send"), st.integers(0, 4)),
        st.tuples(st.just("ack"), st.integers(0, 4)),
        st.tuples(st.just("drain"), st.integers(0, 4)),
    ),
    max_size=80,
)


class History:
    def __init__(self) -> None:
        self.fed = b""

    def feed(self, data: bytes) -> None:
        self.fed += data

    def snapshot(self) -> bytes:
        return b"SNAP:" + self.fed


@dataclass
class _Model:
    since: int | None
    queue: deque[Frame] = field(default_factory=deque)
    received: list[Frame] = field(default_factory=list)


def _window(index: int, window: int) -> int | None:
    return window if index % 2 else None  # odd names speak sandbox.v2


def _check_stream(frames: list[Frame], history: bytes, since: int | None) -> None:
    """Contiguous bytes between marked snapshots; each frame true to the stream."""
    assert frames, "a viewer always gets its first frame"
    first = frames[0]
    if first.kind == "resume":
        assert since is not None and first.start == since
    else:
        assert first.kind == "snapshot"
        assert first.reason == ("attach" if since is None else "gap")
    position = first.start
    for frame in frames:
        if frame.kind == "snapshot":
            assert frame.start == frame.end >= position
            assert frame.data == b"SNAP:" + history[: frame.end], "the screen as of its offset"
        else:
            assert frame.start == position, "no gap, no duplicate"
            assert frame.data == history[frame.start : frame.end]
        position = frame.end


def _run(ops: list[tuple[str, object]], *, ring_bytes: int, limit: int, window: int) -> None:
    screen = History()
    core = SessionCore(ring_bytes=ring_bytes, viewer_queue_bytes=limit, screen=screen)
    history = b""
    viewers: dict[str, _Model] = {}
    last_seen: dict[str, int] = {}
    finished: list[tuple[list[Frame], int | None]] = []

    def send_one(name: str) -> None:
        model = viewers[name]
        if model.queue:
            frame = model.queue.popleft()
            core.handed(name, frame.end)
            model.received.append(frame)
            core.delivered(name, len(frame.data))
        else:
            frame_or_none = core.resync(name)
            if frame_or_none is not None:
                model.received.append(frame_or_none)

    def ack(name: str) -> None:
        core.ack(name, viewers[name].received[-1].end)

    def drain(name: str) -> None:
        while viewers[name].queue or core.needs_resync(name):
            send_one(name)
            ack(name)

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
        elif op == "attach":
            assert isinstance(arg, tuple)
            index, since_choice = arg
            name = f"v{index}"
            if name in viewers:
                continue
            since = last_seen.get(name) if since_choice == "last" else since_choice
            assert since is None or isinstance(since, int)
            first = core.attach(name, since=since, window=_window(index, window))
            assert first.end == len(history)
            viewers[name] = _Model(since=since, received=[first])
        else:
            name = f"v{arg}"
            if name not in viewers:
                continue
            if op == "detach":
                assert core.detach(name)
                model = viewers.pop(name)
                last_seen[name] = model.received[-1].end
                finished.append((model.received, model.since))
            elif op == "send":
                send_one(name)
            elif op == "ack":
                ack(name)
            elif op == "drain":
                drain(name)
        for index in range(5):
            name = f"v{index}"
            if name in viewers:
                bound = limit if _window(index, window) is None else window
                assert core.queued_bytes(name) <= bound
    for name in list(viewers):
        drain(name)
        assert viewers[name].received[-1].end == len(history), "caught up after draining"
        finished.append((viewers[name].received, viewers[name].since))
    for frames, since in finished:
        _check_stream(frames, history, since)


@settings(max_examples=300, deadline=None)
@given(ops=_ops)
def test_every_viewer_gets_exactly_its_stream_with_a_big_ring(
    ops: list[tuple[str, object]],
) -> None:
    _run(ops, ring_bytes=1 << 20, limit=1 << 20, window=1 << 20)


@settings(max_examples=300, deadline=None)
@given(
    ops=_ops,
    ring_bytes=st.integers(8, 64),
    limit=st.integers(1, 48),
    window=st.integers(1, 48),
)
def test_every_viewer_gets_its_stream_or_a_marked_snapshot_under_pressure(
    ops: list[tuple[str, object]], ring_bytes: int, limit: int, window: int
) -> None:
    _run(ops, ring_bytes=ring_bytes, limit=limit, window=window)


def _screen(data: bytes, *, cols: int = 40, rows: int = 8) -> tuple[str, tuple[int, int]]:
    term = Terminal(cols, rows, scrollback=0)
    term.feed(data)
    return term.text(), term.cursor


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
            b"\x1b[?1049h",  # the alternate screen, and back
            b"\x1b[?1049l",
            b"\x1b[38;2;",  # a sequence split over two chunks: attach may fall between
            b"1;2;3mrgb",
            b"\xc3",  # and a UTF-8 character
            b"\xa9",
            b"\x1b]2;title\x07",
        ]
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(before=_text, after=_text)
def test_snapshot_plus_live_renders_the_same_screen_as_the_whole_stream(
    before: list[bytes], after: list[bytes]
) -> None:
    model = ScreenModel(8, 40, scrollback_lines=0, background=False)
    core = SessionCore(ring_bytes=64, screen=model)  # a small ring: wrapped, still right
    for chunk in before:
        core.feed(chunk)
    first = core.attach("late")
    live = [f.data for chunk in after for f in core.feed(chunk).frames]
    everything = b"".join(before) + b"".join(after)
    leaves = b"\x1b[?1049l" in b"".join(after)
    if leaves and not _on_alternate(b"".join(before)):
        # ?1049l on the primary screen restores the cursor saved before (DECRC); a
        # snapshot carries the primary's saved cursor only under the alternate screen
        return
    if leaves and before[-1:] == [b"\xc3"]:
        # attached inside a UTF-8 character under the alternate screen: the primary
        # screen behind it is not carried (docs/terminal.md)
        return
    assert _screen(first.data + b"".join(live)) == _screen(everything)


def _on_alternate(data: bytes) -> bool:
    term = Terminal(40, 8, scrollback=0)
    term.feed(data)
    return bool(term.mode(1049))
