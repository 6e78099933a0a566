"""The product's event vocabulary (issue 14): what happened to a sandbox, its terminal
sessions and its model usage, published on the event bus for every consumer (the MCP
live resources, and anything outside that reads the JetStream stream).

============================  ==========================================================
``sandbox.created``           a create was stored (``services.sessions``)
``sandbox.deleted``           a delete was accepted (``services.sessions``)
``sandbox.ready``             the controller moved the sandbox to phase Ready
``sandbox.failed``            the controller moved it to phase Failed (``reason``)
``session.started``           a terminal process started (``session``, ``agent``)
``session.exited``            it exited (``code``: its exit status, ``None`` if unknown)
``usage.recorded``            the model gateway settled one request's cost
``preview.started|stopped``   a preview was started / stopped (``port``)
``preview.exited``            its command exited (``port``, ``code``)
============================  ==========================================================

Every payload names its scope the same way: ``namespace`` (the org's namespace),
``sandbox`` (its name), ``org``, ``owner_sub`` and ``owner_email`` — what a consumer
needs to show an event only to whom may see the sandbox (the MCP resources do exactly
that). Payloads carry no secret: no token, no prompt, no output.

:class:`Emitter` publishes from synchronous callbacks (the controller's status writes,
the terminals' exits, the gateway's settle): it schedules the publish as a task and logs
a failure, so the caller never waits for the bus and never fails because of it.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import structlog

from ..domain.ledger import GatewayIdentity
from ..domain.model import ANNOTATION_SUB, Sandbox
from ..domain.status import FAILED, READY
from .bus import Event, EventBus

log = structlog.get_logger(__name__)

SANDBOX_CREATED = "sandbox.created"
SANDBOX_DELETED = "sandbox.deleted"
SANDBOX_READY = "sandbox.ready"
SANDBOX_FAILED = "sandbox.failed"
SESSION_STARTED = "session.started"
SESSION_EXITED = "session.exited"
USAGE_RECORDED = "usage.recorded"
PREVIEW_STARTED = "preview.started"
PREVIEW_STOPPED = "preview.stopped"
PREVIEW_EXITED = "preview.exited"

PRODUCT_EVENTS = (
    SANDBOX_CREATED,
    SANDBOX_DELETED,
    SANDBOX_READY,
    SANDBOX_FAILED,
    SESSION_STARTED,
    SESSION_EXITED,
    USAGE_RECORDED,
    PREVIEW_STARTED,
    PREVIEW_STOPPED,
    PREVIEW_EXITED,
)

SCOPE_KEYS = ("namespace", "sandbox", "org", "owner_sub", "owner_email")


def sandbox_scope(sandbox: Sandbox) -> dict[str, str]:
    """The scope every payload of this sandbox starts with."""
    return {
        "namespace": sandbox.namespace,
        "sandbox": sandbox.name,
        "org": sandbox.spec.org_slug,
        "owner_sub": sandbox.metadata.annotations.get(ANNOTATION_SUB, ""),
        "owner_email": sandbox.spec.owner_email,
    }


def scope_of(event: Event) -> tuple[str, str] | None:
    """``(namespace, sandbox)`` of a product event; ``None`` for an event without one."""
    namespace = event.payload.get("namespace")
    sandbox = event.payload.get("sandbox")
    if isinstance(namespace, str) and isinstance(sandbox, str) and namespace and sandbox:
        return namespace, sandbox
    return None


def sandbox_created(sandbox: Sandbox) -> Event:
    return Event(SANDBOX_CREATED, {**sandbox_scope(sandbox), "agent": sandbox.spec.default_agent})


def sandbox_deleted(sandbox: Sandbox) -> Event:
    return Event(SANDBOX_DELETED, sandbox_scope(sandbox))


def phase_event(sandbox: Sandbox) -> Event | None:
    """``sandbox.ready`` / ``sandbox.failed`` for a sandbox whose phase just became
    Ready / Failed; ``None`` for any other phase."""
    phase = sandbox.status.phase
    if phase == READY:
        return Event(SANDBOX_READY, sandbox_scope(sandbox))
    if phase == FAILED:
        ready = sandbox.status.condition("Ready")
        return Event(
            SANDBOX_FAILED,
            {
                **sandbox_scope(sandbox),
                "reason": ready.reason if ready else "",
                "message": ready.message if ready else "",
            },
        )
    return None


def session_started(sandbox: Sandbox, session: str, agent: str) -> Event:
    return Event(SESSION_STARTED, {**sandbox_scope(sandbox), "session": session, "agent": agent})


def session_exited(sandbox: Sandbox, session: str, agent: str, code: int | None) -> Event:
    return Event(
        SESSION_EXITED,
        {**sandbox_scope(sandbox), "session": session, "agent": agent, "code": code},
    )


def preview_event(type_: str, sandbox: Sandbox, port: int, code: int | None = None) -> Event:
    """``preview.started|stopped|exited`` of ``sandbox``'s preview on ``port``."""
    payload: dict[str, Any] = {**sandbox_scope(sandbox), "port": port}
    if type_ == PREVIEW_EXITED:
        payload["code"] = code
    return Event(type_, payload)


def usage_recorded(
    identity: GatewayIdentity,
    *,
    model: str,
    input_tokens: int,
    output_tokens: int,
    cost_usd: Decimal,
    status: int,
) -> Event:
    return Event(
        USAGE_RECORDED,
        {
            "namespace": identity.namespace,
            "sandbox": identity.sandbox,
            "org": identity.org,
            "owner_sub": identity.owner_sub,
            "owner_email": identity.owner_email,
            "model": model,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cost_usd": str(cost_usd),
            "status": status,
        },
    )


class Emitter:
    """Publishes without making the caller wait (see the module docstring)."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self._tasks: set[asyncio.Task[None]] = set()  # publishes in flight
        self._watchers: set[asyncio.Task[None]] = set()  # waiting for a session's exit

    async def publish(self, event: Event) -> None:
        """Publish now; a failure is logged, never raised (best effort by contract)."""
        try:
            await self.bus.publish(event)
        except Exception as exc:
            log.warning(
                "event not published",
                event_type=event.type,
                error_type=type(exc).__name__,
                error=str(exc),
            )

    def emit(self, event: Event | None) -> None:
        """Publish in a task of the running loop (nothing without one, or for ``None``)."""
        if event is None:
            return
        try:
            task = asyncio.get_running_loop().create_task(self.publish(event))
        except RuntimeError:
            log.warning("event not published: no event loop", event_type=event.type)
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def phase_changed(self, sandbox: Sandbox) -> None:
        """The controller's hook: a status write changed the phase."""
        self.emit(phase_event(sandbox))

    def watch_exit(self, sandbox: Sandbox, session: Any) -> None:
        """``session.started`` now, and ``session.exited`` when ``session`` (a terminal
        session: ``id``, ``agent``, ``exit_code``, ``wait_exited()``) exits."""
        self.emit(session_started(sandbox, session.id, session.agent))

        async def exited() -> None:
            await session.wait_exited()
            await self.publish(
                session_exited(sandbox, session.id, session.agent, session.exit_code)
            )

        task = asyncio.get_running_loop().create_task(exited())
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait (bounded) for the publishes in flight, then cancel what is left and the
        exit watchers (for a server that stops)."""
        pending = set(self._tasks)
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        for task in [*self._tasks, *self._watchers]:
            task.cancel()
