"""Preview proxy bench: what does ``/preview/<sandbox>/<port>/`` add to a request, next to
the same request made straight to the preview in the same run?

One bounded run on 127.0.0.1: ``sandbox serve`` (embedded mode, as ``bench/mcp_calls.py``
starts it: SQLite store, isolation off, log level warning), one user, one sandbox, and a
preview started through ``/mcp`` with the official MCP client (``preview.start``):
``python3 -m http.server`` serving a 1 KB and a 1 MB file from the workspace. Then,
sequentially, from this process over one keep-alive connection each (httpx):

1. ``GET`` the 1 KB file straight from the preview, and through the proxy under the
   capability path the preview's link sends the user to (the grant's check, the
   sandbox's ownership, the preview's socket check, a new upstream connection, the
   streamed answer);
2. the same for the 1 MB file (throughput);
3. the server's CPU per proxied request (user + system, from /proc).

    .venv/bin/python bench/preview_proxy.py [--samples 500] [--warmup 50] [--deadline 300]

Not a test: the figures depend on the machine; nothing asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from common import Row, pct, run_header, table
from mcp_calls import ORG, Server, timed

PYTHON = "/usr/bin/python3"
SMALL = 1000
LARGE = 1024 * 1024


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    from openova_sandbox.auth.issuer import EmbeddedIssuer
    from openova_sandbox.services.mcp_tokens import McpTokens
    from openova_sandbox.store.sql import SqlStore
    from openova_sandbox.testing.server import free_port

    data = tmp / "data"
    server = Server(data, tmp / "serve.log")
    try:
        await server.wait_up()
        issuer = EmbeddedIssuer.load(data)
        user = issuer.mint(sub="bench-user", email="bench@bench.local", org=ORG)
        auth = {"Authorization": f"Bearer {user}"}
        async with httpx.AsyncClient(base_url=server.url, timeout=30, headers=auth) as http:
            made = await http.post("/api/v1/sandbox/sessions", json={"agent": "bench-idle"})
            made.raise_for_status()
            name = made.json()["id"]
            deadline = time.monotonic() + 60
            while (await http.get(f"/api/v1/sandbox/sessions/{name}")).json()["phase"] != "Ready":
                if time.monotonic() > deadline:
                    raise RuntimeError("the sandbox did not become Ready")
                await asyncio.sleep(0.05)
        store = SqlStore(f"sqlite+aiosqlite:///{(data / 'sandbox.db').resolve()}")
        await store.start()
        try:
            sandbox = await store.get(ORG, name)
        finally:
            await store.close()
        token = McpTokens(issuer, None).issue(sandbox)
        port = free_port()
        command = (
            f"head -c {SMALL} /dev/zero > small.bin && head -c {LARGE} /dev/zero > large.bin"
            f" && exec {PYTHON} -m http.server {port} --bind 127.0.0.1"
        )
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as h,
            Client(streamable_http_client(f"{server.url}/mcp", http_client=h), mode="legacy") as c,
        ):
            started = await c.call_tool("preview.start", {"port": port, "command": command})
        preview = started.structured_content or {}
        if started.is_error or preview.get("status") != "listening":
            raise RuntimeError(f"preview.start: {started.content}")
        out: dict[str, Any] = {"samples": args.samples}
        # the link sends the user into a capability path, which a browser then uses for
        # every request (the grant in the path, no credential)
        async with httpx.AsyncClient(timeout=30, headers=auth) as link:
            sent = await link.get(preview["url"])
        if sent.status_code != 307:
            raise RuntimeError(f"the preview's link answered {sent.status_code}: {sent.text}")
        capability = f"{server.url}{sent.headers['location']}"
        proxied = httpx.AsyncClient(base_url=capability, timeout=30)
        direct = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/", timeout=30)
        async with proxied, direct:
            for key, client, path, n in (
                ("small_direct", direct, "small.bin", args.samples),
                ("small_proxied", proxied, "small.bin", args.samples),
                ("large_direct", direct, "large.bin", max(20, args.samples // 10)),
                ("large_proxied", proxied, "large.bin", max(20, args.samples // 10)),
            ):

                async def once(client: httpx.AsyncClient = client, path: str = path) -> None:
                    got = await client.get(path)
                    got.raise_for_status()

                pid = server.proc.pid if key.endswith("proxied") else 0
                out[key] = await timed(n, args.warmup, once, pid=pid, key=key)
        from mcp_calls import CPU

        out["cpu"] = dict(CPU)
        return out
    finally:
        server.stop()


def report(results: dict[str, Any]) -> str:
    def ms(seconds: float) -> str:
        return f"{seconds * 1000:.2f} ms"

    def both(values: list[float]) -> str:
        return f"{ms(pct(values, 0.5))} / {ms(pct(values, 0.99))}"

    def rate(values: list[float]) -> str:
        return f"{LARGE / pct(values, 0.5) / 1e6:.0f} MB/s"

    cpu = results.get("cpu", {})
    rows: list[Row] = [
        ("GET 1 KB straight from the preview, p50 / p99", both(results["small_direct"]), "", ""),
        ("GET 1 KB through the proxy, p50 / p99", both(results["small_proxied"]), "", ""),
        ("  server CPU per proxied request", ms(cpu.get("small_proxied", 0.0)), "", ""),
        ("GET 1 MB straight, p50 (rate)", rate(results["large_direct"]), "", ""),
        ("GET 1 MB through the proxy, p50 (rate)", rate(results["large_proxied"]), "", ""),
        ("  server CPU per proxied 1 MB", ms(cpu.get("large_proxied", 0.0)), "", ""),
    ]
    return table(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--samples", type=int, default=500, help="sequential requests (1 KB)")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--deadline", type=int, default=300, help="seconds for the whole run")
    args = parser.parse_args()
    t0 = time.monotonic()

    async def bounded() -> dict[str, Any]:
        return await asyncio.wait_for(run(args, Path(tmp)), args.deadline)

    with tempfile.TemporaryDirectory(prefix="bench-preview-") as tmp:
        results = asyncio.run(bounded())
    if args.json:
        args.json.write_text(json.dumps(results))
    print(run_header("bench/preview_proxy.py", t0))
    print(report(results))


if __name__ == "__main__":
    main()
