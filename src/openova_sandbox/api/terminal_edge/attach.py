"""The viewer pumps: one attached client of one terminal session, over a ``Channel``.

Used by both HTTP edges (the control plane's attach routes through the embedded
``TerminalsService``, and the terminal server's ``/sessions/{id}/attach``).
Authentication, the ``Origin`` check and the session lookup happen before this.

Raw (terminal-protocol.md, "raw attach"; no subprotocol): the screen snapshot as ONE
binary frame, then live output as binary frames; client text or binary frames are
input, written to the PTY verbatim (dropped for a read-only viewer); the session ending
closes with 1000 and the reason ``agent exited with code N``; attaching to an ended
session closes with 1001.

``sandbox.v2`` (docs/terminal.md, "The sandbox.v2 protocol"): binary frames carry an
8-byte big-endian stream offset before the payload; JSON text frames carry ``hello``,
``snapshot``/``resume`` announcements, session controls (title, viewers, activity,
size), ``pong`` and ``exit``; the client acknowledges what it rendered (``ack``), and a
viewer more than its window behind gets a snapshot instead of a queue. A text frame
that is not a JSON object closes 1003.

Output and input run as two tasks; whichever ends first ends the other, and the viewer
is always detached (its queue freed) on the way out. On the lean WebSocket path
(:mod:`.lean_ws`) input frames go to the PTY as they are parsed (a v2 text frame still
goes through the input task, in order), and live output is written to the socket from
the PTY reader while the output task waits (``Viewer.send_directly``); the task sends
the first frame, snapshots, controls and whatever a backed-up socket did not take.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any, Protocol

import structlog

from ...domain.principal import Principal
from ...domain.terminal_wire import (
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    CLOSE_UNSUPPORTED,
    REASON_BAD_CONTROL,
    SUBPROTOCOL_V2,
    exit_reason,
    pack_frame,
)
from ...services.terminal_port import AttachPump, Channel, ViewerGrant
from ...terminal.core import RESUME, SNAPSHOT
from ...terminal.session import Output, SessionExited, TerminalSession, Viewer

log = structlog.get_logger(__name__)

DEFAULT_WINDOW = 1024 * 1024  # sandbox.v2: bytes a viewer may be past its last ack


class AttachMetrics(Protocol):
    def connection_opened(self) -> None: ...

    def connection_closed(self) -> None: ...


# ------------------------------------------------------------------ raw
def _direct_send(channel: Channel, *, offsets: bool) -> Callable[[bytes, int], bool] | None:
    """The channel's synchronous send of live output, ``(data, start) -> bool`` (the
    lean path; ``offsets``: sandbox.v2's frames), else ``None``."""
    direct: Callable[[bool], Callable[[bytes, int], bool] | None] | None = getattr(
        channel, "direct_send", None
    )
    return direct(offsets) if direct is not None else None


async def _raw_output(channel: Channel, viewer: Viewer) -> int:
    await channel.send_bytes(viewer.first.data)
    # live output straight from the PTY reader to the socket (None: through the pump)
    viewer.send_directly(_direct_send(channel, offsets=False))
    while True:
        data = await viewer.next_bytes()
        if data is None:
            return viewer.close_code
        await channel.send_bytes(data)


async def _raw_input(channel: Channel, viewer: Viewer) -> int | None:
    set_sink = getattr(channel, "set_sink", None)
    if set_sink is not None:  # the lean path: input goes to the PTY as it is parsed
        set_sink(viewer.input_frame)
    while True:
        frame = await channel.receive()
        if frame is None:
            return None
        viewer.write(frame if isinstance(frame, bytes) else frame.encode())


# ------------------------------------------------------------------ sandbox.v2
def _since(channel: Channel) -> int | None:
    """``?since=<offset>``: a non-negative integer, else no resume (a fresh snapshot)."""
    text = channel.query.get("since", "")
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 20 else None


async def _send_output(channel: Channel, item: Output) -> None:
    if item.kind == SNAPSHOT:
        await channel.send_text(_json({"type": "snapshot", "seq": item.end, "reason": item.reason}))
        await channel.send_bytes(pack_frame(item.end, item.data))
        return
    if item.kind == RESUME:
        await channel.send_text(_json({"type": "resume", "seq": item.start}))
    await channel.send_bytes(pack_frame(item.start, item.data))


def _control(viewer: Viewer, body: dict[str, object]) -> dict[str, object]:
    """A session control as this viewer sees it (``viewers`` marks the viewer itself)."""
    if body.get("type") != "viewers":
        return body
    listed = body.get("viewers")
    if not isinstance(listed, list):
        return body
    marked = [{**v, "you": v.get("id") == viewer.id} for v in listed if isinstance(v, dict)]
    return {**body, "viewers": marked}


async def _v2_output(channel: Channel, session: TerminalSession, viewer: Viewer) -> int:
    await _send_output(channel, viewer.first)
    viewer.send_directly(_direct_send(channel, offsets=True))  # (as in _raw_output)
    while True:
        item = await viewer.next()
        if item is None:
            if viewer.close_code == CLOSE_NORMAL:
                await channel.send_text(_json({"type": "exit", "code": session.exit_code}))
            return viewer.close_code
        if isinstance(item, Output):
            await _send_output(channel, item)
        else:
            await channel.send_text(_json(_control(viewer, item.body)))


def _size(message: dict[str, Any]) -> tuple[int, int] | None:
    rows, cols = message.get("rows"), message.get("cols")
    for value in (rows, cols):
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 1000:
            return None
    return int(rows), int(cols)  # type: ignore[arg-type]


async def _v2_input(channel: Channel, viewer: Viewer) -> int | None:
    """Input and controls; returns 1003 on a text frame that is not a JSON object."""
    set_sink = getattr(channel, "set_sink", None)
    if set_sink is not None:  # the lean path: binary input goes to the PTY as it is parsed
        set_sink(viewer.input_binary)
    while True:
        frame = await channel.receive()
        if frame is None:
            return None
        if isinstance(frame, bytes):
            viewer.write(frame)
            continue
        try:
            message = json.loads(frame)
        except (ValueError, RecursionError):
            message = None
        if not isinstance(message, dict):
            return CLOSE_UNSUPPORTED
        kind = message.get("type")
        if kind == "ack":
            seq = message.get("seq")
            if isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0:
                viewer.ack(seq)
        elif kind == "resize":
            size = _size(message)
            if size is not None:
                viewer.resize(*size)
        elif kind == "ping":
            await channel.send_text(_json({"type": "pong", "t": message.get("t")}))
        # anything else: ignored (newer clients may send more)


def _hello(session: TerminalSession, viewer: Viewer, window: int) -> dict[str, object]:
    return {
        "type": "hello",
        "protocol": SUBPROTOCOL_V2,
        "viewer": viewer.id,
        "mode": viewer.mode,
        "rows": session.rows,
        "cols": session.cols,
        "window": window,
        "activity": session.activity,
        "title": session.title,
    }


def _json(body: dict[str, object]) -> str:
    return json.dumps(body, separators=(",", ":"))


# ------------------------------------------------------------------ both
async def serve_viewer(
    channel: Channel,
    session: TerminalSession,
    grant: ViewerGrant,
    *,
    metrics: AttachMetrics | None = None,
    window: int = DEFAULT_WINDOW,
) -> None:
    """Serve one viewer, raw or ``sandbox.v2`` as the channel was accepted, until the
    session ends or the client goes away."""
    v2 = channel.protocol == SUBPROTOCOL_V2
    try:
        viewer = session.attach(
            since=_since(channel) if v2 else None,
            mode=grant.mode,
            who=grant.who,
            window=window if v2 else None,
        )
    except SessionExited:
        await channel.close(CLOSE_GOING_AWAY, "session exited")
        return
    if metrics is not None:
        metrics.connection_opened()
    if v2:
        await channel.send_text(_json(_hello(session, viewer, window)))
        output = asyncio.create_task(_v2_output(channel, session, viewer))
        reader = asyncio.create_task(_v2_input(channel, viewer))
    else:
        output = asyncio.create_task(_raw_output(channel, viewer))
        reader = asyncio.create_task(_raw_input(channel, viewer))
    try:
        done, _ = await asyncio.wait({output, reader}, return_when=asyncio.FIRST_COMPLETED)
        ended = output if output in done else reader
        code = None if ended.cancelled() or ended.exception() else ended.result()
        if code == CLOSE_UNSUPPORTED:
            output.cancel()
            await channel.close(CLOSE_UNSUPPORTED, REASON_BAD_CONTROL)
        elif code is not None:
            reader.cancel()
            reason = exit_reason(session.exit_code) if code == CLOSE_NORMAL else ""
            await channel.close(code, reason)
    finally:
        for task in (output, reader):
            task.cancel()
        for task in (output, reader):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        viewer.close()
        if metrics is not None:
            metrics.connection_closed()
        log.debug("terminal.viewer.gone", session=session.id, viewer=viewer.id)


def log_watch(principal: Principal, sandbox: str, grant: ViewerGrant, *, terminal: str) -> None:
    """Every attach is logged: who watches which sandbox, in which mode, and how they got
    in (``via`` owner, admin or share)."""
    log.info(
        "terminal.watch",
        sub=principal.sub,
        email=principal.email,
        sandbox=sandbox,
        terminal=terminal,
        mode=grant.mode,
        via=grant.via,
        share=grant.share_id or None,
    )


def viewer_pump(*, metrics: AttachMetrics | None, window: int = DEFAULT_WINDOW) -> AttachPump:
    """``serve_viewer`` with this server's metrics and v2 window, as the embedded
    ``TerminalsService`` takes it."""

    async def pump(channel: Channel, session: TerminalSession, grant: ViewerGrant) -> None:
        await serve_viewer(channel, session, grant, metrics=metrics, window=window)

    return pump
