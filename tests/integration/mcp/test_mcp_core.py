"""The MCP server core (issue 14): a real embedded server on a real port, the official MCP
client (streamable HTTP), real JWT signatures. Plans decide the tools listed; each of the
session, sandbox and usage tools is called; a token sees only its owner's sandboxes in its
own org; a deleted sandbox's token, a user's token and garbage are refused with 401."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.shared.exceptions import MCPError

from openova_sandbox.auth.issuer import EmbeddedIssuer
from openova_sandbox.domain.ledger import UsageRecord, identity_of
from openova_sandbox.services.mcp_tokens import McpTokens
from support.mcp_world import SESSIONS, McpWorld, Person, mcp_world

ADA = Person("sub-ada", "ada@acme.com", "acme")
BOB = Person("sub-bob", "bob@acme.com", "acme")
CAROL = Person("sub-carol", "carol@globex.com", "globex")
DAN = Person("sub-dan", "dan@initech.com", "initech")

MINE = {
    "session.whoami",
    "session.info",
    "sandbox.list",
    "sandbox.create",
    "sandbox.delete",
    "sandbox.terminals",
    "usage.get",
}
READER = ["session.*", "sandbox.list", "usage.*"]
PLANS = json.dumps({"reader": READER, "builder": ["*"]})
ORG_PLANS = json.dumps({"acme": "builder", "globex": "builder"})


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[McpWorld]:
    async with mcp_world(
        tmp_path,
        isolation="none",
        mcp_plans=PLANS,
        mcp_org_plans=ORG_PLANS,
        mcp_default_plan="reader",
    ) as made:
        yield made


WIRE_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")  # what OpenAI and Anthropic accept


async def names(world: McpWorld, token: str) -> set[str]:
    """The tools listed, by their dotted names (the titles); each one's wire name is
    that with ``_`` for the dots, a function name every model API accepts."""
    async with world.client(token) as client:
        tools = (await client.list_tools()).tools
    for tool in tools:
        assert tool.title and tool.name == tool.title.replace(".", "_"), tool
        assert WIRE_NAME.fullmatch(tool.name), tool.name
    return {t.title or "" for t in tools}


async def call(world: McpWorld, token: str, tool: str, **args: Any) -> Any:
    async with world.client(token) as client:
        return await client.call_tool(tool, args)


def ok(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    data: dict[str, Any] = result.structured_content
    # the same data as JSON text, for clients that read text only
    assert json.loads(result.content[0].text) == data
    return data


def failed(result: Any, code: str) -> str:
    assert result.is_error, result.structured_content
    assert result.structured_content["error"] == code, result.structured_content
    detail: str = result.structured_content["detail"]
    assert code in result.content[0].text
    return detail


async def test_two_plans_list_different_tools_and_a_sandbox_narrows_its_plan(
    world: McpWorld,
) -> None:
    builder = await world.create(ADA)  # acme: builder (everything)
    reader = await world.create(DAN)  # initech: no plan named, the default (reader)
    listed_builder = await names(world, world.mcp_token(builder))
    listed_reader = await names(world, world.mcp_token(reader))
    assert listed_builder >= MINE
    assert listed_reader == {"session.whoami", "session.info", "sandbox.list", "usage.get"}

    # outside the plan: not listed, and a call is a protocol error saying why
    async with world.client(world.mcp_token(reader)) as client:
        with pytest.raises(MCPError) as refused:
            await client.call_tool("sandbox.create", {"agent": "shell"})
    assert "not allowed for this sandbox" in refused.value.message
    assert "'reader'" in refused.value.message
    assert refused.value.code == -32602

    # the sandbox's spec.capabilities narrow its plan (never widen it)
    stored = await world.set_capabilities(builder, ["session.*", "preview.*"])
    token = world.mcp_token(stored)
    assert await names(world, token) == {"session.whoami", "session.info"} | {
        n for n in listed_builder if n.startswith("preview.")
    }
    async with world.client(token) as client:
        with pytest.raises(MCPError, match="capabilities"):
            await client.call_tool("sandbox.list", {})
        whoami = ok(await client.call_tool("session.whoami", {}))
    assert whoami["capabilities"] == ["session.*", "preview.*"]
    assert whoami["plan"] == "builder"


async def test_session_whoami_and_info(world: McpWorld) -> None:
    mine = await world.create(ADA, repo=None)
    await world.ready(ADA, mine.name)
    token = world.mcp_token(mine)
    whoami = ok(await call(world, token, "session.whoami"))
    assert whoami["sandbox"] == {"id": mine.name, "namespace": "acme", "uid": mine.metadata.uid}
    assert whoami["owner"] == {"email": ADA.email, "sub": ADA.sub}
    assert whoami["org"] == "acme"
    assert whoami["plan"] == "builder"
    assert set(whoami["tools"]) >= MINE

    info = ok(await call(world, token, "session.info"))
    assert info["sandbox"]["id"] == mine.name
    assert info["sandbox"]["phase"] == "Ready"
    assert info["quota"] == mine.spec.quota.to_dict()
    assert info["repos"] == []
    assert info["agents"] == ["shell"]
    assert info["usage30d"] == {"inputTokens": 0, "outputTokens": 0, "costUsd": 0.0}
    assert isinstance(info["terminals"], list)
    from openova_sandbox.domain.quotas import DEFAULT_ORG, DEFAULT_USER

    assert info["limits"] == {"user": dict(DEFAULT_USER), "org": dict(DEFAULT_ORG)}


async def test_sandbox_list_create_terminals_and_delete_act_as_the_owner(
    world: McpWorld,
) -> None:
    mine = await world.create(ADA)
    await world.ready(ADA, mine.name)
    bobs = await world.create(BOB)  # same org, another user
    carols = await world.create(CAROL)  # another org
    token = world.mcp_token(mine)

    listed = ok(await call(world, token, "sandbox.list"))
    assert listed["current"] == mine.name
    assert [s["id"] for s in listed["sandboxes"]] == [mine.name]

    helper = ok(await call(world, token, "sandbox.create", agent="shell", name="helper one"))
    assert helper["agent"] == "shell" and helper["name"] == "helper one"
    # the helper is Ada's: her own token sees it through the API
    got = await world.http.get(f"{SESSIONS}/{helper['id']}", headers=world.auth(ADA))
    assert got.status_code == 200
    stored = await world.deps.store.get("acme", helper["id"])
    assert stored.spec.owner_email == ADA.email
    assert stored.metadata.annotations["openova.io/owner-sub"] == ADA.sub
    listed = ok(await call(world, token, "sandbox.list"))
    assert {s["id"] for s in listed["sandboxes"]} == {mine.name, helper["id"]}

    # a terminal opened through the API is listed by sandbox.terminals
    await world.ready(ADA, helper["id"])
    opened = await world.http.post(
        f"{SESSIONS}/{helper['id']}/terminals", json={"agent": "shell"}, headers=world.auth(ADA)
    )
    assert opened.status_code == 201, opened.text
    terms = ok(await call(world, token, "sandbox.terminals", id=helper["id"]))
    assert terms["id"] == helper["id"]
    assert opened.json()["id"] in {t["id"] for t in terms["terminals"]}
    own = ok(await call(world, token, "sandbox.terminals"))
    assert own["id"] == mine.name

    # nothing of Bob's (same org) nor Carol's (another org): as if it did not exist
    for other in (bobs.name, carols.name):
        for tool, args in (
            ("sandbox.terminals", {"id": other}),
            ("sandbox.delete", {"id": other}),
            ("usage.get", {"sandbox": other}),
        ):
            detail = failed(await call(world, token, tool, **args), "sandbox-not-found")
            assert other in detail
    assert (await world.deps.store.get("acme", bobs.name)).deleting is False
    assert (await world.deps.store.get("globex", carols.name)).deleting is False

    # its own sandbox cannot be deleted from inside; the helper can
    failed(await call(world, token, "sandbox.delete", id=mine.name), "own-sandbox")
    deleted = ok(await call(world, token, "sandbox.delete", id=helper["id"]))
    assert deleted == {"id": helper["id"], "deleted": True}
    await world.gone(ADA, helper["id"])
    failed(await call(world, token, "sandbox.delete", id=helper["id"]), "sandbox-not-found")

    # the audit log says who did it, and through which sandbox
    admin = world.issuer.mint(
        sub="sub-root", email="root@acme.com", org="acme", roles=["org-admin"]
    )
    entries = await world.http.get(
        "/api/v1/sandbox/audit", headers={"Authorization": f"Bearer {admin}"}
    )
    assert entries.status_code == 200, entries.text
    done = {
        (e["action"], e["target"], e["detail"].get("via"), e["actor"]["sub"])
        for e in entries.json()["items"]
    }
    assert ("sandbox.create", f"sandbox/{helper['id']}", f"mcp:{mine.name}", ADA.sub) in done
    assert ("sandbox.delete", f"sandbox/{helper['id']}", f"mcp:{mine.name}", ADA.sub) in done


async def test_sandbox_create_respects_the_owners_quota(tmp_path: Path) -> None:
    async with mcp_world(tmp_path, isolation="none", quota_user="sandboxes=2") as world:
        mine = await world.create(ADA)
        token = world.mcp_token(mine)
        info = ok(await call(world, token, "session.info"))
        assert info["limits"]["user"]["sandboxes"] == 2
        ok(await call(world, token, "sandbox.create", agent="shell", name="second"))
        detail = failed(
            await call(world, token, "sandbox.create", agent="shell", name="third"),
            "quota-exceeded",
        )
        assert "2" in detail


async def test_usage_get_reports_the_sandboxs_metered_tokens_and_spend(world: McpWorld) -> None:
    mine = await world.create(ADA)
    other = await world.create(ADA, name="other")
    ledger = world.deps.ledger
    for sandbox, tokens in ((mine, 1200), (other, 7)):
        identity = identity_of(sandbox)
        reservation = await ledger.reserve(identity, Decimal("0.01"))
        await ledger.settle(
            reservation,
            UsageRecord(
                identity=identity,
                model="gpt-4.1-mini",
                provider="openai",
                api="openai-chat",
                input_tokens=tokens,
                output_tokens=34,
                cache_read_tokens=0,
                cache_write_tokens=0,
                cost_usd=Decimal("0.0025"),
                latency_ms=12.0,
                status=200,
                stream=False,
                started_at=datetime.now(UTC),
            ),
        )
    token = world.mcp_token(mine)
    report = ok(await call(world, token, "usage.get"))
    assert report["sandbox"] == mine.name
    assert report["totals"]["requests"] == 1
    assert report["totals"]["inputTokens"] == 1200
    assert report["totals"]["outputTokens"] == 34
    assert report["totals"]["costUsd"] == pytest.approx(0.0025)
    assert len(report["days"]) == 30
    assert sum(d["inputTokens"] for d in report["days"]) == 1200
    theirs = ok(await call(world, token, "usage.get", sandbox=other.name))
    assert theirs["totals"]["inputTokens"] == 7
    failed(await call(world, token, "usage.get", since="yesterday"), "invalid-since")


async def test_malformed_arguments_and_unknown_tools_get_clear_errors(world: McpWorld) -> None:
    token = world.mcp_token(await world.create(ADA))
    async with world.client(token) as client:
        detail = failed(await client.call_tool("sandbox.create", {"agent": 3}), "invalid-arguments")
        assert "agent" in detail and "string" in detail
        detail = failed(await client.call_tool("sandbox.create", {}), "invalid-arguments")
        assert "'agent' is a required property" in detail
        detail = failed(
            await client.call_tool("session.whoami", {"verbose": True}), "invalid-arguments"
        )
        assert "verbose" in detail
        detail = failed(
            await client.call_tool("sandbox.create", {"agent": "no-such-agent"}), "invalid-agent"
        )
        assert "no-such-agent" in detail
        with pytest.raises(MCPError, match=r"unknown tool 'sandbox\.explode'"):
            await client.call_tool("sandbox.explode", {})


async def test_tokens_other_than_a_live_sandboxs_mcp_token_are_refused(
    world: McpWorld,
) -> None:
    mine = await world.create(ADA)
    await world.ready(ADA, mine.name)
    token = world.mcp_token(mine)
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "0"},
        },
    }
    headers = {"Accept": "application/json, text/event-stream"}

    async def post(bearer: str | None) -> httpx.Response:
        extra = {"Authorization": f"Bearer {bearer}"} if bearer is not None else {}
        return await world.http.post("/mcp", json=initialize, headers={**headers, **extra})

    assert (await post(token)).status_code == 200

    made = await world.http.post(
        "/api/v1/sandbox/tokens", json={"name": "ci"}, headers=world.auth(ADA)
    )
    assert made.status_code == 201, made.text
    pat = made.json()["token"]  # Ada's real personal access token: good for the API
    assert (await world.http.get(SESSIONS, headers={"Authorization": f"Bearer {pat}"})).is_success
    refusals = {
        None: "an MCP token is required",
        world.token(ADA): "a user's sign-in token is not accepted here",
        pat: "personal access token",
        "a.b.c": "not an MCP token of this server",
        McpTokens(EmbeddedIssuer.generate(), None).issue(mine): "not an MCP token",
    }
    for bearer, said in refusals.items():
        refused = await post(bearer)
        assert refused.status_code == 401, (bearer, refused.text)
        error = refused.json()["error"]  # a JSON-RPC error, as MCP clients read them
        assert error["code"] == -32001
        assert error["message"].startswith("unauthenticated: ")
        assert said in error["message"]
        assert said in error["data"]["detail"] and error["data"]["error"] == "unauthenticated"
        assert refused.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
        if bearer:
            assert bearer not in refused.text

    # the API refuses the MCP token as a credential
    api = await world.http.get(SESSIONS, headers={"Authorization": f"Bearer {token}"})
    assert api.status_code == 401

    # deleted: the token is revoked with its sandbox, even mid-session
    async with world.client(token) as client:
        ok(await client.call_tool("session.whoami", {}))
        deleted = await world.http.delete(f"{SESSIONS}/{mine.name}", headers=world.auth(ADA))
        assert deleted.status_code == 204
        await world.gone(ADA, mine.name)
        with pytest.raises(MCPError) as revoked:
            await client.call_tool("session.whoami", {})
    assert revoked.value.code == -32001
    assert "no longer exists" in revoked.value.message
    refused = await post(token)
    assert refused.status_code == 401
    assert "no longer exists" in refused.json()["error"]["message"]


async def test_a_session_is_bound_to_the_token_that_opened_it(world: McpWorld) -> None:
    adas = world.mcp_token(await world.create(ADA))
    bobs = world.mcp_token(await world.create(BOB))
    headers = {"Accept": "application/json, text/event-stream", "Authorization": f"Bearer {adas}"}
    opened = await world.http.post(
        "/mcp",
        headers=headers,
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "0"},
            },
        },
    )
    assert opened.status_code == 200, opened.text
    session = opened.headers["mcp-session-id"]
    hijack = await world.http.post(
        "/mcp",
        headers={
            **headers,
            "Authorization": f"Bearer {bobs}",
            "mcp-session-id": session,
            "mcp-protocol-version": "2025-06-18",
        },
        json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
    )
    assert hijack.status_code == 404
    assert "Session not found" in hijack.text


async def test_the_server_stops_promptly_with_clients_connected(world: McpWorld) -> None:
    """A client of the 2025 protocol (what agent CLIs speak) holds a session with an
    event stream open (GET /mcp); stopping the server does not wait for it to go away."""
    token = world.mcp_token(await world.create(ADA))
    async with world.client(token, mode="legacy") as client:
        ok(await client.call_tool("session.whoami", {}))
        assert world.deps.mcp.manager._server_instances  # the session is open
        started = time.monotonic()
        await world.stop(timeout=10)
        assert time.monotonic() - started < 5


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_both_protocol_eras_list_and_call_as_the_same_caller(
    world: McpWorld, mode: str
) -> None:
    """The 2025 handshake (sessions; what agent CLIs speak today) and the 2026 per-request
    protocol both reach the same tools with the same caller and refusals."""
    mine = await world.create(ADA)
    async with world.client(world.mcp_token(mine), mode=mode) as client:
        assert {t.title for t in (await client.list_tools()).tools} >= MINE
        whoami = ok(await client.call_tool("session.whoami", {}))
        # by the name it is listed under too
        assert ok(await client.call_tool("session_whoami", {})) == whoami
        assert whoami["sandbox"]["id"] == mine.name
        failed(await client.call_tool("sandbox.delete", {"id": mine.name}), "own-sandbox")
        with pytest.raises(MCPError, match="unknown tool"):
            await client.call_tool("nope.nothing", {})


def test_plans_from_settings_refuse_what_is_not_defined() -> None:
    from openova_sandbox.config import Settings
    from openova_sandbox.domain.errors import Invalid
    from openova_sandbox.mcp.server import BUILTIN_PLANS, PlanBook

    book = PlanBook.from_settings(Settings())
    assert book.plans.plans == BUILTIN_PLANS
    assert book.plan_of("anyone") == "sandbox-pro"
    assert book.grant("anyone", ()).allows("sandbox.create")
    assert not book.grant("anyone", ("session.*",)).allows("sandbox.create")
    custom = PlanBook.from_settings(
        Settings(mcp_plans=PLANS, mcp_org_plans=ORG_PLANS, mcp_default_plan="reader")
    )
    assert custom.plan_of("acme") == "builder" and custom.plan_of("initech") == "reader"
    assert not custom.grant("initech", ()).allows("sandbox.create")
    with pytest.raises(Invalid, match="SANDBOX_MCP_DEFAULT_PLAN: plan 'gold' is not one of"):
        PlanBook.from_settings(Settings(mcp_default_plan="gold"))
    with pytest.raises(Invalid, match=r"SANDBOX_MCP_ORG_PLANS: plan\(s\) gold are not defined"):
        PlanBook.from_settings(Settings(mcp_org_plans='{"acme": "gold"}'))
    with pytest.raises(Invalid, match="SANDBOX_MCP_PLANS: Value error, not JSON"):
        Settings(mcp_plans="{")


@pytest.mark.filterwarnings("ignore:resources/(un)?subscribe is removed")
async def test_a_closed_sessions_subscriptions_are_forgotten(world: McpWorld) -> None:
    """A 2025 session that subscribed and then ended (the client closed it) leaves no
    subscription behind in the live resources."""
    mine = await world.create(ADA)
    live = world.deps.mcp.services.live
    async with world.client(world.mcp_token(mine), mode="legacy") as client:
        await client.subscribe_resource(f"openova://sandbox/{mine.name}")
        assert live.subscription_count == 1
    async with asyncio.timeout(10):
        while live.subscription_count:
            await asyncio.sleep(0.02)
