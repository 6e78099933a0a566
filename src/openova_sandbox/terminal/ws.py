"""The raw attach pump: one WebSocket viewer of one terminal session.

Reusable by any ASGI app holding the same in-process registry (the pty-server routes and
the control plane's ``/api/v1/sandbox/sessions/{id}/attach``). Authentication, Origin
checks and session lookup happen before this is called.

Protocol (terminal-protocol.md, "raw attach"): the replay as ONE binary frame, then live
output as binary frames; client text or binary frames are written to the PTY verbatim;
the session ending closes with 1000 and the reason ``agent exited with code N`` (clients
show it at once; the console and the CLI read the number after ``code``), attaching to an ended
session closes with 1001.
Output and input run as two tasks; whichever ends first ends the other, and the viewer
is always detached (its queue freed) on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

import structlog
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from .session import SessionExited, TerminalSession, Viewer

log = structlog.get_logger(__name__)

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_INTERNAL = 1011
CLOSE_TRY_LATER = 1013


class AttachMetrics(Protocol):
    def connection_opened(self) -> None: ...

    def connection_closed(self) -> None: ...


async def _accept(websocket: WebSocket) -> None:
    if websocket.client_state == WebSocketState.CONNECTING:
        await websocket.accept()


async def close_with_message(websocket: WebSocket, *, code: int, message: str) -> None:
    """Write ``message`` into the terminal (as text on the socket), then close."""
    with contextlib.suppress(Exception):
        await _accept(websocket)
        await websocket.send_bytes(f"\r\n\x1b[1;31m{message}\x1b[0m\r\n".encode())
        await websocket.close(code, message.encode()[:120].decode(errors="ignore"))


def close_reason(session: TerminalSession) -> str:
    """Why a viewer's socket closes with 1000: the process ended, and with what code."""
    code = session.exit_code
    return "agent exited" if code is None else f"agent exited with code {code}"


async def _pump_output(websocket: WebSocket, viewer: Viewer) -> int:
    await websocket.send_bytes(viewer.replay)
    while True:
        data = await viewer.next()
        if data is None:
            return viewer.close_code
        await websocket.send_bytes(data)


async def _pump_input(websocket: WebSocket, session: TerminalSession) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("bytes")
        if data is None:
            text = message.get("text")
            data = text.encode() if text else b""
        session.write(data)


async def serve_attach(
    websocket: WebSocket,
    session: TerminalSession,
    *,
    metrics: AttachMetrics | None = None,
) -> None:
    """Serve one viewer until the session ends or the client goes away."""
    await _accept(websocket)
    try:
        viewer = session.attach()
    except SessionExited:
        with contextlib.suppress(Exception):
            await websocket.close(CLOSE_GOING_AWAY, "session exited")
        return
    if metrics is not None:
        metrics.connection_opened()
    output = asyncio.create_task(_pump_output(websocket, viewer))
    reader = asyncio.create_task(_pump_input(websocket, session))
    try:
        done, _ = await asyncio.wait({output, reader}, return_when=asyncio.FIRST_COMPLETED)
        if output in done and not output.cancelled() and output.exception() is None:
            reader.cancel()
            code = output.result()
            with contextlib.suppress(Exception):
                await websocket.close(code, close_reason(session) if code == CLOSE_NORMAL else "")
    finally:
        for task in (output, reader):
            task.cancel()
        for task in (output, reader):
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, Exception):
                await task
        viewer.close()
        if metrics is not None:
            metrics.connection_closed()
        log.debug("terminal.viewer.gone", session=session.id, viewer=viewer.id)
