"""Which terminal gets a connected owner's Claude subscription."""

from __future__ import annotations

import asyncio
import json

from openova_sandbox.config import load_settings
from openova_sandbox.domain.catalogue import load_catalogue
from openova_sandbox.domain.model import ObjectMeta, Quota, Sandbox, SandboxSpec
from openova_sandbox.events.bus import InProcessBus
from openova_sandbox.services.sessions import SessionsPolicy, SessionsService
from openova_sandbox.services.terminals import TerminalsService, registry_key
from openova_sandbox.store.memory import MemoryStore
from openova_sandbox.terminal.registry import TerminalRegistry


class Connected:
    """A credential source with one connected user (the BYOS vault's role)."""

    def __init__(self) -> None:
        self.refreshed: list[str] = []

    async def refresh_if_needed(self, sub: str) -> None:
        self.refreshed.append(sub)

    def credentials_for(self, sub: str) -> dict[str, str]:
        return {"CLAUDE_CODE_OAUTH_TOKEN": "tok-123"} if sub == "alice" else {}


def service(tmp_path, catalogue_path=None) -> TerminalsService:
    settings = load_settings(data_dir=tmp_path, store="memory", openai_api_key="sk-1")
    catalogue = load_catalogue(catalogue_path)
    sessions = SessionsService(
        store=MemoryStore(),
        catalogue=catalogue,
        policy=SessionsPolicy(default_namespace="", quota=Quota()),
        bus=InProcessBus(),
    )
    return TerminalsService(
        registry=TerminalRegistry(catalogue=catalogue),
        sessions=sessions,
        settings=settings,
        credentials=Connected(),
    )


def sandbox(owner_sub: str) -> Sandbox:
    return Sandbox(
        metadata=ObjectMeta(
            name="box", namespace="acme", annotations={"openova.io/owner-sub": owner_sub}
        ),
        spec=SandboxSpec(
            owner_email="a@acme.com", org_slug="acme", agent_catalogue=("claude-code",)
        ),
    )


def test_subscription_goes_to_claude_code_only(tmp_path):
    svc = service(tmp_path)
    claude = svc.spawn_request(sandbox("alice"), "claude-code")
    # and unsets what claude would prefer to it, or send it to (the gateway)
    assert claude.env == {
        "CLAUDE_CODE_OAUTH_TOKEN": "tok-123",
        "ANTHROPIC_API_KEY": "",
        "ANTHROPIC_AUTH_TOKEN": "",
        "ANTHROPIC_BASE_URL": "",
        "LLM_GATEWAY_URL": "",
    }
    assert svc.spawn_request(sandbox("alice"), "aider").env == {}
    assert svc.spawn_request(sandbox("bob"), "claude-code").env == {}


def test_terminals_are_keyed_by_namespace_and_name():
    assert registry_key("acme", "box") != registry_key("evil", "box")


def test_a_claude_code_spawn_refreshes_the_owners_token_first(tmp_path):
    # claude-code played by cat, so a real spawn happens without the real CLI
    agents = tmp_path / "agents.json"
    agents.write_text(json.dumps([{"slug": "claude-code", "binary": "cat", "requiredEnv": []}]))
    svc = service(tmp_path, agents)
    source = svc._credentials
    (tmp_path / "workspaces" / "acme" / "box").mkdir(parents=True)

    async def run() -> None:
        try:
            await svc.open_extra(sandbox("alice"), "claude-code", token="")
            await svc.open_extra(sandbox("alice"), "sovereign-shell", token="")
        finally:
            await svc.registry.close()

    asyncio.run(run())
    # refreshed once: for the claude-code terminal, not for the shell
    assert source.refreshed == ["alice"]
