"""The audit log over HTTP, against the embedded server on SQLite: what the server
records as people use it (sign-in, create, delete, shares, budgets, attach/detach), who
may read it (org admins, their own org only), filters, pages, the JSON lines export
(verified offline), and the 4xx of every malformed query."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import websockets

from openova_sandbox.domain.audit import AuditRecord, verify

pytestmark = pytest.mark.timeout(90)
AUDIT = "/api/v1/sandbox/audit"
SESSIONS = "/api/v1/sandbox/sessions"
FAKE_AGENTS = [{"slug": "aider", "binary": "/bin/sh", "defaultArgs": ["-i"], "requiredEnv": []}]
DEV = {"sub": "dev-sub-000001", "email": "dev@acme.com"}
ADMIN = {"sub": "admin-sub-0001", "email": "boss@acme.com", "roles": ("org-admin",)}
GLOBEX_ADMIN = {
    "sub": "gx-admin-00001",
    "email": "boss@globex.com",
    "org": "globex",
    "roles": ("org-admin",),
}


@pytest.fixture
def aapi(make_api, tmp_path):
    (tmp_path / "agents.json").write_text(json.dumps(FAKE_AGENTS))
    return make_api(store="sql")


def items(api, who: dict[str, Any], **query: Any) -> list[dict[str, Any]]:
    got = api.http.get(AUDIT, headers=api.auth(**who), params=query)
    assert got.status_code == 200, got.text
    assert got.headers["cache-control"] == "no-store"
    return got.json()["items"]  # type: ignore[no-any-return]


def test_what_people_do_is_recorded_for_their_org_admin(aapi):
    dev = aapi.auth(**DEV)
    made = aapi.http.post(SESSIONS, headers=dev, json={"agent": "aider", "name": "box"})
    assert made.status_code == 201, made.text
    link = aapi.http.post(f"{SESSIONS}/box/shares", headers=dev, json={"mode": "read"})
    assert link.status_code == 201
    share = link.json()
    assert aapi.http.delete(f"{SESSIONS}/box/shares/{share['id']}", headers=dev).status_code == 204
    budget = aapi.http.put(
        "/api/v1/sandbox/budgets/user/dev@acme.com",
        headers=aapi.auth(**ADMIN),
        json={"monthlyUsd": 25},
    )
    assert budget.status_code == 200, budget.text
    stranger = aapi.auth(sub="stranger-sub-01", email="s@acme.com")
    aapi.http.post(SESSIONS, headers=stranger, json={"agent": "aider", "name": "theirs"})
    assert aapi.http.delete(f"{SESSIONS}/box", headers=aapi.auth(**DEV)).status_code == 204
    # another org's doings stay in that org
    aapi.http.post(SESSIONS, headers=aapi.auth(**GLOBEX_ADMIN), json={"agent": "aider"})

    records = items(aapi, ADMIN)
    seen = [(r["action"], r["actor"]["email"], r["target"], r["outcome"]) for r in records]
    assert seen == [
        ("sandbox.delete", "dev@acme.com", "sandbox/box", "success"),
        ("sandbox.create", "s@acme.com", "sandbox/theirs", "success"),
        ("budget.set", "boss@acme.com", "budget/user/dev@acme.com", "success"),
        ("share.revoke", "dev@acme.com", "sandbox/box", "success"),
        ("share.create", "dev@acme.com", "sandbox/box", "success"),
        ("sandbox.create", "dev@acme.com", "sandbox/box", "success"),
    ]
    *_, first = records
    assert first["detail"] == {"agent": "aider"}
    assert first["actor"]["sub"] == DEV["sub"] and first["org"] == "acme"
    assert all(r["client"] == "127.0.0.1" for r in records)
    assert records[3]["detail"] == {"share": share["id"]}
    assert records[4]["detail"] == {"share": share["id"], "mode": "read"}
    assert records[2]["detail"] == {"limitUsd": "25"}
    # never a secret: the share link's token is nowhere in the log
    export = aapi.http.get(AUDIT, headers=aapi.auth(**ADMIN), params={"format": "jsonl"}).text
    assert share["token"] not in export
    assert share["token"] not in json.dumps(records)

    assert [r["org"] for r in items(aapi, GLOBEX_ADMIN)] == ["globex"]


def test_a_refused_action_is_recorded_with_its_outcome(aapi):
    owner = aapi.auth(**DEV)
    aapi.http.post(SESSIONS, headers=owner, json={"agent": "aider", "name": "box"})
    # a member changing the org's budget: refused, and recorded as denied
    refused = aapi.http.put(
        "/api/v1/sandbox/budgets/org/acme", headers=owner, json={"monthlyUsd": 1}
    )
    assert refused.status_code == 403
    # a create that cannot be stored (the name is taken): a failure with its code
    again = aapi.http.post(SESSIONS, headers=owner, json={"agent": "aider", "name": "box"})
    assert again.status_code == 409
    # someone else's sandbox is not theirs to delete (404), recorded as a failure
    stranger = aapi.auth(sub="stranger-sub-01", email="s@acme.com")
    assert aapi.http.delete(f"{SESSIONS}/box", headers=stranger).status_code == 404

    (denied,) = items(aapi, ADMIN, action="budget.*")
    assert (denied["action"], denied["outcome"]) == ("budget.set", "denied")
    assert denied["target"] == "budget/org/acme"
    assert denied["detail"] == {"error": "org-admin-required"}
    failed = items(aapi, ADMIN, action="sandbox.create")[0]
    assert failed["outcome"] == "failure"
    assert failed["detail"] == {"agent": "aider", "error": "sandbox-already-exists"}
    (delete,) = items(aapi, ADMIN, action="sandbox.delete")
    assert delete["outcome"] == "failure" and delete["actor"]["email"] == "s@acme.com"
    assert delete["detail"] == {"error": "sandbox-not-found"}


def test_sign_ins_with_a_login_link_are_recorded(aapi):
    link = aapi.http.post("/api/v1/sandbox/login-links", headers=aapi.auth(**DEV), json={})
    assert link.status_code == 201
    url = link.json()["url"]
    import httpx

    with httpx.Client(base_url=aapi.url) as browser:
        assert browser.get(url, follow_redirects=False).status_code == 303
        used_again = browser.get(url, follow_redirects=False)
        assert used_again.status_code == 401
    (refused, signed_in) = items(aapi, ADMIN, action="auth.sign-in")
    assert signed_in["outcome"] == "success" and signed_in["actor"]["sub"] == DEV["sub"]
    assert signed_in["detail"] == {"via": "login-link"}
    # the reused link still names who it was for (the token was valid, the link spent)
    assert refused["outcome"] == "denied" and refused["actor"]["sub"] == DEV["sub"]
    assert refused["detail"] == {"via": "login-link", "error": "unauthenticated"}
    assert url.split("token=")[1] not in json.dumps([refused, signed_in])


def test_attach_and_detach_are_recorded_with_how_long(aapi):
    token = aapi.token(**DEV)
    made = aapi.http.post(
        SESSIONS,
        headers={"Authorization": f"Bearer {token}"},
        json={"agent": "aider", "name": "box"},
    )
    assert made.status_code == 201

    async def attach() -> None:
        url = f"{aapi.server.ws_url}{SESSIONS}/box/attach?access_token={token}"
        async with websockets.connect(url) as ws:
            await ws.send(b"echo hi-there\n")
            seen = b""
            async with asyncio.timeout(15):
                while b"hi-there" not in seen:
                    got = await ws.recv()
                    seen += got if isinstance(got, bytes) else got.encode()

    asyncio.run(attach())
    # the detach is written once the server has seen the close: poll for it
    deadline = time.monotonic() + 10
    while len(records := items(aapi, ADMIN, action="terminal.*")) < 2:
        assert time.monotonic() < deadline, records
        time.sleep(0.05)
    detached, attached = records
    assert attached["action"] == "terminal.attach" and detached["action"] == "terminal.detach"
    assert attached["target"] == detached["target"] == "sandbox/box"
    assert attached["detail"] == {"terminal": "box", "mode": "write", "via": "owner"}
    assert detached["detail"]["seconds"] >= 0
    assert token not in json.dumps(records)

    # the admin page's Stop: the admin ends the terminal through the API, recorded
    closed = aapi.http.delete(f"{SESSIONS}/box/terminals/box", headers=aapi.auth(**ADMIN))
    assert closed.status_code == 204, closed.text
    (stop, *_) = items(aapi, ADMIN, action="terminal.*")
    assert (stop["action"], stop["actor"]["email"], stop["outcome"]) == (
        "terminal.close",
        "boss@acme.com",
        "success",
    )
    assert stop["detail"] == {"terminal": "box"}
    gone = aapi.http.delete(f"{SESSIONS}/box/terminals/box", headers=aapi.auth(**ADMIN))
    assert gone.status_code == 404
    assert items(aapi, ADMIN, action="terminal.close")[0]["outcome"] == "failure"


def test_only_org_admins_read_it(aapi):
    assert aapi.http.get(AUDIT).status_code == 401
    member = aapi.http.get(AUDIT, headers=aapi.auth(**DEV))
    assert member.status_code == 403
    assert member.json()["error"] == "org-admin-required"
    # the role without an org administers nothing
    orgless = aapi.http.get(AUDIT, headers=aapi.auth(org="", roles=("org-admin",)))
    assert orgless.status_code == 403


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ({"since": "yesterday"}, "invalid-since"),
        ({"until": "2026-12-06T10:00:00"}, "invalid-until"),
        ({"since": "2026-12-06", "until": "2026-12-05"}, "invalid-request"),
        ({"cursor": "abc"}, "invalid-cursor"),
        ({"cursor": "0"}, "invalid-cursor"),
        ({"limit": "0"}, "invalid-request"),
        ({"limit": "501"}, "invalid-request"),
        ({"limit": "x"}, "invalid-request"),
        ({"action": "sandbox.%"}, "invalid-request"),
        ({"format": "xml"}, "invalid-format"),
    ],
)
def test_malformed_queries_are_400_with_a_detail(aapi, query, error):
    got = aapi.http.get(AUDIT, headers=aapi.auth(**ADMIN), params=query)
    assert got.status_code == 400, got.text
    assert got.json()["error"] == error
    assert got.json()["detail"]


def test_bytes_that_are_not_utf8_in_a_filter_match_nothing(aapi):
    """A surrogate's bytes (or any invalid UTF-8) arrive replaced, never as a 500."""
    aapi.http.post(SESSIONS, headers=aapi.auth(**DEV), json={"agent": "aider", "name": "b"})
    answers = {"actor=%ED%A0%80": 200, "action=%ED%A0%80": 400, "since=%FF": 400}
    for raw, status in answers.items():
        got = aapi.http.get(f"{AUDIT}?{raw}", headers=aapi.auth(**ADMIN))
        assert got.status_code == status, (raw, got.text)
        if status == 400:
            assert got.json()["detail"]
        else:
            assert got.json()["items"] == []


def test_filters_pages_and_the_export_verifies(aapi):
    dev = aapi.auth(**DEV)
    for n in range(5):
        aapi.http.post(SESSIONS, headers=dev, json={"agent": "aider", "name": f"b{n}"})
    for n in range(2):
        aapi.http.delete(f"{SESSIONS}/b{n}", headers=dev)

    first = aapi.http.get(AUDIT, headers=aapi.auth(**ADMIN), params={"limit": 3}).json()
    assert [r["seq"] for r in first["items"]] == [7, 6, 5]
    second = aapi.http.get(
        AUDIT, headers=aapi.auth(**ADMIN), params={"limit": 3, "cursor": first["cursor"]}
    ).json()
    assert [r["seq"] for r in second["items"]] == [4, 3, 2]
    last = aapi.http.get(
        AUDIT, headers=aapi.auth(**ADMIN), params={"limit": 3, "cursor": second["cursor"]}
    ).json()
    assert [r["seq"] for r in last["items"]] == [1] and last["cursor"] is None

    assert len(items(aapi, ADMIN, action="sandbox.delete")) == 2
    assert len(items(aapi, ADMIN, actor="DEV@acme.com")) == 7
    assert items(aapi, ADMIN, actor="nobody@acme.com") == []
    at = first["items"][2]["at"]  # seq 5
    assert [r["seq"] for r in items(aapi, ADMIN, since=at)] == [7, 6, 5]
    assert [r["seq"] for r in items(aapi, ADMIN, until=at)] == [4, 3, 2, 1]

    by_header = aapi.http.get(
        AUDIT, headers={**aapi.auth(**ADMIN), "Accept": "application/x-ndjson"}
    )
    assert by_header.status_code == 200
    assert by_header.headers["content-type"].startswith("application/x-ndjson")
    assert 'filename="audit-acme-' in by_header.headers["content-disposition"]
    lines = [json.loads(line) for line in by_header.text.splitlines()]
    assert [r["seq"] for r in lines] == [1, 2, 3, 4, 5, 6, 7]  # oldest first, the chain
    report = verify("acme", [AuditRecord.from_dict(r) for r in lines])
    assert report.ok and report.head_seq == 7
    # an edited line shows
    lines[3]["target"] = "sandbox/elsewhere"
    broken = verify("acme", [AuditRecord.from_dict(r) for r in lines])
    assert (broken.ok, broken.broken_seq) == (False, 4)
