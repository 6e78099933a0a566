"""Token → :class:`Principal`, and the one place that decides which keys to trust.

``build_authenticator`` picks the trust root from the settings:

* ``SANDBOX_OIDC_ISSUER`` and/or ``SANDBOX_JWKS_URL`` set → the remote issuer's JWKS
  (cached, refetched on rotation; see ``oidc``), ``iss`` enforced when
  ``SANDBOX_OIDC_ISSUER`` is set, ``aud`` when ``SANDBOX_OIDC_AUDIENCE`` is set;
* neither set → the embedded issuer's own key, with ``iss`` = the embedded issuer's
  ``urn:openova-sandbox:<kid>``. ``aud`` is not enforced there: the embedded issuer
  mints no audience unless asked.

The two are never mixed: with an external issuer configured, embedded tokens are not
accepted (otherwise anyone with the data dir could mint around the real IdP).

Nothing here imports PyJWT, cryptography or httpx before the first token: keys are
parsed, and the validator's libraries loaded, when a token first needs them. With an
issuer *loader* (``EmbeddedIssuer.loader``) even the embedded key is read then; a key
that cannot be read rejects every token (401), with the reason logged as an error.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from ..config import Settings
from ..domain.errors import Invalid, SandboxError, Unauthenticated, UnusableClaim
from ..domain.principal import LOGIN_PURPOSE, MCP_PURPOSE, Principal
from .claims import REQUESTED_ORG, ClaimMapping
from .issuer import EmbeddedIssuer
from .keys import StaticKeySource
from .oidc import RemoteJwks
from .validator import TokenValidator

log = structlog.get_logger(__name__)


class Authenticator:
    """Validates a token and answers who the caller is. ``validator`` may be a function
    that makes it, called at the first token (until it succeeds)."""

    def __init__(
        self,
        validator: TokenValidator | Callable[[], TokenValidator],
        *,
        mapping: ClaimMapping | None = None,
    ) -> None:
        self._validator = validator if isinstance(validator, TokenValidator) else None
        self._make = None if isinstance(validator, TokenValidator) else validator
        self.mapping = mapping or ClaimMapping()

    @property
    def validator(self) -> TokenValidator:
        if self._validator is None:
            assert self._make is not None
            self._validator = self._make()
        return self._validator

    async def authenticate(self, token: str) -> Principal:
        """The caller of ``token``; :class:`Unauthenticated` (detail for logs only) if none."""
        try:
            validator = self.validator
        except SandboxError as exc:  # a deferred trust root that cannot be had
            log.error("auth.trust.unavailable", reason=exc.detail or exc.code)
            raise Unauthenticated(f"no trust root: {exc.detail or exc.code}") from exc
        try:
            claims = await validator.validate(token)
        except Unauthenticated as exc:
            log.info("auth.rejected", reason=exc.detail)
            raise
        if claims.get("purpose") == LOGIN_PURPOSE:
            # a login link's token opens /login once; it is not a credential for the API
            log.info("auth.rejected", reason="login-link token used as a credential")
            raise Unauthenticated("a login link's token is only for /login")
        if claims.get("purpose") == MCP_PURPOSE:
            # a sandbox's MCP token speaks for that sandbox's agents at /mcp only
            log.info("auth.rejected", reason="MCP token used as a credential")
            raise Unauthenticated("a sandbox's MCP token is only for the MCP server (/mcp)")
        try:
            # the org the request asked for (X-Sandbox-Org), for a token naming several
            principal = self.mapping.principal(claims, requested_org=REQUESTED_ORG.get())
        except UnusableClaim as exc:
            log.info("auth.rejected", reason=exc.detail)
            raise
        if principal is None:
            log.info("auth.rejected", reason="token has no sub")
            raise Unauthenticated("token has no sub")
        return principal


def build_authenticator(
    settings: Settings,
    *,
    issuer: EmbeddedIssuer | Callable[[], EmbeddedIssuer] | None,
    more_audiences: tuple[str, ...] = (),
) -> Authenticator:
    """The authenticator for these settings (see the module docstring for the rules).
    ``issuer``: the embedded issuer, or a function that loads it at the first token.
    ``more_audiences``: accepted besides ``SANDBOX_OIDC_AUDIENCE`` when that is set (a
    sandbox pod: the console client's ID tokens, docs/auth.md)."""
    if settings.oidc_issuer or settings.jwks_url:
        keys = RemoteJwks(jwks_url=settings.jwks_url, issuer=settings.oidc_issuer)
        log.info(
            "auth.trust",
            mode="oidc",
            source=keys.source,
            issuer=settings.oidc_issuer or None,
            audience=settings.oidc_audience or None,
        )
        return Authenticator(
            TokenValidator(
                keys,
                issuer=settings.oidc_issuer,
                audience=settings.oidc_audience,
                more_audiences=more_audiences,
            ),
            mapping=ClaimMapping.from_settings(settings),
        )
    if issuer is None:
        raise Invalid(
            "no token issuer: set SANDBOX_OIDC_ISSUER or SANDBOX_JWKS_URL, "
            "or start with the embedded issuer",
            code="invalid-settings",
        )
    if isinstance(issuer, EmbeddedIssuer):
        return Authenticator(_embedded_validator(issuer))
    load = issuer
    log.info("auth.trust", mode="embedded", deferred="key read at the first token")
    return Authenticator(lambda: _embedded_validator(load()))


def _embedded_validator(issuer: EmbeddedIssuer) -> TokenValidator:
    log.info("auth.trust", mode="embedded", issuer=issuer.issuer, kid=issuer.kid)
    return TokenValidator(StaticKeySource(issuer.jwks()), issuer=issuer.issuer)
