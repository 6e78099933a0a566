"""The audit log: an append-only, hash-chained record of who did what (docs/api.md,
"Audit").

Recording from anywhere in the server is one line::

    await deps.audit.record("token.create", caller, target=f"token/{token_id}")

``caller`` is the acting :class:`Principal` (``None`` when nobody could be identified, a
refused sign-in say: pass ``sub``/``email``/``org`` then); the org defaults to the
caller's; the client address comes from the request being served (the API sets it for
every HTTP request and WebSocket, :func:`client_address`); ``outcome`` is ``success``,
``denied`` or ``failure``; ``detail`` takes a few plain facts (keys that look like a
secret - token, key, password, ... - are dropped). ``record`` never raises: the action it
describes has happened, so a log that cannot be written is logged (``audit.unrecorded``,
without the detail) and the request goes on.

Around a call that may be refused, :meth:`AuditLog.action` records how it ended::

    async with deps.audit.action("sandbox.delete", caller, target=f"sandbox/{id}"):
        await deps.sessions.delete(caller, id)

(``success`` when the block returns; ``denied`` when it raises ``Forbidden``,
``Unauthenticated`` or ``QuotaExceeded``; ``failure`` for any other error, with its
``error`` code in the detail; the error propagates unchanged.)

Two stores keep the same rules: :class:`MemoryAuditStore` here (tests and
``SANDBOX_STORE=memory``) and ``SqlAuditStore`` (``store/sql_audit.py``), whose chains
stay linear under concurrent writers in any number of processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import structlog

from ..domain.audit import (
    DEFAULT_LIMIT,
    GENESIS,
    AuditEntry,
    AuditQuery,
    AuditRecord,
    ChainReport,
    Outcome,
    chain,
    verify,
)
from ..domain.errors import Forbidden, Invalid, QuotaExceeded, SandboxError, Unauthenticated
from ..domain.model import utcnow
from ..domain.principal import Principal

if TYPE_CHECKING:
    from ..config import Settings

log = structlog.get_logger(__name__)

__all__ = [
    "AuditLog",
    "AuditStore",
    "MemoryAuditLog",
    "Note",
    "bind_client",
    "client_address",
    "make_audit_log",
    "org_query",
    "outcome_of",
    "parse_cursor",
    "parse_time",
]

# the address of the client whose request is being served (set by the API's edge)
_CLIENT: contextvars.ContextVar[str] = contextvars.ContextVar("audit_client", default="")


def bind_client(address: str) -> contextvars.Token[str]:
    """Set the client address for what runs in this context (the API's middleware)."""
    return _CLIENT.set(address)


def client_address() -> str:
    return _CLIENT.get()


@runtime_checkable
class AuditStore(Protocol):
    """Where records are kept: appends that extend each org's chain one at a time."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def append(self, entry: AuditEntry, at: datetime) -> AuditRecord:
        """Chain ``entry`` (cleaned) after its org's head and store it, atomically."""

    async def append_many(
        self, entries: Sequence[tuple[AuditEntry, datetime]]
    ) -> list[AuditRecord]:
        """Chain every entry in order, in one atomic step (all or none)."""

    async def query(self, query: AuditQuery) -> list[AuditRecord]:
        """Up to ``query.limit`` matching records in the query's order."""

    async def orgs(self) -> list[str]:
        """Every org that has a chain."""

    async def chain_of(self, org: str, after: int, limit: int) -> list[AuditRecord]:
        """The org's records with ``seq > after``, ascending, as stored (for verify)."""

    async def head(self, org: str) -> tuple[int, str]:
        """The org's newest ``(seq, hash)`` as the log keeps it; ``(0, GENESIS)``."""


# at most this many records per transaction of the writer
MAX_BATCH = 500


class AuditLog:
    """The service the routes and other services call.

    Appends are group-committed: ``record`` queues its entry and waits for it to be
    stored; one writer task per log takes whatever is queued and stores it in one
    transaction (``append_many``), in the order it was queued. A lone record costs one
    transaction as before; 200 at once cost one instead of 200 queued on the database's
    write lock."""

    def __init__(self, store: AuditStore, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self._clock = clock
        self._queued: list[tuple[AuditEntry, datetime, asyncio.Future[AuditRecord]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:
            await self.store.start()
        except SandboxError as exc:
            log.warning("audit log unreachable at start; opening on first use", error=exc.detail)

    async def stop(self) -> None:
        writer = self._writer
        if writer is not None and not writer.done():
            await asyncio.wait({writer})  # what was recorded before the stop is stored
        await self.store.close()

    async def _append(self, entry: AuditEntry, at: datetime) -> AuditRecord:
        loop = asyncio.get_running_loop()
        stored: asyncio.Future[AuditRecord] = loop.create_future()
        self._queued.append((entry, at, stored))
        writer = self._writer
        if writer is None or writer.done() or writer.get_loop() is not loop:
            self._writer = loop.create_task(self._write_queued())
        return await stored

    async def _write_queued(self) -> None:
        while self._queued:
            batch, self._queued = self._queued[:MAX_BATCH], self._queued[MAX_BATCH:]
            try:
                records = await self.store.append_many([(e, at) for e, at, _ in batch])
            except Exception as exc:
                for _, _, stored in batch:
                    _settle(stored, exc)
                continue
            for (_, _, stored), record in zip(batch, records, strict=True):
                _settle(stored, record)  # a caller that went away: stored all the same

    async def record(
        self,
        action: str,
        actor: Principal | None,
        *,
        target: str = "",
        outcome: Outcome = "success",
        org: str | None = None,
        sub: str = "",
        email: str = "",
        client: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> AuditRecord | None:
        """Append one record; ``None`` when it could not be written (logged)."""
        entry = AuditEntry(
            action=action,
            org=org if org is not None else (actor.org if actor else ""),
            actor_sub=actor.sub if actor else sub,
            actor_email=actor.email if actor else email,
            target=target,
            outcome=outcome,
            client=client if client is not None else client_address(),
            detail=dict(detail or {}),
        ).cleaned()
        try:
            return await self._append(entry, self._clock())
        except Exception as exc:  # the action happened: never fail it for its record
            log.error(
                "audit.unrecorded",
                action=entry.action,
                org=entry.org,
                actor=entry.actor_sub,
                target=entry.target,
                outcome=entry.outcome,
                error=getattr(exc, "detail", type(exc).__name__),
                # a database that is down is expected; anything else is a bug to see
                exc_info=not isinstance(exc, SandboxError | OSError | TimeoutError),
            )
            return None

    @contextlib.asynccontextmanager
    async def action(
        self,
        action: str,
        actor: Principal | None,
        *,
        target: str = "",
        org: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[Note]:
        """Record ``action`` once the block ends, with the outcome it ended with. The
        block may change the note it is given (a target known only once it ran, facts
        to add to ``detail``)."""
        note = Note(target=target, detail=dict(detail or {}))
        try:
            yield note
        except Exception as exc:
            outcome, code = outcome_of(exc)
            await self.record(
                action,
                actor,
                target=note.target,
                org=org,
                outcome=outcome,
                detail={**note.detail, "error": code},
            )
            raise
        await self.record(action, actor, target=note.target, org=org, detail=note.detail)

    async def query(self, query: AuditQuery) -> list[AuditRecord]:
        return await self.store.query(query)

    async def verify(
        self, orgs: Sequence[str] | None = None, *, batch: int = 1000
    ) -> list[ChainReport]:
        """Each org's chain checked from its first record; the log's own head must be
        the last record (a head ahead of the records means the newest were removed)."""
        reports = []
        for org in orgs if orgs is not None else await self.store.orgs():
            reports.append(await self._verify_org(org, batch))
        return reports

    async def _verify_org(self, org: str, batch: int) -> ChainReport:
        seq, prev, total = 0, GENESIS, 0
        while True:
            records = await self.store.chain_of(org, seq, batch)
            report = verify(org, records, start_seq=seq + 1, start_prev=prev)
            total += report.records
            if not report.ok:
                return ChainReport(
                    org, total, report.head_seq, report.head_hash, report.broken_seq, report.reason
                )
            if not records:
                break
            seq, prev = report.head_seq, report.head_hash
        head_seq, head_hash = await self.store.head(org)
        if (head_seq, head_hash) != (seq, prev):
            return ChainReport(
                org,
                total,
                seq,
                prev,
                broken_seq=seq + 1,
                reason=f"the log's head is record {head_seq} but the records end at {seq} "
                "(the newest records were removed)",
            )
        return ChainReport(org, total, seq, prev)


def _settle(stored: asyncio.Future[AuditRecord], outcome: AuditRecord | Exception) -> None:
    """Tell a waiting ``record`` how its append went (unless it went away, or its event
    loop did: a test's server stopped with records queued)."""
    if stored.done():
        return
    with contextlib.suppress(RuntimeError):
        if isinstance(outcome, Exception):
            stored.set_exception(outcome)
        else:
            stored.set_result(outcome)


@dataclass
class Note:
    """What :meth:`AuditLog.action`'s block may still set."""

    target: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


def parse_time(raw: str | None, name: str) -> datetime | None:
    """``since``/``until``: a date (``2026-12-01``, midnight UTC) or an RFC 3339 time
    with a zone; ``Invalid`` (``invalid-<name>``) otherwise."""
    if raw is None or not raw.strip():
        return None
    text = raw.strip()
    try:
        if len(text) == 10:
            return datetime.fromisoformat(text + "T00:00:00+00:00")
        value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise Invalid(
            f"{name} must be a date (2026-12-01) or an RFC 3339 time with a zone "
            "(2026-12-01T10:00:00Z)",
            code=f"invalid-{name}",
        )
    return value


def parse_cursor(raw: str | None) -> int | None:
    """The ``cursor`` of a page: the ``seq`` the next page starts below."""
    if raw is None or raw == "":
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18 or int(raw) < 1:
        raise Invalid("cursor is not one this server gave out", code="invalid-cursor")
    return int(raw)


def org_query(
    caller: Principal,
    *,
    since: str | None = None,
    until: str | None = None,
    actor: str | None = None,
    action: str | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_LIMIT,
    newest_first: bool = True,
) -> AuditQuery:
    """An org admin's query of their own org's records; ``Forbidden`` for anyone else."""
    if not caller.is_org_admin:
        raise Forbidden("the audit log is for org admins", code="org-admin-required")
    return AuditQuery(
        org=caller.org,
        since=parse_time(since, "since"),
        until=parse_time(until, "until"),
        actor=(actor or "").strip(),
        action=(action or "").strip(),
        before=parse_cursor(cursor),
        limit=limit,
        newest_first=newest_first,
    )


def outcome_of(exc: BaseException) -> tuple[Outcome, str]:
    """How an action that raised ``exc`` ended, and the error code to note."""
    if isinstance(exc, Forbidden | Unauthenticated | QuotaExceeded):
        return "denied", exc.code
    if isinstance(exc, SandboxError):
        return "failure", exc.code
    return "failure", "internal-error"


class MemoryAuditStore:
    """The chains in memory: one lock, so appends are linear."""

    def __init__(self) -> None:
        self._records: dict[str, list[AuditRecord]] = {}
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def append(self, entry: AuditEntry, at: datetime) -> AuditRecord:
        (record,) = await self.append_many([(entry, at)])
        return record

    async def append_many(
        self, entries: Sequence[tuple[AuditEntry, datetime]]
    ) -> list[AuditRecord]:
        async with self._lock:
            out = []
            for entry, at in entries:
                entry = entry.cleaned()
                chain_ = self._records.setdefault(entry.org, [])
                prev = chain_[-1].hash if chain_ else GENESIS
                record = chain(entry, seq=len(chain_) + 1, at=at, prev=prev)
                chain_.append(record)
                out.append(record)
            return out

    async def query(self, query: AuditQuery) -> list[AuditRecord]:
        found = [r for r in self._records.get(query.org, []) if query.matches(r)]
        if query.newest_first:
            found.reverse()
        return found[: query.limit]

    async def orgs(self) -> list[str]:
        return sorted(self._records)

    async def chain_of(self, org: str, after: int, limit: int) -> list[AuditRecord]:
        return [r for r in self._records.get(org, []) if r.seq > after][:limit]

    async def head(self, org: str) -> tuple[int, str]:
        records = self._records.get(org)
        return (records[-1].seq, records[-1].hash) if records else (0, GENESIS)


def MemoryAuditLog() -> AuditLog:
    return AuditLog(MemoryAuditStore())


def make_audit_log(settings: Settings) -> AuditLog:
    """In memory for ``SANDBOX_STORE=memory``; else the SQL database of
    ``SANDBOX_DATABASE_URL`` - in Kubernetes mode too, as the gateway ledger does (the
    API server keeps Sandboxes, the SQL database the records)."""
    if settings.store == "memory":
        return MemoryAuditLog()
    from ..store.sql_audit import SqlAuditStore

    if settings.store == "kube" and not settings.database_url:
        log.warning(
            "audit_on_local_sqlite",
            detail="set SANDBOX_DATABASE_URL to a PostgreSQL database shared by every API "
            "replica, or each replica keeps an audit log of its own",
        )
    return AuditLog(SqlAuditStore(settings.effective_database_url))
