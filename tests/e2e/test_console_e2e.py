"""The console in a real browser against a real `sandbox serve`.

What a user does, end to end: sign in with the printed login link, start a session from
a card, watch it provision, type into the agent's terminal, reload and get the screen
back, share the session between two pages, survive a dropped socket without losing or
duplicating output, open the rescue shell (which a reload brings back, and which can be
closed), delete. Plus the amber "API pending" pill when the store is down, the 409
message, and a phone-sized viewport. (A fresh install, refusals, exits and the
second-device link: test_console_day_one_e2e.py.)
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from support.processes import descendants_named

from .git_server import HOLD_SECONDS, GitServer
from .serve_process import ServeProcess, free_port, skip_or_fail, start_serve

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(240)]

CONDITIONS = ["NamespaceReady", "RBACReady", "PVCsReady", "PtyReady", "McpReady", "TokenReady"]
READY_TIMEOUT_MS = 90_000
OUTPUT_TIMEOUT_MS = 20_000
PROMPT = re.compile(r"[$#] ?")


def visible_rows(page: Any) -> Any:
    """The text rows of the terminal in the visible tab (xterm's DOM renderer)."""
    return page.locator(".terminal-panel:not([hidden]) .xterm-rows")


def run_in_terminal(page: Any, command: str) -> None:
    page.locator(".terminal-panel:not([hidden]) [data-testid=sandbox-terminal]").click()
    page.keyboard.type(command)
    page.keyboard.press("Enter")


def wait_for_terminal(page: Any) -> None:
    from playwright.sync_api import expect

    pane = page.locator(".terminal-panel:not([hidden]) .terminal-pane")
    expect(pane).to_have_attribute("data-connection", "open", timeout=READY_TIMEOUT_MS)
    # the shell's first prompt ("$ ", or "# " as root) arrives once the PTY is attached
    expect(visible_rows(page)).to_contain_text(PROMPT, timeout=OUTPUT_TIMEOUT_MS)
    # and the PTY has the screen's size: a shell told the size after a command was typed
    # redraws its prompt over that command's output
    expect(pane).to_have_attribute("data-sized", "true", timeout=OUTPUT_TIMEOUT_MS)


def wait_for_grandchild(ancestor: int, name: str, timeout: float = 20.0) -> None:
    """Wait until a process called ``name`` runs below ``ancestor`` (a terminal's
    command, a few levels down in its sandbox)."""
    deadline = time.monotonic() + timeout
    while not descendants_named(ancestor, name):
        assert time.monotonic() < deadline, f"no {name} under {ancestor}"
        time.sleep(0.05)


def new_page(browser: Any, serve: ServeProcess, state: dict[str, Any], **options: Any) -> Any:
    context = browser.new_context(base_url=serve.base_url, storage_state=state, **options)
    return context.new_page()


def start_from_card(page: Any, agent: str, name: str) -> None:
    card = page.get_by_test_id(f"sandbox-agent-card-{agent}")
    card.get_by_role("button", name="Start session").click()
    dialog = page.get_by_role("dialog")
    if name:
        dialog.get_by_label("Session name (optional)").fill(name)
    dialog.get_by_role("button", name="Start session").click()


def test_session_lifecycle(
    serve: ServeProcess, browser: Any, signed_in_state: dict[str, Any], artifacts: Path
) -> None:
    from playwright.sync_api import expect

    page = new_page(browser, serve, signed_in_state, viewport={"width": 1280, "height": 800})
    dropped: list[Any] = []
    blocked = {"on": False}

    def through(ws: Any) -> None:
        """Pass attach sockets through to the server, so the test can drop them (1012:
        "service restart", a passing trouble the console retries; 1011 would be a
        permanent refusal it must not retry)."""
        if blocked["on"]:
            ws.close(code=1012, reason="test: server away")
            return
        upstream = ws.connect_to_server()
        dropped.append((ws, upstream))

    page.route_web_socket(re.compile(r".*/attach$"), through)

    # Landing: one card per catalogue agent, Start disabled exactly when not installed.
    page.goto("/sandbox")
    agents = page.request.get("/api/v1/sandbox/agents").json()["agents"]
    assert {a["id"] for a in agents} >= {"aider", "claude-code"}
    for agent in agents:
        button = page.get_by_test_id(f"sandbox-agent-card-{agent['id']}").get_by_role(
            "button", name="Start session"
        )
        if agent["installed"]:
            expect(button).to_be_enabled()
        else:
            expect(button).to_be_disabled()
    expect(page.get_by_test_id("whoami-email")).not_to_be_empty()
    page.screenshot(path=str(artifacts / "landing.png"), full_page=True)
    page.emulate_media(color_scheme="dark")
    page.screenshot(path=str(artifacts / "landing-dark.png"), full_page=True)
    page.emulate_media(color_scheme="light")

    # Start from the card; the session page provisions, then attaches.
    start_from_card(page, "aider", "E2E flow")
    page.wait_for_url("**/sandbox/e2e-flow")
    first_view = page.locator(
        "[data-testid=condition-NamespaceReady], [data-testid=sandbox-terminal]"
    ).first
    first_view.wait_for(timeout=READY_TIMEOUT_MS)
    if page.get_by_test_id("condition-NamespaceReady").is_visible():
        page.screenshot(path=str(artifacts / "provisioning-no-repo.png"), full_page=True)
    wait_for_terminal(page)
    item = page.request.get("/api/v1/sandbox/sessions/e2e-flow").json()
    states = {c["type"]: c["status"] for c in item["conditions"]}
    assert all(states.get(t) == "True" for t in CONDITIONS), states
    assert item["status"] == "running"

    run_in_terminal(page, "echo first-$((6*7))")
    expect(visible_rows(page)).to_contain_text("first-42", timeout=OUTPUT_TIMEOUT_MS)
    page.screenshot(path=str(artifacts / "terminal.png"))

    # A dropped socket: "reconnecting…" with the screen kept, then the replay replaces
    # the screen once, so nothing is duplicated.
    blocked["on"] = True
    ws, upstream = dropped[-1]
    ws.close(code=1012, reason="test: connection lost")
    upstream.close()
    pane = page.locator(".terminal-panel:not([hidden]) .terminal-pane")
    expect(pane).to_have_attribute("data-connection", "reconnecting", timeout=OUTPUT_TIMEOUT_MS)
    expect(page.get_by_role("status").filter(has_text="reconnecting…")).to_be_visible()
    expect(visible_rows(page)).to_contain_text("first-42")
    page.screenshot(path=str(artifacts / "terminal-reconnecting.png"))
    blocked["on"] = False
    page.get_by_role("button", name="Reconnect now").click()
    expect(pane).to_have_attribute("data-connection", "open", timeout=OUTPUT_TIMEOUT_MS)
    # Output typed now arrives after the replay, so once it shows, the replay is on screen.
    run_in_terminal(page, "echo after-$((1+1))")
    expect(visible_rows(page)).to_contain_text("after-2", timeout=OUTPUT_TIMEOUT_MS)
    assert visible_rows(page).inner_text().count("first-42") == 1

    # Reload: the earlier output comes back from the server's replay.
    page.reload()
    wait_for_terminal(page)
    expect(visible_rows(page)).to_contain_text("first-42", timeout=OUTPUT_TIMEOUT_MS)

    # A second page on the same session sees the same screen; typing works from both.
    other = page.context.new_page()
    other.goto("/sandbox/e2e-flow")
    wait_for_terminal(other)
    expect(visible_rows(other)).to_contain_text("first-42", timeout=OUTPUT_TIMEOUT_MS)
    run_in_terminal(other, "echo second-$((2*3))")
    expect(visible_rows(page)).to_contain_text("second-6", timeout=OUTPUT_TIMEOUT_MS)
    expect(visible_rows(other)).to_contain_text("second-6", timeout=OUTPUT_TIMEOUT_MS)
    run_in_terminal(page, "echo third-$((3*3))")
    expect(visible_rows(other)).to_contain_text("third-9", timeout=OUTPUT_TIMEOUT_MS)
    other.close()

    # The rescue shell opens in a second tab with its own terminal.
    page.get_by_role("button", name="Rescue shell").click()
    expect(page.get_by_role("tab", name="Rescue shell")).to_have_attribute(
        "aria-selected", "true", timeout=OUTPUT_TIMEOUT_MS
    )
    wait_for_terminal(page)
    run_in_terminal(page, "echo rescue-$((5*5))")
    expect(visible_rows(page)).to_contain_text("rescue-25", timeout=OUTPUT_TIMEOUT_MS)
    page.screenshot(path=str(artifacts / "terminal-rescue.png"))

    # A reload rebuilds the extra terminal's tab from the server, screen included; the
    # primary tab has no close button, the rescue shell's closes it on the server.
    page.reload()
    rescue_tab = page.get_by_role("tab", name="Rescue shell")
    expect(rescue_tab).to_be_visible(timeout=READY_TIMEOUT_MS)
    expect(page.get_by_role("button", name="Close aider")).to_have_count(0)
    rescue_tab.click()
    wait_for_terminal(page)
    expect(visible_rows(page)).to_contain_text("rescue-25", timeout=OUTPUT_TIMEOUT_MS)
    page.get_by_role("button", name="Close Rescue shell").click()
    expect(page.get_by_role("tab")).to_have_count(0)
    listed = page.request.get("/api/v1/sandbox/sessions/e2e-flow/terminals").json()
    assert [t["agent"] for t in listed["terminals"]] == ["aider"], listed
    page.reload()
    wait_for_terminal(page)
    expect(page.get_by_role("tab")).to_have_count(0)

    # Delete (with confirmation): back on the list, the session is gone.
    page.get_by_role("button", name="Delete", exact=True).click()
    dialog = page.get_by_role("dialog", name="Delete this session?")
    dialog.get_by_role("button", name="Delete session").click()
    page.wait_for_url(re.compile(r".*/sandbox$"))
    expect(page.get_by_test_id("sandbox-session-e2e-flow")).to_have_count(0, timeout=60_000)
    page.context.close()


def test_conflict_shows_the_servers_detail(
    serve: ServeProcess, browser: Any, signed_in_state: dict[str, Any]
) -> None:
    from playwright.sync_api import expect

    page = new_page(browser, serve, signed_in_state)
    page.goto("/sandbox")
    start_from_card(page, "aider", "")
    page.wait_for_url(re.compile(r".*/sandbox/aider-[^/]+$"))
    created = page.url.rsplit("/", 1)[1]
    page.goto("/sandbox")
    start_from_card(page, "aider", "")
    alert = page.get_by_role("dialog").get_by_role("alert")
    expect(alert).to_contain_text(f'sandbox "{created}" already exists')
    expect(alert).to_contain_text("Choose another session name.")
    expect(page.get_by_label("Session name (optional)")).to_be_focused()
    assert page.url.endswith("/sandbox")
    page.get_by_role("dialog").get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("dialog")).to_have_count(0)
    assert page.request.delete(f"/api/v1/sandbox/sessions/{created}").status == 204
    page.context.close()


def test_api_pending_when_the_store_is_down(
    chromium_available: None,
    browser: Any,
    tmp_path: Path,
    artifacts: Path,
) -> None:
    """The store is a PostgreSQL URL with nothing listening: the server still serves
    sign-in and the catalogue, the list answers non-2xx, and the console says so."""
    from playwright.sync_api import expect

    dead = f"postgresql+asyncpg://sandbox:unused@127.0.0.1:{free_port()}/sandbox"
    server = start_serve(tmp_path, extra_env={"SANDBOX_DATABASE_URL": dead})
    try:
        context = browser.new_context(base_url=server.base_url)
        page = context.new_page()
        page.goto(server.login_url)
        page.wait_for_url("**/sandbox")
        assert page.request.get("/api/v1/sandbox/sessions").status >= 400
        expect(page.get_by_text("API pending")).to_be_visible(timeout=OUTPUT_TIMEOUT_MS)
        expect(page.get_by_test_id("sandbox-agent-card-aider")).to_be_visible()
        expect(page.get_by_text("No sandbox sessions yet.")).to_have_count(0)
        page.screenshot(path=str(artifacts / "landing-api-pending.png"), full_page=True)
        context.close()
    finally:
        server.stop()


def test_phone_viewport(
    serve: ServeProcess, browser: Any, signed_in_state: dict[str, Any], artifacts: Path
) -> None:
    from playwright.sync_api import expect

    page = new_page(
        browser,
        serve,
        signed_in_state,
        viewport={"width": 375, "height": 740},
        is_mobile=True,
        has_touch=True,
        device_scale_factor=2,
    )
    page.goto("/sandbox")
    page.get_by_test_id("sandbox-agent-card-aider").wait_for()
    page.screenshot(path=str(artifacts / "landing-375.png"), full_page=True)
    start_from_card(page, "aider", "phone")
    page.wait_for_url("**/sandbox/phone")
    if page.get_by_test_id("condition-NamespaceReady").is_visible():
        page.screenshot(path=str(artifacts / "provisioning-375.png"), full_page=True)
    wait_for_terminal(page)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"page scrolls sideways at 375 px ({width} px wide)"

    # The key row: a sticky Ctrl turns the next key into a control character.
    keys = page.get_by_role("toolbar", name="Terminal keys")
    for name in ["Escape", "Tab", "Arrow up", "Arrow down", "Arrow left", "Arrow right"]:
        expect(keys.get_by_role("button", name=name)).to_be_visible()
    run_in_terminal(page, "sleep 60")
    # ^C must find the sleep running: typed while the shell is still reading the line,
    # it would only discard the line
    wait_for_grandchild(serve.process.pid, "sleep")
    ctrl = keys.get_by_role("button", name=re.compile("^Control"))
    ctrl.click()
    expect(ctrl).to_have_attribute("aria-pressed", "true")
    page.keyboard.type("c")
    expect(ctrl).to_have_attribute("aria-pressed", "false")
    run_in_terminal(page, "echo phone-$((4*4))")
    expect(visible_rows(page)).to_contain_text("phone-16", timeout=OUTPUT_TIMEOUT_MS)

    font = page.locator(".font-size")
    before = font.inner_text()
    keys.get_by_role("button", name="Larger text").click()
    expect(font).not_to_have_text(before)
    page.screenshot(path=str(artifacts / "terminal-375.png"))
    page.emulate_media(color_scheme="dark")
    page.screenshot(path=str(artifacts / "terminal-375-dark.png"))

    page.get_by_role("button", name="Delete", exact=True).click()
    page.get_by_role("dialog").get_by_role("button", name="Delete session").click()
    page.wait_for_url(re.compile(r".*/sandbox$"))
    page.context.close()


def test_repository_clone_provisioning_failure_and_retry(
    serve: ServeProcess,
    git_server: GitServer,
    browser: Any,
    signed_in_state: dict[str, Any],
    artifacts: Path,
) -> None:
    """A repository that does not exist yet fails provisioning with the reason shown;
    once it exists, Delete + retry provisions again (the clone is visibly in progress)
    and the terminal opens in a workspace holding the clone."""
    from playwright.sync_api import expect

    if shutil.which("git") is None:
        skip_or_fail("git is not installed")
    page = new_page(browser, serve, signed_in_state, viewport={"width": 1280, "height": 800})
    page.goto("/sandbox")
    org = page.request.get("/api/v1/sandbox/whoami").json()["org"]
    repo = f"{org.strip().lower()}/site"

    card = page.get_by_test_id("sandbox-agent-card-aider")
    card.get_by_role("button", name="Start session").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Session name (optional)").fill("with-repo")
    dialog.get_by_label("Repository (optional)").fill(repo)
    dialog.get_by_role("button", name="Start session").click()
    page.wait_for_url("**/sandbox/with-repo")

    failed = page.get_by_role("alert").filter(has_text="Provisioning failed")
    expect(failed).to_be_visible(timeout=READY_TIMEOUT_MS)
    expect(failed).to_contain_text(repo)
    expect(page.get_by_test_id("condition-PVCsReady")).to_have_attribute("data-state", "failed")
    page.screenshot(path=str(artifacts / "provisioning-failed.png"), full_page=True)

    git_server.publish(repo, readme="hello-from-the-clone")
    failed.get_by_role("button", name="Delete + retry").click()
    # The clone is held by the git server for a few seconds: provisioning is on screen.
    provisioning = page.get_by_role("heading", name="Provisioning", exact=True)
    expect(provisioning).to_be_visible(timeout=READY_TIMEOUT_MS)
    # the conditions before the clone turn green on the page while it is held
    for done in ("NamespaceReady", "RBACReady"):
        expect(page.get_by_test_id(f"condition-{done}")).to_have_attribute(
            "data-state", "done", timeout=HOLD_SECONDS * 1000
        )
    expect(page.get_by_test_id("condition-PVCsReady")).not_to_have_attribute("data-state", "done")
    page.screenshot(path=str(artifacts / "provisioning.png"), full_page=True)
    wait_for_terminal(page)
    run_in_terminal(page, "cat site/README")
    expect(visible_rows(page)).to_contain_text("hello-from-the-clone", timeout=OUTPUT_TIMEOUT_MS)

    page.get_by_role("button", name="Delete", exact=True).click()
    page.get_by_role("dialog").get_by_role("button", name="Delete session").click()
    page.wait_for_url(re.compile(r".*/sandbox$"))
    page.context.close()
