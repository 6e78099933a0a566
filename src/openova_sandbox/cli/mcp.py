"""``sandbox mcp``: the MCP server outside ``sandbox serve`` (docs/mcp.md, "Server and
tokens").

- ``--http``: the MCP server as its own process (Kubernetes mode: a Deployment beside
  the API, deploy/kubernetes/mcp.yaml): the control plane's store, resource cache,
  ledger and audit log, serving ``/mcp`` only (plus ``/healthz`` and ``/readyz``). It
  verifies the tokens the API side issues with the shared issuer key
  (``SANDBOX_ISSUER_KEY``), so it refuses to start without one.
- ``--stdio``: for a local MCP client that starts its servers as commands. It is a
  bridge, not a second server: each JSON-RPC message read on stdin is sent to a running
  server's ``/mcp`` with the sandbox's token (``SANDBOX_MCP_TOKEN``), and what comes
  back is written to stdout. The tools then run where the sandbox's terminals,
  previews and workspace index live (``sandbox serve``'s process, which a second
  process could not reach), and the token is checked there on every request, so
  revocation and plans behave exactly as over HTTP.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Annotated, Any

import typer

MCP_URL_ENV = "SANDBOX_MCP_URL"
MCP_TOKEN_ENV = "SANDBOX_MCP_TOKEN"


def mcp_cmd(
    http: Annotated[
        bool, typer.Option("--http", help="Serve /mcp as its own process (Kubernetes mode)")
    ] = False,
    stdio: Annotated[
        bool,
        typer.Option(
            "--stdio",
            help=f"Bridge stdin/stdout to a server's /mcp with ${MCP_TOKEN_ENV}",
        ),
    ] = False,
    url: Annotated[
        str | None,
        typer.Option(
            help=f"--stdio: the server's MCP URL (default ${MCP_URL_ENV}, else the "
            "--server's /mcp, else http://127.0.0.1:8080/mcp)"
        ),
    ] = None,
    server: Annotated[str | None, typer.Option(help="--stdio: base URL of the server")] = None,
    host: Annotated[str, typer.Option(help="--http: interface to listen on")] = "0.0.0.0",
    port: Annotated[int, typer.Option(min=1, max=65535, help="--http: port")] = 8091,
) -> None:
    """The MCP server for the sandboxes' agents: --http (its own process) or --stdio (a
    bridge for local MCP clients)."""
    from .main import fail, server_url

    if http == stdio:
        fail("say --http (serve /mcp) or --stdio (bridge to a server's /mcp)", code=2)
    if stdio:
        token = os.environ.get(MCP_TOKEN_ENV, "").strip()
        if not token:
            fail(
                f"${MCP_TOKEN_ENV} is not set: give the sandbox's MCP token (its agents' "
                "MCP config holds it)"
            )
        target = (
            url
            or os.environ.get(MCP_URL_ENV, "").strip()
            or server_url(server).rstrip("/") + "/mcp"
        )
        _bridge(target, token)
        return
    _serve_http(host, port)


def _serve_http(host: str, port: int) -> None:
    import uvicorn

    from ..api.composition import build_api
    from ..api.mcp_app import create_mcp_app
    from ..domain.errors import SandboxError
    from ..logs import configure
    from ..serving import UVICORN_OPTIONS, shutdown_hooks
    from ..serving import Server as HttpServer
    from .main import fail, settings_or_exit
    from .pod import startup_error

    settings = settings_or_exit()
    configure(level=settings.log_level, json=settings.log_json)
    if not settings.issuer_key:
        fail(
            "sandbox mcp --http cannot start: the sandboxes' MCP tokens are signed with the "
            "shared issuer key; set SANDBOX_ISSUER_KEY (Secret sandbox-issuer-key)"
        )
    try:
        deps = build_api(settings, public_url=settings.public_url)
    except SandboxError as exc:
        fail(startup_error(exc))
    app_ = create_mcp_app(deps)
    config = uvicorn.Config(app_, host=host, port=port, **UVICORN_OPTIONS)
    HttpServer(config, on_shutdown=shutdown_hooks(app_), gc_policy=True).run()


def _bridge(url: str, token: str) -> None:
    import anyio

    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(_pump, url, token)


async def _pump(url: str, token: str) -> None:
    """stdin → ``url``, ``url`` → stdout, until stdin ends. A transport failure (the
    server gone, a 401) is said on stderr; the client gets the JSON-RPC error the
    transport makes of it."""
    import anyio
    import httpx2
    from mcp.client.streamable_http import streamable_http_client
    from mcp.server.stdio import stdio_server

    timeout = httpx2.Timeout(30.0, read=300.0)
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=timeout) as http,
        streamable_http_client(url, http_client=http) as (remote_in, remote_out),
        stdio_server() as (local_in, local_out),
        anyio.create_task_group() as group,
    ):

        async def up() -> None:
            async for message in local_in:
                if isinstance(message, Exception):
                    _say(f"unreadable message on stdin: {message}")
                    continue
                await remote_out.send(message)
            group.cancel_scope.cancel()  # stdin closed: the client is done

        async def down() -> None:
            async for message in remote_in:
                if isinstance(message, Exception):
                    _say(f"{url}: {message}")
                    continue
                await local_out.send(message)

        group.start_soon(up)
        group.start_soon(down)


def _say(text: Any) -> None:
    print(f"sandbox mcp: {text}", file=sys.stderr, flush=True)
