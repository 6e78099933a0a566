"""What the control plane's terminal routes need, whoever runs the terminals.

Embedded mode runs them in-process (``services.terminals.TerminalsService``); Kubernetes
mode proxies to the sandbox's own terminal server pod
(``services.remote_terminals.RemoteTerminals``). The routes speak only this Protocol.
``token`` is the caller's own credential: the remote implementation presents it to the
terminal server, which checks it again (owner or org admin); it is never logged.
"""

from __future__ import annotations

from typing import Any, Protocol

from starlette.websockets import WebSocket

from ..domain.catalogue import RESCUE_SHELL, Catalogue
from ..domain.errors import Invalid, SessionLimit
from ..domain.model import Sandbox
from ..domain.principal import Principal

SIGNAL_NAMES = ("INT", "QUIT", "TERM", "HUP")


def check_extra_agent(catalogue: Catalogue, agent: str) -> None:
    """Extra terminals run the rescue shell or one of the API's agents."""
    if agent != RESCUE_SHELL and agent not in catalogue.api_slugs:
        known = ", ".join([RESCUE_SHELL, *catalogue.api_slugs])
        raise Invalid(f'agent "{agent}" not in catalogue {{{known}}}', code="invalid-agent")


def check_extra_slot(sandbox: Sandbox, extras: int) -> None:
    """Extra terminals get every session of the quota but one: the primary agent's slot
    is kept, so stray shells can never stop the agent from starting. ``extras`` is how
    many live extra terminals the sandbox has now."""
    quota = sandbox.spec.quota.concurrent_sessions
    if extras >= max(0, quota - 1):
        kept = "its only session is" if quota <= 1 else f"one of its {quota} sessions is"
        raise SessionLimit(
            f'sandbox "{sandbox.name}" already has {extras} extra terminal(s), the most it '
            f"may have: {kept} kept for the agent (quota.concurrentSessions = {quota}); "
            "close a terminal first"
        )


def terminal_attach_path(sandbox_id: str, terminal_id: str) -> str:
    return f"/api/v1/sandbox/sessions/{sandbox_id}/terminals/{terminal_id}/attach"


class TerminalPort(Protocol):
    async def sandbox_for(self, principal: Principal, sandbox_id: str) -> Sandbox: ...

    async def wake(self, sandbox: Sandbox) -> None:
        """Ask for a suspended sandbox to be scaled up again (idempotent)."""

    async def attach(
        self, websocket: WebSocket, sandbox: Sandbox, terminal_id: str | None, *, token: str
    ) -> None:
        """Serve an accepted WebSocket as a viewer of a terminal (``None``: primary)."""

    async def resize(
        self, sandbox: Sandbox, terminal_id: str | None, rows: int, cols: int, *, token: str
    ) -> None: ...

    async def signal(
        self, sandbox: Sandbox, terminal_id: str | None, name: str, *, token: str
    ) -> None: ...

    async def open_extra(self, sandbox: Sandbox, agent: str, *, token: str) -> dict[str, Any]: ...

    async def list_terminals(self, sandbox: Sandbox, *, token: str) -> list[dict[str, Any]]: ...

    async def close(self, sandbox: Sandbox, terminal_id: str, *, token: str) -> None: ...
