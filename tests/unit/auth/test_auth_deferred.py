"""The embedded issuer read at the first token (``EmbeddedIssuer.loader``), as the lean
``sandbox pty-server`` trusts it: same tokens accepted and refused as with the issuer
loaded at start; no key file is still an error at start; a key that cannot be read
refuses tokens (401) instead of failing the request otherwise."""

from __future__ import annotations

import pytest

from openova_sandbox.auth.authenticator import build_authenticator
from openova_sandbox.auth.issuer import EmbeddedIssuer, key_path
from openova_sandbox.config import Settings
from openova_sandbox.domain.errors import NotFound, Unauthenticated


async def test_a_deferred_issuer_accepts_its_tokens_and_refuses_others(tmp_path) -> None:
    issuer = EmbeddedIssuer.load_or_create(tmp_path)
    loads = []

    def load() -> EmbeddedIssuer:
        loads.append(1)
        return EmbeddedIssuer.loader(tmp_path)()

    auth = build_authenticator(Settings(oidc_issuer="", jwks_url=""), issuer=load)
    assert loads == []  # nothing read at start
    principal = await auth.authenticate(issuer.mint(sub="u1", email="u1@acme.com", org="acme"))
    assert principal.sub == "u1"
    assert auth.validator.issuer == issuer.issuer
    with pytest.raises(Unauthenticated):
        await auth.authenticate(EmbeddedIssuer.generate().mint(sub="u1", email="", org=""))
    assert loads == [1]  # read once


def test_no_key_file_is_still_an_error_at_start(tmp_path) -> None:
    with pytest.raises(NotFound, match="no issuer key"):
        EmbeddedIssuer.loader(tmp_path)


async def test_an_unreadable_key_refuses_tokens_until_it_is_readable(tmp_path) -> None:
    issuer = EmbeddedIssuer.load_or_create(tmp_path)
    token = issuer.mint(sub="u1", email="", org="")
    good = key_path(tmp_path).read_bytes()
    load = EmbeddedIssuer.loader(tmp_path)
    key_path(tmp_path).write_bytes(b"not a key")
    auth = build_authenticator(Settings(oidc_issuer="", jwks_url=""), issuer=load)
    with pytest.raises(Unauthenticated, match="no trust root"):
        await auth.authenticate(token)
    key_path(tmp_path).write_bytes(good)
    assert (await auth.authenticate(token)).sub == "u1"
