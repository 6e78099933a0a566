"""Control-plane benchmark: does one user's thousand sandboxes punish their neighbours?

One bounded run on 127.0.0.1: ``sandbox serve`` (embedded mode, its default SQLite
store, log level warning) with a tiny stand-in agent; user A and user B are members of
one org (one namespace: the neighbour shares every table and cache with A). Driven from
this process by a minimal HTTP/1.1 keep-alive client on raw asyncio sockets, so the
figures are the server's, not a client library's. In order:

1. B's ``GET /api/v1/sandbox/sessions`` latency while A holds nothing (the baseline);
2. A creates ``--sandboxes`` sandboxes (``--in-flight`` POSTs at a time) while B lists
   in a loop: creates/s sustained, and B's p99 *during* the burst;
3. until every one is Ready and the server settles, then the server's CPU over
   ``--idle`` seconds (the controller's sweep, the caches: < 3 % of a core);
4. B's list p99 with the thousand present, one request at a time;
5. ``--concurrent`` list requests sent at once on as many open connections (B's, and
   informational: A's own list of the thousand): p50 < 50 ms.

    .venv/bin/python bench/control_plane.py [--sandboxes 1000] [--deadline 600]

Not a test: the figures depend on the machine; nothing asserts. Every target of issue 11
is printed PASS/FAIL next to its figure.
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
from pathlib import Path
from typing import Any

from common import Row, bounded_run, cpu_seconds, pct, publish, table

SANDBOX = str(Path(sys.executable).parent / "sandbox")
API = "/api/v1/sandbox/sessions"
ORG = "bench"
AGENT = "bench-idle"

# the targets
IDLE_CPU = 0.03  # of one core
NEIGHBOUR_P99_S = 0.050
CONCURRENT_P50_S = 0.050


class Server:
    """``sandbox serve`` on a free port; stopped (SIGTERM, then SIGKILL) by ``stop``."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.log = log
        with open(log, "wb") as fh:
            self.proc = subprocess.Popen(
                [SANDBOX, "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env={**os.environ, **env},
                stdout=subprocess.DEVNULL,
                stderr=fh,
            )
        self.pid = self.proc.pid

    async def wait_up(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError):
                conn = await Conn.open(self.port, "")
                try:
                    status, _ = await conn.request("GET", "/healthz")
                    if status == 200:
                        return
                finally:
                    conn.close()
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sandbox serve did not start:\n{self.log.read_text()[-3000:]}")
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Conn:
    """One keep-alive HTTP/1.1 connection; a request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, token: str):
        self.reader, self.writer, self.token = reader, writer, token

    @classmethod
    async def open(cls, port: int, token: str) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 24)
        return cls(reader, writer, token)

    def send(self, method: str, path: str, body: bytes = b"") -> None:
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        if self.token:
            head += f"Authorization: Bearer {self.token}\r\n"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)

    async def response(self) -> tuple[int, bytes]:
        status_line = await self.reader.readuntil(b"\r\n")
        status = int(status_line.split()[1])
        length = 0
        chunked = False
        while True:
            line = await self.reader.readuntil(b"\r\n")
            if line == b"\r\n":
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if not chunked:
            return status, await self.reader.readexactly(length)
        body = b""
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await self.reader.readexactly(size + 2)
            if size == 0:
                return status, body
            body += chunk[:-2]

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        self.send(method, path, body)
        await self.writer.drain()
        return await self.response()

    def close(self) -> None:
        self.writer.close()


async def timed_list(conn: Conn) -> float:
    t0 = time.perf_counter()
    status, _ = await conn.request("GET", API)
    if status != 200:
        raise RuntimeError(f"list answered {status}")
    return time.perf_counter() - t0


async def sequential_lists(conn: Conn, count: int) -> list[float]:
    return [await timed_list(conn) for _ in range(count)]


async def concurrent_lists(port: int, token: str, count: int) -> list[float]:
    """``count`` connections open first, then every request written at once; each
    latency from the moment its request was written to its full response."""
    conns = list(await asyncio.gather(*(Conn.open(port, token) for _ in range(count))))
    try:
        # warm each connection (accepted, a first request answered), all at once: done
        # one after another on a loaded machine, the first ones outlive the server's
        # keep-alive timeout (5 s) before the burst
        await asyncio.gather(*(conn.request("GET", API) for conn in conns))

        async def one(i: int) -> float:
            t0 = time.perf_counter()
            try:
                conns[i].send("GET", API)
                await conns[i].writer.drain()
                status, _ = await conns[i].response()
            except (asyncio.IncompleteReadError, ConnectionError):
                # the server closed it after its keep-alive timeout while the others
                # warmed up (a loaded machine): again on a new one, timed from the start
                conns[i].close()
                conns[i] = await Conn.open(port, token)
                status, _ = await conns[i].request("GET", API)
            if status != 200:
                raise RuntimeError(f"list answered {status}")
            return time.perf_counter() - t0

        return list(await asyncio.gather(*(one(i) for i in range(len(conns)))))
    finally:
        for conn in conns:
            conn.close()


async def burst_of_creates(
    port: int, token: str, total: int, in_flight: int, neighbour: Conn
) -> dict[str, Any]:
    """A's creates, ``in_flight`` at a time, while B lists one request after another."""
    done = asyncio.Event()
    names = iter(range(total))
    failures: list[str] = []

    async def creator() -> None:
        conn = await Conn.open(port, token)
        try:
            for i in names:
                body = json.dumps({"agent": AGENT, "name": f"a{i:05d}"}).encode()
                status, answer = await conn.request("POST", API, body)
                if status != 201:
                    failures.append(f"{status} {answer[:200]!r}")
        finally:
            conn.close()

    async def lister() -> list[float]:
        out = []
        while not done.is_set():
            out.append(await timed_list(neighbour))
            await asyncio.sleep(0.02)  # ~40 lists/s: a console polling, not a flood
        return out

    listing = asyncio.create_task(lister())
    t0 = time.perf_counter()
    await asyncio.gather(*(creator() for _ in range(in_flight)))
    seconds = time.perf_counter() - t0
    done.set()
    during = await listing
    if len(failures) == total:
        raise RuntimeError(f"every create failed, first: {failures[0]}")
    return {"seconds": seconds, "during": during, "failed": failures}


async def wait_all_ready(conn: Conn, total: int, timeout: float) -> float:
    t0 = time.perf_counter()
    deadline = time.monotonic() + timeout
    while True:
        status, body = await conn.request("GET", API)
        items = json.loads(body)["sandboxes"] if status == 200 else []
        ready = sum(1 for s in items if s["status"] == "running")
        if ready >= total:
            return time.perf_counter() - t0
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {ready}/{total} sandboxes running after {timeout:.0f} s")
        await asyncio.sleep(0.5)


def idle_cpu(pid: int, seconds: float) -> float:
    """The process's CPU over ``seconds`` of wall time, as a share of one core."""
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - c0) / (time.monotonic() - t0)


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from openova_sandbox.auth.issuer import EmbeddedIssuer

    script = tmp / "agent.py"
    script.write_text("import sys\nsys.stdin.read()\n")
    agents = tmp / "agents.json"
    agents.write_text(
        json.dumps([{"slug": AGENT, "binary": sys.executable, "defaultArgs": [str(script)]}])
    )
    data = tmp / "data"
    issuer = EmbeddedIssuer.load_or_create(data)
    from datetime import timedelta

    ttl = timedelta(seconds=args.deadline + 60)
    user_a = issuer.mint(sub="bench-a", email="a@bench.example", org=ORG, ttl=ttl)
    user_b = issuer.mint(sub="bench-b", email="b@bench.example", org=ORG, ttl=ttl)
    env = {
        "SANDBOX_DATA_DIR": str(data),
        "OPENOVA_SANDBOX_AGENTS_PATH": str(agents),
        "SANDBOX_LOG_LEVEL": "warning",
        # the per-user and per-org quotas (25 / 250 sandboxes by default) would refuse
        # the burst: this bench is about cost, not limits
        "SANDBOX_QUOTA_USER": f"sandboxes={args.sandboxes}",
        "SANDBOX_QUOTA_ORG": f"sandboxes={args.sandboxes + 10}",
    }
    server = Server(env, tmp / "serve.log")
    results: dict[str, Any] = {"sandboxes": args.sandboxes}

    def say(what: str) -> None:
        if args.verbose:
            print(f"{time.strftime('%H:%M:%S')} {what}", file=sys.stderr, flush=True)

    try:
        await server.wait_up()
        b = await Conn.open(server.port, user_b)
        a = await Conn.open(server.port, user_a)
        try:
            say("baseline …")
            await sequential_lists(b, 20)  # warm-up
            results["baseline"] = await sequential_lists(b, args.samples)
            say(f"{args.sandboxes} creates …")
            cpu0 = cpu_seconds(server.pid)
            burst = await burst_of_creates(server.port, user_a, args.sandboxes, args.in_flight, b)
            burst_cpu = cpu_seconds(server.pid) - cpu0
            results["creates_s"] = burst["seconds"]
            results["during"] = burst["during"]
            results["failed"] = [*burst["failed"][:3], f"{len(burst['failed'])} in all"]
            created = args.sandboxes - len(burst["failed"])
            results["created"] = created
            # the server's CPU over the burst a create (the controller's work on them
            # meanwhile and B's lists, ~0.5 ms each, included)
            results["cpu_per_create"] = burst_cpu / max(created, 1)
            say("until every sandbox is running …")
            results["ready_after_s"] = burst["seconds"] + await wait_all_ready(
                a, created, timeout=max(60.0, args.deadline / 3)
            )
            say("settling …")
            await asyncio.sleep(args.settle)
            say(f"idle CPU over {args.idle} s …")
            results["idle_cpu"] = await asyncio.to_thread(idle_cpu, server.pid, args.idle)
            say("neighbour's lists, one at a time …")
            b.close()  # idle past the server's keep-alive timeout: a new connection
            b = await Conn.open(server.port, user_b)
            results["after"] = await sequential_lists(b, args.samples)
            say(f"{args.concurrent} concurrent lists …")
            cpu0 = cpu_seconds(server.pid)
            results["concurrent"] = await concurrent_lists(server.port, user_b, args.concurrent)
            # the server's CPU per list (each connection's warm-up request included):
            # what the p50 would be on a core of its own is about half the burst's work
            results["cpu_per_list"] = (cpu_seconds(server.pid) - cpu0) / (2 * args.concurrent)
            results["concurrent_owner"] = await concurrent_lists(
                server.port, user_a, min(args.concurrent, 20)
            )
        finally:
            a.close()
            b.close()
    finally:
        server.stop()
    return results


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def report(r: dict[str, Any]) -> str:
    n = r["sandboxes"]
    rows: list[Row] = []
    base = r["baseline"]
    rows.append(
        (
            "B's list p50 / p99, A holding nothing (baseline)",
            f"{ms(pct(base, 0.5))} / {ms(pct(base, 0.99))}",
            "",
            "",
        )
    )
    during = r["during"]
    rows.append(
        (
            f"B's list p99 during A's burst of {n} creates ({len(during)} lists)",
            f"{ms(pct(during, 0.99))} (p50 {ms(pct(during, 0.5))})",
            f"< {NEIGHBOUR_P99_S * 1000:.0f} ms",
            pct(during, 0.99) < NEIGHBOUR_P99_S,
        )
    )
    created = r["created"]
    rows.append(
        (
            "server CPU per create during the burst (B's lists included)",
            f"{r['cpu_per_create'] * 1000:.1f} ms",
            "",
            "",
        )
    )
    rows.append(
        (
            f"creates/s sustained ({n} POSTs, {r['in_flight']} in flight)",
            f"{created / r['creates_s']:.0f}/s ({r['creates_s']:.1f} s; all running after "
            f"{r['ready_after_s']:.1f} s)"
            + ("" if created == n else f"; {n - created} failed: {r['failed'][0][:80]}"),
            "every create answered 201",
            created == n,
        )
    )
    rows.append(
        (
            f"idle server CPU with {n} sandboxes ({r['idle']:.0f} s)",
            f"{r['idle_cpu'] * 100:.1f} % of a core",
            f"< {IDLE_CPU * 100:.0f} %",
            r["idle_cpu"] < IDLE_CPU,
        )
    )
    after = r["after"]
    rows.append(
        (
            f"B's list p99 with A's {n} present",
            f"{ms(pct(after, 0.99))} (p50 {ms(pct(after, 0.5))})",
            f"< {NEIGHBOUR_P99_S * 1000:.0f} ms",
            pct(after, 0.99) < NEIGHBOUR_P99_S,
        )
    )
    conc = r["concurrent"]
    rows.append(
        (
            f"{len(conc)} concurrent lists (B's) on SQLite, p50 / p99",
            f"{ms(pct(conc, 0.5))} / {ms(pct(conc, 0.99))}",
            f"p50 < {CONCURRENT_P50_S * 1000:.0f} ms",
            pct(conc, 0.5) < CONCURRENT_P50_S,
        )
    )
    rows.append(
        (
            "server CPU per list request (B's, in that burst)",
            f"{r['cpu_per_list'] * 1000:.2f} ms (p50 on a free core ≈ "
            f"{r['cpu_per_list'] * len(conc) / 2 * 1000:.0f} ms)",
            "",
            "",
        )
    )
    own = r["concurrent_owner"]
    rows.append(
        (
            f"{len(own)} concurrent lists of A's own {n} (informational), p50 / p99",
            f"{ms(pct(own, 0.5))} / {ms(pct(own, 0.99))}",
            "",
            "",
        )
    )
    return table(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sandboxes", type=int, default=1000)
    parser.add_argument("--in-flight", type=int, default=8, help="A's creates at a time")
    parser.add_argument("--samples", type=int, default=300, help="sequential lists per figure")
    parser.add_argument("--concurrent", type=int, default=200)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds before idle CPU")
    parser.add_argument("--idle", type=float, default=15.0, help="seconds of idle CPU measured")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument(
        "--deadline", type=int, default=600, help="seconds before the run gives up (whole run)"
    )
    args = parser.parse_args()
    t0 = time.monotonic()

    results = bounded_run(
        lambda tmp: asyncio.run(run(args, tmp)),
        deadline=args.deadline,
        prefix="bench-control-plane-",
    )
    results["in_flight"] = args.in_flight
    results["idle"] = args.idle
    publish("bench/control_plane.py", t0, results, report(results), args.json)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
