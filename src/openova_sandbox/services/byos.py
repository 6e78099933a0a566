"""Claude Code bring-your-own-subscription: connect a user's Claude account by OAuth.

The flow is authorization code + PKCE (S256). ``start`` remembers a flow under a random
state for the authenticated user and hands back the provider's authorization URL; the
provider sends the browser back to the callback, where ``finish`` exchanges the code and
stores the tokens encrypted for the user the state was issued to. The callback is
authenticated by that state, not by the session cookie: the cookie is ``SameSite=Strict``
and a browser does not send it on the provider's cross-site redirect (see docs/byos.md).

Spawners call ``await refresh_if_needed(sub)`` (renews an expiring access token with the
refresh token) and then ``credentials_for(sub)`` to get the environment a
``claude-code`` session needs; the token never reaches a log line or the workspace.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import structlog

from ..config import Settings
from ..domain.errors import BackendUnavailable, Forbidden, Invalid
from .byos_flow import FlowStates, PendingFlow, challenge_for, check_redirect, new_verifier
from .byos_vault import StoredTokens, TokenVault

log = structlog.get_logger(__name__)

DISABLED_ERROR = "byos disabled by operator policy"
SETUP_PENDING_ERROR = "byos-operator-setup-pending"
TOKEN_ENV = "CLAUDE_CODE_OAUTH_TOKEN"
EXCHANGE_TIMEOUT_SECONDS = 10.0
REVOKE_TIMEOUT_SECONDS = 5.0
# refresh a token this close to its expiry, so a session does not start with one that
# dies minutes later
REFRESH_MARGIN_SECONDS = 300.0
ERROR_REDIRECT = "/sandbox?byos=error&reason="
MAX_REASON_LENGTH = 200
MAX_REMEMBERED_ERRORS = 10_000
_PROVIDER_ERROR_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class ExchangeFailed(Exception):
    """The provider did not give us tokens; ``reason`` goes to the browser."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def error_location(reason: str) -> str:
    return ERROR_REDIRECT + quote(reason[:MAX_REASON_LENGTH], safe="")


def _account_email(body: dict[str, Any]) -> str:
    account = body.get("account")
    candidates = []
    if isinstance(account, dict):
        candidates += [account.get("email_address"), account.get("email")]
    candidates.append(body.get("email"))
    for value in candidates:
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


class ByosService:
    def __init__(
        self,
        *,
        settings: Settings,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
        unavailable: str = "",
    ) -> None:
        """``unavailable``: why this deployment cannot offer BYOS whatever the settings
        say (then it answers exactly as when disabled by policy, with this detail)."""
        self._settings = settings
        self._unavailable = unavailable
        self._http = http
        self._clock = clock
        self._flows = FlowStates(clock=clock)
        self._vault = TokenVault(Path(settings.data_dir) / "byos")
        # the last failed connection per user, so the console can show "error"
        self._errors: OrderedDict[str, str] = OrderedDict()
        self._refreshing: dict[str, asyncio.Lock] = {}

    # --- policy ---------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self._settings.byos_enabled and not self._unavailable

    def _disabled(self) -> Forbidden:
        return Forbidden(self._unavailable, code=DISABLED_ERROR)

    @property
    def client_id_configured(self) -> bool:
        return self._settings.byos_client_id_configured

    def missing_setup(self) -> list[str]:
        """The settings an operator still has to provide (empty when ready)."""
        s = self._settings
        missing = []
        if not s.byos_client_id_configured:
            missing.append("SANDBOX_BYOS_CLAUDE_CODE_CLIENT_ID")
        if not s.byos_claude_code_authz_url.strip():
            missing.append("SANDBOX_BYOS_CLAUDE_CODE_AUTHZ_URL")
        if not s.byos_claude_code_token_url.strip():
            missing.append("SANDBOX_BYOS_CLAUDE_CODE_TOKEN_URL")
        return missing

    @property
    def ready(self) -> bool:
        return not self.missing_setup()

    def ensure_usable(self) -> None:
        """Raise the spec's 403 when disabled and its 503 while the operator's setup is
        incomplete."""
        if not self.enabled:
            raise self._disabled()
        missing = self.missing_setup()
        if missing:
            raise BackendUnavailable(
                "Claude Code connections are not set up on this server yet; the operator "
                "must set " + ", ".join(missing),
                code=SETUP_PENDING_ERROR,
            )

    # --- read side --------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """``clientIdConfigured`` is true only when connecting can work (the whole setup,
        not the client id alone), so it agrees with ``status``'s ``client_id_pending``."""
        body: dict[str, Any] = {"clientIdConfigured": self.ready}
        if self.ready:
            body["oauthAuthorizeURL"] = self._settings.byos_claude_code_authz_url.strip()
        return body

    def disabled_status(self) -> dict[str, Any]:
        body: dict[str, Any] = {"connected": False, "disabled": True}
        if not self.ready:
            body["client_id_pending"] = True
        return body

    def status(self, sub: str) -> dict[str, Any]:
        tokens = self._vault.get(sub)
        body: dict[str, Any] = {"connected": tokens is not None}
        if not self.ready:
            body["client_id_pending"] = True
        if tokens is not None:
            when = rfc3339(tokens.connected_at)
            if tokens.account_email:
                body["anthropic_account_email"] = tokens.account_email
            body["connected_at"] = when
            body["status"] = "connected"
            body["accountLabel"] = tokens.account_email or "Claude account"
            body["connectedAt"] = when
        elif not self.ready:
            body["status"] = "pending"
        elif sub in self._errors:
            body["status"] = "error"
        else:
            body["status"] = "disconnected"
        return body

    def credentials_for(self, sub: str) -> dict[str, str]:
        """Environment to add to a ``claude-code`` session of ``sub``; empty when the user
        is not connected, the token has expired or BYOS is disabled.

        Claude Code reads a subscription token from ``CLAUDE_CODE_OAUTH_TOKEN``. A spawner
        injecting it should also drop any ``ANTHROPIC_API_KEY`` from the session's
        environment: Claude Code prefers an API key and would bill that instead.
        """
        if not self.enabled:
            return {}
        tokens = self._vault.get(sub)
        if tokens is None:
            return {}
        if tokens.expires_at is not None and tokens.expires_at <= self._clock():
            log.info("byos token expired; not injected", sub=sub)
            return {}
        return {TOKEN_ENV: tokens.access_token}

    def connected(self, sub: str) -> bool:
        """Whether ``sub`` has connected a subscription (its token may need renewing,
        which happens before a spawn): what "could claude-code start?" asks."""
        return bool(sub) and self.enabled and self._vault.get(sub) is not None

    async def refresh_if_needed(self, sub: str) -> None:
        """Renew ``sub``'s access token with the stored refresh token when it has expired
        or expires within ``REFRESH_MARGIN_SECONDS``, before a session is spawned with it.

        One refresh per user at a time (providers that rotate refresh tokens would
        reject the second use of the old one). ``invalid_grant`` (the grant was revoked
        or the refresh token expired) ends the connection: the tokens are deleted and the
        status says ``error`` until the user connects again. Any other failure (provider
        down, 5xx, a malformed answer) leaves everything as it is; an expired token is
        then not injected and the next spawn tries again.
        """
        if not self.enabled or not self.ready:
            return
        # one lock per user who ever refreshed: a few hundred bytes each, never dropped
        # (dropping one while a waiter holds it would let two refreshes run at once)
        lock = self._refreshing.setdefault(sub, asyncio.Lock())
        async with lock:
            tokens = self._vault.get(sub)
            if tokens is None or not tokens.refresh_token or tokens.expires_at is None:
                return
            if tokens.expires_at > self._clock() + REFRESH_MARGIN_SECONDS:
                return
            form = {
                "grant_type": "refresh_token",
                "refresh_token": tokens.refresh_token,
                "client_id": self._settings.byos_claude_code_client_id.strip(),
            }
            try:
                renewed = await self._token_request(form, previous=tokens, what="refresh")
            except ExchangeFailed as exc:
                if exc.reason != "invalid_grant":
                    return  # down, or a provider fault: the next spawn tries again
                self._vault.delete(sub)
                self._remember_error(sub, f"refresh-failed: {exc.reason}")
                log.warning("byos refresh refused; disconnected", sub=sub, reason=exc.reason)
                return
            self._vault.put(sub, renewed)
            log.info("byos token refreshed", sub=sub)

    # --- the flow ---------------------------------------------------------------------

    def start(self, *, sub: str, base_url: str, post_connect_redirect: object) -> dict[str, str]:
        """Begin a connection for ``sub``; ``base_url`` is how the browser reaches us."""
        self.ensure_usable()
        target = check_redirect(post_connect_redirect)
        s = self._settings
        base = (s.public_url or base_url).rstrip("/")
        redirect_uri = base + s.byos_claude_code_callback_path
        verifier = new_verifier()
        state = self._flows.issue(
            sub=sub, verifier=verifier, redirect_uri=redirect_uri, post_connect_redirect=target
        )
        query = urlencode(
            {
                "response_type": "code",
                "client_id": s.byos_claude_code_client_id.strip(),
                "redirect_uri": redirect_uri,
                "scope": " ".join(s.byos_claude_code_scopes),
                "state": state,
                "code_challenge": challenge_for(verifier),
                "code_challenge_method": "S256",
            }
        )
        authz = s.byos_claude_code_authz_url.strip()
        url = f"{authz}{'&' if '?' in authz else '?'}{query}"
        log.info("byos connection started", sub=sub)
        return {"authorization_url": url, "authorizeUrl": url, "state": state}

    async def finish(
        self,
        *,
        code: str | None,
        state: str | None,
        error: str | None,
        caller_sub: str | None = None,
    ) -> str:
        """Complete the callback; return where to send the browser.

        ``caller_sub`` is the signed-in user when the request happens to carry
        credentials; a state issued to someone else is then refused.
        """
        self.ensure_usable()
        if error is not None:
            flow = self._flows.take(state) if state else None
            if flow is not None:
                self._remember_error(flow.sub, error)
            log.info("byos provider returned an error", error_code=error[:64])
            return error_location(error or "provider-error")
        if not code:
            raise Invalid("the callback needs a code parameter", code="missing-code")
        if not state:
            raise Invalid("the callback needs a state parameter", code="missing-state")
        flow = self._flows.take(state)
        if flow is None:
            raise Invalid(
                "unknown or expired state; start the connection again from the console",
                code="invalid-state",
            )
        if caller_sub is not None and caller_sub != flow.sub:
            raise Forbidden(
                "this connection was started by another user", code="byos-state-user-mismatch"
            )
        try:
            tokens = await self._exchange(flow, code)
        except ExchangeFailed as exc:
            self._remember_error(flow.sub, exc.reason)
            return error_location(exc.reason)
        self._vault.put(flow.sub, tokens)
        self._errors.pop(flow.sub, None)
        log.info("byos connected", sub=flow.sub, email_known=bool(tokens.account_email))
        return flow.post_connect_redirect

    async def disconnect(self, sub: str) -> bool:
        """Forget the user's tokens (and any connection in flight), then revoke them at
        the provider when it has a revocation endpoint (RFC 7009). Idempotent.

        Our copy is deleted first, so a provider that is down or refuses can never leave
        the tokens stored here; the outcome of the revocation is logged (never the token)
        and returned: True when every token was revoked, False when the provider has no
        endpoint, refused or could not be reached, or there was nothing to revoke.
        """
        if not self.enabled:
            raise self._disabled()
        self._flows.drop_user(sub)
        self._errors.pop(sub, None)
        tokens = self._vault.get(sub)
        if not self._vault.delete(sub):
            return False
        log.info("byos disconnected", sub=sub)
        if tokens is None or not self._settings.byos_claude_code_revoke_url.strip():
            return False
        return await self._revoke(sub, tokens)

    # --- internals --------------------------------------------------------------------

    def _remember_error(self, sub: str, reason: str) -> None:
        self._errors[sub] = reason[:MAX_REASON_LENGTH]
        self._errors.move_to_end(sub)
        while len(self._errors) > MAX_REMEMBERED_ERRORS:
            self._errors.popitem(last=False)

    async def _post_form(self, url: str, form: dict[str, str], timeout: float) -> httpx.Response:
        headers = {"Accept": "application/json"}
        if self._http is not None:
            return await self._http.post(url, data=form, headers=headers, timeout=timeout)
        async with httpx.AsyncClient(timeout=timeout) as client:
            return await client.post(url, data=form, headers=headers)

    async def _revoke(self, sub: str, tokens: StoredTokens) -> bool:
        """Revoke the refresh token (which ends the grant on servers that support it)
        and the access token, each with its type hint. RFC 7009: 200 means revoked or
        already invalid."""
        url = self._settings.byos_claude_code_revoke_url.strip()
        client_id = self._settings.byos_claude_code_client_id.strip()
        pairs = [(tokens.refresh_token, "refresh_token"), (tokens.access_token, "access_token")]
        revoked = True
        for token, hint in pairs:
            if not token:
                continue
            form = {"token": token, "token_type_hint": hint, "client_id": client_id}
            try:
                response = await self._post_form(url, form, REVOKE_TIMEOUT_SECONDS)
            except httpx.HTTPError as exc:
                log.warning("byos revocation unreachable", sub=sub, error=type(exc).__name__)
                return False
            if response.status_code != 200:
                log.warning(
                    "byos revocation refused", sub=sub, hint=hint, status=response.status_code
                )
                revoked = False
        if revoked:
            log.info("byos tokens revoked at the provider", sub=sub)
        return revoked

    async def _exchange(self, flow: PendingFlow, code: str) -> StoredTokens:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": flow.redirect_uri,
            "client_id": self._settings.byos_claude_code_client_id.strip(),
            "code_verifier": flow.verifier,
        }
        return await self._token_request(form, previous=None, what="code exchange")

    async def _token_request(
        self, form: dict[str, str], *, previous: StoredTokens | None, what: str
    ) -> StoredTokens:
        """POST ``form`` to the token endpoint and read the tokens it answers with;
        ``previous`` fills what a refresh answer may leave out (refresh token, account)."""
        url = self._settings.byos_claude_code_token_url.strip()
        try:
            response = await self._post_form(url, form, EXCHANGE_TIMEOUT_SECONDS)
        except httpx.HTTPError as exc:
            log.warning("byos token endpoint unreachable", what=what, error=type(exc).__name__)
            raise ExchangeFailed("provider-unreachable") from exc
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        if not response.is_success:
            provider_code = body.get("error") if isinstance(body, dict) else None
            log.warning("byos token request refused", what=what, status=response.status_code)
            if isinstance(provider_code, str) and _PROVIDER_ERROR_CODE.match(provider_code):
                raise ExchangeFailed(provider_code)
            raise ExchangeFailed("token-exchange-failed")
        access = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(body, dict) or not isinstance(access, str) or not access:
            log.warning("byos token response has no access_token", status=response.status_code)
            raise ExchangeFailed("invalid-token-response")
        now = self._clock()
        expires_in = body.get("expires_in")
        refresh = body.get("refresh_token")
        if not isinstance(refresh, str) or not refresh:
            refresh = previous.refresh_token if previous is not None else ""
        return StoredTokens(
            access_token=access,
            refresh_token=refresh,
            token_type=str(body.get("token_type") or "Bearer"),
            scope=str(body.get("scope") or (previous.scope if previous else "")),
            expires_at=now + float(expires_in)
            if isinstance(expires_in, int | float) and not isinstance(expires_in, bool)
            else None,
            account_email=_account_email(body) or (previous.account_email if previous else ""),
            connected_at=previous.connected_at if previous is not None else now,
        )
