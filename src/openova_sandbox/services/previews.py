"""Previews of a sandbox (issue 14, ``preview.*``): a command that serves HTTP on a port,
run in the sandbox's workspace, reached by its owner through the server.

Embedded mode runs the command as the sandbox's terminals run: ``/bin/sh -c <command>``
on a PTY of its own (the output is kept, bounded, for the agent to read), with the
sandbox's clean environment plus ``PORT``, in the sandbox's bubblewrap view and cgroups
when isolation is on (terminal/isolation.py: the same :func:`isolation.wrap` the
terminal registry uses), recorded with the terminals' process groups (a server killed
with SIGKILL ends it at its next start), and ended with the sandbox (:class:`PreviewHost`
wraps the controller's ``TerminalHost``: the previews stop before the terminals) and
with the server.

Every sandbox shares the machine's network in embedded mode, so a port is not a
sandbox's own: the proxy (``/preview/<sandbox>/<port>/``, api/routes/preview.py) only
forwards to a listening socket that a process of *that* preview holds (found in
``/proc/net/tcp`` and the preview's processes' descriptors), never to whatever else
listens there (another sandbox, the server itself). That same check is the status:
``starting`` until the preview's process listens on its port, ``listening``, then
``exited`` with its code.

The proxy's use of a preview is its sandbox's activity (services/preview_use.py, in
memory): :class:`PreviewHost` answers the controller the later of the terminals' last
activity and the previews' last use (now while a preview WebSocket is open), which the
controller records in ``status.lastActivityAt``.

Limits: ports 1024-65535 (no privileged port), one preview per port per sandbox, a port
another process of this machine listens on is refused at start, and at most
``limit`` live previews per sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import structlog

from ..controller.local import home_path, tmp_env, tmp_path, workspace_path
from ..controller.ports import TerminalHost
from ..domain.errors import BackendUnavailable, Conflict, Invalid, NotFound, QuotaExceeded
from ..domain.model import Sandbox
from ..events.bus import Event
from ..events.product import Emitter, sandbox_scope
from ..terminal import watched
from ..terminal.pty import PtyProcess, SpawnSpec, exit_status
from ..terminal.registry import SandboxContext, TerminalRegistry
from .preview_use import PreviewUse, latest
from .terminals import registry_key

log = structlog.get_logger(__name__)

MIN_PORT = 1024
MAX_PORT = 65535
DEFAULT_LIMIT = 4  # live previews per sandbox
MAX_COMMAND = 4096
OUTPUT_BYTES = 16 * 1024  # kept of each preview's output (the newest)
OUTPUT_SHOWN = 2000  # characters of it in an answer
EXITED_KEPT = 8  # exited previews listed per sandbox (the newest)
MAX_WAIT = 30.0
WAIT_STEP = 0.05
PATH_PREFIX = "/preview"

# on the event bus (events/product.py's scope, plus ``port``; ``code`` on exit): the MCP
# live resource openova://preview/{id}/{port} follows them
PREVIEW_STARTED = "preview.started"
PREVIEW_STOPPED = "preview.stopped"
PREVIEW_EXITED = "preview.exited"

STARTING = "starting"
LISTENING = "listening"
EXITED = "exited"

PROXY_TIMEOUT = httpx.Timeout(connect=5.0, read=None, write=30.0, pool=5.0)

SHELL = "/bin/sh"
_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp


def preview_path(name: str, port: int) -> str:
    return f"{PATH_PREFIX}/{name}/{port}/"


def check_port(port: Any) -> int:
    """``port`` as an int in 1024-65535; ``Invalid`` saying why not."""
    if isinstance(port, bool) or not isinstance(port, int):
        raise Invalid(f"port must be an integer, not {port!r}", code="invalid-port")
    if not MIN_PORT <= port <= MAX_PORT:
        raise Invalid(
            f"port {port} is outside {MIN_PORT}-{MAX_PORT} (privileged ports are not offered)",
            code="invalid-port",
        )
    return port


def check_start(port: Any, command: Any, wait: Any) -> tuple[int, str, float]:
    """A ``preview.start``'s arguments checked (``Invalid`` saying why not): the port,
    the command, and the seconds to wait for it to listen (0 to ``MAX_WAIT``)."""
    port = check_port(port)
    if not isinstance(command, str) or not command.strip():
        raise Invalid("command must be a non-empty string", code="invalid-command")
    if len(command) > MAX_COMMAND or "\0" in command:
        raise Invalid(
            f"command must be at most {MAX_COMMAND} characters, without NUL",
            code="invalid-command",
        )
    if isinstance(wait, bool) or not isinstance(wait, int | float):
        raise Invalid(f"wait must be a number of seconds, not {wait!r}", code="invalid-wait")
    return port, command, min(max(float(wait), 0.0), MAX_WAIT)


# ---------------------------------------------------------------- who listens where
def _v4(hexaddr: str) -> str:
    raw = bytes.fromhex(hexaddr)[::-1]
    return ".".join(str(b) for b in raw)


def _v6(hexaddr: str) -> str:
    raw = b"".join(bytes.fromhex(hexaddr[i : i + 8])[::-1] for i in range(0, 32, 8))
    return str(ipaddress.IPv6Address(raw))


def listeners(port: int, proc: str = "/proc") -> dict[int, str]:
    """Sockets listening on TCP ``port`` on this machine: socket inode → the address to
    reach it on (loopback for a wildcard bind)."""
    found: dict[int, str] = {}
    for name, decode, loopback, wildcard in (
        ("tcp", _v4, "127.0.0.1", "0.0.0.0"),
        ("tcp6", _v6, "::1", "::"),
    ):
        try:
            lines = Path(proc, "net", name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN:
                continue
            address, _, hexport = fields[1].partition(":")
            if int(hexport, 16) != port:
                continue
            host = decode(address)
            if host == wildcard or host.startswith("127."):
                host = loopback if host == wildcard else host
            found[int(fields[9])] = host
    return found


def _process_table() -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    """Live processes by parent and by session, from /proc."""
    children: dict[int, list[int]] = {}
    sessions: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path("/proc", entry, "stat").read_bytes()
        except OSError:
            continue
        fields = raw[raw.rfind(b")") + 2 :].split()
        if len(fields) < 4 or fields[0] in (b"Z", b"X"):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
        sessions.setdefault(int(fields[3]), []).append(int(entry))
    return children, sessions


def members(pid: int) -> list[int]:
    """``pid``, every process below it (inside a sandbox: its whole PID namespace) and
    every process of its session (without isolation an orphan leaves the tree, not the
    session)."""
    children, sessions = _process_table()
    found = [pid, *(p for p in sessions.get(pid, []) if p != pid)]
    seen = set(found)
    for parent in found:  # grows while it is walked
        for child in children.get(parent, []):
            if child not in seen:
                seen.add(child)
                found.append(child)
    return found


def socket_inodes(pids: list[int]) -> dict[int, str]:
    """The socket inodes the processes ``pids`` hold open, each with one descriptor's
    path (``/proc/<pid>/fd/<n>``) that holds it."""
    found: dict[int, str] = {}
    for pid in pids:
        folder = f"/proc/{pid}/fd"
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            with contextlib.suppress(OSError):
                target = os.readlink(f"{folder}/{name}")
                if target.startswith("socket:["):
                    found.setdefault(int(target[8:-1]), f"{folder}/{name}")
    return found


def holds(descriptor: str, inode: int) -> bool:
    """Whether ``descriptor`` (``/proc/<pid>/fd/<n>``) still is socket ``inode``."""
    try:
        return os.readlink(descriptor) == f"socket:[{inode}]"
    except OSError:
        return False


# ---------------------------------------------------------------- one preview
@dataclass
class Preview:
    namespace: str
    sandbox: str
    port: int
    command: str
    process: PtyProcess
    started_at: datetime
    output: bytearray = field(default_factory=bytearray)
    scope: dict[str, str] = field(default_factory=dict)  # for its events (sandbox_scope)
    exit_code: int | None = None
    # the address the preview's own listening socket is reached on (None: not listening)
    host: str | None = None
    ended: bool = False  # its processes are gone and its descriptors closed
    # the listening socket found last: (inode, a descriptor of the preview's holding it)
    held: tuple[int, str] | None = None
    stopping: bool = False  # ended on request (preview.stopped), not of itself
    # this run's id: a preview grant (domain/preview_grant.py) names it, so a grant
    # opens nothing once the preview stops or is started again
    instance: str = field(default_factory=lambda: secrets.token_urlsafe(12))

    def keep(self, data: bytes) -> None:
        """Output it printed: the newest ``OUTPUT_BYTES`` are kept."""
        self.output += data
        del self.output[:-OUTPUT_BYTES]

    def observe(self) -> str:
        """The status now: ``exited`` once the main process was reaped, ``listening``
        while one of its processes holds a listening socket on the port."""
        if self.exit_code is None:
            code = self.process.poll()
            if code is not None:
                self.exit_code = exit_status(code)
        if self.exit_code is not None:
            self.host = None
            return EXITED
        self.host = self._own_listener()
        return LISTENING if self.host is not None else STARTING

    def _own_listener(self) -> str | None:
        """The address of the preview's own listening socket on its port. Once found,
        it is the preview's as long as the preview's descriptor still holds that socket
        (one ``readlink``: no other socket can listen on that address and port meanwhile,
        but for a server that opted into ``SO_REUSEPORT``); otherwise ``/proc/net/tcp``
        and the preview's descriptors are read again (tens of milliseconds on a busy
        machine: the kernel walks every socket)."""
        if self.held is not None and self.host is not None and holds(self.held[1], self.held[0]):
            return self.host
        self.held = None
        found = listeners(self.port)
        if not found:
            return None
        held = socket_inodes(members(self.process.pid))
        own = sorted(held.keys() & found.keys())
        if not own:
            return None
        self.held = (own[0], held[own[0]])
        return found[own[0]]

    def view(self, base_url: str) -> dict[str, Any]:
        status = self.observe()
        path = preview_path(self.sandbox, self.port)
        out: dict[str, Any] = {
            "sandbox": self.sandbox,
            "port": self.port,
            "command": self.command,
            "status": status,
            "url": f"{base_url.rstrip('/')}{path}" if base_url else path,
            "path": path,
            "startedAt": self.started_at.isoformat().replace("+00:00", "Z"),
            "output": bytes(self.output).decode("utf-8", "replace")[-OUTPUT_SHOWN:],
        }
        if status == EXITED:
            out["exitCode"] = self.exit_code
        return out


class PreviewsService:
    """The previews of every sandbox of this embedded server."""

    def __init__(
        self,
        registry: TerminalRegistry,
        *,
        data_dir: Path,
        base_url: str = "",
        limit: int = DEFAULT_LIMIT,
    ) -> None:
        self._registry = registry
        self._data_dir = Path(data_dir)
        # how browsers reach this server (``SANDBOX_PUBLIC_URL``, else the bound address
        # once known, see :meth:`listening`); empty: answers carry the path alone
        self.base_url = base_url
        self.limit = limit
        self._previews: dict[tuple[str, str], dict[int, Preview]] = {}
        self._lock = asyncio.Lock()
        self._closing = False
        self._server_port: int | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # the product's events (events.product.Emitter); None: not published
        self.events: Emitter | None = None
        self._http: httpx.AsyncClient | None = None
        # the proxy's use of each sandbox's previews: its activity (PreviewHost)
        self.use = PreviewUse()

    # ------------------------------------------------------------ server lifecycle
    def listening(self, host: str, port: int) -> None:
        """Told the address the server is bound to (``AppDeps.on_bound``)."""
        self._server_port = port
        if not self.base_url:
            shown = f"[{host}]" if ":" in host else host
            self.base_url = f"http://{shown}:{port}"

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        """The server stops: every preview ends."""
        self._closing = True
        for key in list(self._previews):
            await self.stop_sandbox(*key)
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def http(self) -> httpx.AsyncClient:
        """The proxy's client (made once: a client's set-up costs tens of milliseconds).
        It keeps no connection between requests: a kept connection to a port would
        outlive the check that the port is still the preview's (a process that let go
        of its listener could still answer on it)."""
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=PROXY_TIMEOUT,
                follow_redirects=False,
                trust_env=False,
                limits=httpx.Limits(max_keepalive_connections=0, max_connections=None),
            )
        return self._http

    # ------------------------------------------------------------ the tools
    def _sandbox_previews(self, sandbox: Sandbox) -> dict[int, Preview]:
        return self._previews.setdefault((sandbox.namespace, sandbox.name), {})

    async def start_preview(
        self, sandbox: Sandbox, port: Any, command: Any, *, wait: Any = 10.0
    ) -> dict[str, Any]:
        """Run ``command`` for ``port``; waits up to ``wait`` seconds for it to listen
        (or exit) and answers its view."""
        port, command, seconds = check_start(port, command, wait)
        if self._closing or self._registry.closing:
            raise Conflict("the server is shutting down", code="shutting-down")
        if sandbox.deleting:
            raise Conflict(f"sandbox {sandbox.name!r} is being deleted", code="sandbox-deleting")
        policy = self._registry.isolation
        if policy is not None and sandbox.spec.org_slug in policy.offline_orgs:
            raise Invalid(
                f"org {sandbox.spec.org_slug!r} is offline: its sandboxes have no network, "
                "so a preview of theirs cannot be reached",
                code="preview-offline",
            )
        async with self._lock:
            previews = self._sandbox_previews(sandbox)
            existing = previews.get(port)
            if existing is not None and existing.observe() != EXITED:
                raise Conflict(
                    f"port {port} of sandbox {sandbox.name!r} already has a preview "
                    f"({existing.command!r}); stop it first",
                    code="preview-exists",
                )
            live = [p for p in previews.values() if p.observe() != EXITED]
            if len(live) >= self.limit:
                raise QuotaExceeded(
                    f"sandbox {sandbox.name!r} already has {self.limit} previews running "
                    "(the limit); stop one first",
                    code="preview-limit",
                )
            if port == self._server_port or listeners(port):
                raise Conflict(
                    f"port {port} is already in use on this server; choose another",
                    code="port-in-use",
                )
            if existing is not None:
                await self._end(existing)
                previews.pop(port, None)
            preview = self._spawn(sandbox, port, command)
            previews[port] = preview
            self._prune(previews)
        log.info("preview.started", sandbox=sandbox.name, namespace=sandbox.namespace, port=port)
        await self._wait(preview, seconds)
        return preview.view(self.base_url)

    async def _wait(self, preview: Preview, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if preview.observe() != STARTING:
                return
            await asyncio.sleep(WAIT_STEP)  # a socket's listen has no event to wait for

    def _context(self, sandbox: Sandbox) -> SandboxContext:
        return SandboxContext(
            sandbox_id=registry_key(sandbox.namespace, sandbox.name),
            namespace=sandbox.namespace,
            org_id=sandbox.spec.org_slug,
            owner=sandbox.spec.owner_email,
            workdir=str(workspace_path(self._data_dir, sandbox.namespace, sandbox.name)),
            home=str(home_path(self._data_dir, sandbox.namespace, sandbox.name)),
            env={
                "SANDBOX_ID": sandbox.name,
                **tmp_env(str(tmp_path(self._data_dir, sandbox.namespace, sandbox.name))),
            },
            memory=sandbox.spec.quota.memory,
            cpu=sandbox.spec.quota.cpu,
        )

    def _spawn(self, sandbox: Sandbox, port: int, command: str) -> Preview:
        context = self._context(sandbox)
        if not os.path.isdir(context.workdir):
            raise Conflict(
                f"sandbox {sandbox.name!r} has no workspace yet; wait until it is Ready",
                code="sandbox-not-ready",
            )
        env = self._registry.base_env(context)
        env["PORT"] = str(port)
        env["PWD"] = context.workdir
        spec = SpawnSpec(argv=(SHELL, "-c", command), cwd=context.workdir, env=env)
        policy = self._registry.isolation
        if policy is not None:
            from ..terminal import isolation

            spec = isolation.wrap(
                policy,
                spec,
                workspace=context.workdir,
                home=context.home,
                name=context.sandbox_id,
                memory=context.memory,
                cpu=context.cpu,
                org=context.org_id,
                cgroups=self._registry.cgroups,
            )
        process = PtyProcess.spawn(spec)
        if self._registry.groups is not None:
            self._registry.groups.record(process.pgid)
        preview = Preview(
            namespace=sandbox.namespace,
            sandbox=sandbox.name,
            port=port,
            command=command,
            process=process,
            started_at=datetime.now(UTC).replace(microsecond=0),
            scope=sandbox_scope(sandbox),
        )
        self._watch(preview)
        self._emit(PREVIEW_STARTED, preview)
        return preview

    def _emit(self, kind: str, preview: Preview, **extra: Any) -> None:
        if self.events is not None:
            self.events.emit(Event(kind, {**preview.scope, "port": preview.port, **extra}))

    def _watch(self, preview: Preview) -> None:
        """Drain the PTY (a full one would block the preview) into its bounded output;
        on the main process's exit, end what is left of it."""
        loop = asyncio.get_running_loop()

        def exited() -> None:
            preview.observe()
            log.info(
                "preview.exited",
                sandbox=preview.sandbox,
                namespace=preview.namespace,
                port=preview.port,
                code=preview.exit_code,
            )
            if not preview.stopping:
                self._emit(PREVIEW_EXITED, preview, code=preview.exit_code)
            task = loop.create_task(self._end(preview))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        watched.watch(preview.process, preview.keep, exited)

    async def _end(self, preview: Preview) -> None:
        """End every process of ``preview`` (the terminals' ladder) and release it."""
        if preview.ended:
            return
        preview.ended = True
        process = preview.process
        await watched.end(process, preview.keep)  # what it printed last is kept
        preview.observe()
        if self._registry.groups is not None:
            self._registry.groups.forget(process.pgid)
        process.close()

    async def _stop(self, preview: Preview) -> None:
        """End ``preview`` on request: ``preview.stopped`` (unless it had exited)."""
        if preview.ended:
            return
        preview.stopping = True
        await self._end(preview)
        self._emit(PREVIEW_STOPPED, preview, code=preview.exit_code)

    def _prune(self, previews: dict[int, Preview]) -> None:
        exited = [p for p in previews.values() if p.exit_code is not None and p.ended]
        exited.sort(key=lambda p: p.started_at)
        for preview in exited[: max(0, len(exited) - EXITED_KEPT)]:
            previews.pop(preview.port, None)

    async def stop_preview(self, sandbox: Sandbox, port: Any) -> dict[str, Any]:
        """End the preview on ``port`` and forget it; its last view."""
        port = check_port(port)
        previews = self._previews.get((sandbox.namespace, sandbox.name), {})
        preview = previews.get(port)
        if preview is None:
            raise NotFound(
                f"sandbox {sandbox.name!r} has no preview on port {port}",
                code="preview-not-found",
            )
        await self._stop(preview)
        previews.pop(port, None)
        log.info("preview.stopped", sandbox=sandbox.name, namespace=sandbox.namespace, port=port)
        return preview.view(self.base_url)

    def list_previews(self, sandbox: Sandbox) -> list[dict[str, Any]]:
        previews = self._previews.get((sandbox.namespace, sandbox.name), {})
        return [previews[port].view(self.base_url) for port in sorted(previews)]

    def upstream(self, sandbox: Sandbox, port: int) -> str:
        """The address the proxy forwards ``port`` of ``sandbox`` to: the preview's own
        listening socket. Raises ``NotFound`` (no such preview),
        ``PreviewUnavailable`` (starting, or exited)."""
        preview = self._previews.get((sandbox.namespace, sandbox.name), {}).get(port)
        if preview is None:
            raise NotFound(
                f"sandbox {sandbox.name!r} has no preview on port {port}",
                code="preview-not-found",
            )
        status = preview.observe()
        if status == EXITED:
            raise PreviewUnavailable(
                f"the preview on port {port} exited with code {preview.exit_code}",
                code="preview-exited",
            )
        if preview.host is None:
            raise PreviewUnavailable(
                f"the preview on port {port} is not listening yet", code="preview-starting"
            )
        return preview.host

    def instance(self, sandbox: Sandbox, port: int) -> str:
        """The id of the run of ``port``'s preview of ``sandbox`` (``NotFound`` when
        there is none): what a preview grant is bound to."""
        preview = self._previews.get((sandbox.namespace, sandbox.name), {}).get(port)
        if preview is None:
            raise NotFound(
                f"sandbox {sandbox.name!r} has no preview on port {port}",
                code="preview-not-found",
            )
        return preview.instance

    # ------------------------------------------------------------ use (activity)
    def used(self, namespace: str, name: str) -> None:
        """The proxy served a request of the sandbox's previews (its owner's use)."""
        self.use.used(namespace, name)

    def holding(self, namespace: str, name: str) -> contextlib.AbstractContextManager[None]:
        """A WebSocket open to one of the sandbox's previews: use while it is open."""
        return self.use.holding(namespace, name)

    def last_used(self, namespace: str, name: str) -> datetime | None:
        return self.use.last(namespace, name)

    # ------------------------------------------------------------ with the sandbox
    def sandboxes(self) -> list[tuple[str, str]]:
        """(namespace, name) of every sandbox with a preview not ended."""
        return [
            key
            for key, previews in self._previews.items()
            if any(not p.ended for p in previews.values())
        ]

    async def stop_sandbox(self, namespace: str, name: str) -> None:
        previews = self._previews.pop((namespace, name), {})
        self.use.forget(namespace, name)
        await asyncio.gather(*(self._stop(p) for p in previews.values()))
        if previews:
            log.info("preview.sandbox_stopped", sandbox=name, namespace=namespace)


class PreviewUnavailable(BackendUnavailable):
    """The preview exists but does not serve now (starting, or exited): a 503 whose
    Retry-After is a second."""

    code = "preview-unavailable"

    def __init__(self, detail: str = "", *, code: str | None = None) -> None:
        super().__init__(detail, code=code, retry_after=1)


class PreviewHost:
    """The controller's ``TerminalHost`` with the previews: a deleted sandbox's previews
    end before its terminals (and before its cgroups go), a sandbox with a preview but
    no terminal is still among those the sweep checks against the store, and the use of
    its previews through the proxy is its activity as its terminals' is (a preview
    running unused is not)."""

    def __init__(self, inner: TerminalHost, previews: PreviewsService) -> None:
        self._inner = inner
        self._previews = previews

    def serving(self) -> bool:
        return self._inner.serving()

    def agent_problem(self, sandbox: Sandbox) -> str | None:
        return self._inner.agent_problem(sandbox)

    async def stop_sandbox(self, namespace: str, name: str) -> None:
        await self._previews.stop_sandbox(namespace, name)
        await self._inner.stop_sandbox(namespace, name)

    def sessions(self, namespace: str, name: str) -> int:
        return self._inner.sessions(namespace, name)

    def sandboxes(self) -> list[tuple[str, str]]:
        found = self._inner.sandboxes()
        return found + [key for key in self._previews.sandboxes() if key not in found]

    def last_activity(self, namespace: str, name: str) -> datetime | None:
        return latest(
            self._inner.last_activity(namespace, name),
            self._previews.last_used(namespace, name),
        )

    def __getattr__(self, name: str) -> Any:
        """Whatever else the port asks of the terminals (it grows) is theirs to answer."""
        return getattr(self._inner, name)
