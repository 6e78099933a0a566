"""Terminals of a Sandbox, as the control plane offers them to browsers and the CLI.

Bridges three parts: the sessions service (who may see which sandbox), the in-process
terminal registry (the PTYs), and the controller (which asks, through the
``TerminalHost`` port, whether terminals are serving and stops them on delete).

Registry keys are ``<namespace>/<name>`` because two orgs may each have a sandbox of
the same name; the processes still see ``SANDBOX_ID=<name>``. The primary terminal of
a sandbox is the session named after it, spawned lazily with its default agent. When it
is spawned for a sandbox that had terminal activity before (the server restarted), a
banner line tells the viewer the agent was restarted.

Each sandbox has its own HOME beside its workspace (``<data-dir>/homes/<ns>/<name>``):
the registry's spawn hook (:func:`prepare_spawn`) seeds it with the agent's config files
before every start, and the primary agent, when started again in a HOME where it ran
before, gets its resume arguments (``--continue``) and picks up its last conversation.

Models: every terminal of a sandbox gets the model gateway's URLs and the sandbox's own
gateway token (``SandboxTokens``: issued before the sandbox's first terminal starts,
revoked when it is deleted), never a provider key; see docs/gateway.md, "Per-sandbox
credentials". A claude-code session on its owner's Claude subscription gets that
subscription's token instead of the gateway's Anthropic variables.

Whether the primary agent can start is the controller's ``AgentUnavailable`` question
(:meth:`TerminalsService.agent_problem`): the spawn's own checks without spawning, plus
the last start that failed (an exec error the checks cannot foresee), remembered until a
start succeeds or the agent's binary is replaced. Extra terminals may use every session
of the quota but one, which stays the primary agent's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import structlog

from ..agents.mcp_config import TOKEN_VAR as MCP_TOKEN_VAR
from ..agents.mcp_config import URL_VAR as MCP_URL_VAR
from ..config import Settings
from ..controller.local import home_path, tmp_env, tmp_path, workspace_path
from ..controller.reconcile import FALSE, TRUE
from ..domain.errors import (
    Invalid,
    NotFound,
    QuotaExceeded,
    SandboxError,
    SpawnFailed,
)
from ..domain.ledger import user_key
from ..domain.model import ANNOTATION_SUB, Sandbox
from ..domain.model_access import ModelAccess, agent_model_env
from ..domain.principal import Principal
from ..domain.quotas import QuotaRefused
from ..domain.status import attach_path
from ..domain.terminal_wire import CLOSE_INTERNAL, CLOSE_POLICY, CLOSE_TRY_LATER, SIGNALS
from ..events.product import Emitter
from ..terminal.registry import SandboxContext, SessionRequest, TerminalRegistry
from ..terminal.session import TerminalSession
from .agent_spawn import prepare_spawn
from .mcp_tokens import McpTokens
from .quotas import Limits, QuotasService
from .sandbox_tokens import SandboxTokens
from .sessions import SessionsService
from .terminal_port import (
    AttachPump,
    Channel,
    ViewerGrant,
    check_extra_agent,
    check_extra_slot,
    refuse,
    terminal_attach_path,
)

log = structlog.get_logger(__name__)

BYOS_AGENT = "claude-code"
BYOS_TOKEN_ENV = "CLAUDE_CODE_OAUTH_TOKEN"
# what a claude-code session on its owner's subscription must not have: claude prefers
# ANTHROPIC_AUTH_TOKEN and ANTHROPIC_API_KEY over the subscription, and would send the
# subscription's token to ANTHROPIC_BASE_URL (the gateway, which does not take it; see
# docs/gateway.md, "Subscriptions (BYOS)"). Empty values in a request unset them.
BYOS_UNSET = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL", "LLM_GATEWAY_URL")

RESTART_BANNER = (
    b"\r\n\x1b[33m[sandbox] the server restarted: this agent was started again in the same "
    b"workspace; earlier screen output is gone.\x1b[0m\r\n"
)


class CredentialSource(Protocol):
    async def refresh_if_needed(self, sub: str) -> None: ...

    def credentials_for(self, sub: str) -> dict[str, str]: ...

    def connected(self, sub: str) -> bool: ...


# stands in for a connected owner's token when only asking whether the agent could start
CONNECTED_PLACEHOLDER = "connected"
# how long the spawn's checks for one agent are reused by agent_problem: the sweep asks
# for every sandbox every 3 s, and the answer depends on the agent (and, for
# claude-code, whether the owner connected a subscription), not on the sandbox
DRY_RUN_SECONDS = 1.0
BinaryIdentity = tuple[str, int, int] | None  # path, inode, mtime (ns)
MCP_MEMO_MAX = 10_000  # sandboxes whose McpReady answer is remembered
MCP_SERVING = "served by this process at /mcp; its agents get the sandbox's MCP token"


@dataclass(frozen=True)
class _StartFailure:
    message: str
    binary: BinaryIdentity  # what was started; a replaced binary deserves another try


def _identity(path: str) -> BinaryIdentity:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (path, st.st_ino, st.st_mtime_ns)


def registry_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


class TerminalsService:
    def __init__(
        self,
        *,
        registry: TerminalRegistry,
        sessions: SessionsService,
        settings: Settings,
        credentials: CredentialSource | None = None,
        pump: AttachPump | None = None,
        tokens: SandboxTokens | None = None,
        mcp_tokens: McpTokens | None = None,
    ) -> None:
        """``tokens``: the sandboxes' gateway tokens (embedded mode's model gateway);
        without them terminals get no model access (never the server's own keys).
        ``mcp_tokens``: each spawn gets the MCP server's URL and a fresh MCP token of its
        sandbox (``SANDBOX_MCP_URL``/``SANDBOX_MCP_TOKEN``), which the agent's MCP client
        config names (``agents.mcp_config``); without them, no MCP.
        ``pump``: serves a viewer's channel (the API layer's protocols); required to
        attach."""
        self.pump = pump
        self.registry = registry
        if registry.prepare_spawn is None:
            registry.prepare_spawn = prepare_spawn  # sandboxes get their own HOME here
        self._sessions = sessions
        self._data_dir = Path(settings.data_dir)
        self._ring_bytes = settings.ring_buffer_bytes
        self._agent_model = settings.agent_model
        self.tokens = tokens
        self.mcp_tokens = mcp_tokens
        # (namespace, name) -> ((uid, owner sub, owner email), why no MCP token: "" none)
        self._mcp_problems: dict[tuple[str, str], tuple[tuple[str, str, str], str]] = {}
        self._credentials = credentials
        self._start_failures: dict[str, _StartFailure] = {}
        # (agent, owner connected) → (when, the dry run's binary or why it cannot start)
        self._dry_runs: dict[tuple[str, bool], tuple[float, str, str]] = {}
        # told (namespace, name) when the primary agent's startability changed, so the
        # controller looks again now rather than at its next sweep
        self.on_agent_change: Callable[[str, str], None] | None = None
        # quotas per user and org (issue 11): checked before a terminal process starts
        self.quotas: QuotasService | None = None
        # session.started / session.exited for every terminal process (events.product)
        self.events: Emitter | None = None

    # ----------------------------------------------------------- registry context
    def _model_access(self, sandbox: Sandbox, *, preview: bool) -> ModelAccess | None:
        if self.tokens is None:
            return None
        return self.tokens.preview() if preview else self.tokens.access(sandbox)

    def _context(self, sandbox: Sandbox, *, preview: bool = False) -> SandboxContext:
        """The sandbox's terminals' context; ``preview``: with stand-ins for a gateway
        token not issued yet (for the checks that do not spawn)."""
        env = agent_model_env(self._model_access(sandbox, preview=preview), self._agent_model)
        env["SANDBOX_ID"] = sandbox.name
        env.update(tmp_env(str(tmp_path(self._data_dir, sandbox.namespace, sandbox.name))))
        return SandboxContext(
            sandbox_id=registry_key(sandbox.namespace, sandbox.name),
            namespace=sandbox.namespace,
            org_id=sandbox.spec.org_slug,
            owner=sandbox.spec.owner_email,
            default_agent=sandbox.spec.default_agent,
            workdir=str(workspace_path(self._data_dir, sandbox.namespace, sandbox.name)),
            env=env,
            session_limit=sandbox.spec.quota.concurrent_sessions,
            ring_bytes=self._ring_bytes,
            home=str(home_path(self._data_dir, sandbox.namespace, sandbox.name)),
            memory=sandbox.spec.quota.memory,
            cpu=sandbox.spec.quota.cpu,
        )

    def _register(self, sandbox: Sandbox) -> str:
        context = self._context(sandbox)
        self.registry.add_sandbox(context)
        return context.sandbox_id

    def spawn_request(
        self, sandbox: Sandbox, agent: str, *, resume: bool = False
    ) -> SessionRequest:
        """The spawn request; a connected owner's Claude subscription goes to claude-code
        sessions only, with any API key blanked so the subscription is what is billed.
        ``resume``: the primary agent, which continues its last conversation."""
        env = self._mcp_env(sandbox)
        owner_sub = sandbox.metadata.annotations.get(ANNOTATION_SUB, "")
        if agent == BYOS_AGENT and self._credentials is not None and owner_sub:
            creds = self._credentials.credentials_for(owner_sub)
            if creds:
                env.update({**creds, **dict.fromkeys(BYOS_UNSET, "")})
        return SessionRequest(agent=agent, env=env, resume=resume)

    def _mcp_env(self, sandbox: Sandbox) -> dict[str, str]:
        """The MCP server's URL and a fresh MCP token of the sandbox (none: no MCP server
        here, or not listening yet; a token that cannot be issued is logged, and the
        agent starts without MCP rather than not at all)."""
        if self.mcp_tokens is None:
            return {}
        try:
            access = self.mcp_tokens.access(sandbox)
        except SandboxError as exc:
            log.warning("mcp.token_not_issued", sandbox=sandbox.name, error=exc.detail)
            return {}
        if access is None:
            return {}
        return {MCP_URL_VAR: access.url, MCP_TOKEN_VAR: access.token}

    def mcp_state(self, sandbox: Sandbox) -> tuple[str, str, str] | None:
        """``McpReady`` for the controller: the MCP server is this process's own (mounted
        at ``/mcp`` with ``mcp_tokens``), so it answers for the sandbox when a token can
        be issued for it (it has a uid and an owner). Like ``PtyReady`` it holds before
        the server listens (the controller starts first): no agent can start before then
        either, since spawns come through the server's own requests, and saying
        "waiting" there would turn every Ready sandbox Provisioning at each restart.
        Whether a token can be issued is remembered per sandbox uid and owner: the sweep
        asks every few seconds, and a signature each time would cost a thousand
        sandboxes' CPU."""
        tokens = self.mcp_tokens
        if tokens is None:
            return None
        owner = (sandbox.metadata.annotations.get(ANNOTATION_SUB, ""), sandbox.spec.owner_email)
        memo = (sandbox.metadata.uid, *owner)
        problem = self._mcp_problems.get(sandbox.key)
        if problem is None or problem[0] != memo:
            try:
                tokens.issue(sandbox)
                problem = (memo, "")
            except SandboxError as exc:
                problem = (memo, exc.detail)
            if len(self._mcp_problems) >= MCP_MEMO_MAX:  # deleted sandboxes' answers
                self._mcp_problems.clear()
            self._mcp_problems[sandbox.key] = problem
        if problem[1]:
            return (FALSE, "TokenNotIssued", f"no MCP token for this sandbox: {problem[1]}")
        # one message whatever the address: a restart on another port writes no status
        return (TRUE, "Serving", MCP_SERVING)

    async def _refresh_credentials(self, sandbox: Sandbox, agent: str) -> None:
        """Before a spawn: issue the sandbox's gateway token unless it has one, and
        renew the owner's expiring subscription token when it will be used
        (``spawn_request`` itself is synchronous)."""
        if self.tokens is not None:
            await self.tokens.ensure(sandbox)
        owner_sub = sandbox.metadata.annotations.get(ANNOTATION_SUB, "")
        if agent == BYOS_AGENT and self._credentials is not None and owner_sub:
            await self._credentials.refresh_if_needed(owner_sub)

    # ----------------------------------------------------------- can the agent start?
    def _preflight_request(self, sandbox: Sandbox, agent: str) -> SessionRequest:
        """``spawn_request`` for asking only: a connected owner counts as having the
        token (an expired one is renewed before the real spawn)."""
        owner_sub = sandbox.metadata.annotations.get(ANNOTATION_SUB, "")
        credentials = self._credentials
        if agent == BYOS_AGENT and credentials is not None and credentials.connected(owner_sub):
            env = {BYOS_TOKEN_ENV: CONNECTED_PLACEHOLDER, **dict.fromkeys(BYOS_UNSET, "")}
            return SessionRequest(agent=agent, env=env)
        return SessionRequest(agent=agent)

    def _binary(self, sandbox: Sandbox) -> BinaryIdentity:
        try:
            spec = self.registry.dry_run(
                self._context(sandbox, preview=True),
                self._preflight_request(sandbox, sandbox.spec.default_agent),
            )
        except SandboxError:
            return None
        return _identity(spec.argv[0])

    def agent_problem(self, sandbox: Sandbox) -> str | None:
        """Why the sandbox's agent cannot start now (``None``: it can, as far as anyone
        knows): the spawn's checks without spawning, then the last failed start."""
        agent = sandbox.spec.default_agent
        if not agent:
            return None
        key = registry_key(sandbox.namespace, sandbox.name)
        binary, problem = self._dry_run(sandbox, agent)
        if problem:
            return problem
        failure = self._start_failures.get(key)
        if failure is None:
            return None
        if failure.binary != _identity(binary):
            del self._start_failures[key]  # reinstalled: the next attach tries again
            return None
        return failure.message

    def _dry_run(self, sandbox: Sandbox, agent: str) -> tuple[str, str]:
        """The binary the spawn would start and "", or "" and why it cannot start; the
        same agent's answer is reused for ``DRY_RUN_SECONDS`` (issue 11: a thousand
        sandboxes' checks every sweep were most of an idle server's CPU). The checks
        (catalogue, required variables, binary on the search path) read the agent's
        row, the server's environment and, for claude-code, the owner's connection:
        nothing else of the sandbox."""
        request = self._preflight_request(sandbox, agent)
        memo = (agent, BYOS_TOKEN_ENV in request.env)
        now = time.monotonic()
        known = self._dry_runs.get(memo)
        if known is not None and now - known[0] < DRY_RUN_SECONDS:
            return known[1], known[2]
        try:
            spec = self.registry.dry_run(self._context(sandbox, preview=True), request)
        except (Invalid, SpawnFailed) as exc:
            answer = ("", exc.detail)
        else:
            answer = (spec.argv[0], "")
        self._dry_runs[memo] = (now, *answer)
        return answer

    def _start_failed(self, sandbox: Sandbox, exc: SandboxError) -> None:
        if isinstance(exc, QuotaExceeded) or self.registry.closing:
            return  # not the agent's fault
        key = registry_key(sandbox.namespace, sandbox.name)
        self._start_failures[key] = _StartFailure(exc.detail, self._binary(sandbox))
        log.warning(
            "terminal.agent_unavailable",
            sandbox=sandbox.name,
            namespace=sandbox.namespace,
            agent=sandbox.spec.default_agent,
            reason=exc.detail,
        )
        self._agent_changed(sandbox)

    def _started(self, sandbox: Sandbox) -> None:
        if self._start_failures.pop(registry_key(sandbox.namespace, sandbox.name), None):
            self._agent_changed(sandbox)

    def _agent_changed(self, sandbox: Sandbox) -> None:
        self._dry_runs.clear()  # a start failed or succeeded: ask the spawn again
        if self.on_agent_change is not None:
            self.on_agent_change(sandbox.namespace, sandbox.name)

    async def sandbox_for(self, principal: Principal, sandbox_id: str) -> Sandbox:
        return await self._sessions.get(principal, sandbox_id)

    # ----------------------------------------------------------- terminals
    def activity(self, namespace: str, name: str) -> str | None:
        """The primary terminal's activity (``busy``/``waiting``/``idle``; None: not running)."""
        try:
            session = self.registry.get(registry_key(namespace, name), name)
        except NotFound:
            return None
        return None if session.exited else session.activity

    def primary(self, sandbox: Sandbox, limits: Limits | None = None) -> TerminalSession:
        """The sandbox's primary terminal, spawned lazily with its default agent;
        ``limits``: the owner's quotas, checked before a process is started."""
        key = self._register(sandbox)
        banner = b""
        try:
            existing = self.registry.get(key, sandbox.name)
        except NotFound:
            existing = None
            if sandbox.status.last_activity_at is not None:
                banner = RESTART_BANNER
        if existing is not None and not existing.exited:
            return existing
        if existing is not None:
            code = existing.exit_code
            banner = (
                f"\r\n\x1b[33m[sandbox] the agent exited (code {code}); "
                "started it again.\x1b[0m\r\n"
            ).encode()
            self.registry.forget(key, sandbox.name)
        self._check_terminal_quota(sandbox, limits)
        session = self.registry.create(
            key,
            self.spawn_request(sandbox, sandbox.spec.default_agent, resume=True),
            session_id=sandbox.name,
        )
        if banner:
            session.announce(banner)
            log.info("terminal.respawned", sandbox=sandbox.name, namespace=sandbox.namespace)
        if self.events is not None:
            self.events.watch_exit(sandbox, session)
        return session

    # ----------------------------------------------------------- the TerminalPort
    async def wake(self, sandbox: Sandbox) -> None:
        """Embedded sandboxes are never suspended: nothing to wake."""

    async def attach(
        self,
        channel: Channel,
        sandbox: Sandbox,
        terminal_id: str | None,
        *,
        token: str,
        grant: ViewerGrant,
        org: str = "",
    ) -> None:
        if self.pump is None:
            raise RuntimeError("TerminalsService was built without an attach pump")
        limits: Limits | None = None
        if terminal_id is None:
            try:
                await self._refresh_credentials(sandbox, sandbox.spec.default_agent)
                limits = await self._owner_limits(sandbox)
            except SandboxError as exc:  # the ledger is down: not the agent's fault
                await refuse(channel, CLOSE_INTERNAL, f"cannot start the agent: {exc.detail}")
                return
        try:
            session = (
                self.primary(sandbox, limits)
                if terminal_id is None
                else self.terminal(sandbox, terminal_id)
            )
        except NotFound:
            await channel.close(CLOSE_POLICY, "terminal not found")
            return
        except QuotaRefused as exc:
            await refuse(channel, CLOSE_TRY_LATER, f"{exc.code}: {exc.detail}")
            return
        except SandboxError as exc:
            if terminal_id is None:
                self._start_failed(sandbox, exc)
            await refuse(channel, CLOSE_INTERNAL, f"cannot start the agent: {exc.detail}")
            return
        if terminal_id is None:
            self._started(sandbox)
        await self.pump(channel, session, grant)

    async def resize(
        self,
        sandbox: Sandbox,
        terminal_id: str | None,
        rows: int,
        cols: int,
        *,
        token: str,
        org: str = "",
    ) -> None:
        self.terminal(sandbox, terminal_id or sandbox.name).resize(rows, cols)

    async def signal(
        self, sandbox: Sandbox, terminal_id: str | None, name: str, *, token: str, org: str = ""
    ) -> None:
        self.terminal(sandbox, terminal_id or sandbox.name).signal(SIGNALS[name])

    async def open_extra(
        self, sandbox: Sandbox, agent: str, *, token: str, org: str = ""
    ) -> dict[str, Any]:
        check_extra_agent(self._sessions.catalogue, agent)
        await self._refresh_credentials(sandbox, agent)
        limits = await self._owner_limits(sandbox)
        key = self._register(sandbox)
        self._check_extra_slot(sandbox, key)
        self._check_terminal_quota(sandbox, limits)
        session = self.registry.create(key, self.spawn_request(sandbox, agent))
        if self.events is not None:
            self.events.watch_exit(sandbox, session)
        return {
            "id": session.id,
            "agent": agent,
            "attachUrl": terminal_attach_path(sandbox.name, session.id),
        }

    async def _owner_limits(self, sandbox: Sandbox) -> Limits | None:
        """The quotas of the sandbox's owner (issue 11); ``None`` without quotas."""
        if self.quotas is None:
            return None
        owner = user_key(
            sandbox.spec.owner_email, sandbox.metadata.annotations.get(ANNOTATION_SUB, "")
        )
        return await self.quotas.limits(sandbox.namespace, owner)

    def _check_terminal_quota(self, sandbox: Sandbox, limits: Limits | None) -> None:
        if self.quotas is not None and limits is not None:
            self.quotas.check_terminal(limits, sandbox.namespace, sandbox.spec.owner_email)

    def live_terminals(self, namespace: str, owner_email: str | None) -> int:
        """Live terminal processes of a namespace's sandboxes (of one owner's, by email)."""
        return self.registry.live_where(
            lambda c: (
                c.namespace == namespace
                and (owner_email is None or c.owner.strip().lower() == owner_email)
            )
        )

    def _check_extra_slot(self, sandbox: Sandbox, key: str) -> None:
        extras = sum(1 for s in self.registry.list(key) if not s.exited and s.id != sandbox.name)
        check_extra_slot(sandbox, extras)

    def terminal(self, sandbox: Sandbox, terminal_id: str) -> TerminalSession:
        key = self._register(sandbox)
        try:
            return self.registry.get(key, terminal_id)
        except NotFound as exc:
            raise NotFound(
                f'terminal "{terminal_id}" not found in sandbox "{sandbox.name}"',
                code="terminal-not-found",
            ) from exc

    async def close(self, sandbox: Sandbox, terminal_id: str, *, token: str, org: str = "") -> None:
        """End one terminal (404 when unknown); returns once its processes are gone."""
        self.terminal(sandbox, terminal_id)
        await self.registry.delete(registry_key(sandbox.namespace, sandbox.name), terminal_id)

    async def list_terminals(
        self, sandbox: Sandbox, *, token: str, org: str = ""
    ) -> list[dict[str, Any]]:
        key = self._register(sandbox)
        out = []
        for session in self.registry.list(key):
            if session.exited:
                continue
            url = (
                attach_path(sandbox.name)
                if session.id == sandbox.name
                else terminal_attach_path(sandbox.name, session.id)
            )
            out.append({"id": session.id, "agent": session.agent, "attachUrl": url})
        return out


class TerminalHostAdapter:
    """The controller's ``TerminalHost`` port over the in-process registry. ``tokens``:
    a deleted sandbox's gateway token is revoked once its processes are gone."""

    def __init__(
        self,
        registry: TerminalRegistry,
        *,
        agent_problem: Callable[[Sandbox], str | None] | None = None,
        tokens: SandboxTokens | None = None,
        mcp_state: Callable[[Sandbox], tuple[str, str, str] | None] | None = None,
    ) -> None:
        self._registry = registry
        self._agent_problem = agent_problem
        self._tokens = tokens
        self._mcp_state = mcp_state

    def serving(self) -> bool:
        """In-process: the terminal server lives and dies with this process."""
        return True

    def agent_problem(self, sandbox: Sandbox) -> str | None:
        return self._agent_problem(sandbox) if self._agent_problem is not None else None

    def mcp_state(self, sandbox: Sandbox) -> tuple[str, str, str] | None:
        return self._mcp_state(sandbox) if self._mcp_state is not None else None

    async def stop_sandbox(self, namespace: str, name: str) -> None:
        """The sandbox is being deleted: its processes end, then its gateway token is
        revoked (a ledger that cannot be reached fails the step, which the controller
        retries, so the deletion does not finish with the token still valid)."""
        await self._registry.remove_sandbox(registry_key(namespace, name))
        if self._tokens is not None:
            await self._tokens.revoke(namespace, name)

    def sandboxes(self) -> list[tuple[str, str]]:
        out = []
        for context in self._registry.live_sandboxes():
            namespace = context.namespace
            prefix = f"{namespace}/"
            if context.sandbox_id.startswith(prefix):
                out.append((namespace, context.sandbox_id[len(prefix) :]))
        return out

    def sessions(self, namespace: str, name: str) -> int:
        try:
            return self._registry.live_count(registry_key(namespace, name))
        except NotFound:
            return 0

    def last_activity(self, namespace: str, name: str) -> datetime | None:
        key = registry_key(namespace, name)
        try:
            if not self._registry.list(key):
                return None
            return self._registry.last_activity_at(key)
        except NotFound:
            return None
