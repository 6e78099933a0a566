"""``ws_frames.LeanSocket.feed``: a keystroke's frame arriving whole is taken on a short
path; every way the same frames can arrive (whole, byte by byte, several per segment)
gives the same messages and the same closes."""

from __future__ import annotations

import asyncio
import itertools
import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openova_sandbox.api.terminal_edge.ws_frames import LeanSocket


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def writelines(self, parts: list[bytes]) -> None:
        self.written.append(b"".join(parts))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class _Owner:
    def __init__(self, max_size: int) -> None:
        self.transport = _Transport()
        self.writable = asyncio.Event()
        self.writable.set()
        self.loop = asyncio.new_event_loop()
        self.max_size = max_size
        self.close_sent = False
        self.disconnected = False
        self.gone: tuple[int, str] | None = None

    def peer_gone(self, code: int, reason: str) -> None:
        self.gone = (code, reason)

    def pong(self, payload: bytes) -> None: ...

    def close_answered(self) -> None: ...


def _masked(
    opcode: int, payload: bytes, *, fin: bool = True, mask: bytes = b"\x0f\xa5\x3c\x81"
) -> bytes:
    size = len(payload)
    if size < 126:
        head = bytes((0x80 * fin | opcode, 0x80 | size))
    elif size < 65536:
        head = struct.pack("!BBH", 0x80 * fin | opcode, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", 0x80 * fin | opcode, 0x80 | 127, size)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _run(
    segments: list[bytes], max_size: int = 1 << 20
) -> tuple[list[bytes | str], object, list[bytes]]:
    owner = _Owner(max_size)
    sock = LeanSocket(owner)  # type: ignore[arg-type]
    got: list[bytes | str] = []
    sock.set_sink(lambda message: got.append(message) or True)
    try:
        for segment in segments:
            if sock.gone:
                break
            sock.feed(segment)
    finally:
        owner.loop.close()
    return got, owner.gone, owner.transport.written


def _bytewise(stream: bytes) -> list[bytes]:
    return [stream[i : i + 1] for i in range(len(stream))]


@pytest.mark.parametrize("size", [1, 2, 5, 124, 125, 126, 127, 200, 65535, 65536])
def test_a_binary_frame_whole_or_byte_by_byte(size: int) -> None:
    payload = os.urandom(size)
    frame = _masked(0x2, payload)
    assert _run([frame]) == ([payload], None, [])
    assert _run(_bytewise(frame)) == ([payload], None, [])


def test_a_keystroke_frame_over_the_size_limit_closes_1009() -> None:
    frame = _masked(0x2, b"abcd")
    got, gone, written = _run([frame], max_size=3)
    assert (got, gone) == ([], (1009, "frame too big"))
    assert written == [b"\x88\x0f\x03\xf1frame too big"]


def test_a_whole_frame_after_a_fragment_is_a_continuation_error() -> None:
    start = _masked(0x2, b"ab", fin=False)
    got, gone, _ = _run([start, _masked(0x2, b"k")])
    assert (got, gone) == ([], (1002, "expected a continuation frame"))


_FRAMES = st.one_of(
    st.binary(min_size=0, max_size=300).map(lambda p: _masked(0x2, p)),
    st.text(max_size=40).map(lambda t: _masked(0x1, t.encode())),
    st.binary(max_size=20).map(lambda p: _masked(0x9, p)),  # a ping: answered with a pong
    st.binary(min_size=1, max_size=20).map(
        lambda p: _masked(0x2, p[:1], fin=False) + _masked(0x0, p[1:])  # fragmented
    ),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_FRAMES, min_size=1, max_size=12), st.lists(st.integers(0, 4000), max_size=8))
def test_any_segmentation_gives_the_same_messages(frames: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(frames)
    bounds = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    segments = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    whole_frames = _run(frames)  # each frame its own segment: the short path when it fits
    assert _run(segments) == whole_frames
    assert _run(_bytewise(stream)) == whole_frames
