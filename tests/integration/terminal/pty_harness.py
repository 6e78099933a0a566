"""Harness for the terminal integration tests: a real pty-server (the pod's own HTTP
server, ``api.terminal_edge.pty_server``, on 127.0.0.1, random port) over a real registry.

Token validation belongs to the auth package; here ``authenticate`` is the injected
boundary, a table of three callers (owner, org admin, stranger). Everything else is real:
PTYs, processes, sockets, the ``websockets`` client.
"""

from __future__ import annotations

import asyncio
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from openova_sandbox.api.terminal_edge.pty_app import create_pty_app
from openova_sandbox.api.terminal_edge.pty_server import PtyHttpServer
from openova_sandbox.api.terminal_edge.standalone import owner_or_org_admin
from openova_sandbox.domain.catalogue import BUILTIN, AgentSpec, Catalogue
from openova_sandbox.domain.errors import Unauthenticated
from openova_sandbox.domain.principal import Principal
from openova_sandbox.terminal.registry import SandboxContext, TerminalRegistry

OWNER = "owner-token"
ADMIN = "admin-token"
STRANGER = "stranger-token"
_PRINCIPALS = {
    OWNER: Principal(sub="u1", email="Dev@Acme.com", org="acme"),
    ADMIN: Principal(sub="u2", email="boss@acme.com", org="acme", roles=frozenset({"org-admin"})),
    STRANGER: Principal(sub="u3", email="eve@evil.com", org="evil"),
}

AGENT_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.stdout.write("agent ready\\r\\n")
    sys.stdout.flush()
    for line in sys.stdin:
        words = line.split()
        if words[:1] == ["lines"]:
            n = int(words[1])
            sys.stdout.write("".join(f"L{i:06d}\\n" for i in range(n)) + "END\\n")
        elif words[:1] == ["bulk"]:
            n = int(words[1])
            block = ("x" * 1023 + "\\n") * 64
            for _ in range(n // len(block) + 1):
                sys.stdout.write(block)
            sys.stdout.write("BULKEND\\n")
        else:
            sys.stdout.write("agent: " + line.strip().upper() + "\\n")
        sys.stdout.flush()
    """
)


async def authenticate(token: str) -> Principal:
    principal = _PRINCIPALS.get(token)
    if principal is None:
        raise Unauthenticated("unknown token")
    return principal


class ServerHandle:
    """The running server; ``should_exit = True`` starts its shutdown (as uvicorn's)."""

    def __init__(self, server: PtyHttpServer) -> None:
        self.server = server
        self.stop_requested = asyncio.Event()

    @property
    def should_exit(self) -> bool:
        return self.stop_requested.is_set()

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        if value:
            self.stop_requested.set()

    async def run(self) -> None:
        await self.stop_requested.wait()
        await self.server.stop()


@dataclass
class PtyServer:
    registry: TerminalRegistry
    sandbox_id: str
    port: int
    workdir: Path
    http: httpx.AsyncClient
    sockets: list[ClientConnection] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, session_id: str, **query: str) -> str:
        params = "&".join(f"{k}={v}" for k, v in query.items())
        return f"ws://127.0.0.1:{self.port}/sessions/{session_id}/attach" + (
            f"?{params}" if params else ""
        )

    async def attach(
        self,
        session_id: str,
        *,
        token: str | None = OWNER,
        query: dict[str, str] | None = None,
        additional_headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> ClientConnection:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        headers.update(additional_headers or {})
        ws = await connect(
            self.ws_url(session_id, **(query or {})),
            additional_headers=headers,
            open_timeout=10,
            **kwargs,
        )
        self.sockets.append(ws)
        return ws

    async def create(self, body: dict[str, object], *, token: str = OWNER) -> str:
        response = await self.http.post(
            "/sessions", json=body, headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 201, response.text
        session_id = response.json()["id"]
        assert isinstance(session_id, str)
        return session_id


async def read_until(ws: ClientConnection, marker: bytes, *, timeout: float = 15.0) -> bytes:
    """Concatenate received frames until ``marker`` appears (bounded in time)."""
    buffer = bytearray()

    async def loop() -> None:
        while True:
            message = await ws.recv()
            before = len(buffer)
            buffer.extend(message if isinstance(message, bytes) else message.encode())
            if marker in buffer[max(0, before - len(marker)) :]:
                return

    try:
        await asyncio.wait_for(loop(), timeout)
    except TimeoutError:
        raise AssertionError(f"{marker!r} not seen; got {bytes(buffer[-400:])!r}") from None
    return bytes(buffer)


def make_catalogue(tmp_path: Path) -> Catalogue:
    script = tmp_path / "agent.py"
    script.write_text(AGENT_SCRIPT)
    agents = {a.slug: a for a in BUILTIN}
    agents["py-agent"] = AgentSpec(
        slug="py-agent", binary=sys.executable, default_args=(str(script),)
    )
    agents["needs-key"] = AgentSpec(
        slug="needs-key", binary=sys.executable, required_env=(("MAGIC_KEY",),)
    )
    agents["ghost"] = AgentSpec(
        slug="ghost", binary="no-such-agent-binary", install_hint="pip install ghost-agent"
    )
    return Catalogue(agents=agents)


async def start_pty_server(
    workdir: Path,
    *,
    default_agent: str = "py-agent",
    session_limit: int = 3,
    viewer_queue_bytes: int = 4 * 1024 * 1024,
    public_origin: str | None = None,
    ring_bytes: int = 1024 * 1024,
    viewer_window: int = 1024 * 1024,
) -> tuple[ServerHandle, asyncio.Task[None], PtyServer]:
    registry = TerminalRegistry(
        catalogue=make_catalogue(workdir),
        ring_bytes=ring_bytes,
        viewer_queue_bytes=viewer_queue_bytes,
        term_grace=1.0,
    )
    registry.add_sandbox(
        SandboxContext(
            sandbox_id="box",
            namespace="acme",
            org_id="acme",
            owner="dev@acme.com",
            default_agent=default_agent,
            workdir=str(workdir),
            env={"OPENAI_API_KEY": "sk-secret"},
            session_limit=session_limit,
        )
    )
    app = create_pty_app(
        registry=registry,
        sandbox_id="box",
        authenticate=authenticate,
        authorize=owner_or_org_admin(owner_email="dev@acme.com", namespace="acme"),
        public_origin=public_origin,
        viewer_window=viewer_window,
    )
    server = PtyHttpServer(app)  # the pod's server (sandbox pty-server)
    await server.start("127.0.0.1", 0)
    handle = ServerHandle(server)
    task = asyncio.create_task(handle.run())
    port = server.port
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=20)
    return handle, task, PtyServer(registry, "box", port, workdir, http)


async def stop_pty_server(
    server: ServerHandle, task: asyncio.Task[None], running: PtyServer
) -> None:
    for ws in running.sockets:
        await ws.close()
    await running.http.aclose()
    server.should_exit = True
    await asyncio.wait_for(task, 20)
