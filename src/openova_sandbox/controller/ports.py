"""The two seams the embedded controller depends on, as structural Protocols.

The layer contract keeps ``controller``, ``store`` and ``terminal`` independent siblings:
none may import another. So the controller states here, in its own words, the part of
each neighbour it uses, and the composition root passes the real objects in:

- :class:`SandboxStore` is the subset of ``store.base.Store`` the controller calls; every
  ``Store`` backend satisfies it structurally (mypy checks that at the call site).
- :class:`TerminalHost` is what the controller needs from the in-process terminal server;
  an adapter over the terminal registry implements it.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Protocol

from ..domain.ledger import GatewayIdentity
from ..domain.model import Sandbox


class WatchEventLike(Protocol):
    """One change from ``Store.watch``: ``ADDED``, ``MODIFIED`` or ``DELETED``."""

    @property
    def type(self) -> str: ...

    @property
    def object(self) -> Sandbox: ...

    @property
    def resource_version(self) -> str: ...


class SandboxStore(Protocol):
    """What the controller calls on the store (see ``store/base.py`` for the semantics)."""

    async def get(self, namespace: str, name: str) -> Sandbox: ...

    async def list(
        self,
        namespace: str | None = None,
        *,
        labels: Mapping[str, str] | None = None,
    ) -> builtins.list[Sandbox]: ...

    async def update(self, sandbox: Sandbox) -> Sandbox | None: ...

    async def update_status(self, sandbox: Sandbox) -> Sandbox: ...

    def watch(self, since: str | None = None) -> AsyncIterator[WatchEventLike]: ...


class TerminalHost(Protocol):
    """The in-process terminal server, as the controller sees it.

    ``serving`` backs the ``PtyReady`` condition and ``agent_problem`` its
    ``AgentUnavailable`` failure (why the sandbox's agent cannot start now, ``None`` when
    it can); ``sessions`` and ``last_activity`` feed ``status.sessions`` and
    ``status.lastActivityAt``; ``stop_sandbox`` ends every process of a sandbox when it
    is deleted and must be idempotent (stopping nothing is fine). The synchronous
    methods are called from the event loop and must not block.
    """

    def serving(self) -> bool: ...

    def agent_problem(self, sandbox: Sandbox) -> str | None: ...

    async def stop_sandbox(self, namespace: str, name: str) -> None: ...

    def sessions(self, namespace: str, name: str) -> int: ...

    def sandboxes(self) -> builtins.list[tuple[str, str]]:
        """(namespace, name) of every sandbox with a live terminal: the sweep ends
        those of sandboxes the store no longer has."""
        ...

    def last_activity(self, namespace: str, name: str) -> datetime | None: ...

    def mcp_state(self, sandbox: Sandbox) -> tuple[str, str, str] | None:
        """The sandbox's ``McpReady`` (status, reason, message): whether the MCP server
        its agents are configured for answers for it; ``None`` when this runtime serves
        no MCP (``McpReady`` is then ``NotApplicable``)."""
        ...


class TokenLedger(Protocol):
    """What the Kubernetes operator needs of the model gateway's ledger: each sandbox's
    token issued, checked and revoked (the ledger itself is built by the entry point)."""

    async def start(self) -> None: ...

    async def authenticate(self, token: str) -> GatewayIdentity | None: ...

    async def issue_token(self, identity: GatewayIdentity) -> str: ...

    async def revoke(self, namespace: str, sandbox: str) -> None: ...

    async def close(self) -> None: ...


class McpTokenSource(Protocol):
    """What the Kubernetes operator needs to hand each sandbox pod its MCP token (issue
    14; the tokens are signed with the control plane's issuer key, which the entry
    point loads): a fresh one, and whether one the pod holds is still good for it."""

    def issue(self, sandbox: Sandbox) -> str: ...

    async def current(self, token: str, sandbox: Sandbox) -> bool: ...
