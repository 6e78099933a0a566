"""The standalone pty-server: authorization rule, settings → registry (the token
extractor and the Origin rule are the control plane's: tests/unit/auth, tests/unit/api)."""

from __future__ import annotations

from pathlib import Path

from openova_sandbox.api.terminal_edge.standalone import (
    build_standalone_app,
    gateway_env,
    owner_or_org_admin,
)
from openova_sandbox.config import load_settings
from openova_sandbox.domain.catalogue import load_catalogue
from openova_sandbox.domain.errors import Unauthenticated
from openova_sandbox.domain.principal import Principal
from openova_sandbox.terminal.registry import TerminalRegistry


def test_owner_matches_case_insensitively_and_org_admin_only_of_that_org() -> None:
    allowed = owner_or_org_admin(owner_email="Dev@Acme.com ", namespace="acme")
    assert allowed(Principal(sub="1", email="dev@acme.COM", org="acme"))
    assert not allowed(Principal(sub="2", email="other@acme.com", org="acme"))
    assert allowed(Principal(sub="3", org="acme", roles=frozenset({"org-admin"})))
    assert allowed(Principal(sub="4", org="acme", tier="admin"))
    assert not allowed(Principal(sub="5", org="evil", roles=frozenset({"org-admin"})))
    # the owner's email from another org's token is not the owner of this sandbox
    assert not allowed(Principal(sub="6", email="dev@acme.com", org="evil"))


def test_orgs_that_share_a_slug_do_not_share_sandboxes() -> None:
    # neither org name is a valid slug, so both slugs are "default"
    allowed = owner_or_org_admin(owner_email="dev@a.com", namespace="Acme Corp")
    assert allowed(Principal(sub="1", org="Acme Corp", roles=frozenset({"org-admin"})))
    assert not allowed(Principal(sub="2", org="Globex Corp", roles=frozenset({"org-admin"})))
    assert not allowed(Principal(sub="3", org="default", roles=frozenset({"org-admin"})))
    uuid = "0b6f1c1e-3f5e-4c1a-9d7b-2f1e8a9c4d10-long-enough-to-fail-the-slug-rule"
    own = owner_or_org_admin(owner_email="dev@a.com", namespace=uuid)
    assert own(Principal(sub="4", org=uuid, roles=frozenset({"org-admin"})))


def test_callers_without_org_live_in_the_default_namespace() -> None:
    allowed = owner_or_org_admin(
        owner_email="dev@a.com", namespace="tenants", default_namespace="tenants"
    )
    assert allowed(Principal(sub="1", email="dev@a.com"))
    assert not allowed(Principal(sub="2", email="dev@a.com", org="acme"))
    fallback = owner_or_org_admin(owner_email="dev@a.com", namespace="catalyst-system")
    assert fallback(Principal(sub="3", email="dev@a.com"))


def test_no_owner_and_no_namespace_admits_nobody() -> None:
    allowed = owner_or_org_admin(owner_email="", namespace="")
    assert not allowed(Principal(sub="1", email=""))
    assert not allowed(Principal(sub="1", org="", roles=frozenset({"org-admin"})))


async def _deny(token: str) -> Principal:
    raise Unauthenticated("no")


async def test_settings_become_the_one_sandbox_of_the_registry(tmp_path: Path) -> None:
    settings = load_settings(
        pty_sandbox_id="my-box",
        pty_namespace="acme",
        pty_owner_email="dev@acme.com",
        pty_org_id="acme",
        pty_default_agent="sovereign-shell",
        pty_session_limit=2,
        pty_workdir=str(tmp_path),
        ring_buffer_bytes=64 * 1024 * 1024,
        openai_api_key="sk-x",
        agents_path=str(tmp_path / "none.json"),
    )
    registry = TerminalRegistry(catalogue=load_catalogue(None))
    app = build_standalone_app(settings, authenticate=_deny, registry=registry)
    assert app is not None
    context = registry.context("my-box")
    assert (context.namespace, context.org_id, context.owner) == ("acme", "acme", "dev@acme.com")
    assert (context.default_agent, context.session_limit) == ("sovereign-shell", 2)
    assert context.workdir == str(tmp_path)
    assert context.ring_bytes == 16 * 1024 * 1024  # clamped by the settings
    # the pod's own provider key never reaches its terminals: only the model name,
    # and no gateway is configured here
    assert context.env == {"SANDBOX_AGENT_MODEL": "gpt-4.1-mini"}
    assert gateway_env(settings) == context.env


def test_the_pods_terminals_get_the_gateway_and_the_sandbox_token_never_a_key() -> None:
    settings = load_settings(
        model_gateway_url="http://sandbox-gateway.catalyst-system.svc",
        model_gateway_token="sandbox-token-1",
        openai_api_key="sk-provider-SECRET",
        anthropic_api_key="sk-ant-provider-SECRET",
        agent_model="coder",
    )
    gateway = "http://sandbox-gateway.catalyst-system.svc/llm"
    assert gateway_env(settings) == {
        "OPENAI_BASE_URL": f"{gateway}/openai/v1",
        "OPENAI_API_KEY": "sandbox-token-1",
        "ANTHROPIC_BASE_URL": f"{gateway}/anthropic",
        "ANTHROPIC_AUTH_TOKEN": "sandbox-token-1",
        "LLM_GATEWAY_URL": f"{gateway}/anthropic",
        "SANDBOX_AGENT_MODEL": "coder",
    }
    # without a token (what the operator renders today) the URLs only
    bare = load_settings(model_gateway_url="http://gw.svc", openai_api_key="sk-provider-SECRET")
    assert "OPENAI_API_KEY" not in gateway_env(bare)
    assert gateway_env(bare)["OPENAI_BASE_URL"] == "http://gw.svc/llm/openai/v1"
