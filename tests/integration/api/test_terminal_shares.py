"""Share links at attach, over real WebSockets to the embedded control plane (SQLite
store, real shell in a real PTY): a read-only spectator cannot type or resize (checked
at the PTY), revocation and expiry close it with 1008, another org's user is refused,
and every attach is logged as ``terminal.watch``."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import struct
import termios
from datetime import timedelta
from typing import Any

import pytest
import structlog
import websockets
from websockets.exceptions import ConnectionClosed

from openova_sandbox.domain.errors import Conflict
from openova_sandbox.domain.model import format_time, utcnow
from openova_sandbox.domain.share import ANNOTATION_SHARES
from openova_sandbox.domain.terminal_wire import SUBPROTOCOL_V2, unpack_frame
from openova_sandbox.store.sql import SqlStore

pytestmark = pytest.mark.timeout(90)
SESSIONS = "/api/v1/sandbox/sessions"
FAKE_AGENTS = [{"slug": "aider", "binary": "/bin/sh", "defaultArgs": ["-i"], "requiredEnv": []}]
MEMBER = {"sub": "member-sub-0001", "email": "member@acme.com"}
OUTSIDER = {"sub": "outsider-sub-01", "email": "eve@evil.com", "org": "evil"}


@pytest.fixture
def sapi(make_api, tmp_path):
    (tmp_path / "agents.json").write_text(json.dumps(FAKE_AGENTS))
    api = make_api(store="sql")
    h = api.auth()
    assert api.http.post(SESSIONS, headers=h, json={"agent": "aider", "name": "box"}).is_success
    return api


def share(api, mode: str = "read", ttl: int = 3600) -> dict[str, Any]:
    made = api.http.post(
        f"{SESSIONS}/box/shares", headers=api.auth(), json={"mode": mode, "ttlSeconds": ttl}
    )
    assert made.status_code == 201, made.text
    return made.json()  # type: ignore[no-any-return]


def url(api, token: str, **query: str) -> str:
    extra = "".join(f"&{k}={v}" for k, v in query.items())
    return f"{api.server.ws_url}{SESSIONS}/box/attach?access_token={token}{extra}"


async def v2_until(ws, needle: bytes, controls: list[dict[str, Any]] | None = None) -> bytes:
    seen = b""
    async with asyncio.timeout(15):
        while needle not in seen:
            message = await ws.recv()
            if isinstance(message, bytes):
                seen += unpack_frame(message)[1]
            elif controls is not None:
                controls.append(json.loads(message))
    return seen


async def raw_until(ws, needle: bytes) -> bytes:
    seen = b""
    async with asyncio.timeout(15):
        while needle not in seen:
            frame = await ws.recv()
            seen += frame if isinstance(frame, bytes) else frame.encode()
    return seen


async def closed(ws) -> tuple[int | None, str]:
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(20):
            while True:
                await ws.recv()
    return ws.close_code, ws.close_reason


def pty_size(api) -> tuple[int, int]:
    (session,) = api.deps.terminals.registry.list("acme/box")
    packed = fcntl.ioctl(session.process.master_fd, termios.TIOCGWINSZ, b"\0" * 8)
    rows, cols, _, _ = struct.unpack("HHHH", packed)
    return rows, cols


def test_a_read_only_spectator_cannot_type_or_resize_and_is_closed_on_revoke(sapi):
    link = share(sapi, "read")
    owner, member = sapi.token(), sapi.token(**MEMBER)

    async def scenario() -> None:
        with structlog.testing.capture_logs() as logs:
            async with websockets.connect(url(sapi, owner)) as own:
                await own.send("echo owner-$((1+1))\n")
                await raw_until(own, b"owner-2")
                size_before = pty_size(sapi)
                spectator = await websockets.connect(
                    url(sapi, member, share=link["token"]), subprotocols=[SUBPROTOCOL_V2]
                )
                hello = json.loads(await spectator.recv())
                assert (hello["type"], hello["mode"]) == ("hello", "read")
                controls: list[dict[str, Any]] = []
                assert b"owner-2" in await v2_until(spectator, b"owner-2", controls)
                await spectator.send(b"echo typed-by-the-spectator\n")
                await spectator.send(json.dumps({"type": "resize", "rows": 11, "cols": 22}))
                # the owner's next line comes back after whatever the spectator sent
                await own.send("echo marker-$((2+3))\n")
                await raw_until(own, b"marker-5")
                seen = await v2_until(spectator, b"marker-5", controls)
                (session,) = sapi.deps.terminals.registry.list("acme/box")
                assert b"typed-by-the-spectator" not in session.core.ring.snapshot()[0]
                assert b"typed-by-the-spectator" not in seen
                assert pty_size(sapi) == size_before  # the spectator's size never applied
                viewers = [c for c in controls if c["type"] == "viewers"][-1]["viewers"]
                modes = sorted((v["mode"], v["you"]) for v in viewers)
                assert modes == [("read", True), ("write", False)]
                # the owner revokes the link: the spectator is closed at once
                revoked = sapi.http.delete(
                    f"{SESSIONS}/box/shares/{link['id']}", headers=sapi.auth()
                )
                assert revoked.status_code == 204
                assert await closed(spectator) == (1008, "share-revoked")
                # and the link no longer opens anything
                async with websockets.connect(url(sapi, member, share=link["token"])) as again:
                    assert await closed(again) == (1008, "share-revoked")
                await own.send("echo still-$((3*3))\n")
                await raw_until(own, b"still-9")  # the owner was never disturbed
        watches = [e for e in logs if e["event"] == "terminal.watch"]
        assert {(w["email"], w["mode"], w["via"]) for w in watches} == {
            ("dev@acme.com", "write", "owner"),
            ("member@acme.com", "read", "share"),
        }
        assert all(w["sandbox"] == "box" for w in watches)

    asyncio.run(scenario())


def test_a_write_share_types_like_the_owner(sapi):
    link = share(sapi, "write")

    async def scenario() -> None:
        async with websockets.connect(url(sapi, sapi.token(**MEMBER), share=link["token"])) as ws:
            await ws.send("echo guest-$((6*7))\n")
            await raw_until(ws, b"guest-42")

    asyncio.run(scenario())


def test_another_orgs_user_and_a_bad_link_are_refused(sapi):
    link = share(sapi, "write")

    async def scenario() -> None:
        outsider = url(sapi, sapi.token(**OUTSIDER), share=link["token"])
        async with websockets.connect(outsider) as ws:
            assert await closed(ws) == (1008, "share-revoked")
        wrong = url(sapi, sapi.token(**MEMBER), share=link["token"][:-2] + "xx")
        async with websockets.connect(wrong) as ws:
            assert await closed(ws) == (1008, "share-revoked")
        # without a link a member is not the owner: the sandbox is not found
        async with websockets.connect(url(sapi, sapi.token(**MEMBER))) as ws:
            assert await closed(ws) == (1008, "sandbox not found")

    asyncio.run(scenario())


def test_a_share_that_expires_while_watching_closes_1008_share_expired(sapi):
    link = share(sapi, "read", ttl=60)

    async def expire_soon(store: SqlStore) -> None:
        while True:  # the controller writes the object too: retry a lost race
            sandbox = await store.get("acme", "box")
            entries = json.loads(sandbox.metadata.annotations[ANNOTATION_SHARES])
            entries[0]["expiresAt"] = format_time(utcnow() + timedelta(seconds=2))
            annotations = {**sandbox.metadata.annotations, ANNOTATION_SHARES: json.dumps(entries)}
            with contextlib.suppress(Conflict):
                await store.update(sandbox.with_meta(annotations=annotations))
                return

    sapi.on_own_store(expire_soon)

    async def scenario() -> None:
        member = sapi.token(**MEMBER)
        async with websockets.connect(url(sapi, member, share=link["token"])) as ws:
            await ws.recv()  # attached: the replay
            assert await closed(ws) == (1008, "share-expired")
        async with websockets.connect(url(sapi, member, share=link["token"])) as ws:
            assert await closed(ws) == (1008, "share-expired")

    asyncio.run(scenario())
