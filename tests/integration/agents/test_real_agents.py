"""Real agent CLIs, installed with ``sandbox agents install``, complete a turn in a sandbox.

Each agent runs as the sandbox's primary terminal (a real PTY started by the terminals
service over the registry) in the sandbox's own HOME, and reaches the fake
OpenAI-compatible model server (support/fake_llm.py) through the model gateway (the
gateway app under uvicorn) with the sandbox's own gateway token, as in embedded mode. The
test types a prompt like a user, reads the answer off the screen rendered with pyte, and
then checks what must not have happened:

- the provider's key is nowhere in the agent's processes' environments, its HOME or its
  workspace (only the gateway sent it, upstream);

- nothing was written to the server's HOME, and the agent's install is untouched;
- the agent tried no outside call: every process gets an HTTP(S) proxy (support/
  trap_proxy.py) that records and refuses anything but the loopback model server, so an
  update check, a telemetry upload or a model-list download shows up there. That this
  check can fail is shown too: qwen-code started from a row without its settings is
  caught checking npm for updates at once.

Restarting the agent in the same HOME resumes the conversation (the earlier answer is
on the screen again).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from openova_sandbox.agents.paths import agent_search_path
from openova_sandbox.api.gateway_app import create_gateway_app
from openova_sandbox.config import load_settings
from openova_sandbox.controller.local import home_path, workspace_path
from openova_sandbox.domain.catalogue import load_catalogue
from openova_sandbox.domain.model import ObjectMeta, Quota, Sandbox, SandboxSpec
from openova_sandbox.events.bus import InProcessBus
from openova_sandbox.gateway.config import zero_config
from openova_sandbox.services.gateway import GatewayService
from openova_sandbox.services.gateway_ledger import MemoryLedger
from openova_sandbox.services.sandbox_tokens import SandboxTokens
from openova_sandbox.services.sessions import SessionsPolicy, SessionsService
from openova_sandbox.services.terminals import TerminalsService
from openova_sandbox.store.memory import MemoryStore
from openova_sandbox.terminal.registry import TerminalRegistry
from openova_sandbox.testing.server import serve_in_thread
from support.agent_screen import AgentScreen
from support.agents_cache import AgentsCache
from support.fake_llm import FakeLLM
from support.files import holding
from support.processes import descendants, environ
from support.trap_proxy import TrapProxy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

MODEL = "fake-coder"


@dataclass(frozen=True)
class Agent:
    slug: str
    ready: str  # on the screen once the agent waits for a prompt
    resumed: str  # on the screen once it waits again, the conversation continued
    files: tuple[str, ...]  # seeded into its HOME
    shows_history: bool = True  # a resumed conversation is shown (aider only says so)


AGENTS = {
    "qwen-code": Agent(
        "qwen-code",
        "Type your message",
        "Type your message",
        (".qwen/settings.json", ".openova-sandbox/qwen-code/system-settings.json"),
    ),
    "aider": Agent(
        "aider",
        "Repo-map:",  # the last line of its banner, just before its prompt
        "Restored previous conversation history",
        (".aider.conf.yml", ".aider.model.metadata.json"),
        shows_history=False,
    ),
    "opencode": Agent(
        "opencode",
        "Ask anything",
        "Sandbox model",  # under the input box (the placeholder is for a new chat)
        (".config/opencode/opencode.json", ".config/opencode/package-lock.json"),
    ),
}


@pytest.fixture
def fake_llm() -> Iterator[FakeLLM]:
    with FakeLLM() as llm:
        yield llm


@pytest.fixture
def trap() -> Iterator[TrapProxy]:
    with TrapProxy() as proxy:
        yield proxy


@pytest.fixture
def stack() -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as stack:
        yield stack


@dataclass
class Setup:
    service: TerminalsService
    sandbox: Sandbox
    data: Path
    server_home: Path
    key: str  # the provider's key: the gateway's alone
    tokens: SandboxTokens

    @property
    def home(self) -> Path:
        return home_path(self.data, self.sandbox.namespace, self.sandbox.name)


def make_setup(
    tmp_path: Path,
    data: Path,
    agent: str,
    llm: FakeLLM,
    trap: TrapProxy,
    stack: contextlib.ExitStack,
    override: list[dict[str, Any]] | None = None,
) -> Setup:
    agents_file = tmp_path / "agents.json"
    if override is not None:
        agents_file.write_text(json.dumps(override))
    # the model gateway, its provider the fake model server with the operator's key
    key = "sk-provider-SECRET-" + secrets.token_hex(6)
    ledger = MemoryLedger()
    gateway = GatewayService(zero_config(openai_base_url=llm.base_url, openai_api_key=key), ledger)
    app = create_gateway_app(gateway, registry=CollectorRegistry())
    server = stack.enter_context(serve_in_thread(app))
    tokens = SandboxTokens(ledger, gateway_url=server.url, anthropic=False)
    settings = load_settings(
        data_dir=data, store="memory", agents_path=str(agents_file), agent_model=MODEL
    )
    catalogue = load_catalogue(agents_file)
    server_home = tmp_path / "server-home"
    server_home.mkdir()
    path = agent_search_path(data)
    registry = TerminalRegistry(
        catalogue=catalogue,
        path=path,
        # the server's own environment, as the registry would inherit it, plus the trap
        base_env={"PATH": path, "HOME": str(server_home), "LANG": "C.UTF-8", **trap.env()},
    )
    sessions = SessionsService(
        store=MemoryStore(),
        catalogue=catalogue,
        policy=SessionsPolicy(default_namespace="", quota=Quota()),
        bus=InProcessBus(),
    )
    service = TerminalsService(
        registry=registry, sessions=sessions, settings=settings, tokens=tokens
    )
    sandbox = Sandbox(
        metadata=ObjectMeta(name="box", namespace="acme"),
        spec=SandboxSpec(owner_email="dev@acme.com", org_slug="acme", agent_catalogue=(agent,)),
    )
    workspace_path(data, "acme", "box").mkdir(parents=True)
    return Setup(service, sandbox, data, server_home, key, tokens)


def tree(root: Path) -> dict[str, int]:
    """Every file under ``root`` with its modification time (ns); Python's bytecode
    caches, which an interpreter may write as it imports, are left out."""
    out = {}
    for folder, _, names in os.walk(root):
        if "__pycache__" in Path(folder).parts:
            continue
        for name in names:
            path = os.path.join(folder, name)
            try:
                out[os.path.relpath(path, root)] = os.lstat(path).st_mtime_ns
            except OSError:
                continue
    return out


async def saved_in(folders: list[Path], text: str, timeout: float = 30.0) -> None:
    """Wait until a file in ``folders`` holds ``text`` (the agent saved its history:
    in its HOME, or aider in the workspace)."""
    needle = text.encode()
    deadline = time.monotonic() + timeout
    while True:
        for root in folders:
            for folder, _, names in os.walk(root):
                for name in names:
                    try:
                        if needle in Path(folder, name).read_bytes():
                            return
                    except OSError:
                        continue
        assert time.monotonic() < deadline, f"{text!r} was not saved in {folders}"
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("slug", sorted(AGENTS))
async def test_a_real_agent_completes_a_turn_in_its_own_home(
    tmp_path: Path,
    slug: str,
    agents_cache: AgentsCache,
    installed_agents_dir: Any,
    fake_llm: FakeLLM,
    trap: TrapProxy,
    stack: contextlib.ExitStack,
) -> None:
    agent = AGENTS[slug]
    data = installed_agents_dir(tmp_path / "data", slug, share=True)
    agents_cache.settle()  # no background install changes the cache during the test
    installs = tree(data / "agents")
    setup = make_setup(tmp_path, data, slug, fake_llm, trap, stack)
    service, box = setup.service, setup.sandbox
    word = secrets.token_hex(4)
    screen = None
    try:
        await setup.tokens.ensure(box)  # what attaching does before the first start
        token = setup.tokens.access(box).token
        session = service.primary(box)
        screen = AgentScreen(session).follow()
        await screen.wait_for(agent.ready)
        await screen.type_line(f"say ping-{word}")
        await screen.wait_for(f"PONG-{word}")

        # the provider got its key from the gateway; the agent only ever had the token
        asked = fake_llm.wait_for(word)
        assert asked.authorization == f"Bearer {setup.key}"
        assert asked.body["model"] == MODEL
        assert not [r for r in fake_llm.requests if token in json.dumps(r.headers)]
        tree_env = [environ(pid) for pid in descendants(session.pid)]
        assert tree_env[0]["OPENAI_API_KEY"] == token
        assert tree_env[0]["OPENAI_BASE_URL"].endswith("/llm/openai/v1")
        assert not [e for e in tree_env if setup.key in json.dumps(e)]
        for relative in agent.files:
            seeded = setup.home / relative
            assert seeded.is_file(), relative
            assert stat.S_IMODE(seeded.stat().st_mode) == 0o600, relative
        assert stat.S_IMODE(setup.home.stat().st_mode) == 0o700

        # the agent ends (the server restarts, say) once it saved the turn, and is started
        # in the same HOME: it continues the conversation
        workspace = workspace_path(setup.data, "acme", "box")
        await saved_in([setup.home, workspace], f"PONG-{word}")
        await screen.close()
        await service.registry.delete("acme/box", "box")
        session = service.primary(box)
        assert session.id == "box"
        screen = AgentScreen(session).follow()
        if agent.shows_history:
            # the resumed conversation is on screen: the earlier prompt (qwen-code may
            # draw its restored answer later than its restored prompt)
            await screen.wait_for(re.compile(rf"say ping-{word}|PONG-{word}"))
        await screen.wait_for(agent.resumed)
    finally:
        if screen is not None:
            await screen.close()
        await service.registry.close()

    assert sorted(os.listdir(setup.server_home)) == []  # nothing in the server's HOME
    assert trap.seen() == []  # no update check, telemetry or download was even tried
    assert tree(data / "agents") == installs  # and nothing updated the install
    # the provider's key is nowhere in the sandbox; the token is not written either
    workspace = workspace_path(setup.data, "acme", "box")
    assert holding([setup.home, workspace], setup.key) == []
    assert holding([setup.home, workspace], token) == []


async def test_the_trap_catches_an_agent_started_without_its_settings(
    tmp_path: Path,
    installed_agents_dir: Any,
    fake_llm: FakeLLM,
    trap: TrapProxy,
    stack: contextlib.ExitStack,
) -> None:
    """The control for the test above: qwen-code from a bare row (no settings, no
    files) checks npm for an update and reports usage as soon as it starts."""
    data = installed_agents_dir(tmp_path / "data", "qwen-code", share=True)
    bare = [{"slug": "qwen-code", "binary": "qwen", "env": {"OPENAI_MODEL": MODEL}}]
    setup = make_setup(tmp_path, data, "qwen-code", fake_llm, trap, stack, override=bare)
    screen = None
    try:
        await setup.tokens.ensure(setup.sandbox)
        screen = AgentScreen(setup.service.primary(setup.sandbox)).follow()
        await screen.wait_for("Type your message")
        deadline = time.monotonic() + 30
        while not any("registry.npmjs.org" in a for a in trap.seen()):
            assert time.monotonic() < deadline, f"no update check caught: {trap.seen()}"
            await asyncio.sleep(0.1)
    finally:
        if screen is not None:
            await screen.close()
        await setup.service.registry.close()
