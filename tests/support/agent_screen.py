"""A terminal screen for a real agent's PTY, rendered with pyte, driven like a user.

The screen follows a :class:`TerminalSession` as a viewer does and answers the queries
a terminal emulator answers (cursor position, device attributes: agents' TUIs ask and
some wait for the answer, as xterm.js in the browser would give it). Tests wait for text
to appear on the rendered screen, never for a fixed time.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import pyte

from openova_sandbox.terminal.session import TerminalSession

ROWS, COLS = 24, 80


class _Answering(pyte.Screen):  # type: ignore[misc]
    def __init__(self, columns: int, lines: int, session: TerminalSession) -> None:
        super().__init__(columns, lines)
        self._session = session

    def write_process_input(self, data: str) -> None:
        self._session.write(data.encode())


class AgentScreen:
    """Start with :meth:`follow` (inside the event loop); :meth:`close` at the end."""

    def __init__(self, session: TerminalSession, rows: int = ROWS, cols: int = COLS) -> None:
        self.session = session
        self.screen = _Answering(cols, rows, session)
        self.stream = pyte.ByteStream(self.screen)
        self.raw = bytearray()
        self.ended = False
        self._task: asyncio.Task[None] | None = None

    def follow(self) -> AgentScreen:
        self._task = asyncio.create_task(self._pump())
        return self

    async def _pump(self) -> None:
        viewer = self.session.attach()
        try:
            chunk: bytes | None = viewer.first.data  # the screen so far, then live output
            while chunk is not None:
                self.raw += chunk
                self.stream.feed(chunk)
                chunk = await viewer.next_bytes()
            self.ended = True
        finally:
            viewer.close()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display)

    async def wait_for(self, pattern: str | re.Pattern[str], timeout: float = 60.0) -> str:
        """Wait until the rendered screen matches; returns the screen's text."""
        regex = re.compile(re.escape(pattern)) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            if regex.search(text):
                return text
            if self.ended:
                raise AssertionError(f"the agent ended before {regex.pattern!r}:\n{text}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{regex.pattern!r} not on the screen in {timeout}s:\n{text}")
            await asyncio.sleep(0.05)

    async def type_line(self, text: str, timeout: float = 30.0) -> None:
        """Type ``text``, wait until the agent shows it in its input, then press Enter
        (sent apart: a TUI may take text and Enter in one read for a paste)."""
        self.session.write(text.encode())
        await self.wait_for(text, timeout)
        self.session.write(b"\r")


def dump(screen: AgentScreen | None) -> dict[str, Any]:
    """What a failure message shows about a screen."""
    if screen is None:
        return {}
    return {"screen": screen.text(), "tail": bytes(screen.raw[-2000:])}
