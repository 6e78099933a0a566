"""The audit log's tables, as its queries see them (migration 0004 creates them).

- ``sandbox_audit``: one row per record, keyed by (org, seq); ``prev`` and ``hash``
  chain each org's records (``domain/audit.py``). ``detail`` is the JSON text exactly as
  hashed. Triggers refuse ``UPDATE`` and ``DELETE`` (append-only; whoever can drop a
  trigger can still change rows, which ``verify`` then shows).
- ``sandbox_audit_heads``: one row per org, its newest (seq, hash). An append locks it
  (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's write transaction holds the file
  lock), so each org's chain grows one record at a time in every process.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, MetaData, String, Table, Text

metadata = MetaData()

records = Table(
    "sandbox_audit",
    metadata,
    Column("org", String(253), primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor_sub", String(255), nullable=False),
    Column("actor_email", String(320), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(512), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("client", String(64), nullable=False),
    Column("detail", Text, nullable=False),
    Column("prev", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

heads = Table(
    "sandbox_audit_heads",
    metadata,
    Column("org", String(253), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)
