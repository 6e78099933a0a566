"""The MCP live resources (issue 14, item 4) on a real embedded server with the official
MCP client (streamable HTTP, the handshake-era protocol agents speak): a subscription to
a sandbox sees its create, Ready and delete within 1 s; terminals and usage are updated
from the product's events; a token never reads or hears about another user's or org's
sandbox; a malformed URI answers a clear error; a deleted sandbox's subscriptions end."""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from openova_sandbox.domain.ledger import identity_of
from openova_sandbox.domain.model import Sandbox
from openova_sandbox.events.product import PREVIEW_STARTED, preview_event, usage_recorded
from support.fake_llm import MODEL, FakeLLM
from support.mcp_updates import subscriber
from support.mcp_world import SESSIONS, McpWorld, Person, mcp_world

pytestmark = [
    pytest.mark.asyncio,
    # the handshake-era resources/subscribe is what agents' clients speak; the SDK warns
    # that the 2026-07-28 protocol replaces it with subscriptions/listen
    pytest.mark.filterwarnings("ignore:resources/(un)?subscribe is removed"),
]

ADA = Person("sub-ada", "ada@acme.com", "acme")
BOB = Person("sub-bob", "bob@acme.com", "acme")
CAROL = Person("sub-carol", "carol@globex.com", "globex")
WITHIN = 1.0  # seconds: the bound from a change to its notification


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[McpWorld]:
    async with mcp_world(tmp_path, isolation="none") as made:
        yield made


async def read(client: Client, uri: str) -> dict[str, Any]:
    result = await client.read_resource(uri)
    content = result.contents[0]
    assert isinstance(content, types.TextResourceContents) and content.mime_type == (
        "application/json"
    )
    parsed: dict[str, Any] = json.loads(content.text)
    return parsed


class Changes:
    """When the server's own informer saw each change of one sandbox: the moment the
    change existed in this process, which the notification must follow within 1 s."""

    def __init__(self, world: McpWorld, name: str) -> None:
        self.seen: list[tuple[float, str, str]] = []  # (when, type, phase)
        self._sub = world.deps.resources.informer.subscribe(lambda s: s.name == name)
        self._task = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        while True:
            item = await self._sub.next()
            if item is None or not hasattr(item, "object"):
                return
            self.seen.append((time.monotonic(), item.type, item.object.status.phase))

    async def first(self, type_: str, phase: str | None = None, timeout: float = 20) -> float:
        async with asyncio.timeout(timeout):
            while True:
                for at, t, p in self.seen:
                    if t == type_ and (phase is None or p == phase):
                        return at
                await asyncio.sleep(0.01)

    def close(self) -> None:
        self._task.cancel()


async def test_a_subscription_sees_create_ready_and_delete_within_a_second(world: McpWorld):
    own = await world.create(ADA)
    await world.ready(ADA, own.name)
    uri = "openova://sandbox/helper"
    async with subscriber(world, own) as (client, updates):
        resources = client.server_capabilities.resources
        assert resources is not None and resources.subscribe is True
        # the agent subscribes to its helper before creating it
        await client.subscribe_resource(uri)
        changes = Changes(world, "helper")
        try:
            made = await world.http.post(
                SESSIONS, json={"agent": "shell", "name": "helper"}, headers=world.auth(ADA)
            )
            assert made.status_code == 201, made.text
            created = await changes.first("ADDED")
            assert await updates.next_for(uri, after=created) - created < WITHIN
            ready = await changes.first("MODIFIED", "Ready")
            assert await updates.next_for(uri, after=ready) - ready < WITHIN
            assert (await read(client, uri))["phase"] == "Ready"
            gone = await world.http.delete(f"{SESSIONS}/helper", headers=world.auth(ADA))
            assert gone.status_code in (202, 204), gone.text
            deleted = await changes.first("DELETED")
            assert await updates.next_for(uri, after=deleted) - deleted < WITHIN
            with pytest.raises(MCPError) as info:
                await read(client, uri)
            assert info.value.code == -32002 and "sandbox-not-found" in info.value.message
        finally:
            changes.close()
        # unsubscribed: the next helper's life is not announced; a fence on the caller's
        # own terminals (announced after it, in order) proves nothing else came first
        await client.unsubscribe_resource(uri)
        await client.subscribe_resource(f"openova://sandbox/{own.name}/terminals")
        before = len(updates.got)
        again = await world.http.post(
            SESSIONS, json={"agent": "shell", "name": "helper"}, headers=world.auth(ADA)
        )
        assert again.status_code == 201
        await world.ready(ADA, "helper")
        fence = time.monotonic()
        opened = await world.http.post(
            f"{SESSIONS}/{own.name}/terminals", json={"agent": "shell"}, headers=world.auth(ADA)
        )
        assert opened.status_code == 201, opened.text
        await updates.next_for(f"openova://sandbox/{own.name}/terminals", after=fence)
        assert uri not in updates.uris()[before:]


async def test_terminals_and_usage_follow_the_product_events(world: McpWorld):
    own = await world.create(ADA)
    await world.ready(ADA, own.name)
    terminals = f"openova://sandbox/{own.name}/terminals"
    usage = f"openova://usage/{own.name}"
    async with subscriber(world, own) as (client, updates):
        listed = {r.uri for r in (await client.list_resources()).resources}
        assert {f"openova://sandbox/{own.name}", terminals, usage} <= listed
        templates = {
            t.uri_template for t in (await client.list_resource_templates()).resource_templates
        }
        assert "openova://preview/{id}/{port}" in templates
        await client.subscribe_resource(terminals)
        await client.subscribe_resource(usage)
        start = time.monotonic()
        opened = await world.http.post(
            f"{SESSIONS}/{own.name}/terminals", json={"agent": "shell"}, headers=world.auth(ADA)
        )
        assert opened.status_code == 201, opened.text
        tid = opened.json()["id"]
        assert await updates.next_for(terminals, after=start) - start < WITHIN
        ids = [t["id"] for t in (await read(client, terminals))["terminals"]]
        assert tid in ids
        closing = time.monotonic()
        closed = await world.http.delete(
            f"{SESSIONS}/{own.name}/terminals/{tid}", headers=world.auth(ADA)
        )
        assert closed.status_code == 204
        assert await updates.next_for(terminals, after=closing) - closing < WITHIN
        assert tid not in [t["id"] for t in (await read(client, terminals))["terminals"]]
        # a settled model request (what the gateway publishes after each settle)
        settled = time.monotonic()
        await world.deps.bus.publish(
            usage_recorded(
                identity_of(own),
                model="m",
                input_tokens=3,
                output_tokens=4,
                cost_usd=Decimal("0.01"),
                status=200,
            )
        )
        assert await updates.next_for(usage, after=settled) - settled < WITHIN
        body = await read(client, usage)
        assert body["sandbox"] == own.name and body["currency"] == "USD"
        # a preview's events (the vocabulary's preview.*) update its resource
        preview = f"openova://preview/{own.name}/8080"
        await client.subscribe_resource(preview)
        started = time.monotonic()
        await world.deps.bus.publish(preview_event(PREVIEW_STARTED, own, 8080))
        assert await updates.next_for(preview, after=started) - started < WITHIN


async def test_a_settled_model_request_updates_the_usage_resource(tmp_path: Path):
    """usage.recorded as the gateway publishes it: a real request through /llm/ to a
    fake provider, metered and settled, then announced."""
    with FakeLLM() as llm:
        async with mcp_world(
            tmp_path, isolation="none", openai_base_url=llm.base_url, openai_api_key="sk-fake"
        ) as world:
            own = await world.create(ADA)
            await world.ready(ADA, own.name)
            tokens = world.deps.terminals.tokens
            await tokens.ensure(own)
            usage = f"openova://usage/{own.name}"
            async with subscriber(world, own) as (client, updates):
                await client.subscribe_resource(usage)
                before = await read(client, usage)
                sent = time.monotonic()
                answer = await world.http.post(
                    "/llm/openai/v1/chat/completions",
                    headers={"Authorization": f"Bearer {tokens.access(own).token}"},
                    json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
                )
                assert answer.status_code == 200, answer.text
                # within a second of the settle (the request's own time on top)
                assert await updates.next_for(usage, after=sent) - sent < WITHIN + 1
                after = await read(client, usage)
                assert after["requests"] == before["requests"] + 1, (before, after)


async def test_a_token_sees_nothing_of_another_user_or_org(world: McpWorld):
    own = await world.create(ADA)
    bobs = await world.create(BOB, name="bobs")
    carols = await world.create(CAROL, name="carols")
    async with subscriber(world, own) as (client, updates):
        listed = {r.uri for r in (await client.list_resources()).resources}
        assert listed and all(own.name in uri for uri in listed), listed
        for uri in (
            "openova://sandbox/bobs",
            "openova://sandbox/bobs/terminals",
            "openova://usage/bobs",
            "openova://sandbox/carols",
            "openova://usage/carols",
        ):
            with pytest.raises(MCPError) as info:
                await read(client, uri)
            # exactly what a sandbox that does not exist answers: existence never leaks
            assert info.value.code == -32002, uri
            assert "not found" in info.value.message
        # a subscription to their names is taken (as to any name) but never hears of them
        for uri in ("openova://sandbox/bobs", "openova://sandbox/carols", "openova://usage/bobs"):
            await client.subscribe_resource(uri)
        await client.subscribe_resource(f"openova://sandbox/{own.name}")
        for theirs in (bobs, carols):  # their usage events pass on the same bus
            await world.deps.bus.publish(
                usage_recorded(
                    identity_of(theirs),
                    model="m",
                    input_tokens=1,
                    output_tokens=1,
                    cost_usd=Decimal("0.01"),
                    status=200,
                )
            )
        gone_b = await world.http.delete(f"{SESSIONS}/bobs", headers=world.auth(BOB))
        gone_c = await world.http.delete(f"{SESSIONS}/carols", headers=world.auth(CAROL))
        assert gone_b.status_code in (202, 204) and gone_c.status_code in (202, 204)
        await world.gone(BOB, "bobs")
        await world.gone(CAROL, "carols")
        # the fence: a change of the caller's own sandbox, announced after theirs
        fence = time.monotonic()
        opened = await world.http.post(
            f"{SESSIONS}/{own.name}/terminals", json={"agent": "shell"}, headers=world.auth(ADA)
        )
        assert opened.status_code == 201
        await world.http.delete(f"{SESSIONS}/{own.name}", headers=world.auth(ADA))
        await updates.next_for(f"openova://sandbox/{own.name}", after=fence)
        assert not any("bobs" in u or "carols" in u for u in updates.uris()), updates.uris()


async def test_malformed_uris_answer_a_clear_error(world: McpWorld):
    own = await world.create(ADA)
    async with subscriber(world, own) as (client, _updates):
        for uri in (
            "openova://nothing/x",
            "https://example.com/sandbox/x",
            "openova://sandbox/UPPER",
            "openova://preview/x/0",
            "openova://preview/x/70000",
        ):
            with pytest.raises(MCPError) as info:
                await read(client, uri)
            assert info.value.code == types.INVALID_PARAMS, (uri, info.value.message)
            assert "openova://sandbox/{id}" in info.value.message or "port" in info.value.message
            with pytest.raises(MCPError) as info:
                await client.subscribe_resource(uri)
            assert info.value.code == types.INVALID_PARAMS


async def test_a_deleted_sandbox_ends_its_subscriptions(world: McpWorld):
    own = await world.create(ADA)
    await world.ready(ADA, own.name)
    live = world.deps.mcp.services.live
    uri = f"openova://sandbox/{own.name}"
    async with subscriber(world, own) as (client, updates):
        await client.subscribe_resource(uri)
        await client.subscribe_resource(f"openova://usage/{own.name}")
        assert live.subscription_count == 2
        deleting = time.monotonic()
        gone = await world.http.delete(f"{SESSIONS}/{own.name}", headers=world.auth(ADA))
        assert gone.status_code in (202, 204)
        await world.gone(ADA, own.name)
        # the deletion itself is announced, then the token's subscriptions end
        await updates.next_for(uri, after=deleting)
        async with asyncio.timeout(5):
            while live.subscription_count:
                await asyncio.sleep(0.01)


async def test_a_session_that_ends_takes_its_subscriptions_with_it(world: McpWorld):
    own = await world.create(ADA)
    live = world.deps.mcp.services.live
    usage = f"openova://usage/{own.name}"
    # not the collector: the server forgets a session's subscribers when its connection
    # ends, and a send to a closed stream drops them too
    gc.disable()
    try:
        async with subscriber(world, own) as (client, _updates):
            await client.subscribe_resource(usage)
            assert live.subscription_count == 1
        # the client closed its session (and an update for it comes by)
        await announce_usage(world, own)
        async with asyncio.timeout(5):
            while live.subscription_count:
                await asyncio.sleep(0.01)
    finally:
        gc.enable()


async def announce_usage(world: McpWorld, own: Sandbox) -> None:
    await world.deps.bus.publish(
        usage_recorded(
            identity_of(own),
            model="m",
            input_tokens=1,
            output_tokens=1,
            cost_usd=Decimal("0.01"),
            status=200,
        )
    )
