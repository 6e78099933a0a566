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
"""

from __future__ import annotations

import structlog

from ..config import Settings
from ..domain.errors import Invalid, Unauthenticated, UnusableClaim
from ..domain.principal import LOGIN_PURPOSE, Principal, principal_from_claims
from .issuer import EmbeddedIssuer
from .keys import StaticKeySource
from .oidc import RemoteJwks
from .validator import TokenValidator

log = structlog.get_logger(__name__)


class Authenticator:
    """Validates a token and answers who the caller is."""

    def __init__(self, validator: TokenValidator) -> None:
        self._validator = validator

    @property
    def validator(self) -> TokenValidator:
        return self._validator

    async def authenticate(self, token: str) -> Principal:
        """The caller of ``token``; :class:`Unauthenticated` (detail for logs only) if none."""
        try:
            claims = await self._validator.validate(token)
        except Unauthenticated as exc:
            log.info("auth.rejected", reason=exc.detail)
            raise
        if claims.get("purpose") == LOGIN_PURPOSE:
            # a login link's token opens /login once; it is not a credential for the API
            log.info("auth.rejected", reason="login-link token used as a credential")
            raise Unauthenticated("a login link's token is only for /login")
        try:
            principal = principal_from_claims(claims)
        except UnusableClaim as exc:
            log.info("auth.rejected", reason=exc.detail)
            raise
        if principal is None:
            log.info("auth.rejected", reason="token has no sub")
            raise Unauthenticated("token has no sub")
        return principal


def build_authenticator(settings: Settings, *, issuer: EmbeddedIssuer | None) -> Authenticator:
    """The authenticator for these settings (see the module docstring for the rules)."""
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
            TokenValidator(keys, issuer=settings.oidc_issuer, audience=settings.oidc_audience)
        )
    if issuer is None:
        raise Invalid(
            "no token issuer: set SANDBOX_OIDC_ISSUER or SANDBOX_JWKS_URL, "
            "or start with the embedded issuer",
            code="invalid-settings",
        )
    log.info("auth.trust", mode="embedded", issuer=issuer.issuer, kid=issuer.kid)
    return Authenticator(TokenValidator(StaticKeySource(issuer.jwks()), issuer=issuer.issuer))
