"""The product's events from where they happen, on a real embedded server (its
in-process bus): a create, the controller's Ready and Failed, a terminal's start and
exit, a delete, each with the sandbox's scope and nothing secret."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from openova_sandbox.events.bus import Event
from openova_sandbox.events.product import (
    SANDBOX_CREATED,
    SANDBOX_DELETED,
    SANDBOX_FAILED,
    SANDBOX_READY,
    SCOPE_KEYS,
    SESSION_EXITED,
    SESSION_STARTED,
)
from support.mcp_world import SESSIONS, McpWorld, Person, mcp_world

ADA = Person("sub-ada", "ada@acme.com", "acme")


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[McpWorld]:
    # a git server that does not exist: a sandbox with a repo fails to clone
    async with mcp_world(
        tmp_path, isolation="none", git_base_url=f"file://{tmp_path}/no-git-here"
    ) as made:
        yield made


async def next_of(queue: asyncio.Queue[Event], type_: str, sandbox: str) -> Event:
    """The first such event; the others read meanwhile go back in order (events of one
    sandbox from different publishers are not causally ordered: the controller's Ready
    may come before the create's own event)."""
    skipped: list[Event] = []
    try:
        async with asyncio.timeout(20):
            while True:
                event = await queue.get()
                if event.type == type_ and event.payload.get("sandbox") == sandbox:
                    return event
                skipped.append(event)
    finally:
        rest = [*skipped]
        while not queue.empty():
            rest.append(queue.get_nowait())
        for event in rest:
            queue.put_nowait(event)


async def test_a_sandbox_life_is_published(world: McpWorld):
    queue = world.deps.bus.subscribe()
    own = await world.create(ADA)
    created = await next_of(queue, SANDBOX_CREATED, own.name)
    assert {k: created.payload[k] for k in SCOPE_KEYS} == {
        "namespace": "acme",
        "sandbox": own.name,
        "org": "acme",
        "owner_sub": "sub-ada",
        "owner_email": "ada@acme.com",
    }
    assert created.payload["agent"] == "shell" and created.id and created.at.endswith("Z")
    await next_of(queue, SANDBOX_READY, own.name)
    opened = await world.http.post(
        f"{SESSIONS}/{own.name}/terminals", json={"agent": "shell"}, headers=world.auth(ADA)
    )
    assert opened.status_code == 201, opened.text
    tid = opened.json()["id"]
    started = await next_of(queue, SESSION_STARTED, own.name)
    assert (started.payload["session"], started.payload["agent"]) == (tid, "shell")
    closed = await world.http.delete(
        f"{SESSIONS}/{own.name}/terminals/{tid}", headers=world.auth(ADA)
    )
    assert closed.status_code == 204
    exited = await next_of(queue, SESSION_EXITED, own.name)
    assert exited.payload["session"] == tid and "code" in exited.payload
    gone = await world.http.delete(f"{SESSIONS}/{own.name}", headers=world.auth(ADA))
    assert gone.status_code in (202, 204)
    await next_of(queue, SANDBOX_DELETED, own.name)


async def test_a_failed_sandbox_is_published_with_its_reason(world: McpWorld):
    queue = world.deps.bus.subscribe()
    own = await world.create(ADA, repo="acme/app")
    failed = await next_of(queue, SANDBOX_FAILED, own.name)
    assert failed.payload["reason"], failed.payload
    assert failed.payload["owner_email"] == "ada@acme.com"
