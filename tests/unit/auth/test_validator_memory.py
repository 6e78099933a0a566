"""Issue 11: a verified token is answered from memory (no second signature check), but
its expiry is still enforced on every use, and a withdrawn key stops its remembered
tokens at once. Real ES256 signatures."""

from __future__ import annotations

import time
from typing import Any

import pytest
from auth_keyring import claims, jwks_of, sign
from cryptography.hazmat.primitives.asymmetric import ec

from openova_sandbox.auth.keys import StaticKeySource
from openova_sandbox.auth.validator import TokenValidator
from openova_sandbox.domain.errors import Unauthenticated


class CountingValidator(TokenValidator):
    verified = 0

    async def _verify(self, token: str) -> Any:
        self.verified += 1
        return await super()._verify(token)


@pytest.fixture
def ec_key(ec_keys: list[ec.EllipticCurvePrivateKey]) -> ec.EllipticCurvePrivateKey:
    return ec_keys[0]


async def test_the_same_token_is_verified_once(ec_key: ec.EllipticCurvePrivateKey) -> None:
    validator = CountingValidator(StaticKeySource(jwks_of((ec_key, "ec-1"))))
    token = sign(ec_key, claims(sub="alice", org_id="acme"), kid="ec-1")
    first = await validator.validate(token)
    first["sub"] = "changed by a caller"  # a copy: the memory is not shared
    again = await validator.validate(token)
    assert again["sub"] == "alice"
    assert validator.verified == 1  # before: a signature check per use
    other = sign(ec_key, claims(sub="bob"), kid="ec-1")
    assert (await validator.validate(other))["sub"] == "bob"
    assert validator.verified == 2
    # a token differing in one character is not the remembered one
    with pytest.raises(Unauthenticated):
        await validator.validate(token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1])


async def test_a_remembered_token_still_expires(ec_key: ec.EllipticCurvePrivateKey) -> None:
    validator = TokenValidator(StaticKeySource(jwks_of((ec_key, "ec-1"))), leeway_s=0)
    exp = int(time.time()) + 2
    token = sign(ec_key, claims(sub="alice", exp=exp), kid="ec-1")
    assert (await validator.validate(token))["sub"] == "alice"
    while time.time() < exp:  # wait for the expiry itself
        time.sleep(0.05)
    with pytest.raises(Unauthenticated, match="expired"):
        await validator.validate(token)


async def test_a_withdrawn_key_stops_remembered_tokens_at_once(
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    keys = StaticKeySource(jwks_of((ec_key, "ec-1")))
    validator = TokenValidator(keys)
    token = sign(ec_key, claims(sub="alice"), kid="ec-1")
    await validator.validate(token)
    keys._keys = ()  # the issuer withdrew its key
    with pytest.raises(Unauthenticated):
        await validator.validate(token)
