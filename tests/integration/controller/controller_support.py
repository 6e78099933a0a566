"""Test helpers for the embedded controller: an honest TerminalHost, polling, real git.

``RecordingTerminals`` implements the controller's ``TerminalHost`` boundary (the
terminal registry is another part of the system): it keeps the session counts and
activity a test sets, and records every ``stop_sandbox`` call.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from pathlib import Path
from typing import Any

from openova_sandbox.controller.runner import EmbeddedController
from openova_sandbox.domain.errors import NotFound
from openova_sandbox.domain.model import ObjectMeta, Sandbox, SandboxSpec

Key = tuple[str, str]
ControllerFactory = Callable[..., AbstractAsyncContextManager[EmbeddedController]]


class RecordingTerminals:
    def __init__(self, *, serving: bool = True) -> None:
        self.up = serving
        self.live: dict[Key, int] = {}
        self.activity: dict[Key, datetime] = {}
        self.stopped: list[Key] = []
        self.problems: dict[Key, str] = {}  # why an agent cannot start, per sandbox

    def serving(self) -> bool:
        return self.up

    def agent_problem(self, sandbox: Sandbox) -> str | None:
        return self.problems.get(sandbox.key)

    async def stop_sandbox(self, namespace: str, name: str) -> None:
        self.stopped.append((namespace, name))
        self.live.pop((namespace, name), None)

    def sessions(self, namespace: str, name: str) -> int:
        return self.live.get((namespace, name), 0)

    def sandboxes(self) -> list[Key]:
        return [key for key, count in self.live.items() if count]

    def last_activity(self, namespace: str, name: str) -> datetime | None:
        return self.activity.get((namespace, name))

    def mcp_state(self, sandbox: Sandbox) -> tuple[str, str, str] | None:
        return None  # no MCP server: McpReady NotApplicable


def new_sandbox(
    name: str, *, org: str = "acme", repos: tuple[str, ...] = (), email: str = "dev@acme.com"
) -> Sandbox:
    return Sandbox(
        metadata=ObjectMeta(name=name, namespace=org),
        spec=SandboxSpec(
            owner_email=email, org_slug=org, repos=repos, agent_catalogue=("claude-code",)
        ),
    )


async def wait_for(
    store: Any,
    key: Key,
    predicate: Callable[[Sandbox], bool],
    *,
    timeout: float = 15.0,
) -> Sandbox:
    """Poll ``store`` until the object satisfies ``predicate``; fail with its last state."""
    deadline = time.monotonic() + timeout
    last: Sandbox | None = None
    while time.monotonic() < deadline:
        last = await store.get(*key)
        if predicate(last):
            return last
        await asyncio.sleep(0.02)
    state = last.status.to_dict() if last else None
    raise AssertionError(f"{key} did not get there in {timeout}s; last status: {state}")


async def wait_gone(store: Any, key: Key, *, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            await store.get(*key)
        except NotFound:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{key} still exists after {timeout}s")


def phase(value: str) -> Callable[[Sandbox], bool]:
    return lambda sb: sb.status.phase == value


def git(*args: str, cwd: Path | None = None) -> None:
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(cwd or Path.cwd())}
    subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", *args],
        cwd=cwd,
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )


class StallingGitServer:
    """An HTTP server on 127.0.0.1 that accepts git's requests and never answers them
    (``stall=True``), or answers 404 to everything: a slow and a missing remote."""

    def __init__(self, *, stall: bool) -> None:
        self._stall = stall
        self._server: asyncio.Server | None = None
        self.requests = 0
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.requests += 1
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await reader.readuntil(b"\r\n\r\n")
            if self._stall:
                await asyncio.Event().wait()
            writer.write(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()

    async def __aenter__(self) -> StallingGitServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        handlers = tuple(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await self._server.wait_closed()
