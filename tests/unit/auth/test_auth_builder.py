"""build_authenticator: which trust root the settings select."""

from __future__ import annotations

import pytest

from openova_sandbox.auth.authenticator import build_authenticator
from openova_sandbox.auth.issuer import EmbeddedIssuer
from openova_sandbox.auth.keys import StaticKeySource
from openova_sandbox.auth.oidc import RemoteJwks
from openova_sandbox.config import Settings
from openova_sandbox.domain.errors import Invalid, Unauthenticated


def settings(*, oidc_issuer: str = "", jwks_url: str = "", oidc_audience: str = "") -> Settings:
    return Settings(oidc_issuer=oidc_issuer, jwks_url=jwks_url, oidc_audience=oidc_audience)


async def test_embedded_mode_trusts_the_embedded_issuer_and_checks_its_iss() -> None:
    issuer = EmbeddedIssuer.generate()
    auth = build_authenticator(settings(oidc_audience="ignored-here"), issuer=issuer)
    assert auth.validator.issuer == issuer.issuer
    assert auth.validator.audience == ""
    principal = await auth.authenticate(
        issuer.mint(sub="u1", email="u1@example.com", org="acme", roles=["org-admin"])
    )
    assert (principal.sub, principal.email, principal.org) == ("u1", "u1@example.com", "acme")
    assert principal.is_org_admin
    stranger = EmbeddedIssuer.generate()
    with pytest.raises(Unauthenticated):
        await auth.authenticate(stranger.mint(sub="u1", email="", org=""))


async def test_oidc_settings_select_the_remote_jwks() -> None:
    auth = build_authenticator(
        settings(oidc_issuer="https://idp.example/realms/r", oidc_audience="sandbox"),
        issuer=EmbeddedIssuer.generate(),
    )
    assert (auth.validator.issuer, auth.validator.audience) == (
        "https://idp.example/realms/r",
        "sandbox",
    )


async def test_embedded_tokens_are_refused_when_an_external_issuer_is_configured() -> None:
    embedded = EmbeddedIssuer.generate()
    # Port 9 on loopback: nothing listens, so the JWKS cannot be fetched.
    auth = build_authenticator(settings(jwks_url="http://127.0.0.1:9/jwks"), issuer=embedded)
    assert auth.validator.issuer == ""
    with pytest.raises(Unauthenticated):
        await auth.authenticate(embedded.mint(sub="u1", email="", org=""))


def test_no_trust_root_at_all_is_a_settings_error() -> None:
    with pytest.raises(Invalid, match="SANDBOX_OIDC_ISSUER"):
        build_authenticator(settings(), issuer=None)


def test_remote_source_needs_somewhere_to_fetch_from() -> None:
    with pytest.raises(ValueError, match="jwks_url or an issuer"):
        RemoteJwks()
    assert StaticKeySource({"keys": []}).keys == ()
