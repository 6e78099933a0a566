"""Which driver failures count as transient (retried once) - built from the real
exception classes of SQLAlchemy, asyncpg and sqlite3."""

from __future__ import annotations

import sqlite3

import asyncpg.exceptions as pg
import pytest
from sqlalchemy import exc as sa

from openova_sandbox.store.sql_errors import describe, is_database_error, is_transient


def wrapped(cls: type[sa.DBAPIError], orig: BaseException, **kw: bool) -> sa.DBAPIError:
    return cls("SELECT 1", {}, orig, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connect call failed"),
        TimeoutError(),
        sa.TimeoutError("QueuePool limit reached"),
        sa.DisconnectionError("gone"),
        wrapped(sa.OperationalError, sqlite3.OperationalError("database is locked")),
        wrapped(sa.InterfaceError, Exception("connection is closed")),
        wrapped(sa.DBAPIError, Exception("x"), connection_invalidated=True),
        pg.AdminShutdownError("terminating connection due to administrator command"),
        pg.CannotConnectNowError("the database system is starting up"),
        pg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        pg.SerializationError("could not serialize access"),
        pg.TooManyConnectionsError("sorry, too many clients already"),
    ],
    ids=type,
)
def test_transient(error: BaseException) -> None:
    assert is_database_error(error)
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        wrapped(sa.IntegrityError, sqlite3.IntegrityError("UNIQUE constraint failed")),
        wrapped(sa.ProgrammingError, Exception("relation does not exist")),
        pg.UndefinedTableError('relation "x" does not exist'),
        pg.UniqueViolationError("duplicate key"),
    ],
    ids=type,
)
def test_permanent(error: BaseException) -> None:
    assert is_database_error(error)
    assert not is_transient(error)


def test_our_own_bugs_are_not_database_errors() -> None:
    assert not is_database_error(KeyError("metadata"))
    assert not is_database_error(ValueError("x"))


def test_describe_is_one_short_line() -> None:
    error = wrapped(sa.OperationalError, sqlite3.OperationalError("unable to open\nsecond line"))
    assert describe(error) == "OperationalError: unable to open"
