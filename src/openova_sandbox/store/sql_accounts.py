"""Personal access tokens and quota overrides on SQL (SQLite or PostgreSQL); migration
0003 creates the tables.

- ``sandbox_access_tokens``: one row per token: its SHA-256 (never the token), label,
  owner (subject, email, org and the rest of the identity at creation), creation,
  expiry, last use and revocation. Looked up by the digest's unique index.
- ``sandbox_quotas``: one row per (scope, namespace, name, quota) an org admin set; a
  quota without a row has the operator's default.

Like the gateway's ledger, this has its own engine on the store's database (in
Kubernetes mode the SQL database of ``SANDBOX_DATABASE_URL``: tokens and quotas are not
Kubernetes objects), runs the migrations at start, and every call runs under the
store's rule (``sql_retry``: a time budget, one retry on a fresh connection,
``BackendUnavailable`` for the rest).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, cast

import structlog
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    MetaData,
    String,
    Table,
    and_,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from ..domain.access_tokens import AccessToken
from ..domain.ledger import as_utc
from ..domain.quotas import QuotaKey, QuotaName, QuotaOverride, QuotaScope
from .sql_tables import MigratedTables

log = structlog.get_logger(__name__)

metadata = MetaData()
_Document = JSON().with_variant(JSONB(), "postgresql")

access_tokens = Table(
    "sandbox_access_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("name", String(100), nullable=False),
    Column("owner_sub", String(255), nullable=False),
    Column("owner_email", String(320), nullable=False),
    Column("org", String(253), nullable=False),
    Column("identity", _Document, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("last_used_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

quotas = Table(
    "sandbox_quotas",
    metadata,
    Column("scope", String(16), primary_key=True),
    Column("namespace", String(253), primary_key=True),
    Column("name", String(320), primary_key=True),
    Column("quota", String(32), primary_key=True),
    Column("max_value", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("updated_by", String(320), nullable=False),
)


def _token_of(row: Any) -> AccessToken:
    return AccessToken(
        id=row.id,
        name=row.name,
        owner_sub=row.owner_sub,
        owner_email=row.owner_email,
        org=row.org,
        identity=cast(Mapping[str, Any], row.identity or {}),
        created_at=as_utc(row.created_at),
        expires_at=as_utc(row.expires_at),
        last_used_at=as_utc(row.last_used_at) if row.last_used_at is not None else None,
        revoked_at=as_utc(row.revoked_at) if row.revoked_at is not None else None,
    )


class SqlAccounts(MigratedTables):
    """The token and quota tables of one database (``TokenStore`` and ``QuotaStore`` of
    ``services.tokens`` / ``services.quotas``)."""

    def __init__(self, url: str, *, call_timeout: float = 5.0, echo: bool = False) -> None:
        super().__init__(url, name="accounts", call_timeout=call_timeout, echo=echo)

    # --- tokens -----------------------------------------------------------------------

    async def add_token(self, token: AccessToken, digest: str, *, max_active: int) -> bool:
        """Store ``token`` unless its owner already holds ``max_active`` usable tokens
        (``False``). The count and the insert are one transaction (SQLite: one writer at a
        time; PostgreSQL: the owner's rows are locked first)."""

        async def work(connection: AsyncConnection) -> bool:
            owner = and_(
                access_tokens.c.org == token.org,
                access_tokens.c.owner_sub == token.owner_sub,
                access_tokens.c.revoked_at.is_(None),
                access_tokens.c.expires_at > as_utc(token.created_at),
            )
            if not self._sqlite:
                await connection.execute(select(access_tokens.c.id).where(owner).with_for_update())
            held = await connection.scalar(
                select(func.count()).select_from(access_tokens).where(owner)
            )
            if int(held or 0) >= max_active:
                return False
            await connection.execute(
                insert(access_tokens).values(
                    id=token.id,
                    token_sha256=digest,
                    name=token.name,
                    owner_sub=token.owner_sub,
                    owner_email=token.owner_email,
                    org=token.org,
                    identity=dict(token.identity),
                    created_at=as_utc(token.created_at),
                    expires_at=as_utc(token.expires_at),
                    last_used_at=None,
                    revoked_at=None,
                )
            )
            return True

        return bool(await self._write("accounts.add_token", work))

    async def find_token(self, digest: str) -> AccessToken | None:
        async def work(connection: AsyncConnection) -> AccessToken | None:
            result = await connection.execute(
                select(access_tokens).where(access_tokens.c.token_sha256 == digest)
            )
            row = result.first()
            return _token_of(row) if row is not None else None

        found: AccessToken | None = await self._read("accounts.find_token", work)
        return found

    async def get_token(self, token_id: str) -> AccessToken | None:
        async def work(connection: AsyncConnection) -> AccessToken | None:
            result = await connection.execute(
                select(access_tokens).where(access_tokens.c.id == token_id)
            )
            row = result.first()
            return _token_of(row) if row is not None else None

        found: AccessToken | None = await self._read("accounts.get_token", work)
        return found

    async def list_tokens(self, org: str, owner_sub: str | None) -> list[AccessToken]:
        async def work(connection: AsyncConnection) -> list[AccessToken]:
            query = select(access_tokens).where(
                access_tokens.c.org == org, access_tokens.c.revoked_at.is_(None)
            )
            if owner_sub is not None:
                query = query.where(access_tokens.c.owner_sub == owner_sub)
            query = query.order_by(access_tokens.c.created_at.desc(), access_tokens.c.id)
            return [_token_of(row) for row in (await connection.execute(query)).all()]

        listed: list[AccessToken] = await self._read("accounts.list_tokens", work)
        return listed

    async def revoke_token(self, token_id: str, at: datetime) -> bool:
        async def work(connection: AsyncConnection) -> bool:
            result = await connection.execute(
                update(access_tokens)
                .where(access_tokens.c.id == token_id, access_tokens.c.revoked_at.is_(None))
                .values(revoked_at=as_utc(at))
            )
            return bool(result.rowcount)

        return bool(await self._write("accounts.revoke_token", work))

    async def touch_token(self, token_id: str, at: datetime, *, older_than: datetime) -> None:
        """Record a use at ``at`` unless one after ``older_than`` is recorded already."""

        async def work(connection: AsyncConnection) -> None:
            await connection.execute(
                update(access_tokens)
                .where(
                    access_tokens.c.id == token_id,
                    or_(
                        access_tokens.c.last_used_at.is_(None),
                        access_tokens.c.last_used_at < as_utc(older_than),
                    ),
                )
                .values(last_used_at=as_utc(at))
            )

        await self._write("accounts.touch_token", work)

    async def purge_tokens(self, before: datetime) -> int:
        """Forget tokens revoked or expired before ``before``."""

        async def work(connection: AsyncConnection) -> int:
            result = await connection.execute(
                delete(access_tokens).where(
                    or_(
                        access_tokens.c.revoked_at < as_utc(before),
                        access_tokens.c.expires_at < as_utc(before),
                    )
                )
            )
            return int(result.rowcount or 0)

        return int(await self._write("accounts.purge_tokens", work))

    # --- quotas -----------------------------------------------------------------------

    async def quota_overrides(self, namespace: str) -> list[QuotaOverride]:
        async def work(connection: AsyncConnection) -> list[QuotaOverride]:
            result = await connection.execute(
                select(quotas)
                .where(quotas.c.namespace == namespace)
                .order_by(quotas.c.scope, quotas.c.name, quotas.c.quota)
            )
            return [
                QuotaOverride(
                    key=QuotaKey(cast(QuotaScope, row.scope), row.namespace, row.name),
                    quota=cast(QuotaName, row.quota),
                    value=int(row.max_value),
                    updated_at=as_utc(row.updated_at),
                    updated_by=row.updated_by,
                )
                for row in result.all()
            ]

        found: list[QuotaOverride] = await self._read("accounts.quota_overrides", work)
        return found

    async def set_quotas(
        self,
        key: QuotaKey,
        values: Mapping[QuotaName, int | None],
        *,
        at: datetime,
        by: str,
    ) -> None:
        """Set each named quota (``None``: back to the default), in one transaction."""

        async def work(connection: AsyncConnection) -> None:
            for quota, value in values.items():
                where = and_(
                    quotas.c.scope == key.scope,
                    quotas.c.namespace == key.namespace,
                    quotas.c.name == key.name,
                    quotas.c.quota == quota,
                )
                await connection.execute(delete(quotas).where(where))
                if value is not None:
                    await connection.execute(
                        insert(quotas).values(
                            scope=key.scope,
                            namespace=key.namespace,
                            name=key.name,
                            quota=quota,
                            max_value=value,
                            updated_at=as_utc(at),
                            updated_by=by,
                        )
                    )

        await self._write("accounts.set_quotas", work)


__all__: Sequence[str] = ("SqlAccounts", "access_tokens", "quotas")
