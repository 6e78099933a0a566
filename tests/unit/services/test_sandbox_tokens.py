"""Per-sandbox gateway credentials: what a sandbox's terminals get for models, and the
life of its token (issued once per server process, revoked with the sandbox).

The environment is checked as the registry would spawn it (``dry_run``), with the
server's own provider keys set both in its settings and in its process environment:
they must never appear.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from openova_sandbox.config import load_settings
from openova_sandbox.domain.catalogue import load_catalogue
from openova_sandbox.domain.model import ObjectMeta, Quota, Sandbox, SandboxSpec
from openova_sandbox.domain.model_access import (
    PLACEHOLDER_TOKEN,
    ModelAccess,
    agent_model_env,
    loopback_url,
)
from openova_sandbox.events.bus import InProcessBus
from openova_sandbox.services.gateway_ledger import GatewayIdentity, MemoryLedger
from openova_sandbox.services.sandbox_tokens import SandboxTokens, identity_of
from openova_sandbox.services.sessions import SessionsPolicy, SessionsService
from openova_sandbox.services.terminals import TerminalHostAdapter, TerminalsService
from openova_sandbox.store.memory import MemoryStore
from openova_sandbox.terminal.registry import SessionRequest, TerminalRegistry

PROVIDER_KEY = "sk-provider-SECRET-0123456789"
ANTHROPIC_KEY = "sk-ant-provider-SECRET-0123456789"
GATEWAY = "http://127.0.0.1:8080"


def box(name: str = "box", sub: str = "sub-dev") -> Sandbox:
    return Sandbox(
        metadata=ObjectMeta(name=name, namespace="acme", annotations={"openova.io/owner-sub": sub}),
        spec=SandboxSpec(owner_email="dev@acme.com", org_slug="acme", agent_catalogue=("tool",)),
    )


class CountingLedger(MemoryLedger):
    def __init__(self) -> None:
        super().__init__()
        self.issued = 0

    async def issue_token(self, identity: GatewayIdentity) -> str:
        self.issued += 1
        await asyncio.sleep(0.01)  # a real database answers later: let others race
        return await super().issue_token(identity)


# --- the variables --------------------------------------------------------------------


def test_each_agent_reads_the_gateway_under_its_own_names() -> None:
    access = ModelAccess(gateway_url=GATEWAY + "/", token="tok")
    assert agent_model_env(access, "coder") == {
        "OPENAI_BASE_URL": f"{GATEWAY}/llm/openai/v1",
        "OPENAI_API_KEY": "tok",
        "ANTHROPIC_BASE_URL": f"{GATEWAY}/llm/anthropic",
        "ANTHROPIC_AUTH_TOKEN": "tok",
        "LLM_GATEWAY_URL": f"{GATEWAY}/llm/anthropic",
        "SANDBOX_AGENT_MODEL": "coder",
    }
    # only the protocols the gateway has a provider for
    openai_only = ModelAccess(gateway_url=GATEWAY, token="tok", anthropic=False).env()
    assert set(openai_only) == {"OPENAI_BASE_URL", "OPENAI_API_KEY"}
    anthropic_only = ModelAccess(gateway_url=GATEWAY, token="tok", openai=False).env()
    assert set(anthropic_only) == {"ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN", "LLM_GATEWAY_URL"}
    # no gateway: nothing but the model name; no token: the URLs only
    assert agent_model_env(None, "coder") == {"SANDBOX_AGENT_MODEL": "coder"}
    assert "OPENAI_API_KEY" not in ModelAccess(gateway_url=GATEWAY).env()


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8080"),
        ("0.0.0.0", "http://127.0.0.1:8080"),
        ("", "http://127.0.0.1:8080"),
        ("::", "http://[::1]:8080"),
        ("::1", "http://[::1]:8080"),
        ("10.1.2.3", "http://10.1.2.3:8080"),
    ],
)
def test_agents_reach_the_server_on_its_loopback_address(host: str, url: str) -> None:
    assert loopback_url(host, 8080) == url


# --- the token's life -----------------------------------------------------------------


async def test_a_sandbox_gets_one_token_however_many_terminals_start_at_once() -> None:
    ledger = CountingLedger()
    tokens = SandboxTokens(ledger, gateway_url=GATEWAY)
    sandbox = box()
    assert tokens.access(sandbox).token == ""
    await asyncio.gather(*(tokens.ensure(sandbox) for _ in range(5)))
    await tokens.ensure(sandbox)
    assert ledger.issued == 1
    token = tokens.access(sandbox).token
    assert token and token != PLACEHOLDER_TOKEN
    assert await ledger.authenticate(token) == GatewayIdentity(
        "box", "acme", "sub-dev", "dev@acme.com", "acme"
    )
    assert identity_of(sandbox) == await ledger.authenticate(token)
    # another sandbox gets its own
    await tokens.ensure(box("other"))
    assert tokens.access(box("other")).token not in ("", token)


async def test_revoked_with_the_sandbox_and_a_new_one_for_a_new_sandbox() -> None:
    ledger = MemoryLedger()
    tokens = SandboxTokens(ledger, gateway_url=GATEWAY)
    await tokens.ensure(box())
    first = tokens.access(box()).token
    await tokens.revoke("acme", "box")
    assert await ledger.authenticate(first) is None
    assert tokens.access(box()).token == ""
    await tokens.ensure(box())  # created again under the same name
    second = tokens.access(box()).token
    assert second != first and await ledger.authenticate(second) is not None


async def test_a_restart_issues_a_new_token_and_the_old_one_stops_working() -> None:
    ledger = MemoryLedger()  # the database outlives the process
    before = SandboxTokens(ledger, gateway_url=GATEWAY)
    await before.ensure(box())
    old = before.access(box()).token
    after = SandboxTokens(ledger, gateway_url=GATEWAY)
    await after.ensure(box())
    assert after.access(box()).token != old
    assert await ledger.authenticate(old) is None


async def test_stopping_the_server_revokes_what_it_issued() -> None:
    ledger = MemoryLedger()
    tokens = SandboxTokens(ledger, gateway_url=GATEWAY)
    await tokens.ensure(box("one"))
    await tokens.ensure(box("two"))
    issued = [tokens.access(box(n)).token for n in ("one", "two")]
    await tokens.stop()
    assert [await ledger.authenticate(t) for t in issued] == [None, None]


def test_the_url_is_learnt_when_the_server_listens() -> None:
    tokens = SandboxTokens(MemoryLedger())
    assert tokens.access(box()).env() == {}  # not listening yet: nothing to give
    assert tokens.preview().env()["OPENAI_API_KEY"] == PLACEHOLDER_TOKEN
    tokens.listening("0.0.0.0", 43210)
    assert tokens.access(box()).env()["OPENAI_BASE_URL"] == "http://127.0.0.1:43210/llm/openai/v1"


# --- through the terminals service, as spawned -------------------------------------------


def terminals(tmp_path: Path, tokens: SandboxTokens | None, credentials: object = None):
    agents = tmp_path / "agents.json"
    rows = [
        {"slug": "tool", "binary": "cat", "requiredEnv": ["OPENAI_BASE_URL", "OPENAI_API_KEY"]},
        {
            "slug": "claude-code",
            "binary": "cat",
            "requiredEnv": ["LLM_GATEWAY_URL|ANTHROPIC_API_KEY|CLAUDE_CODE_OAUTH_TOKEN"],
            "env": {"ANTHROPIC_BASE_URL": "${LLM_GATEWAY_URL}"},
        },
    ]
    agents.write_text(json.dumps(rows))
    settings = load_settings(
        data_dir=tmp_path,
        store="memory",
        agents_path=str(agents),
        openai_base_url="http://provider.example/v1",
        openai_api_key=PROVIDER_KEY,
        anthropic_api_key=ANTHROPIC_KEY,
        llm_gateway_url="http://old-gateway.example",
        agent_model="coder",
    )
    catalogue = load_catalogue(agents)
    sessions = SessionsService(
        store=MemoryStore(),
        catalogue=catalogue,
        policy=SessionsPolicy(default_namespace="", quota=Quota()),
        bus=InProcessBus(),
    )
    registry = TerminalRegistry(catalogue=catalogue, base_env={"PATH": "/usr/bin:/bin"})
    return TerminalsService(
        registry=registry,
        sessions=sessions,
        settings=settings,
        tokens=tokens,
        credentials=credentials,  # type: ignore[arg-type]
    )


def spawned_env(svc: TerminalsService, sandbox: Sandbox, agent: str) -> dict[str, str]:
    request = svc.spawn_request(sandbox, agent)
    return dict(svc.registry.dry_run(svc._context(sandbox), request).env)


def no_provider_key(env: dict[str, str]) -> None:
    for name, value in env.items():
        assert PROVIDER_KEY not in value and ANTHROPIC_KEY not in value, name
        assert "old-gateway" not in value, name
    assert "ANTHROPIC_API_KEY" not in env


async def test_terminals_get_the_sandbox_token_never_the_servers_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the server's own environment holds provider keys too: the registry never passes it
    monkeypatch.setenv("OPENAI_API_KEY", PROVIDER_KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    ledger = MemoryLedger()
    tokens = SandboxTokens(ledger, gateway_url=GATEWAY)
    svc = terminals(tmp_path, tokens)
    sandbox = box()
    await tokens.ensure(sandbox)
    token = tokens.access(sandbox).token
    for agent in ("tool", "claude-code"):
        env = spawned_env(svc, sandbox, agent)
        no_provider_key(env)
        assert env["OPENAI_BASE_URL"] == f"{GATEWAY}/llm/openai/v1"
        assert env["OPENAI_API_KEY"] == token
        assert env["ANTHROPIC_BASE_URL"] == f"{GATEWAY}/llm/anthropic"
        assert env["ANTHROPIC_AUTH_TOKEN"] == token
        assert env["SANDBOX_AGENT_MODEL"] == "coder"
    # a plain command (an extra terminal's shell) too
    shell = svc.registry.dry_run(svc._context(sandbox), SessionRequest(command=("sh",)))
    assert shell.env["OPENAI_API_KEY"] == token
    no_provider_key(dict(shell.env))


def test_without_a_gateway_terminals_get_no_model_access_at_all(tmp_path: Path) -> None:
    svc = terminals(tmp_path, None)
    env = dict(svc.registry.dry_run(svc._context(box()), SessionRequest(command=("sh",))).env)
    no_provider_key(env)
    assert "OPENAI_BASE_URL" not in env and "OPENAI_API_KEY" not in env
    assert svc.agent_problem(box()) is not None  # the tool needs OPENAI_* it will not get


def test_before_its_token_is_issued_the_agent_counts_as_able_to_start(tmp_path: Path) -> None:
    tokens = SandboxTokens(MemoryLedger())  # not even listening yet
    svc = terminals(tmp_path, tokens)
    assert svc.agent_problem(box()) is None


class Connected:
    async def refresh_if_needed(self, sub: str) -> None:
        return None

    def credentials_for(self, sub: str) -> dict[str, str]:
        return {"CLAUDE_CODE_OAUTH_TOKEN": "subscription-token"} if sub == "alice" else {}

    def connected(self, sub: str) -> bool:
        return sub == "alice"


async def test_a_claude_subscription_session_talks_to_anthropic_not_the_gateway(
    tmp_path: Path,
) -> None:
    tokens = SandboxTokens(MemoryLedger(), gateway_url=GATEWAY)
    svc = terminals(tmp_path, tokens, Connected())
    mine = box(sub="alice")
    await tokens.ensure(mine)
    env = spawned_env(svc, mine, "claude-code")
    assert env["CLAUDE_CODE_OAUTH_TOKEN"] == "subscription-token"
    # unset, not empty: claude would prefer a gateway token to the subscription, and
    # would send the subscription's token to a gateway base URL
    for name in ("ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL", "LLM_GATEWAY_URL"):
        assert name not in env
    no_provider_key(env)
    # the sandbox's other terminals keep the gateway
    assert spawned_env(svc, mine, "tool")["OPENAI_API_KEY"] == tokens.access(mine).token
    # someone who has not connected gets the gateway in claude-code too
    theirs = box("theirs", sub="bob")
    await tokens.ensure(theirs)
    assert spawned_env(svc, theirs, "claude-code")["ANTHROPIC_AUTH_TOKEN"]


async def test_deleting_the_sandbox_revokes_its_token(tmp_path: Path) -> None:
    ledger = MemoryLedger()
    tokens = SandboxTokens(ledger, gateway_url=GATEWAY)
    svc = terminals(tmp_path, tokens)
    (tmp_path / "workspaces" / "acme" / "box").mkdir(parents=True)
    sandbox = box()
    host = TerminalHostAdapter(svc.registry, tokens=tokens)
    try:
        await svc.open_extra(sandbox, "tool", token="")  # issues the token, then spawns
        token = tokens.access(sandbox).token
        assert await ledger.authenticate(token) is not None
        await host.stop_sandbox("acme", "box")  # the controller's delete step
        assert await ledger.authenticate(token) is None
        assert host.sessions("acme", "box") == 0
    finally:
        await svc.registry.close()
