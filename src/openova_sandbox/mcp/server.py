"""The MCP server (issue 14; docs/mcp.md): the tool families behind one per-sandbox token,
on the official SDK's low-level server and its streamable HTTP session manager.

- **Who calls.** Every HTTP request to ``/mcp`` carries a sandbox's MCP token as
  ``Authorization: Bearer`` (never a cookie or a query parameter: a browser cannot be
  made to send it). :class:`McpHttpEdge` verifies it on *every* request
  (``services.mcp_tokens``: signature, audience, purpose and the live sandbox), answers
  401 with the reason otherwise, and hands the SDK the request with the caller
  attached. The SDK binds a session to the token that opened it, so another sandbox's
  token cannot drive that session.
- **What it may call.** The caller's :class:`~openova_sandbox.mcp.capabilities.Grant`:
  its org's plan (operator config, :class:`PlanBook`) narrowed by the sandbox's
  ``spec.capabilities`` as its token carries them. ``tools/list`` shows only what the
  grant allows and what this mode serves (``Tool.available``); a call to anything else
  is a protocol error (``-32602``) naming why.
- **How a call runs.** Its arguments are checked against the tool's JSON schema first
  (a tool error saying what is wrong: the model reads it and corrects itself); the
  handler acts as the sandbox's owner without roles (``McpCaller.principal()``); its
  result is sent as structured content and as JSON text; a ``domain.errors`` error is a
  tool error with its code and detail; anything else is logged and answered as an
  internal error, never a broken connection.
- **Live resources** are pluggable: when ``McpServices.live`` is set
  (``mcp.resources.LiveResources``), ``resources/*`` are served by its
  ``sdk_handlers``, given this server's verified caller (:meth:`McpServer.attach_live`).
- **Built at the first request.** Importing the SDK is ~0.9 s of CPU, which every
  ``sandbox serve`` start paid before its first ``/healthz``. This module imports none
  of it: the SDK's server and session manager are built once, when the first ``/mcp``
  request with a valid token arrives (the import in a worker thread, so the loop keeps
  serving; concurrent first requests wait for the one build), and the live resources'
  handlers are attached before that request is handled. ``start`` only checks that the
  SDK is installed, so a server that cannot serve ``/mcp`` still fails at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from .. import __version__
from ..config import Settings
from ..domain.errors import BackendUnavailable, Invalid, SandboxError, Unauthenticated
from ..services.mcp_tokens import McpClaims, McpTokens
from .capabilities import Grant, Plans
from .tools import all_tools
from .tools.base import McpCaller, McpServices, Tool, ToolContext
from .tools.session import SERVER_KEY

if TYPE_CHECKING:  # the SDK is imported at the first /mcp request (module docstring)
    import mcp_types as types
    from jsonschema.protocols import Validator  # type: ignore[import-untyped]
    from mcp.server.lowlevel.server import Server
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

log = structlog.get_logger(__name__)

SERVER_NAME = "openova-sandbox"
# where the edge leaves the verified caller in the ASGI scope (read by the handlers)
CALLER_SCOPE_KEY = "openova.mcp.caller"
MAX_GRANTS_REMEMBERED = 1024  # tools_for's memo; cleared when full
MAX_TEXT_CHARS = 256 * 1024  # a result's JSON text beyond this is cut (structured stays)

INSTRUCTIONS = (
    "Tools of the OpenOva sandbox this agent runs in. They act for the sandbox's owner "
    "and only within what the sandbox's plan allows: session.whoami says who and what."
)

# the built-in plans (SANDBOX_MCP_PLANS replaces them all); docs/mcp.md explains each
BUILTIN_PLANS: dict[str, tuple[str, ...]] = {
    "sandbox-free": ("session.*", "sandbox.list", "sandbox.terminals", "workspace.*", "usage.*"),
    "sandbox-pro": (
        "session.*",
        "sandbox.*",
        "workspace.*",
        "k8s.read.*",
        "secrets.*",
        "preview.*",
        "usage.*",
    ),
    "sandbox-ent": ("*",),
}


def wire_name(name: str) -> str:
    """A tool's name on the wire: its dotted name (``k8s.read.get``: family and verb, what
    plans and capabilities match) with ``_`` for each dot. Agents hand MCP tools to their
    model as functions, and OpenAI's and Anthropic's APIs accept function names of
    ``[A-Za-z0-9_-]`` only: qwen-code sent ``mcp__openova-sandbox__session.whoami`` and
    OpenAI refuses a request with it (400). The dotted name is the tool's title, and a
    call by it is answered too."""
    return name.replace(".", "_")


@dataclass(frozen=True)
class PlanBook:
    """The operator's plans and which org has which (docs/mcp.md, "Capabilities and
    plans"). An org not named has the default plan. The sandbox's own ``spec.planId``
    is not read: whoever creates a sandbox writes its spec, so it could only widen."""

    plans: Plans
    orgs: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> PlanBook:
        """``SANDBOX_MCP_PLANS``, ``SANDBOX_MCP_ORG_PLANS``, ``SANDBOX_MCP_DEFAULT_PLAN``
        (their JSON shape is checked by Settings); ``Invalid`` naming the variable when a
        plan named is not defined."""
        raw = json.loads(settings.mcp_plans) if settings.mcp_plans.strip() else None
        plans = (
            {str(k): tuple(v) for k, v in raw.items()} if raw is not None else dict(BUILTIN_PLANS)
        )
        orgs = json.loads(settings.mcp_org_plans) if settings.mcp_org_plans.strip() else {}
        default = settings.mcp_default_plan.strip()
        if default not in plans:
            raise Invalid(
                f"SANDBOX_MCP_DEFAULT_PLAN: plan {default!r} is not one of "
                f"{', '.join(sorted(plans)) or 'no plans'}",
                code="invalid-settings",
            )
        unknown = sorted({p for p in orgs.values() if p not in plans})
        if unknown:
            raise Invalid(
                f"SANDBOX_MCP_ORG_PLANS: plan(s) {', '.join(unknown)} are not defined "
                f"(plans: {', '.join(sorted(plans))})",
                code="invalid-settings",
            )
        return cls(Plans(plans=plans, default=default), {str(k): str(v) for k, v in orgs.items()})

    def plan_of(self, org: str) -> str:
        return self.orgs.get(org) or self.plans.default

    def grant(self, org: str, capabilities: Sequence[str]) -> Grant:
        return Grant(plan=self.plans.patterns(self.plan_of(org)), sandbox=tuple(capabilities))


# the resources/* requests and the names of their params' types in ``mcp_types``,
# served by ``McpServices.live`` when set
LIVE_METHODS = {
    "on_list_resources": ("resources/list", "PaginatedRequestParams"),
    "on_list_resource_templates": ("resources/templates/list", "PaginatedRequestParams"),
    "on_read_resource": ("resources/read", "ReadResourceRequestParams"),
    "on_subscribe_resource": ("resources/subscribe", "SubscribeRequestParams"),
    "on_unsubscribe_resource": ("resources/unsubscribe", "UnsubscribeRequestParams"),
}
# what the first /mcp request imports (in a worker thread), and ``start`` finds
SDK_MODULES = (
    "mcp_types",
    "mcp.shared.exceptions",
    "mcp.server.auth.middleware.bearer_auth",
    "mcp.server.auth.provider",
    "mcp.server.lowlevel.server",
    "mcp.server.streamable_http_manager",
)


def _import_sdk() -> None:
    for name in SDK_MODULES:
        importlib.import_module(name)


class McpServer:
    """One MCP server: the tools (and live resources) for every sandbox's token.

    ``start``/``stop`` are a Lifecycle of the app's background parts; ``http`` is the
    ASGI endpoint for ``/mcp``. The SDK's server (``lowlevel``) and session manager
    (``manager``) are ``None`` until the first ``/mcp`` request builds them
    (:meth:`sdk_manager`); the manager then runs in a task of its own until ``stop``.
    """

    def __init__(
        self,
        services: McpServices,
        tokens: McpTokens,
        *,
        plans: PlanBook | None = None,
        tools: Sequence[Tool] | None = None,
        session_idle_timeout: float = 30 * 60,
    ) -> None:
        self.services = services
        self.tokens = tokens
        self.plans = plans or PlanBook.from_settings(services.settings)
        self._tools = {t.name: t for t in (all_tools() if tools is None else tools)}
        # what clients call them: the dotted names with ``_`` (see :func:`wire_name`)
        self._by_wire = {wire_name(name): name for name in self._tools}
        self._validators: dict[str, Validator] = {}
        self._visible: dict[Grant, list[Tool]] = {}
        services.extra.setdefault(SERVER_KEY, self)  # session.whoami: plan and tools
        self._idle_timeout = session_idle_timeout
        self.lowlevel: Server[Any] | None = None
        self.manager: StreamableHTTPSessionManager | None = None
        self.http = McpHttpEdge(self)
        self._live_attached = False
        self._started = False
        self._build_lock = asyncio.Lock()
        self._stopping: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- callers and what they may call --------------------------------------------------

    def caller_for(self, claims: McpClaims, token: str = "") -> McpCaller:
        """Whom a verified token speaks for, with its grant (and the token, which the
        terminals tools relay to the sandbox's own terminal server)."""
        return McpCaller(
            namespace=claims.namespace,
            sandbox=claims.sandbox,
            uid=claims.uid,
            owner_sub=claims.owner_sub,
            owner_email=claims.owner_email,
            org=claims.org,
            grant=self.plans.grant(claims.org, claims.capabilities),
            token=token,
        )

    def tools_for(self, caller: McpCaller) -> list[Tool]:
        """What ``caller`` sees in ``tools/list``: served here, and granted. Remembered
        per grant (matching every tool's name against the patterns was half of a
        ``session.whoami``); a few distinct grants exist (plans x capability lists)."""
        grant = caller.grant
        found = self._visible.get(grant)
        if found is None:
            found = [
                t
                for t in self._tools.values()
                if t.available(self.services) and grant.allows(t.name)
            ]
            if len(self._visible) >= MAX_GRANTS_REMEMBERED:
                self._visible.clear()
            self._visible[grant] = found
        return list(found)

    async def caller_of(self, ctx: Any) -> McpCaller:
        """The verified caller of a request: the one the HTTP edge attached (``sandbox mcp
        --stdio`` is a bridge to the HTTP edge, so every request comes through it)."""
        request = getattr(ctx, "request", None)
        scope = getattr(request, "scope", None)
        if isinstance(scope, Mapping):
            caller = scope.get(CALLER_SCOPE_KEY)
            if isinstance(caller, McpCaller):
                return caller
        import mcp_types as types
        from mcp.shared.exceptions import MCPError

        raise MCPError(types.INVALID_REQUEST, "unauthenticated: no MCP token on this request")

    # --- tools ---------------------------------------------------------------------------

    async def _list_tools(
        self, ctx: Any, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        import mcp_types as types

        caller = await self.caller_of(ctx)
        return types.ListToolsResult(
            tools=[
                types.Tool(
                    name=wire_name(t.name),
                    title=t.name,
                    description=t.description,
                    input_schema=dict(t.input_schema),
                )
                for t in self.tools_for(caller)
            ]
        )

    async def _call_tool(
        self, ctx: Any, params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        caller = await self.caller_of(ctx)
        return await self.call(caller, self.canonical(params.name), params.arguments)

    def canonical(self, name: str) -> str:
        """The tool a client names: its listed name (``session_whoami``) or the dotted
        one (``session.whoami``); an unknown name as it is."""
        return self._by_wire.get(name, name)

    async def call(
        self, caller: McpCaller, name: str, arguments: Mapping[str, Any] | None
    ) -> types.CallToolResult:
        """One tool call for ``caller`` (see the module docstring for the rules)."""
        import mcp_types as types
        from mcp.shared.exceptions import MCPError

        name = self.canonical(name)
        tool = self._tools.get(name)
        if tool is None or not tool.available(self.services):
            raise MCPError(types.INVALID_PARAMS, f"unknown tool {name!r}: see tools/list")
        if not caller.may(name):
            plan = self.plans.plan_of(caller.org)
            narrowed = " and this sandbox's capabilities" if caller.grant.sandbox else ""
            raise MCPError(
                types.INVALID_PARAMS,
                f"tool {name!r} is not allowed for this sandbox (plan {plan!r}{narrowed}): "
                "see tools/list",
            )
        args = dict(arguments or {})
        problem = self._invalid_arguments(tool, args)
        if problem:
            return _error_result("invalid-arguments", f"{name}: {problem}")
        try:
            result = await tool.handler(ToolContext(caller, self.services), args)
        except SandboxError as exc:
            log.info("mcp.tool_error", tool=name, sandbox=caller.sandbox, error=exc.code)
            return _error_result(exc.code, exc.detail or exc.code)
        except Exception:
            log.exception("mcp.tool_failed", tool=name, sandbox=caller.sandbox)
            return _error_result(
                "internal-error", f"{name} failed unexpectedly; see the server log"
            )
        # the request's access line is at info already; this one says which tool
        log.debug("mcp.tool_called", tool=name, sandbox=caller.sandbox, namespace=caller.namespace)
        return _result(result)

    def _invalid_arguments(self, tool: Tool, args: Mapping[str, Any]) -> str:
        """What is wrong with ``args`` for ``tool``'s schema ('': nothing)."""
        validator = self._validators.get(tool.name)
        if validator is None:
            from jsonschema.validators import validator_for  # type: ignore[import-untyped]

            schema = dict(tool.input_schema)
            cls = validator_for(schema)
            validator = cls(schema)
            self._validators[tool.name] = validator
        errors = sorted(validator.iter_errors(args), key=lambda e: list(e.path))
        if not errors:
            return ""
        said = []
        for error in errors[:5]:
            where = "/".join(str(p) for p in error.path)
            said.append(f"{where}: {error.message}" if where else error.message)
        return "; ".join(said)

    # --- live resources (mcp.resources) -----------------------------------------------

    def attach_live(self) -> None:
        """Serve ``resources/*`` from ``services.live`` (``mcp.resources.LiveResources``)
        when it is set, with this server's verified caller for each request. Called at
        start, so the composition may set ``live`` after building the server."""
        live = self.services.live
        if live is None or self._live_attached:
            return
        from .resources import sdk_handlers

        handlers = sdk_handlers(live, self.caller_of)
        subscribe = handlers.get("on_subscribe_resource")
        if subscribe is not None and callable(getattr(live, "forget", None)):
            handlers["on_subscribe_resource"] = _forgotten_when_closed(live, subscribe)
        import mcp_types as types

        lowlevel = self.lowlevel
        if lowlevel is None:  # attached when the first request builds the SDK's server
            return
        for option, (method, params_type) in LIVE_METHODS.items():
            handler = handlers.get(option)
            if handler is not None:
                lowlevel.add_request_handler(method, getattr(types, params_type), handler)
        self._live_attached = True

    # --- lifecycle ---------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._started

    async def start(self) -> None:
        """Ready to serve ``/mcp``; the SDK is found here and imported at the first
        request (the module docstring says why)."""
        if self._started:
            return
        missing = [n for n in ("mcp", "mcp_types") if importlib.util.find_spec(n) is None]
        if missing:
            raise BackendUnavailable(
                f"the MCP SDK is not installed ({', '.join(missing)}): reinstall openova-sandbox",
                code="mcp-unavailable",
            )
        self._loop = asyncio.get_running_loop()
        self._build_lock = asyncio.Lock()  # of this loop (a restart may run on another)
        self._started = True

    async def sdk_manager(self) -> StreamableHTTPSessionManager:
        """The SDK's session manager, built and running: by the first caller, once (the
        others wait for it). ``BackendUnavailable`` once stopped, or when it cannot be
        built (the reason logged)."""
        manager = self.manager
        if manager is not None and self._started:
            return manager
        async with self._build_lock:
            if not self._started:
                raise BackendUnavailable("the MCP server is not running", code="mcp-unavailable")
            if self.manager is None:
                try:
                    await self._build()
                except Exception as exc:
                    log.exception("mcp.build_failed")
                    raise BackendUnavailable(
                        f"the MCP server could not be built: {exc}", code="mcp-unavailable"
                    ) from exc
            assert self.manager is not None
            return self.manager

    async def _build(self) -> None:
        await asyncio.to_thread(_import_sdk)  # the ~0.9 s of CPU, off the loop
        from mcp.server.lowlevel.server import Server
        from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

        lowlevel: Server[Any] = Server(
            SERVER_NAME,
            version=__version__,
            instructions=INSTRUCTIONS,
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
        )
        # answers to POSTs as plain JSON, not a one-event stream: half the CPU of a call
        # (bench/mcp_calls.py); notifications (resources/updated) still travel on the
        # session's GET stream, and no tool asks the client anything mid-call
        manager = StreamableHTTPSessionManager(
            app=lowlevel, session_idle_timeout=self._idle_timeout, json_response=True
        )
        self.lowlevel = lowlevel
        self.attach_live()  # before the first request is handled: its subscriptions work
        # the manager's task group lives in a task of its own (not the request's, which
        # ends first; ``stop`` ends it from another task)
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._run(manager, started, self._stopping))
        await started
        self.manager = manager

    @staticmethod
    async def _run(
        manager: StreamableHTTPSessionManager,
        started: asyncio.Future[None],
        stopping: asyncio.Event,
    ) -> None:
        try:
            async with manager.run():
                started.set_result(None)
                await stopping.wait()
        except BaseException as exc:
            if not started.done():
                started.set_exception(exc)
                return
            raise

    async def stop(self) -> None:
        async with self._build_lock:  # a build under way finishes first, then ends
            self._started = False
            task, self._task = self._task, None
            if self._stopping is not None:
                self._stopping.set()
            if task is not None:
                await task
            # a start after this builds afresh (a session manager runs once)
            self.manager, self.lowlevel, self._live_attached = None, None, False

    def end_streams(self) -> None:
        """End every open session (their event streams included): the server is about
        to stop and waits for open responses first (``api.app`` shutdown hooks). Runs
        on the server's loop."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        # the SDK keeps its sessions' transports here and has no public "end all"
        if self.manager is None:  # never built: no session to end
            return
        transports = list(getattr(self.manager, "_server_instances", {}).values())
        for transport in transports:
            loop.create_task(transport.terminate())


def _forgotten_when_closed(live: Any, subscribe: Any) -> Any:
    """``subscribe``, and the subscriber forgotten (``live.forget``) when its connection
    ends (a 2025 session closed or timed out; a 2026 request answered): a session that
    went away without a word must not hold its subscriptions, and its slot among
    ``live``'s bounded subscribers, for ever. The SDK unwinds each connection's
    ``exit_stack`` when it ends; the request's ``ServerSession`` does not expose its
    connection publicly (hence the private attribute, checked). The subscriber is the
    one ``live`` keyed it by (``mcp.resources.subscriber_of``)."""

    from .resources import subscriber_of

    async def handler(ctx: Any, params: Any) -> Any:
        result = await subscribe(ctx, params)
        connection = getattr(ctx.session, "_connection", None)
        stack = getattr(connection, "exit_stack", None)
        if isinstance(stack, contextlib.AsyncExitStack):
            stack.callback(live.forget, subscriber_of(ctx))
        else:
            log.warning("mcp.subscriber_not_tracked", reason="no connection exit stack")
        return result

    return handler


class McpHttpEdge:
    """``/mcp``: the token checked on every request, then the SDK's session manager."""

    def __init__(self, server: McpServer) -> None:
        self.server = server

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        scope["route"] = _ROUTE  # the access log's and metrics' route template
        if scope["type"] != "http":
            await _refuse(send, 404, "not-found", "the MCP endpoint speaks HTTP only")
            return
        token = _bearer(scope)
        if not token:
            await _refuse(
                send,
                401,
                "unauthenticated",
                "an MCP token is required: Authorization: Bearer <the sandbox's MCP token> "
                "(written into each agent's MCP config when it starts)",
            )
            return
        try:
            claims = await self.server.tokens.verify(token)
        except Unauthenticated as exc:
            log.info("mcp.rejected", reason=exc.detail)
            await _refuse(send, 401, "unauthenticated", exc.detail or "invalid MCP token")
            return
        except BackendUnavailable as exc:
            await _refuse(send, 503, exc.code, exc.detail, retry_after=True)
            return
        try:
            manager = await self.server.sdk_manager()  # built by the first request
        except BackendUnavailable as exc:
            await _refuse(send, 503, exc.code, exc.detail, retry_after=True)
            return
        from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
        from mcp.server.auth.provider import AccessToken

        caller = self.server.caller_for(claims, token)
        scope = dict(scope)
        scope[CALLER_SCOPE_KEY] = caller
        # the SDK binds each session to the credential that opened it (by these three)
        scope["user"] = AuthenticatedUser(
            AccessToken(
                token=token,
                client_id=f"{claims.namespace}/{claims.sandbox}/{claims.uid}",
                scopes=[],
                expires_at=int(claims.expires_at) if claims.expires_at else None,
                subject=claims.owner_sub or claims.owner_email,
                claims={"iss": self.server.tokens.issuer_id},
            )
        )
        await manager.handle_request(scope, receive, send)


# JSON-RPC codes (the implementation-defined server range) of the edge's refusals
REFUSAL_CODES = {401: -32001, 404: -32601, 503: -32000}


@dataclass(frozen=True)
class _Template:
    path: str


_ROUTE = _Template("/mcp")


def _bearer(scope: Mapping[str, Any]) -> str:
    for key, value in scope.get("headers") or ():
        if key == b"authorization":
            text = value.decode("latin-1").strip()
            scheme, _, rest = text.partition(" ")
            if scheme.lower() == "bearer":
                found: str = rest.strip()
                return found
            return ""
    return ""


async def _refuse(
    send: Any, status: int, code: str, detail: str, retry_after: bool = False
) -> None:
    # a JSON-RPC error (no id: the request was not read), which MCP clients surface
    # with its message, and the API's error code and detail under ``data``
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": None,
            "error": {
                "code": REFUSAL_CODES.get(status, -32000),
                "message": f"{code}: {detail}",
                "data": {"error": code, "detail": detail},
            },
        }
    ).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if status == 401:
        said = detail.replace('"', "'")
        headers.append(
            (
                b"www-authenticate",
                f'Bearer error="invalid_token", error_description="{said}"'.encode(),
            )
        )
    if retry_after:
        headers.append((b"retry-after", b"5"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _json_text(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))
    if len(text) > MAX_TEXT_CHARS:
        return text[:MAX_TEXT_CHARS] + "… (cut; the structured content is whole)"
    return text


def _result(value: Any) -> types.CallToolResult:
    import mcp_types as types

    structured = value if isinstance(value, dict) else {"result": value}
    return types.CallToolResult(
        content=[types.TextContent(text=_json_text(value))], structured_content=structured
    )


def _error_result(code: str, detail: str) -> types.CallToolResult:
    import mcp_types as types

    return types.CallToolResult(
        content=[types.TextContent(text=f"{code}: {detail}")],
        structured_content={"error": code, "detail": detail},
        is_error=True,
    )
