"""The console's OIDC sessions on SQL (SQLite or PostgreSQL); migration 0005 creates the
table (``auth/oidc_sessions.py`` is the service; this is its ``SessionBackend``).

``sandbox_oidc_sessions``: one row per session, keyed by the SHA-256 of the session id
(the table gives no cookie away), holding the record already encrypted by the service
(the database never sees a token in clear) and its expiry, by which expired rows are
removed. Like the ledger and the access tokens: its own engine on the store's database
(Kubernetes mode: ``SANDBOX_DATABASE_URL``, so every API replica sees every session),
migrations at start, every call under the store's rule (``sql_retry``).
"""

from __future__ import annotations

from datetime import UTC, datetime

import structlog
from sqlalchemy import Column, DateTime, MetaData, String, Table, Text, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from .sql_tables import MigratedTables

log = structlog.get_logger(__name__)

metadata = MetaData()

oidc_sessions = Table(
    "sandbox_oidc_sessions",
    metadata,
    Column("id_sha256", String(64), primary_key=True),
    Column("record", Text, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)


def _when(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


class SqlSessionBackend(MigratedTables):
    """``get``/``put``/``delete``/``prune`` of encrypted session records by key."""

    def __init__(self, url: str, *, call_timeout: float = 5.0, echo: bool = False) -> None:
        super().__init__(url, name="oidc_sessions", call_timeout=call_timeout, echo=echo)

    async def get(self, key: str) -> bytes | None:
        async def work(connection: AsyncConnection) -> bytes | None:
            value = await connection.scalar(
                select(oidc_sessions.c.record).where(oidc_sessions.c.id_sha256 == key)
            )
            return None if value is None else str(value).encode("ascii")

        result: bytes | None = await self._read("oidc_sessions.get", work)
        return result

    async def put(self, key: str, blob: bytes, expires_at: float) -> None:
        async def work(connection: AsyncConnection) -> None:
            await connection.execute(delete(oidc_sessions).where(oidc_sessions.c.id_sha256 == key))
            await connection.execute(
                insert(oidc_sessions).values(
                    id_sha256=key, record=blob.decode("ascii"), expires_at=_when(expires_at)
                )
            )

        await self._write("oidc_sessions.put", work)

    async def delete(self, key: str) -> None:
        async def work(connection: AsyncConnection) -> None:
            await connection.execute(delete(oidc_sessions).where(oidc_sessions.c.id_sha256 == key))

        await self._write("oidc_sessions.delete", work)

    async def prune(self, now: float) -> int:
        async def work(connection: AsyncConnection) -> int:
            result = await connection.execute(
                delete(oidc_sessions).where(oidc_sessions.c.expires_at <= _when(now))
            )
            return int(result.rowcount or 0)

        removed: int = await self._write("oidc_sessions.prune", work)
        return removed
