"""What the control plane's terminal routes need, whoever runs the terminals.

Embedded mode runs them in-process (``services.terminals.TerminalsService``); Kubernetes
mode proxies to the sandbox's own terminal server pod
(``services.remote_terminals.RemoteTerminals``). The routes speak only this Protocol.
``token`` is the caller's own credential and ``org`` the org it was read for
(``Principal.org``): the remote implementation presents both to the terminal server,
which checks them again (owner or org admin); the token is never logged.

A viewer's connection is a :class:`Channel`: an accepted WebSocket as the services see
it (no web framework here; the API layer adapts Starlette's WebSocket to it). How bytes
are framed on it (raw, or the ``sandbox.v2`` subprotocol) is the API layer's
:class:`AttachPump`, which the embedded service is given at composition.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..domain.access import OWNER
from ..domain.catalogue import RESCUE_SHELL, Catalogue
from ..domain.errors import Invalid, SessionLimit
from ..domain.principal import Principal
from ..domain.terminal_wire import RAW, SIGNAL_NAMES, WRITE, clip_reason

if TYPE_CHECKING:  # the pty-server pod imports this module, not the domain model
    from ..domain.model import Sandbox
    from ..terminal.session import TerminalSession

__all__ = ["SIGNAL_NAMES", "AttachPump", "Channel", "TerminalPort", "ViewerGrant", "refuse"]


class Channel(Protocol):
    """One accepted WebSocket. ``protocol``: the subprotocol it was accepted with
    (``""`` raw, ``"sandbox.v2"``); ``query``: its URL's query parameters."""

    @property
    def protocol(self) -> str: ...

    @property
    def query(self) -> Mapping[str, str]: ...

    async def send_bytes(self, data: bytes) -> None: ...

    async def send_text(self, text: str) -> None: ...

    async def receive(self) -> bytes | str | None:
        """The next frame; ``None`` once the peer has gone."""

    async def close(self, code: int, reason: str = "") -> None:
        """Close (idempotent; a peer already gone is not an error)."""


async def refuse(channel: Channel, code: int, message: str) -> None:
    """Close, saying why: a raw viewer also gets ``message`` written into its terminal
    (red, on a line of its own); a v2 viewer reads the close reason."""
    with contextlib.suppress(Exception):
        if channel.protocol == RAW:
            await channel.send_bytes(f"\r\n\x1b[1;31m{message}\x1b[0m\r\n".encode())
    await channel.close(code, clip_reason(message))


@dataclass(frozen=True)
class ViewerGrant:
    """Who is attaching, and with which rights: ``mode`` "write" or "read" (a read-only
    share: input dropped, resizes ignored), ``via`` "owner", "admin" or "share"."""

    who: str = ""
    mode: str = WRITE
    via: str = OWNER
    share_id: str = ""


class AttachPump(Protocol):
    """Serves an accepted channel as a viewer of an in-process terminal session until
    either ends (:func:`openova_sandbox.api.terminal_edge.attach.serve_viewer`)."""

    async def __call__(
        self, channel: Channel, session: TerminalSession, grant: ViewerGrant
    ) -> None: ...


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
        self,
        channel: Channel,
        sandbox: Sandbox,
        terminal_id: str | None,
        *,
        token: str,
        grant: ViewerGrant,
        org: str = "",
    ) -> None:
        """Serve an accepted channel as a viewer of a terminal (``None``: primary)."""

    async def resize(
        self,
        sandbox: Sandbox,
        terminal_id: str | None,
        rows: int,
        cols: int,
        *,
        token: str,
        org: str = "",
    ) -> None: ...

    async def signal(
        self, sandbox: Sandbox, terminal_id: str | None, name: str, *, token: str, org: str = ""
    ) -> None: ...

    async def open_extra(
        self, sandbox: Sandbox, agent: str, *, token: str, org: str = ""
    ) -> dict[str, Any]: ...

    async def list_terminals(
        self, sandbox: Sandbox, *, token: str, org: str = ""
    ) -> list[dict[str, Any]]: ...

    async def close(
        self, sandbox: Sandbox, terminal_id: str, *, token: str, org: str = ""
    ) -> None: ...
