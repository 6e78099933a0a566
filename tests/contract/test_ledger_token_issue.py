"""A gateway token's issue on SQLite runs on the ledger's own connections (issue 10: not
through SQLAlchemy and aiosqlite) and is still a ``FULL`` (fsynced) commit, made in the
committer thread, not on the event loop (issue 11); the hot path's reads and metering
writes stay ``NORMAL`` on the loop."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from openova_sandbox.domain.ledger import GatewayIdentity
from openova_sandbox.store import sql_ledger, sql_sqlite
from openova_sandbox.store.sql_ledger import SqlLedger

DEV = GatewayIdentity("aider-dev", "acme", "sub-dev", "Dev@Acme.com", "acme")


async def test_a_token_issue_is_a_full_commit_on_the_ledgers_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop_thread = threading.get_ident()
    levels: list[tuple[bool, int]] = []
    commits: list[tuple[int, bool]] = []  # (synchronous, on the loop's thread?)
    real = sql_ledger._SqliteHotPath._transaction
    real_commit = sql_sqlite._commit

    def recording(connection: sqlite3.Connection, fn: object, write: bool) -> object:
        (level,) = connection.execute("PRAGMA synchronous").fetchone()
        levels.append((write, level))
        return real(connection, fn, write)  # type: ignore[arg-type]

    def committing(connection: sqlite3.Connection) -> None:
        (level,) = connection.execute("PRAGMA synchronous").fetchone()
        commits.append((level, threading.get_ident() == loop_thread))
        real_commit(connection)

    monkeypatch.setattr(sql_ledger._SqliteHotPath, "_transaction", staticmethod(recording))
    monkeypatch.setattr(sql_sqlite, "_commit", committing)
    ledger = SqlLedger(f"sqlite+aiosqlite:///{tmp_path / 'sandbox.db'}")
    try:
        first = await ledger.issue_token(DEV)
        second = await ledger.issue_token(DEV)  # a new one replaces the old
        assert first != second
        assert await ledger.authenticate(first) is None
        assert await ledger.authenticate(second) == DEV
        # the issues were commits at FULL (2) off the loop, the lookups reads at NORMAL (1)
        assert commits == [(2, False), (2, False)]
        assert levels == [(False, 1), (False, 1)]
        await ledger.revoke("acme", "aider-dev")
        assert await ledger.authenticate(second) is None
    finally:
        await ledger.close()
