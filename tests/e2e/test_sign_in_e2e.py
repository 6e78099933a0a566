"""The sign-in pages in Chromium against a real `sandbox serve` (issue 8).

- A token that is not a login link's shows the confirmation page; clicking its button
  signs the browser in. The browser sends its own ``Origin`` (nothing is set by hand):
  with the old ``Referrer-Policy: no-referrer`` Chromium sent ``Origin: null`` and got
  403.
- A login link (the one `sandbox serve` prints, and one from `sandbox login-link`) works
  once; after the server process is restarted on the same data dir it still does not
  work again.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from openova_sandbox.auth.issuer import EmbeddedIssuer

from . import serve_process
from .serve_process import start_serve

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

SANDBOX = str(Path(sys.executable).with_name("sandbox"))
NOT_VALID = "This sign-in link is not valid"


def whoami(page: Any) -> dict[str, Any]:
    answer = page.request.get("/api/v1/sandbox/whoami")
    return {"status": answer.status, **(answer.json() if answer.ok else {})}


def test_the_confirmation_page_signs_in_from_a_click(
    chromium_available: None, browser: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    server = start_serve(tmp_path)
    try:
        token = EmbeddedIssuer.load(tmp_path / "data").mint(
            sub="plain-user", email="plain@example.com", org="acme"
        )
        context = browser.new_context(base_url=server.base_url)
        page = context.new_page()
        posts: list[dict[str, str]] = []
        page.on(
            "request",
            lambda r: posts.append(r.headers) if r.method == "POST" and "/login" in r.url else None,
        )
        page.goto(f"/login?token={token}")
        expect(page.get_by_role("heading", name="Sign in as plain@example.com?")).to_be_visible()
        assert whoami(page)["status"] == 401  # not signed in by opening the page
        page.get_by_role("button", name="Sign in as plain@example.com").click()
        page.wait_for_url("**/sandbox")
        me = whoami(page)
        assert (me["status"], me["sub"], me["email"]) == (200, "plain-user", "plain@example.com")
        # what made it work: the browser's own Origin on the form's POST, not "null"
        assert posts and posts[0].get("origin") == server.base_url, posts
        context.close()
    finally:
        server.stop()


def test_login_links_work_once_also_across_a_restart(
    chromium_available: None, browser: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from playwright.sync_api import expect

    server = start_serve(tmp_path)
    try:
        printed = server.login_url
        made = subprocess.run(
            [
                SANDBOX,
                "login-link",
                "--server",
                server.base_url,
                "--data-dir",
                str(tmp_path / "data"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert made.returncode == 0, made.stderr
        match = re.search(r"(http://\S+/login\?token=\S+)", made.stdout)
        assert match is not None, made.stdout
        device = match.group(1)

        def open_in_a_fresh_browser(link: str) -> tuple[Any, Any]:
            context = browser.new_context(base_url=server.base_url)
            page = context.new_page()
            page.goto(link)
            return context, page

        for link in (printed, device):
            context, page = open_in_a_fresh_browser(link)
            page.wait_for_url("**/sandbox")
            assert whoami(page)["status"] == 200
            context.close()
            context, page = open_in_a_fresh_browser(link)  # the second use
            expect(page.get_by_text(NOT_VALID)).to_be_visible()
            assert whoami(page)["status"] == 401
            context.close()

        # the real process restarts on the same port and data dir
        port = int(server.base_url.rsplit(":", 1)[1])
        server.stop()
        monkeypatch.setattr(serve_process, "free_port", lambda: port)
        server = start_serve(tmp_path)
        for link in (printed, device):
            context, page = open_in_a_fresh_browser(link)
            expect(page.get_by_text(NOT_VALID)).to_be_visible()
            assert whoami(page)["status"] == 401
            context.close()
        # the link the restarted server printed is new, and works
        context, page = open_in_a_fresh_browser(server.login_url)
        page.wait_for_url("**/sandbox")
        assert whoami(page)["status"] == 200
        context.close()
    finally:
        server.stop()
