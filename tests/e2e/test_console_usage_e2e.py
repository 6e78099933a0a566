"""Model spend and budgets in the console, in a real browser against a real `sandbox serve`.

The server's gateway forwards to a fake OpenAI-shaped provider (tests/support/fake_llm.py,
which reports 10 input and 3 output tokens a request) at a price the operator config sets
high enough to see: $100,000 per million tokens, so one request costs $1.30. The usage
is made the way a user makes it: a `curl` typed into the Shell terminal of a session,
with the gateway URL and the sandbox's own token its environment holds.

- The operator (an org admin) opens Usage from the header: the spend by user, by model
  and by session, the chart and its table of days; sets the session's monthly budget in
  the form (a negative amount shows the server's 400 detail first); the budget row says
  Reached. On a 375 px screen the page does not scroll sideways.
- The session's page shows its spend and that its budget is reached, and the next
  `curl` in its Shell gets the gateway's refusal; the landing shows the session's spend.
- A user who is not an org admin has no Usage link in the header, sees their own usage
  (none) and no budget form.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from support.fake_llm import FakeLLM

from .serve_process import ServeProcess, start_serve
from .test_console_day_one_e2e import mint_token, sign_in
from .test_console_e2e import (
    OUTPUT_TIMEOUT_MS,
    run_in_terminal,
    start_from_card,
    visible_rows,
    wait_for_terminal,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(240)]

PROVIDER_KEY = "sk-provider-E2E-" + secrets.token_hex(8)
MODEL = "fake-model"
# USD per million tokens: the fake's 10 input + 3 output tokens cost $1.00 + $0.30
PRICE = 100_000
SESSION = "spender"


def curl(word: str) -> str:
    """What a user types in the Shell to ask the gateway's OpenAI-compatible route."""
    body = json.dumps(
        {
            "model": MODEL,
            "max_tokens": 5,
            "messages": [{"role": "user", "content": f"ping-{word}"}],
        },
        separators=(",", ":"),
    )
    return (
        'curl -s "$OPENAI_BASE_URL/chat/completions" -H "Authorization: Bearer $OPENAI_API_KEY"'
        f" -H 'Content-Type: application/json' -d '{body}'; echo"
    )


@pytest.fixture(scope="module")
def fake_llm() -> Iterator[FakeLLM]:
    with FakeLLM() as llm:
        yield llm


@pytest.fixture(scope="module")
def metered(
    chromium_available: None, fake_llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("usage")
    config = tmp / "llm.json"
    config.write_text(
        json.dumps(
            {
                "providers": {
                    "fake": {
                        "kind": "openai",
                        "baseUrl": fake_llm.base_url,
                        "apiKeyEnv": "E2E_PROVIDER_KEY",
                    }
                },
                "models": {MODEL: {"provider": "fake", "price": {"input": PRICE, "output": PRICE}}},
            }
        )
    )
    server = start_serve(
        tmp,
        extra_env={"SANDBOX_LLM_CONFIG": str(config), "E2E_PROVIDER_KEY": PROVIDER_KEY},
    )
    try:
        yield server
    finally:
        server.stop()


def test_admin_sees_spend_by_user_and_the_sessions_budget_reached(
    metered: ServeProcess, fake_llm: FakeLLM, browser: Any, artifacts: Path
) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(
        base_url=metered.base_url, storage_state=sign_in(browser, metered)
    )
    page = context.new_page()
    page.goto("/sandbox")
    who = page.request.get("/api/v1/sandbox/whoami").json()
    assert who["orgAdmin"], who
    email = who["email"].lower()
    today = datetime.now(UTC).date().isoformat()

    # A model request from the session's Shell, through the gateway with the sandbox's token.
    start_from_card(page, "shell", SESSION)
    page.wait_for_url(f"**/sandbox/{SESSION}")
    wait_for_terminal(page)
    run_in_terminal(page, curl("spend"))
    expect(visible_rows(page)).to_contain_text("PONG-spend", timeout=OUTPUT_TIMEOUT_MS)
    forwarded = fake_llm.wait_for("spend")
    assert forwarded.authorization == f"Bearer {PROVIDER_KEY}"

    # The usage page, from the header: the org's spend by user.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Usage").click()
    page.wait_for_url("**/sandbox/usage")
    expect(page.get_by_role("heading", name=f"Model usage of {who['org']}")).to_be_visible()
    totals = page.get_by_test_id("usage-totals")
    expect(totals).to_contain_text("Cost$1.30")
    expect(totals).to_contain_text("Requests1")
    groups = page.get_by_test_id("usage-groups")
    expect(groups.get_by_role("columnheader", name="User")).to_be_visible()
    user_row = groups.get_by_role("row").filter(has=page.get_by_role("rowheader", name=email))
    expect(user_row).to_contain_text("$1.30")
    expect(user_row).to_contain_text("100%")

    chart = page.get_by_role("img", name="Model spend by day")
    expect(chart).to_have_accessible_description(
        re.compile(rf"highest day was {today} with \$1\.30")
    )
    bar = chart.locator(f"rect.usage-bar[data-date='{today}']")
    assert float(bar.get_attribute("height") or 0) > 0
    page.get_by_text("Spend by day as a table").click()
    days = page.get_by_role("table", name="Model spend by day")
    expect(
        days.get_by_role("row").filter(has=page.get_by_role("rowheader", name=today))
    ).to_contain_text("$1.30")
    page.screenshot(path=str(artifacts / "usage-org.png"), full_page=True)

    page.get_by_role("radio", name="Model", exact=True).check()
    expect(groups.get_by_role("rowheader", name=MODEL)).to_be_visible()
    page.get_by_role("radio", name="Session", exact=True).check()
    expect(groups.get_by_role("link", name=SESSION)).to_be_visible()

    # The session's budget, set by the org admin: the server's detail for a bad amount.
    page.get_by_label("Scope").select_option("sandbox")
    page.get_by_label("Session id").fill(SESSION)
    page.get_by_label("Monthly budget (USD)").fill("-1")
    page.get_by_role("button", name="Save budget").click()
    expect(page.get_by_test_id("budget-error")).to_contain_text(
        "must be a finite amount of at least 0", timeout=OUTPUT_TIMEOUT_MS
    )
    page.get_by_label("Monthly budget (USD)").fill("1")
    page.get_by_role("button", name="Save budget").click()
    expect(page.get_by_role("status").filter(has_text="is now")).to_have_text(
        f"Monthly budget of sandbox {SESSION} is now $1.00."
    )
    expect(page.get_by_test_id("budget-error")).to_have_count(0)
    row = page.get_by_test_id(f"budget-sandbox-{SESSION}")
    expect(row).to_contain_text("Reached")
    expect(row).to_contain_text(f"set by {who['email']}")
    page.screenshot(path=str(artifacts / "usage-budget-set.png"), full_page=True)

    # The session's page: its spend, and that its budget is used up.
    groups.get_by_role("link", name=SESSION).click()
    page.wait_for_url(f"**/sandbox/{SESSION}")
    expect(page.get_by_test_id("session-spend")).to_have_text(
        "Spend, last 30 days: $1.30 · 10 in / 3 out tokens"
    )
    notice = page.get_by_test_id("budget-reached")
    expect(notice).to_contain_text(
        f"Monthly budget of $1.00 for sandbox {SESSION} reached", timeout=OUTPUT_TIMEOUT_MS
    )
    expect(notice).to_contain_text("the agent's model requests are refused")
    wait_for_terminal(page)
    page.screenshot(path=str(artifacts / "session-budget-reached.png"))

    # ...and it holds: the gateway refuses the next request before it reaches the provider.
    run_in_terminal(page, curl("refused"))
    expect(visible_rows(page)).to_contain_text(
        f"monthly budget of $1.00 for sandbox {SESSION} reached", timeout=OUTPUT_TIMEOUT_MS
    )
    assert fake_llm.answered("refused") == []

    # The landing lists the session with its spend.
    page.get_by_role("link", name="← Sessions").click()
    page.wait_for_url(re.compile(r".*/sandbox$"))
    expect(page.get_by_test_id(f"session-spend-{SESSION}")).to_contain_text("$1.30 · 10 in / 3 out")

    # On a phone the usage page fits the screen's width (its tables scroll on their own).
    page.set_viewport_size({"width": 375, "height": 740})
    page.goto("/sandbox/usage")
    expect(page.get_by_test_id("usage-groups")).to_contain_text("$1.30")
    expect(page.get_by_test_id(f"budget-sandbox-{SESSION}")).to_contain_text("Reached")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"the usage page scrolls sideways at 375 px ({width} px wide)"
    page.screenshot(path=str(artifacts / "usage-375.png"), full_page=True)
    context.close()


def test_a_user_who_is_not_an_admin_sees_their_own_usage_and_no_budget_form(
    metered: ServeProcess, browser: Any
) -> None:
    from playwright.sync_api import expect

    token = mint_token(metered, sub="plain-user", email="plain@example.com", admin=False)
    context = browser.new_context(base_url=metered.base_url)
    page = context.new_page()
    page.goto(f"/login?token={token}")
    page.get_by_role("button", name=re.compile("^Sign in as")).click()
    page.wait_for_url("**/sandbox")
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Settings")).to_be_visible()
    expect(nav.get_by_role("link", name="Usage")).to_have_count(0)

    page.goto("/sandbox/usage")
    expect(page.get_by_role("heading", name="Your model usage")).to_be_visible()
    expect(page.get_by_test_id("usage-totals")).to_contain_text("Cost$0.00")
    expect(page.get_by_text("No model requests in this period.")).to_be_visible()
    expect(page.get_by_role("radio", name="Whole org")).to_have_count(0)
    expect(page.get_by_test_id("budgets-table")).to_be_visible()
    expect(page.get_by_role("button", name="Save budget")).to_have_count(0)
    expect(page.get_by_text("Org admins set budgets.")).to_be_visible()
    context.close()
