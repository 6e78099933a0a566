"""A terminal screen over a real attach WebSocket, rendered with pyte, driven like a user.

The server-side twin of ``agent_screen.AgentScreen``: for tests that run the whole
server (``sandbox serve``'s app under uvicorn) and reach the agent the way the console
does, through ``/api/v1/sandbox/sessions/{id}/attach``. Output frames are fed to the
screen; the queries a terminal emulator answers (cursor position, device attributes)
are answered over the socket, as xterm.js in the browser would.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from typing import Any

import pyte
import websockets

ROWS, COLS = 24, 80


class _Answering(pyte.Screen):  # type: ignore[misc]
    def __init__(self, columns: int, lines: int) -> None:
        super().__init__(columns, lines)
        self.replies: list[str] = []

    def write_process_input(self, data: str) -> None:
        self.replies.append(data)


class WsScreen:
    """``async with WsScreen(url) as screen:`` attaches; leaving the block detaches."""

    def __init__(self, url: str, rows: int = ROWS, cols: int = COLS) -> None:
        self.url = url
        self.screen = _Answering(cols, rows)
        self.stream = pyte.ByteStream(self.screen)
        self.raw = bytearray()
        self.closed = False
        self._ws: Any = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> WsScreen:
        self._ws = await websockets.connect(self.url, max_size=None)
        self._task = asyncio.create_task(self._pump())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._ws.close()

    async def _pump(self) -> None:
        try:
            async for frame in self._ws:
                data = frame if isinstance(frame, bytes) else frame.encode()
                self.raw += data
                self.stream.feed(data)
                replies, self.screen.replies = self.screen.replies, []
                for reply in replies:
                    await self._ws.send(reply.encode())
        finally:
            self.closed = True

    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display)

    async def wait_for(self, pattern: str, timeout: float = 60.0) -> str:
        return await self.wait_for_any(pattern, timeout=timeout)

    async def wait_for_any(self, *patterns: str, timeout: float = 60.0) -> str:
        """The screen's text once any of ``patterns`` (literal text) is on it."""
        regex = re.compile("|".join(re.escape(p) for p in patterns))
        pattern = " or ".join(repr(p) for p in patterns)
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            if regex.search(text):
                return text
            if self.closed:
                raise AssertionError(f"the terminal closed before {pattern}:\n{text}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern} not on the screen in {timeout}s:\n{text}")
            await asyncio.sleep(0.05)

    async def press(self, keys: bytes) -> None:
        """Send ``keys`` as typed (``b"\\r"``: Enter), without waiting for anything."""
        await self._ws.send(keys)

    async def type_line(self, text: str, timeout: float = 30.0) -> None:
        """Type ``text``, wait until the agent shows it, then press Enter apart."""
        await self._ws.send(text.encode())
        await self.wait_for(text, timeout)
        await self._ws.send(b"\r")
