"""A gateway token's issue on SQLite runs on the ledger's own connection (issue 10: not
through SQLAlchemy and aiosqlite) and is still a ``FULL`` (fsynced) commit; the
connection goes back to ``NORMAL`` for the hot path's metering writes after it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from openova_sandbox.domain.ledger import GatewayIdentity
from openova_sandbox.store import sql_ledger
from openova_sandbox.store.sql_ledger import SqlLedger

DEV = GatewayIdentity("aider-dev", "acme", "sub-dev", "Dev@Acme.com", "acme")


async def test_a_token_issue_is_a_full_commit_on_the_ledgers_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    levels: list[tuple[bool, int]] = []
    real = sql_ledger._SqliteHotPath._transaction

    def recording(connection: sqlite3.Connection, fn: object, write: bool) -> object:
        (level,) = connection.execute("PRAGMA synchronous").fetchone()
        levels.append((write, level))
        return real(connection, fn, write)  # type: ignore[arg-type]

    monkeypatch.setattr(sql_ledger._SqliteHotPath, "_transaction", staticmethod(recording))
    ledger = SqlLedger(f"sqlite+aiosqlite:///{tmp_path / 'sandbox.db'}")
    try:
        first = await ledger.issue_token(DEV)
        second = await ledger.issue_token(DEV)  # a new one replaces the old
        assert first != second
        assert await ledger.authenticate(first) is None
        assert await ledger.authenticate(second) == DEV
        # the issues were writes at FULL (2), the lookups reads back at NORMAL (1)
        assert levels == [(True, 2), (True, 2), (False, 1), (False, 1)]
        await ledger.revoke("acme", "aider-dev")
        assert await ledger.authenticate(second) is None
    finally:
        await ledger.close()
