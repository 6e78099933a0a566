"""Tenancy and boundary defects of issue 11 (item 5), each through the real app."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import websockets

from openova_sandbox.api.app import create_app
from openova_sandbox.api.composition import build_embedded
from openova_sandbox.auth.issuer import EmbeddedIssuer
from openova_sandbox.config import load_settings
from openova_sandbox.domain.errors import Conflict
from openova_sandbox.testing.server import serve_in_thread
from support.fake_agents import write_stand_ins

SESSIONS = "/api/v1/sandbox/sessions"
JSON = {"Content-Type": "application/json"}


def post_raw(api, path, text, **token):
    return api.http.post(path, headers={**api.auth(**token), **JSON}, content=text.encode())


@pytest.mark.parametrize(
    "text",
    [
        r'{"agent":"shell","name":"\ud800"}',
        r'{"agent":"shell\udfff"}',
        r'{"agent":"shell","repo":"acme/x\ud800"}',
        r'{"agent":"shell","name":"ok","extra":{"\ud800":1}}',
    ],
)
def test_a_lone_surrogate_in_a_create_body_is_refused_and_nothing_is_stored(make_api, text):
    api = make_api(store="sql")
    answer = post_raw(api, SESSIONS, text)
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["error"] == "invalid-json"
    assert "\\ud800" not in body["detail"] and "\ud800" not in body["detail"]
    listed = api.http.get(SESSIONS, headers=api.auth())
    assert listed.status_code == 200 and listed.json() == {"sandboxes": []}
    org = api.http.get(SESSIONS, headers=api.auth(roles=("org-admin",)), params={"scope": "org"})
    assert org.status_code == 200 and org.json() == {"sandboxes": []}
    assert api.http.get(f"{SESSIONS}/sandbox-shell", headers=api.auth()).status_code == 404
    # a valid surrogate pair is a real character and still fine
    ok = post_raw(api, SESSIONS, r'{"agent":"shell","name":"smile \ud83d\ude00"}')
    assert ok.status_code == 201, ok.text
    assert ok.json()["name"] == "smile \U0001f600"
    assert api.http.get(f"{SESSIONS}/{ok.json()['id']}", headers=api.auth()).status_code == 200


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ("/api/v1/sandbox/login-links", r'{"next":"/sandbox\ud800"}'),
        ("/api/v1/sandbox/budgets/user/dev", r'{"monthlyUsd":1,"note":"\ud800"}'),
        ("/api/v1/sandbox/agents/shell/install", r'{"version":"\ud800"}'),
    ],
)
def test_a_lone_surrogate_in_other_bodies_is_refused(api, path, text):
    send = api.http.put if "/budgets/" in path else api.http.post
    answer = send(path, headers={**api.auth(roles=("org-admin",)), **JSON}, content=text.encode())
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid-json"


def test_org_admin_without_an_org_administers_nothing(api):
    # two org-less users share the default namespace
    alice = {"sub": "alice-sub-0001", "email": "alice@x.com", "org": ""}
    admin = {"sub": "mallory-sub-01", "email": "m@x.com", "org": "", "roles": ("org-admin",)}
    made = api.http.post(SESSIONS, headers=api.auth(**alice), json={"agent": "shell", "name": "a"})
    assert made.status_code == 201, made.text
    listed = api.http.get(SESSIONS, headers=api.auth(**admin), params={"scope": "org"})
    assert listed.status_code == 200 and listed.json() == {"sandboxes": []}
    assert api.http.get(f"{SESSIONS}/a", headers=api.auth(**admin)).status_code == 404
    assert api.http.delete(f"{SESSIONS}/a", headers=api.auth(**admin)).status_code == 404
    who = api.http.get("/api/v1/sandbox/whoami", headers=api.auth(**admin)).json()
    assert who["orgAdmin"] is False
    assert api.http.get(f"{SESSIONS}/a", headers=api.auth(**alice)).status_code == 200


@pytest.mark.parametrize("claim", ["org_id", "org"])
@pytest.mark.parametrize("value", [["acme"], {"id": "acme"}, 7, True])
def test_a_non_string_org_claim_is_refused_with_a_clear_401(api, claim, value):
    token = api.issuer.mint(
        sub="user-sub-abcdef12",
        email="dev@acme.com",
        org="",
        roles=("org-admin",),
        ttl=timedelta(minutes=5),
        extra={claim: value},
    )
    for method, path in (("GET", SESSIONS), ("DELETE", f"{SESSIONS}/a")):
        answer = api.http.request(method, path, headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 401, answer.text
        body = answer.json()
        assert body["error"] == "unauthenticated"
        assert claim in body["detail"] and "string" in body["detail"]


@pytest.mark.parametrize(
    ("repo", "fragment"),
    [
        ("acme/x\n", "<org>/<name>"),
        ("acme/..", "<org>/<name>"),
        ("acme/" + "r" * 101, "100 characters"),
        ("a" * 64 + "/x", "63 characters"),
    ],
)
def test_a_repo_must_match_whole_and_is_capped(api, repo, fragment):
    answer = api.http.post(SESSIONS, headers=api.auth(), json={"agent": "shell", "repo": repo})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid-repo"
    assert fragment in answer.json()["detail"]
    assert api.http.get(SESSIONS, headers=api.auth()).json() == {"sandboxes": []}


def framing_refused(response):
    csp = response.headers.get("content-security-policy", "")
    assert "frame-ancestors 'none'" in csp, (response.url, csp)
    assert response.headers.get("x-frame-options") == "DENY", response.url


def test_every_html_page_refuses_to_be_framed(api):
    pages = [
        api.http.get("/sandbox"),  # the console (or its "not built" page)
        api.http.get("/sandbox/some-box"),  # a deep link
        api.http.get("/login", params={"token": "not-a-token"}),  # the failure page
        api.http.get("/login", params={"token": api.token()}),  # the confirm page
        api.http.post("/login", data={"token": "x"}, headers={"Origin": "https://evil.example"}),
    ]
    for page in pages:
        assert page.headers["content-type"].startswith("text/html"), (page.url, page.text)
        framing_refused(page)
    # the confirm page keeps its own, stricter policy
    confirm = pages[3].headers["content-security-policy"]
    assert "default-src 'none'" in confirm and confirm.count("frame-ancestors") == 1


HOLD = "test.openova.io/hold"  # a finalizer nobody releases: the deletion stays under way


class HeldApi:
    """A real app, a client, tokens, and a way to run store calls on the app's loop."""

    def __init__(self, server, data_dir: Path, deps, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self.deps = deps
        self.issuer = EmbeddedIssuer.load(data_dir)
        self.http = httpx.Client(base_url=server.url, timeout=10)
        self.loop = loop

    def token(self) -> str:
        return self.issuer.mint(
            sub="user-sub-abcdef12", email="dev@acme.com", org="acme", ttl=timedelta(minutes=5)
        )

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}"}

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)


@pytest.fixture
def held(tmp_path: Path):
    settings = load_settings(
        data_dir=tmp_path / "data",
        agents_path=str(write_stand_ins(tmp_path / "agents.json")),
        store="memory",
    )
    deps = build_embedded(settings)
    loops: list[asyncio.AbstractEventLoop] = []

    async def remember_loop() -> None:
        loops.append(asyncio.get_running_loop())

    deps.on_started.append(remember_loop)
    with serve_in_thread(create_app(deps)) as server:
        api = HeldApi(server, tmp_path / "data", deps, loops[0])
        yield api
        api.http.close()


def hold_deletion(api, namespace: str, name: str) -> None:
    async def add_hold() -> None:
        for _ in range(50):
            current = await api.deps.store.get(namespace, name)
            try:
                await api.deps.store.update(
                    current.with_meta(finalizers=(*current.metadata.finalizers, HOLD))
                )
                return
            except Conflict:
                await asyncio.sleep(0.05)
        raise AssertionError("could not add the hold finalizer")

    api.run(add_hold())


def test_a_deleting_sandbox_shows_it_and_takes_no_terminals(held):
    api = held
    headers = api.auth()
    made = api.http.post(SESSIONS, headers=headers, json={"agent": "shell", "name": "box"})
    assert made.status_code == 201, made.text
    deadline = time.monotonic() + 20
    while api.http.get(f"{SESSIONS}/box", headers=headers).json().get("phase") != "Ready":
        assert time.monotonic() < deadline, "sandbox not ready"
        time.sleep(0.05)
    hold_deletion(api, "acme", "box")
    assert api.http.delete(f"{SESSIONS}/box", headers=headers).status_code == 204

    item = api.http.get(f"{SESSIONS}/box", headers=headers).json()
    assert item["status"] == "stopping", item
    assert item["deletionTimestamp"].endswith("Z")
    (listed,) = api.http.get(SESSIONS, headers=headers).json()["sandboxes"]
    assert (listed["status"], listed["deletionTimestamp"]) == (
        "stopping",
        item["deletionTimestamp"],
    )

    opened = api.http.post(f"{SESSIONS}/box/terminals", headers=headers, json={"agent": "shell"})
    assert opened.status_code == 409, opened.text
    assert opened.json()["error"] == "sandbox-deleting"

    async def attach() -> websockets.ConnectionClosed:
        url = f"{api.server.ws_url}{SESSIONS}/box/attach?access_token={api.token()}"
        async with asyncio.timeout(10), websockets.connect(url) as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            return closed.value

    closed = asyncio.run(attach())
    assert closed.rcvd is not None
    assert (closed.rcvd.code, closed.rcvd.reason) == (1008, "sandbox-deleting")
