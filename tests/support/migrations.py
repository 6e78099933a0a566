"""Moving a test database between the store's Alembic revisions, for the migration
tests: ``await connection.run_sync(to("0006"))``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import inspect

from openova_sandbox.store.sql_engine import MIGRATIONS


def to(revision: str, *, down: bool = False) -> Callable[[Any], None]:
    """A ``run_sync`` callable that upgrades (or, ``down``, downgrades) the connection's
    database to ``revision``."""

    def run(connection: Any) -> None:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)

    return run


def tables(connection: Any) -> set[str]:
    """The names of the connection's database's tables (a ``run_sync`` callable)."""
    return set(inspect(connection).get_table_names())
