"""The generic resource surface the console's live views use (see docs/resources.md).

``GET /api/v1/sovereigns/{id}/k8s/{kind}`` lists from the informer cache;
``GET /api/v1/sovereigns/{id}/k8s/stream?kinds=…`` streams its changes as Server-Sent
Events. Both show only what the caller may see. The stream route is declared before
the list route so ``stream`` is never taken for a kind.

Every change on the stream carries an ``id:``; a reconnecting client sends the last
one back (``Last-Event-ID``, or ``?lastEventId=``) and gets what it missed, or an
``event: reset`` when that is not possible and it must list again.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ...domain.model import format_time_nano
from ...domain.principal import Principal
from ...services.resources import ResourceEvent, StreamEnd
from ...services.resources_query import (
    MAX_LIMIT,
    canonical_kind,
    parse_kinds,
    parse_label_selector,
)
from ...services.resources_view import ListQuery, ResourcesService, parse_scope
from .. import schemas
from ..security import require_principal

Responses = dict[int | str, dict[str, Any]]
TOKEN_EXPIRED = "token-expired"  # the end reason when the caller's token expires
RETRY_MS = 2000  # the reconnect delay an EventSource is told to use
router = APIRouter(prefix="/api/v1/sovereigns/{id}/k8s", tags=["resources"])

Caller = Annotated[Principal, Depends(require_principal)]
_E = schemas.ErrorBody

_COMMON: Responses = {
    401: {"model": schemas.Unauthenticated, "description": "missing or invalid token"},
    404: {"model": _E, "description": "cluster-not-found, or unknown-kind (list route)"},
    500: {"model": _E, "description": "unexpected failure"},
    503: {
        "model": _E,
        "description": "cache-not-synced: the cache has not listed the store yet",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    },
}

ClusterId = Annotated[
    str, Path(description="the sovereign (cluster) id; the embedded server has one: `local`")
]
Scope = Annotated[
    str | None,
    Query(description="`org`: an org admin sees every object of the org namespace"),
]


class ResourceList(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    kind: str = Field(examples=["sandbox"])
    cluster: str = Field(examples=["local"])
    items: list[dict[str, Any]] = Field(description="full Kubernetes documents")
    continue_: str | None = Field(
        default=None, alias="continue", description="pass back as `continue` for the next page"
    )
    ageSeconds: float = Field(description="0 while the cache is live, else seconds since sync")


def _service(request: Request) -> ResourcesService:
    service: ResourcesService = request.app.state.deps.resources
    return service


def _frame(data: Any, *, event: str | None = None, id: str | None = None) -> str:
    head = f"event: {event}\n" if event else ""
    if id:
        head += f"id: {id}\n"
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n"


def _resume_from(header: str | None, query: str | None) -> str | None:
    """The id to resume after: the header first, else the query; blank is absent."""
    for value in (header, query):
        if value is not None and value.strip():
            return value.strip()
    return None


@router.get(
    "/stream",
    name="stream_resources",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": (
                "Server-Sent Events: `retry: 2000`; `event: reset` with {cluster, reason} "
                "(unknown-id, history-expired, too-far-behind) when a requested resume is "
                "impossible; `event: ready` with {cluster, kinds, resumed} and `id:` (the "
                "point the stream continues from); then `data:` {cluster, kind, type, "
                "object, at} with `id:` per change (replayed ones first when resumed), "
                "`: ping` every 15 s, and a final `event: end` with {reason} "
                "(slow-consumer, shutdown, token-expired)"
            ),
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        400: {"model": _E, "description": "invalid-request (kinds missing), unknown-kind, ..."},
        **_COMMON,
    },
)
async def stream_resources(
    id: ClusterId,
    request: Request,
    caller: Caller,
    kinds: Annotated[str, Query(description="comma list: sandbox (or sandboxes)")],
    scope: Scope = None,
    access_token: Annotated[
        str | None,
        Query(description="the token, for EventSource clients that cannot set headers"),
    ] = None,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            description="resume after this event id (what an EventSource sends on reconnect)",
        ),
    ] = None,
    last_event_id_query: Annotated[
        str | None,
        Query(alias="lastEventId", description="the same as the Last-Event-ID header"),
    ] = None,
) -> StreamingResponse:
    del access_token  # read (with the header and cookie) by require_principal
    service = _service(request)
    cluster = service.check_cluster(id)
    wanted = parse_kinds(kinds)
    org_scope = parse_scope(scope)
    after = _resume_from(last_event_id, last_event_id_query)
    subscription = service.subscribe(caller, org_scope=org_scope, after=after)
    ping = service.ping_interval

    async def frames() -> AsyncIterator[str]:
        try:
            yield f"retry: {RETRY_MS}\n\n"
            if subscription.reset is not None:
                yield _frame({"cluster": cluster, "reason": subscription.reset}, event="reset")
            ready = {"cluster": cluster, "kinds": list(wanted), "resumed": subscription.resumed}
            yield _frame(ready, event="ready", id=subscription.position)
            while True:
                left = caller.seconds_left()
                if left is not None and left <= 0:
                    # the token ended: so does the stream (issue 11)
                    yield _frame({"cluster": cluster, "reason": TOKEN_EXPIRED}, event="end")
                    return
                item = await subscription.next(timeout=ping if left is None else min(ping, left))
                if item is None:
                    if left is not None and caller.seconds_left() == 0:
                        continue
                    yield ": ping\n\n"
                elif isinstance(item, StreamEnd):
                    yield _frame({"cluster": cluster, "reason": item.reason}, event="end")
                    return
                else:
                    yield _frame(_event_body(cluster, item), id=item.id)
        finally:
            service.unsubscribe(subscription)

    return StreamingResponse(
        frames(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _event_body(cluster: str, event: ResourceEvent) -> dict[str, Any]:
    return {
        "cluster": cluster,
        "kind": "sandbox",
        "type": event.type,
        "object": event.object.to_dict(),
        "at": format_time_nano(event.at),
    }


@router.get(
    "/{kind}",
    name="list_resources",
    response_model=ResourceList,
    responses={
        400: {
            "model": _E,
            "description": "invalid-label-selector, invalid-continue, invalid-request "
            "(limit outside 1..500), invalid-scope",
        },
        **_COMMON,
    },
)
async def list_resources(
    id: ClusterId,
    kind: Annotated[str, Path(description="sandbox (or sandboxes)")],
    request: Request,
    caller: Caller,
    ns: Annotated[str | None, Query(description="only this namespace")] = None,
    labelSelector: Annotated[
        str | None, Query(description="k=v, k!=v, k, !k; comma-separated, all must match")
    ] = None,
    limit: Annotated[int | None, Query(ge=1, le=MAX_LIMIT)] = None,
    continue_: Annotated[
        str | None, Query(alias="continue", description="the token of the previous page")
    ] = None,
    scope: Scope = None,
) -> JSONResponse:
    service = _service(request)
    cluster = service.check_cluster(id)
    canonical = canonical_kind(kind)
    query = ListQuery(
        namespace=ns or None,
        selector=parse_label_selector(labelSelector),
        limit=limit,
        continue_token=continue_ or None,
        org_scope=parse_scope(scope),
    )
    result = await service.list(caller, query)
    body: dict[str, Any] = {
        "kind": canonical,
        "cluster": cluster,
        "items": [s.to_dict() for s in result.items],
        "ageSeconds": round(result.age_seconds, 3),
    }
    if result.continue_token:
        body["continue"] = result.continue_token
    return JSONResponse(body)
