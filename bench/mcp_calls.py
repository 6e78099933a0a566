"""MCP tool-call bench: what does a tool call cost at ``/mcp``, next to a plain
authenticated API request on the same server in the same run?

One bounded run on 127.0.0.1: ``sandbox serve`` (embedded mode, its default SQLite store,
log level warning) with a stand-in agent; one user, one sandbox, its MCP token. Driven
from this process over one keep-alive HTTP/1.1 connection per figure (httpx2, the MCP
SDK's own HTTP client, for every row, so the differences are the server's; httpx 0.x
added ~3 ms to every POST here, not to GETs):

1. the baseline: ``GET /api/v1/sandbox/whoami`` with the user's token;
2. ``tools/call session.whoami`` in a 2025 session (the handshake-era protocol agent CLIs
   speak): token check, plan, the SDK's dispatch, the schema check, the tool;
3. ``tools/call sandbox.list`` (the owner's sandboxes from the resource cache, with their
   usage from the ledger) the same way;
4. ``tools/call session.whoami`` with the 2026 per-request protocol (no session);
5. informational: the official MCP client's ``call_tool`` end to end (the client's own
   cost included).

    .venv/bin/python bench/mcp_calls.py [--samples 2000] [--warmup 200] [--deadline 300]

Not a test: the figures depend on the machine; nothing asserts. The issue's target (tool
call p50 < 5 ms) is printed PASS/FAIL next to rows 2 and 3.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx2

from common import Row, bounded_run, cpu_seconds, pct, publish, table

SANDBOX = str(Path(sys.executable).parent / "sandbox")
ORG = "bench"
TOOL_P50_S = 0.005  # issue 14
SESSION_VERSION = "2025-06-18"
MODERN_VERSION = "2026-07-28"
ACCEPT = "application/json, text/event-stream"


class Server:
    """``sandbox serve`` on a free port; stopped (SIGTERM, then SIGKILL) by ``stop``."""

    def __init__(self, data: Path, log: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        agents = data.parent / "agents.json"
        agents.write_text(json.dumps([{"slug": "bench-idle", "binary": "/bin/cat"}]))
        env = {
            **os.environ,
            "SANDBOX_DATA_DIR": str(data),
            "SANDBOX_LOG_LEVEL": "warning",
            "OPENOVA_SANDBOX_AGENTS_PATH": str(agents),
            "SANDBOX_ISOLATION": "none",
        }
        with open(log, "wb") as fh:
            self.proc = subprocess.Popen(
                [SANDBOX, "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=fh,
            )
        self.url = f"http://127.0.0.1:{self.port}"

    async def wait_up(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        async with httpx2.AsyncClient() as http:
            while True:
                with contextlib.suppress(httpx2.TransportError):
                    if (await http.get(f"{self.url}/readyz")).status_code == 200:
                        return
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("sandbox serve did not start (see its log)")
                await asyncio.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


CPU: dict[str, float] = {}  # figure -> the server's CPU seconds per call


async def timed(
    n: int, warmup: int, once: Callable[[], Awaitable[None]], *, pid: int = 0, key: str = ""
) -> list[float]:
    """``n`` sequential calls' latencies; with ``pid``, the server's CPU time per call
    (user + system, from /proc: steadier than latency on a loaded machine) in CPU[key]."""
    for _ in range(warmup):
        await once()
    samples = []
    cpu = cpu_seconds(pid) if pid else 0.0
    for _ in range(n):
        start = time.perf_counter()
        await once()
        samples.append(time.perf_counter() - start)
    if pid:
        CPU[key] = (cpu_seconds(pid) - cpu) / n
    return samples


def _result_of(response: httpx2.Response) -> dict[str, Any]:
    """The JSON-RPC response in a plain JSON body or in an event stream's data line."""
    if response.status_code != 200:
        raise RuntimeError(f"{response.status_code}: {response.text[:300]}")
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        for line in response.text.splitlines():
            if line.startswith("data:"):
                message: dict[str, Any] = json.loads(line[5:])
                if "id" in message:
                    break
        else:
            raise RuntimeError(f"no response in the stream: {response.text[:300]}")
    else:
        message = response.json()
    if "error" in message or message["result"].get("isError"):
        raise RuntimeError(f"the call failed: {message}")
    return message


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from openova_sandbox.auth.issuer import EmbeddedIssuer
    from openova_sandbox.services.mcp_tokens import McpTokens
    from openova_sandbox.store.sql import SqlStore

    data = tmp / "data"
    server = Server(data, tmp / "serve.log")
    try:
        await server.wait_up()
        issuer = EmbeddedIssuer.load(data)
        user = issuer.mint(sub="bench-user", email="bench@bench.local", org=ORG)
        auth = {"Authorization": f"Bearer {user}"}
        async with httpx2.AsyncClient(base_url=server.url, timeout=30) as http:
            made = await http.post(
                "/api/v1/sandbox/sessions", json={"agent": "bench-idle"}, headers=auth
            )
            made.raise_for_status()
            name = made.json()["id"]
        store = SqlStore(f"sqlite+aiosqlite:///{(data / 'sandbox.db').resolve()}")
        await store.start()
        try:
            sandbox = await store.get(ORG, name)
        finally:
            await store.close()
        token = McpTokens(issuer, None).issue(sandbox)
        mcp_auth = {"Authorization": f"Bearer {token}", "Accept": ACCEPT}
        out: dict[str, Any] = {"samples": args.samples}

        async with httpx2.AsyncClient(base_url=server.url, timeout=30, headers=auth) as http:

            async def whoami() -> None:
                (await http.get("/api/v1/sandbox/whoami")).raise_for_status()

            out["baseline"] = await timed(
                args.samples, args.warmup, whoami, pid=server.proc.pid, key="baseline"
            )

        async with httpx2.AsyncClient(base_url=server.url, timeout=30, headers=mcp_auth) as http:
            opened = await http.post(
                "/mcp",
                json={
                    "jsonrpc": "2.0",
                    "id": 0,
                    "method": "initialize",
                    "params": {
                        "protocolVersion": SESSION_VERSION,
                        "capabilities": {},
                        "clientInfo": {"name": "bench", "version": "0"},
                    },
                },
            )
            _result_of(opened)
            session = {
                "mcp-session-id": opened.headers["mcp-session-id"],
                "mcp-protocol-version": SESSION_VERSION,
            }
            initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            (await http.post("/mcp", json=initialized, headers=session)).raise_for_status()
            ids = iter(range(1, 10**9))

            def tool_call(tool: str) -> Callable[[], Awaitable[None]]:
                async def once() -> None:
                    body = {
                        "jsonrpc": "2.0",
                        "id": next(ids),
                        "method": "tools/call",
                        "params": {"name": tool, "arguments": {}},
                    }
                    _result_of(await http.post("/mcp", json=body, headers=session))

                return once

            for key, tool in (("whoami", "session.whoami"), ("list", "sandbox.list")):
                out[key] = await timed(
                    args.samples, args.warmup, tool_call(tool), pid=server.proc.pid, key=key
                )

        async with httpx2.AsyncClient(base_url=server.url, timeout=30, headers=mcp_auth) as http:
            modern = {
                "mcp-protocol-version": MODERN_VERSION,
                "mcp-method": "tools/call",
                "mcp-name": "session.whoami",
            }
            meta = {
                "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
                "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "0"},
                "io.modelcontextprotocol/clientCapabilities": {},
            }

            async def modern_call() -> None:
                body = {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "tools/call",
                    "params": {"name": "session.whoami", "arguments": {}, "_meta": meta},
                }
                _result_of(await http.post("/mcp", json=body, headers=modern))

            try:
                out["modern"] = await timed(
                    args.samples, args.warmup, modern_call, pid=server.proc.pid, key="modern"
                )
            except RuntimeError as exc:  # reported, the rest stands
                out["modern_error"] = str(exc)[:200]

        out["client"] = await official_client(server.url, token, args)
        out["cpu"] = dict(CPU)
        return out
    finally:
        server.stop()


async def official_client(url: str, token: str, args: argparse.Namespace) -> list[float]:
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        Client(streamable_http_client(f"{url}/mcp", http_client=http), mode="legacy") as client,
    ):

        async def once() -> None:
            result = await client.call_tool("session.whoami", {})
            if result.is_error:
                raise RuntimeError(str(result.content))

        return await timed(max(100, args.samples // 4), args.warmup // 4, once)


def report(results: dict[str, Any]) -> str:
    def ms(seconds: float) -> str:
        return f"{seconds * 1000:.2f} ms"

    def both(values: list[float]) -> str:
        return f"{ms(pct(values, 0.5))} / {ms(pct(values, 0.99))}"

    base = results["baseline"]
    cpu = results.get("cpu", {})
    rows: list[Row] = [
        ("baseline: GET /whoami (user token), p50 / p99", both(base), "", ""),
        ("  server CPU per request", ms(cpu.get("baseline", 0.0)), "", ""),
    ]
    for key, label in (
        ("whoami", "tools/call session.whoami (2025 session), p50 / p99"),
        ("list", "tools/call sandbox.list (2025 session), p50 / p99"),
    ):
        values = results[key]
        rows.append((label, both(values), "p50 < 5 ms", pct(values, 0.5) < TOOL_P50_S))
        rows.append(
            (
                "  over the baseline, p50",
                f"+{ms(pct(values, 0.5) - pct(base, 0.5))}",
                "",
                "",
            )
        )
        rows.append(("  server CPU per call", ms(cpu.get(key, 0.0)), "", ""))
    if "modern" in results:
        rows.append(
            (
                "tools/call session.whoami (2026, no session), p50 / p99",
                both(results["modern"]),
                "",
                "",
            )
        )
        rows.append(("  server CPU per call", ms(cpu.get("modern", 0.0)), "", ""))
    else:
        rows.append(("tools/call, 2026 protocol", results.get("modern_error", "?"), "", ""))
    rows.append(("official client call_tool (legacy), p50 / p99", both(results["client"]), "", ""))
    return table(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000, help="sequential calls per figure")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument(
        "--deadline", type=int, default=300, help="seconds before the run gives up (whole run)"
    )
    args = parser.parse_args()
    t0 = time.monotonic()

    results = bounded_run(
        lambda tmp: asyncio.run(run(args, tmp)), deadline=args.deadline, prefix="bench-mcp-"
    )
    publish("bench/mcp_calls.py", t0, results, report(results), args.json)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
