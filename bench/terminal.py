"""Terminal server benchmark: one bounded run, baselines and targets measured together.

Runs the pty-server app in this process under uvicorn (its own thread and event loop,
uvloop when available) on 127.0.0.1 and drives it with the ``websockets`` client from
the main thread. Every target is a ratio to a baseline taken in the same run (raw PTY
echo, raw PTY read rate), or an absolute bound, and is printed PASS/FAIL.

    .venv/bin/python bench/terminal.py [--bulk-mib 48] [--samples 1000] [--idle 1000]

Not a test: numbers depend on the machine; nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from websockets.asyncio.client import connect

from common import cpu_seconds, pct, rss_bytes, table
from openova_sandbox.domain.catalogue import load_catalogue
from openova_sandbox.domain.principal import Principal
from openova_sandbox.terminal.registry import SandboxContext, TerminalRegistry
from openova_sandbox.terminal.server import create_pty_app

try:
    import uvloop
except ImportError:  # pragma: no cover - uvicorn[standard] brings it
    uvloop = None  # type: ignore[assignment]

AGENT = r"""
import os, sys, tty
tty.setraw(0)
os.write(1, b"READY")  # input typed before setraw would be flushed by it
mode = sys.argv[1]
if mode == "echo":
    while True:
        data = os.read(0, 4096)
        if not data:
            break
        os.write(1, data)
else:
    total = int(sys.argv[2])
    os.read(0, 1)  # wait for the go byte: viewers attach first
    line = bytes(range(33, 127)) + b"\r\n"
    block = (line * (65536 // len(line) + 1))[:65536]
    sent = 0
    while sent < total:
        sent += os.write(1, block[: min(len(block), total - sent)])
    os.write(1, b"BULKEND\r\n")
    os.read(0, 1)  # stay alive (idle) so the session can be replayed
"""

TOKEN = "bench-token"
OWNER = Principal(sub="bench", email="bench@example.com")


async def _authenticate(token: str) -> Principal:
    return OWNER


# ---------------------------------------------------------------------- baselines
def _wait_ready(master: int) -> None:
    seen = b""
    while b"READY" not in seen:
        seen += os.read(master, 4096)


def raw_read_rate(script: Path, total: int) -> float:
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, str(script), "bulk", str(total)], stdin=slave, stdout=slave, stderr=slave
    )
    os.close(slave)
    _wait_ready(master)
    t0 = time.perf_counter()
    os.write(master, b"g")
    got = 0
    tail = b""
    while True:
        chunk = os.read(master, 65536)
        got += len(chunk)
        tail = (tail + chunk)[-16:]
        if b"BULKEND" in tail:
            break
    elapsed = time.perf_counter() - t0
    proc.kill()
    proc.wait()
    os.close(master)
    return total / elapsed


class MinimalWebSocket:
    """A blocking RFC 6455 client with no library overhead, to time the server alone.

    The raw-PTY baseline is a blocking read loop; timing the server through an asyncio
    client library would add that library's own cost to the server's.
    """

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(4096)
        head, _, self.buffer = head.partition(b"\r\n\r\n")
        self.scratch = bytearray(1 << 20)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"upgrade refused: {head[:200]!r}")

    def _take(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def recv(self) -> bytes:
        first, second = self._take(2)
        size = second & 0x7F
        if size == 126:
            size = struct.unpack("!H", self._take(2))[0]
        elif size == 127:
            size = struct.unpack("!Q", self._take(8))[0]
        payload = self._take(size)
        if first & 0x0F == 0x8:
            raise ConnectionError("close frame")
        return payload

    def recv_counted(self) -> tuple[int, bytes]:
        """One frame's payload size and its last 16 bytes, without keeping the payload."""
        first, second = self._take(2)
        size = second & 0x7F
        if size == 126:
            size = struct.unpack("!H", self._take(2))[0]
        elif size == 127:
            size = struct.unpack("!Q", self._take(8))[0]
        if first & 0x0F == 0x8:
            raise ConnectionError("close frame")
        have = min(len(self.buffer), size)
        tail, self.buffer = self.buffer[:have][-16:], self.buffer[have:]
        remaining = size - have
        while remaining:
            n = self.sock.recv_into(self.scratch, min(remaining, len(self.scratch)))
            if not n:
                raise ConnectionError("closed")
            tail = (tail + bytes(self.scratch[max(0, n - 16) : n]))[-16:]
            remaining -= n
        return size, tail

    def send(self, data: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.sock.sendall(bytes([0x82, 0x80 | len(data)]) + mask + masked)

    def close(self) -> None:
        self.sock.close()


def interleaved_echo(
    port: int, session_id: str, script: Path, samples: int
) -> tuple[list[float], list[float]]:
    """Raw PTY echo and WebSocket keystroke, sample by sample in turn.

    Alternating the two puts both under the same machine load at the same moment, so
    their ratio means something on a busy machine.
    """
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, str(script), "echo"], stdin=slave, stdout=slave, stderr=slave
    )
    os.close(slave)
    _wait_ready(master)
    ws = MinimalWebSocket(port, f"/sessions/{session_id}/attach")
    raw: list[float] = []
    via_ws: list[float] = []
    try:
        seen = b""
        while b"READY" not in seen:
            seen += ws.recv()
        for i in range(samples + 50):
            t0 = time.perf_counter()
            os.write(master, b"k")
            got = b""
            while b"k" not in got:
                got += os.read(master, 4096)
            t1 = time.perf_counter()
            ws.send(b"k")
            got = b""
            while b"k" not in got:
                got += ws.recv()
            t2 = time.perf_counter()
            if i >= 50:
                raw.append(t1 - t0)
                via_ws.append(t2 - t1)
        return raw, via_ws
    finally:
        ws.close()
        proc.kill()
        proc.wait()
        os.close(master)


# ---------------------------------------------------------------------- server
class Harness:
    def __init__(self, workdir: Path) -> None:
        self.registry = TerminalRegistry(catalogue=load_catalogue(None))
        self.registry.add_sandbox(
            SandboxContext(sandbox_id="bench", workdir=str(workdir), session_limit=5000)
        )
        app = create_pty_app(
            registry=self.registry,
            sandbox_id="bench",
            authenticate=_authenticate,
            authorize=lambda p: True,
        )
        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=0,
                log_level="warning",
                ws="websockets-sansio",
                ws_per_message_deflate=False,
                lifespan="on",
            )
        )
        self.loop = uvloop.new_event_loop() if uvloop else asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.serve())

    def start(self) -> int:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        port: int = self.server.servers[0].sockets[0].getsockname()[1]
        return port

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the server's loop (registry state lives there)."""

        async def wrapper() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(30)

    def stop(self, timeout: float = 120) -> float:
        t0 = time.perf_counter()
        self.server.should_exit = True
        self.thread.join(timeout)
        return time.perf_counter() - t0


async def drive(args: argparse.Namespace, script: Path) -> dict[str, Any]:
    """The client side, in its own process (as a browser would be): no GIL shared."""
    results: dict[str, Any] = {}
    base = f"http://127.0.0.1:{args.drive}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    ws_base = f"ws://127.0.0.1:{args.drive}/sessions"
    ws_opts: dict[str, Any] = {
        "additional_headers": headers,
        "compression": None,
        "max_size": None,
        "open_timeout": 20,
    }
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as http:

        async def resyncs() -> float:
            text = (await http.get("/metrics")).text
            line = next(
                x for x in text.splitlines() if x.startswith("pty_server_viewer_resyncs_total")
            )
            return float(line.split()[-1])

        async def wait_ready(ws: Any) -> None:
            seen = b""
            while b"READY" not in seen:
                seen += await asyncio.wait_for(ws.recv(), 20)

        async def create(argv: list[str]) -> str:
            response = await http.post("/sessions", json={"command": argv})
            response.raise_for_status()
            return str(response.json()["id"])

        # Memory per idle session (server RSS) first, on a heap not yet grown by the
        # throughput runs; the 200 sessions stay (idle) through the rest of the run.
        await asyncio.sleep(0.5)
        rss0 = rss_bytes(args.server_pid)
        for _ in range(200):
            await create(["cat"])
        await asyncio.sleep(0.5)
        results["mem_per_session"] = (rss_bytes(args.server_pid) - rss0) / 200
        # Keystroke round trip through the WebSocket: a minimal blocking client first
        # (comparable to the baseline), then the asyncio `websockets` client.
        sid = await create([sys.executable, str(script), "echo"])
        results["raw_echo"], results["ws_echo_min"] = await asyncio.to_thread(
            interleaved_echo, args.drive, sid, script, args.samples
        )
        await http.delete(f"/sessions/{sid}")
        sid = await create([sys.executable, str(script), "echo"])
        async with connect(f"{ws_base}/{sid}/attach", **ws_opts) as ws:
            await wait_ready(ws)
            samples = []
            for i in range(args.samples + 50):
                t0 = time.perf_counter()
                await ws.send(b"k")
                got = b""
                while b"k" not in got:
                    message = await ws.recv()
                    got += message if isinstance(message, bytes) else message.encode()
                if i >= 50:
                    samples.append(time.perf_counter() - t0)
        results["ws_echo"] = samples
        await http.delete(f"/sessions/{sid}")

        # Output throughput to 1 and to 10 viewers.
        total = args.bulk_mib * 1024 * 1024

        async def fan_out(viewers: int) -> dict[str, Any]:
            """``viewers`` minimal blocking clients, one thread each (recv drops the GIL)."""
            sid = await create([sys.executable, str(script), "bulk", str(total)])
            path = f"/sessions/{sid}/attach"
            sockets = [MinimalWebSocket(args.drive, path) for _ in range(viewers)]
            for ws in sockets:
                seen = b""
                while b"READY" not in seen:
                    seen += ws.recv()
            rates: list[float] = []

            def drain(ws: MinimalWebSocket, t0: float) -> None:
                # Bytes actually received: a resynced viewer skipped some, and is not
                # credited for them.
                tail = b""
                received = 0
                while b"BULKEND" not in tail:
                    size, last = ws.recv_counted()
                    received += size
                    tail = (tail + last)[-16:]
                rates.append(min(received, total) / (time.perf_counter() - t0))

            before = await resyncs()
            cpu0 = cpu_seconds(args.server_pid)
            t0 = time.perf_counter()
            threads = [threading.Thread(target=drain, args=(ws, t0)) for ws in sockets]
            for thread in threads:
                thread.start()
            sockets[0].send(b"g")
            limit = args.bulk_mib * 2 + 30

            def join_all() -> None:
                deadline = time.monotonic() + limit
                for thread in threads:
                    thread.join(max(0.0, deadline - time.monotonic()))

            await asyncio.to_thread(join_all)
            if len(rates) != viewers:
                raise RuntimeError("a viewer did not receive the whole burst in time")
            wall = max(total / r for r in rates)
            cpu = cpu_seconds(args.server_pid) - cpu0
            trial: dict[str, Any] = {
                "server_cpu_share": cpu / wall,
                "ms_per_mb_per_viewer": cpu * 1e3 / (total * viewers / 1e6),
            }
            trial["resyncs"] = int(await resyncs() - before)
            for ws in sockets:
                ws.close()
            await http.delete(f"/sessions/{sid}")
            trial["rates"] = rates
            return trial

        # Best of three trials, as for the raw baseline.
        trials1 = [await fan_out(1) for _ in range(3)]
        trials10 = [await fan_out(10) for _ in range(3)]
        for viewers, trials in ((1, trials1), (10, trials10)):
            best = max(trials, key=lambda t: min(t["rates"]))
            results[f"tp{viewers}"] = best["rates"]
            results[f"resyncs_{viewers}"] = best["resyncs"]
            results[f"cpu_{viewers}"] = {
                k: best[k] for k in ("server_cpu_share", "ms_per_mb_per_viewer")
            }

        # Replay of a full 1 MiB ring to a new viewer.
        sid = await create([sys.executable, str(script), "bulk", str(3 * 1024 * 1024)])
        async with connect(f"{ws_base}/{sid}/attach", **ws_opts) as ws:
            await wait_ready(ws)
            await ws.send(b"g")
            tail = b""
            while b"BULKEND" not in tail:
                tail = (tail + await ws.recv())[-16:]
        replays = []
        for _ in range(7):
            t0 = time.perf_counter()
            async with connect(f"{ws_base}/{sid}/attach", **ws_opts) as ws:
                replay = await ws.recv()
                replays.append(time.perf_counter() - t0)
                results["replay_size"] = len(replay)
        results["replay"] = replays
        await http.delete(f"/sessions/{sid}")

        # Top up to N idle sessions held.
        t0 = time.perf_counter()
        for _ in range(args.idle - 200):
            await create(["cat"])
        results["idle_spawn_s"] = time.perf_counter() - t0
        ids = (await http.get("/sessions")).json()["sessions"]
        alive = 0
        for sid in ids:
            info = (await http.get(f"/sessions/{sid}")).json()
            if not info["exited"] and os.access(f"/proc/{info['pid']}", os.F_OK):
                alive += 1
        results["idle_live"] = min(alive, (await http.get("/idle")).json()["activeSessions"])
        async with connect(f"{ws_base}/{ids[-1]}/attach", **ws_opts) as ws:  # still answers
            await ws.recv()
            await ws.send(b"still-here\r")
            got = b""
            while b"still-here" not in got:
                got += await asyncio.wait_for(ws.recv(), 10)
    return results


def run_server_and_drive(args: argparse.Namespace, script: Path) -> dict[str, Any]:
    harness = Harness(Path(tempfile.mkdtemp(prefix="bench-terminal-")))
    port = harness.start()
    try:
        driver = subprocess.run(
            [
                sys.executable,
                __file__,
                "--drive",
                str(port),
                "--server-pid",
                str(os.getpid()),
                "--script",
                str(script),
                "--bulk-mib",
                str(args.bulk_mib),
                "--samples",
                str(args.samples),
                "--idle",
                str(args.idle),
            ],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if driver.returncode != 0:
            raise RuntimeError(f"driver failed:\n{driver.stderr[-4000:]}")
        results: dict[str, Any] = json.loads(driver.stdout)
    finally:
        results_shutdown = harness.stop()
    results["shutdown_s"] = results_shutdown
    return results


def report(results: dict[str, Any]) -> str:
    raw_p50 = statistics.median(results["raw_echo"])
    ws_p50 = statistics.median(results["ws_echo_min"])
    lib_p50 = statistics.median(results["ws_echo"])
    raw_rate = results["raw_rate"]
    tp1 = min(results["tp1"])
    tp10 = min(results["tp10"])
    replay = statistics.median(results["replay"])
    mem = results["mem_per_session"]
    rows = [
        (
            "raw PTY echo p50 / p99 (baseline, interleaved)",
            f"{raw_p50 * 1e6:.0f} µs / {pct(results['raw_echo'], 0.99) * 1e6:.0f} µs",
            "",
            "",
        ),
        (
            "keystroke via WebSocket, minimal client p50 / p99",
            f"{ws_p50 * 1e6:.0f} µs / {pct(results['ws_echo_min'], 0.99) * 1e6:.0f} µs"
            f" ({ws_p50 / raw_p50:.1f}x raw)",
            "p50 ≤ 5x raw and < 1 ms",
            ws_p50 <= 5 * raw_p50 and ws_p50 < 1e-3,
        ),
        (
            "keystroke via WebSocket, `websockets` client p50 / p99",
            f"{lib_p50 * 1e6:.0f} µs / {pct(results['ws_echo'], 0.99) * 1e6:.0f} µs",
            "",
            "",
        ),
        ("raw PTY read rate (baseline)", f"{raw_rate / 1e6:.1f} MB/s", "", ""),
        (
            "output to 1 viewer",
            f"{tp1 / 1e6:.1f} MB/s ({tp1 / raw_rate:.0%})",
            "≥ 50% of raw",
            tp1 >= 0.5 * raw_rate,
        ),
        (
            "output to each of 10 viewers (slowest)",
            f"{tp10 / 1e6:.1f} MB/s ({tp10 / raw_rate:.0%}); resyncs {results['resyncs_10']}",
            "≥ 25% of raw",
            tp10 >= 0.25 * raw_rate,
        ),
        (
            f"replay of a full ring ({results['replay_size'] / 1048576:.2f} MiB), connect+replay",
            f"{replay * 1e3:.1f} ms",
            "< 50 ms",
            replay < 0.05,
        ),
        (
            "server memory per idle session (200 x cat)",
            f"{mem / 1024:.0f} KiB",
            "< 1 MiB",
            mem < 1024 * 1024,
        ),
        (
            "idle sessions held",
            f"{results['idle_live']} (spawn {results['idle_spawn_s']:.1f} s, "
            f"shutdown {results['shutdown_s']:.1f} s)",
            f"{results['idle_target']} held",
            results["idle_live"] >= results["idle_target"],
        ),
    ]
    for viewers in (1, 10):
        cpu = results[f"cpu_{viewers}"]
        rows.append(
            (
                f"server CPU while streaming to {viewers} viewer(s)",
                f"{cpu['server_cpu_share']:.0%} of a core, "
                f"{cpu['ms_per_mb_per_viewer']:.1f} ms per MB per viewer",
                "",
                "",
            )
        )
    return table(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--bulk-mib", type=int, default=48)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--drive", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--server-pid", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--script", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if args.drive:
        runner = uvloop.run if uvloop is not None else asyncio.run
        print(json.dumps(runner(drive(args, Path(args.script)))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "agent.py"
        script.write_text(AGENT)
        # Best of three: a noisy machine must not lower the bar the server is held to.
        raw_rate = max(raw_read_rate(script, args.bulk_mib * 1024 * 1024) for _ in range(3))
        results = run_server_and_drive(args, script)
        results.update(raw_rate=raw_rate, idle_target=args.idle)
    print(report(results))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
