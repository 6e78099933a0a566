"""Share links over real HTTP against the running app (SQLite store, signed tokens):
who may manage them, who may use them, what is stored, and revocation waking waiters."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import Api
from openova_sandbox.api.app import create_app
from openova_sandbox.api.composition import build_embedded
from openova_sandbox.config import load_settings
from openova_sandbox.domain.errors import Conflict, NotFound
from openova_sandbox.domain.model import format_time, parse_time, utcnow
from openova_sandbox.domain.principal import Principal
from openova_sandbox.domain.share import ANNOTATION_SHARES
from openova_sandbox.services.shares import SharesService
from openova_sandbox.store.sql import SqlStore
from openova_sandbox.testing.server import serve_in_thread
from support.fake_agents import write_stand_ins

SESSIONS = "/api/v1/sandbox/sessions"
BOX = "claude-code-2c234e5a"  # the default id of sub user-sub-abcdef12
SHARES = f"{SESSIONS}/{BOX}/shares"
SHARED = f"/api/v1/sandbox/shared/{BOX}"

OWNER: dict[str, Any] = {}  # the default token: user-sub-abcdef12, dev@acme.com, org acme
MEMBER = {"sub": "member-sub-0001", "email": "member@acme.com"}
ADMIN = {"sub": "admin-sub-0001", "email": "admin@acme.com", "roles": ("org-admin",)}
OUTSIDER = {"sub": "outsider-sub-01", "email": "eve@evil.com", "org": "evil"}
OUTSIDER_ADMIN = {**OUTSIDER, "roles": ("org-admin",)}


@dataclass
class App:
    api: Api
    loop: asyncio.AbstractEventLoop  # the server's loop: where the app's services run

    def on_loop(self, coro: Any) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    """The embedded app on SQLite, built as conftest's ``make_api`` does, and the loop it
    serves on (captured at start-up), so a test can wait on the app's own service."""
    agents = write_stand_ins(tmp_path / "agents.json")
    settings = load_settings(data_dir=tmp_path / "data", agents_path=str(agents), store="sql")
    deps = build_embedded(settings)
    loops: list[asyncio.AbstractEventLoop] = []

    async def capture() -> None:
        loops.append(asyncio.get_running_loop())

    deps.on_started.append(capture)
    with serve_in_thread(create_app(deps)) as server:
        api = Api(server, tmp_path / "data", deps)
        try:
            created = api.http.post(SESSIONS, headers=api.auth(), json={"agent": "claude-code"})
            assert created.status_code == 201, created.text
            yield App(api, loops[0])
        finally:
            api.http.close()


def create(api: Api, body: Any = None, who: dict[str, Any] = OWNER, **kw: Any) -> Any:
    if body is not None:
        kw["json"] = body
    return api.http.post(SHARES, headers=api.auth(**who), **kw)


def shared(api: Api, token: str, who: dict[str, Any] = MEMBER, box: str = BOX) -> Any:
    return api.http.get(
        f"/api/v1/sandbox/shared/{box}", params={"share": token}, headers=api.auth(**who)
    )


def stored_annotation(api: Api) -> str:
    sandbox = api.on_own_store(lambda store: store.get("acme", BOX))
    return sandbox.metadata.annotations.get(ANNOTATION_SHARES, "")


def test_create_list_use_revoke(app):
    api = app.api
    made = create(api, {"mode": "read", "ttlSeconds": 600})
    assert made.status_code == 201, made.text
    assert made.headers["cache-control"] == "no-store"
    share = made.json()
    assert set(share) == {"id", "mode", "expiresAt", "createdAt", "createdBy", "token", "url"}
    token = share["token"]
    assert share["mode"] == "read" and share["createdBy"] == "dev@acme.com"
    assert share["url"] == f"{api.url}/sandbox/{BOX}?share={token}"
    created_at = parse_time(share["createdAt"])
    assert created_at is not None and abs(created_at - utcnow()) < timedelta(seconds=10)
    assert share["expiresAt"] == format_time(created_at + timedelta(seconds=600))

    listed = api.http.get(SHARES, headers=api.auth())
    assert listed.status_code == 200
    assert listed.json() == {
        "shares": [{k: v for k, v in share.items() if k not in ("token", "url")}]
    }
    assert token not in listed.text

    # a member of the org with the link sees what it opens
    opened = shared(api, token)
    assert opened.status_code == 200, opened.text
    assert opened.json() == {
        "id": BOX,
        "name": BOX,
        "agent": "claude-code",
        "owner": "dev@acme.com",
        "mode": "read",
        "expiresAt": share["expiresAt"],
    }

    assert api.http.delete(f"{SHARES}/{share['id']}", headers=api.auth()).status_code == 204
    assert api.http.get(SHARES, headers=api.auth()).json() == {"shares": []}
    refused = shared(api, token)
    assert refused.status_code == 404 and refused.json()["error"] == "share-not-found"
    again = api.http.delete(f"{SHARES}/{share['id']}", headers=api.auth())
    assert again.status_code == 404 and again.json()["error"] == "share-not-found"
    assert stored_annotation(api) == ""  # the last share gone: the annotation too


def test_the_stored_sandbox_holds_the_hash_never_the_token(app):
    api = app.api
    write = create(api, {"mode": "write"}).json()
    read = create(api).json()
    text = stored_annotation(api)
    stored = json.loads(text)
    for share in (write, read):
        assert share["token"] not in text
    by_id = {entry["id"]: entry for entry in stored}
    assert by_id[write["id"]]["tokenHash"] == (
        "sha256:" + hashlib.sha256(write["token"].encode()).hexdigest()
    )
    assert by_id[write["id"]]["mode"] == "write" and by_id[read["id"]]["mode"] == "read"
    assert shared(api, write["token"]).json()["mode"] == "write"
    # a token that is the stored hash itself opens nothing
    assert shared(api, by_id[write["id"]]["tokenHash"]).status_code == 404


def test_an_expired_link_is_refused_and_pruned_on_the_next_write(app):
    api = app.api
    share = create(api, {"ttlSeconds": 60}).json()

    async def expire(store: SqlStore) -> None:
        while True:  # the controller writes the object too: retry a lost race
            sandbox = await store.get("acme", BOX)
            entries = json.loads(sandbox.metadata.annotations[ANNOTATION_SHARES])
            entries[0]["expiresAt"] = format_time(utcnow() - timedelta(seconds=1))
            annotations = {**sandbox.metadata.annotations, ANNOTATION_SHARES: json.dumps(entries)}
            with contextlib.suppress(Conflict):
                await store.update(sandbox.with_meta(annotations=annotations))
                return

    api.on_own_store(expire)
    refused = shared(api, share["token"])
    assert refused.status_code == 403
    assert refused.json()["error"] == "share-expired"
    assert "expired at" in refused.json()["detail"]
    assert api.http.get(SHARES, headers=api.auth()).json() == {"shares": []}
    assert share["id"] in stored_annotation(api)  # not written yet
    other = create(api).json()
    ids = [entry["id"] for entry in json.loads(stored_annotation(api))]
    assert ids == [other["id"]]


def test_another_orgs_user_is_refused_like_a_missing_sandbox(app):
    api = app.api
    token = create(api, {"mode": "write"}).json()["token"]
    for who in (OUTSIDER, OUTSIDER_ADMIN):
        refused = shared(api, token, who=who)
        assert refused.status_code == 404
        body = refused.json()
        assert body["error"] == "share-not-found"
        missing = shared(api, token, who=who, box="no-such-box")
        assert missing.status_code == 404 and missing.json()["error"] == "share-not-found"
        # an org admin elsewhere does not manage it either
        assert api.http.get(SHARES, headers=api.auth(**who)).status_code == 404
    # a wrong token and no token, for a member of the org
    assert shared(api, token[:-2] + "xx").status_code == 404
    assert shared(api, "").json()["error"] == "missing-share"
    # and nobody unauthenticated
    assert api.http.get(SHARED, params={"share": token}).status_code == 401
    assert api.http.get(SHARES).status_code == 401
    assert api.http.post(SHARES, json={}).status_code == 401


def test_only_the_owner_or_an_org_admin_manages_shares(app):
    api = app.api
    share = create(api).json()
    for verb, path, body in (
        ("POST", SHARES, {}),
        ("GET", SHARES, None),
        ("DELETE", f"{SHARES}/{share['id']}", None),
    ):
        answer = api.http.request(verb, path, json=body, headers=api.auth(**MEMBER))
        assert answer.status_code == 404, (verb, answer.text)
        assert answer.json() == {
            "error": "sandbox-not-found",
            "detail": f'sandbox "{BOX}" not found in namespace "acme"',
        }
    assert [s["id"] for s in api.http.get(SHARES, headers=api.auth()).json()["shares"]] == [
        share["id"]
    ]
    # an admin of the org may, and is named as the creator
    made = create(api, {"mode": "write"}, who=ADMIN)
    assert made.status_code == 201 and made.json()["createdBy"] == "admin@acme.com"
    listed = api.http.get(SHARES, headers=api.auth(**ADMIN)).json()["shares"]
    assert {s["id"] for s in listed} == {share["id"], made.json()["id"]}
    revoked = api.http.delete(f"{SHARES}/{share['id']}", headers=api.auth(**ADMIN))
    assert revoked.status_code == 204
    missing = api.http.get(f"{SESSIONS}/no-such-box/shares", headers=api.auth())
    assert missing.status_code == 404 and missing.json()["error"] == "sandbox-not-found"


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        ({"mode": "admin"}, "invalid-mode", '"read" or "write"'),
        ({"mode": 1}, "invalid-mode", '"read" or "write"'),
        ({"ttlSeconds": 59}, "invalid-ttl", "from 60"),
        ({"ttlSeconds": 604801}, "invalid-ttl", "604800"),
        ({"ttlSeconds": "3600"}, "invalid-ttl", "integer"),
        ({"ttlSeconds": 90.5}, "invalid-ttl", "integer"),
        ({"ttlSeconds": True}, "invalid-ttl", "integer"),
        ([], "invalid-json", "JSON object"),
        ("read", "invalid-json", "JSON object"),
    ],
)
def test_bad_bodies_are_400_with_a_detail(app, body, code, words):
    answer = create(app.api, body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == code
    assert words in answer.json()["detail"]


def test_unparsable_and_empty_bodies(app):
    api = app.api
    bad = api.http.post(SHARES, content=b"{mode:", headers=api.auth())
    assert bad.status_code == 400 and bad.json()["error"] == "invalid-json"
    assert bad.json()["detail"]
    surrogate = api.http.post(SHARES, content=b'{"mode": "\\ud800"}', headers=api.auth())
    assert surrogate.status_code == 400 and surrogate.json()["error"] == "invalid-json"
    empty = api.http.post(SHARES, headers=api.auth())
    assert empty.status_code == 201 and empty.json()["mode"] == "read"
    extra = create(api, {"mode": "write", "ttlSeconds": 60, "note": "for bob"})
    assert extra.status_code == 201 and extra.json()["mode"] == "write"
    assert "note" not in extra.json()


def test_at_most_20_live_shares(app):
    api = app.api
    made = [create(api).json()["id"] for _ in range(20)]
    over = create(api)
    assert over.status_code == 409
    assert over.json()["error"] == "share-limit"
    assert "20" in over.json()["detail"]
    assert api.http.delete(f"{SHARES}/{made[0]}", headers=api.auth()).status_code == 204
    assert create(api).status_code == 201
    assert len(api.http.get(SHARES, headers=api.auth()).json()["shares"]) == 20


def test_revoking_wakes_the_apps_waiters_at_once(app):
    """``wait_revoked`` on the app's own service (its default poll is 15 s) returns as
    soon as DELETE answers; waiters of other shares keep waiting."""
    api = app.api
    service: SharesService = api.deps.shares
    first, second = create(api).json(), create(api).json()
    member = principal(api, MEMBER)

    async def open_and_wait(token: str, share_id: str) -> float:
        access = await service.access(member, BOX, token)
        assert access.share_id == share_id and access.mode == "read"
        await service.wait_revoked(share_id)
        return time.monotonic()

    waiting = app.on_loop(open_and_wait(first["token"], first["id"]))
    other = app.on_loop(open_and_wait(second["token"], second["id"]))
    with contextlib.suppress(TimeoutError):
        waiting.result(timeout=0.3)
    assert not waiting.done()
    revoked_at = time.monotonic()
    assert api.http.delete(f"{SHARES}/{first['id']}", headers=api.auth()).status_code == 204
    woke_at = waiting.result(timeout=5)
    assert woke_at - revoked_at < 2.0
    assert not other.done()
    # a waiter that starts after the revocation returns at once
    app.on_loop(service.wait_revoked(first["id"])).result(timeout=2)
    other.cancel()


def test_a_revocation_elsewhere_ends_a_waiter_at_its_next_poll(app):
    """Another replica's service (its own store on the same database) notices a
    revocation made through this app within its poll interval."""
    api = app.api
    share = create(api).json()
    member = principal(api, MEMBER)

    async def elsewhere() -> None:
        store = SqlStore(api.deps.settings.effective_database_url)
        await store.start()
        try:
            replica = SharesService(store=store, sessions=api.deps.sessions, poll_seconds=0.05)
            await replica.access(member, BOX, share["token"])
            waiter = asyncio.create_task(replica.wait_revoked(share["id"]))
            await asyncio.sleep(0.2)
            assert not waiter.done()
            answer = await asyncio.to_thread(
                api.http.delete, f"{SHARES}/{share['id']}", headers=api.auth()
            )
            assert answer.status_code == 204
            await asyncio.wait_for(waiter, 5)
            with pytest.raises(NotFound) as caught:
                await replica.access(member, BOX, share["token"])
            assert caught.value.code == "share-not-found"
        finally:
            await store.close()

    asyncio.run(elsewhere())


def principal(api: Api, who: dict[str, Any]) -> Principal:
    """The Principal the app makes of ``who``'s signed token."""
    token = api.token(**who)
    return asyncio.run(api.deps.authenticator.authenticate(token))
