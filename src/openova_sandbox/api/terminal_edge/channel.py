"""Starlette's WebSocket as a ``services.terminal_port.Channel``."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from starlette.websockets import WebSocket, WebSocketState

from ...domain.terminal_wire import RAW, SUBPROTOCOL_V2, clip_reason


def offered_protocol(websocket: WebSocket) -> str:
    """``"sandbox.v2"`` when the client offered it, else ``""`` (raw attach)."""
    offered = websocket.scope.get("subprotocols") or ()
    return SUBPROTOCOL_V2 if SUBPROTOCOL_V2 in offered else RAW


class WebSocketChannel:
    """An accepted WebSocket. Build it with :meth:`accept`."""

    def __init__(self, websocket: WebSocket, protocol: str) -> None:
        self.websocket = websocket
        self._protocol = protocol
        self._query: Mapping[str, str] = dict(websocket.query_params)
        self._gone = False

    @classmethod
    async def accept(cls, websocket: WebSocket) -> WebSocketChannel:
        """Accept the handshake (with ``sandbox.v2`` when offered) before any check, so
        a refusal is a close frame the client can read, not a bare HTTP 403."""
        protocol = offered_protocol(websocket)
        if websocket.client_state == WebSocketState.CONNECTING:
            await websocket.accept(subprotocol=protocol or None)
        return cls(websocket, protocol)

    @property
    def protocol(self) -> str:
        return self._protocol

    @property
    def query(self) -> Mapping[str, str]:
        return self._query

    async def send_bytes(self, data: bytes) -> None:
        await self.websocket.send_bytes(data)

    async def send_text(self, text: str) -> None:
        await self.websocket.send_text(text)

    async def receive(self) -> bytes | str | None:
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

    async def close(self, code: int, reason: str = "") -> None:
        with contextlib.suppress(Exception):  # already closed, or the peer is gone
            await self.websocket.close(code, clip_reason(reason))
