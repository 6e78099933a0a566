"""The audit log for org admins (docs/api.md, "Audit").

``GET /api/v1/sandbox/audit?since=&until=&actor=&action=&cursor=&limit=`` answers one
page of the caller's own org's records, newest first, with the ``cursor`` of the next
page. ``?format=jsonl`` (or ``Accept: application/x-ndjson``) exports every matching
record instead, oldest first, one JSON object a line: the org's chain as it is kept, so
it can be verified offline (``sandbox audit verify --file``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from ...domain.audit import MAX_LIMIT, AuditQuery, AuditRecord, format_at
from ...domain.errors import Invalid
from ...domain.model import utcnow
from ...domain.principal import Principal
from ...services.audit import AuditLog, org_query
from .. import schemas
from ..security import require_principal

router = APIRouter(prefix="/api/v1/sandbox", tags=["audit"])

Caller = Annotated[Principal, Depends(require_principal)]
_E = schemas.ErrorBody
NDJSON = "application/x-ndjson"
EXPORT_BATCH = 500
NO_STORE = {"Cache-Control": "no-store"}


class AuditActor(BaseModel):
    sub: str
    email: str


class AuditRecordOut(BaseModel):
    org: str
    seq: int = Field(description="1, 2, ... within the org's chain")
    at: str = Field(description="UTC, RFC 3339 with microseconds")
    actor: AuditActor
    action: str = Field(examples=["sandbox.create"])
    target: str = Field(examples=["sandbox/aider-1a2b3c4d"])
    outcome: str = Field(description="success | denied | failure")
    client: str = Field(description="the client's address")
    detail: dict[str, Any]
    prev: str = Field(description="the hash of the org's previous record (64 zeros: first)")
    hash: str = Field(description="SHA-256 of this record's canonical JSON (docs/api.md)")


class AuditPage(BaseModel):
    items: list[AuditRecordOut]
    cursor: str | None = Field(description="pass back as `cursor` for the next (older) page")


def _log(request: Request) -> AuditLog:
    audit: AuditLog = request.app.state.deps.audit
    return audit


def _wants_lines(format: str | None, accept: str) -> bool:
    if format is not None:
        if format not in ("json", "jsonl"):
            raise Invalid("format is json or jsonl", code="invalid-format")
        return format == "jsonl"
    return NDJSON in accept.lower()


def _line(record: AuditRecord) -> bytes:
    return (json.dumps(record.to_dict(), separators=(",", ":")) + "\n").encode()


@router.get(
    "/audit",
    name="list_audit",
    response_model=AuditPage,
    responses={
        200: {
            "description": "a page (JSON), or with `format=jsonl` / `Accept: "
            "application/x-ndjson` every matching record, oldest first, one a line",
            "content": {NDJSON: {"schema": {"type": "string"}}},
        },
        400: {
            "model": _E,
            "description": "invalid-since, invalid-until, invalid-cursor, invalid-format, "
            "invalid-request (limit, action, since after until)",
        },
        401: {"model": schemas.Unauthenticated},
        403: {"model": _E, "description": "org-admin-required"},
        503: {"model": _E, "description": "sandbox-backend-unavailable"},
    },
)
async def list_audit(
    request: Request,
    caller: Caller,
    since: Annotated[
        str | None, Query(max_length=64, description="from (inclusive): date or RFC 3339")
    ] = None,
    until: Annotated[
        str | None, Query(max_length=64, description="to (exclusive): date or RFC 3339")
    ] = None,
    actor: Annotated[
        str | None, Query(max_length=320, description="a subject, or an email (any case)")
    ] = None,
    action: Annotated[
        str | None,
        Query(max_length=64, description="exact (`sandbox.create`) or a prefix (`sandbox.*`)"),
    ] = None,
    cursor: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    format: Annotated[str | None, Query(description="json (default) or jsonl")] = None,
) -> Any:
    lines = _wants_lines(format, request.headers.get("accept", ""))
    query = org_query(
        caller,
        since=since,
        until=until,
        actor=actor,
        action=action,
        cursor=None if lines else cursor,
        limit=EXPORT_BATCH if lines else limit,
        newest_first=not lines,
    )
    audit = _log(request)
    records = await audit.query(query)
    if lines:
        return _export(audit, query, records, caller.org)
    more = len(records) == query.limit
    return JSONResponse(
        {
            "items": [r.to_dict() for r in records],
            "cursor": str(records[-1].seq) if more and records else None,
        },
        headers=NO_STORE,
    )


def _export(
    audit: AuditLog, query: AuditQuery, first: list[AuditRecord], org: str
) -> StreamingResponse:
    """Every matching record, oldest first, in batches (the first one already read, so
    a database that does not answer is a 503, not a cut stream)."""

    async def body() -> AsyncIterator[bytes]:
        batch = first
        while batch:
            yield b"".join(_line(r) for r in batch)
            if len(batch) < query.limit:
                return
            batch = await audit.query(dataclasses.replace(query, after=batch[-1].seq))

    stamp = format_at(utcnow())[:10]
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", org).strip("-") or "org"
    return StreamingResponse(
        body(),
        media_type=NDJSON,
        headers={
            **NO_STORE,
            "Content-Disposition": f'attachment; filename="audit-{safe}-{stamp}.jsonl"',
        },
    )
