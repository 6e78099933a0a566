"""``workspace.*`` and ``secrets.*`` through the official MCP client against a real
embedded server (``/mcp``, real MCP tokens, a sandbox made Ready by the controller): the
tools listed under the built-in plan, search following edits and deletions in the
workspace, a path that leaves it refused, secret values only with ``secrets.read``, a
second sandbox seeing none of the first's, schema errors named, and the index and
secrets removed when the sandbox is deleted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from openova_sandbox.domain.audit import AuditQuery
from support.mcp_world import SESSIONS, McpWorld, Person, mcp_world

pytestmark = pytest.mark.asyncio

ADA = Person("sub-ada", "ada@acme.com", "acme")
VALUE = "sk-live-do-not-print-me"


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[McpWorld]:
    # the built-in plans; the default, sandbox-pro, has workspace.* and secrets.*
    async with mcp_world(tmp_path, isolation="none") as made:
        yield made


def ok(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    data: dict[str, Any] = result.structured_content
    return data


def failed(result: Any, code: str) -> str:
    assert result.is_error, result.structured_content
    assert result.structured_content["error"] == code, result.structured_content
    detail: str = result.structured_content["detail"]
    return detail


async def test_workspace_and_secrets_through_the_mcp_client(world: McpWorld) -> None:
    sandbox = await world.create(ADA)
    await world.ready(ADA, sandbox.name)
    other = await world.create(ADA, agent="aider")
    await world.ready(ADA, other.name)
    ws = world.deps.workspace_index.workspace(sandbox.namespace, sandbox.name)
    (ws / "notes.md").write_text("The launch code word is marmalade.\n")

    async with world.client(world.mcp_token(sandbox)) as client:
        listed = {t.title for t in (await client.list_tools()).tools}
        assert {
            "workspace.search",
            "workspace.read",
            "secrets.list",
            "secrets.get",
            "secrets.set",
        } <= listed

        hit = ok(await client.call_tool("workspace.search", {"query": "marmalade"}))
        assert [(h["path"], h["lines"][0]["line"]) for h in hit["hits"]] == [("notes.md", 1)]
        (ws / "src").mkdir()
        (ws / "src" / "jam.py").write_text("def spread():\n    return 'quince'\n")
        added = ok(await client.call_tool("workspace.search", {"query": "quince"}))
        assert [h["path"] for h in added["hits"]] == ["src/jam.py"]
        (ws / "notes.md").unlink()
        assert ok(await client.call_tool("workspace.search", {"query": "marmalade"}))["hits"] == []

        read = ok(await client.call_tool("workspace.read", {"path": "src/jam.py", "line": 2}))
        assert read["content"] == "    return 'quince'"
        failed(
            await client.call_tool("workspace.read", {"path": "../" + other.name}),
            "path-outside-workspace",
        )
        failed(
            await client.call_tool("workspace.search", {"query": "x", "limit": 0}),
            "invalid-arguments",
        )

        ok(await client.call_tool("secrets.set", {"name": "STRIPE_KEY", "value": VALUE}))
        assert ok(await client.call_tool("secrets.get", {"name": "STRIPE_KEY"}))["value"] == VALUE
        failed(
            await client.call_tool("secrets.set", {"name": "1bad", "value": "v"}),
            "invalid-arguments",
        )

    # each value set or read is in the org's audit log, by name only
    records = await world.deps.audit.query(AuditQuery(org="acme", action="secret.*"))
    assert sorted((r.action, r.target, r.outcome) for r in records) == [
        ("secret.read", f"sandbox/{sandbox.name}/secret/STRIPE_KEY", "success"),
        ("secret.set", f"sandbox/{sandbox.name}/secret/STRIPE_KEY", "success"),
    ]
    assert all(r.actor_sub == ADA.sub for r in records) and VALUE not in repr(records)

    # the other sandbox sees none of them
    async with world.client(world.mcp_token(other)) as client:
        assert ok(await client.call_tool("secrets.list", {}))["secrets"] == []
        failed(await client.call_tool("secrets.get", {"name": "STRIPE_KEY"}), "secret-not-found")

    # the sandbox's capabilities without secrets.read: metadata, and why not the value
    stored = await world.set_capabilities(sandbox, ["secrets.list", "secrets.get"])
    async with world.client(world.mcp_token(stored)) as client:
        got = ok(await client.call_tool("secrets.get", {"name": "STRIPE_KEY"}))
        assert got["value"] is None and "secrets.read" in got["withheld"]
        assert VALUE not in str(got)

    # deleted with the sandbox: its index and its secrets
    index, secrets = world.deps.workspace_index, world.deps.sandbox_secrets
    assert stored.metadata.uid in await index.known()
    assert stored.metadata.uid in await secrets.known()
    deleted = await world.http.delete(f"{SESSIONS}/{sandbox.name}", headers=world.auth(ADA))
    assert deleted.status_code in (200, 202, 204), deleted.text
    await world.gone(ADA, sandbox.name)
    async with asyncio.timeout(15):
        while stored.metadata.uid in await index.known() or stored.metadata.uid in (
            await secrets.known()
        ):
            await asyncio.sleep(0.05)
