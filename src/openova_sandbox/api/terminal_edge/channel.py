"""Starlette's WebSocket as a ``services.terminal_port.Channel``.

Under the project's uvicorn protocol (:mod:`.lean_ws`) an accepted channel takes the
connection's data path: frames are written to the transport and parsed in
``data_received`` without the ASGI message loop. Elsewhere (starlette's test client,
another server) it speaks ASGI, with the same behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Mapping

from starlette.websockets import WebSocket, WebSocketState

from ...domain.terminal_wire import RAW, SUBPROTOCOL_V2, clip_reason
from .lean_ws import take_lean
from .ws_frames import OP_TEXT, LeanSocket, Sink


def offered_protocol(websocket: WebSocket) -> str:
    """``"sandbox.v2"`` when the client offered it, else ``""`` (raw attach)."""
    offered = websocket.scope.get("subprotocols") or ()
    return SUBPROTOCOL_V2 if SUBPROTOCOL_V2 in offered else RAW


_EARLY_MAX = 65536


class WebSocketChannel:
    """An accepted WebSocket. Build it with :meth:`accept`."""

    def __init__(self, websocket: WebSocket, protocol: str, lean: LeanSocket | None = None) -> None:
        self.websocket = websocket
        self._protocol = protocol
        self._query: Mapping[str, str] = dict(websocket.query_params)
        self._gone = False
        self._lean = lean
        self._early: deque[bytes | str] = deque()  # frames read by wait_gone (ASGI)
        self._early_bytes = 0

    @classmethod
    async def accept(cls, websocket: WebSocket) -> WebSocketChannel:
        """Accept the handshake (with ``sandbox.v2`` when offered) before any check, so
        a refusal is a close frame the client can read, not a bare HTTP 403."""
        protocol = offered_protocol(websocket)
        lean = None
        if websocket.client_state == WebSocketState.CONNECTING:
            await websocket.accept(subprotocol=protocol or None)
            lean = take_lean(websocket.scope)
        return cls(websocket, protocol, lean)

    @property
    def protocol(self) -> str:
        return self._protocol

    @property
    def query(self) -> Mapping[str, str]:
        return self._query

    @property
    def lean(self) -> bool:
        """Whether frames bypass ASGI (the project's uvicorn protocol)."""
        return self._lean is not None

    def set_sink(self, sink: Sink | None) -> bool:
        """Hand data frames to ``sink`` as they arrive, in order (it returns ``False`` to
        leave one to :meth:`receive`). Returns ``False`` where frames only come through
        :meth:`receive` (ASGI)."""
        if self._lean is None:
            return False
        self._lean.set_sink(sink)
        return True

    def send_now(self, data: bytes) -> bool:
        """A binary frame written at once, when the lean path's socket takes it now;
        ``False`` (nothing sent) when it is backed up or gone."""
        return self._lean is not None and self._lean.send_now(data)

    def direct_send(self, offsets: bool) -> Callable[[bytes, int], bool] | None:
        """The lean path's ``send(data, start)`` that writes a live frame at once or
        returns ``False`` (``offsets``: ``sandbox.v2``'s offset before the payload), for
        ``Viewer.send_directly``; ``None`` under ASGI."""
        if self._lean is None:
            return None
        return self._lean.send_live_at if offsets else self._lean.send_live

    async def send_bytes(self, data: bytes) -> None:
        if self._lean is not None:
            await self._lean.send(data)
        else:
            await self.websocket.send_bytes(data)

    async def send_text(self, text: str) -> None:
        if self._lean is not None:
            await self._lean.send(text.encode(), OP_TEXT)
        else:
            await self.websocket.send_text(text)

    async def receive(self) -> bytes | str | None:
        if self._lean is not None:
            return await self._lean.receive()
        if self._early:
            frame = self._early.popleft()
            self._early_bytes -= len(frame)
            return frame
        return await self._receive_asgi()

    async def _receive_asgi(self) -> bytes | str | None:
        if self._gone:
            return None
        message = await self.websocket.receive()
        if message["type"] == "websocket.disconnect":
            self._gone = True
            return None
        data = message.get("bytes")
        if data is not None:
            return bytes(data)
        return str(message.get("text") or "")

    async def wait_gone(self) -> None:
        """Until the client has gone (a waiting attach gives its quota slot back at
        once). Frames that arrive meanwhile are kept, in order, for :meth:`receive`;
        on ASGI, past 64 KiB of them it stops reading (and so watching)."""
        if self._lean is not None:
            await self._lean.wait_gone()
            return
        while self._early_bytes < _EARLY_MAX:
            frame = await self._receive_asgi()
            if frame is None:
                return
            self._early.append(frame)
            self._early_bytes += len(frame)
        await asyncio.Event().wait()  # the rest waits in the server's buffers

    async def close(self, code: int, reason: str = "") -> None:
        with contextlib.suppress(Exception):  # already closed, or the peer is gone
            await self.websocket.close(code, clip_reason(reason))
