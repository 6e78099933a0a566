"""``secrets.list|get|set`` (issue 14) called through their tool handlers on a real SQL
store and secrets table (SQLite file; the backends' contract runs on PostgreSQL too):
values only with ``secrets.read``, another sandbox's secrets invisible, sealed at rest,
bounded, never logged, and removed when their sandbox is deleted."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from openova_sandbox.config import load_settings
from openova_sandbox.domain.errors import Invalid, NotFound, QuotaExceeded, SandboxError
from openova_sandbox.domain.model import ObjectMeta, Sandbox, SandboxSpec
from openova_sandbox.mcp.capabilities import Grant
from openova_sandbox.mcp.tools import secrets as secret_tools
from openova_sandbox.mcp.tools.base import McpCaller, McpServices, ToolContext
from openova_sandbox.services.resources import SandboxInformer
from openova_sandbox.services.sandbox_reaper import SandboxReaper
from openova_sandbox.services.sandbox_secrets import (
    MAX_SECRETS,
    MAX_VALUE_BYTES,
    MemorySecretBackend,
    SandboxSecrets,
    build_sandbox_secrets,
)
from openova_sandbox.store.sql import SqlStore

TOOLS = {t.name: t for t in secret_tools.TOOLS}
VALUE = "ghp_s3cr3t-value-that-must-not-leak"
PRO = ("session.*", "workspace.*", "secrets.*")  # secrets.* includes secrets.read


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.db = tmp_path / "data" / "sandbox.db"
        self.settings = load_settings(data_dir=tmp_path / "data", store="sql")
        self.store = SqlStore(self.settings.effective_database_url)
        self.secrets = build_sandbox_secrets(self.settings, cookie_secret="cookie-secret-1")

    async def sandbox(self, name: str, owner: str = "ada@acme.com") -> Sandbox:
        return await self.store.create(
            Sandbox(
                metadata=ObjectMeta(name=name, namespace="acme"),
                spec=SandboxSpec(owner_email=owner, org_slug="acme", agent_catalogue=("aider",)),
            )
        )

    def ctx(
        self, sandbox: Sandbox, *, plan: tuple[str, ...] = PRO, caps: tuple[str, ...] = ()
    ) -> ToolContext:
        caller = McpCaller(
            namespace=sandbox.namespace,
            sandbox=sandbox.name,
            uid=sandbox.metadata.uid,
            owner_sub="sub-ada",
            owner_email=sandbox.spec.owner_email,
            org="acme",
            grant=Grant(plan, caps),
        )
        services = McpServices(settings=self.settings, store=self.store, secrets=self.secrets)
        return ToolContext(caller, services)


async def call(ctx: ToolContext, tool: str, **args: Any) -> Any:
    result = await TOOLS[tool].handler(ctx, args)
    json.dumps(result)  # what the server sends: JSON-able
    return result


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = World(tmp_path)
    (tmp_path / "data").mkdir()
    await w.store.start()
    await w.secrets.start()
    try:
        yield w
    finally:
        await w.secrets.stop()
        await w.store.close()


async def test_set_list_get_with_secrets_read(world: World) -> None:
    sandbox = await world.sandbox("one")
    ctx = world.ctx(sandbox)
    stored = await call(ctx, "secrets.set", name="GITHUB_TOKEN", value=VALUE)
    assert stored["name"] == "GITHUB_TOKEN" and stored["size"] == len(VALUE)
    await call(ctx, "secrets.set", name="db.password", value="hunter2")

    listed = await call(ctx, "secrets.list")
    assert [s["name"] for s in listed["secrets"]] == ["GITHUB_TOKEN", "db.password"]
    assert listed["valuesReadable"] is True
    assert VALUE not in json.dumps(listed)

    got = await call(ctx, "secrets.get", name="GITHUB_TOKEN")
    assert got["value"] == VALUE and "withheld" not in got

    again = await call(ctx, "secrets.set", name="GITHUB_TOKEN", value="rotated")
    assert again["createdAt"] == stored["createdAt"] and again["size"] == len("rotated")
    assert (await call(ctx, "secrets.get", name="GITHUB_TOKEN"))["value"] == "rotated"


async def test_values_withheld_without_secrets_read(world: World) -> None:
    sandbox = await world.sandbox("one")
    await call(world.ctx(sandbox), "secrets.set", name="API_KEY", value=VALUE)
    # the plan allows the tools but not the capability to read values ...
    narrow_plan = world.ctx(sandbox, plan=("secrets.list", "secrets.get", "secrets.set"))
    # ... or the plan allows it and the sandbox's own capabilities narrow it
    narrow_sandbox = world.ctx(sandbox, caps=("secrets.get", "secrets.list"))
    for ctx in (narrow_plan, narrow_sandbox):
        got = await call(ctx, "secrets.get", name="API_KEY")
        assert got["value"] is None
        assert "secrets.read" in got["withheld"]
        assert got["name"] == "API_KEY" and got["size"] == len(VALUE)
        assert VALUE not in json.dumps(got)
        assert (await call(ctx, "secrets.list"))["valuesReadable"] is False
    with pytest.raises(NotFound):  # a missing secret is missing either way
        await call(narrow_plan, "secrets.get", name="OTHER")


async def test_another_sandbox_sees_none_of_them(world: World) -> None:
    one, two = await world.sandbox("one"), await world.sandbox("two")
    await call(world.ctx(one), "secrets.set", name="TOKEN", value=VALUE)
    other = world.ctx(two)
    assert (await call(other, "secrets.list"))["secrets"] == []
    with pytest.raises(NotFound, match="no secret named 'TOKEN'"):
        await call(other, "secrets.get", name="TOKEN")
    await call(other, "secrets.set", name="TOKEN", value="two's own")
    assert (await call(world.ctx(one), "secrets.get", name="TOKEN"))["value"] == VALUE
    assert (await call(other, "secrets.get", name="TOKEN"))["value"] == "two's own"

    # a sandbox created again under a deleted one's name is a new uid: it starts empty
    await world.store.delete("acme", "one")
    reborn = await world.sandbox("one")
    assert (await call(world.ctx(reborn), "secrets.list"))["secrets"] == []


async def test_names_and_sizes_are_checked(world: World) -> None:
    ctx = world.ctx(await world.sandbox("one"))
    for bad in ("", "1ABC", "has space", "a/b", "x" * 129, "é"):
        with pytest.raises(Invalid) as caught:
            await call(ctx, "secrets.set", name=bad, value="v")
        assert caught.value.code == "invalid-secret-name"
    with pytest.raises(Invalid, match="at most"):
        await call(ctx, "secrets.set", name="BIG", value="x" * (MAX_VALUE_BYTES + 1))
    with pytest.raises(Invalid):
        await call(ctx, "secrets.set", name="NUM", value=42)
    await call(ctx, "secrets.set", name="EDGE", value="é" * (MAX_VALUE_BYTES // 2))
    for i in range(MAX_SECRETS - 1):
        await call(ctx, "secrets.set", name=f"S{i}", value="v")
    with pytest.raises(QuotaExceeded, match=str(MAX_SECRETS)):
        await call(ctx, "secrets.set", name="ONE_MORE", value="v")
    await call(ctx, "secrets.set", name="S0", value="replaced")  # replacing is fine


async def test_sealed_at_rest_and_bound_to_their_row(world: World) -> None:
    one, two = await world.sandbox("one"), await world.sandbox("two")
    await call(world.ctx(one), "secrets.set", name="TOKEN", value=VALUE)
    raw = world.db.read_bytes() + b"".join(p.read_bytes() for p in world.db.parent.glob("*-wal"))
    assert VALUE.encode() not in raw

    # a row copied onto another sandbox in the database does not open there
    with sqlite3.connect(world.db) as db:
        db.execute(
            "INSERT INTO sandbox_secrets SELECT ?, name, sealed, size, created_at, updated_at "
            "FROM sandbox_secrets WHERE sandbox_uid = ?",
            (two.metadata.uid, one.metadata.uid),
        )
    with pytest.raises(SandboxError) as caught:
        await call(world.ctx(two), "secrets.get", name="TOKEN")
    assert caught.value.code == "secret-unreadable"

    # another cookie secret, another key: stored values say they must be set again
    rekeyed = build_sandbox_secrets(world.settings, cookie_secret="cookie-secret-2")
    try:
        ctx = world.ctx(one)
        ctx.services.secrets = rekeyed
        with pytest.raises(SandboxError, match="set it again"):
            await call(ctx, "secrets.get", name="TOKEN")
    finally:
        await rekeyed.stop()


async def test_values_are_never_logged(world: World) -> None:
    ctx = world.ctx(await world.sandbox("one"))
    with capture_logs() as logs:
        await call(ctx, "secrets.set", name="TOKEN", value=VALUE)
        await call(ctx, "secrets.get", name="TOKEN")
        await call(ctx, "secrets.list")
    assert any(e.get("secret") == "TOKEN" for e in logs)  # the set is logged, by name
    assert VALUE not in repr(logs)
    found = await world.secrets.get(ctx.caller.uid, "TOKEN")
    assert VALUE not in repr(found)


async def test_secrets_go_with_their_sandbox(world: World) -> None:
    informer = SandboxInformer(world.store)
    await informer.start()
    reaper = SandboxReaper(world.store, [world.secrets], informer=informer)
    one, two = await world.sandbox("one"), await world.sandbox("two")
    await call(world.ctx(one), "secrets.set", name="TOKEN", value=VALUE)
    await call(world.ctx(two), "secrets.set", name="TOKEN", value="kept")
    await reaper.start()
    try:
        assert await informer.wait_synced(10)
        await world.store.delete("acme", "one")  # no finalizers: gone at once
        async with asyncio.timeout(10):
            while one.metadata.uid in await world.secrets.known():
                await asyncio.sleep(0.02)
        assert set(await world.secrets.known()) == {two.metadata.uid}
        assert (await call(world.ctx(two), "secrets.get", name="TOKEN"))["value"] == "kept"
    finally:
        await reaper.stop()
        await informer.stop()


async def test_the_sweep_removes_what_a_deletion_left(world: World) -> None:
    """A deletion while no reaper ran (the server was down): the sweep at start."""
    one, two = await world.sandbox("one"), await world.sandbox("two")
    await call(world.ctx(one), "secrets.set", name="TOKEN", value=VALUE)
    await call(world.ctx(two), "secrets.set", name="TOKEN", value="kept")
    await world.store.delete("acme", "one")
    assert await SandboxReaper(world.store, [world.secrets]).sweep() == 1
    assert set(await world.secrets.known()) == {two.metadata.uid}


def test_a_key_is_needed(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, store="memory")
    with pytest.raises(Invalid, match="SANDBOX_COOKIE_SECRET"):
        build_sandbox_secrets(settings, cookie_secret="")
    assert isinstance(build_sandbox_secrets(settings, cookie_secret="x"), SandboxSecrets)


async def test_the_sweep_spares_data_newer_than_its_list(world: World) -> None:
    """A secret set after the sweep listed the sandboxes (its sandbox too new to be in
    the list) is not taken for a leftover."""
    later = SandboxSecrets(MemorySecretBackend(), key=b"k" * 32, clock=lambda: time.time() + 60)
    await later.set("uid-born-after-the-list", "TOKEN", "v")
    await later.set("uid-gone", "TOKEN", "v")
    assert await SandboxReaper(world.store, [later]).sweep() == 0
    assert set(await later.known()) == {"uid-born-after-the-list", "uid-gone"}


async def test_without_an_informer_the_periodic_sweep_removes_them(world: World) -> None:
    reaper = SandboxReaper(world.store, [world.secrets], sweep_seconds=0.05)
    one = await world.sandbox("one")
    await call(world.ctx(one), "secrets.set", name="TOKEN", value=VALUE)
    await reaper.start()
    try:
        await world.store.delete("acme", "one")
        async with asyncio.timeout(10):
            while await world.secrets.known():
                await asyncio.sleep(0.02)
    finally:
        await reaper.stop()
