"""Alembic environment: always driven programmatically with an open connection.

``SqlStore.start`` passes its connection in ``config.attributes["connection"]`` from
inside ``AsyncConnection.run_sync``; there is no offline mode and no ``alembic.ini``.
The version table has a project-specific name so the store can share a database with
other applications.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

VERSION_TABLE = "sandbox_alembic_version"


def run() -> None:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError("sandbox migrations run only through SqlStore.start()")
    context.configure(
        connection=connection,
        target_metadata=None,
        version_table=VERSION_TABLE,
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run()
