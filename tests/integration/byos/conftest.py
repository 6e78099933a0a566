"""The real app wired to a fake OAuth provider on loopback (see byos_provider)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from byos_provider import CLIENT_ID, FakeProvider

from openova_sandbox.testing.server import serve_in_thread

# the shared app fixtures (make_api, Api) live with the sessions API tests
_spec = importlib.util.spec_from_file_location(
    "api_fixtures", Path(__file__).parents[1] / "api" / "conftest.py"
)
assert _spec is not None and _spec.loader is not None
_api_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_api_fixtures)
make_api = _api_fixtures.make_api


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    fake = FakeProvider()
    with serve_in_thread(fake.app()) as server:
        fake.url = server.url
        yield fake


@pytest.fixture
def byos_api(make_api: Any, provider: FakeProvider) -> Any:
    """The app with BYOS fully configured against the fake provider."""
    return make_api(
        store="memory",
        byos_claude_code_client_id=CLIENT_ID,
        byos_claude_code_authz_url=f"{provider.url}/authorize",
        byos_claude_code_token_url=f"{provider.url}/token",
    )
