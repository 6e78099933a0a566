"""The previews of one sandbox pod (Kubernetes mode; docs/kubernetes.md, "Previews"):
the commands the operator wants running on a port, run by the pod's terminal server.

The operator is the only client (``PUT``/``DELETE``/``GET /previews`` on the terminal
server, with its probe token: api/terminal_edge/pty_app.py). It names each run with an
``id`` of its own: a ``PUT`` with the id already running is a no-op, so the operator can
say what it wants on every pass (level-triggered) without restarting anything; another
id replaces the run.

A run is what embedded mode's is (services/previews.py): ``/bin/sh -c <command>`` in the
workspace on a PTY of its own, read continuously into the newest 16 KiB of output, with
the terminals' clean environment plus ``PORT`` (and without the model gateway's and the
MCP server's tokens, which a web server has no use for), ended by the terminals' HUP →
TERM → KILL ladder over its whole session. What differs: a pod's network namespace is
the sandbox's own, so ``listening`` is any listening socket on the port
(``/proc/net/tcp{,6}``), not only one of the run's own processes.

Imported only when the first preview request arrives: an idle pod does not pay for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from ..domain.errors import Invalid, NotFound
from . import watched
from .pty import PtyProcess, SpawnSpec, exit_status
from .registry import TerminalRegistry

log = structlog.get_logger(__name__)

MIN_PORT = 1024
MAX_PORT = 65535
MAX_RUNNING = 4  # the annotation's own bound, kept here too
MAX_COMMAND = 4096
OUTPUT_BYTES = 16 * 1024
SHELL = "/bin/sh"
STARTING = "starting"
LISTENING = "listening"
EXITED = "exited"
REFUSED = "refused"
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp


# ---------------------------------------------------------------- who listens
def bound(port: int, proc: str = "/proc") -> list[str]:
    """The addresses (as ``/proc/net/tcp{,6}`` writes them, hex) that sockets of this
    network namespace listen on TCP ``port`` at."""
    found = []
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(proc, "net", name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or fields[3] != _LISTEN:
                continue
            address, _, hexport = fields[1].rpartition(":")
            if int(hexport, 16) == port:
                found.append(address.upper())
    return found


def listening(port: int, proc: str = "/proc") -> bool:
    """Whether a socket of this network namespace listens on TCP ``port``."""
    return bool(bound(port, proc))


_V6_LOOPBACK = "0" * 24 + "01000000"
_V4_MAPPED = "0000000000000000FFFF0000"


def loopback(address: str) -> bool:
    """Whether a ``/proc/net/tcp{,6}`` address is a loopback one (127/8, ::1, or a
    v4-mapped 127/8): reachable from inside the pod only, not through a Service."""
    if len(address) == 8:
        return address[6:8] == "7F"  # little-endian: the first octet is last
    return address == _V6_LOOPBACK or (address[:24] == _V4_MAPPED and address[30:32] == "7F")


LOOPBACK_ONLY = (
    "listening on a loopback address only, which the preview's Service cannot reach: "
    "bind 0.0.0.0 (the pod's network is the sandbox's own)"
)


# ---------------------------------------------------------------- checks
def check_port(value: Any) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_PORT <= value <= MAX_PORT:
        raise Invalid(f"port must be an integer in {MIN_PORT}-{MAX_PORT}", code="invalid-port")
    return value


def parse_run(payload: Any) -> tuple[str, str]:
    """``PUT /previews/{port}``'s body: ``{"id": ..., "command": ...}``."""
    if not isinstance(payload, dict):
        raise Invalid("body must be a JSON object", code="invalid-request")
    run_id, command = payload.get("id"), payload.get("command")
    problems = []
    if not isinstance(run_id, str) or not _ID.match(run_id):
        problems.append("id: 1-64 characters of A-Z, a-z, 0-9, _ and -")
    if not isinstance(command, str) or not command.strip():
        problems.append("command: a non-empty string")
    elif len(command) > MAX_COMMAND or "\0" in command:
        problems.append(f"command: at most {MAX_COMMAND} characters, without NUL")
    if problems:
        raise Invalid("; ".join(problems), code="invalid-request")
    return str(run_id), str(command)


# ---------------------------------------------------------------- one run
@dataclass
class Run:
    port: int
    id: str
    command: str
    process: PtyProcess
    output: bytearray = field(default_factory=bytearray)
    exit_code: int | None = None
    ended: bool = False

    def status(self) -> str:
        if self.exit_code is None:
            code = self.process.poll()
            if code is not None:
                self.exit_code = exit_status(code)
        if self.exit_code is not None:
            return EXITED
        return LISTENING if listening(self.port) else STARTING

    def view(self) -> dict[str, Any]:
        status = self.status()
        out: dict[str, Any] = {
            "port": self.port,
            "id": self.id,
            "status": status,
            "output": bytes(self.output).decode("utf-8", "replace"),
        }
        if status == EXITED:
            out["exitCode"] = self.exit_code
        elif status == LISTENING and all(loopback(a) for a in bound(self.port)):
            out["message"] = LOOPBACK_ONLY
        return out

    def keep(self, data: bytes) -> None:
        self.output += data
        del self.output[:-OUTPUT_BYTES]


class PodPreviews:
    """The runs of the one sandbox this terminal server serves."""

    def __init__(self, registry: TerminalRegistry, sandbox_id: str) -> None:
        self._registry = registry
        self._sandbox_id = sandbox_id
        self._runs: dict[int, Run] = {}
        self._refused: dict[int, dict[str, Any]] = {}
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    def list(self) -> list[dict[str, Any]]:
        views = {port: run.view() for port, run in self._runs.items()}
        views.update((port, dict(r)) for port, r in self._refused.items())
        return [views[port] for port in sorted(views)]

    async def put(self, port: int, run_id: str, command: str) -> dict[str, Any]:
        """Run ``command`` on ``port`` as ``run_id``; the same id again is a no-op. A run
        that cannot start (the port is taken by another process of the pod, the limit)
        is kept as ``refused`` with a message under its id, so the operator reads why
        instead of asking again."""
        async with self._lock:
            current = self._runs.get(port)
            if current is not None and current.id == run_id:
                return current.view()
            refusal = self._refused.get(port)
            if refusal is not None and refusal["id"] == run_id:
                return dict(refusal)
            self._refused.pop(port, None)
            live = [r for p, r in self._runs.items() if p != port and r.status() != EXITED]
            if current is not None:
                await self._end(current)
                self._runs.pop(port, None)
            problem = ""
            if len(live) >= MAX_RUNNING:
                problem = f"{MAX_RUNNING} previews already run in this sandbox"
            elif listening(port):
                problem = f"port {port} is already in use in the sandbox by another process"
            if problem:
                self._refused[port] = refused = {
                    "port": port,
                    "id": run_id,
                    "status": REFUSED,
                    "message": problem,
                }
                log.info("preview.refused", port=port, id=run_id, detail=problem)
                return dict(refused)
            run = self._spawn(port, run_id, command)
            self._runs[port] = run
        log.info("preview.started", port=port, id=run_id)
        return run.view()

    async def delete(self, port: int) -> dict[str, Any]:
        async with self._lock:
            refusal = self._refused.pop(port, None)
            run = self._runs.pop(port, None)
            if run is None:
                if refusal is not None:
                    return refusal
                raise NotFound(f"no preview on port {port}", code="preview-not-found")
            await self._end(run)
        log.info("preview.stopped", port=port, id=run.id)
        return run.view()

    async def close(self) -> None:
        for port in list(self._runs):
            with contextlib.suppress(NotFound):
                await self.delete(port)

    # ------------------------------------------------------------ processes
    def _spawn(self, port: int, run_id: str, command: str) -> Run:
        context = self._registry.context(self._sandbox_id)
        workdir = context.workdir or "/"
        # the terminals' clean environment without the context's own (the model
        # gateway's and the MCP server's tokens): a web server needs neither
        env = self._registry.base_env(replace(context, env={}))
        env["PORT"] = str(port)
        env["PWD"] = workdir
        process = PtyProcess.spawn(SpawnSpec(argv=(SHELL, "-c", command), cwd=workdir, env=env))
        run = Run(port=port, id=run_id, command=command, process=process)
        self._watch(run)
        return run

    def _watch(self, run: Run) -> None:
        loop = asyncio.get_running_loop()

        def exited() -> None:
            run.status()
            log.info("preview.exited", port=run.port, id=run.id, code=run.exit_code)
            task = loop.create_task(self._end(run))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        watched.watch(run.process, run.keep, exited)

    async def _end(self, run: Run) -> None:
        """End every process of ``run`` and release its descriptors."""
        if run.ended:
            return
        run.ended = True
        await watched.end(run.process, run.keep)
        run.status()
        run.process.close()


__all__ = ["PodPreviews", "bound", "check_port", "listening", "loopback", "parse_run"]
