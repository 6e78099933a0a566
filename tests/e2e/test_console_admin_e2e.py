"""The org admin's page, in a real browser against a real `sandbox serve` (issue 11).

- A member (a minted token for org `local`, confirmed on the server's sign-in page)
  starts a Shell session and leaves it running.
- The operator (the login link: an org admin of `local`) opens Admin from the header:
  the member's sandbox is listed under the member's email, running, with its terminal.
  Stop ends it (the row says 0 terminals and Stop is off); the audit log shows the
  member's sign-in, create, attach and detach and the admin's terminal close, with the
  client address; a filter narrows it; the export downloads JSON lines that verify as a
  chain; on a 375 px screen the page does not scroll sideways; Delete removes the
  sandbox.
- The member has no Admin link, and the page tells them it is for admins.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from openova_sandbox.domain.audit import AuditRecord, verify

from .serve_process import ServeProcess, start_serve
from .test_console_day_one_e2e import mint_token, sign_in
from .test_console_e2e import start_from_card, wait_for_terminal

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(240)]

MEMBER_EMAIL = "member@example.com"
# what sticks out past the right edge (outside a scrolling box): the failure names it
WIDER_THAN_SCREEN = """() => [...document.querySelectorAll('body *')]
  .filter((e) => e.getBoundingClientRect().right > innerWidth + 1)
  .filter((e) => !e.parentElement?.closest('.table-scroll'))
  .slice(0, 5).map((e) => `${e.tagName}.${e.className} ${Math.round(e.getBoundingClientRect().right)}`)
"""
SESSION = "member-box"


@pytest.fixture(scope="module")
def admin_serve(
    chromium_available: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    server = start_serve(tmp_path_factory.mktemp("admin"))
    try:
        yield server
    finally:
        server.stop()


def member_context(browser: Any, server: ServeProcess) -> Any:
    token = mint_token(server, sub="member-sub-0001", email=MEMBER_EMAIL, admin=False)
    context = browser.new_context(base_url=server.base_url)
    page = context.new_page()
    page.goto(f"/login?token={token}")
    page.get_by_role("button", name=re.compile("^Sign in as")).click()
    page.wait_for_url("**/sandbox")
    return context, page


def test_org_admin_sees_stops_audits_and_deletes_a_members_sandbox(
    admin_serve: ServeProcess, browser: Any, artifacts: Path
) -> None:
    from playwright.sync_api import expect

    # the member starts a Shell session and leaves it running
    member, mpage = member_context(browser, admin_serve)
    nav = mpage.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Settings")).to_be_visible()
    expect(nav.get_by_role("link", name="Admin")).to_have_count(0)
    start_from_card(mpage, "shell", SESSION)
    mpage.wait_for_url(f"**/sandbox/{SESSION}")
    wait_for_terminal(mpage)
    mpage.goto("/sandbox/admin")
    expect(mpage.get_by_text("This page is for the org's admins.")).to_be_visible()
    member.close()

    # the operator opens Admin from the header
    context = browser.new_context(
        base_url=admin_serve.base_url, storage_state=sign_in(browser, admin_serve)
    )
    page = context.new_page()
    page.goto("/sandbox")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Admin").click()
    page.wait_for_url("**/sandbox/admin")
    expect(page.get_by_role("heading", name="Administer local")).to_be_visible()
    group = page.get_by_test_id(f"admin-owner-{MEMBER_EMAIL}")
    row = group.get_by_test_id(f"admin-row-{SESSION}")
    expect(row.get_by_role("cell").nth(0)).to_have_text("shell")
    expect(row.get_by_role("cell").nth(1)).to_have_text("running")
    expect(row.get_by_role("cell").nth(3)).to_have_text("1")  # the member's terminal
    expect(group.get_by_role("heading", level=3)).to_contain_text("1 sandbox, 1 terminal")
    page.screenshot(path=str(artifacts / "admin-page.png"), full_page=True)

    # Stop ends its terminals
    row.get_by_role("button", name=f"Stop {SESSION}").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Ends its 1 terminal")
    dialog.get_by_role("button", name="Stop", exact=True).click()
    expect(page.get_by_role("status").filter(has_text="Stopped")).to_have_text(
        f"Stopped “{SESSION}”: 1 terminal ended."
    )
    expect(row.get_by_role("cell").nth(3)).to_have_text("0")
    expect(row.get_by_role("button", name=f"Stop {SESSION}")).to_be_disabled()

    # the audit log, read again after the Stop: its own record is there
    table = page.get_by_test_id("audit-table")
    close = table.get_by_role("row").filter(has_text="terminal.close")
    expect(close).to_contain_text("success")
    expect(close).to_contain_text(f"sandbox/{SESSION}")
    expect(close).to_contain_text("127.0.0.1")
    for action in ("auth.sign-in", "sandbox.create", "terminal.attach", "terminal.detach"):
        done = table.get_by_role("row").filter(has_text=action).filter(has_text=MEMBER_EMAIL)
        expect(done.first).to_be_visible()
    page.get_by_label("Action", exact=True).select_option("terminal.*")
    page.get_by_role("button", name="Apply").click()
    expect(table.get_by_role("row").filter(has_text="sandbox.create")).to_have_count(0)
    expect(table.get_by_role("row").filter(has_text="terminal.attach").first).to_be_visible()

    # the export: JSON lines of the filtered records, each a record of the chain
    page.get_by_label("Action", exact=True).select_option("")
    page.get_by_role("button", name="Apply").click()
    with page.expect_download() as download_info:
        page.get_by_test_id("audit-export").click()
    download = download_info.value
    assert re.fullmatch(r"audit-local-\d{4}-\d{2}-\d{2}\.jsonl", download.suggested_filename)
    lines = Path(download.path()).read_text().splitlines()
    records = [AuditRecord.from_dict(json.loads(line)) for line in lines]
    assert {r.org for r in records} == {"local"}
    report = verify("local", records)
    assert report.ok, report.reason
    actions = [r.action for r in records]
    assert actions.index("sandbox.create") < actions.index("terminal.close")

    # on a phone the page does not scroll sideways (the tables scroll in their boxes)
    page.set_viewport_size({"width": 375, "height": 740})
    expect(row.get_by_role("button", name=f"Delete {SESSION}")).to_be_attached()
    page.screenshot(path=str(artifacts / "admin-375.png"), full_page=True)
    width = page.evaluate("document.documentElement.scrollWidth")
    wide = page.evaluate(WIDER_THAN_SCREEN)
    assert width <= 375, f"the admin page scrolls sideways at 375 px ({width} px): {wide}"
    page.set_viewport_size({"width": 1280, "height": 800})

    # Delete removes it
    row.get_by_role("button", name=f"Delete {SESSION}").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete", exact=True).click()
    expect(page.get_by_test_id(f"admin-row-{SESSION}")).to_have_count(0, timeout=30_000)
    context.close()
