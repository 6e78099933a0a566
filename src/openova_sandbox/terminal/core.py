"""The session core: output ring, screen, viewers, resume and flow control, sans-I/O.

Everything that decides *which bytes go to whom* lives here as plain method calls, so it
can be tested by feeding bytes (no asyncio, no sockets, no locks). The asyncio layer
(:mod:`.session`) only moves the frames this core hands out. The screen is reached
through the small :class:`Screen` protocol (the real one is :class:`.screen.ScreenModel`).

Decisions:

* ``feed`` appends once to the ring, feeds the same bytes to the screen, and hands the
  *same* ``bytes`` object to every live viewer (encode once, fan out by reference). The
  ring and the screen therefore always cover the same stream: a snapshot taken between
  two ``feed`` calls is the screen as of the ring's ``end``.
* ``attach`` returns the viewer's first frame and registers it at that frame's end in the
  same call (single event-loop thread, between two ``feed`` calls: no byte is both in the
  first frame and sent live, and none is lost). Without ``since`` it is a snapshot of the
  screen (reason ``attach``); with ``since`` still held by the ring it is exactly the
  bytes ``[since, end)`` (``resume``); otherwise (or when those bytes are more than the
  viewer's window) a snapshot with reason ``gap``.
* Flow control, two rules:

  - **raw viewers** (``window=None``): a byte budget for frames handed out but not yet
    reported sent (``viewer_queue_bytes``). Over it, the viewer is marked for resync:
    its queued frames are dropped and it receives no live frames until the sender asks
    :meth:`SessionCore.resync`, which returns a snapshot (reason ``resync``) at the
    current end — never the raw tail of the ring.
  - **acknowledging viewers** (``window=N``, the ``sandbox.v2`` protocol): a viewer may
    be at most ``N`` bytes past the last offset it acknowledged as rendered. Beyond that
    its queue is dropped; the snapshot comes once it has acknowledged everything it was
    sent (a phone on a bad network gets one snapshot instead of a queue, and never slows
    the program). The snapshot does not count against the window.

  Either way a laggard never holds memory beyond its budget and never delays anyone.
* :meth:`SessionCore.refresh` marks a viewer for a snapshot with another reason
  (``resize``): its queue is superseded by the screen at the new size.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple, Protocol

from .ring import Ring

DEFAULT_VIEWER_QUEUE_BYTES = 4 * 1024 * 1024

LIVE, SNAPSHOT, RESUME = "live", "snapshot", "resume"


class Screen(Protocol):
    """What the core needs of a screen model."""

    def feed(self, data: bytes) -> None: ...

    def snapshot(self) -> bytes: ...


class NoScreen:
    """A screen that keeps nothing: snapshots are empty (tests of the byte paths)."""

    def feed(self, data: bytes) -> None:
        return None

    def snapshot(self) -> bytes:
        return b""


class Frame(NamedTuple):
    """Bytes for one viewer covering stream offsets ``[start, end)``. (Immutable values
    made on every flush: a named tuple is built ~4x faster than a frozen dataclass.)

    ``kind`` is ``"live"``, ``"resume"`` (exact bytes from the requested offset) or
    ``"snapshot"`` (the screen as of ``end``; ``start == end``; ``reason`` says why:
    ``attach``, ``resync``, ``resize`` or ``gap``).
    """

    viewer_id: str
    data: bytes
    start: int
    end: int
    kind: str = LIVE
    reason: str = ""


@dataclass
class _Viewer:
    next_offset: int
    window: int | None = None
    queued: int = 0
    acked: int = 0  # window viewers: the offset the client has rendered up to
    sent: int = 0  # end offset of the last frame handed to the sender (before it is sent)
    resync: str = ""  # non-empty: marked for a snapshot, with this reason


class FeedResult(NamedTuple):
    """What one ``feed`` produced: frames to enqueue, viewers newly marked for resync."""

    frames: list[Frame]
    resynced: list[str]


_feed_result = partial(tuple.__new__, FeedResult)  # (no Python frame: made per flush)

Take = Callable[[bytes, int], bool]
"""``take(data, start)``: a viewer's sender writes a live frame at once when it can
(``True``: taken whole; ``False``: it is left in the feed's result to be queued)."""


class SessionCore:
    """Viewers of one terminal session, the ring they resume from and its screen."""

    def __init__(
        self,
        *,
        ring_bytes: int,
        viewer_queue_bytes: int = DEFAULT_VIEWER_QUEUE_BYTES,
        screen: Screen | None = None,
    ) -> None:
        if viewer_queue_bytes <= 0:
            raise ValueError("viewer_queue_bytes must be positive")
        self._ring = Ring(ring_bytes)
        self._limit = viewer_queue_bytes
        self._screen: Screen = screen if screen is not None else NoScreen()
        self._viewers: dict[str, _Viewer] = {}

    @property
    def ring(self) -> Ring:
        return self._ring

    @property
    def screen(self) -> Screen:
        return self._screen

    @property
    def end(self) -> int:
        return self._ring.end

    @property
    def viewer_queue_bytes(self) -> int:
        return self._limit

    @property
    def viewer_ids(self) -> list[str]:
        return list(self._viewers)

    def __len__(self) -> int:
        return len(self._viewers)

    def queued_bytes(self, viewer_id: str) -> int:
        """Bytes counted against the viewer's budget (window: past its last ack)."""
        viewer = self._viewers[viewer_id]
        if viewer.window is not None:
            return 0 if viewer.resync else viewer.next_offset - viewer.acked
        return viewer.queued

    def needs_resync(self, viewer_id: str) -> bool:
        viewer = self._viewers.get(viewer_id)
        return viewer is not None and bool(viewer.resync)

    def resync_ready(self, viewer_id: str) -> bool:
        """Marked, and (window viewers) everything it was sent is acknowledged."""
        viewer = self._viewers.get(viewer_id)
        if viewer is None or not viewer.resync:
            return False
        if viewer.window is None or viewer.resync != "resync":
            return True
        return viewer.acked >= viewer.sent

    def attach(
        self, viewer_id: str, *, since: int | None = None, window: int | None = None
    ) -> Frame:
        """Register ``viewer_id`` and return its first frame; live frames continue at ``end``."""
        if viewer_id in self._viewers:
            raise ValueError(f"viewer {viewer_id!r} is already attached")
        if window is not None and window <= 0:
            raise ValueError("window must be positive")
        end = self._ring.end
        held = since is not None and self._ring.start <= since <= end
        if held and window is not None and since is not None and end - since > window:
            held = False  # more than the viewer's window: the screen instead of a queue
        if held:
            data, start, end = self._ring.snapshot(since)
            frame = Frame(viewer_id, data, start, end, RESUME)
        else:
            reason = "attach" if since is None else "gap"
            frame = Frame(viewer_id, self._screen.snapshot(), end, end, SNAPSHOT, reason)
        self._viewers[viewer_id] = _Viewer(
            next_offset=end, window=window, acked=frame.start, sent=frame.end
        )
        return frame

    def detach(self, viewer_id: str) -> bool:
        """Forget the viewer; ``False`` when it was not attached."""
        return self._viewers.pop(viewer_id, None) is not None

    def feed(
        self,
        output: bytes | bytearray | memoryview,
        *,
        to_screen: bool = True,
        take: Mapping[str, Take] | None = None,
    ) -> FeedResult:
        """Append process output; returns one frame per live viewer (same bytes object).
        ``to_screen=False``: the caller feeds the screen itself, before anything can take
        a snapshot (the session does, once the frames are sent).

        ``take`` (viewer id → that viewer's synchronous write, tried first for its live
        frame): a frame taken is not in the result and is counted exactly as a frame
        returned, then reported with :meth:`handed` (its end) and :meth:`delivered` (its
        size) — the sender wrote it before anything else could happen — without the
        objects (a keystroke's echo to a waiting viewer makes no ``Frame``)."""
        data = output if type(output) is bytes else bytes(output)
        if not data:
            return FeedResult([], [])
        size = len(data)
        end = self._ring.append(data)
        start = end - size
        if to_screen:
            self._screen.feed(data)
        frames: list[Frame] = []
        resynced: list[str] = []
        for viewer_id, viewer in self._viewers.items():
            if viewer.resync:
                continue
            if viewer.window is not None:
                over = end - viewer.acked > viewer.window
            else:
                over = viewer.queued + size > self._limit
            if over:
                viewer.resync = "resync"
                viewer.queued = 0
                resynced.append(viewer_id)
                continue
            viewer.next_offset = end
            send = take.get(viewer_id) if take is not None else None
            if send is not None and send(data, start):
                # handed (sent = max(sent, end)) and delivered (queued + size - size)
                if viewer.sent < end:
                    viewer.sent = end
                continue
            viewer.queued += size
            frames.append(Frame(viewer_id, data, start, end))
        return _feed_result((frames, resynced))

    def handed(self, viewer_id: str, end: int) -> None:
        """The sender took a frame ending at ``end`` for the socket (acks may reach it)."""
        viewer = self._viewers.get(viewer_id)
        if viewer is not None:
            viewer.sent = max(viewer.sent, end)

    def delivered(self, viewer_id: str, nbytes: int) -> None:
        """The sender finished sending ``nbytes`` of frames to a viewer (the raw budget)."""
        viewer = self._viewers.get(viewer_id)
        if viewer is not None:
            viewer.queued = max(0, viewer.queued - nbytes)

    def ack(self, viewer_id: str, offset: int) -> bool:
        """A window viewer rendered up to ``offset``; ``True`` when a resync became ready."""
        viewer = self._viewers.get(viewer_id)
        if viewer is None:
            return False
        ready_before = self.resync_ready(viewer_id)
        viewer.acked = max(viewer.acked, min(offset, viewer.sent))
        return not ready_before and self.resync_ready(viewer_id)

    def refresh(self, viewer_id: str, reason: str) -> bool:
        """Mark a viewer for a snapshot (``reason``), its queue superseded; ``False`` if gone."""
        viewer = self._viewers.get(viewer_id)
        if viewer is None:
            return False
        if viewer.resync != "resync":  # a pending lag resync still waits for its acks
            viewer.resync = reason
        viewer.queued = 0
        return True

    def resync(self, viewer_id: str) -> Frame | None:
        """For a viewer whose snapshot is due: the screen now as one frame, else ``None``."""
        if not self.resync_ready(viewer_id):
            return None
        viewer = self._viewers[viewer_id]
        end = self._ring.end
        frame = Frame(viewer_id, self._screen.snapshot(), end, end, SNAPSHOT, viewer.resync)
        viewer.resync = ""
        viewer.queued = 0
        viewer.next_offset = end
        viewer.acked = viewer.sent = end  # the snapshot itself does not count
        return frame
