"""Installing a real agent from the console, as the operator of a fresh install does.

A fresh data dir, nothing installed, the server's PATH the system's: the operator clicks
Install on the Qwen Code card, the card shows the install's log lines while npm runs
(real registry, the pinned version), then says it is installed and Start works; the
agent's terminal opens. Needs Node.js 20+ and the npm registry (skipped with the reason
otherwise; mandatory under ``SANDBOX_TEST_REQUIRE_ALL=1``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from support.agents_cache import node_problem, skip_or_fail

from .serve_process import start_serve
from .test_console_day_one_e2e import fresh_env, sign_in
from .test_console_e2e import READY_TIMEOUT_MS, start_from_card, visible_rows

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

AGENT = "qwen-code"
INSTALL_TIMEOUT_MS = 480_000


def test_operator_installs_an_agent_from_its_card(
    chromium_available: None, browser: Any, tmp_path: Path, artifacts: Path
) -> None:
    from playwright.sync_api import expect

    problem = node_problem()
    if problem:
        skip_or_fail(problem)
    # the agent needs a model endpoint to start; nothing is asked of it here
    model = {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_API_KEY": "unused"}
    server = start_serve(tmp_path, extra_env={**fresh_env(tmp_path), **model})
    try:
        context = browser.new_context(
            base_url=server.base_url, storage_state=sign_in(browser, server)
        )
        page = context.new_page()
        polled: list[dict[str, Any]] = []

        def seen(response: Any) -> None:
            if (
                response.url.endswith(f"/agents/{AGENT}/install")
                and response.request.method == "GET"
            ):
                polled.append(response.json())

        page.on("response", seen)
        page.goto("/sandbox")
        card = page.get_by_test_id(f"sandbox-agent-card-{AGENT}")
        start = card.get_by_role("button", name="Start session")
        expect(start).to_be_disabled()
        card.get_by_role("button", name="Install").click()

        # While npm runs, its lines stream into the card's log box.
        log = card.get_by_role("log")
        expect(card).to_contain_text("Installing…", timeout=10_000)
        page.screenshot(path=str(artifacts / "landing-installing.png"), full_page=True)

        expect(start).to_be_enabled(timeout=INSTALL_TIMEOUT_MS)
        expect(card.get_by_role("status")).to_contain_text("Installed (")
        running = [p for p in polled if p["state"] == "running"]
        assert running, polled
        assert polled[-1]["state"] == "succeeded" and polled[-1]["log"], polled[-1]
        # the log box holds what the server logged, up to its last line
        expect(log).to_contain_text(polled[-1]["log"][-1])
        listed = page.request.get("/api/v1/sandbox/agents").json()["agents"]
        row = next(a for a in listed if a["id"] == AGENT)
        assert row["installed"] and row["source"] == "managed", row
        # installed agents come first; the Shell stays startable among them
        cards = page.locator("[data-testid^=sandbox-agent-card-]")
        first_two = {
            cards.nth(0).get_attribute("data-testid"),
            cards.nth(1).get_attribute("data-testid"),
        }
        assert first_two == {f"sandbox-agent-card-{AGENT}", "sandbox-agent-card-shell"}, first_two
        page.screenshot(path=str(artifacts / "landing-installed.png"), full_page=True)

        # It starts: the session's terminal attaches and the agent draws something.
        start_from_card(page, AGENT, "installed-agent")
        page.wait_for_url("**/sandbox/installed-agent")
        pane = page.locator(".terminal-panel:not([hidden]) .terminal-pane")
        expect(pane).to_have_attribute("data-connection", "open", timeout=READY_TIMEOUT_MS)
        expect(visible_rows(page)).to_contain_text(re.compile(r"\S"), timeout=60_000)
        page.screenshot(path=str(artifacts / "terminal-installed-agent.png"))
        context.close()
    finally:
        server.stop()
