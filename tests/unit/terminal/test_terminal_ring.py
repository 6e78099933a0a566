"""Ring buffer: byte budget, monotonic offsets, snapshots from an offset."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from openova_sandbox.terminal.ring import Ring


def test_empty_ring_snapshot_is_empty_at_zero() -> None:
    ring = Ring(8)
    assert ring.snapshot() == (b"", 0, 0)
    assert (ring.start, ring.end, len(ring)) == (0, 0, 0)


def test_append_returns_end_offset_and_keeps_everything_under_capacity() -> None:
    ring = Ring(10)
    assert ring.append(b"abc") == 3
    assert ring.append(b"") == 3
    assert ring.append(b"defg") == 7
    assert ring.snapshot() == (b"abcdefg", 0, 7)


def test_eviction_trims_oldest_bytes_and_advances_start() -> None:
    ring = Ring(5)
    ring.append(b"abc")
    ring.append(b"defg")
    assert ring.snapshot() == (b"cdefg", 2, 7)
    assert ring.start == 2
    assert len(ring) == 5


def test_append_larger_than_capacity_keeps_the_tail() -> None:
    ring = Ring(4)
    ring.append(b"xy")
    assert ring.append(b"0123456789") == 12
    assert ring.snapshot() == (b"6789", 8, 12)


def test_snapshot_from_offset_inside_and_before_start() -> None:
    ring = Ring(6)
    ring.append(b"hello ")
    ring.append(b"world")
    assert ring.snapshot(8) == (b"rld", 8, 11)
    assert ring.snapshot(0) == (b" world", 5, 11)
    assert ring.snapshot(11) == (b"", 11, 11)
    assert ring.snapshot(99) == (b"", 11, 11)


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Ring(0)


@given(
    capacity=st.integers(min_value=1, max_value=64),
    chunks=st.lists(st.binary(max_size=40), max_size=30),
    probe=st.integers(min_value=0, max_value=2000),
)
def test_ring_is_always_the_tail_of_the_history(
    capacity: int, chunks: list[bytes], probe: int
) -> None:
    ring = Ring(capacity)
    history = b""
    for chunk in chunks:
        history += chunk
        assert ring.append(chunk) == len(history)
        data, start, end = ring.snapshot()
        assert end == len(history)
        assert data == history[-capacity:] if history else data == b""
        assert start == end - len(data)
        assert len(ring) <= capacity
    part, pstart, pend = ring.snapshot(probe)
    assert pend == len(history)
    assert pstart == max(min(probe, len(history)), ring.start)
    assert part == history[pstart:]
