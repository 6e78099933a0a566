"""The SQL store's tables, as the queries see them (migrations create them).

- ``sandbox_objects``: one row per live object; the full Kubernetes document in
  ``document`` plus the columns queries filter or sort on. ``created_version`` (the
  resourceVersion of the create) gives an exact newest-first order even when two objects
  share a creation second.
- ``sandbox_events``: the change log, keyed by the global resourceVersion; watchers
  replay it. Old rows are compacted (see ``docs/store.md``).
- ``sandbox_store_state``: a single row (``id = 1``) holding the resourceVersion counter
  and the compaction mark. Every write transaction starts by incrementing this row, which
  both allocates the next version and serialises writers (see ``sql.py``).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

Document = JSON().with_variant(JSONB(), "postgresql")

objects = Table(
    "sandbox_objects",
    metadata,
    Column("namespace", String(253), primary_key=True),
    Column("name", String(253), primary_key=True),
    Column("uid", String(36), nullable=False, unique=True),
    Column("resource_version", BigInteger, nullable=False),
    Column("created_version", BigInteger, nullable=False, index=True),
    Column("generation", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("deleted_at", DateTime(timezone=True), nullable=True),
    Column("labels", Document, nullable=False),
    Column("document", Document, nullable=False),
)

events = Table(
    "sandbox_events",
    metadata,
    Column("resource_version", BigInteger, primary_key=True, autoincrement=False),
    Column("type", String(16), nullable=False),
    Column("namespace", String(253), nullable=False),
    Column("name", String(253), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("document", Document, nullable=False),
)

state = Table(
    "sandbox_store_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("resource_version", BigInteger, nullable=False),
    Column("compacted_version", BigInteger, nullable=False),
)
