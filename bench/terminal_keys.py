"""Server CPU per keystroke, two codes side by side: the real servers (`sandbox
pty-server` and `sandbox serve`) started once per code from its own ``src/`` through
``PYTHONPATH``, the same echo agent as bench/terminal.py, keystrokes over raw attach with
bench/terminal.py's minimal client, rounds interleaved (each round runs every server in
turn, so all see the same load). Per round and server: the server's CPU per keystroke
from its threads' ``schedstat`` (to the ns), the round trip, and voluntary context
switches per keystroke; then one round at typing pace (``--paced`` ms between keys).

    .venv/bin/python bench/terminal_keys.py --src old=/tmp/old/src --src new=src

(an old code's ``src/``: ``mkdir -p /tmp/old && git archive <commit> src | tar -x -C
/tmp/old``). Figures depend on load: each line ends with the load average.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import terminal as T  # (the bench next to this one)


def cpu_ns(pid: int) -> int:
    """The process' threads' CPU time, from ``schedstat`` (ns)."""
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        with contextlib.suppress(OSError), open(path, encoding="ascii") as fh:
            total += int(fh.read().split()[0])
    return total


def voluntary_switches(pid: int) -> int:
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/status"):
        with contextlib.suppress(OSError), open(path, encoding="ascii") as fh:
            for line in fh:
                if line.startswith("voluntary_ctxt_switches"):
                    total += int(line.split()[1])
    return total


def keystrokes(ws: T.MinimalWebSocket, count: int, pause: float = 0.0) -> None:
    for _ in range(count):
        ws.send(b"k")
        got = b""
        while b"k" not in got:
            got += ws.recv()
        if pause:
            time.sleep(pause)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", action="append", required=True, help="label=path/to/src")
    parser.add_argument("--keys", type=int, default=3000, help="keystrokes per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--paced", type=float, default=10.0, help="ms between paced keys")
    parser.add_argument("--which", default="pty,serve")
    args = parser.parse_args()
    codes = [spec.split("=", 1) for spec in args.src]
    tmp = Path(tempfile.mkdtemp(prefix="bench-keys-"))
    (tmp / "agent").mkdir()
    script = tmp / "agent" / "agent.py"
    script.write_text(T.AGENT)
    agents = tmp / "agents.json"
    agents.write_text(
        json.dumps(
            [{"slug": "bench-echo", "binary": T.AGENT_PYTHON, "defaultArgs": [str(script), "echo"]}]
        )
    )
    from openova_sandbox.auth.issuer import EmbeddedIssuer

    data = tmp / "data"
    token = EmbeddedIssuer.load_or_create(data).mint(sub="bench", email=T.EMAIL, org="bench")
    (tmp / "work").mkdir()
    env = {
        "SANDBOX_DATA_DIR": str(data),
        "SANDBOX_ISOLATION_PATHS": str(script.parent),
        "SANDBOX_ISOLATION": "none",
        "OPENOVA_SANDBOX_AGENTS_PATH": str(agents),
        "SANDBOX_LOG_LEVEL": "warning",
    }
    pty_env = {
        **env,
        "SANDBOX_ID": "bench",
        "SANDBOX_OWNER_EMAIL": T.EMAIL,
        "SANDBOX_WORKDIR": str(tmp / "work"),
        "SANDBOX_SESSION_LIMIT": "10",
    }
    which = args.which.split(",")
    servers: dict[str, T.ServerProcess] = {}
    clients: dict[str, T.MinimalWebSocket] = {}
    try:
        for label, src in codes:
            code_env = {"PYTHONPATH": str(Path(src).resolve())}
            if "pty" in which:
                server = T.PtyServer(
                    ["pty-server"], {**pty_env, **code_env}, token, tmp / f"{label}-pty.log"
                )
                servers[f"{label}/pty-server"] = server
                clients[f"{label}/pty-server"] = server.attach(
                    server.create([T.AGENT_PYTHON, str(script), "echo"])
                )
            if "serve" in which:
                own = tmp / f"data-{label}"
                shutil.copytree(data, own)
                embedded = T.EmbeddedServer(
                    ["serve"],
                    {**env, **code_env, "SANDBOX_DATA_DIR": str(own)},
                    token,
                    tmp / f"{label}-serve.log",
                )
                servers[f"{label}/serve"] = embedded
                clients[f"{label}/serve"] = embedded.attach(embedded.create("bench-echo"))
        for ws in clients.values():
            ws.wait_for(b"READY")
            keystrokes(ws, 300)  # warm-up
        rows: dict[str, list[tuple[float, float, float]]] = {name: [] for name in servers}
        for _ in range(args.rounds):
            for name, server in servers.items():
                cpu, switches, started = (
                    cpu_ns(server.pid),
                    voluntary_switches(server.pid),
                    time.perf_counter(),
                )
                keystrokes(clients[name], args.keys)
                elapsed = time.perf_counter() - started
                rows[name].append(
                    (
                        (cpu_ns(server.pid) - cpu) / args.keys / 1e3,
                        elapsed / args.keys * 1e6,
                        (voluntary_switches(server.pid) - switches) / args.keys,
                    )
                )
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"back to back, {args.rounds} rounds of {args.keys} keystrokes (load {load})")
        for name, figures in rows.items():
            cpu = [c for c, _, _ in figures]
            rtt = [r for _, r, _ in figures]
            print(
                f"  {name:18s} CPU/key median {statistics.median(cpu):6.1f} µs"
                f" (rounds {' '.join(f'{c:.1f}' for c in cpu)}),"
                f" round trip median {statistics.median(rtt):6.1f} µs,"
                f" voluntary switches/key {statistics.median(v for _, _, v in figures):.2f}"
            )
        if args.paced:
            print(f"one key every {args.paced} ms, 300 keys")
            for name, server in servers.items():
                cpu, switches = cpu_ns(server.pid), voluntary_switches(server.pid)
                keystrokes(clients[name], 300, args.paced / 1e3)
                per_key = (cpu_ns(server.pid) - cpu) / 300 / 1e3
                switched = (voluntary_switches(server.pid) - switches) / 300
                print(f"  {name:18s} CPU/key {per_key:6.1f} µs, switches/key {switched:.2f}")
            print(f"  (load {' '.join(f'{x:.2f}' for x in os.getloadavg())})")
    finally:
        for ws in clients.values():
            with contextlib.suppress(Exception):
                ws.close()
        for server in servers.values():
            with contextlib.suppress(Exception):
                server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
