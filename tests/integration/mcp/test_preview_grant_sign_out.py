"""A preview's capability-path grant ends with the sign-in it was minted from (issue 14,
docs/mcp.md "Previews"): a real embedded server (support/mcp_world.py, SQLite), a real
preview (a WebSocket echo server started through the MCP client's ``preview.start``),
real sign-ins — login links redeemed into the console's token cookie, a personal access
token, and console sessions through a real OIDC provider process
(tests/support/oidc_idp.py) — and real HTTP and WebSocket clients.

After ``POST /logout`` of one sign-in, or the token's revocation, the next request under
that sign-in's grant is 401 ``preview-grant-revoked`` and its open preview WebSocket is
closed 1008 as a terminal's is (``signed-out``, ``token-revoked``), at once; the grants
of the user's other sign-ins keep working, their sockets open."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from openova_sandbox.auth.oidc_sessions import CACHE_SECONDS, ENDED_CHECK_SECONDS
from openova_sandbox.testing.server import free_port
from support.mcp_world import McpWorld, Person, mcp_world
from support.oidc_idp import OidcIdp

ADA = Person("sub-ada", "ada@acme.com", "acme")
TOKENS = "/api/v1/sandbox/tokens"
SESSIONS = "/api/v1/sandbox/sessions"

WS_ECHO = """
import asyncio, sys
from websockets.asyncio.server import serve

async def echo(ws):
    await ws.send("hello " + ws.request.path)
    async for message in ws:
        await ws.send("echo:" + message)

async def main():
    async with serve(echo, "127.0.0.1", int(sys.argv[1])):
        await asyncio.Future()

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def idp() -> Iterator[OidcIdp]:
    provider = OidcIdp("--revocation")
    try:
        yield provider
    finally:
        provider.stop()


async def start_preview(world: McpWorld, org: str, name: str) -> str:
    """A WebSocket echo server in the sandbox, started by its agent's MCP client; its
    link (``/preview/<sandbox>/<port>/``)."""
    sandbox = await world.deps.store.get(org, name)
    Path(world.deps.previews._context(sandbox).workdir, "ws_echo.py").write_text(WS_ECHO)
    port = free_port()
    command = f"exec {sys.executable} ws_echo.py {port}"
    async with world.client(world.mcp_token(sandbox)) as client:
        result = await client.call_tool("preview.start", {"port": port, "command": command})
    assert not result.is_error, result.content
    started: dict[str, Any] = result.structured_content
    assert started["status"] == "listening", started
    path: str = started["path"]
    return path


async def capability(browser: httpx.AsyncClient, link: str, **headers: str) -> str:
    """The capability path the link sends this sign-in into."""
    sent = await browser.get(link, headers=headers)
    assert sent.status_code == 307, sent.text
    location: str = sent.headers["location"]
    assert location.startswith(f"{link}~"), location
    return location


async def opens(world: McpWorld, cap: str) -> bool:
    """Whether the capability still opens the preview (no credential sent): the echo
    server answers a plain GET 426 (it speaks WebSocket only), a refused grant 401."""
    got = await world.http.get(cap)
    if got.status_code == 401:
        assert got.json()["error"] == "preview-grant-revoked", got.text
        return False
    assert got.status_code == 426, got.text
    return True


@contextlib.asynccontextmanager
async def socket(world: McpWorld, cap: str) -> AsyncIterator[ClientConnection]:
    """The preview's WebSocket under the capability path, as its sandboxed page opens
    it (``Origin: null``), greeted and echoing."""
    url = world.url.replace("http://", "ws://") + cap + "live"
    async with connect(url, additional_headers={"Origin": "null"}, proxy=None) as ws:
        assert await ws.recv() == "hello /live"
        yield ws


async def echoes(ws: ClientConnection) -> bool:
    await ws.send("ping")
    return await ws.recv() == "echo:ping"


async def closed(ws: ClientConnection) -> tuple[int | None, str, float]:
    """Wait for the server to close ``ws``: its code, its reason, how long it took."""
    began = time.monotonic()
    async with asyncio.timeout(20):
        with contextlib.suppress(ConnectionClosed):
            async for _ in ws:
                pass
    return ws.close_code, ws.close_reason or "", time.monotonic() - began


async def login_link_cookie(world: McpWorld, who: Person) -> httpx.AsyncClient:
    """A browser signed in as the console is with the embedded issuer: a login link
    (``POST …/login-links``) redeemed into its token cookie."""
    made = await world.http.post("/api/v1/sandbox/login-links", headers=world.auth(who))
    assert made.status_code == 201, made.text
    browser = httpx.AsyncClient(base_url=world.url, headers={"Origin": world.url}, timeout=15)
    redeemed = await browser.get(made.json()["url"].removeprefix(world.url))
    assert redeemed.status_code == 303, redeemed.text
    assert browser.cookies.get("catalyst_session")
    return browser


async def test_a_token_cookies_sign_out_and_a_tokens_revocation_end_their_grants_only(
    tmp_path: Path,
) -> None:
    async with mcp_world(tmp_path, isolation="none") as world:
        name = (await world.create(ADA)).name
        await world.ready(ADA, name)
        link = await start_preview(world, ADA.org, name)
        one = await login_link_cookie(world, ADA)  # two browsers of the same user
        two = await login_link_cookie(world, ADA)
        made = await world.http.post(TOKENS, headers=world.auth(ADA), json={"name": "ci"})
        assert made.status_code == 201, made.text
        pat = made.json()
        cap_one, cap_two = await capability(one, link), await capability(two, link)
        cap_pat = await capability(world.http, link, authorization=f"Bearer {pat['token']}")
        cap_jwt = await capability(world.http, link, **world.auth(ADA))
        assert len({cap_one, cap_two, cap_pat, cap_jwt}) == 4
        for cap in (cap_one, cap_two, cap_pat, cap_jwt):
            assert await opens(world, cap)

        async with (
            socket(world, cap_one) as ws_one,
            socket(world, cap_two) as ws_two,
            socket(world, cap_pat) as ws_pat,
        ):
            # the first browser signs out: its grant ends, its socket closes, at once
            cookie = one.cookies["catalyst_session"]
            out = await one.post("/logout")
            assert out.status_code == 204, out.text
            assert (await closed(ws_one))[:2] == (1008, "signed-out")
            assert not await opens(world, cap_one)
            refused = await world.http.get(f"{cap_one}x", headers={"origin": "null"})
            assert refused.status_code == 401
            assert "signed out" in refused.json()["detail"]
            assert cap_one.split("~", 1)[1] not in refused.text
            # a page load goes back to the link, which the cookie (replayed: its JWT is
            # still unexpired) no longer opens: no grant, no loop
            back = await world.http.get(cap_one, headers={"sec-fetch-mode": "navigate"})
            assert back.status_code == 303 and back.headers["location"] == link
            again = await world.http.get(link, headers={"cookie": f"catalyst_session={cookie}"})
            assert again.status_code == 401, again.text
            # the user's other sign-ins keep theirs
            assert await opens(world, cap_two) and await echoes(ws_two)
            assert await opens(world, cap_pat) and await echoes(ws_pat)
            assert await opens(world, cap_jwt)

            # the access token is revoked: its grant and socket end, the rest stay
            gone = await world.http.delete(f"{TOKENS}/{pat['id']}", headers=world.auth(ADA))
            assert gone.status_code == 204, gone.text
            code, reason, after = await closed(ws_pat)
            assert (code, reason) == (1008, "token-revoked") and after < 2
            assert not await opens(world, cap_pat)
            assert await opens(world, cap_two) and await echoes(ws_two)
            assert await opens(world, cap_jwt)
        # a sign-out from another site's page (its Origin) ends nothing
        out = await two.post("/logout", headers={"origin": "http://evil.example"})
        assert out.status_code == 204
        assert await opens(world, cap_two)
        await one.aclose()
        await two.aclose()


async def oidc_browser(world: McpWorld, idp: OidcIdp, sub: str) -> httpx.AsyncClient:
    """A browser signed in to the console through the OIDC provider (code + PKCE)."""
    browser = httpx.AsyncClient(base_url=world.url, headers={"Origin": world.url}, timeout=15)
    start = await browser.get("/auth/oidc/start", params={"next": "/sandbox"})
    assert start.status_code == 303, start.text
    back = await asyncio.to_thread(idp.authorize, start.headers["location"], sub)
    done = await browser.get(back.removeprefix(world.url))
    assert done.status_code == 303, done.text
    assert browser.cookies["catalyst_session"].startswith("oidc:")
    return browser


async def test_a_console_sessions_sign_out_ends_its_grants_not_another_sessions(
    tmp_path: Path, idp: OidcIdp
) -> None:
    idp.set_user("lee", email="lee@acme.test", org_id="acme")
    async with mcp_world(
        tmp_path,
        isolation="none",
        oidc_issuer=idp.url,
        oidc_client_id="sandbox-console",
        oidc_client_secret="console-secret",
    ) as world:
        laptop = await oidc_browser(world, idp, "lee")
        phone = await oidc_browser(world, idp, "lee")
        made = await laptop.post(SESSIONS, json={"agent": "shell"})
        assert made.status_code == 201, made.text
        name = made.json()["id"]
        async with asyncio.timeout(30):
            while (await laptop.get(f"{SESSIONS}/{name}")).json().get("phase") != "Ready":
                await asyncio.sleep(0.05)
        link = await start_preview(world, "acme", name)
        cap_laptop, cap_phone = await capability(laptop, link), await capability(phone, link)
        assert await opens(world, cap_laptop) and await opens(world, cap_phone)
        # a socket through the link itself, with the phone's session cookie (a client
        # that sends the console's Origin)
        url = world.url.replace("http://", "ws://") + link + "live"
        phone_cookie = {"cookie": f"catalyst_session={phone.cookies['catalyst_session']}"}
        async with (
            socket(world, cap_laptop) as ws_laptop,
            socket(world, cap_phone) as ws_phone,
            connect(
                url, additional_headers={**phone_cookie, "origin": world.url}, proxy=None
            ) as ws_link,
        ):
            assert await ws_link.recv() == "hello /live"
            out = await laptop.post("/logout")
            assert out.status_code in (200, 204), out.text
            code, reason, after = await closed(ws_laptop)
            assert (code, reason) == (1008, "signed-out") and after < 2
            assert not await opens(world, cap_laptop)
            assert await opens(world, cap_phone) and await echoes(ws_phone)
            assert await echoes(ws_link)
            # the phone signs out too: its grant and both its sockets end
            assert (await phone.post("/logout")).status_code in (200, 204)
            assert (await closed(ws_phone))[:2] == (1008, "signed-out")
            assert (await closed(ws_link))[:2] == (1008, "signed-out")
            assert not await opens(world, cap_phone)
        await laptop.aclose()
        await phone.aclose()


async def test_a_sign_out_or_revocation_through_another_replica_ends_grants_within_seconds(
    tmp_path: Path, idp: OidcIdp
) -> None:
    """Another API replica on the same database signs the session out (its record
    deleted) and revokes the token (its row marked): this server, which did neither,
    refuses their grants once its 2-second copies are older than the change, and closes
    the session's preview socket at its next look at the database (5 s)."""
    idp.set_user("kim", email="kim@acme.test", org_id="acme")
    async with mcp_world(
        tmp_path,
        isolation="none",
        oidc_issuer=idp.url,
        oidc_client_id="sandbox-console",
        oidc_client_secret="console-secret",
    ) as world:
        browser = await oidc_browser(world, idp, "kim")
        made = await browser.post(SESSIONS, json={"agent": "shell"})
        assert made.status_code == 201, made.text
        name = made.json()["id"]
        async with asyncio.timeout(30):
            while (await browser.get(f"{SESSIONS}/{name}")).json().get("phase") != "Ready":
                await asyncio.sleep(0.05)
        link = await start_preview(world, "acme", name)
        created = await browser.post(TOKENS, json={"name": "ci"})
        assert created.status_code == 201, created.text
        pat = created.json()
        cap_session = await capability(browser, link)
        cap_pat = await capability(world.http, link, authorization=f"Bearer {pat['token']}")
        sid = browser.cookies["catalyst_session"].split(":")[1]
        sessions = world.deps.oidc_sessions
        async with socket(world, cap_session) as ws:
            assert await opens(world, cap_session) and await opens(world, cap_pat)
            # what the other replica's logout and revoke write
            await sessions.backend.delete(sessions.handle(sid))
            await world.deps.tokens.store.revoke_token(pat["id"], datetime.now(UTC))
            changed = time.monotonic()
            for cap in (cap_session, cap_pat):
                async with asyncio.timeout(CACHE_SECONDS + 3):
                    while await opens(world, cap):
                        await asyncio.sleep(0.05)
            assert time.monotonic() - changed <= CACHE_SECONDS + 1
            code, reason, _ = await closed(ws)
            assert (code, reason) == (1008, "signed-out")
            assert time.monotonic() - changed <= ENDED_CHECK_SECONDS + 2
        await browser.aclose()
