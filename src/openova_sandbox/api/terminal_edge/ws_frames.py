"""WebSocket frames of an accepted connection, read in ``data_received`` and written to
the transport with a hand-built header (RFC 6455 §5), for the terminal viewers.

:class:`LeanSocket` is the data path of one accepted connection; its owner is the
connection (:class:`FrameOwner`): uvicorn's protocol in the control plane
(:mod:`.lean_ws`), the pty-server's own HTTP server in the pod (:mod:`.pty_server`).

- client frames are parsed as they arrive: masked, no RSV bits, control frames short and
  final, fragments reassembled, text valid UTF-8, at most ``max_size`` bytes; a
  violation closes 1002, 1007 or 1009 like ``websockets`` does; data frames go to a
  synchronous sink when the app set one (the raw attach's input goes straight to the
  PTY), else to an inbox ``receive`` awaits; pings are answered, pongs go to the owner's
  keepalive, a close is echoed;
- ``send`` writes a final unmasked frame to the transport, after waiting while the
  transport is paused (the slow-viewer accounting counts bytes handed to the socket).

No third-party import: the pod imports this without ``websockets``.
"""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from collections.abc import Callable
from typing import Protocol


class ConnectionClosed(ConnectionError):
    """Sending on a connection whose peer has gone, or that is closing."""


def apply_mask(data: bytes | bytearray, mask: bytes | bytearray) -> bytes:
    """``data`` XOR the 4-byte ``mask`` repeated (a client frame's payload, unmasked):
    one big-integer XOR, linear in the payload, no per-byte Python loop."""
    size = len(data)
    if not size:
        return b""
    key = (bytes(mask) * (size // 4 + 1))[:size]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(size, "little")


OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
CLOSE_PROTOCOL_ERROR, CLOSE_INVALID_DATA, CLOSE_TOO_BIG = 1002, 1007, 1009
INBOX_PAUSE = 64 * 1024  # queued input bytes past which reading pauses until received
_SMALL = 1024  # frames up to this size are written as one joined bytes object

_HEAD_16 = struct.Struct("!BBH").pack
_HEAD_64 = struct.Struct("!BBQ").pack

Message = bytes | str
Sink = Callable[[Message], bool]
"""Takes a data frame synchronously; returns ``False`` to leave it to ``receive``."""


def frame_header(opcode: int, size: int) -> bytes:
    """The header of a final, unmasked server frame of ``size`` payload bytes."""
    if size < 126:
        return bytes((0x80 | opcode, size))
    if size < 65536:
        return _HEAD_16(0x80 | opcode, 126, size)
    return _HEAD_64(0x80 | opcode, 127, size)


def _close_payload(code: int, reason: str = "") -> bytes:
    return code.to_bytes(2, "big") + reason.encode()


class FrameOwner(Protocol):
    """The connection a :class:`LeanSocket` reads and writes for: its transport, whether
    it may write now, its size limit, and what it does when the peer pongs or closes."""

    transport: asyncio.Transport
    writable: asyncio.Event
    loop: asyncio.AbstractEventLoop
    max_size: int
    close_sent: bool

    @property
    def disconnected(self) -> bool: ...

    def peer_gone(self, code: int, reason: str) -> None:
        """The peer closed (or broke the protocol): the connection is over."""

    def pong(self, payload: bytes) -> None:
        """A pong arrived (keepalive)."""

    def close_answered(self) -> None:
        """The peer answered our close: the closing handshake is complete."""


class LeanSocket:
    """The data path of one accepted WebSocket connection (RFC 6455 frames)."""

    def __init__(self, owner: FrameOwner) -> None:
        self._proto = owner
        self._transport = owner.transport
        self._writable = owner.writable
        self._max_size: int = owner.max_size
        self._buffer = bytearray()
        self._fragments: list[bytes] = []
        self._fragment_op = 0
        self._fragment_size = 0
        self._inbox: deque[Message] = deque()
        self._inbox_bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self._sink: Sink | None = None
        self._paused = False
        self.gone = False
        self._gone_event: asyncio.Event | None = None  # made by wait_gone, set by lost

    # ------------------------------------------------------------------ output
    def _write(self, opcode: int, data: bytes) -> None:
        size = len(data)
        if size < 126:  # (a keystroke's echo: the header inline)
            self._transport.write(bytes((0x80 | opcode, size)) + data)
        elif size <= _SMALL:
            self._transport.write(frame_header(opcode, size) + data)
        else:
            self._transport.writelines((frame_header(opcode, size), data))

    def send_now(self, data: bytes) -> bool:
        """One binary frame, written only if the transport takes it now (not paused)."""
        proto = self._proto
        if not self._writable.is_set() or self.gone or proto.close_sent or proto.disconnected:
            return False
        self._write(OP_BINARY, data)
        return True

    def send_live(self, data: bytes, start: int) -> bool:
        """:meth:`send_now` as a viewer's direct send (``Viewer.send_directly``) for the
        raw protocol: the stream offset ``start`` is not sent."""
        proto = self._proto
        if not self._writable.is_set() or self.gone or proto.close_sent or proto.disconnected:
            return False
        size = len(data)
        try:  # (called inside the core's feed: a failure must not stop it half way)
            if size < 126:  # (a keystroke's echo: the frame as one bytes, no call)
                self._transport.write(bytes((0x82, size)) + data)
            else:
                self._write(OP_BINARY, data)
        except Exception:  # a transport closed under us: queued, the pump meets it
            return False
        return True

    def send_live_at(self, data: bytes, start: int) -> bool:
        """:meth:`send_live` for ``sandbox.v2``: the payload follows its 8-byte
        big-endian stream offset (``terminal_wire.pack_frame``)."""
        proto = self._proto
        if not self._writable.is_set() or self.gone or proto.close_sent or proto.disconnected:
            return False
        size = len(data) + 8
        try:  # (as in send_live)
            if size < 126:
                self._transport.write(bytes((0x82, size)) + start.to_bytes(8, "big") + data)
            else:
                self._write(OP_BINARY, start.to_bytes(8, "big") + data)
        except Exception:
            return False
        return True

    async def send(self, data: bytes, opcode: int = OP_BINARY) -> None:
        """One final data frame; waits while the transport is paused (back-pressure)."""
        if not self._writable.is_set():
            await self._writable.wait()
        if self.gone or self._proto.close_sent or self._proto.disconnected:
            raise ConnectionClosed()
        self._write(opcode, data)

    # ------------------------------------------------------------------ input
    def set_sink(self, sink: Sink | None) -> None:
        """Data frames go to ``sink`` as they are parsed (while nothing is queued ahead of
        them, so the order of frames is kept)."""
        self._sink = sink

    async def receive(self) -> Message | None:
        """The next data frame the sink left; ``None`` once the peer has gone."""
        while not self._inbox:
            if self.gone:
                return None
            self._waiter = self._proto.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        message = self._inbox.popleft()
        self._inbox_bytes -= len(message)
        if self._paused and self._inbox_bytes < INBOX_PAUSE:
            self._paused = False
            if not self._transport.is_closing():
                self._transport.resume_reading()
        return message

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _deliver(self, message: Message) -> None:
        if self._proto.close_sent:  # the app is past close: discard, like uvicorn
            return
        sink = self._sink
        if sink is not None and not self._inbox:
            try:
                took = sink(message)
            except Exception:  # left to receive, where the app meets the failure again
                took = False
            if took:
                return
        self._queue(message)

    def _queue(self, message: Message) -> None:
        self._inbox.append(message)
        self._inbox_bytes += len(message)
        if self._inbox_bytes >= INBOX_PAUSE and not self._paused:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def lost(self) -> None:
        self.gone = True
        self._wake()
        if self._gone_event is not None:
            self._gone_event.set()

    async def wait_gone(self) -> None:
        """Until the peer has gone (closed or dropped); frames are left where they are."""
        if self._gone_event is None:
            self._gone_event = asyncio.Event()
        if not self.gone:
            await self._gone_event.wait()

    def _fail(self, code: int, reason: str = "") -> None:
        """A protocol violation by the client: close with ``code`` and drop the link."""
        proto = self._proto
        if not proto.close_sent and not self._transport.is_closing():
            self._write(OP_CLOSE, _close_payload(code, reason))
        proto.close_sent = True
        proto.peer_gone(code, reason)
        self._buffer.clear()
        self.lost()
        self._transport.close()

    def feed(self, data: bytes) -> None:
        """Parse what arrived: whole frames are handled, a partial one waits for more."""
        buffer = self._buffer
        if buffer:
            buffer += data
            view: bytes | bytearray = buffer
        else:
            view = data
            end = len(data)
            if (  # one whole final binary frame, masked, of 1-125 bytes (a keystroke)
                6 < end < 132
                and data[0] == 0x82
                and data[1] == 0x7A + end  # 0x80 (mask) | end - 6
                and end - 6 <= self._max_size
                and not self._fragments
                and not self.gone
            ):
                # apply_mask and _deliver, inline (per keystroke)
                if end == 7:
                    payload = bytes((data[6] ^ data[2],))
                else:
                    size = end - 6
                    key = (data[2:6] * (size // 4 + 1))[:size]
                    payload = (
                        int.from_bytes(data[6:], "little") ^ int.from_bytes(key, "little")
                    ).to_bytes(size, "little")
                if self._proto.close_sent:  # the app is past close: discard
                    return
                sink = self._sink
                if sink is not None and not self._inbox:
                    try:
                        took = sink(payload)
                    except Exception:  # left to receive, where the app meets it again
                        took = False
                    if took:
                        return
                self._queue(payload)
                return
        end = len(view)
        pos = 0
        while end - pos >= 2 and not self.gone:
            b0, b1 = view[pos], view[pos + 1]
            size = b1 & 0x7F
            at = pos + 2
            if size == 126:
                if end - at < 2:
                    break
                size = int.from_bytes(view[at : at + 2], "big")
                at += 2
            elif size == 127:
                if end - at < 8:
                    break
                size = int.from_bytes(view[at : at + 8], "big")
                at += 8
            if not b1 & 0x80:
                self._fail(CLOSE_PROTOCOL_ERROR, "incorrect masking")
                return
            if size > self._max_size or self._fragment_size + size > self._max_size:
                self._fail(CLOSE_TOO_BIG, "frame too big")
                return
            if end - at < 4 + size:
                break
            payload = apply_mask(view[at + 4 : at + 4 + size], view[at : at + 4])
            pos = at + 4 + size
            self._frame(b0, payload)
        if self.gone:
            return
        if buffer:
            del buffer[:pos]
        elif pos < end:
            buffer += view[pos:]

    def _frame(self, b0: int, payload: bytes) -> None:
        if b0 & 0x70:
            self._fail(CLOSE_PROTOCOL_ERROR, "reserved bits must be 0")
            return
        opcode, fin = b0 & 0x0F, b0 & 0x80
        if opcode in (OP_TEXT, OP_BINARY):
            if self._fragments:
                self._fail(CLOSE_PROTOCOL_ERROR, "expected a continuation frame")
            elif fin:
                self._message(opcode, payload)
            else:
                self._fragment_op = opcode
                self._fragments.append(payload)
                self._fragment_size = len(payload)
        elif opcode == OP_CONT:
            if not self._fragments:
                self._fail(CLOSE_PROTOCOL_ERROR, "unexpected continuation frame")
                return
            self._fragments.append(payload)
            self._fragment_size += len(payload)
            if fin:
                joined = b"".join(self._fragments)
                self._fragments, self._fragment_size = [], 0
                self._message(self._fragment_op, joined)
        elif opcode >= OP_CLOSE and (not fin or len(payload) > 125):
            self._fail(CLOSE_PROTOCOL_ERROR, "bad control frame")
        elif opcode == OP_PING:
            if not self._proto.close_sent and not self._transport.is_closing():
                self._write(OP_PONG, payload)
        elif opcode == OP_PONG:
            self._proto.pong(payload)
        elif opcode == OP_CLOSE:
            self._close(payload)
        else:
            self._fail(CLOSE_PROTOCOL_ERROR, f"invalid opcode {opcode:#x}")

    def _message(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_BINARY:
            self._deliver(payload)
            return
        try:
            text = payload.decode()
        except UnicodeDecodeError:
            self._fail(CLOSE_INVALID_DATA, "invalid UTF-8")
            return
        self._deliver(text)

    def _close(self, payload: bytes) -> None:
        proto = self._proto
        if len(payload) == 1:
            self._fail(CLOSE_PROTOCOL_ERROR, "close frame too short")
            return
        code = int.from_bytes(payload[:2], "big") if payload else 1005
        try:
            reason = payload[2:].decode()
        except UnicodeDecodeError:
            self._fail(CLOSE_INVALID_DATA, "invalid UTF-8")
            return
        if proto.close_sent:  # the peer answered our close: the handshake is complete
            proto.close_answered()
        elif not self._transport.is_closing():
            proto.peer_gone(code, reason)
            self._write(OP_CLOSE, payload[:2])  # echo the code (none when none was sent)
            proto.close_sent = True
        self.lost()
        self._transport.close()
