"""``POST /logout`` of a console signed in with a token cookie (the embedded issuer's
JWT in ``catalyst_session``) ends that sign-in everywhere, though the JWT itself has not
expired (issue 11: "`/logout` cannot end it"; auth/signouts.py): a copy of the cookie is
refused on every route, a terminal opened with it closes 1008 ``signed-out`` at once, and
the same user's other sign-ins keep working. The sign-out is recorded in the store's
database before the answer, so a new server over the same data (SQLite, or PostgreSQL)
refuses the copy too; when that record fails the answer is 503 and the cookie stays.

A real embedded server (support/mcp_world.py), login links redeemed into real cookies,
real HTTP and WebSocket clients, a real database (SQLite in the data dir, or a fresh
PostgreSQL database)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from openova_sandbox.auth.cookie import verify_cookie
from openova_sandbox.auth.signouts import NOT_RECORDED, jwt_id
from support.mcp_world import McpWorld, Person, mcp_world
from support.postgres import fresh_database
from support.sql_faults import refuse_signout_inserts
from support.waiting import until

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


async def typed(ws: ClientConnection, command: bytes, answer: bytes) -> None:
    """``command`` typed into a terminal, until the shell's ``answer`` came back."""
    await ws.send(command)
    seen = b""
    while answer not in seen:
        frame = await ws.recv()
        seen += frame if isinstance(frame, bytes) else frame.encode()


async def until_closed(ws: ClientConnection) -> tuple[int | None, str | None]:
    """What the server closed the terminal's WebSocket with, once it did."""
    with contextlib.suppress(ConnectionClosed):
        async for _ in ws:
            pass
    return ws.close_code, ws.close_reason


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
            await typed(ws, b"echo live-$((4*4))\n", b"live-16")

            out = await one.post("/logout")
            assert out.status_code == 204, out.text
            signed_out = time.monotonic()
            assert await until_closed(ws) == (1008, "signed-out")
            assert time.monotonic() - signed_out < 2  # at once, not at the token's expiry

            # a copy of the signed-out cookie opens nothing, though its JWT is unexpired
            copy = await world.http.get(SESSIONS, headers=headers)
            assert copy.status_code == 401, copy.text
            async with connect(url, additional_headers=headers, proxy=None) as copied:
                assert await until_closed(copied) == (1008, "unauthenticated")

            # the user's other sign-in keeps its routes and its terminal
            assert (await two.get(SESSIONS)).status_code == 200
            await typed(kept, b"echo still-$((5*5))\n", b"still-25")
        await one.aclose()
        await two.aclose()


async def test_the_cookies_jwt_as_a_bearer_token_ends_with_the_sign_out(tmp_path: Path) -> None:
    """The JWT inside a token cookie, copied out and presented as a bearer token, is the
    same sign-in: refused once the console signed out, and a terminal it opened closes;
    a bearer token of the same user's other sign-in keeps working."""
    async with mcp_world(tmp_path, isolation="none") as world:
        name = (await world.create(ADA)).name
        await world.ready(ADA, name)
        one, two = await signed_in(world, ADA), await signed_in(world, ADA)
        secret = world.deps.cookie_secret
        copied = verify_cookie(one.cookies["catalyst_session"], secret)
        kept = verify_cookie(two.cookies["catalyst_session"], secret)
        assert copied and kept and jwt_id(copied) != jwt_id(kept)
        bearer = {"Authorization": f"Bearer {copied}"}
        assert (await world.http.get(SESSIONS, headers=bearer)).status_code == 200

        url = f"{world.url.replace('http://', 'ws://')}{SESSIONS}/{name}/attach"
        async with asyncio.timeout(30), connect(url, additional_headers=bearer, proxy=None) as ws:
            await typed(ws, b"echo bearer-$((6*7))\n", b"bearer-42")
            out = await one.post("/logout")
            assert out.status_code == 204, out.text
            assert await until_closed(ws) == (1008, "signed-out")

        refused = await world.http.get(SESSIONS, headers=bearer)
        assert refused.status_code == 401, refused.text
        other = {"Authorization": f"Bearer {kept}"}
        assert (await world.http.get(SESSIONS, headers=other)).status_code == 200
        await one.aclose()
        await two.aclose()


async def test_a_token_signed_in_with_at_login_outlives_the_consoles_sign_out(
    tmp_path: Path,
) -> None:
    """A console signed in at ``/login`` with a token the user holds (their CLI's, say)
    signs out of that cookie only: the token itself stays a valid bearer token."""
    async with mcp_world(tmp_path, isolation="none") as world:
        token = world.token(ADA)  # minted for the user, not for a console cookie
        browser = httpx.AsyncClient(base_url=world.url, headers={"Origin": world.url}, timeout=15)
        page = await browser.get("/login", params={"token": token})
        form = dict(re.findall(r'name="(\w+)" value="([^"]*)"', page.text))
        done = await browser.post("/login", data=form)
        assert done.status_code == 303, done.text
        cookie = {"Cookie": f"catalyst_session={browser.cookies['catalyst_session']}"}
        assert (await world.http.get(SESSIONS, headers=cookie)).status_code == 200
        assert (await browser.post("/logout")).status_code == 204
        assert (await world.http.get(SESSIONS, headers=cookie)).status_code == 401
        bearer = {"Authorization": f"Bearer {token}"}
        assert (await world.http.get(SESSIONS, headers=bearer)).status_code == 200
        await browser.aclose()


async def test_a_logout_from_another_sites_page_ends_nothing(tmp_path: Path) -> None:
    async with mcp_world(tmp_path, isolation="none") as world:
        browser = await signed_in(world, ADA)
        cookie = {"Cookie": f"catalyst_session={browser.cookies['catalyst_session']}"}
        out = await browser.post("/logout", headers={"Origin": "http://evil.example"})
        assert out.status_code == 204
        # the sign-in itself lives on: only this server's pages sign it out
        assert (await world.http.get(SESSIONS, headers=cookie)).status_code == 200
        await browser.aclose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database(request: pytest.FixtureRequest) -> dict[str, str]:
    """The server's settings for its database: SQLite in its data dir, or PostgreSQL."""
    if request.param == "sqlite":
        return {}
    return {"database_url": await fresh_database(request.getfixturevalue("postgres_url"))}


async def test_a_signed_out_cookie_stays_refused_by_a_restarted_server(
    tmp_path: Path, database: dict[str, str]
) -> None:
    async with mcp_world(tmp_path, isolation="none", **database) as world:
        one, two = await signed_in(world, ADA), await signed_in(world, ADA)
        copy = {"Cookie": f"catalyst_session={one.cookies['catalyst_session']}"}
        other = {"Cookie": f"catalyst_session={two.cookies['catalyst_session']}"}
        out = await one.post("/logout")
        assert out.status_code == 204, out.text
        assert (await world.http.get(SESSIONS, headers=copy)).status_code == 401
        await one.aclose()
        await two.aclose()

    # a new server over the same data dir and database: the JWT still verifies (the
    # other sign-in's does), yet the signed-out one is refused, not valid again until exp
    async with mcp_world(tmp_path, isolation="none", **database) as world:
        refused = await world.http.get(SESSIONS, headers=copy)
        assert refused.status_code == 401, refused.text
        assert (await world.http.get(SESSIONS, headers=other)).status_code == 200
        # refused for its sign-out alone: the token in it verifies and has not expired
        token = verify_cookie(copy["Cookie"].split("=", 1)[1], world.deps.cookie_secret)
        assert token is not None
        claims = await world.deps.authenticator.validator.validate(token)
        assert claims["exp"] > time.time()
        assert world.deps.signouts.ended(ADA.sub, jwt_id(token))


async def test_a_cookie_signed_out_through_one_replica_is_refused_by_another_running(
    tmp_path: Path, database: dict[str, str]
) -> None:
    """Two servers running at once over one data dir and database (two API replicas): a
    phone signed in by a login link is signed out through the first; a copy of its cookie
    presented to the second, which was running all along, is refused within about 2 s
    (its poll of the recorded sign-outs), not from its next start."""
    async with (
        mcp_world(tmp_path, isolation="none", **database) as first,
        mcp_world(tmp_path, isolation="none", **database) as second,
    ):
        phone, laptop = await signed_in(first, ADA), await signed_in(first, ADA)
        copy = {"Cookie": f"catalyst_session={phone.cookies['catalyst_session']}"}
        other = {"Cookie": f"catalyst_session={laptop.cookies['catalyst_session']}"}
        assert (await second.http.get(SESSIONS, headers=copy)).status_code == 200
        out = await phone.post("/logout")
        assert out.status_code == 204, out.text
        signed_out = time.monotonic()
        assert (await first.http.get(SESSIONS, headers=copy)).status_code == 401

        async def refused() -> bool:
            answer = await second.http.get(SESSIONS, headers=copy)
            assert answer.status_code in (200, 401), answer.text
            return answer.status_code == 401

        await until("the copy refused by the other replica", refused, timeout=10)
        assert time.monotonic() - signed_out < 2 + 2  # the poll interval, and a margin
        assert (await second.http.get(SESSIONS, headers=other)).status_code == 200
        await phone.aclose()
        await laptop.aclose()


async def test_a_logout_that_cannot_be_recorded_is_503_and_keeps_the_cookie(
    tmp_path: Path, database: dict[str, str]
) -> None:
    async with mcp_world(tmp_path, isolation="none", **database) as world:
        browser = await signed_in(world, ADA)
        cookie = browser.cookies["catalyst_session"]
        copy = {"Cookie": f"catalyst_session={cookie}"}
        lift = await refuse_signout_inserts(world.deps.settings.effective_database_url)

        failed = await browser.post("/logout")
        assert failed.status_code == 503, failed.text
        assert failed.json()["detail"] == NOT_RECORDED
        assert "set-cookie" not in failed.headers  # the cookie stays, to sign out again
        assert browser.cookies.get("catalyst_session") == cookie
        # this server refuses it already
        assert (await world.http.get(SESSIONS, headers=copy)).status_code == 401

        await lift()
        again = await browser.post("/logout")
        assert again.status_code == 204, again.text
        assert not browser.cookies.get("catalyst_session")  # cleared this time
        await browser.aclose()

    async with mcp_world(tmp_path, isolation="none", **database) as world:
        assert (await world.http.get(SESSIONS, headers=copy)).status_code == 401
