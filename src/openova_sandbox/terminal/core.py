"""The session core: output ring, viewers, replay and the slow-viewer policy, sans-I/O.

Everything that decides *which bytes go to whom* lives here as plain method calls, so it
can be tested by feeding bytes (no asyncio, no sockets, no locks). The asyncio layer
(:mod:`.session`) only moves the frames this core hands out.

Decisions:

* ``attach`` returns the replay snapshot and registers the viewer at the snapshot's end
  offset in the same call. Because the caller runs it on the single event-loop thread
  between two ``feed`` calls, no byte is both replayed and sent live, and none is lost.
* ``feed`` appends once to the ring and hands the *same* ``bytes`` object to every live
  viewer (encode once, fan out by reference).
* Each viewer has a byte budget for frames handed out but not yet reported sent
  (``viewer_queue_bytes``). A viewer whose next frame would exceed it is marked for
  resync: its queued frames are to be dropped and it receives no live frames until the
  sender asks :meth:`SessionCore.resync`, which returns the ring's retained tail as one
  frame and moves the viewer to the current end. The laggard therefore never holds
  memory beyond its budget and never delays anyone else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .ring import Ring

DEFAULT_VIEWER_QUEUE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Frame:
    """Bytes for one viewer covering stream offsets ``[start, end)``.

    ``kind`` is ``"replay"`` (first frame after attach), ``"live"`` or ``"resync"``
    (a fresh snapshot after the viewer fell behind; ``start`` may jump forward).
    """

    viewer_id: str
    data: bytes
    start: int
    end: int
    kind: str = "live"


@dataclass
class _Viewer:
    next_offset: int
    queued: int = 0
    resync: bool = False


@dataclass(frozen=True)
class FeedResult:
    """What one ``feed`` produced: frames to enqueue, viewers newly marked for resync."""

    frames: list[Frame] = field(default_factory=list)
    resynced: list[str] = field(default_factory=list)


class SessionCore:
    """Viewers of one terminal session and the ring they replay from."""

    def __init__(
        self, *, ring_bytes: int, viewer_queue_bytes: int = DEFAULT_VIEWER_QUEUE_BYTES
    ) -> None:
        if viewer_queue_bytes <= 0:
            raise ValueError("viewer_queue_bytes must be positive")
        self._ring = Ring(ring_bytes)
        self._limit = viewer_queue_bytes
        self._viewers: dict[str, _Viewer] = {}

    @property
    def ring(self) -> Ring:
        return self._ring

    @property
    def viewer_queue_bytes(self) -> int:
        return self._limit

    @property
    def viewer_ids(self) -> list[str]:
        return list(self._viewers)

    def __len__(self) -> int:
        return len(self._viewers)

    def queued_bytes(self, viewer_id: str) -> int:
        return self._viewers[viewer_id].queued

    def needs_resync(self, viewer_id: str) -> bool:
        viewer = self._viewers.get(viewer_id)
        return viewer is not None and viewer.resync

    def attach(self, viewer_id: str) -> Frame:
        """Register ``viewer_id`` and return its replay; live frames continue at ``end``."""
        if viewer_id in self._viewers:
            raise ValueError(f"viewer {viewer_id!r} is already attached")
        data, start, end = self._ring.snapshot()
        self._viewers[viewer_id] = _Viewer(next_offset=end)
        return Frame(viewer_id, data, start, end, "replay")

    def detach(self, viewer_id: str) -> bool:
        """Forget the viewer; ``False`` when it was not attached."""
        return self._viewers.pop(viewer_id, None) is not None

    def feed(self, output: bytes | bytearray | memoryview) -> FeedResult:
        """Append process output; returns one frame per live viewer (same bytes object)."""
        data = bytes(output)
        if not data:
            return FeedResult()
        start = self._ring.end
        end = self._ring.append(data)
        result = FeedResult()
        size = len(data)
        for viewer_id, viewer in self._viewers.items():
            if viewer.resync:
                continue
            if viewer.queued + size > self._limit:
                viewer.resync = True
                viewer.queued = 0
                result.resynced.append(viewer_id)
                continue
            viewer.queued += size
            viewer.next_offset = end
            result.frames.append(Frame(viewer_id, data, start, end))
        return result

    def delivered(self, viewer_id: str, nbytes: int) -> None:
        """The sender finished sending ``nbytes`` of live frames to this viewer."""
        viewer = self._viewers.get(viewer_id)
        if viewer is not None:
            viewer.queued = max(0, viewer.queued - nbytes)

    def resync(self, viewer_id: str) -> Frame | None:
        """For a viewer marked for resync: the retained tail as one frame, else ``None``."""
        viewer = self._viewers.get(viewer_id)
        if viewer is None or not viewer.resync:
            return None
        data, start, end = self._ring.snapshot()
        viewer.resync = False
        viewer.queued = 0
        viewer.next_offset = end
        return Frame(viewer_id, data, start, end, "resync")
