"""Model gateway benchmark: what the gateway adds on top of the upstream, on loopback.

Three processes: a minimal fake upstream (raw asyncio HTTP/1.1, OpenAI chat shape,
keep-alive, chunked SSE), the server (`sandbox serve`'s app: every middleware, token
lookup, reservation, metering and settle in its ledger, one log line per request at the
default level) and this driver. The baselines are the same requests sent straight to the
upstream in the same run, so "added" is the gateway's own share.

    .venv/bin/python bench/gateway.py [--samples 2000] [--streams 200] [--store memory|sql|both]

Measures: added latency p50/p99 of a non-streamed request (target p50 < 1 ms); added
time to the first streamed byte (< 2 ms); 200 concurrent streams without an error;
server CPU per 1,000 streamed chunks; server memory per open stream. Not a test:
numbers depend on the machine; nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import cpu_seconds, pct, rss_bytes, table

TOKEN_FILE = "gateway-token"
IDENTITY = {
    "sandbox": "bench",
    "namespace": "bench-ns",
    "owner_sub": "bench",
    "owner_email": "bench@example.com",
    "org": "bench",
}
CHAT = "/v1/chat/completions"
GATEWAY_CHAT = "/llm/openai/v1/chat/completions"
PROMPT = {
    "messages": [
        {"role": "system", "content": "You are a coding agent. " * 20},
        {"role": "user", "content": "Write a function that adds two numbers."},
    ],
    "max_tokens": 256,
}
ANSWER = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": "bench",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "def add(a, b):\n    return a + b"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 180, "completion_tokens": 14, "total_tokens": 194},
    }
).encode()


# ------------------------------------------------------------------------ the upstream
def _event(i: int) -> bytes:
    data = (
        b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":0,'
        b'"model":"bench","choices":[{"index":0,"delta":{"content":"tok%d "},'
        b'"finish_reason":null}]}\n\n' % i
    )
    return b"%x\r\n%s\r\n" % (len(data), data)


_USAGE = (
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":0,'
    b'"model":"bench","choices":[],"usage":{"prompt_tokens":180,"completion_tokens":%d,'
    b'"total_tokens":%d}}\n\ndata: [DONE]\n\n'
)


async def _upstream_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length) if length else b""
            if head.startswith(b"GET"):
                data = b'{"object":"list","data":[]}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(data), data)
                )
                continue
            request = json.loads(body)
            if not request.get("stream"):
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"x-request-id: req_bench\r\ncontent-length: %d\r\n\r\n%s"
                    % (len(ANSWER), ANSWER)
                )
                continue
            # model "stream-<events>-<gap ms>-<hold ms>": events, a pause between them,
            # and a hold after the first one (streams kept open)
            _, count, gap_ms, hold_ms = request["model"].split("-")
            events, gap, hold = int(count), int(gap_ms) / 1000, int(hold_ms) / 1000
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n" + _event(0)
            )
            await writer.drain()
            if hold:
                await asyncio.sleep(hold)
            for i in range(1, events):
                writer.write(_event(i))
                if gap:
                    await writer.drain()
                    await asyncio.sleep(gap)
            tail = _USAGE % (events, events + 180)
            writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(tail), tail))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def upstream_main(port: int) -> None:
    server = await asyncio.start_server(_upstream_conn, "127.0.0.1", port, backlog=1024)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


# ------------------------------------------------------------------------ the gateway
def gateway_main(port: int, upstream: str, store: str, data_dir: Path, log_level: str) -> None:
    import uvicorn
    import yaml

    from openova_sandbox.api.app import create_app
    from openova_sandbox.api.composition import build_embedded
    from openova_sandbox.config import load_settings
    from openova_sandbox.logs import configure
    from openova_sandbox.services.gateway_ledger import GatewayIdentity
    from openova_sandbox.serving import UVICORN_OPTIONS, Server

    config = data_dir / "llm.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "providers": {
                    "bench": {"kind": "openai", "baseUrl": upstream + "/v1", "passthrough": True}
                },
                # priced, so every request reserves and settles real amounts
                "defaultPrice": {"input": 2, "output": 8},
            }
        )
    )
    settings = load_settings(
        data_dir=data_dir / "data",
        store=store,
        llm_config=str(config),
        log_level=log_level,
        log_json=True,
        agents_path=str(data_dir / "none.json"),
    )
    configure(level=settings.log_level, json=True)
    deps = build_embedded(settings)

    async def issue() -> None:
        token = await deps.gateway.ledger.issue_token(GatewayIdentity(**IDENTITY))
        (data_dir / TOKEN_FILE).write_text(token)

    app = create_app(deps)
    server = Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, **UVICORN_OPTIONS),
        on_listening=[issue],  # the token file says: listening, and here is the token
    )
    profile = os.environ.get("BENCH_GATEWAY_PROFILE")  # CPU profile of the server, to study
    if not profile:
        server.run()
        return
    import cProfile

    profiler = cProfile.Profile()
    try:
        profiler.runcall(server.run)
    finally:
        profiler.dump_stats(profile)


# ------------------------------------------------------------------------ measuring
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Client:
    """A keep-alive stdlib client: the same small cost on both paths."""

    def __init__(self, port: int, path: str, token: str = "") -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port)
        self.path = path
        self.headers = {"content-type": "application/json"}
        if token:
            self.headers["authorization"] = f"Bearer {token}"

    def call(self, body: bytes) -> float:
        t0 = time.perf_counter()
        self.conn.request("POST", self.path, body=body, headers=self.headers)
        response = self.conn.getresponse()
        data = response.read()
        elapsed = time.perf_counter() - t0
        if response.status != 200 or b"usage" not in data:
            raise RuntimeError(f"{self.path}: {response.status} {data[:200]!r}")
        return elapsed

    def first_byte(self, body: bytes) -> float:
        t0 = time.perf_counter()
        self.conn.request("POST", self.path, body=body, headers=self.headers)
        response = self.conn.getresponse()
        first = response.read1(65536)
        elapsed = time.perf_counter() - t0
        rest = response.read()
        if response.status != 200 or not first or b"[DONE]" not in first + rest:
            raise RuntimeError(f"{self.path}: {response.status}")
        return elapsed


def latency(upstream: int, gateway: int, pid: int, token: str, samples: int) -> dict[str, Any]:
    plain = json.dumps({"model": "bench", **PROMPT}).encode()
    stream = json.dumps({"model": "stream-20-0-0", "stream": True, **PROMPT}).encode()
    direct, via = Client(upstream, CHAT), Client(gateway, GATEWAY_CHAT, token)
    for _ in range(300):  # warm-up: connections, caches, the ledger's first month row
        direct.call(plain)
        via.call(plain)
        direct.first_byte(stream)
        via.first_byte(stream)
    out: dict[str, Any] = {"direct": [], "via": [], "ttfb_direct": [], "ttfb_via": []}
    cpu = 0.0
    for _ in range(samples):  # interleaved, so drift hits both alike
        out["direct"].append(direct.call(plain))
        cpu0 = cpu_seconds(pid)
        out["via"].append(via.call(plain))
        cpu += cpu_seconds(pid) - cpu0
    out["cpu_per_request"] = cpu / samples
    for _ in range(samples // 2):
        out["ttfb_direct"].append(direct.first_byte(stream))
        out["ttfb_via"].append(via.first_byte(stream))
    return out


async def _stream(port: int, token: str, model: str, opened: asyncio.Event | None) -> int:
    """One streamed request on its own connection; the number of events received."""
    body = json.dumps({"model": model, "stream": True, **PROMPT}).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            f"POST {GATEWAY_CHAT} HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n"
            f"authorization: Bearer {token}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        ).encode()
        + body
    )
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n", 1)[0]:
        raise RuntimeError(head[:200].decode(errors="replace"))
    first = await reader.read(65536)
    if opened is not None:
        opened.set()
    rest = await reader.read()
    writer.close()
    data = first + rest
    if b"[DONE]" not in data:
        raise RuntimeError("stream ended early")
    return data.count(b"data: {")


async def concurrent(port: int, pid: int, token: str, streams: int, hold_ms: int) -> dict[str, Any]:
    """``streams`` at once, all held open after their first event: RSS with all open,
    then every one must finish whole."""
    rss_before = rss_bytes(pid)
    flags = [asyncio.Event() for _ in range(streams)]
    tasks = [
        asyncio.ensure_future(_stream(port, token, f"stream-50-0-{hold_ms}", flag))
        for flag in flags
    ]
    await asyncio.wait_for(asyncio.gather(*(f.wait() for f in flags)), 60)
    await asyncio.sleep(0.2)
    rss_open = rss_bytes(pid)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    complete = [r for r in results if isinstance(r, int) and r >= 50]
    return {
        "streams": streams,
        "errors": len(errors),
        "first_error": repr(errors[0]) if errors else "",
        "complete": len(complete),
        "rss_per_stream": (rss_open - rss_before) / streams,
    }


async def chunk_cpu(port: int, pid: int, token: str, streams: int, events: int) -> float:
    """Server CPU seconds per 1,000 chunks, over ``streams`` paced streams (1 ms apart,
    so the chunks reach the server one by one rather than coalesced)."""
    cpu0 = cpu_seconds(pid)
    counts = await asyncio.gather(
        *(_stream(port, token, f"stream-{events}-1-0", None) for _ in range(streams))
    )
    used = cpu_seconds(pid) - cpu0
    return used / (sum(counts) / 1000)


def drive(args: argparse.Namespace, upstream: int, store: str, tmp: Path) -> dict[str, Any]:
    port = _free_port()
    data_dir = tmp / store
    data_dir.mkdir()
    proc = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--role",
            "gateway",
            "--port",
            str(port),
            "--upstream",
            f"http://127.0.0.1:{upstream}",
            "--store",
            store,
            "--data-dir",
            str(data_dir),
            "--log-level",
            args.log_level,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not (data_dir / TOKEN_FILE).exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the gateway ({store}) did not start")
            time.sleep(0.05)
        token = (data_dir / TOKEN_FILE).read_text()
        results: dict[str, Any] = {"store": store}
        results["latency"] = latency(upstream, port, proc.pid, token, args.samples)
        results["concurrent"] = asyncio.run(
            concurrent(port, proc.pid, token, args.streams, args.hold_ms)
        )
        results["cpu_per_1000"] = asyncio.run(chunk_cpu(port, proc.pid, token, 20, 500))
        results["rss_mib"] = rss_bytes(proc.pid) / 1048576
        return results
    finally:
        proc.terminate()
        proc.wait(15)


def report(runs: list[dict[str, Any]]) -> str:
    rows: list[tuple[str, str, str, Any]] = []
    for run in runs:
        lat = run["latency"]
        d50, v50 = statistics.median(lat["direct"]), statistics.median(lat["via"])
        d99, v99 = pct(lat["direct"], 0.99), pct(lat["via"], 0.99)
        t50 = statistics.median(lat["ttfb_via"]) - statistics.median(lat["ttfb_direct"])
        t99 = pct(lat["ttfb_via"], 0.99) - pct(lat["ttfb_direct"], 0.99)
        c = run["concurrent"]
        store = run["store"]
        rows += [
            (
                f"[{store}] added latency, non-streamed, p50 / p99",
                f"{(v50 - d50) * 1e3:.2f} ms / {(v99 - d99) * 1e3:.2f} ms "
                f"(direct {d50 * 1e3:.2f} / {d99 * 1e3:.2f} ms, via {v50 * 1e3:.2f} / "
                f"{v99 * 1e3:.2f} ms)",
                "p50 < 1 ms",
                v50 - d50 < 1e-3,
            ),
            (
                f"[{store}] server CPU per non-streamed request",
                f"{lat['cpu_per_request'] * 1e3:.2f} ms",
                "",
                "",
            ),
            (
                f"[{store}] added time to first streamed byte, p50 / p99",
                f"{t50 * 1e3:.2f} ms / {t99 * 1e3:.2f} ms",
                "p50 < 2 ms",
                t50 < 2e-3,
            ),
            (
                f"[{store}] {c['streams']} concurrent streams (held open, then 50 events each)",
                f"{c['complete']} complete, {c['errors']} errors {c['first_error']}".strip(),
                "0 errors",
                c["errors"] == 0 and c["complete"] == c["streams"],
            ),
            (
                f"[{store}] server CPU per 1,000 streamed chunks",
                f"{run['cpu_per_1000'] * 1e3:.0f} ms",
                "",
                "",
            ),
            (
                f"[{store}] server memory per open stream",
                f"{c['rss_per_stream'] / 1024:.0f} KiB (server RSS {run['rss_mib']:.0f} MiB)",
                "",
                "",
            ),
        ]
    return table(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--hold-ms", type=int, default=2000)
    parser.add_argument("--store", choices=["memory", "sql", "both"], default="both")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--role", choices=["driver", "upstream", "gateway"], default="driver")
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "upstream":
        import uvloop

        uvloop.run(upstream_main(args.port))
        return
    if args.role == "gateway":
        gateway_main(args.port, args.upstream, args.store, Path(args.data_dir), args.log_level)
        return
    upstream = _free_port()
    fake = subprocess.Popen(
        [sys.executable, __file__, "--role", "upstream", "--port", str(upstream)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert fake.stdout is not None
        if fake.stdout.readline().strip() != "ready":
            raise RuntimeError("the fake upstream did not start")
        stores = ["memory", "sql"] if args.store == "both" else [args.store]
        with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
            runs = [drive(args, upstream, store, Path(tmp)) for store in stores]
    finally:
        fake.terminate()
        fake.wait(10)
    load = os.getloadavg()
    print(
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
        f"load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}"
    )
    print(report(runs))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
