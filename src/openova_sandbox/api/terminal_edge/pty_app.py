"""The terminal server's HTTP and WebSocket routes (terminal-protocol.md, exactly).

``create_pty_app`` serves the sessions of one sandbox from a :class:`TerminalRegistry`.
Token validation is injected (``authenticate`` turns a token into a Principal,
``authorize`` says whether, and as whom — ``"owner"`` or ``"admin"`` — that caller may
use this sandbox). Token extraction (Bearer header, ``?access_token=``, the
``catalyst_session`` cookie, signed or not), the ``Origin`` rule and the HTTP status of
a domain error are the control plane's own (:mod:`openova_sandbox.api.edge`).

The app is framework-free: handlers read a :class:`Connection` (headers, query, cookies,
path parameters) and return a :class:`Reply`; the attach handler gets an
:class:`Upgrade` it accepts (a ``Channel`` for :mod:`.attach`'s pumps) or denies.
:mod:`.pty_server` serves it over HTTP/1.1 and WebSocket in the pod, without an ASGI
stack (docs/terminal.md, "The pty-server's own HTTP server").

Bodies are checked by hand with pydantic's rules and messages (the pod imports no
pydantic): every malformed body is a 400 with a detail naming the field, never a 500.
WebSocket refusals follow the spec: bad or missing token, or a foreign ``Origin``, close
with 1008 after the upgrade. A client offering the ``sandbox.v2`` subprotocol is
accepted with it (:mod:`.attach`).

Share links (Kubernetes mode): the control plane relays a share link's viewer with an
``X-Sandbox-Share-Grant`` header instead of a token. ``share_grants`` (the pod's
:class:`~openova_sandbox.auth.share_grant.ShareGrantVerifier`) turns it into a
:class:`~openova_sandbox.domain.share_grant.ShareGrant` or refuses it (1008
``share-grant-invalid``); the viewer is served in the grant's mode (``read``: input
dropped, resizes ignored) and closed 1008 ``share-expired`` at the share's expiry. A
grant opens the attach route only, never the REST routes.

The sandbox's own MCP token (``listing_token``: ``SANDBOX_MCP_TOKEN``, which the MCP
server relays for its terminals tools) opens ``GET /sessions`` and ``GET
/sessions/{id}`` only (docs/mcp.md, "Terminals in Kubernetes mode").
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from ...auth.claims import requested_org
from ...config import check_int, check_str, clamp_ring_bytes
from ...domain.access import SHARE
from ...domain.errors import (
    UNSUPPORTED_SIGNAL,
    Forbidden,
    Invalid,
    NotFound,
    SandboxError,
    SessionLimit,
    Unauthenticated,
)
from ...domain.principal import Principal
from ...domain.share_grant import SHARE_GRANT_HEADER, ShareGrant
from ...domain.terminal_wire import (
    CLOSE_INTERNAL,
    CLOSE_POLICY,
    CLOSE_TRY_LATER,
    REASON_ORIGIN,
    REASON_SHARE_EXPIRED,
    SIGNAL_HINT,
    SUBPROTOCOL_V2,
    signal_number,
)
from ...services.terminal_port import Channel, ViewerGrant, refuse
from ...terminal.registry import SessionRequest, TerminalRegistry
from ...terminal.session import rfc3339
from ..edge import Connection, origin_allowed, request_token, status_of
from .attach import DEFAULT_WINDOW, log_watch, serve_viewer

if TYPE_CHECKING:
    from ...terminal.metrics import TerminalMetrics
    from ...terminal.preview_runner import PodPreviews

log = structlog.get_logger(__name__)

Authorize = Callable[[Principal], str | None]
"""``"owner"``/``"admin"`` when the caller may use the sandbox, else ``None``."""
VerifyGrant = Callable[[str], ShareGrant]
"""A share grant's claims, or ``Unauthenticated`` (``share-grant-invalid``)."""

JSON_TYPE = "application/json"
TEXT_TYPE = "text/plain; charset=utf-8"


# ------------------------------------------------------------------ requests, replies
class Request(Connection, Protocol):
    """An HTTP request as a handler reads it."""

    @property
    def method(self) -> str: ...

    @property
    def path_params(self) -> Mapping[str, str]: ...

    @property
    def body(self) -> bytes: ...


class Upgrade(Connection, Protocol):
    """A WebSocket upgrade request, not answered yet."""

    @property
    def path_params(self) -> Mapping[str, str]: ...

    @property
    def subprotocols(self) -> Sequence[str]: ...

    async def accept(self, subprotocol: str | None) -> Channel:
        """Complete the handshake (with ``subprotocol``): the connection's channel."""

    async def deny(self, reply: Reply) -> None:
        """Answer the upgrade with a plain HTTP response instead."""


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


def json_reply(content: Any, status: int = 200) -> Reply:
    body = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return Reply(status, body.encode(), JSON_TYPE)


def text_reply(text: str, status: int = 200, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    return Reply(status, text.encode(), TEXT_TYPE, headers)


def error_response(exc: SandboxError) -> Reply:
    status = status_of(exc) or 500
    if status == 401:
        # the sessions API's rule: a bare 401, the reason goes to the log only
        log.info("terminal.auth.rejected", reason=exc.detail or exc.code)
        return json_reply({"error": "unauthenticated"}, 401)
    return json_reply({"error": exc.code, "detail": exc.detail or exc.code}, status)


# ------------------------------------------------------------------ request bodies
class _Problems:
    """A body's problems, as pydantic worded them: ``<field>: <message>``, in field order."""

    def __init__(self, payload: dict[str, Any]) -> None:
        self.payload = payload
        self.found: list[str] = []

    def get(self, name: str, alias: str | None = None) -> tuple[str, Any] | None:
        """The key the field was given under (alias first) and its value, if given."""
        for key in (alias, name):
            if key is not None and key in self.payload:
                return key, self.payload[key]
        return None

    def check(self, where: str, value: Any, convert: Callable[[Any], Any]) -> Any:
        try:
            return convert(value)
        except ValueError as exc:
            self.found.append(f"{where}: {exc}")
            return None

    def missing(self, where: str) -> None:
        self.found.append(f"{where}: Field required")

    def raise_any(self) -> None:
        if self.found:
            raise Invalid("; ".join(self.found), code="invalid-request")


def _optional_str(value: Any) -> str | None:
    return None if value is None else check_str(value)


def _size_of(low: int, high: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        number = check_int(value)
        if number < low:
            raise ValueError(f"Input should be greater than or equal to {low}")
        if number > high:
            raise ValueError(f"Input should be less than or equal to {high}")
        return number

    return convert


_ROWS_COLS = _size_of(1, 1000)


def _optional_int(value: Any) -> int | None:
    return None if value is None else check_int(value)


def _strings(problems: _Problems, where: str, value: Any) -> list[str]:
    if not isinstance(value, list | tuple):
        problems.found.append(f"{where}: Input should be a valid list")
        return []
    for i, item in enumerate(value):
        problems.check(f"{where}.{i}", item, check_str)
    return list(value)


def _string_map(problems: _Problems, where: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        problems.found.append(f"{where}: Input should be a valid dictionary")
        return {}
    for key, item in value.items():
        problems.check(f"{where}.{key}", item, check_str)
    return dict(value)


@dataclass(frozen=True)
class CreateBody:
    agent: str | None = None
    extra_args: tuple[str, ...] = ()
    env_map: Mapping[str, str] | None = None
    command: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    cwd: str | None = None
    rows: int = 24
    cols: int = 80
    ring_bytes: int | None = None


def _object(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise Invalid("body must be a JSON object", code="invalid-request")
    return payload


def parse_create(payload: Any) -> CreateBody:
    """``POST /sessions``: unknown keys ignored, camelCase names or snake_case ones."""
    p = _Problems(_object(payload))
    values: dict[str, Any] = {}
    for name, alias, read in (
        ("agent", None, lambda w, v: p.check(w, v, _optional_str)),
        ("extra_args", "extraArgs", lambda w, v: tuple(_strings(p, w, v))),
        ("env_map", "envMap", lambda w, v: _string_map(p, w, v)),
        ("command", None, lambda w, v: tuple(_strings(p, w, v))),
        ("env", None, lambda w, v: tuple(_strings(p, w, v))),
        ("cwd", None, lambda w, v: p.check(w, v, _optional_str)),
        ("rows", None, lambda w, v: p.check(w, v, _ROWS_COLS)),
        ("cols", None, lambda w, v: p.check(w, v, _ROWS_COLS)),
        ("ring_bytes", "ringBytes", lambda w, v: p.check(w, v, _optional_int)),
    ):
        given = p.get(name, alias)
        if given is not None:
            values[name] = read(*given)
    p.raise_any()
    return CreateBody(**values)


def parse_resize(payload: Any) -> tuple[int, int]:
    p = _Problems(_object(payload))
    size = []
    for name in ("rows", "cols"):
        given = p.get(name)
        if given is None:
            p.missing(name)
        else:
            size.append(p.check(name, given[1], _ROWS_COLS))
    p.raise_any()
    return size[0], size[1]


def parse_signal(payload: Any) -> str:
    p = _Problems(_object(payload))
    given = p.get("signal")
    if given is None:
        p.missing("signal")
        p.raise_any()
    name = p.check("signal", given[1] if given else None, check_str)
    p.raise_any()
    return str(name)


def _json(raw: bytes) -> Any:
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # nested too deep: 400
        raise Invalid(f"body is not valid JSON: {exc}", code="invalid-request") from exc


def _request_from(body: CreateBody, default_ring: int) -> SessionRequest:
    env: dict[str, str] = {}
    for item in body.env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise Invalid(f"env entry {item!r} is not of the form K=V", code="invalid-env")
        env[name] = value
    env.update(body.env_map or {})
    if body.agent is not None and not body.agent.strip():
        raise Invalid("agent must not be empty", code="invalid-agent")
    return SessionRequest(
        agent=body.agent.strip() if body.agent else None,
        extra_args=tuple(body.extra_args),
        command=tuple(body.command),
        env=env,
        cwd=body.cwd or None,
        rows=body.rows,
        cols=body.cols,
        ring_bytes=clamp_ring_bytes(body.ring_bytes, default_ring)
        if body.ring_bytes is not None
        else None,
    )


# ------------------------------------------------------------------ metrics
class LazyMetrics:
    """The server's Prometheus metrics, built at the first scrape (prometheus_client is
    ~1.4 MiB an idle pod does not need); WebSocket viewers are counted from the start."""

    def __init__(self, registry: TerminalRegistry, sandbox_id: str) -> None:
        self._registry = registry
        self._sandbox_id = sandbox_id
        self._metrics: TerminalMetrics | None = None
        self.websocket_connections = 0

    def connection_opened(self) -> None:
        self.websocket_connections += 1

    def connection_closed(self) -> None:
        self.websocket_connections -= 1

    def render(self) -> tuple[bytes, str]:
        """The exposition and its content type (prometheus_client's)."""
        from ...terminal.metrics import CONTENT_TYPE_LATEST, TerminalMetrics

        if self._metrics is None:
            self._metrics = TerminalMetrics(self._registry, sandbox_id=self._sandbox_id)
        self._metrics.websocket_connections = self.websocket_connections
        return self._metrics.render(), CONTENT_TYPE_LATEST


# ------------------------------------------------------------------ routes
Handler = Callable[[Request], Awaitable[Reply]]
_PARAM = re.compile(r"{(\w+)}")


@dataclass(frozen=True)
class Route:
    path: str
    methods: Mapping[str, Handler]
    pattern: re.Pattern[str]


def _route(path: str, methods: Mapping[str, Handler]) -> Route:
    regex = "^" + _PARAM.sub(lambda m: f"(?P<{m.group(1)}>[^/]+)", path) + "$"
    allowed = dict(methods)
    if "GET" in allowed and "HEAD" not in allowed:  # as Starlette: GET answers HEAD
        allowed["HEAD"] = allowed["GET"]
    return Route(path, allowed, re.compile(regex))


class PtyApp:
    """The routes of one sandbox's terminal server (terminal-protocol.md)."""

    ATTACH = re.compile(r"^/sessions/(?P<id>[^/]+)/attach$")

    def __init__(
        self,
        *,
        registry: TerminalRegistry,
        sandbox_id: str,
        authenticate: Callable[[str], Awaitable[Principal]],
        authorize: Authorize,
        public_origin: str | None = None,
        cookie_secret: str = "",
        close_registry_on_shutdown: bool = True,
        probe_token: str = "",
        viewer_window: int = DEFAULT_WINDOW,
        share_grants: VerifyGrant | None = None,
        listing_token: str = "",
    ) -> None:
        self.registry = registry
        self.sandbox_id = sandbox_id
        self._authenticate = authenticate
        self._authorize = authorize
        self._public = public_origin or ""
        self._cookie_secret = cookie_secret
        self._close_registry = close_registry_on_shutdown
        self._probe_token = probe_token
        self._window = viewer_window
        self._share_grants = share_grants
        self._listing_token = listing_token
        self.metrics = LazyMetrics(registry, sandbox_id)
        self._pod_previews: PodPreviews | None = None  # made at the first preview request
        every = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH")
        self.routes = (
            _route("/healthz", dict.fromkeys(every, self._healthz)),
            _route("/metrics", {"GET": self._metrics_route}),
            _route("/idle", {"GET": self._probe_or_guarded(self._idle)}),
            # the operator's alone (its probe token; never a user's): the previews it
            # wants running in this pod (Kubernetes mode, docs/kubernetes.md "Previews")
            _route("/previews", {"GET": self._probe_only(self._previews_list)}),
            _route(
                "/previews/{port}",
                {
                    "PUT": self._probe_only(self._preview_put),
                    "DELETE": self._probe_only(self._preview_delete),
                },
            ),
            _route(
                "/sessions",
                {"POST": self._guarded(self._create), "GET": self._listing(self._list)},
            ),
            _route(
                "/sessions/{id}",
                {"GET": self._listing(self._get), "DELETE": self._guarded(self._delete)},
            ),
            _route("/sessions/{id}/resize", {"POST": self._guarded(self._resize)}),
            _route("/sessions/{id}/signal", {"POST": self._guarded(self._signal)}),
        )

    # -------------------------------------------------------------- dispatch
    def match(self, path: str) -> tuple[Route, dict[str, str]] | None:
        for route in self.routes:
            found = route.pattern.match(path)
            if found is not None:
                return route, found.groupdict()
        return None

    def attach_params(self, path: str) -> dict[str, str] | None:
        """The path parameters when ``path`` is the attach route (WebSocket only)."""
        found = self.ATTACH.match(path)
        return found.groupdict() if found else None

    async def shutdown(self) -> None:
        if self._pod_previews is not None:
            await self._pod_previews.close()
        if self._close_registry:
            await self.registry.close()

    # -------------------------------------------------------------- auth
    async def _caller_of(self, conn: Connection) -> tuple[Principal, str]:
        found = request_token(conn, self._cookie_secret)
        if found is None:
            raise Unauthenticated("a bearer token, access_token or session cookie is required")
        with requested_org(conn.headers):  # the org the control plane chose, relayed
            principal = await self._authenticate(found.token)
        via = self._authorize(principal)
        if via is None:
            raise Forbidden("the caller neither owns this sandbox nor administers its org")
        return principal, via

    async def _viewer_of(self, conn: Connection) -> tuple[Principal, ViewerGrant, float | None]:
        """Who attaches, with which rights, and until when (a share's expiry)."""
        presented = conn.headers.get(SHARE_GRANT_HEADER)
        if presented is None:
            principal, via = await self._caller_of(conn)
            return principal, ViewerGrant(who=principal.email or principal.sub, via=via), None
        if self._share_grants is None:
            raise Unauthenticated(
                "this terminal server has no share grant key", code="share-grant-invalid"
            )
        shared = self._share_grants(presented)
        email = shared.who if "@" in shared.who else ""
        viewer = ViewerGrant(who=shared.who, mode=shared.mode, via=SHARE, share_id=shared.share_id)
        return Principal(sub=shared.who, email=email), viewer, shared.share_expires_at

    def _guarded(self, handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Reply:
            try:
                await self._caller_of(request)
                return await handler(request)
            except SandboxError as exc:
                return error_response(exc)

        return endpoint

    def _probe_or_guarded(self, handler: Handler) -> Handler:
        checked = self._guarded(handler)

        async def endpoint(request: Request) -> Reply:
            bearer = (request.headers.get("authorization") or "").partition(" ")
            offered = bearer[2].strip() if bearer[0].lower() == "bearer" else ""
            probe = self._probe_token
            if probe and offered and hmac.compare_digest(offered, probe):
                return await handler(request)
            return await checked(request)

        return endpoint

    def _listing(self, handler: Handler) -> Handler:
        """The read-only listing (``GET /sessions``, ``GET /sessions/{id}``): also open
        to this sandbox's own MCP token (``listing_token``, the exact one the pod holds,
        compared in constant time, from the ``Authorization`` header only), which the
        MCP server relays for ``sandbox.terminals``; that token opens nothing else."""
        checked = self._guarded(handler)

        async def endpoint(request: Request) -> Reply:
            bearer = (request.headers.get("authorization") or "").partition(" ")
            offered = bearer[2].strip() if bearer[0].lower() == "bearer" else ""
            listing = self._listing_token
            if listing and offered and hmac.compare_digest(offered.encode(), listing.encode()):
                try:
                    return await handler(request)
                except SandboxError as exc:
                    return error_response(exc)
            return await checked(request)

        return endpoint

    def _probe_only(self, handler: Handler) -> Handler:
        """Routes of the operator's alone: its probe token opens them, nothing else does
        (a user's token, a cookie or a share grant is a bare 401, as no token is)."""

        async def endpoint(request: Request) -> Reply:
            bearer = (request.headers.get("authorization") or "").partition(" ")
            offered = bearer[2].strip() if bearer[0].lower() == "bearer" else ""
            probe = self._probe_token
            if not (probe and offered and hmac.compare_digest(offered, probe)):
                return error_response(Unauthenticated("the operator's probe token is required"))
            try:
                return await handler(request)
            except SandboxError as exc:
                return error_response(exc)

        return endpoint

    # -------------------------------------------------------------- previews
    def _previews(self) -> PodPreviews:
        if self._pod_previews is None:
            # imported at the first use: an idle pod does not load the runner
            from ...terminal.preview_runner import PodPreviews

            self._pod_previews = PodPreviews(self.registry, self.sandbox_id)
        return self._pod_previews

    async def _previews_list(self, _: Request) -> Reply:
        return json_reply({"previews": self._previews().list()})

    async def _preview_put(self, request: Request) -> Reply:
        from ...terminal.preview_runner import check_port, parse_run

        port = check_port(request.path_params["port"])
        run_id, command = parse_run(_json(request.body))
        return json_reply(await self._previews().put(port, run_id, command))

    async def _preview_delete(self, request: Request) -> Reply:
        from ...terminal.preview_runner import check_port

        port = check_port(request.path_params["port"])
        return json_reply(await self._previews().delete(port))

    # -------------------------------------------------------------- REST
    async def _healthz(self, _: Request) -> Reply:
        return text_reply("ok")

    async def _metrics_route(self, _: Request) -> Reply:
        body, content_type = self.metrics.render()
        return Reply(200, body, content_type)

    async def _idle(self, _: Request) -> Reply:
        info = self.registry.idle(self.sandbox_id)
        return json_reply(
            {
                "lastActivityAt": rfc3339(info.last_activity_at),
                "activeSessions": info.active_sessions,
                "attachedViewers": info.attached_viewers,
                "agentBusy": info.agent_busy,
                "activity": dict(info.activity),  # busy | waiting | idle, by terminal
            }
        )

    async def _create(self, request: Request) -> Reply:
        body = parse_create(_json(request.body))
        session = self.registry.create(
            self.sandbox_id, _request_from(body, self.registry.ring_bytes)
        )
        return json_reply({"id": session.id, "createdAt": rfc3339(session.created_at)}, 201)

    async def _list(self, request: Request) -> Reply:
        """``{"sessions": [id, ...]}`` as the spec says; with ``?details=1`` also
        ``"details"``: each session's ``GET /sessions/{id}`` body, in the same order, so
        a caller that needs them (the control plane's terminal list) makes one call, not
        one per session. Any other value of ``details`` is a 400."""
        sessions = self.registry.list(self.sandbox_id)
        body: dict[str, object] = {"sessions": [s.id for s in sessions]}
        details = request.query_params.get("details")
        if details is not None:
            if details not in ("0", "1"):
                raise Invalid(
                    f'details must be "0" or "1", not {details!r}', code="invalid-request"
                )
            if details == "1":
                body["details"] = [s.info() for s in sessions]
        return json_reply(body)

    async def _get(self, request: Request) -> Reply:
        session = self.registry.get(self.sandbox_id, request.path_params["id"])
        return json_reply(session.info())

    async def _delete(self, request: Request) -> Reply:
        await self.registry.delete(self.sandbox_id, request.path_params["id"])
        return Reply(204)

    async def _resize(self, request: Request) -> Reply:
        session = self.registry.get(self.sandbox_id, request.path_params["id"])
        rows, cols = parse_resize(_json(request.body))
        session.resize(rows, cols)
        return Reply(204)

    async def _signal(self, request: Request) -> Reply:
        session = self.registry.get(self.sandbox_id, request.path_params["id"])
        name = parse_signal(_json(request.body))
        sig = signal_number(name)
        if sig is None:
            raise Invalid(f"unsupported signal {name!r}: {SIGNAL_HINT}", code=UNSUPPORTED_SIGNAL)
        session.signal(sig)
        return Reply(204)

    # -------------------------------------------------------------- attach
    async def attach(self, upgrade: Upgrade) -> None:
        """``/sessions/{id}/attach``: checks come before the handshake is answered; an
        unknown session without a spec is a plain HTTP 404."""
        if not origin_allowed(upgrade, self._public):
            log.info("terminal.attach.refused", reason="origin")
            await self._refused(upgrade, CLOSE_POLICY, REASON_ORIGIN)
            return
        try:
            principal, grant, until = await self._viewer_of(upgrade)
        except SandboxError as exc:
            log.info("terminal.attach.refused", reason=exc.code)
            await self._refused(upgrade, CLOSE_POLICY, exc.code)
            return
        session_id = upgrade.path_params["id"]
        agent = upgrade.query_params.get("agent") or None
        try:
            session = self.registry.open(self.sandbox_id, session_id, agent=agent)
        except Invalid as exc:
            if exc.code == "missing-spec":
                await upgrade.deny(error_response(NotFound(exc.detail)))
                return
            # an agent that is not in the catalogue or lacks its env cannot be spawned
            await self._refused(upgrade, CLOSE_INTERNAL, exc.detail)
            return
        except SessionLimit as exc:
            await self._refused(upgrade, CLOSE_TRY_LATER, exc.detail)
            return
        except SandboxError as exc:
            await self._refused(upgrade, CLOSE_INTERNAL, exc.detail)
            return
        channel = await self._accept(upgrade)
        log_watch(principal, self.sandbox_id, grant, terminal=session_id)
        work = serve_viewer(channel, session, grant, metrics=self.metrics, window=self._window)
        if until is None:
            await work
            return
        # a share's viewer ends at the share's expiry here too, whatever the relay does
        task = asyncio.ensure_future(work)
        done, _ = await asyncio.wait({task}, timeout=max(0.0, until - time.time()))
        if task in done:
            task.result()
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await channel.close(CLOSE_POLICY, REASON_SHARE_EXPIRED)

    @staticmethod
    async def _accept(upgrade: Upgrade) -> Channel:
        """Accept with ``sandbox.v2`` when the client offered it, else raw."""
        v2 = SUBPROTOCOL_V2 in upgrade.subprotocols
        return await upgrade.accept(SUBPROTOCOL_V2 if v2 else None)

    async def _refused(self, upgrade: Upgrade, code: int, message: str) -> None:
        """Accepted before the close, so a refusal is a close frame the client can read,
        not a bare HTTP 403."""
        await refuse(await self._accept(upgrade), code, message)


def create_pty_app(
    *,
    registry: TerminalRegistry,
    sandbox_id: str,
    authenticate: Callable[[str], Awaitable[Principal]],
    authorize: Authorize,
    public_origin: str | None = None,
    cookie_secret: str = "",
    close_registry_on_shutdown: bool = True,
    probe_token: str = "",
    viewer_window: int = DEFAULT_WINDOW,
    share_grants: VerifyGrant | None = None,
    listing_token: str = "",
) -> PtyApp:
    """The pty-server app for the sessions of ``sandbox_id`` in ``registry``.

    ``cookie_secret`` verifies signed session cookies (without it only bare ones are
    read). ``probe_token``, when set, is a bearer secret that opens ``/idle`` and the
    operator-only ``/previews`` routes, nothing else: the operator, which holds no user
    token, probes idleness and runs the sandbox's previews with it (no user token opens
    ``/previews``). ``share_grants``
    verifies the share grants the control plane relays share-link viewers with
    (``None``: such attaches are refused). ``listing_token``: the sandbox's own MCP
    token (``SANDBOX_MCP_TOKEN``), which opens ``GET /sessions`` and ``GET
    /sessions/{id}`` and nothing else (docs/mcp.md). Serve it with :mod:`.pty_server`.
    """
    return PtyApp(
        registry=registry,
        sandbox_id=sandbox_id,
        authenticate=authenticate,
        authorize=authorize,
        public_origin=public_origin,
        cookie_secret=cookie_secret,
        close_registry_on_shutdown=close_registry_on_shutdown,
        probe_token=probe_token,
        viewer_window=viewer_window,
        share_grants=share_grants,
        listing_token=listing_token,
    )
