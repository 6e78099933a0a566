"""Assembling the embedded all-in-one server from Settings.

The one place that knows which concrete store, authenticator, bus and background parts
an embedded `sandbox serve` uses. Tests build the same thing with their own settings
(see ``openova_sandbox.testing``).
"""

from __future__ import annotations

import secrets
from pathlib import Path

from prometheus_client import CollectorRegistry

from ..auth.issuer import EmbeddedIssuer
from ..auth.keys import StaticKeySource
from ..auth.oidc import RemoteJwks
from ..auth.validator import TokenValidator
from ..config import Settings
from ..domain.catalogue import load_catalogue
from ..domain.errors import Unauthenticated
from ..domain.model import Quota
from ..domain.principal import Principal, principal_from_claims
from ..events.bus import InProcessBus
from ..services.logins import LoginService
from ..services.sessions import SessionsPolicy, SessionsService
from ..store.base import Store
from ..store.factory import make_store
from .deps import AppDeps

COOKIE_SECRET_FILE = "cookie-secret"


class ClaimsAuthenticator:
    """Validated claims → Principal; ``sub`` is required."""

    def __init__(self, validator: TokenValidator) -> None:
        self.validator = validator

    async def authenticate(self, token: str) -> Principal:
        principal = principal_from_claims(await self.validator.validate(token))
        if principal is None:
            raise Unauthenticated("token has no sub")
        return principal


def cookie_secret(settings: Settings) -> str:
    """The configured secret, else one generated once and kept in the data dir (0600)."""
    if settings.cookie_secret:
        return settings.cookie_secret
    path = Path(settings.data_dir) / COOKIE_SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(secrets.token_urlsafe(32))
        tmp.chmod(0o600)
        tmp.replace(path)
    return path.read_text().strip()


def build_validator(settings: Settings, issuer: EmbeddedIssuer | None) -> TokenValidator:
    if settings.oidc_issuer or settings.jwks_url:
        remote = RemoteJwks(issuer=settings.oidc_issuer, jwks_url=settings.jwks_url)
        return TokenValidator(remote, issuer=settings.oidc_issuer, audience=settings.oidc_audience)
    if issuer is None:
        raise Unauthenticated("no token issuer configured")
    return TokenValidator(
        StaticKeySource(issuer.jwks()), issuer=issuer.issuer, audience=settings.oidc_audience
    )


def build_embedded(
    settings: Settings, *, store: Store | None = None, public_url: str = ""
) -> AppDeps:
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    issuer = EmbeddedIssuer.load_or_create(Path(settings.data_dir), issuer_url=public_url)
    validator = build_validator(settings, issuer)
    store = store if store is not None else make_store(settings)
    bus = InProcessBus()
    sessions = SessionsService(
        store=store,
        catalogue=load_catalogue(settings.agents_path),
        policy=SessionsPolicy(
            default_namespace=settings.default_namespace,
            quota=Quota.from_dict(settings.quota_dict),
        ),
        bus=bus,
    )
    uses_embedded = not (settings.oidc_issuer or settings.jwks_url)
    return AppDeps(
        settings=settings,
        store=store,
        sessions=sessions,
        authenticator=ClaimsAuthenticator(validator),
        logins=LoginService(validate=validator.validate, minter=issuer),
        cookie_secret=cookie_secret(settings),
        bus=bus,
        metrics_registry=CollectorRegistry(),
        issuer=issuer if uses_embedded else None,
    )
