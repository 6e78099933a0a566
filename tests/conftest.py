"""Session-wide fixtures shared by every test tier.

``postgres_url``: a real PostgreSQL server started once per session (see
``support/postgres.py``) with an empty database; skipped when the binaries are missing,
a failure instead when ``SANDBOX_TEST_REQUIRE_ALL=1``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.postgres import PostgresServer, PostgresUnavailable, skip_or_fail


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    try:
        server = PostgresServer()
    except PostgresUnavailable as exc:
        skip_or_fail(str(exc))
    try:
        server.start()
        yield server.create_database("sandbox_test")
    finally:
        server.remove()
