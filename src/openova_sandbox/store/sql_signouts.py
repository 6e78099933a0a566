"""Token cookies signed out of, on SQL (SQLite or PostgreSQL); migration 0007 creates the
table, 0008 numbers its rows (``auth/signouts.py`` is the service, which checks them in
memory; this is its ``SignOutBackend``, read in full at start, then for the rows recorded
since every few seconds, and written through at each sign-out).

``sandbox_signed_out_tokens``: one row per token signed out of, keyed by its subject and
``jti``, with the token's expiry, after which the row is removed (at start and at each
write), and ``recorded``: the order of the writes. Each write numbers its row one above
the highest in the table, the writers taking turns (SQLite: one writer at a time;
PostgreSQL: the table locked against other writers until the commit, readers not
blocked), so the rows a reader sees are always numbers 1..n with none missing: reading
``recorded > <the highest seen>`` misses no sign-out, whatever the replicas' clocks. The
row holding the highest number is kept when it expires (until a later write), so the
numbers never go back. Only what names the token is kept: never the token itself. Like the console
sessions: its own engine on the store's database (Kubernetes mode:
``SANDBOX_DATABASE_URL``), migrations at start, every call under the store's rule
(``sql_retry``).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    MetaData,
    String,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import Delete

from .sql_tables import MigratedTables

metadata = MetaData()

signed_out = Table(
    "sandbox_signed_out_tokens",
    metadata,
    Column("sub", Text, primary_key=True),
    Column("jti", String(256), primary_key=True),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("recorded", BigInteger, nullable=False, server_default="0"),
)
# the highest number recorded (0: none)
_highest = select(func.coalesce(func.max(signed_out.c.recorded), 0)).scalar_subquery()


def _when(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _expired(now: float) -> Delete:
    """Remove the rows expired at ``now``, but the one holding the highest number (the
    numbers never go back)."""
    return delete(signed_out).where(
        (signed_out.c.expires_at <= _when(now)) & (signed_out.c.recorded < _highest)
    )


def _epoch(value: datetime) -> float:
    # SQLite hands the time back without its zone: it was stored in UTC
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


class SqlSignOutBackend(MigratedTables):
    """``add``/``load``/``prune`` of ``(sub, jti, expires_at)`` rows, and ``latest``/
    ``since``: the order they were recorded in."""

    def __init__(self, url: str, *, call_timeout: float = 5.0, echo: bool = False) -> None:
        super().__init__(url, name="signouts", call_timeout=call_timeout, echo=echo)

    async def add(self, sub: str, jti: str, expires_at: float, now: float) -> None:
        """Record one sign-out (again: its expiry replaced, numbered anew), the expired
        ones removed in the same transaction."""
        row = (signed_out.c.sub == sub) & (signed_out.c.jti == jti)

        async def work(connection: AsyncConnection) -> None:
            if connection.dialect.name == "postgresql":
                # writers take turns until the commit (SQLite's immediate transaction
                # does the same): a row numbered n is visible only after n - 1 is
                await connection.execute(
                    text("LOCK TABLE sandbox_signed_out_tokens IN EXCLUSIVE MODE")
                )
            number = int((await connection.execute(select(_highest))).scalar_one()) + 1
            await connection.execute(delete(signed_out).where(row))
            await connection.execute(
                insert(signed_out).values(
                    sub=sub, jti=jti, expires_at=_when(expires_at), recorded=number
                )
            )
            await connection.execute(_expired(now))

        await self._write("signouts.add", work)

    async def load(self, now: float, limit: int) -> list[tuple[str, str, float]]:
        """The sign-outs that have not expired at ``now``, at most ``limit`` of them,
        the latest to expire first."""

        async def work(connection: AsyncConnection) -> list[tuple[str, str, float]]:
            rows = await connection.execute(
                select(signed_out.c.sub, signed_out.c.jti, signed_out.c.expires_at)
                .where(signed_out.c.expires_at > _when(now))
                .order_by(signed_out.c.expires_at.desc())
                .limit(limit)
            )
            return [(str(sub), str(jti), _epoch(exp)) for sub, jti, exp in rows]

        result: list[tuple[str, str, float]] = await self._read("signouts.load", work)
        return result

    async def latest(self) -> int:
        """The highest number recorded (0 when none is): :meth:`since` it reads what is
        recorded later."""

        async def work(connection: AsyncConnection) -> int:
            return int((await connection.execute(select(_highest))).scalar_one())

        found: int = await self._read("signouts.latest", work)
        return found

    async def since(self, after: int, limit: int) -> list[tuple[str, str, float, int]]:
        """The sign-outs recorded after number ``after`` (expired ones too: the reader
        passes over them), at most ``limit`` of them, in the order they were recorded:
        ``(sub, jti, expires_at, number)``."""

        async def work(connection: AsyncConnection) -> list[tuple[str, str, float, int]]:
            rows = await connection.execute(
                select(
                    signed_out.c.sub,
                    signed_out.c.jti,
                    signed_out.c.expires_at,
                    signed_out.c.recorded,
                )
                .where(signed_out.c.recorded > after)
                .order_by(signed_out.c.recorded)
                .limit(limit)
            )
            return [(str(sub), str(jti), _epoch(exp), int(n)) for sub, jti, exp, n in rows]

        result: list[tuple[str, str, float, int]] = await self._read("signouts.since", work)
        return result

    async def prune(self, now: float) -> int:
        async def work(connection: AsyncConnection) -> int:
            result = await connection.execute(_expired(now))
            return int(result.rowcount or 0)

        removed: int = await self._write("signouts.prune", work)
        return removed
