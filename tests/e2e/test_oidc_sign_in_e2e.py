"""The console's Sign in with an external OIDC issuer, in Chromium (issue 11).

A real `sandbox serve` configured with a real provider process (``oidc-provider-mock``,
tests/support/oidc_idp.py). Nothing is set by hand: the browser clicks the console's Sign
in, signs in on the provider's own page, comes back signed in (the cookie holds only a
session id), and Sign out ends the session at the provider (RP-initiated logout) and
lands on the console's sign-in page again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from support.oidc_idp import OidcIdp

from .serve_process import start_serve

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def whoami(page: Any) -> dict[str, Any]:
    answer = page.request.get("/api/v1/sandbox/whoami")
    return {"status": answer.status, **(answer.json() if answer.ok else {})}


def test_sign_in_and_out_with_the_identity_provider(
    chromium_available: None, browser: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    idp = OidcIdp("--revocation")
    server = None
    try:
        idp.set_user(
            "alice",
            email="alice@acme.test",
            organization=["acme", "globex"],
            realm_access={"roles": ["org-admin"]},
        )
        server = start_serve(
            tmp_path,
            extra_env={
                "SANDBOX_OIDC_ISSUER": idp.url,
                "SANDBOX_OIDC_CLIENT_ID": "sandbox-console",
                "SANDBOX_OIDC_CLIENT_SECRET": "console-secret",
                "SANDBOX_OIDC_ORG_CLAIM": "organization",
                # several users, and this machine cannot isolate sandboxes; none are run
                "SANDBOX_ISOLATION": "none",
            },
        )
        said = "".join(server.lines)
        assert f"the CLI: sandbox login --server {server.base_url}" in said, said
        context = browser.new_context(base_url=server.base_url)
        page = context.new_page()
        page.goto("/sandbox/settings")
        sign_in = page.get_by_role("button", name="Sign in", exact=True)
        expect(sign_in).to_be_enabled()
        sign_in.click()

        # the provider's own page; alice belongs to two orgs and named none
        page.wait_for_url(f"{idp.url}/oauth2/authorize?**")
        page.locator("input[name=sub]").fill("alice")
        page.get_by_role("button", name="Authorize").click()
        expect(page.get_by_role("heading", name="Sign-in did not work")).to_be_visible()
        expect(page.get_by_text("names 2 organization(s)")).to_be_visible()
        assert whoami(page)["status"] == 401

        # the page offers each org: choosing one goes through the provider again
        page.get_by_role("link", name="globex").click()
        page.wait_for_url(f"{idp.url}/oauth2/authorize?**")
        page.locator("input[name=sub]").fill("alice")
        page.get_by_role("button", name="Authorize").click()
        page.wait_for_url(f"{server.base_url}/sandbox/settings")
        expect(page.get_by_test_id("whoami-email")).to_have_text("alice@acme.test")
        me = whoami(page)
        assert (me["status"], me["org"], me["orgAdmin"]) == (200, "globex", True)
        cookie = next(c for c in context.cookies() if c["name"] == "catalyst_session")
        assert cookie["value"].startswith("oidc:") and cookie["httpOnly"]
        assert cookie["sameSite"] == "Strict"
        assert "." not in cookie["value"]  # a session id, no token

        # Sign out: ended here, then at the provider, and back to the console
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url(f"{idp.url}/oauth2/end_session?**")
        page.get_by_role("button", name="End session").click()
        page.wait_for_url(f"{server.base_url}/sandbox")
        expect(page.get_by_role("heading", name="Sign in to OpenOva Sandbox")).to_be_visible()
        assert whoami(page)["status"] == 401
        assert idp.stats()["revoked"] == 1
        context.close()
    finally:
        if server is not None:
            server.stop()
        idp.stop()
