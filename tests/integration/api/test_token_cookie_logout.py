"""``POST /logout`` of a console signed in with a token cookie (the embedded issuer's
JWT in ``catalyst_session``) ends that sign-in everywhere, though the JWT itself has not
expired (issue 11: "`/logout` cannot end it"; auth/signouts.py): a copy of the cookie is
refused on every route, a terminal opened with it closes 1008 ``signed-out`` at once, and
the same user's other sign-ins keep working.

A real embedded server (support/mcp_world.py), login links redeemed into real cookies,
real HTTP and WebSocket clients."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from support.mcp_world import McpWorld, Person, mcp_world

ADA = Person("sub-ada", "ada@acme.com", "acme")
SESSIONS = "/api/v1/sandbox/sessions"


async def signed_in(world: McpWorld, who: Person) -> httpx.AsyncClient:
    """A browser signed in as the console is with the embedded issuer: a login link
    redeemed into its token cookie."""
    made = await world.http.post("/api/v1/sandbox/login-links", headers=world.auth(who))
    assert made.status_code == 201, made.text
    browser = httpx.AsyncClient(base_url=world.url, headers={"Origin": world.url}, timeout=15)
    redeemed = await browser.get(made.json()["url"].removeprefix(world.url))
    assert redeemed.status_code == 303, redeemed.text
    assert browser.cookies.get("catalyst_session")
    return browser


async def test_logout_ends_the_token_cookie_and_its_terminals_only(tmp_path: Path) -> None:
    async with mcp_world(tmp_path, isolation="none") as world:
        name = (await world.create(ADA)).name
        await world.ready(ADA, name)
        one, two = await signed_in(world, ADA), await signed_in(world, ADA)
        cookie = one.cookies["catalyst_session"]
        assert (await one.get(SESSIONS)).status_code == 200

        url = f"{world.url.replace('http://', 'ws://')}{SESSIONS}/{name}/attach"
        headers = {"Cookie": f"catalyst_session={cookie}", "Origin": world.url}
        other = {"Cookie": f"catalyst_session={two.cookies['catalyst_session']}"}
        async with (
            asyncio.timeout(30),
            connect(url, additional_headers=headers, proxy=None) as ws,
            connect(url, additional_headers={**other, "Origin": world.url}, proxy=None) as kept,
        ):
            await ws.send(b"echo live-$((4*4))\n")
            seen = b""
            while b"live-16" not in seen:
                frame = await ws.recv()
                seen += frame if isinstance(frame, bytes) else frame.encode()

            out = await one.post("/logout")
            assert out.status_code == 204, out.text
            signed_out = time.monotonic()
            with contextlib.suppress(ConnectionClosed):
                async for _ in ws:
                    pass
            assert (ws.close_code, ws.close_reason) == (1008, "signed-out")
            assert time.monotonic() - signed_out < 2  # at once, not at the token's expiry

            # a copy of the signed-out cookie opens nothing, though its JWT is unexpired
            copy = await world.http.get(SESSIONS, headers=headers)
            assert copy.status_code == 401, copy.text
            async with connect(url, additional_headers=headers, proxy=None) as copied:
                with contextlib.suppress(ConnectionClosed):
                    async for _ in copied:
                        pass
            assert (copied.close_code, copied.close_reason) == (1008, "unauthenticated")

            # the user's other sign-in keeps its routes and its terminal
            assert (await two.get(SESSIONS)).status_code == 200
            await kept.send(b"echo still-$((5*5))\n")
            seen = b""
            while b"still-25" not in seen:
                frame = await kept.recv()
                seen += frame if isinstance(frame, bytes) else frame.encode()
        await one.aclose()
        await two.aclose()


async def test_a_logout_from_another_sites_page_ends_nothing(tmp_path: Path) -> None:
    async with mcp_world(tmp_path, isolation="none") as world:
        browser = await signed_in(world, ADA)
        cookie = {"Cookie": f"catalyst_session={browser.cookies['catalyst_session']}"}
        out = await browser.post("/logout", headers={"Origin": "http://evil.example"})
        assert out.status_code == 204
        # the sign-in itself lives on: only this server's pages sign it out
        assert (await world.http.get(SESSIONS, headers=cookie)).status_code == 200
        await browser.aclose()
