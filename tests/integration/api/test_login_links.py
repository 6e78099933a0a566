"""One-time sign-in links for another device (POST /api/v1/sandbox/login-links), over a
real server: single use, ten minutes, landing on ``next``, remembered across restarts."""

from __future__ import annotations

import re
import stat
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import httpx
import pytest

LINKS = "/api/v1/sandbox/login-links"
WHOAMI = "/api/v1/sandbox/whoami"


def redeem(url: str) -> httpx.Response:
    """Open the link in a fresh browser (its own cookie jar); the final answer."""
    parts = urlsplit(url)
    with httpx.Client(base_url=f"{parts.scheme}://{parts.netloc}") as browser:
        answer = browser.get(f"{parts.path}?{parts.query}")
        if answer.status_code == 303:
            answer.extensions["whoami"] = browser.get(WHOAMI).json()
        return answer


def test_a_link_signs_another_browser_in_once_as_the_caller(api):
    caller = api.auth(sub="alice-sub-1", email="alice@acme.com", roles=("org-admin",))
    made = api.http.post(LINKS, headers=caller, json={"next": "/sandbox/box"})
    assert made.status_code == 201, made.text
    body = made.json()
    assert set(body) == {"url", "expiresAt", "qrSvg"}
    assert body["url"].startswith(f"{api.url}/login?token=")
    expires = datetime.fromisoformat(body["expiresAt"].replace("Z", "+00:00"))
    left = expires - datetime.now(UTC)
    assert timedelta(minutes=9) < left <= timedelta(minutes=10, seconds=1)
    assert body["qrSvg"].startswith("<svg") and body["qrSvg"].rstrip().endswith("</svg>")
    assert made.headers["cache-control"] == "no-store"

    first = redeem(body["url"])
    assert first.status_code == 303
    assert first.headers["location"] == "/sandbox/box"
    who = dict(first.extensions["whoami"])
    assert who.pop("isolation")["mode"] in ("bwrap", "none")  # embedded mode says (issue 12)
    assert who == {
        "sub": "alice-sub-1",
        "email": "alice@acme.com",
        "org": "acme",
        "orgAdmin": True,
    }
    second = redeem(body["url"])
    assert second.status_code == 401
    assert "catalyst_session" not in second.headers.get("set-cookie", "")
    assert "already used" in second.text or "expired or was already used" in second.text


def test_without_next_it_lands_on_the_console(api):
    made = api.http.post(LINKS, headers=api.auth())
    assert made.status_code == 201
    assert redeem(made.json()["url"]).headers["location"] == "/sandbox"


@pytest.mark.parametrize(
    "next_path",
    [
        "https://evil.example/sandbox",
        "//evil.example/sandbox",
        "/\\evil.example",
        "/api/v1/sandbox/sessions",
        "/sandbox/../login",
        "sandbox/box",
        "/sandbox/box\n",
        5,
    ],
)
def test_next_must_be_a_console_path_of_this_server(api, next_path):
    answer = api.http.post(LINKS, headers=api.auth(), json={"next": next_path})
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid-next"


def test_bad_bodies_and_strangers(api):
    assert api.http.post(LINKS, json={}).status_code == 401
    bad = api.http.post(LINKS, headers=api.auth(), content=b"{nope")
    assert (bad.status_code, bad.json()["error"]) == (400, "invalid-json")
    listed = api.http.post(LINKS, headers=api.auth(), json=["/sandbox"])
    assert (listed.status_code, listed.json()["error"]) == (400, "invalid-json")


def test_the_login_pages_next_is_checked_too(api):
    """``/login?next=`` is honoured for a same-site path and ignored otherwise."""
    token = api.auth()["Authorization"].split()[1]
    with httpx.Client(base_url=api.url) as browser:
        page = browser.get("/login", params={"token": token, "next": "/sandbox/x"})
        form = dict(re.findall(r'name="(\w+)" value="([^"]*)"', page.text))
        assert form["next"] == "/sandbox/x"
        done = browser.post("/login", data=form, headers={"Origin": api.url})
        assert done.headers["location"] == "/sandbox/x"
    with httpx.Client(base_url=api.url) as browser:
        page = browser.get("/login", params={"token": token, "next": "https://evil.example"})
        form = dict(re.findall(r'name="(\w+)" value="([^"]*)"', page.text))
        assert form["next"] == ""
        done = browser.post("/login", data=form, headers={"Origin": api.url})
        assert done.headers["location"] == "/sandbox"


def test_used_links_stay_used_across_a_restart(make_api, tmp_path):
    first = make_api(store="sql")
    links = [first.http.post(LINKS, headers=first.auth()).json()["url"] for _ in range(2)]
    assert redeem(links[0]).status_code == 303
    used = tmp_path / "data" / "login-links-used"
    assert stat.S_IMODE(used.stat().st_mode) == 0o600
    # the same data dir, a new server process state (new deps, new port)
    second = make_api(store="sql")
    moved = [link.replace(first.url, second.url) for link in links]
    assert redeem(moved[0]).status_code == 401  # used before the restart
    assert redeem(moved[1]).status_code == 303  # not used yet: works once
    assert redeem(moved[1]).status_code == 401


def test_expired_entries_are_dropped_from_the_file(make_api, tmp_path):
    used = tmp_path / "data" / "login-links-used"
    used.parent.mkdir(parents=True)
    past, future = int(time.time()) - 60, int(time.time()) + 600
    used.write_text(f"old-jti {past}\nlive-jti {future}\nnot a line\n")
    used.chmod(0o644)
    make_api(store="memory")
    assert used.read_text() == f"live-jti {future}\n"
    assert stat.S_IMODE(used.stat().st_mode) == 0o600
