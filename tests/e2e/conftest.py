"""Browser end-to-end fixtures: a real `sandbox serve` per module, Debian's chromium
(launched directly: no pytest plugin, no browser download) and the signed-in cookie."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .git_server import GitServer
from .serve_process import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    ServeProcess,
    ensure_console_built,
    skip_or_fail,
    start_serve,
)


@pytest.fixture(scope="session")
def chromium_available() -> None:
    if not CHROMIUM.exists():
        skip_or_fail(f"{CHROMIUM} is missing")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        skip_or_fail("the playwright Python package is not installed")
    ensure_console_built()


@pytest.fixture(scope="module")
def git_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitServer]:
    server = GitServer(tmp_path_factory.mktemp("git")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def serve(
    chromium_available: None, git_server: GitServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    """Repositories are cloned from the slow local git server."""
    server = start_serve(
        tmp_path_factory.mktemp("serve"),
        extra_env={"SANDBOX_GIT_BASE_URL": git_server.base_url},
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(chromium_available: None) -> Iterator[Any]:
    from playwright.sync_api import expect, sync_playwright

    # Playwright's 5 s default is short for a page that waits on the server of a loaded
    # machine; the waits that need longer still say so.
    expect.set_options(timeout=15_000)
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="module")
def signed_in_state(serve: ServeProcess, browser: Any) -> dict[str, Any]:
    """Sign in through the printed one-time login link; later contexts reuse the cookie."""
    context = browser.new_context(base_url=serve.base_url)
    try:
        page = context.new_page()
        page.goto("/sandbox")
        page.get_by_role("heading", name="Sign in to OpenOva Sandbox").wait_for()
        page.goto(serve.login_url)
        page.wait_for_url("**/sandbox")
        page.get_by_test_id("sandbox-agent-card-aider").wait_for()
        state: dict[str, Any] = context.storage_state()
        assert any(c["name"] == "catalyst_session" for c in state["cookies"])
        return state
    finally:
        context.close()
