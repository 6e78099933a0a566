"""Wiring of personal access tokens and quotas into an assembled control plane
(issue 11; docs/api.md). Called by both modes' builders in ``composition``:

- the token and quota tables live where the gateway's ledger does: in memory for
  ``SANDBOX_STORE=memory``, else the SQL database of the store (Kubernetes mode: the
  database of ``SANDBOX_DATABASE_URL``; tokens and quotas are not Kubernetes objects);
- the app's authenticator becomes ``PatAuthenticator`` over the JWT one;
- sessions count sandboxes against the quotas; in embedded mode the terminals count
  their processes.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import structlog
from starlette.requests import HTTPConnection

from ..auth.issuer import EmbeddedIssuer
from ..config import Settings
from ..domain.access_tokens import looks_like_token
from ..domain.errors import Forbidden
from ..domain.principal import Principal
from ..domain.quotas import DEFAULT_ORG, DEFAULT_USER, QuotaDefaults, parse_quota_setting
from ..services.quotas import MemoryQuotas, QuotasService, QuotaStore
from ..services.remote_terminals import RemoteTerminals
from ..services.tokens import MemoryTokens, PatAuthenticator, TokensService, TokenStore
from .deps import AppDeps

log = structlog.get_logger(__name__)


def quota_defaults(settings: Settings) -> QuotaDefaults:
    return QuotaDefaults(
        user=parse_quota_setting(settings.quota_user, DEFAULT_USER, variable="SANDBOX_QUOTA_USER"),
        org=parse_quota_setting(settings.quota_org, DEFAULT_ORG, variable="SANDBOX_QUOTA_ORG"),
    )


class AccountsLifecycle:
    """The token/quota tables as a background part: opened after the store (a
    database that cannot be reached at start opens on first use), closed before it."""

    def __init__(self, store: Any) -> None:
        self.store = store

    async def start(self) -> None:
        from ..domain.errors import BackendUnavailable

        try:
            await self.store.start()
        except BackendUnavailable as exc:
            log.warning("accounts unreachable at start; opening on first use", error=exc.detail)

    async def stop(self) -> None:
        await self.store.close()


def make_accounts(settings: Settings) -> tuple[TokenStore, QuotaStore, Any]:
    """The token store, the quota store and what to start and stop (``None``: nothing)."""
    if settings.store == "memory":
        return MemoryTokens(), MemoryQuotas(), None
    from ..store.sql_accounts import SqlAccounts

    if settings.store == "kube" and not settings.database_url:
        log.warning(
            "accounts_on_local_sqlite",
            detail="set SANDBOX_DATABASE_URL to a PostgreSQL database shared by every API "
            "replica, or access tokens and quota overrides do not hold across them",
        )
    accounts = SqlAccounts(settings.effective_database_url)
    return accounts, accounts, accounts


def add_accounts(deps: AppDeps, settings: Settings) -> None:
    """Tokens and quotas for ``deps`` (after its terminals, if any, are assembled)."""
    token_store, quota_store, lifecycle = make_accounts(settings)
    tokens = TokensService(
        token_store, default_days=settings.pat_default_days, max_days=settings.pat_max_days
    )
    deps.authenticator = PatAuthenticator(deps.authenticator, tokens)
    sessions = deps.sessions
    quotas = QuotasService(
        quota_store,
        quota_defaults(settings),
        namespace_of=sessions.namespace_of,
        sandboxes=deps.store.list,
        owns=sessions.owns,
    )
    sessions.quotas = quotas
    live_terminals = getattr(deps.terminals, "live_terminals", None)
    if callable(live_terminals) and hasattr(deps.terminals, "quotas"):
        deps.terminals.quotas = quotas
        quotas.terminals = live_terminals
    deps.tokens = tokens
    deps.quotas = quotas
    if lifecycle is not None:
        deps.background.append(AccountsLifecycle(lifecycle))


# a token exchanged for a JWT lives this long at most: a REST call's, and an attach's
# (which must not end before the connection does, should the pod close connections at
# their token's exp; the control plane itself closes it at the token's expiry)
UPSTREAM_JWT_SECONDS = 300
UPSTREAM_ATTACH_SECONDS = 24 * 3600


def upstream_token(conn: HTTPConnection) -> str:
    """The credential a terminal call presents upstream (Kubernetes mode: the sandbox's
    own terminal server, which checks it again against the issuer's keys and knows no
    personal access tokens). A JWT goes as it came; a personal access token is exchanged
    for a JWT of the same identity from the embedded issuer (a REST call's lives
    ``UPSTREAM_JWT_SECONDS``, an attach's ``UPSTREAM_ATTACH_SECONDS``; never past the
    token's expiry). With an external issuer there is none to mint: a REST call is
    refused (403 ``token-not-allowed``), an attach goes on with the token and is
    refused by the terminal server (1008)."""
    token = str(getattr(conn.state, "token", ""))
    principal: Principal | None = getattr(conn.state, "principal", None)
    deps = conn.app.state.deps
    if principal is None or not principal.via_token or not looks_like_token(token):
        return token
    if not isinstance(deps.terminals, RemoteTerminals):
        return token  # embedded mode: terminals are in this process, nothing is sent
    issuer = deps.issuer
    if not isinstance(issuer, EmbeddedIssuer):
        if conn.scope.get("type") == "websocket":
            return token
        raise Forbidden(
            "a personal access token cannot reach a sandbox's terminal server when tokens "
            "come from an external issuer; use a token of the issuer",
            code="token-not-allowed",
        )
    cap = UPSTREAM_ATTACH_SECONDS if conn.scope.get("type") == "websocket" else UPSTREAM_JWT_SECONDS
    left = principal.seconds_left()
    seconds = cap if left is None else min(cap, left)
    return issuer.mint(
        sub=principal.sub,
        email=principal.email,
        org=principal.org,
        roles=sorted(principal.roles),
        ttl=timedelta(seconds=max(1, int(seconds))),
        extra={
            "tier": principal.tier,
            "groups": list(principal.groups),
            "preferred_username": principal.username,
        },
    )
