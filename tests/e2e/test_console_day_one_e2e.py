"""The console's first five minutes, in a real browser against a real `sandbox serve`.

- A fresh data dir with no agent installed: the landing offers the Shell first, it
  starts and takes typed input; every uninstalled agent shows how it gets installed
  (Install for the operator, the manual steps where the server cannot install it).
- An agent that exits shows its exit code at once and offers Restart agent; once its
  binary is gone the restart is refused, and the console does not hammer the server
  (at most 3 attaches in 30 s, no resize posted to a terminal that never attached); when
  the binary is back, the page opens the terminal by itself.
- The second-device link: made on the session page, it signs a fresh browser context
  into the same session once, and not a second time, also after a server restart.

The builtin catalogue is used (no `aider` stand-in) and the server's PATH is the
system's `/usr/bin:/bin`, so no agent a developer installed by hand counts.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from . import serve_process
from .serve_process import ServeProcess, start_serve
from .test_console_e2e import (
    OUTPUT_TIMEOUT_MS,
    READY_TIMEOUT_MS,
    run_in_terminal,
    start_from_card,
    visible_rows,
    wait_for_terminal,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(240)]

SYSTEM_PATH = "/usr/bin:/bin"
REFUSAL_WINDOW_MS = 30_000
MAX_ATTACHES = 3


def fresh_env(tmp: Path, rows: list[dict[str, Any]] | None = None) -> dict[str, str]:
    """Builtin catalogue (plus ``rows``), and no agent on the server's PATH."""
    override = tmp / "catalogue.json"
    override.write_text(json.dumps(rows or []))
    return {"OPENOVA_SANDBOX_AGENTS_PATH": str(override), "PATH": SYSTEM_PATH}


def sign_in(browser: Any, server: ServeProcess) -> dict[str, Any]:
    """Sign in with the one-time link the server printed; later contexts reuse the cookie."""
    context = browser.new_context(base_url=server.base_url)
    try:
        page = context.new_page()
        page.goto(server.login_url)
        page.wait_for_url("**/sandbox")
        state: dict[str, Any] = context.storage_state()
        return state
    finally:
        context.close()


@pytest.fixture(scope="module")
def fresh(
    chromium_available: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("fresh")
    server = start_serve(tmp, extra_env=fresh_env(tmp))
    try:
        yield server
    finally:
        server.stop()


def delete_from_page(page: Any) -> None:
    page.get_by_role("button", name="Delete", exact=True).click()
    page.get_by_role("dialog").get_by_role("button", name="Delete session").click()
    page.wait_for_url(re.compile(r".*/sandbox$"))


def test_fresh_install_offers_the_shell_and_how_to_install_agents(
    fresh: ServeProcess, browser: Any, artifacts: Path
) -> None:
    from playwright.sync_api import expect

    state = sign_in(browser, fresh)
    context = browser.new_context(base_url=fresh.base_url, storage_state=state)
    page = context.new_page()
    page.goto("/sandbox")
    agents = page.request.get("/api/v1/sandbox/agents").json()["agents"]
    by_kind = {a["id"]: a for a in agents}
    assert by_kind["shell"]["kind"] == "shell" and by_kind["shell"]["installed"], by_kind["shell"]
    installed = [a["id"] for a in agents if a["kind"] == "agent" and a["installed"]]
    assert installed == [], f"precondition: nothing installed on {SYSTEM_PATH}, got {installed}"

    cards = page.locator("[data-testid^=sandbox-agent-card-]")
    expect(cards.first).to_have_attribute("data-testid", "sandbox-agent-card-shell")
    assert cards.count() == len(agents)
    for agent in agents:
        if agent["kind"] != "agent":
            continue
        card = page.get_by_test_id(f"sandbox-agent-card-{agent['id']}")
        expect(card.get_by_role("button", name="Start session")).to_be_disabled()
        if agent["canInstall"]:
            # the local operator's link signs in as org admin: it may install
            expect(card.get_by_role("button", name="Install")).to_be_enabled()
        else:
            expect(card.get_by_role("button", name="Install")).to_have_count(0)
            assert agent["manualInstall"], agent
            expect(card).to_contain_text(agent["manualInstall"])
    assert any(a["canInstall"] for a in agents), "no agent offers Install to the operator"
    page.screenshot(path=str(artifacts / "landing-fresh.png"), full_page=True)

    start_from_card(page, "shell", "fresh-shell")
    page.wait_for_url("**/sandbox/fresh-shell")
    wait_for_terminal(page)
    run_in_terminal(page, "echo typed-$((6*7))")
    expect(visible_rows(page)).to_contain_text("typed-42", timeout=OUTPUT_TIMEOUT_MS)
    page.screenshot(path=str(artifacts / "terminal-shell.png"))
    delete_from_page(page)
    context.close()


def test_exit_code_restart_and_no_retry_of_a_refusal(
    chromium_available: None, browser: Any, tmp_path: Path, artifacts: Path
) -> None:
    """A stand-in agent (an interactive shell behind a script we can remove) exits, is
    restarted, then cannot start any more."""
    from playwright.sync_api import expect

    binary = tmp_path / "bin" / "vanishing"
    binary.parent.mkdir()
    script = "#!/bin/sh\nexec /bin/sh -i\n"

    def put_binary() -> None:
        # a new file (new inode): the server sees the agent was replaced
        fresh_copy = binary.with_suffix(".new")
        fresh_copy.write_text(script)
        fresh_copy.chmod(fresh_copy.stat().st_mode | stat.S_IXUSR)
        os.replace(fresh_copy, binary)

    put_binary()
    row = {"slug": "vanishing", "binary": str(binary), "label": "Vanishing", "blurb": "a shell"}
    env = fresh_env(tmp_path, [row])
    env["SANDBOX_ISOLATION_PATHS"] = str(binary.parent)  # shown inside the sandboxes
    server = start_serve(tmp_path, extra_env=env)
    try:
        context = browser.new_context(
            base_url=server.base_url, storage_state=sign_in(browser, server)
        )
        page = context.new_page()
        attaches: list[str] = []
        resizes: list[str] = []
        page.on("websocket", lambda ws: attaches.append(ws.url))
        page.on("request", lambda r: resizes.append(r.url) if r.url.endswith("/resize") else None)

        page.goto("/sandbox")
        start_from_card(page, "vanishing", "refusing")
        page.wait_for_url("**/sandbox/refusing")
        wait_for_terminal(page)
        status = page.locator(".terminal-panel:not([hidden]) [role=status]")

        # The agent exits: its code shows at once, with Restart agent (no silent retry).
        run_in_terminal(page, "exit 3")
        expect(status).to_contain_text("exited with code 3", timeout=5_000)
        expect(page.get_by_role("button", name="Reconnect now")).to_have_count(0)
        page.screenshot(path=str(artifacts / "terminal-exited.png"))
        before_restart = len(attaches)
        page.get_by_role("button", name="Restart agent").click()
        wait_for_terminal(page)
        assert len(attaches) == before_restart + 1
        run_in_terminal(page, "echo again-$((2+3))")
        expect(visible_rows(page)).to_contain_text("again-5", timeout=OUTPUT_TIMEOUT_MS)

        # Now the binary is gone: a restart is refused (1011) and never retried by itself.
        run_in_terminal(page, "exit 0")
        expect(status).to_contain_text("exited with code 0", timeout=5_000)
        binary.unlink()
        attaches_before, resizes_before = len(attaches), len(resizes)
        page.get_by_role("button", name="Restart agent").click()
        refusal = page.get_by_text(re.compile(r"cannot start", re.I)).first
        expect(refusal).to_be_visible(timeout=OUTPUT_TIMEOUT_MS)
        # a negative check over the window: the console must stay quiet
        page.wait_for_timeout(REFUSAL_WINDOW_MS)
        new_attaches = attaches[attaches_before:]
        assert len(new_attaches) <= MAX_ATTACHES, new_attaches
        assert resizes[resizes_before:] == [], "resize posted to a terminal never attached"
        # the server records the failure, and the page says so without attaching
        expect(page.get_by_role("heading", name="The agent cannot start")).to_be_visible(
            timeout=OUTPUT_TIMEOUT_MS
        )
        item = page.request.get("/api/v1/sandbox/sessions/refusing").json()
        assert item["status"] == "failed", item
        page.screenshot(path=str(artifacts / "agent-unavailable.png"), full_page=True)

        # The agent is back (installed again): the page opens its terminal by itself.
        put_binary()
        wait_for_terminal(page)
        run_in_terminal(page, "echo back-$((4+4))")
        expect(visible_rows(page)).to_contain_text("back-8", timeout=OUTPUT_TIMEOUT_MS)
        delete_from_page(page)
        context.close()
    finally:
        server.stop()


def test_second_device_link_signs_in_once_across_a_restart(
    chromium_available: None,
    browser: Any,
    tmp_path: Path,
    artifacts: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from playwright.sync_api import expect

    env = fresh_env(tmp_path)
    server = start_serve(tmp_path, extra_env=env)
    try:
        desk = browser.new_context(base_url=server.base_url, storage_state=sign_in(browser, server))
        page = desk.new_page()
        page.goto("/sandbox")
        start_from_card(page, "shell", "two-devices")
        page.wait_for_url("**/sandbox/two-devices")
        wait_for_terminal(page)
        run_in_terminal(page, "echo desk-$((7*6))")
        expect(visible_rows(page)).to_contain_text("desk-42", timeout=OUTPUT_TIMEOUT_MS)

        def make_link() -> str:
            page.get_by_role("button", name="Open on another device").click()
            dialog = page.get_by_role("dialog", name="Open on another device")
            qr = dialog.get_by_role("img", name="QR code of the sign-in link")
            expect(qr).to_be_visible(timeout=OUTPUT_TIMEOUT_MS)
            # the SVG really renders as an image (a broken data: URL has no size)
            assert qr.evaluate("img => img.complete && img.naturalWidth > 0")
            expect(dialog).to_contain_text("single use")
            url = str(dialog.get_by_label("Sign-in link").input_value())
            page.screenshot(path=str(artifacts / "device-link.png"))
            dialog.get_by_role("button", name="Done").click()
            expect(dialog).to_have_count(0)
            assert "/login?token=" in url, url
            return url

        def phone() -> Any:
            context = browser.new_context(
                base_url=server.base_url,
                viewport={"width": 390, "height": 780},
                is_mobile=True,
                has_touch=True,
            )
            return context.new_page()

        # First use: a fresh browser lands signed in on the same session.
        link = make_link()
        first = phone()
        first.goto(link)
        first.wait_for_url("**/sandbox/two-devices", timeout=OUTPUT_TIMEOUT_MS)
        wait_for_terminal(first)
        expect(visible_rows(first)).to_contain_text("desk-42", timeout=OUTPUT_TIMEOUT_MS)
        first.screenshot(path=str(artifacts / "device-link-phone.png"))
        first.context.close()

        # Second use: refused, and that browser is not signed in.
        second = phone()
        second.goto(link)
        expect(second.get_by_text("This sign-in link is not valid")).to_be_visible()
        second.goto("/sandbox")
        expect(second.get_by_role("heading", name="Sign in to OpenOva Sandbox")).to_be_visible()
        second.context.close()

        # A link used before a restart stays used after it (same data dir, same port).
        used = make_link()
        user = phone()
        user.goto(used)
        user.wait_for_url("**/sandbox/two-devices", timeout=OUTPUT_TIMEOUT_MS)
        user.context.close()
        desk.close()
        port = int(server.base_url.rsplit(":", 1)[1])
        server.stop()
        monkeypatch.setattr(serve_process, "free_port", lambda: port)
        server = start_serve(tmp_path, extra_env=env)
        assert server.base_url.endswith(f":{port}")
        again = phone()
        again.goto(used)
        expect(again.get_by_text("This sign-in link is not valid")).to_be_visible()
        again.goto("/sandbox")
        expect(again.get_by_role("heading", name="Sign in to OpenOva Sandbox")).to_be_visible()
        again.context.close()
    finally:
        server.stop()


def test_install_button_is_not_offered_to_a_plain_user(fresh: ServeProcess, browser: Any) -> None:
    """A signed-in user who is not an org admin sees "ask your operator" (the server
    would answer 403 anyway)."""
    from playwright.sync_api import expect

    token = mint_token(fresh, sub="plain-user", email="plain@example.com", admin=False)
    context = browser.new_context(base_url=fresh.base_url)
    page = context.new_page()
    page.goto(f"/login?token={token}")
    # a token that is not a login link's is confirmed on the server's own page
    page.get_by_role("button", name=re.compile("^Sign in as")).click()
    page.wait_for_url("**/sandbox")
    agents = page.request.get("/api/v1/sandbox/agents").json()["agents"]
    assert not any(a["canInstall"] for a in agents)
    installable = [a for a in agents if a["installable"] and not a["installed"]]
    assert installable, agents
    card = page.get_by_test_id(f"sandbox-agent-card-{installable[0]['id']}")
    expect(card).to_contain_text("Ask your operator to install it.", timeout=READY_TIMEOUT_MS)
    expect(card.get_by_role("button", name="Install")).to_have_count(0)
    context.close()


def mint_token(server: ServeProcess, *, sub: str, email: str, admin: bool) -> str:
    """`sandbox token` against the server's data dir, as its docs say."""
    import subprocess
    import sys

    sandbox_bin = Path(sys.executable).with_name("sandbox")
    data_dir = Path(str(list(server.process.args)[-1]))  # type: ignore[arg-type]
    args = [str(sandbox_bin), "token", "--data-dir", str(data_dir), "--sub", sub]
    args += ["--email", email, "--org", "local"]
    if admin:
        args += ["--role", "org-admin"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip().splitlines()[-1]
