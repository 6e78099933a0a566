"""Which database failures are the backend's fault, and which deserve one more try.

The SQL store maps every failure that comes from the database or its driver to
``BackendUnavailable`` (HTTP 503); nothing from SQLAlchemy, asyncpg or sqlite3 leaves
the adapter. A *transient* failure - the connection could not be made or was lost, the
server is starting or shutting down, the call ran out of time, the SQLite file is
locked - is retried once on fresh connections; any other database error is reported at
once (retrying a failing statement only doubles the wait).
"""

from __future__ import annotations

import sqlite3

from sqlalchemy import exc as sa

# PostgreSQL SQLSTATE classes: 08 connection exception, 53 insufficient resources,
# 57 operator intervention (admin shutdown, cannot connect now), 40 transaction rollback
# (serialization failure, deadlock: retrying is the prescribed answer).
_TRANSIENT_SQLSTATE_CLASSES = ("08", "53", "57", "40")


def _from_asyncpg(exc: BaseException) -> bool:
    # Classified by origin rather than imported: asyncpg ships no type information.
    return type(exc).__module__.split(".")[0] == "asyncpg"


def is_database_error(exc: BaseException) -> bool:
    return isinstance(
        exc, (sa.SQLAlchemyError, sqlite3.Error, OSError, TimeoutError)
    ) or _from_asyncpg(exc)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (TimeoutError, OSError, sa.DisconnectionError, sa.TimeoutError)):
        return True
    if isinstance(exc, sqlite3.Error):  # the store's own SQLite connections (sql_sqlite)
        # locked, I/O, cannot open: like SQLAlchemy's OperationalError below
        return isinstance(exc, sqlite3.OperationalError)
    if isinstance(exc, (sa.OperationalError, sa.InterfaceError)):
        return True
    if isinstance(exc, sa.DBAPIError):
        if exc.connection_invalidated:
            return True
        return _transient_driver_error(exc.orig)
    return _transient_driver_error(exc)


def _transient_driver_error(exc: BaseException | None) -> bool:
    if exc is None:
        return False
    if isinstance(exc, (OSError, TimeoutError)):
        return True
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate:
        return sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES
    if _from_asyncpg(exc):
        return True  # client-side: connection lost or unusable (no server SQLSTATE)
    cause = exc.__cause__
    return cause is not None and cause is not exc and _transient_driver_error(cause)


def describe(exc: BaseException) -> str:
    """A short, credential-free description for logs."""
    original = getattr(exc, "orig", None) or exc
    text = str(original).splitlines()[0] if str(original) else ""
    return f"{type(original).__name__}: {text[:200]}"
