"""The standalone terminal server (``sandbox pty-server``): one sandbox, from Settings.

In Kubernetes each Sandbox gets a pty-server pod whose environment names the sandbox
(``SANDBOX_ID``, ``SANDBOX_NAMESPACE``, ``SANDBOX_OWNER_EMAIL``, ``SANDBOX_ORG_ID``,
``SANDBOX_DEFAULT_AGENT``, ``SANDBOX_SESSION_LIMIT``, ``SANDBOX_WORKDIR``) and the model
gateway its terminals use (``SANDBOX_MODEL_GATEWAY_URL``, and the sandbox's token in
``SANDBOX_MODEL_GATEWAY_TOKEN``, from the Secret the operator writes). This module
turns those settings into a registry with that one sandbox and the routes over it.
The pod's ``HOME`` is the sandbox's home volume: it is the sandbox's own HOME, seeded
before each agent start by the ``prepare_spawn`` hook that ``sandbox pty-server`` passes
(the same one embedded mode uses).

Authorization rule: the control plane's own (``domain.access``, which
``SessionsService.can_see`` applies too): the caller's namespace must be the sandbox's,
and the caller must own the sandbox (by subject when known, else email) or be an admin
of its org. A share link's viewer, whom the control plane relays with a share grant,
is admitted when the grant verifies with the pod's own key ``SANDBOX_SHARE_GRANT_KEY``
(from the ``sandbox-share-grant`` Secret the operator writes; docs/shares.md).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping

from ...agents.mcp_config import TOKEN_VAR as MCP_TOKEN_VAR
from ...agents.mcp_config import URL_VAR as MCP_URL_VAR
from ...config import Settings
from ...domain.access import SandboxOwner
from ...domain.catalogue import load_catalogue
from ...domain.model_access import ModelAccess, agent_model_env
from ...domain.principal import Principal
from ...terminal.registry import DEFAULT_CWD, SandboxContext, SpawnPreparer, TerminalRegistry
from .pty_app import Authorize, PtyApp, VerifyGrant, create_pty_app


def owner_or_org_admin(
    *, owner_email: str, namespace: str, default_namespace: str = "", owner_sub: str = ""
) -> Authorize:
    """The rule "caller owns the sandbox or administers its org" (``domain.access``)
    over the sandbox's owner and namespace: ``"owner"``, ``"admin"`` or ``None``.
    Without a namespace only the owner is admitted."""
    owner = SandboxOwner(namespace=namespace, email=owner_email, sub=owner_sub)

    def allowed(principal: Principal) -> str | None:
        return owner.admits(principal, default_namespace)

    return allowed


def gateway_env(settings: Settings) -> dict[str, str]:
    """What the sandbox's terminals get for models: the model gateway of
    ``SANDBOX_MODEL_GATEWAY_URL`` with the sandbox's token ``SANDBOX_MODEL_GATEWAY_TOKEN``
    under each agent's names (``domain.model_access``), and ``SANDBOX_AGENT_MODEL``.
    Never this process's own ``OPENAI_API_KEY``/``ANTHROPIC_API_KEY``: no provider key
    enters a sandbox."""
    access = ModelAccess(gateway_url=settings.model_gateway_url, token=settings.model_gateway_token)
    return agent_model_env(access, settings.agent_model)


def mcp_env(settings: Settings) -> dict[str, str]:
    """The MCP server of ``SANDBOX_MCP_URL`` with the sandbox's token
    ``SANDBOX_MCP_TOKEN`` (the operator's Secret), under the names the agents' MCP client
    config refers to (``agents.mcp_config``, written before each agent starts); nothing
    unless both are set."""
    if not (settings.mcp_url and settings.mcp_token):
        return {}
    return {MCP_URL_VAR: settings.mcp_url, MCP_TOKEN_VAR: settings.mcp_token}


def build_standalone_app(
    settings: Settings,
    *,
    authenticate: Callable[[str], Awaitable[Principal]],
    cookie_secret: str = "",
    extra_env: Mapping[str, str] | None = None,
    public_origin: str | None = None,
    registry: TerminalRegistry | None = None,
    prepare_spawn: SpawnPreparer | None = None,
    home: str | None = None,
) -> PtyApp:
    """The pty-server app for the sandbox described by ``settings`` (served by
    :mod:`.pty_server`). ``home``: the
    sandbox's own HOME (default: this process' ``HOME``, the pod's home volume), which
    ``prepare_spawn`` gets ready before each start (without it nothing is seeded)."""
    sandbox_id = settings.pty_sandbox_id or "sandbox"
    terminals = registry or TerminalRegistry(
        catalogue=load_catalogue(settings.agents_path),
        ring_bytes=settings.ring_buffer_bytes,
        scrollback_lines=settings.screen_scrollback_lines,
    )
    if prepare_spawn is not None:
        terminals.prepare_spawn = prepare_spawn
    if settings.notify_webhook:  # imported only then: httpx is not in the lean pty-server
        from ...services.notify import attach_webhook

        attach_webhook(terminals, settings.notify_webhook)
    env = gateway_env(settings)
    env.update(mcp_env(settings))
    env.update(extra_env or {})
    terminals.add_sandbox(
        SandboxContext(
            sandbox_id=sandbox_id,
            namespace=settings.pty_namespace,
            org_id=settings.pty_org_id,
            owner=settings.pty_owner_email,
            default_agent=settings.pty_default_agent,
            workdir=settings.pty_workdir or DEFAULT_CWD,
            env=env,
            session_limit=settings.pty_session_limit,
            ring_bytes=settings.ring_buffer_bytes,
            home=os.environ.get("HOME", "") if home is None else home,
        )
    )
    return create_pty_app(
        registry=terminals,
        sandbox_id=sandbox_id,
        authenticate=authenticate,
        authorize=owner_or_org_admin(
            owner_email=settings.pty_owner_email,
            owner_sub=settings.pty_owner_sub,
            namespace=settings.pty_namespace,
            default_namespace=settings.default_namespace,
        ),
        public_origin=public_origin or settings.public_url or None,
        cookie_secret=cookie_secret,
        probe_token=settings.probe_token,
        viewer_window=settings.viewer_window_bytes,
        share_grants=_share_grants(settings, sandbox_id),
        # the sandbox's own MCP token lists its terminals (read only) for the MCP server
        listing_token=settings.mcp_token,
    )


def _share_grants(settings: Settings, sandbox_id: str) -> VerifyGrant | None:
    """The verifier of this sandbox's share grants; ``None`` without a key."""
    if not settings.share_grant_key:
        return None
    from ...auth.share_grant import ShareGrantVerifier  # only then: PyJWT

    return ShareGrantVerifier(
        settings.share_grant_key, namespace=settings.pty_namespace, sandbox=sandbox_id
    )
