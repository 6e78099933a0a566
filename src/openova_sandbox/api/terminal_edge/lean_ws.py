"""A lean WebSocket path for terminal viewers: uvicorn's websockets-sansio protocol, with
the frames of an accepted connection read and written without the ASGI message loop.

uvicorn's ``ws="websockets-sansio"`` protocol parses every client frame with the
``websockets`` state machine, turns it into an ASGI ``websocket.receive`` message, queues
it, pauses reading until the app took it, and frames every ``websocket.send`` through the
same state machine: on a keystroke that is most of the server's CPU (issue 10, "Where the
time goes"). :class:`LeanWebSocketProtocol` is that protocol with one addition: once the
handshake is accepted, the app may *take* the connection's data path
(:func:`take_lean`), after which

- client frames are parsed in ``data_received`` (RFC 6455 §5: masked, no RSV bits,
  control frames short and final, fragments reassembled, text valid UTF-8, at most
  ``ws_max_size`` bytes; a violation closes 1002, 1007 or 1009 like ``websockets``
  does); data frames go to a synchronous sink when the app set one (the raw attach's
  input goes straight to the PTY), else to an inbox ``receive`` awaits; pings are
  answered, pongs feed uvicorn's keepalive, a close is echoed;
- ``send`` writes a final unmasked frame with a hand-built header to the transport,
  after waiting while the transport is paused (the slow-viewer accounting counts bytes
  handed to the socket, as before).

Everything else stays uvicorn's: the handshake, the app's ``websocket.close`` (the
closing handshake and its timer), keepalive pings, shutdown, ``connection_lost``. Before
the take, and for apps that never take (the HTTP API, any non-terminal socket), the
protocol is uvicorn's unchanged. Extensions (permessage-deflate) disable the take: the
project runs with them off (:mod:`openova_sandbox.serving`).

The app finds the take in ``scope["extensions"]["openova.lean-ws"]``; starlette's test
client and other servers do not offer it, and the channel then uses ASGI as before.
"""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Request

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - the C speedups ship with websockets' wheels
    from websockets.utils import apply_mask

EXTENSION = "openova.lean-ws"

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


def _took(sink: Sink, message: Message) -> bool:
    try:
        return sink(message)
    except Exception:  # left to receive, where the app meets the failure again
        return False


def _close_payload(code: int, reason: str = "") -> bytes:
    return code.to_bytes(2, "big") + reason.encode()


class LeanSocket:
    """The data path of one accepted connection, taken from :class:`LeanWebSocketProtocol`."""

    def __init__(self, proto: LeanWebSocketProtocol) -> None:
        self._proto = proto
        self._transport = proto.transport
        self._writable = proto.writable
        self._max_size: int = proto.config.ws_max_size
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

    # ------------------------------------------------------------------ output
    def _write(self, opcode: int, data: bytes) -> None:
        header = frame_header(opcode, len(data))
        if len(data) <= _SMALL:
            self._transport.write(header + data)
        else:
            self._transport.writelines((header, data))

    def send_now(self, data: bytes) -> bool:
        """One binary frame, written only if the transport takes it now (not paused)."""
        proto = self._proto
        if not self._writable.is_set() or self.gone or proto.close_sent or proto.disconnected:
            return False
        self._write(OP_BINARY, data)
        return True

    async def send(self, data: bytes, opcode: int = OP_BINARY) -> None:
        """One final data frame; waits while the transport is paused (back-pressure)."""
        if not self._writable.is_set():
            await self._writable.wait()
        if self.gone or self._proto.close_sent or self._proto.disconnected:
            raise ClientDisconnected()
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
        if sink is not None and not self._inbox and _took(sink, message):
            return
        self._inbox.append(message)
        self._inbox_bytes += len(message)
        if self._inbox_bytes >= INBOX_PAUSE and not self._paused:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def lost(self) -> None:
        self.gone = True
        self._wake()

    def _fail(self, code: int, reason: str = "") -> None:
        """A protocol violation by the client: close with ``code`` and drop the link."""
        proto = self._proto
        if not proto.close_sent and not self._transport.is_closing():
            self._write(OP_CLOSE, _close_payload(code, reason))
        proto.close_sent = True
        proto.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
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
            self._proto.handle_pong(Frame(Opcode.PONG, payload))
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
            if proto.close_timer is not None:
                proto.close_timer.cancel()
                proto.close_timer = None
        elif not self._transport.is_closing():
            proto.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
            self._write(OP_CLOSE, payload[:2])  # echo the code (none when none was sent)
            proto.close_sent = True
        self.lost()
        self._transport.close()


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol that lets the app take the data path of an
    accepted connection (:class:`LeanSocket`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lean: LeanSocket | None = None

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        if self.handshake_initiated and self.response.status_code == 101:
            self.scope["extensions"][EXTENSION] = {"take": self._take}

    def _take(self) -> LeanSocket | None:
        ready = (
            self.handshake_complete
            and self.initial_response is None
            and not self.close_sent
            and not self.disconnected
            and not self.conn.extensions
            and not self.conn.reader.buffer  # nothing half-parsed by websockets
        )
        if not ready or self.lean is not None:
            return None
        lean = LeanSocket(self)
        while not self.queue.empty():  # what uvicorn queued before the take (rare)
            message = self.queue.get_nowait()
            if message["type"] == "websocket.receive":
                data = message.get("bytes")
                lean._deliver(data if data is not None else str(message.get("text") or ""))
            elif message["type"] == "websocket.disconnect":
                lean.gone = True
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self.lean = lean
        return lean

    def data_received(self, data: bytes) -> None:
        lean = self.lean
        if lean is None:
            super().data_received(data)
        elif not lean.gone:
            lean.feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.lean is not None:
            self.lean.lost()


def take_lean(scope: Mapping[str, Any]) -> LeanSocket | None:
    """The lean data path of an accepted WebSocket, when its server offers one."""
    offer = (scope.get("extensions") or {}).get(EXTENSION)
    if not offer:
        return None
    take: Callable[[], LeanSocket | None] = offer["take"]
    return take()
