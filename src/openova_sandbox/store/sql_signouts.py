"""Token cookies signed out of, on SQL (SQLite or PostgreSQL); migration 0007 creates the
table (``auth/signouts.py`` is the service, which checks them in memory; this is its
``SignOutBackend``, read once at start and written through at each sign-out).

``sandbox_signed_out_tokens``: one row per token signed out of, keyed by its subject and
``jti``, with the token's expiry, after which the row is removed (at start and at each
write). Only what names the token is kept: never the token itself. Like the console
sessions: its own engine on the store's database (Kubernetes mode:
``SANDBOX_DATABASE_URL``), migrations at start, every call under the store's rule
(``sql_retry``).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Column, DateTime, MetaData, String, Table, Text, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from .sql_tables import MigratedTables

metadata = MetaData()

signed_out = Table(
    "sandbox_signed_out_tokens",
    metadata,
    Column("sub", Text, primary_key=True),
    Column("jti", String(256), primary_key=True),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)


def _when(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _epoch(value: datetime) -> float:
    # SQLite hands the time back without its zone: it was stored in UTC
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


class SqlSignOutBackend(MigratedTables):
    """``add``/``load``/``prune`` of ``(sub, jti, expires_at)`` rows."""

    def __init__(self, url: str, *, call_timeout: float = 5.0, echo: bool = False) -> None:
        super().__init__(url, name="signouts", call_timeout=call_timeout, echo=echo)

    async def add(self, sub: str, jti: str, expires_at: float, now: float) -> None:
        """Record one sign-out (again: its expiry replaced), the expired ones removed in
        the same transaction."""
        row = (signed_out.c.sub == sub) & (signed_out.c.jti == jti)

        async def work(connection: AsyncConnection) -> None:
            await connection.execute(
                delete(signed_out).where(signed_out.c.expires_at <= _when(now))
            )
            await connection.execute(delete(signed_out).where(row))
            await connection.execute(
                insert(signed_out).values(sub=sub, jti=jti, expires_at=_when(expires_at))
            )

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

    async def prune(self, now: float) -> int:
        async def work(connection: AsyncConnection) -> int:
            result = await connection.execute(
                delete(signed_out).where(signed_out.c.expires_at <= _when(now))
            )
            return int(result.rowcount or 0)

        removed: int = await self._write("signouts.prune", work)
        return removed
