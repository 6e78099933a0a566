"""The sandboxes' secrets on SQL (SQLite or PostgreSQL); migration 0006 creates the table
(``services/sandbox_secrets.py`` is the service and seals the values; this only keeps
rows).

``sandbox_secrets``: one row per secret, keyed by the sandbox's uid (a sandbox deleted
and created again under the same name is a new uid and sees none of the old ones) and
the secret's name, holding the value already encrypted by the service (the database
never sees it in clear), its size and when it was created and last set. Like the ledger
and the console sessions: its own engine on the store's database (Kubernetes mode:
``SANDBOX_DATABASE_URL``, shared by every replica), migrated at start, every call under
the store's rule (``sql_retry``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from .sql_tables import MigratedTables

metadata = MetaData()

secrets_table = Table(
    "sandbox_secrets",
    metadata,
    Column("sandbox_uid", String(64), primary_key=True),
    Column("name", String(128), primary_key=True),
    Column("sealed", Text, nullable=False),
    Column("size", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True)
class SecretRow:
    """One stored secret; ``sealed`` is the encrypted value (kept out of ``repr``)."""

    uid: str
    name: str
    sealed: str = field(repr=False)
    size: int
    created_at: float
    updated_at: float


def _when(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _epoch(value: datetime) -> float:
    if value.tzinfo is None:  # SQLite hands timestamps back naive (they were UTC)
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def _row(record: object) -> SecretRow:
    r = record._mapping  # type: ignore[attr-defined]
    return SecretRow(
        uid=r["sandbox_uid"],
        name=r["name"],
        sealed=r["sealed"],
        size=int(r["size"]),
        created_at=_epoch(r["created_at"]),
        updated_at=_epoch(r["updated_at"]),
    )


class SqlSecretBackend(MigratedTables):
    """The rows of ``sandbox_secrets`` by sandbox uid and name."""

    def __init__(self, url: str, *, call_timeout: float = 5.0, echo: bool = False) -> None:
        super().__init__(url, name="sandbox_secrets", call_timeout=call_timeout, echo=echo)

    async def list(self, uid: str) -> list[SecretRow]:
        async def work(connection: AsyncConnection) -> list[SecretRow]:
            result = await connection.execute(
                select(secrets_table)
                .where(secrets_table.c.sandbox_uid == uid)
                .order_by(secrets_table.c.name)
            )
            return [_row(r) for r in result]

        rows: list[SecretRow] = await self._read("sandbox_secrets.list", work)
        return rows

    async def get(self, uid: str, name: str) -> SecretRow | None:
        async def work(connection: AsyncConnection) -> SecretRow | None:
            result = await connection.execute(
                select(secrets_table).where(
                    secrets_table.c.sandbox_uid == uid, secrets_table.c.name == name
                )
            )
            found = result.first()
            return None if found is None else _row(found)

        row: SecretRow | None = await self._read("sandbox_secrets.get", work)
        return row

    async def put(
        self, uid: str, name: str, sealed: str, size: int, *, now: float, max_count: int
    ) -> bool:
        """Create or replace; ``False`` (nothing written) when the secret is new and the
        sandbox already has ``max_count`` secrets."""

        async def work(connection: AsyncConnection) -> bool:
            where = (secrets_table.c.sandbox_uid == uid, secrets_table.c.name == name)
            changed = await connection.execute(
                update(secrets_table)
                .where(*where)
                .values(sealed=sealed, size=size, updated_at=_when(now))
            )
            if changed.rowcount:
                return True
            count = await connection.scalar(
                select(func.count()).where(secrets_table.c.sandbox_uid == uid)
            )
            if int(count or 0) >= max_count:
                return False
            await connection.execute(
                insert(secrets_table).values(
                    sandbox_uid=uid,
                    name=name,
                    sealed=sealed,
                    size=size,
                    created_at=_when(now),
                    updated_at=_when(now),
                )
            )
            return True

        written: bool = await self._write("sandbox_secrets.put", work)
        return written

    async def delete_sandbox(self, uid: str) -> int:
        async def work(connection: AsyncConnection) -> int:
            result = await connection.execute(
                delete(secrets_table).where(secrets_table.c.sandbox_uid == uid)
            )
            return int(result.rowcount or 0)

        removed: int = await self._write("sandbox_secrets.delete_sandbox", work)
        return removed

    async def sandboxes(self) -> dict[str, float]:
        """Every sandbox uid with secrets, with when its oldest one was created."""

        async def work(connection: AsyncConnection) -> dict[str, float]:
            result = await connection.execute(
                select(secrets_table.c.sandbox_uid, func.min(secrets_table.c.created_at)).group_by(
                    secrets_table.c.sandbox_uid
                )
            )
            return {str(uid): _epoch(oldest) for uid, oldest in result}

        found: dict[str, float] = await self._read("sandbox_secrets.sandboxes", work)
        return found
