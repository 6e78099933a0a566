"""The terminal sessions of one or more sandboxes: create, find, lazily spawn, stop.

The registry is the only place that turns a request ("agent X with these args") into a
process spec: it resolves the agent from the catalogue, builds a *clean* environment
(never the server's own), checks the agent's required variables and the per-sandbox
session limit, and starts the PTY. Sessions are addressed by ``(sandbox_id,
session_id)`` so several sandboxes can share one registry in embedded mode while the
primary terminal of sandbox ``X`` keeps the id ``X``.

Spawning is synchronous (fork + exec), so "is there a session with this id?" and
"register it" happen without an ``await`` in between: two viewers attaching to the same
unknown id at once get the same new session.

A sandbox with its own HOME (``SandboxContext.home``) gets it as ``HOME``; just before a
process is started, the registry's ``prepare_spawn`` hook (set by whoever assembles the
terminals: it seeds that HOME with the agent's config files) may add arguments, which is
how a restarted agent resumes its last conversation. An agent row's ``env`` is merged
over the sandbox's, each value rendered from the environment so far (``${NAME}``); a
value naming a variable that is not set is left out, so the agent's default applies.
A request's own ``env`` comes last; an empty value there unsets the variable.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from string import Template
from typing import TYPE_CHECKING, Protocol

import structlog

from ..config import RING_DEFAULT, clamp_ring_bytes
from ..domain.catalogue import AgentSpec, Catalogue
from ..domain.errors import AlreadyExists, Conflict, Invalid, NotFound, SessionLimit, SpawnFailed
from .activity import BUSY
from .core import DEFAULT_VIEWER_QUEUE_BYTES
from .leftovers import ProcessGroups
from .pty import TERM_GRACE, PtyProcess, SpawnSpec
from .screen import DEFAULT_SCROLLBACK_LINES
from .session import TerminalCounters, TerminalSession

if TYPE_CHECKING:  # isolation is loaded at the first isolated spawn (see _isolate)
    from .cgroups import Cgroups
    from .isolation import Policy

log = structlog.get_logger(__name__)

DEFAULT_CWD = "/workspace"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
EXITED_KEPT = 16
_SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_INHERITED = ("USER", "LOGNAME", "SHELL", "TZ")


@dataclass(frozen=True)
class SandboxContext:
    """What the terminals of one sandbox inherit. ``env`` (model gateway etc.) may hold
    secrets: it is passed to processes and never logged."""

    sandbox_id: str
    namespace: str = ""
    org_id: str = ""
    owner: str = ""
    default_agent: str = ""
    workdir: str = ""
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    session_limit: int = 3
    ring_bytes: int | None = None
    # the sandbox's own HOME (empty: the server's HOME, or the pod's in Kubernetes)
    home: str = ""
    # the quota's memory (``8Gi``) and CPU (``2``, ``500m``): an isolated sandbox's limits
    memory: str = ""
    cpu: str = ""


@dataclass(frozen=True)
class SessionRequest:
    """One terminal to start: an agent (default: the sandbox's) or an explicit command.
    ``env`` goes over everything else; an empty value unsets that variable."""

    agent: str | None = None
    extra_args: tuple[str, ...] = ()
    command: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    cwd: str | None = None
    rows: int = 24
    cols: int = 80
    ring_bytes: int | None = None
    # the sandbox's primary agent, started again: it may pick up its last conversation
    resume: bool = False


class SpawnPreparer(Protocol):
    """Called just before a process of a sandbox with its own HOME is started: gets the
    HOME ready (``agent`` is ``None`` for a plain command) and returns the spec to start,
    possibly with more arguments. Raising stops the start."""

    def __call__(
        self, spec: SpawnSpec, *, agent: AgentSpec | None, home: str, resume: bool
    ) -> SpawnSpec: ...


@dataclass(frozen=True)
class IdleInfo:
    last_activity_at: datetime
    active_sessions: int
    attached_viewers: int
    agent_busy: bool  # some terminal's activity is busy: never suspend a working agent
    activity: Mapping[str, str] = field(default_factory=dict)  # by session id


@dataclass
class _Sandbox:
    context: SandboxContext
    sessions: dict[str, TerminalSession] = field(default_factory=dict)
    since: float = field(default_factory=time.time)


ActivityListener = Callable[[str, TerminalSession, str, str], None]
"""Called ``(sandbox_id, session, old_state, new_state)`` on every activity transition."""


def new_session_id() -> str:
    """24 lowercase hex characters (12 random bytes)."""
    return os.urandom(12).hex()  # as secrets.token_hex, without loading random


class TerminalRegistry:
    """Holds every terminal session of the sandboxes registered with it."""

    def __init__(
        self,
        *,
        catalogue: Catalogue,
        ring_bytes: int = RING_DEFAULT,
        viewer_queue_bytes: int = DEFAULT_VIEWER_QUEUE_BYTES,
        path: str | None = None,
        base_env: Mapping[str, str] | None = None,
        term_grace: float = TERM_GRACE,
        prepare_spawn: SpawnPreparer | None = None,
        groups: ProcessGroups | None = None,
        scrollback_lines: int = DEFAULT_SCROLLBACK_LINES,
        isolation: Policy | None = None,
        cgroups: Cgroups | None = None,
    ) -> None:
        self.catalogue = catalogue
        # embedded isolation (terminal/isolation.py): every process of a sandbox with a
        # workspace of its own starts in that sandbox's view; None: as the server's user
        self.isolation = isolation
        # an isolated sandbox's cgroups (terminal/cgroups.py), where they can be made
        self.cgroups = cgroups
        # spawned process groups recorded in the data dir (ended at the next start)
        self.groups = groups
        self.ring_bytes = clamp_ring_bytes(ring_bytes)
        self.viewer_queue_bytes = viewer_queue_bytes
        self.path = path if path is not None else os.environ.get("PATH", DEFAULT_PATH)
        self._base_env = dict(base_env) if base_env is not None else None
        self.term_grace = term_grace
        self.prepare_spawn = prepare_spawn
        self.counters = TerminalCounters()
        self.scrollback_lines = scrollback_lines  # kept by each terminal's screen model
        # told about every busy/waiting/idle transition (notifications, idle rule)
        self.activity_listeners: list[ActivityListener] = []
        self._sandboxes: dict[str, _Sandbox] = {}
        self._closing = False

    @property
    def closing(self) -> bool:
        """Shutting down: new sessions are refused (not for any fault of theirs)."""
        return self._closing

    # ------------------------------------------------------------------ sandboxes
    def add_sandbox(self, context: SandboxContext) -> None:
        """Register (or update the context of) a sandbox; its sessions are kept."""
        entry = self._sandboxes.get(context.sandbox_id)
        if entry is None:
            self._sandboxes[context.sandbox_id] = _Sandbox(context)
        else:
            entry.context = context

    async def remove_sandbox(self, sandbox_id: str) -> None:
        """Stop every terminal of the sandbox, then forget it. Stops again until none is
        left (issue 11): a terminal started while the others were stopping (an attach
        past its checks just before the deletion) is stopped too, never dropped from the
        registry with its process running on; nothing is awaited between the last check
        and the removal."""
        while True:
            await self.stop_all(sandbox_id)
            entry = self._sandboxes.get(sandbox_id)
            if entry is None or not entry.sessions:
                break
        self._sandboxes.pop(sandbox_id, None)
        if self.cgroups is not None:
            self.cgroups.remove(sandbox_id)

    def context(self, sandbox_id: str) -> SandboxContext:
        return self._entry(sandbox_id).context

    def _entry(self, sandbox_id: str) -> _Sandbox:
        entry = self._sandboxes.get(sandbox_id)
        if entry is None:
            raise NotFound(f"sandbox {sandbox_id!r} has no terminals here")
        return entry

    # ------------------------------------------------------------------ sessions
    def get(self, sandbox_id: str, session_id: str) -> TerminalSession:
        session = self._entry(sandbox_id).sessions.get(session_id)
        if session is None:
            raise NotFound(f"terminal session {session_id!r} not found")
        return session

    def list(self, sandbox_id: str) -> list[TerminalSession]:
        return list(self._entry(sandbox_id).sessions.values())

    def live_sandboxes(self) -> builtins.list[SandboxContext]:
        """The contexts of the sandboxes that have a live terminal."""
        return [
            entry.context
            for entry in self._sandboxes.values()
            if any(not s.exited for s in entry.sessions.values())
        ]

    def live_count(self, sandbox_id: str) -> int:
        entry = self._sandboxes.get(sandbox_id)
        if entry is None:
            return 0
        return sum(1 for s in entry.sessions.values() if not s.exited)

    def total_live(self) -> int:
        return sum(self.live_count(sid) for sid in self._sandboxes)

    def live_where(self, admits: Callable[[SandboxContext], bool]) -> int:
        """Live sessions of the sandboxes whose context ``admits`` (quotas, issue 11)."""
        return sum(
            sum(1 for s in entry.sessions.values() if not s.exited)
            for entry in self._sandboxes.values()
            if admits(entry.context)
        )

    def last_activity_at(self, sandbox_id: str) -> datetime:
        """The newest input/output/attach of any session (registration time if none)."""
        entry = self._entry(sandbox_id)
        stamps = [s.last_activity_ts for s in entry.sessions.values()]
        return datetime.fromtimestamp(max([entry.since, *stamps]), UTC)

    def idle(self, sandbox_id: str) -> IdleInfo:
        entry = self._entry(sandbox_id)
        live = [s for s in entry.sessions.values() if not s.exited]
        return IdleInfo(
            last_activity_at=self.last_activity_at(sandbox_id),
            active_sessions=len(live),
            attached_viewers=sum(s.viewers for s in live),
            agent_busy=any(s.activity == BUSY for s in live),
            activity={s.id: s.activity for s in live},
        )

    def create(
        self,
        sandbox_id: str,
        request: SessionRequest | None = None,
        *,
        session_id: str | None = None,
    ) -> TerminalSession:
        """Start a terminal now. Raises Invalid, SessionLimit, SpawnFailed, AlreadyExists."""
        entry = self._entry(sandbox_id)
        req = request or SessionRequest()
        if self._closing:
            raise SpawnFailed("the terminal server is shutting down")
        sid = session_id if session_id is not None else new_session_id()
        if not _SESSION_ID.match(sid):
            raise Invalid(f"session id {sid!r} is not a valid id", code="invalid-id")
        if sid in entry.sessions:
            raise AlreadyExists(f"terminal session {sid!r} already exists")
        limit = entry.context.session_limit
        if self.live_count(sandbox_id) >= limit:
            raise SessionLimit(
                f"sandbox {sandbox_id!r} already has {limit} live terminal sessions (the limit)"
            )
        if not (1 <= req.rows <= 1000 and 1 <= req.cols <= 1000):
            raise Invalid("rows and cols must be between 1 and 1000", code="invalid-size")
        slug, spec = self._spawn_spec(entry.context, req)
        self._cgroups_ready(entry.context)
        spec = self._prepare(entry.context, req, slug, spec)
        spec = self._isolate(entry.context, spec)
        process = PtyProcess.spawn(spec)
        if self.groups is not None:
            self.groups.record(process.pgid)
        ring = clamp_ring_bytes(req.ring_bytes or entry.context.ring_bytes, self.ring_bytes)
        session = TerminalSession(
            session_id=sid,
            sandbox_id=sandbox_id,
            agent=slug,
            process=process,
            rows=req.rows,
            cols=req.cols,
            ring_bytes=ring,
            viewer_queue_bytes=self.viewer_queue_bytes,
            counters=self.counters,
            term_grace=self.term_grace,
            scrollback_lines=self.scrollback_lines,
            prompt_patterns=self._prompt_patterns(slug),
            on_activity=self._activity_moved,
        )
        entry.sessions[sid] = session
        self._forget_old_exited(entry)
        log.info("terminal.created", sandbox=sandbox_id, session=sid, agent=slug, pid=session.pid)
        return session

    def open(
        self, sandbox_id: str, session_id: str, *, agent: str | None = None
    ) -> TerminalSession:
        """The session with this id, spawned lazily (``agent`` or the sandbox default)."""
        entry = self._entry(sandbox_id)
        existing = entry.sessions.get(session_id)
        if existing is not None:
            return existing
        return self.create(
            sandbox_id, SessionRequest(agent=agent, resume=True), session_id=session_id
        )

    def forget(self, sandbox_id: str, session_id: str) -> None:
        """Drop the record of an exited session (so its id can be spawned again)."""
        session = self.get(sandbox_id, session_id)
        if not session.exited:
            raise Conflict(f"terminal session {session_id!r} is still running; delete it")
        self._entry(sandbox_id).sessions.pop(session_id, None)

    async def delete(self, sandbox_id: str, session_id: str) -> None:
        """Terminate the session's processes and forget it; returns once they are gone."""
        session = self.get(sandbox_id, session_id)
        await session.terminate()
        self._unrecord(session)
        self._entry(sandbox_id).sessions.pop(session_id, None)
        log.info("terminal.deleted", sandbox=sandbox_id, session=session_id)

    async def stop_all(self, sandbox_id: str) -> None:
        """Terminate every terminal of a sandbox (concurrently, bounded)."""
        entry = self._sandboxes.get(sandbox_id)
        if entry is None:
            return
        sessions = list(entry.sessions.values())
        for session in sessions:
            session.kick_viewers()
        await asyncio.gather(*(s.terminate() for s in sessions))
        for session in sessions:
            self._unrecord(session)
            entry.sessions.pop(session.id, None)

    async def close(self) -> None:
        """Two-stage shutdown: refuse new sessions and detach viewers, then end processes."""
        self._closing = True
        sessions = [s for e in self._sandboxes.values() for s in e.sessions.values()]
        for session in sessions:
            session.kick_viewers()
        await asyncio.sleep(0)  # let the pumps see their close before processes go
        await asyncio.gather(*(s.terminate() for s in sessions))
        for session in sessions:
            self._unrecord(session)
        for entry in self._sandboxes.values():
            entry.sessions.clear()
        if self.cgroups is not None:
            self.cgroups.close()

    def _prompt_patterns(self, slug: str) -> tuple[str, ...]:
        agent = self.catalogue.get(slug) if slug else None
        return tuple(getattr(agent, "prompt_patterns", ()) or ())

    def _activity_moved(self, session: TerminalSession, old: str, new: str) -> None:
        for listener in list(self.activity_listeners):
            try:
                listener(session.sandbox_id, session, old, new)
            except Exception:  # one listener's failure never hides the transition from others
                log.exception("terminal.activity.listener_failed", session=session.id)

    def _forget_old_exited(self, entry: _Sandbox) -> None:
        exited = [s for s in entry.sessions.values() if s.exited]
        for session in exited[: max(0, len(exited) - EXITED_KEPT)]:
            self._unrecord(session)
            entry.sessions.pop(session.id, None)

    def _unrecord(self, session: TerminalSession) -> None:
        if self.groups is not None:
            self.groups.forget(session.pid)

    # ------------------------------------------------------------------ spawning
    def base_env(self, context: SandboxContext) -> dict[str, str]:
        """A clean environment: basics, then the sandbox's identity, then its env."""
        if self._base_env is not None:
            env = dict(self._base_env)
        else:
            env = {k: os.environ[k] for k in _INHERITED if os.environ.get(k)}
            env["HOME"] = os.environ.get("HOME") or context.workdir or "/"
            env["LANG"] = os.environ.get("LANG") or "C.UTF-8"
        if context.home:
            env["HOME"] = context.home
        env.setdefault("PATH", self.path)
        env.setdefault("LANG", "C.UTF-8")
        env["TERM"] = "xterm-256color"
        env["COLORTERM"] = "truecolor"
        env["SANDBOX_ID"] = context.sandbox_id
        env["SANDBOX_NAMESPACE"] = context.namespace
        env["SANDBOX_ORG_ID"] = context.org_id
        env["SANDBOX_OWNER"] = context.owner
        env.update(context.env)
        return env

    def dry_run(self, context: SandboxContext, request: SessionRequest) -> SpawnSpec:
        """What :meth:`create` would spawn for ``request`` in ``context``, without spawning
        or registering anything: the same checks (agent known, variables set, binary
        found; not the working directory, which may not exist yet). Raises ``Invalid`` or
        ``SpawnFailed`` saying why it could not start."""
        return self._spawn_spec(context, request, check_cwd=False)[1]

    def _spawn_spec(
        self, context: SandboxContext, req: SessionRequest, *, check_cwd: bool = True
    ) -> tuple[str, SpawnSpec]:
        if req.agent and req.command:
            raise Invalid("give either an agent or a command, not both", code="ambiguous-request")
        for name in req.env:
            if not _ENV_NAME.match(name):
                raise Invalid(
                    f"{name!r} is not a valid environment variable name", code="invalid-env"
                )
        env = self.base_env(context)
        agent: AgentSpec | None = None
        slug = ""
        if not req.command:
            slug = req.agent or context.default_agent
            if not slug:
                raise Invalid(
                    "no agent or command given and the sandbox has no default agent",
                    code="missing-spec",
                )
            agent = self.catalogue.get(slug)
            if agent is None:
                known = ", ".join(sorted(a.slug for a in self.catalogue))
                raise Invalid(
                    f"unknown agent {slug!r}; known agents: {known}", code="invalid-agent"
                )
            env.update(row_env(agent, env))
        for name, value in req.env.items():
            if value:
                env[name] = value
            else:  # an empty value in a request unsets the variable
                env.pop(name, None)
        path = env.get("PATH", self.path)
        env["SANDBOX_PATH"] = path  # for login shells, whose /etc/profile resets PATH
        if agent is None:
            binary = _which(req.command[0], path)
            if binary is None:
                raise SpawnFailed(f"cannot start {req.command[0]!r}: not found on PATH")
            argv = (binary, *req.command[1:])
        else:
            missing = agent.missing_env(env)
            if missing:
                raise Invalid(
                    f"agent {slug!r} needs {', '.join(missing)} set in its environment",
                    code="missing-env",
                )
            binary = agent.resolve_binary(path)
            if binary is None:
                hint = f"; install it with: {agent.install_hint}" if agent.install_hint else ""
                raise SpawnFailed(
                    f"agent {slug!r} is not installed: {agent.binary!r} not found on PATH{hint}"
                )
            argv = (binary, *agent.default_args, *req.extra_args)
        cwd = req.cwd or (agent.default_cwd if agent else "") or context.workdir or DEFAULT_CWD
        if check_cwd and not os.path.isdir(cwd):
            raise SpawnFailed(f"working directory {cwd!r} does not exist")
        env["PWD"] = cwd  # as a shell would; config templates may name the working folder
        return slug, SpawnSpec(argv=argv, cwd=cwd, env=env, rows=req.rows, cols=req.cols)

    def _prepare(
        self, context: SandboxContext, req: SessionRequest, slug: str, spec: SpawnSpec
    ) -> SpawnSpec:
        """Run the ``prepare_spawn`` hook for a sandbox with its own HOME."""
        if self.prepare_spawn is None or not context.home:
            return spec
        agent = self.catalogue.get(slug) if slug else None
        try:
            return self.prepare_spawn(spec, agent=agent, home=context.home, resume=req.resume)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise SpawnFailed(
                f"cannot prepare the sandbox's HOME {context.home!r}: {reason}"
            ) from exc

    def _cgroups_ready(self, context: SandboxContext) -> None:
        """An isolated sandbox's cgroups are made and limited first, then the kernel's
        wait for its launcher's join starts (:meth:`.cgroups.Cgroups.prime`) while the
        rest of the spawn is prepared. In that order because making a cgroup would
        wait behind the primed lock; :meth:`_isolate` then finds them made."""
        if self.cgroups is None or self.isolation is None or not context.workdir:
            return
        from .isolation import memory_bytes

        memory = memory_bytes(context.memory)
        self.cgroups.prepare(context.sandbox_id, memory=memory, cpu=context.cpu)
        self.cgroups.prime()

    def _isolate(self, context: SandboxContext, spec: SpawnSpec) -> SpawnSpec:
        """The one place a spawn is put in its sandbox's view (when isolation is on and
        the sandbox has a workspace of its own)."""
        if self.isolation is None or not context.workdir:
            return spec
        from . import isolation  # only then: a pod (no isolation of its own) never loads it

        return isolation.wrap(
            self.isolation,
            spec,
            workspace=context.workdir,
            home=context.home,
            name=context.sandbox_id,
            memory=context.memory,
            cpu=context.cpu,
            org=context.org_id,
            cgroups=self.cgroups,
        )


def row_env(agent: AgentSpec, env: Mapping[str, str]) -> dict[str, str]:
    """The agent row's ``env``, each value rendered from ``env`` (``${NAME}``); a value
    naming a variable that is unset or empty there is left out."""
    out = {}
    for name, value in agent.env:
        template = Template(value)
        if any(not env.get(i) for i in template.get_identifiers()):
            continue
        out[name] = template.safe_substitute(env)
    return out


def _which(program: str, path: str) -> str | None:
    if os.path.isabs(program) or os.sep in program:
        return program if os.access(program, os.X_OK) else None
    import shutil  # (with bz2 and lzma: an idle pod resolves no program)

    return shutil.which(program, path=path)
