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

from collections.abc import Callable, Mapping
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Request

from .ws_frames import LeanSocket

EXTENSION = "openova.lean-ws"


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol that lets the app take the data path of an
    accepted connection (:class:`LeanSocket`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lean: LeanSocket | None = None
        self.max_size: int = self.config.ws_max_size

    # the FrameOwner of a taken connection is the protocol itself: the lean socket reads
    # ``close_sent``, ``disconnected``, ``transport``, ``writable`` and ``loop`` as they
    # are (per keystroke: no property in between)
    def peer_gone(self, code: int, reason: str) -> None:
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})

    def pong(self, payload: bytes) -> None:
        self.handle_pong(Frame(Opcode.PONG, payload))

    def close_answered(self) -> None:
        if self.close_timer is not None:
            self.close_timer.cancel()
            self.close_timer = None

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
