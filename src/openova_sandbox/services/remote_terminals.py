"""Terminals of Kubernetes mode: the control plane proxies to each sandbox's own
terminal server (the ``pty-server`` StatefulSet in its workspace namespace).

The caller's token is presented upstream, so the terminal server decides again
(owner or org admin of that sandbox): the control plane adds no privilege. A viewer of a
share link is the exception: the control plane has checked the link
(``SharesService.access``) and presents, instead of the viewer's token, a share grant
(``auth.share_grant``: a 60-second JWT signed with the sandbox's own grant key, naming
the sandbox, the viewer, the mode and the share); the terminal server admits that one
connection in the share's mode. Revocation and expiry are the control plane's: the
attach route ends the relay (1008 ``share-revoked``/``share-expired``). WebSocket
frames are relayed as they are, both ways, and the upstream close code is passed on;
the subprotocol the browser was accepted with (``sandbox.v2``) and its ``since`` are
passed to the terminal server, which speaks the protocol itself.
The org the control plane read the caller's token for (``Principal.org``: the
``X-Sandbox-Org`` the request asked for, or a console session's) goes along as
``X-Sandbox-Org``: a token naming several orgs is read for the same one there, with
the same claim mapping (the operator gives the pod those settings).
An attach to a suspended sandbox first asks the operator to wake it (annotation
``openova.io/wake-requested``), then waits for Ready like any attach.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import Any, cast
from urllib.parse import quote, urlencode

import httpx
import structlog
import websockets
from websockets.typing import Subprotocol

from ..auth.claims import ORG_HEADER
from ..auth.share_grant import ShareGrantIssuer
from ..domain.access import SHARE
from ..domain.errors import (
    BackendUnavailable,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    SandboxError,
    SessionLimit,
)
from ..domain.model import Sandbox, format_time, utcnow
from ..domain.principal import Principal
from ..domain.share import read_shares
from ..domain.share_grant import SHARE_GRANT_HEADER
from ..domain.status import attach_path
from ..domain.terminal_wire import (
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    NOT_SENT,
    SUBPROTOCOL_V2,
    clip_reason,
)
from ..store.base import Store
from .sessions import SessionsService
from .terminal_port import (
    Channel,
    ViewerGrant,
    check_extra_agent,
    check_extra_slot,
    terminal_attach_path,
)

log = structlog.get_logger(__name__)

ANNOTATION_WAKE = "openova.io/wake-requested"
STATUS_NAMESPACE = "workspaceNamespace"
PASSED_QUERY = ("since",)  # what the terminal server reads from the browser's URL
# fits a close reason (123 bytes)
SHARES_UNAVAILABLE = (
    "share links in Kubernetes mode need SANDBOX_SHARE_GRANT_SECRET (docs/kubernetes.md)"
)
TIMEOUT = 10.0


def upstream_base(template: str, sandbox: Sandbox) -> str:
    """The terminal server's base URL; ``NotFound``-like ``Invalid`` until the operator
    has recorded the sandbox's workspace namespace."""
    namespace = sandbox.status.extra.get(STATUS_NAMESPACE)
    if not isinstance(namespace, str) or not namespace:
        raise BackendUnavailable(
            f'sandbox "{sandbox.name}" has no terminal server yet', code="sandbox-not-ready"
        )
    return template.format(namespace=namespace).rstrip("/")


def _credential(token: str, org: str) -> dict[str, str]:
    """The caller's token and the org it was read for (none: no header)."""
    headers = {"Authorization": f"Bearer {token}"}
    if org:
        headers[ORG_HEADER] = org
    return headers


def _error_from(response: httpx.Response) -> SandboxError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    code = str(body.get("error", "")) if isinstance(body, dict) else ""
    detail = str(body.get("detail", "")) if isinstance(body, dict) else ""
    detail = detail or f"terminal server answered HTTP {response.status_code}"
    match response.status_code:
        case 400:
            return Invalid(detail, code=code or "invalid-request")
        case 404:
            return NotFound(detail, code="terminal-not-found")
        case 409:
            return Conflict(detail, code=code or "conflict")
        case 429:
            return SessionLimit(detail)
        case 401 | 403:
            return NotFound("terminal not found", code="terminal-not-found")
        case _:
            return BackendUnavailable(detail, code="sandbox-pty-unavailable")


class RemoteTerminals:
    def __init__(
        self,
        *,
        store: Store,
        sessions: SessionsService,
        url_template: str,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], datetime] = utcnow,
        share_grants: ShareGrantIssuer | None = None,
    ) -> None:
        """``share_grants``: mints the grants share-link viewers are relayed with
        (``None``: share links are refused with 1011, saying what is missing)."""
        self._store = store
        self._grants = share_grants
        self._sessions = sessions
        self._template = url_template
        self._transport = transport
        self._clock = clock

    async def sandbox_for(self, principal: Principal, sandbox_id: str) -> Sandbox:
        return await self._sessions.get(principal, sandbox_id)

    # ------------------------------------------------------------------ HTTP calls
    async def _call(
        self,
        sandbox: Sandbox,
        method: str,
        path: str,
        *,
        token: str,
        org: str = "",
        json: Any = None,
        refused: SandboxError | None = None,
    ) -> httpx.Response:
        """``refused``: raised instead on a 401/403 (default: terminal not found)."""
        url = upstream_base(self._template, sandbox) + path
        try:
            async with httpx.AsyncClient(transport=self._transport, timeout=TIMEOUT) as client:
                response = await client.request(
                    method, url, json=json, headers=_credential(token, org)
                )
        except httpx.HTTPError as exc:
            log.warning("terminal server unreachable", sandbox=sandbox.name, error=str(exc))
            raise BackendUnavailable(
                "the sandbox's terminal server is unreachable", code="sandbox-pty-unavailable"
            ) from exc
        if response.status_code in (401, 403) and refused is not None:
            raise refused
        if response.status_code >= 400:
            raise _error_from(response)
        return response

    def _sid(self, sandbox: Sandbox, terminal_id: str | None) -> str:
        return quote(terminal_id or sandbox.name, safe="")

    async def wake(self, sandbox: Sandbox) -> None:
        for _ in range(5):
            current = await self._store.get(sandbox.namespace, sandbox.name)
            annotations = {
                **current.metadata.annotations,
                ANNOTATION_WAKE: format_time(self._clock()),
            }
            try:
                await self._store.update(current.with_meta(annotations=annotations))
            except Conflict:
                continue
            log.info("wake requested", sandbox=sandbox.name, namespace=sandbox.namespace)
            return

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
        path = f"/sessions/{self._sid(sandbox, terminal_id)}/resize"
        size = {"rows": rows, "cols": cols}
        await self._call(sandbox, "POST", path, token=token, org=org, json=size)

    async def signal(
        self, sandbox: Sandbox, terminal_id: str | None, name: str, *, token: str, org: str = ""
    ) -> None:
        path = f"/sessions/{self._sid(sandbox, terminal_id)}/signal"
        await self._call(sandbox, "POST", path, token=token, org=org, json={"signal": name})

    async def open_extra(
        self, sandbox: Sandbox, agent: str, *, token: str, org: str = ""
    ) -> dict[str, Any]:
        check_extra_agent(self._sessions.catalogue, agent)
        # the pod's own limit counts every session; the agent's slot is kept here
        live = await self.list_terminals(sandbox, token=token, org=org)
        check_extra_slot(sandbox, sum(1 for t in live if t["id"] != sandbox.name))
        body = {"agent": agent}
        created = await self._call(sandbox, "POST", "/sessions", token=token, org=org, json=body)
        terminal_id = str(created.json()["id"])
        return {
            "id": terminal_id,
            "agent": agent,
            "attachUrl": terminal_attach_path(sandbox.name, terminal_id),
        }

    async def list_terminals(
        self, sandbox: Sandbox, *, token: str, org: str = "", refused: SandboxError | None = None
    ) -> list[dict[str, Any]]:
        """The live terminals; ``token`` a caller's (the terminal server decides again),
        or the sandbox's own MCP token (``list_for_mcp``)."""
        listed = (
            await self._call(
                sandbox, "GET", "/sessions?details=1", token=token, org=org, refused=refused
            )
        ).json()
        details = listed.get("details")
        if not isinstance(details, list):  # a terminal server older than ``details``
            details = []
            for terminal_id in listed["sessions"]:
                path = f"/sessions/{quote(terminal_id)}"
                try:
                    details.append(
                        (
                            await self._call(
                                sandbox, "GET", path, token=token, org=org, refused=refused
                            )
                        ).json()
                    )
                except NotFound:
                    continue  # ended between the two calls
        out = []
        for info in details:
            terminal_id = str(info.get("id", ""))
            if info.get("exited"):
                continue
            url = (
                attach_path(sandbox.name)
                if terminal_id == sandbox.name
                else terminal_attach_path(sandbox.name, terminal_id)
            )
            out.append({"id": terminal_id, "agent": info.get("agent", ""), "attachUrl": url})
        return out

    async def list_for_mcp(self, sandbox: Sandbox, mcp_token: str) -> list[dict[str, Any]]:
        """The live terminals of ``sandbox`` for its own agents' MCP token: the terminal
        server holds that very token (``SANDBOX_MCP_TOKEN``) and lists its sessions for
        it, read only (docs/mcp.md). ``Forbidden`` ``terminals-refused`` when it does not
        hold this one (the operator replaced it, and the pod has not restarted yet)."""
        refused = Forbidden(
            f'the terminal server of sandbox "{sandbox.name}" does not hold this MCP token '
            "(a newer one was issued: the agent's MCP config gets it at its next start)",
            code="terminals-refused",
        )
        if not mcp_token:
            raise refused
        return await self.list_terminals(sandbox, token=mcp_token, refused=refused)

    async def close(self, sandbox: Sandbox, terminal_id: str, *, token: str, org: str = "") -> None:
        path = f"/sessions/{quote(terminal_id, safe='')}"
        await self._call(sandbox, "DELETE", path, token=token, org=org)

    # ------------------------------------------------------------------ WebSocket relay
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
        """Relay ``channel`` to the terminal server's attach route. ``grant`` is the
        control plane's decision; the terminal server decides again from the token (read
        for ``org``), or, for a share link's viewer, from the share grant minted here for
        this attach."""
        if grant.via == SHARE:
            headers = self._share_headers(sandbox, grant)
            if headers is None:
                await channel.close(CLOSE_INTERNAL, SHARES_UNAVAILABLE)
                return
        else:
            headers = _credential(token, org)
        try:
            base = upstream_base(self._template, sandbox)
        except SandboxError as exc:
            await channel.close(CLOSE_INTERNAL, clip_reason(exc.detail))
            return
        url = base.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        url += f"/sessions/{self._sid(sandbox, terminal_id)}/attach"
        passed = {k: channel.query[k] for k in PASSED_QUERY if k in channel.query}
        if passed:
            url += "?" + urlencode(passed)
        offered = (
            [cast(Subprotocol, SUBPROTOCOL_V2)] if channel.protocol == SUBPROTOCOL_V2 else None
        )
        try:
            upstream = await websockets.connect(
                url,
                additional_headers=headers,
                subprotocols=offered,
                max_size=None,
                compression=None,
                open_timeout=TIMEOUT,
            )
        except (OSError, websockets.WebSocketException, TimeoutError) as exc:
            log.warning("terminal server attach failed", sandbox=sandbox.name, error=str(exc))
            await channel.close(CLOSE_INTERNAL, "terminal server unreachable")
            return
        async with upstream:
            await _relay(channel, upstream)

    def _share_headers(self, sandbox: Sandbox, grant: ViewerGrant) -> dict[str, str] | None:
        """The share grant header for this attach; ``None`` without an issuer."""
        if self._grants is None:
            return None
        share = next(
            (s for s in read_shares(sandbox.metadata.annotations) if s.id == grant.share_id),
            None,
        )
        # the share was found a moment ago (SharesService.access); gone since: a grant
        # that ends now, which the pod refuses, as the route's watch will close anyway
        expires = share.expires_at.timestamp() if share is not None else self._clock().timestamp()
        minted = self._grants.mint(
            namespace=sandbox.namespace,
            sandbox=sandbox.name,
            who=grant.who,
            mode=grant.mode,
            share_id=grant.share_id,
            share_expires_at=expires,
        )
        return {SHARE_GRANT_HEADER: minted}


async def _relay(browser: Channel, upstream: websockets.ClientConnection) -> None:
    async def down() -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for frame in upstream:
                if isinstance(frame, bytes):
                    await browser.send_bytes(frame)
                else:
                    await browser.send_text(frame)

    async def up() -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                frame = await browser.receive()
                if frame is None:
                    return
                await upstream.send(frame)

    tasks = [asyncio.create_task(down()), asyncio.create_task(up())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        # also when the relay itself is cancelled (the route ends a revoked or expired
        # share's viewer, or an expired token's): neither direction outlives it
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    code = upstream.close_code or CLOSE_NORMAL
    reason = upstream.close_reason or ""
    await upstream.close()
    await browser.close(code if code not in NOT_SENT else CLOSE_INTERNAL, clip_reason(reason))
