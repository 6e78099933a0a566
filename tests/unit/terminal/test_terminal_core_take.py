"""``SessionCore.feed(take=...)`` (a frame the sender writes at once makes no ``Frame``)
against the general path: ``feed`` returning every frame, then ``handed`` and
``delivered`` for the frames the sender wrote at once. Any interleaving of output,
attaches (fresh, resuming, raw or acknowledging), detaches, sends, acks, refreshes and
resyncs, with any pattern of frames taken or refused, gives the same frames, the same
resync marks, the same first frames and snapshots, and the same accounting for every
viewer (each viewer's whole state is compared after every step)."""

from __future__ import annotations

from collections import deque
from functools import partial

from hypothesis import given, settings
from hypothesis import strategies as st

from openova_sandbox.terminal.core import Frame, SessionCore


class History:
    def __init__(self) -> None:
        self.fed = b""

    def feed(self, data: bytes) -> None:
        self.fed += data

    def snapshot(self) -> bytes:
        return b"SNAP:" + self.fed


_ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("out"),
            st.tuples(
                st.binary(min_size=0, max_size=40),
                st.lists(st.booleans(), max_size=5),
                st.sets(st.integers(0, 4)),  # viewers with no synchronous send now
            ),
        ),
        st.tuples(
            st.just("attach"),
            st.tuples(st.integers(0, 4), st.one_of(st.none(), st.integers(0, 300))),
        ),
        st.tuples(st.just("detach"), st.integers(0, 4)),
        st.tuples(st.just("send"), st.integers(0, 4)),
        st.tuples(st.just("ack"), st.tuples(st.integers(0, 4), st.integers(0, 400))),
        st.tuples(st.just("refresh"), st.integers(0, 4)),
        st.tuples(st.just("resync"), st.integers(0, 4)),
    ),
    max_size=100,
)


def _core(limit: int) -> SessionCore:
    return SessionCore(ring_bytes=128, viewer_queue_bytes=limit, screen=History())


def _same(general: SessionCore, fast: SessionCore) -> None:
    assert general._viewers == fast._viewers  # every field of every viewer, in order
    assert general.end == fast.end
    assert general.ring.snapshot() == fast.ring.snapshot()
    assert general.screen.snapshot() == fast.screen.snapshot()


@settings(max_examples=400, deadline=None)
@given(ops=_ops, limit=st.integers(1, 90), window=st.integers(1, 90))
def test_frames_taken_at_once_are_accounted_as_sent_frames(
    ops: list[tuple[str, object]], limit: int, window: int
) -> None:
    general, fast = _core(limit), _core(limit)
    queues: dict[str, deque[Frame]] = {}  # what the general side's sender holds
    fast_queues: dict[str, deque[Frame]] = {}
    for op, arg in ops:
        if op == "out":
            data, decisions, absent = arg  # type: ignore[misc]
            wanted = deque(decisions)
            offered: list[tuple[str, bytes, int]] = []
            answers: dict[str, bool] = {}

            def take(
                chunk: bytes,
                start: int,
                viewer_id: str,
                offered: list[tuple[str, bytes, int]] = offered,
                wanted: deque[bool] = wanted,
                answers: dict[str, bool] = answers,
            ) -> bool:
                offered.append((viewer_id, chunk, start))
                answers[viewer_id] = wanted.popleft() if wanted else False
                return answers[viewer_id]

            senders = {v: partial(take, viewer_id=v) for v in queues if int(v[1:]) not in absent}
            result = general.feed(data)
            fast_result = fast.feed(data, take=senders)
            assert fast_result.resynced == result.resynced
            # every live frame of a viewer with a send is offered, in order, with its
            # bytes and offset
            assert offered == [
                (f.viewer_id, f.data, f.start) for f in result.frames if f.viewer_id in senders
            ]
            kept: list[Frame] = []
            for frame in result.frames:
                took = answers.get(frame.viewer_id, False)
                if took:  # the general path: written at once, reported at once
                    general.handed(frame.viewer_id, frame.end)
                    general.delivered(frame.viewer_id, len(frame.data))
                else:
                    kept.append(frame)
            assert fast_result.frames == kept
            for frame in kept:
                queues[frame.viewer_id].append(frame)
                fast_queues[frame.viewer_id].append(frame)
            for viewer_id in result.resynced:
                queues[viewer_id].clear()
                fast_queues[viewer_id].clear()
        elif op == "attach":
            index, since = arg  # type: ignore[misc]
            viewer_id = f"v{index}"
            if viewer_id in queues:
                continue
            viewer_window = window if index % 2 else None
            first = general.attach(viewer_id, since=since, window=viewer_window)
            assert fast.attach(viewer_id, since=since, window=viewer_window) == first
            queues[viewer_id], fast_queues[viewer_id] = deque(), deque()
        elif op == "detach":
            viewer_id = f"v{arg}"
            assert general.detach(viewer_id) == fast.detach(viewer_id)
            queues.pop(viewer_id, None)
            fast_queues.pop(viewer_id, None)
        elif op == "send":
            viewer_id = f"v{arg}"
            if queues.get(viewer_id):
                frame = queues[viewer_id].popleft()
                assert fast_queues[viewer_id].popleft() == frame
                for core in (general, fast):
                    core.handed(viewer_id, frame.end)
                    core.delivered(viewer_id, len(frame.data))
        elif op == "ack":
            index, offset = arg  # type: ignore[misc]
            viewer_id = f"v{index}"
            assert general.ack(viewer_id, offset) == fast.ack(viewer_id, offset)
        elif op == "refresh":
            viewer_id = f"v{arg}"
            assert general.refresh(viewer_id, "resize") == fast.refresh(viewer_id, "resize")
        elif op == "resync":
            viewer_id = f"v{arg}"
            frame = general.resync(viewer_id)
            assert fast.resync(viewer_id) == frame
        _same(general, fast)
