"""Session-wide fixtures shared by every test tier.

``postgres_url``: a real PostgreSQL server started once per session (see
``support/postgres.py``) with an empty database; skipped when the binaries are missing,
a failure instead when ``SANDBOX_TEST_REQUIRE_ALL=1``.

``agents_cache`` / ``installed_agents_dir``: real agents installed with ``sandbox agents
install`` once per session, placed into a test's data dir (``support/agents_cache.py``).

The real-cluster suite (marker ``realcluster``) needs a Kubernetes cluster, which these
machines do not have: it is skipped, with the reason in the summary, unless the ``-m``
expression asks for it (``pytest -m realcluster``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

# real agent installs, made once per session (see support/agents_cache.py)
from support.agents_cache import (  # noqa: F401
    agents_cache,
    installed_agents_dir,
    pytest_collection_finish,
)
from support.postgres import PostgresServer, PostgresUnavailable, skip_or_fail

REALCLUSTER_SKIP = (
    "real-cluster suite: opt-in, needs a Kubernetes cluster; run `pytest -m realcluster` "
    "with $KUBECONFIG set (docs/kind.md)"
)


def realcluster_requested(markexpr: str) -> bool:
    """Whether ``-m`` names the suite positively (``realcluster``, ``realcluster and
    not slow``...), as opposed to not at all or only as ``not realcluster``."""
    named = re.findall(r"(not\s+)?\brealcluster\b", markexpr)
    return any(not negated for negated in named)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if realcluster_requested(str(config.getoption("markexpr") or "")):
        return
    skip = pytest.mark.skip(reason=REALCLUSTER_SKIP)
    for item in items:
        if item.get_closest_marker("realcluster") is not None:
            item.add_marker(skip)


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
