"""The MCP live resources (issue 14, Build item 4): what an agent can read about its
sandbox and its owner's other sandboxes, and subscribe to.

==========================================  =============================================
``openova://sandbox/{id}``                  the sandbox as the API shows it (phase,
                                            conditions, spec); updated on every change
                                            of the object (create, ready, failed,
                                            delete...)
``openova://sandbox/{id}/terminals``        its live terminals (embedded mode);
                                            updated on ``session.started|exited``
``openova://preview/{id}/{port}``           one preview; updated on
                                            ``preview.started|stopped|exited``
                                            (Kubernetes: on its sandbox's changes
                                            of its view, not of a running one's
                                            output alone)
``openova://usage/{id}``                    its model usage of the last 30 days;
                                            updated on ``usage.recorded``
==========================================  =============================================

``{id}`` is a sandbox name in the caller's namespace. **Scope**: a caller (an MCP token:
``McpCaller``) reads and hears about only the sandboxes its owner owns in its own
namespace — the rule of ``domain.access`` without any role, the same as the tools. A
sandbox that is not the owner's answers not found, exactly like one that does not exist.
A subscription may name a sandbox that does not exist yet (an agent subscribes, then
creates its helper): it is notified once an object of that name *owned by the caller's
owner* appears; objects of that name that belong to anyone else are never announced.

**Feeds**: the sandbox resource follows the informer (``services.resources``: the copy
the console's live views stream from, one store watch per process; in Kubernetes mode
every replica's informer watches the shared store). The other three follow the product
event bus (``events.product``; over NATS JetStream with several replicas): a terminal
started on one replica notifies a subscriber connected to another.

**Delivery**: each subscriber (an MCP session: anything with ``async
send_resource_updated(uri)``; over the SDK, the session's ``Connection``, whose
standalone stream carries ``notifications/resources/updated`` on the handshake-era
protocol versions agents speak) has one sender task and a set of URIs waiting to be
announced; an update for a URI already waiting is merged into it (the client re-reads
anyway), so a slow client holds at most one pending notification per URI and never
slows the others. Subscribers are held weakly, and a session that ends takes its
subscriptions with it: the server calls :meth:`LiveResources.forget` when its connection
ends; failing that, at the next update it would have got (its stream is closed), or when
it is collected. When the caller's own sandbox is deleted its token is revoked: its
subscribers get the deletion's update, then their subscriptions end.

The server (``mcp.server``) calls, per request: :meth:`LiveResources.templates`,
:meth:`LiveResources.list`, :meth:`LiveResources.read` (JSON text), :meth:`subscribe`,
:meth:`unsubscribe`, and :meth:`forget` when a session ends; :func:`sdk_handlers` wraps
them as the SDK's lowlevel ``on_*_resource*`` handlers given how to get a request's
caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol, cast

import structlog

from ..domain import access
from ..domain.errors import Invalid, NotFound, QuotaExceeded, SandboxError
from ..domain.ledger import UsageQuery, UsageTotals
from ..domain.model import ANNOTATION_SUB, Sandbox, utcnow
from ..domain.status import to_item
from ..events.bus import Event
from ..events.product import (
    PREVIEW_EXITED,
    PREVIEW_STARTED,
    PREVIEW_STOPPED,
    SESSION_EXITED,
    SESSION_STARTED,
    USAGE_RECORDED,
    scope_of,
)
from ..services.resources import END_SLOW, StreamEnd
from .tools.base import McpCaller, McpServices
from .tools.session import embedded_terminals, lists_terminals, terminals_view

log = structlog.get_logger(__name__)

SCHEME = "openova"
MIME = "application/json"
USAGE_WINDOW = timedelta(days=30)
# bounds: subscriptions one session may hold, and sessions (subscribers) in all
MAX_PER_SUBSCRIBER = 256
MAX_SUBSCRIBERS = 10_000

_NAME = r"[a-z0-9]([-a-z0-9]{0,251}[a-z0-9])?"
_URI = re.compile(
    rf"^{SCHEME}://(?:"
    rf"sandbox/(?P<sandbox>{_NAME})(?P<terminals>/terminals)?"
    rf"|preview/(?P<psandbox>{_NAME})/(?P<port>[0-9]{{1,5}})"
    rf"|usage/(?P<usandbox>{_NAME})"
    r")$"
)

TEMPLATES: tuple[dict[str, str], ...] = (
    {
        "uriTemplate": f"{SCHEME}://sandbox/{{id}}",
        "name": "sandbox",
        "description": "A sandbox of your owner: phase, conditions, spec (the API's item).",
        "mimeType": MIME,
    },
    {
        "uriTemplate": f"{SCHEME}://sandbox/{{id}}/terminals",
        "name": "sandbox-terminals",
        "description": "The live terminals of a sandbox (id, agent, attach URL).",
        "mimeType": MIME,
    },
    {
        "uriTemplate": f"{SCHEME}://preview/{{id}}/{{port}}",
        "name": "preview",
        "description": "A preview of a sandbox on a port: command, status, URL, output.",
        "mimeType": MIME,
    },
    {
        "uriTemplate": f"{SCHEME}://usage/{{id}}",
        "name": "usage",
        "description": "A sandbox's model usage of the last 30 days (tokens, spend).",
        "mimeType": MIME,
    },
)


@dataclass(frozen=True)
class ResourceRef:
    """One parsed resource URI."""

    kind: str  # sandbox | terminals | preview | usage
    sandbox: str
    port: int | None = None

    @property
    def uri(self) -> str:
        if self.kind == "sandbox":
            return sandbox_uri(self.sandbox)
        if self.kind == "terminals":
            return terminals_uri(self.sandbox)
        if self.kind == "preview":
            return preview_uri(self.sandbox, self.port or 0)
        return usage_uri(self.sandbox)


def sandbox_uri(name: str) -> str:
    return f"{SCHEME}://sandbox/{name}"


def terminals_uri(name: str) -> str:
    return f"{SCHEME}://sandbox/{name}/terminals"


def preview_uri(name: str, port: int) -> str:
    return f"{SCHEME}://preview/{name}/{port}"


def usage_uri(name: str) -> str:
    return f"{SCHEME}://usage/{name}"


def parse_uri(uri: str) -> ResourceRef:
    """The resource ``uri`` names; ``Invalid`` (saying what is expected) otherwise."""
    match = _URI.match(uri.strip()) if isinstance(uri, str) else None
    if match is None:
        raise Invalid(
            f"unknown resource URI {uri!r}: expected one of "
            + ", ".join(t["uriTemplate"] for t in TEMPLATES)
            + " ({id}: a sandbox name; {port}: 1-65535)",
            code="invalid-resource-uri",
        )
    if match["sandbox"]:
        kind = "terminals" if match["terminals"] else "sandbox"
        return ResourceRef(kind, match["sandbox"])
    if match["psandbox"]:
        port = int(match["port"])
        if not 1 <= port <= 65535:
            raise Invalid(f"port {port} is not between 1 and 65535", code="invalid-port")
        return ResourceRef("preview", match["psandbox"], port)
    return ResourceRef("usage", match["usandbox"])


class Subscriber(Protocol):
    """Where updates go: the SDK's ``ServerSession`` is one."""

    async def send_resource_updated(self, uri: str) -> None: ...


def _owner_of(sandbox: Sandbox) -> access.SandboxOwner:
    return access.SandboxOwner(
        namespace=sandbox.namespace,
        email=sandbox.spec.owner_email,
        sub=sandbox.metadata.annotations.get(ANNOTATION_SUB, ""),
    )


def _owner_in(payload: Any) -> access.SandboxOwner:
    return access.SandboxOwner(
        namespace=str(payload.get("namespace") or ""),
        email=str(payload.get("owner_email") or ""),
        sub=str(payload.get("owner_sub") or ""),
    )


def may_see(caller: McpCaller, owner: access.SandboxOwner) -> bool:
    """The tools' rule: the caller's namespace, and owned by the caller's owner (no
    role: an agent never sees what only its user's admin rights would show)."""
    return (
        bool(owner.namespace)
        and owner.namespace == caller.namespace
        and (owner.owned_by(caller.principal()))
    )


class _Sink:
    """One subscriber's subscriptions, pending URIs and sender task."""

    def __init__(self, target: Subscriber, caller: McpCaller) -> None:
        self.key = id(target)
        self.ref = weakref.ref(target)
        self.caller = caller
        self.uris: set[str] = set()
        self.pending: dict[str, None] = {}  # insertion-ordered set
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.closing = False  # the caller's sandbox is gone: end once pending is sent


class LiveResources:
    """Read, list and subscribe to the ``openova://`` resources; see the module docstring."""

    def __init__(
        self,
        services: McpServices,
        *,
        max_per_subscriber: int = MAX_PER_SUBSCRIBER,
        max_subscribers: int = MAX_SUBSCRIBERS,
    ) -> None:
        self.services = services
        self._max_per = max_per_subscriber
        self._max_subscribers = max_subscribers
        # (namespace, sandbox name) -> uri -> sinks
        self._index: dict[tuple[str, str], dict[str, set[_Sink]]] = {}
        self._sinks: dict[int, _Sink] = {}  # id(target) -> sink
        self._tasks: list[asyncio.Task[None]] = []
        self.sent = 0  # notifications handed to subscribers (observability, bench)

    # --- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        if self._tasks:
            return
        informer = self.services.informer
        if informer is not None:
            sub = informer.subscribe(lambda _sandbox: True)
            self._tasks.append(asyncio.create_task(self._follow_informer(sub), name="mcp-live-i"))
        bus = self.services.bus
        if bus is not None:
            queue = bus.subscribe()
            self._tasks.append(asyncio.create_task(self._follow_bus(queue), name="mcp-live-bus"))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for sink in list(self._sinks.values()):
            self._drop(sink)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def subscription_count(self) -> int:
        return sum(len(s.uris) for s in self._sinks.values())

    # --- list and read --------------------------------------------------------------

    def templates(self) -> list[dict[str, str]]:
        return [dict(t) for t in TEMPLATES if self._kind_available(t["name"])]

    def _kind_available(self, name: str) -> bool:
        if name == "sandbox-terminals":
            return lists_terminals(self.services)
        if name == "preview":
            return self.services.previews is not None
        if name == "usage":
            return self.services.ledger is not None
        return True

    async def _owned(self, caller: McpCaller) -> list[Sandbox]:
        sessions = self.services.sessions
        if sessions is None:
            return []
        listed: list[Sandbox] = await sessions.list(caller.principal())
        return [s for s in listed if may_see(caller, _owner_of(s))]

    async def list(self, caller: McpCaller) -> list[dict[str, Any]]:
        """The concrete resources of the caller's owner's sandboxes (the caller's own
        first), each with ``uri``, ``name``, ``description``, ``mimeType``."""
        owned = await self._owned(caller)
        owned.sort(key=lambda s: s.name != caller.sandbox)
        out: list[dict[str, Any]] = []
        for sandbox in owned:
            name = sandbox.name
            out.append(
                {
                    "uri": sandbox_uri(name),
                    "name": f"sandbox {name}",
                    "description": "phase, conditions and spec; updated on every change",
                    "mimeType": MIME,
                }
            )
            if lists_terminals(self.services):
                out.append(
                    {
                        "uri": terminals_uri(name),
                        "name": f"terminals of {name}",
                        "description": "live terminals; updated when one starts or exits",
                        "mimeType": MIME,
                    }
                )
            if self.services.ledger is not None:
                out.append(
                    {
                        "uri": usage_uri(name),
                        "name": f"usage of {name}",
                        "description": "model usage of the last 30 days",
                        "mimeType": MIME,
                    }
                )
            if self.services.previews is not None:
                for preview in self.services.previews.list_previews(sandbox):
                    out.append(
                        {
                            "uri": preview_uri(name, int(preview["port"])),
                            "name": f"preview {name}:{preview['port']}",
                            "description": "a preview: command, status, URL, output",
                            "mimeType": MIME,
                        }
                    )
        return out

    async def _sandbox(self, caller: McpCaller, name: str) -> Sandbox:
        sessions = self.services.sessions
        missing = NotFound(
            f'sandbox "{name}" not found in namespace "{caller.namespace}"',
            code="sandbox-not-found",
        )
        if sessions is None:
            raise missing
        try:
            sandbox: Sandbox = await sessions.get(caller.principal(), name)
        except NotFound:
            raise missing from None
        if not may_see(caller, _owner_of(sandbox)):
            raise missing
        return sandbox

    async def read(self, caller: McpCaller, uri: str) -> str:
        """The resource's JSON text. ``Invalid`` for a URI that names no resource,
        ``NotFound`` for one the caller may not see (or that does not exist)."""
        ref = parse_uri(uri)
        sandbox = await self._sandbox(caller, ref.sandbox)
        body: Any
        if ref.kind == "sandbox":
            body = to_item(sandbox)
        elif ref.kind == "terminals":
            if not lists_terminals(self.services):
                raise NotFound("terminals are not held here", code="resource-unavailable")
            # Kubernetes mode: the caller's own sandbox's from its terminal server (the
            # token relayed), another's count only (tools.session.terminals_view)
            view = await terminals_view(self.services, caller, sandbox)
            body = {"sandbox": sandbox.name, **view}
        elif ref.kind == "preview":
            previews = self.services.previews
            if previews is None:
                raise NotFound("previews are not served here", code="resource-unavailable")
            found = [p for p in previews.list_previews(sandbox) if p.get("port") == ref.port]
            if not found:
                raise NotFound(
                    f"sandbox {sandbox.name!r} has no preview on port {ref.port}",
                    code="preview-not-found",
                )
            body = found[0]
        else:
            body = await self._usage(sandbox)
        return json.dumps(body, separators=(",", ":"), default=str)

    async def _usage(self, sandbox: Sandbox) -> dict[str, Any]:
        ledger = self.services.ledger
        if ledger is None:
            raise NotFound("usage is not recorded here", code="resource-unavailable")
        now = utcnow()
        rows = await ledger.usage_rows(
            UsageQuery(
                namespace=sandbox.namespace,
                since=now - USAGE_WINDOW,
                until=now,
                sandboxes=(sandbox.name,),
                group_by="sandbox",
                by_day=False,
            )
        )
        totals = UsageTotals()
        for row in rows:
            totals = totals + row.totals
        return {
            "sandbox": sandbox.name,
            "since": (now - USAGE_WINDOW).isoformat().replace("+00:00", "Z"),
            "currency": "USD",
            **totals.to_dict(),
        }

    # --- subscriptions --------------------------------------------------------------

    async def subscribe(self, caller: McpCaller, uri: str, target: Subscriber) -> None:
        """Announce updates of ``uri`` to ``target`` (``send_resource_updated``). The
        URI must name a resource; the sandbox may not exist yet (see the module
        docstring). Idempotent."""
        ref = parse_uri(uri)
        sink = self._sinks.get(id(target))
        if sink is None:
            if len(self._sinks) >= self._max_subscribers:
                raise QuotaExceeded(
                    "this server holds as many subscribers as it takes; try again later",
                    code="subscriptions-exhausted",
                )
            sink = _Sink(target, caller)
            self._sinks[sink.key] = sink
            weakref.finalize(target, self._gone, sink)
            sink.task = asyncio.create_task(self._send_loop(sink), name="mcp-live-send")
        elif sink.caller != caller:
            raise Invalid("one session speaks for one token", code="caller-changed")
        if ref.uri in sink.uris:
            return
        if len(sink.uris) >= self._max_per:
            raise QuotaExceeded(
                f"at most {self._max_per} subscriptions per session; unsubscribe first",
                code="too-many-subscriptions",
            )
        sink.uris.add(ref.uri)
        key = (caller.namespace, ref.sandbox)
        self._index.setdefault(key, {}).setdefault(ref.uri, set()).add(sink)

    async def unsubscribe(self, caller: McpCaller, uri: str, target: Subscriber) -> None:
        """Stop announcing ``uri`` to ``target``; unknown subscriptions are ignored."""
        ref = parse_uri(uri)
        sink = self._sinks.get(id(target))
        if sink is None or ref.uri not in sink.uris:
            return
        self._unindex(sink, ref.uri)
        sink.uris.discard(ref.uri)
        sink.pending.pop(ref.uri, None)

    def forget(self, target: Subscriber) -> None:
        """``target``'s session ended: drop all its subscriptions."""
        sink = self._sinks.get(id(target))
        if sink is not None:
            self._drop(sink)

    def _gone(self, sink: _Sink) -> None:
        if self._sinks.get(sink.key) is sink:
            self._drop(sink)

    def _unindex(self, sink: _Sink, uri: str) -> None:
        ref = parse_uri(uri)
        key = (sink.caller.namespace, ref.sandbox)
        by_uri = self._index.get(key)
        if by_uri is None:
            return
        sinks = by_uri.get(uri)
        if sinks is not None:
            sinks.discard(sink)
            if not sinks:
                del by_uri[uri]
        if not by_uri:
            del self._index[key]

    def _drop(self, sink: _Sink) -> None:
        for uri in list(sink.uris):
            self._unindex(sink, uri)
        sink.uris.clear()
        sink.pending.clear()
        if self._sinks.get(sink.key) is sink:
            del self._sinks[sink.key]
        try:
            current = asyncio.current_task()
        except RuntimeError:  # from the collector, outside the loop
            current = None
        if sink.task is not None and sink.task is not current:
            sink.task.cancel()

    # --- feeds ----------------------------------------------------------------------

    def notify(self, namespace: str, name: str, uri: str, owner: access.SandboxOwner) -> None:
        """Queue ``uri`` for every subscriber of it whose caller may see ``owner``'s
        sandbox."""
        sinks = self._index.get((namespace, name), {}).get(uri)
        if not sinks:
            return
        for sink in list(sinks):
            if not may_see(sink.caller, owner):
                continue
            if uri not in sink.pending:
                sink.pending[uri] = None
                sink.wake.set()

    async def _follow_informer(self, sub: Any) -> None:
        informer = self.services.informer
        terminals_follow_object = (
            lists_terminals(self.services) and embedded_terminals(self.services) is None
        )
        try:
            while True:
                item = await sub.next()
                if isinstance(item, StreamEnd):
                    if item.reason != END_SLOW:
                        log.info("mcp live resources: informer stream ended", reason=item.reason)
                        return
                    # fell behind: changes were missed; follow again and announce every
                    # subscribed sandbox (the clients read it again)
                    log.warning("mcp live resources fell behind the informer; resubscribed")
                    sub = informer.subscribe(lambda _sandbox: True)
                    self._announce_all_sandboxes()
                    continue
                if item is None:
                    continue
                sandbox: Sandbox = item.object
                self.notify(
                    sandbox.namespace, sandbox.name, sandbox_uri(sandbox.name), _owner_of(sandbox)
                )
                if terminals_follow_object:
                    # Kubernetes mode: pods publish no session events; the operator
                    # writes each sandbox's session count into its status
                    self.notify(
                        sandbox.namespace,
                        sandbox.name,
                        terminals_uri(sandbox.name),
                        _owner_of(sandbox),
                    )
                # Kubernetes mode: a preview's state is the sandbox's (its annotation and
                # status), so its resource follows the object's changes
                changed = getattr(self.services.previews, "changed_ports", None)
                if changed is not None:
                    for port in changed(sandbox, deleted=item.type == "DELETED"):
                        self.notify(
                            sandbox.namespace,
                            sandbox.name,
                            preview_uri(sandbox.name, port),
                            _owner_of(sandbox),
                        )
                if item.type == "DELETED":
                    self._revoked(sandbox)
        finally:
            informer.unsubscribe(sub)

    def _revoked(self, sandbox: Sandbox) -> None:
        """The sandbox is gone, and with it its token: its callers' subscribers end
        (after the updates already queued, the deletion's among them)."""
        for sink in list(self._sinks.values()):
            caller = sink.caller
            if (caller.namespace, caller.sandbox) != (sandbox.namespace, sandbox.name):
                continue
            if caller.uid and sandbox.metadata.uid and caller.uid != sandbox.metadata.uid:
                continue
            sink.closing = True
            sink.wake.set()

    def _announce_all_sandboxes(self) -> None:
        informer = self.services.informer
        for (namespace, name), by_uri in list(self._index.items()):
            uri = sandbox_uri(name)
            if uri not in by_uri:
                continue
            current = next((s for s in informer.in_namespace(namespace) if s.name == name), None)
            if current is not None:
                self.notify(namespace, name, uri, _owner_of(current))

    async def _follow_bus(self, queue: asyncio.Queue[Event]) -> None:
        try:
            while True:
                event = await queue.get()
                self.on_event(event)
        finally:
            bus = self.services.bus
            if bus is not None:
                bus.unsubscribe(queue)

    def on_event(self, event: Event) -> None:
        """Map a product event to the resource it updates."""
        scope = scope_of(event)
        if scope is None:
            return
        namespace, name = scope
        owner = _owner_in(event.payload)
        if event.type in (SESSION_STARTED, SESSION_EXITED):
            self.notify(namespace, name, terminals_uri(name), owner)
        elif event.type == USAGE_RECORDED:
            self.notify(namespace, name, usage_uri(name), owner)
        elif event.type in (PREVIEW_STARTED, PREVIEW_STOPPED, PREVIEW_EXITED):
            port = event.payload.get("port")
            if isinstance(port, int):
                self.notify(namespace, name, preview_uri(name, port), owner)

    async def _send_loop(self, sink: _Sink) -> None:
        while True:
            await sink.wake.wait()
            sink.wake.clear()
            while sink.pending:
                uri = next(iter(sink.pending))
                del sink.pending[uri]
                target = sink.ref()
                if target is None:
                    self._drop(sink)
                    return
                try:
                    await _send(target, uri)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.info(
                        "mcp live resources: subscriber gone",
                        error_type=type(exc).__name__,
                    )
                    self._drop(sink)
                    return
                finally:
                    del target
                self.sent += 1
            if sink.closing:
                self._drop(sink)
                return


CallerOf = Callable[[Any], Awaitable[McpCaller]]
UPDATED = "notifications/resources/updated"


async def _send(target: Subscriber, uri: str) -> None:
    """Announce ``uri``. Over the SDK's ``Connection``, on its standalone channel
    directly: ``Connection.send_resource_updated`` swallows a closed stream, which is
    exactly how this learns that the session ended (and drops its subscriptions then,
    not when the collector finds the connection)."""
    outbound = getattr(target, "outbound", None)
    if outbound is not None and hasattr(outbound, "notify"):
        await outbound.notify(UPDATED, {"uri": uri})
    else:
        await target.send_resource_updated(uri)


def subscriber_of(ctx: Any) -> Subscriber:
    """Where a request's session gets its updates: the SDK builds a ``ServerSession``
    for every request, over the one ``Connection`` of the MCP session, which has the
    standalone stream; subscriptions belong to that connection."""
    session = ctx.session
    connection = getattr(session, "_connection", None)
    if connection is not None and hasattr(connection, "send_resource_updated"):
        return cast(Subscriber, connection)
    return cast(Subscriber, session)


def sdk_handlers(live: LiveResources, caller_of: CallerOf) -> dict[str, Any]:
    """The lowlevel ``mcp.server.lowlevel.Server`` keyword handlers for the resources:
    ``Server(..., **sdk_handlers(live, caller_of))``. ``caller_of(ctx)`` is the
    server's own: the request's authenticated ``McpCaller`` (raising when none).
    Errors are ``domain.errors``: the server turns them into JSON-RPC errors with their
    detail (:func:`as_mcp_error` does it for these handlers)."""
    import mcp_types as types

    async def on_list_resources(ctx: Any, params: Any) -> Any:
        caller = await caller_of(ctx)
        items = await live.list(caller)
        return types.ListResourcesResult(
            resources=[
                types.Resource(
                    uri=i["uri"],
                    name=i["name"],
                    description=i["description"],
                    mime_type=i["mimeType"],
                )
                for i in items
            ]
        )

    async def on_list_resource_templates(ctx: Any, params: Any) -> Any:
        await caller_of(ctx)
        return types.ListResourceTemplatesResult(
            resource_templates=[
                types.ResourceTemplate(
                    uri_template=t["uriTemplate"],
                    name=t["name"],
                    description=t["description"],
                    mime_type=t["mimeType"],
                )
                for t in live.templates()
            ]
        )

    async def on_read_resource(ctx: Any, params: Any) -> Any:
        caller = await caller_of(ctx)
        uri = str(params.uri)
        try:
            text = await live.read(caller, uri)
        except SandboxError as exc:
            raise as_mcp_error(exc) from None
        return types.ReadResourceResult(
            contents=[types.TextResourceContents(uri=uri, mime_type=MIME, text=text)]
        )

    async def on_subscribe_resource(ctx: Any, params: Any) -> Any:
        caller = await caller_of(ctx)
        try:
            await live.subscribe(caller, str(params.uri), subscriber_of(ctx))
        except SandboxError as exc:
            raise as_mcp_error(exc) from None
        return types.EmptyResult()

    async def on_unsubscribe_resource(ctx: Any, params: Any) -> Any:
        caller = await caller_of(ctx)
        try:
            await live.unsubscribe(caller, str(params.uri), subscriber_of(ctx))
        except SandboxError as exc:
            raise as_mcp_error(exc) from None
        return types.EmptyResult()

    return {
        "on_list_resources": on_list_resources,
        "on_list_resource_templates": on_list_resource_templates,
        "on_read_resource": on_read_resource,
        "on_subscribe_resource": on_subscribe_resource,
        "on_unsubscribe_resource": on_unsubscribe_resource,
    }


def as_mcp_error(exc: SandboxError) -> Exception:
    """A ``domain.errors`` error as the SDK's ``MCPError``: invalid params for what
    the request got wrong, the spec's resource-not-found code (-32002) for not found,
    else an internal error; the message is ``<code>: <detail>``."""
    from mcp.shared.exceptions import MCPError
    from mcp_types import INTERNAL_ERROR, INVALID_PARAMS

    message = f"{exc.code}: {exc.detail}"
    if isinstance(exc, NotFound):
        return MCPError(-32002, message)
    if isinstance(exc, Invalid):
        return MCPError(INVALID_PARAMS, message)
    return MCPError(INTERNAL_ERROR, message)
