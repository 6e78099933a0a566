"""``LeanSocket.send_live`` / ``send_live_at`` (a viewer's direct send, called inside the
core's feed) write exactly the frame ``send_now`` writes for the same payload (raw: the
bytes; ``sandbox.v2``: the 8-byte offset, then the bytes), refuse exactly when
``send_now`` does, and answer ``False`` instead of raising when the transport fails."""

from __future__ import annotations

import asyncio

import pytest

from openova_sandbox.api.terminal_edge.ws_frames import LeanSocket
from openova_sandbox.domain.terminal_wire import pack_frame


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.broken = False

    def write(self, data: bytes) -> None:
        if self.broken:
            raise RuntimeError("unable to perform operation: the handler is closed")
        self.written.append(bytes(data))

    def writelines(self, parts: list[bytes]) -> None:
        self.write(b"".join(parts))

    def is_closing(self) -> bool:
        return False


class _Owner:
    def __init__(self) -> None:
        self.transport = _Transport()
        self.writable = asyncio.Event()
        self.writable.set()
        self.loop = asyncio.new_event_loop()
        self.max_size = 1 << 20
        self.close_sent = False
        self.disconnected = False

    def peer_gone(self, code: int, reason: str) -> None: ...

    def pong(self, payload: bytes) -> None: ...

    def close_answered(self) -> None: ...


def _socket() -> tuple[LeanSocket, _Owner]:
    owner = _Owner()
    return LeanSocket(owner), owner  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, 1, 3, 117, 118, 125, 126, 127, 1024, 1025, 70_000])
def test_the_live_sends_write_what_send_now_writes(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    start = 0x0102030405060708
    for live, payload in ((True, data), (False, pack_frame(start, data))):
        sock, owner = _socket()
        reference, ref_owner = _socket()
        sent = sock.send_live(data, start) if live else sock.send_live_at(data, start)
        assert sent is True
        assert reference.send_now(payload) is True
        assert owner.transport.written and b"".join(owner.transport.written) == b"".join(
            ref_owner.transport.written
        )


@pytest.mark.parametrize("state", ["paused", "gone", "close_sent", "disconnected"])
def test_the_live_sends_refuse_when_send_now_does(state: str) -> None:
    for method in ("send_live", "send_live_at", "send_now"):
        sock, owner = _socket()
        if state == "paused":
            owner.writable.clear()
        elif state == "gone":
            sock.gone = True
        else:
            setattr(owner, state, True)
        send = getattr(sock, method)
        assert (send(b"k") if method == "send_now" else send(b"k", 7)) is False
        assert owner.transport.written == []


def test_a_failing_transport_is_a_refusal_not_an_exception() -> None:
    for method in ("send_live", "send_live_at"):
        sock, owner = _socket()
        owner.transport.broken = True
        assert getattr(sock, method)(b"k", 7) is False
        assert getattr(sock, method)(b"x" * 5000, 7) is False
