"""Engines for the SQL store: URL rules, SQLite durability settings, and migrations.

SQLite is opened in WAL mode with ``synchronous=FULL`` (a commit is fsynced before it
returns, so a returned write survives a crash, power loss included; an engine made with
``synchronous="NORMAL"`` is for writes that may be lost to power loss but never to a
process crash - the store's status writes, docs/store.md), foreign keys on and a busy timeout
shorter than the per-call budget, so a locked database reports an error the store can
map instead of being cancelled mid-call. SQLAlchemy takes over ``BEGIN`` from the
``sqlite3`` module (whose legacy mode does not begin a transaction before a SELECT),
so a read transaction is a real snapshot.

PostgreSQL uses asyncpg with a bounded connect timeout and pre-ping, so a pool whose
server restarted is noticed at checkout.
"""

from __future__ import annotations

import asyncio
import weakref
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ..domain.errors import Invalid

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 4000
MIGRATION_LOCK_KEY = 0x5A4E_B0C5  # pg_advisory_xact_lock key: one migrator at a time

_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}


def parse_url(raw: str) -> URL:
    """Accept the async URLs and their plain spellings (``sqlite:///``, ``postgresql://``)."""
    try:
        url = make_url(raw)
    except ArgumentError as exc:
        raise Invalid(f"database URL is not valid: {exc}", code="invalid-settings") from exc
    driver = _DRIVERS.get(url.drivername)
    if driver is None:
        raise Invalid(
            f'database URL scheme "{url.drivername}" is not supported: '
            "use sqlite+aiosqlite:///<path> or postgresql+asyncpg://...",
            code="invalid-settings",
        )
    url = url.set(drivername=driver)
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        raise Invalid(
            "an in-memory SQLite database cannot be shared by the store's connections: "
            "give a file path, or use SANDBOX_STORE=memory",
            code="invalid-settings",
        )
    return url


def safe_url(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def create_engine(
    url: URL, *, echo: bool, connect_timeout: float, synchronous: str = "FULL"
) -> AsyncEngine:
    """``synchronous``: SQLite's setting for this engine's connections (``FULL`` or
    ``NORMAL``); PostgreSQL keeps the server's own."""
    if url.get_backend_name() == "sqlite":
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous={synchronous!r}: FULL or NORMAL")
        return _sqlite_engine(
            url, echo=echo, connect_timeout=connect_timeout, synchronous=synchronous
        )
    return create_async_engine(
        url,
        echo=echo,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=5,
        pool_timeout=connect_timeout,
        connect_args={"timeout": connect_timeout, "command_timeout": connect_timeout},
    )


def _sqlite_engine(
    url: URL, *, echo: bool, connect_timeout: float, synchronous: str
) -> AsyncEngine:
    assert url.database is not None  # parse_url refused the rest
    Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(
        url,
        echo=echo,
        pool_timeout=connect_timeout,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN (below)
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute(f"PRAGMA synchronous = {synchronous}")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "")
        connection.exec_driver_sql("BEGIN IMMEDIATE" if mode == "immediate" else "BEGIN")

    return engine


# Alembic keeps its running environment in module globals, so two migrations must not
# interleave inside one process (one lock per event loop; other processes are kept
# apart by the database: an advisory lock on PostgreSQL, BEGIN IMMEDIATE on SQLite).
_MIGRATION_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def migration_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _MIGRATION_LOCKS.get(loop)
    if lock is None:
        lock = _MIGRATION_LOCKS[loop] = asyncio.Lock()
    return lock


def migrate(connection: Connection) -> None:
    """Bring the schema to head (runs inside ``AsyncConnection.run_sync``)."""
    if connection.dialect.name == "postgresql":
        # Two processes starting together must not both create the tables.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
