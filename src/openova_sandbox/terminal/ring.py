"""A replay buffer bounded in bytes, addressed by monotonic stream offsets.

Why offsets and not chunk counts: a viewer's position in the output stream must survive
eviction. Every byte the process ever wrote has one offset (``0`` is the first byte); the
ring keeps the last ``capacity`` bytes, ``start`` moves forward as old bytes fall out and
``end`` is the offset one past the newest byte. A viewer that knows its offset can ask for
"everything from here" and learn precisely whether a hole opened (its offset < ``start``).

Chunks are kept as the immutable ``bytes`` objects that were appended (no copying on the
hot path); only the oldest chunk is trimmed when the budget is exceeded. Sans-I/O: no
asyncio, no sockets, no locks.
"""

from __future__ import annotations

from collections import deque


class Ring:
    """Keeps the newest ``capacity`` bytes of a stream."""

    __slots__ = ("_capacity", "_chunks", "_end", "_size")

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("ring capacity must be positive")
        self._capacity = capacity
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._end = 0

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def start(self) -> int:
        """Offset of the oldest retained byte."""
        return self._end - self._size

    @property
    def end(self) -> int:
        """Offset one past the newest byte (total bytes ever appended)."""
        return self._end

    def __len__(self) -> int:
        return self._size

    def append(self, data: bytes) -> int:
        """Add ``data`` and evict the oldest bytes beyond capacity; returns the new end."""
        if not data:
            return self._end
        self._end += len(data)
        if len(data) >= self._capacity:
            self._chunks.clear()
            kept = data[len(data) - self._capacity :]
            self._chunks.append(kept)
            self._size = len(kept)
            return self._end
        self._chunks.append(data)
        self._size += len(data)
        excess = self._size - self._capacity
        while excess > 0:
            head = self._chunks[0]
            if len(head) <= excess:
                self._chunks.popleft()
                self._size -= len(head)
                excess -= len(head)
            else:
                self._chunks[0] = head[excess:]
                self._size -= excess
                excess = 0
        return self._end

    def snapshot(self, from_offset: int | None = None) -> tuple[bytes, int, int]:
        """Retained bytes from ``from_offset`` (clamped to ``start``) as ``(data, start, end)``.

        ``start`` in the result is where the returned bytes begin: greater than
        ``from_offset`` when part of the requested range was already evicted.
        """
        begin = self.start if from_offset is None else max(from_offset, self.start)
        if begin >= self._end:
            return b"", self._end, self._end
        skip = begin - self.start
        if skip == 0:
            data = b"".join(self._chunks)
        else:
            parts: list[bytes] = []
            for chunk in self._chunks:
                if skip >= len(chunk):
                    skip -= len(chunk)
                    continue
                parts.append(chunk[skip:] if skip else chunk)
                skip = 0
            data = b"".join(parts)
        return data, begin, self._end
