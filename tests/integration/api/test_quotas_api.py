"""Quotas per user and org through the real app under uvicorn, with real JWTs (issue 11):
sandboxes (429 naming the limit), terminals, WebSocket connections and waiting attaches
(close 1013 ``quota-exceeded``), org admins' overrides, and two creates racing for the
last slot."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import websockets

from openova_sandbox.api.routes import terminals as terminal_routes

if TYPE_CHECKING:
    from conftest import Api

SESSIONS = "/api/v1/sandbox/sessions"
QUOTAS = "/api/v1/sandbox/quotas"
DEV = {"sub": "sub-dev-0001", "email": "dev@acme.com", "org": "acme"}
OPS = {"sub": "sub-ops-0001", "email": "ops@acme.com", "org": "acme"}
ADMIN = {"sub": "sub-admin-01", "email": "admin@acme.com", "org": "acme", "roles": ("org-admin",)}
GLOBEX = {"sub": "sub-globex-1", "email": "dev@globex.com", "org": "globex"}


def create(api: Api, who: dict[str, Any], name: str) -> httpx.Response:
    return api.http.post(SESSIONS, headers=api.auth(**who), json={"agent": "shell", "name": name})


def wait_ready(api: Api, who: dict[str, Any], name: str) -> None:
    deadline = time.monotonic() + 20
    while api.http.get(f"{SESSIONS}/{name}", headers=api.auth(**who)).json().get("phase") != (
        "Ready"
    ):
        assert time.monotonic() < deadline, f"{name} not ready"
        time.sleep(0.05)


def test_the_users_sandbox_quota_is_429_naming_limit_and_usage(make_api: Any) -> None:
    api: Api = make_api(store="sql", quota_user="sandboxes=2", quota_org="sandboxes=3")
    assert create(api, DEV, "one").status_code == 201
    assert create(api, DEV, "two").status_code == 201
    refused = create(api, DEV, "three")
    assert refused.status_code == 429
    body = refused.json()
    assert body["error"] == "quota-exceeded"
    assert (
        body["detail"] == "user dev@acme.com quota 'sandboxes' reached in acme: 2 in use, limit 2"
    )
    # a name already taken is 409 before 429 (sessions-api.md's order)
    taken = create(api, DEV, "one")
    assert taken.status_code == 409 and taken.json()["error"] == "sandbox-already-exists"
    # the org's limit: ops gets the third, then the org is full for everyone
    assert create(api, OPS, "ops-1").status_code == 201
    refused = create(api, OPS, "ops-2")
    assert refused.status_code == 429
    assert refused.json()["detail"] == "org quota 'sandboxes' reached in acme: 3 in use, limit 3"
    # another org is not affected
    assert create(api, GLOBEX, "g-1").status_code == 201
    # deleting frees the slot once the sandbox is gone
    assert api.http.delete(f"{SESSIONS}/one", headers=api.auth(**DEV)).status_code == 204
    deadline = time.monotonic() + 20
    while create(api, OPS, "ops-2").status_code != 201:
        assert time.monotonic() < deadline, "slot not freed"
        time.sleep(0.05)


def test_effective_quotas_and_usage(make_api: Any) -> None:
    api: Api = make_api(store="memory", quota_user="sandboxes=5,websockets=none")
    create(api, DEV, "a")
    create(api, OPS, "b")
    mine = api.http.get(QUOTAS, headers=api.auth(**DEV))
    assert mine.status_code == 200
    got = mine.json()
    assert got["user"]["name"] == "dev@acme.com"
    assert got["user"]["limits"] == {
        "sandboxes": 5,
        "terminals": 40,
        "websockets": None,
        "waitingAttaches": 10,
    }
    assert got["user"]["usage"] == {
        "sandboxes": 1,
        "terminals": 0,
        "websockets": 0,
        "waitingAttaches": 0,
    }
    assert got["org"]["name"] == "acme"
    assert got["org"]["usage"]["sandboxes"] == 2
    assert got["org"]["limits"]["sandboxes"] == 250


def test_org_admins_override_the_org_and_its_users(make_api: Any) -> None:
    api: Api = make_api(store="sql", quota_user="sandboxes=1", quota_org="sandboxes=10")
    assert create(api, DEV, "one").status_code == 201
    assert create(api, DEV, "two").status_code == 429
    raised = api.http.put(
        f"{QUOTAS}/user/Dev@Acme.com", headers=api.auth(**ADMIN), json={"sandboxes": 3}
    )
    assert raised.status_code == 200, raised.text
    out = raised.json()
    assert out["scope"] == "user" and out["name"] == "dev@acme.com"
    assert out["limits"]["sandboxes"] == 3 and out["overrides"] == {"sandboxes": 3}
    assert out["defaults"]["sandboxes"] == 1 and out["updatedBy"] == "admin@acme.com"
    assert create(api, DEV, "two").status_code == 201  # applies at once in this process
    # the user reads their own; a colleague does not
    assert api.http.get(f"{QUOTAS}/user/dev@acme.com", headers=api.auth(**DEV)).status_code == 200
    other = api.http.get(f"{QUOTAS}/user/dev@acme.com", headers=api.auth(**OPS))
    assert other.status_code == 403 and other.json()["error"] == "org-admin-required"
    # the org's own quota: lowered below what is held, creates stop
    lowered = api.http.put(f"{QUOTAS}/org/acme", headers=api.auth(**ADMIN), json={"sandboxes": 2})
    assert lowered.status_code == 200 and lowered.json()["limits"]["sandboxes"] == 2
    refused = create(api, DEV, "three")
    assert refused.status_code == 429 and refused.json()["detail"].startswith("org quota")
    # null: back to the operator's default
    back = api.http.put(f"{QUOTAS}/org/acme", headers=api.auth(**ADMIN), json={"sandboxes": None})
    assert back.json()["limits"]["sandboxes"] == 10 and back.json()["overrides"] == {}
    assert create(api, DEV, "three").status_code == 201
    # everyone in the org reads the org's quotas
    org = api.http.get(f"{QUOTAS}/org/acme", headers=api.auth(**OPS)).json()
    assert org["limits"]["sandboxes"] == 10
    # the override is stored: another process (a second server on the database) sees it
    again: Api = make_api(store="sql", quota_user="sandboxes=1", quota_org="sandboxes=10")
    user = again.http.get(f"{QUOTAS}/user/dev@acme.com", headers=again.auth(**ADMIN)).json()
    assert user["limits"]["sandboxes"] == 3


def test_quota_changes_are_for_org_admins_of_that_org(make_api: Any) -> None:
    api: Api = make_api(store="memory")
    body = {"sandboxes": 1}
    refused = api.http.put(f"{QUOTAS}/org/acme", headers=api.auth(**DEV), json=body)
    assert refused.status_code == 403 and refused.json()["error"] == "org-admin-required"
    refused = api.http.put(f"{QUOTAS}/user/dev@acme.com", headers=api.auth(**DEV), json=body)
    assert refused.status_code == 403
    other = api.http.put(f"{QUOTAS}/org/globex", headers=api.auth(**ADMIN), json=body)
    assert other.status_code == 403 and other.json()["error"] == "other-org"
    read = api.http.get(f"{QUOTAS}/org/globex", headers=api.auth(**ADMIN))
    assert read.status_code == 403
    # a user "of another org" named by email is still keyed inside the admin's own org
    set_ = api.http.put(f"{QUOTAS}/user/dev@globex.com", headers=api.auth(**ADMIN), json=body)
    assert set_.status_code == 200
    globex = api.http.get(QUOTAS, headers=api.auth(**GLOBEX)).json()
    assert globex["user"]["limits"]["sandboxes"] == 25  # untouched in globex
    assert api.http.get(QUOTAS).status_code == 401


@pytest.mark.parametrize(
    ("path", "body", "error", "said"),
    [
        ("org/acme", b"", "empty-body", "request body required"),
        ("org/acme", b"{", "invalid-json", ""),
        ("org/acme", b"[]", "invalid-quota", "JSON object"),
        ("org/acme", b"{}", "invalid-quota", "at least one quota"),
        ("org/acme", b'{"cpu": 4}', "invalid-quota", '"cpu" is not a quota'),
        ("org/acme", b'{"sandboxes": -1}', "invalid-quota", "from 0 to 1000000"),
        ("org/acme", b'{"sandboxes": 1000001}', "invalid-quota", "from 0 to 1000000"),
        ("org/acme", b'{"sandboxes": 2.5}', "invalid-quota", "not a number with a fraction"),
        ("org/acme", b'{"sandboxes": "3"}', "invalid-quota", "not a string"),
        ("org/acme", b'{"sandboxes": true}', "invalid-quota", "not a boolean"),
        ("org/acme", b'{"sandboxes": 251}', "invalid-quota", "at most 250"),
        ("org/acme", b'{"\\ud800": 1}', "invalid-json", "not valid Unicode"),
        ("team/acme", b'{"sandboxes": 1}', "invalid-scope", "not one of org, user"),
        ("user/%20", b'{"sandboxes": 1}', "invalid-name", "email"),
        ("user/" + "x" * 321, b'{"sandboxes": 1}', "invalid-name", "320"),
        ("user/a%0Ab", b'{"sandboxes": 1}', "invalid-name", "email"),
    ],
)
def test_malformed_quota_requests_are_400_with_a_detail(
    api: Api, path: str, body: bytes, error: str, said: str
) -> None:
    answer = api.http.put(
        f"{QUOTAS}/{path}",
        headers={**api.auth(**ADMIN), "Content-Type": "application/json"},
        content=body,
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == error
    assert said in answer.json()["detail"]


def test_two_creates_racing_for_the_last_slot_exactly_one_wins(make_api: Any) -> None:
    api: Api = make_api(store="sql", quota_user="sandboxes=3")
    assert create(api, DEV, "one").status_code == 201
    assert create(api, DEV, "two").status_code == 201
    headers = api.auth(**DEV)

    async def race() -> list[int]:
        async with httpx.AsyncClient(base_url=api.url, timeout=10) as client:
            answers = await asyncio.gather(
                *(
                    client.post(SESSIONS, headers=headers, json={"agent": "shell", "name": n})
                    for n in ("race-a", "race-b", "race-c", "race-d")
                )
            )
        return sorted(a.status_code for a in answers)

    assert asyncio.run(race()) == [201, 429, 429, 429]
    listed = api.http.get(SESSIONS, headers=headers).json()["sandboxes"]
    assert len(listed) == 3


async def close_of(url: str, *, send: bytes = b"") -> tuple[int | None, str]:
    async with asyncio.timeout(20), websockets.connect(url) as ws:
        if send:
            await ws.send(send)
        with contextlib.suppress(websockets.ConnectionClosed):
            async for _ in ws:
                pass
        return ws.close_code, ws.close_reason or ""


def test_websocket_connections_beyond_the_quota_close_1013(make_api: Any) -> None:
    api: Api = make_api(store="memory", quota_user="websockets=1")
    assert create(api, DEV, "box").status_code == 201
    wait_ready(api, DEV, "box")
    url = f"{api.server.ws_url}{SESSIONS}/box/attach?access_token={api.token(**DEV)}"

    async def scenario() -> tuple[int | None, str, int | None, str]:
        async with asyncio.timeout(20), websockets.connect(url) as first:
            await first.send(b"echo first-$((1+1))\n")
            seen = b""
            while b"first-2" not in seen:
                frame = await first.recv()
                seen += frame if isinstance(frame, bytes) else frame.encode()
            code, reason = await close_of(url)
        # the first closed: its slot is free again once the server has seen it end
        deadline = time.monotonic() + 10
        async with httpx.AsyncClient(base_url=api.url) as client:
            while (await client.get(QUOTAS, headers=api.auth(**DEV))).json()["user"]["usage"][
                "websockets"
            ]:
                assert time.monotonic() < deadline, "slot not released"
                await asyncio.sleep(0.02)
        async with asyncio.timeout(20), websockets.connect(url) as again:
            await again.send(b"echo again-$((2+2))\n")
            seen = b""
            while b"again-4" not in seen:
                frame = await again.recv()
                seen += frame if isinstance(frame, bytes) else frame.encode()
        return code, reason, None, ""

    code, reason, _, _ = asyncio.run(scenario())
    assert code == 1013
    assert (
        reason
        == "quota-exceeded: user dev@acme.com quota 'websockets' reached in acme: 1 in use, limit 1"
    )


def test_terminal_processes_beyond_the_quota_are_refused(make_api: Any) -> None:
    api: Api = make_api(store="memory", quota_user="terminals=1")
    for name in ("t1", "t2"):
        assert create(api, DEV, name).status_code == 201
        wait_ready(api, DEV, name)
    token = api.token(**DEV)

    async def scenario() -> tuple[int | None, str]:
        first = f"{api.server.ws_url}{SESSIONS}/t1/attach?access_token={token}"
        async with asyncio.timeout(20), websockets.connect(first) as ws:
            await ws.send(b"echo up-$((3+3))\n")
            seen = b""
            while b"up-6" not in seen:
                frame = await ws.recv()
                seen += frame if isinstance(frame, bytes) else frame.encode()
            # the first terminal runs: a second sandbox's agent cannot start
            return await close_of(f"{api.server.ws_url}{SESSIONS}/t2/attach?access_token={token}")

    code, reason = asyncio.run(scenario())
    assert code == 1013
    assert reason.startswith("quota-exceeded: user dev@acme.com quota 'terminals'")
    # nor can an extra terminal in the first sandbox (its process still runs)
    extra = api.http.post(
        f"{SESSIONS}/t1/terminals", headers=api.auth(**DEV), json={"agent": "shell"}
    )
    assert extra.status_code == 429, extra.text
    assert extra.json()["error"] == "quota-exceeded"
    usage = api.http.get(QUOTAS, headers=api.auth(**DEV)).json()["user"]["usage"]
    assert usage["terminals"] == 1


@pytest.fixture
def silent_git() -> Iterator[str]:
    """A TCP server that accepts and never answers: a clone from it hangs."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_waiting_attaches_beyond_the_quota_close_1013(
    make_api: Any, silent_git: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(terminal_routes, "READY_WAIT", 8.0)
    api: Api = make_api(store="memory", git_base_url=silent_git, quota_user="waitingAttaches=1")
    made = api.http.post(
        SESSIONS,
        headers=api.auth(**DEV),
        json={"agent": "aider", "name": "slow", "repo": "acme/site"},
    )
    assert made.status_code == 201, made.text
    url = f"{api.server.ws_url}{SESSIONS}/slow/attach?access_token={api.token(**DEV)}"

    async def scenario() -> tuple[int | None, str]:
        async with asyncio.timeout(20), websockets.connect(url):
            # the first waits (its slot taken once it waits): poll the usage report
            deadline = time.monotonic() + 10
            async with httpx.AsyncClient(base_url=api.url) as client:
                while True:
                    got = await client.get(QUOTAS, headers=api.auth(**DEV))
                    if got.json()["user"]["usage"]["waitingAttaches"] == 1:
                        break
                    assert time.monotonic() < deadline, "first attach never waited"
                    await asyncio.sleep(0.05)
            return await close_of(url)

    code, reason = asyncio.run(scenario())
    assert code == 1013
    assert reason.startswith("quota-exceeded: user dev@acme.com quota 'waitingAttaches'")
    # once the first is gone, its slot is released
    deadline = time.monotonic() + 10
    while api.http.get(QUOTAS, headers=api.auth(**DEV)).json()["user"]["usage"]["waitingAttaches"]:
        assert time.monotonic() < deadline, "slot not released"
        time.sleep(0.05)
