"""`sandbox attach`: the local terminal as a viewer of a sandbox's primary terminal.

Raw mode in, bytes out; the window size is sent on start and on every SIGWINCH; Ctrl-]
detaches (like telnet) and leaves the agent running. The token rides in the
``access_token`` query parameter, as for any WebSocket client.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import termios
import tty
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

import websockets

from ..domain.terminal_wire import CLOSE_GOING_AWAY, CLOSE_NORMAL
from .client import ApiClient, ApiError

DETACH = b"\x1d"  # Ctrl-]


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def ws_url(server: str, sandbox_id: str, token: str) -> str:
    base = server.rstrip("/").replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    return (
        f"{base}/api/v1/sandbox/sessions/{quote(sandbox_id, safe='')}/attach"
        f"?access_token={quote(token, safe='')}"
    )


def ws_headers(client: ApiClient) -> dict[str, str]:
    """The handshake's headers: the org asked for at `sandbox login --org`, which picks
    one of several orgs the token names (the token itself rides in the URL)."""
    return {"X-Sandbox-Org": client.org} if client.org else {}


# Close codes after which the CLI exits 0: the agent ended (1000), or had ended before
# this attach (1001). Anything else (1008 refused, 1011 cannot start or provisioning
# failed, 1012 server restart, 1013 not ready yet) exits 1.
NORMAL_CLOSES = {CLOSE_NORMAL, CLOSE_GOING_AWAY}


@dataclass(frozen=True)
class Ended:
    why: str  # the CLI's last line
    ok: bool  # the exit status is 0


TAIL_BYTES = 8192


def closed(code: int | None, reason: str, tail: bytes) -> Ended:
    """The last line for a close: the reason once, in full. A refusal the server also
    wrote into the terminal (its whole text, where the close reason is cut at 123
    bytes) is not repeated; an agent's exit is said as the server says it."""
    ok = code in NORMAL_CLOSES
    if not reason:
        return Ended(f"connection closed ({code})", ok)
    if code == CLOSE_NORMAL:
        return Ended(reason, ok)  # "agent exited with code N"
    if reason.encode() in tail:
        return Ended(f"connection closed ({code})", ok)  # already on the screen, in full
    return Ended(f"connection closed ({code}): {reason}", ok)


def window_size() -> os.terminal_size:
    """The local terminal's size as the terminal itself says (``TIOCGWINSZ`` on stdin,
    else stdout), as ssh and tmux read it. Not ``shutil.get_terminal_size``, which
    prefers ``COLUMNS``/``LINES`` from the environment: those are often exported stale
    (pytest-xdist's workers set 80x24), and the agent then stayed at that size."""
    for stream in (sys.stdin, sys.stdout):
        try:
            return os.get_terminal_size(stream.fileno())
        except (OSError, ValueError):
            continue
    return shutil.get_terminal_size()


async def _send_size(client: ApiClient, sandbox_id: str) -> None:
    """Best effort: the terminal may not exist yet (it is spawned by this very attach,
    or the sandbox is not Ready), and then the server says why over the socket."""
    size = window_size()
    with contextlib.suppress(ApiError):
        await asyncio.to_thread(
            client.request,
            "POST",
            f"/api/v1/sandbox/sessions/{quote(sandbox_id, safe='')}/resize",
            json={"rows": size.lines, "cols": size.columns},
        )


async def attach(client: ApiClient, sandbox_id: str) -> Ended:
    """Run until detach or close; returns why it ended (for the CLI's last line)."""
    loop = asyncio.get_running_loop()
    stdin, stdout = sys.stdin.fileno(), sys.stdout.buffer
    keys: asyncio.Queue[bytes] = asyncio.Queue()
    async with websockets.connect(
        ws_url(client.server, sandbox_id, client.token),
        max_size=None,
        additional_headers=ws_headers(client),
    ) as ws:
        await _send_size(client, sandbox_id)

        resizes: set[asyncio.Task[None]] = set()

        def on_winch() -> None:
            task = loop.create_task(_send_size(client, sandbox_id))
            resizes.add(task)
            task.add_done_callback(resizes.discard)

        def on_key() -> None:
            data = os.read(stdin, 4096)
            keys.put_nowait(data)

        with raw_terminal(stdin):
            loop.add_signal_handler(signal.SIGWINCH, on_winch)
            loop.add_reader(stdin, on_key)
            try:
                return await _pump(ws, keys, stdout)
            finally:
                loop.remove_reader(stdin)
                loop.remove_signal_handler(signal.SIGWINCH)


async def _pump(
    ws: websockets.ClientConnection, keys: asyncio.Queue[bytes], stdout: object
) -> Ended:
    async def outbound() -> Ended:
        while True:
            data = await keys.get()
            if not data:
                return Ended("input closed", ok=True)
            if DETACH in data:
                before = data.split(DETACH, 1)[0]
                if before:
                    await ws.send(before)
                return Ended("detached; the agent keeps running", ok=True)
            await ws.send(data)

    async def inbound() -> Ended:
        tail = b""
        try:
            async for frame in ws:
                chunk = frame if isinstance(frame, bytes) else frame.encode()
                stdout.write(chunk)  # type: ignore[attr-defined]
                stdout.flush()  # type: ignore[attr-defined]
                tail = (tail + chunk)[-TAIL_BYTES:]
        except websockets.ConnectionClosed:
            pass
        return closed(ws.close_code, ws.close_reason or "", tail)

    tasks = [asyncio.create_task(outbound()), asyncio.create_task(inbound())]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    return next(iter(done)).result()
