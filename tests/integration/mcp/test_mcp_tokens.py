"""The sandboxes' MCP tokens (services.mcp_tokens) over a real SQLite store and the
informer: bound to one live sandbox, never a user credential, revoked with the sandbox."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from openova_sandbox.auth.authenticator import build_authenticator
from openova_sandbox.auth.issuer import EmbeddedIssuer
from openova_sandbox.config import Settings
from openova_sandbox.domain.errors import Invalid, Unauthenticated
from openova_sandbox.domain.model import (
    ANNOTATION_SUB,
    FINALIZER,
    ObjectMeta,
    Sandbox,
    SandboxSpec,
)
from openova_sandbox.services.mcp_tokens import (
    MCP_AUDIENCE,
    InformerLookup,
    McpTokens,
    capabilities_of,
)
from openova_sandbox.services.resources import SandboxInformer
from openova_sandbox.store.sql import SqlStore

pytestmark = pytest.mark.asyncio


def box(name: str, *, finalizer: bool = False, capabilities: list[str] | None = None) -> Sandbox:
    extra = {"capabilities": capabilities} if capabilities is not None else {}
    return Sandbox(
        metadata=ObjectMeta(
            name=name,
            namespace="acme",
            annotations={ANNOTATION_SUB: "sub-ada"},
            finalizers=(FINALIZER,) if finalizer else (),
        ),
        spec=SandboxSpec(owner_email="ada@acme.com", org_slug="acme", extra=extra),
    )


class World:
    def __init__(self, store: SqlStore, informer: SandboxInformer, issuer: EmbeddedIssuer) -> None:
        self.store = store
        self.informer = informer
        self.issuer = issuer
        self.tokens = McpTokens(issuer, InformerLookup(store, informer))


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    await store.start()
    informer = SandboxInformer(store)
    await informer.start()
    assert await informer.wait_synced(10)
    try:
        yield World(store, informer, EmbeddedIssuer.generate())
    finally:
        await informer.stop()
        await store.close()


async def test_a_token_names_its_sandbox_owner_org_and_capabilities(world: World) -> None:
    stored = await world.store.create(box("helper", capabilities=["session.*", "usage.get"]))
    token = world.tokens.issue(stored)
    claims = await world.tokens.verify(token)
    assert (claims.namespace, claims.sandbox, claims.uid) == ("acme", "helper", stored.metadata.uid)
    assert (claims.owner_sub, claims.owner_email, claims.org) == ("sub-ada", "ada@acme.com", "acme")
    assert claims.capabilities == ("session.*", "usage.get")
    assert claims.expires_at is not None
    assert capabilities_of(box("x", capabilities=["a", 3, " ", "b"])) == ("a", "b")  # type: ignore[list-item]


async def test_an_unstored_sandbox_gets_no_token(world: World) -> None:
    with pytest.raises(Invalid, match="no uid"):
        world.tokens.issue(box("never-stored"))


async def test_a_user_token_is_not_an_mcp_token_and_an_mcp_token_is_not_a_user_token(
    world: World,
) -> None:
    stored = await world.store.create(box("helper"))
    user = world.issuer.mint(sub="sub-ada", email="ada@acme.com", org="acme")
    with pytest.raises(Unauthenticated, match="not an MCP token"):
        await world.tokens.verify(user)
    # a user token with the MCP audience is still not one: no purpose
    aimed = world.issuer.mint(
        sub="sub-ada", email="ada@acme.com", org="acme", audience=MCP_AUDIENCE
    )
    with pytest.raises(Unauthenticated, match="purpose"):
        await world.tokens.verify(aimed)
    # the API's authenticator (same issuer) refuses the MCP token
    authenticator = build_authenticator(Settings(), issuer=world.issuer)
    mcp = world.tokens.issue(stored)
    with pytest.raises(Unauthenticated, match="only for the MCP server"):
        await authenticator.authenticate(mcp)
    assert (await authenticator.authenticate(user)).sub == "sub-ada"


async def test_another_issuers_token_and_garbage_are_refused(world: World) -> None:
    stored = await world.store.create(box("helper"))
    other = McpTokens(EmbeddedIssuer.generate(), None)
    with pytest.raises(Unauthenticated, match="not an MCP token of this server"):
        await world.tokens.verify(other.issue(stored))
    for junk in ("", "not-a-jwt", "a.b.c"):
        with pytest.raises(Unauthenticated):
            await world.tokens.verify(junk)


async def test_expired_tokens_are_refused(world: World) -> None:
    stored = await world.store.create(box("helper"))
    short = McpTokens(world.issuer, None, ttl=timedelta(seconds=1))
    token = world.issuer.mint(
        sub="sub-ada",
        email="ada@acme.com",
        org="acme",
        ttl=timedelta(seconds=1),
        audience=MCP_AUDIENCE,
        now=datetime(2020, 1, 1, tzinfo=UTC),
        extra={"purpose": "mcp"},
    )
    with pytest.raises(Unauthenticated, match="expired"):
        await short.verify(token)
    assert (await short.verify(short.issue(stored))).sandbox == "helper"


async def test_deleting_the_sandbox_revokes_its_token(world: World) -> None:
    # a finalizer holds the object while it is being deleted: refused already then
    held = await world.store.create(box("held", finalizer=True))
    held_token = world.tokens.issue(held)
    await world.tokens.verify(held_token)
    marked = await world.store.delete("acme", "held")
    assert marked is not None and marked.deleting
    assert await world.informer.wait_for_version(int(marked.metadata.resource_version), 5)
    with pytest.raises(Unauthenticated, match="being deleted"):
        await world.tokens.verify(held_token)

    # gone, and then re-created under the same name: a new uid, the old token stays dead
    stored = await world.store.create(box("helper"))
    token = world.tokens.issue(stored)
    await world.tokens.verify(token)
    assert await world.store.delete("acme", "helper") is None
    # the informer's copy follows the store's watch: the deletion is in it a moment
    # after the write (the store's COMMIT runs off the event loop since issue 11)
    async with asyncio.timeout(5):
        while any(s.name == "helper" for s in world.informer.in_namespace("acme")):
            await asyncio.sleep(0.005)
    with pytest.raises(Unauthenticated, match="no longer exists"):
        await world.tokens.verify(token)
    again = await world.store.create(box("helper"))
    assert again.metadata.uid != stored.metadata.uid
    with pytest.raises(Unauthenticated, match="no longer exists"):
        await world.tokens.verify(token)
    assert (await world.tokens.verify(world.tokens.issue(again))).uid == again.metadata.uid


async def test_the_agents_url_is_learnt_when_the_server_listens(world: World) -> None:
    stored = await world.store.create(box("helper"))
    assert world.tokens.access(stored) is None
    world.tokens.listening("0.0.0.0", 8123)
    access = world.tokens.access(stored)
    assert access is not None and access.url == "http://127.0.0.1:8123/mcp"
    assert access.token not in repr(access)
    assert (await world.tokens.verify(access.token)).sandbox == "helper"
