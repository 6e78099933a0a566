"""JWT validation with real RS256/ES256 signatures and the classic attacks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from auth_keyring import PrivateKey, claims, jwks_of, sign
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from openova_sandbox.auth.authenticator import Authenticator
from openova_sandbox.auth.keys import StaticKeySource
from openova_sandbox.auth.validator import TokenValidator
from openova_sandbox.domain.errors import Unauthenticated


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())
    return signing_input + "." + b64(signature)


@pytest.fixture
def rsa_key(rsa_keys: list[rsa.RSAPrivateKey]) -> rsa.RSAPrivateKey:
    return rsa_keys[0]


@pytest.fixture
def ec_key(ec_keys: list[ec.EllipticCurvePrivateKey]) -> ec.EllipticCurvePrivateKey:
    return ec_keys[0]


@pytest.fixture
def validator(rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey) -> TokenValidator:
    return TokenValidator(StaticKeySource(jwks_of((rsa_key, "rsa-1"), (ec_key, "ec-1"))))


async def test_rs256_token_validates(validator: TokenValidator, rsa_key: rsa.RSAPrivateKey) -> None:
    token = sign(rsa_key, claims(sub="alice", org_id="acme"), kid="rsa-1")
    result = await validator.validate(token)
    assert (result["sub"], result["org_id"]) == ("alice", "acme")


async def test_es256_token_validates(
    validator: TokenValidator, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    token = sign(ec_key, claims(sub="bob"), kid="ec-1")
    assert (await validator.validate(token))["sub"] == "bob"


async def test_expired_token_is_rejected(
    validator: TokenValidator, rsa_key: rsa.RSAPrivateKey
) -> None:
    now = int(time.time())
    token = sign(rsa_key, claims(iat=now - 3600, exp=now - 120), kid="rsa-1")
    with pytest.raises(Unauthenticated, match="expired"):
        await validator.validate(token)


async def test_expiry_within_leeway_is_tolerated(
    validator: TokenValidator, rsa_key: rsa.RSAPrivateKey
) -> None:
    now = int(time.time())
    token = sign(rsa_key, claims(iat=now - 3600, exp=now - 5), kid="rsa-1")
    assert (await validator.validate(token))["sub"] == "user-1"


async def test_token_without_exp_is_rejected(
    validator: TokenValidator, rsa_key: rsa.RSAPrivateKey
) -> None:
    token = sign(rsa_key, claims(exp=None), kid="rsa-1")
    with pytest.raises(Unauthenticated, match="'exp'"):
        await validator.validate(token)


async def test_not_yet_valid_token_is_rejected(
    validator: TokenValidator, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    now = int(time.time())
    token = sign(ec_key, claims(nbf=now + 600, exp=now + 1200), kid="ec-1")
    with pytest.raises(Unauthenticated, match="not yet valid"):
        await validator.validate(token)


async def test_signature_by_an_unpublished_key_is_rejected(
    validator: TokenValidator, rsa_keys: list[rsa.RSAPrivateKey]
) -> None:
    token = sign(rsa_keys[1], claims(), kid="rsa-1")  # right kid, wrong key
    with pytest.raises(Unauthenticated, match="signature"):
        await validator.validate(token)


async def test_modified_payload_breaks_the_signature(
    validator: TokenValidator, rsa_key: rsa.RSAPrivateKey
) -> None:
    header, _, sig = sign(rsa_key, claims(sub="alice"), kid="rsa-1").split(".")
    forged_payload = b64(json.dumps(claims(sub="admin")).encode())
    with pytest.raises(Unauthenticated, match="signature"):
        await validator.validate(f"{header}.{forged_payload}.{sig}")


@pytest.mark.parametrize("encoding", ["pem", "der"])
async def test_hs256_signed_with_the_public_key_is_rejected(
    validator: TokenValidator, rsa_key: rsa.RSAPrivateKey, encoding: str
) -> None:
    public = rsa_key.public_key()
    secret = (
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if encoding == "pem"
        else public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}
    unsigned = forge(header, claims(sub="mallory"))
    signing_input = unsigned.rsplit(".", 1)[0].encode()
    token = unsigned + b64(hmac.new(secret, signing_input, hashlib.sha256).digest())
    with pytest.raises(Unauthenticated, match="HS256"):
        await validator.validate(token)


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
async def test_alg_none_is_rejected(validator: TokenValidator, alg: str) -> None:
    token = forge({"alg": alg, "typ": "JWT", "kid": "rsa-1"}, claims(sub="mallory"))
    with pytest.raises(Unauthenticated, match="not accepted"):
        await validator.validate(token)


async def test_header_alg_cannot_redirect_a_key_to_another_algorithm(
    validator: TokenValidator, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    # An ES256 signature under the kid of the RSA key: that key only ever does RS256.
    token = sign(ec_key, claims(), kid="rsa-1")
    with pytest.raises(Unauthenticated, match="no ES256 key"):
        await validator.validate(token)


@pytest.mark.parametrize("token", ["", "garbage", "a.b", "a.b.c", "....", "e30.e30.", "x" * 20000])
async def test_malformed_tokens_are_unauthenticated(validator: TokenValidator, token: str) -> None:
    with pytest.raises(Unauthenticated):
        await validator.validate(token)


async def test_non_string_kid_is_rejected(validator: TokenValidator) -> None:
    with pytest.raises(Unauthenticated, match=r"(?i)key id|kid"):
        await validator.validate(forge({"alg": "RS256", "kid": 5}, claims(), b"x"))


async def test_issuer_enforced_only_when_configured(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    keys = StaticKeySource(jwks_of((rsa_key, "k")))
    open_validator = TokenValidator(keys)
    strict = TokenValidator(keys, issuer="https://idp.example/realms/a")
    good = sign(rsa_key, claims(iss="https://idp.example/realms/a"), kid="k")
    other = sign(rsa_key, claims(iss="https://evil.example"), kid="k")
    missing = sign(rsa_key, claims(), kid="k")
    for token in (good, other, missing):
        assert (await open_validator.validate(token))["sub"] == "user-1"
    assert (await strict.validate(good))["iss"] == "https://idp.example/realms/a"
    with pytest.raises(Unauthenticated, match="issuer"):
        await strict.validate(other)
    with pytest.raises(Unauthenticated, match="'iss'"):
        await strict.validate(missing)


async def test_audience_enforced_only_when_configured(rsa_key: rsa.RSAPrivateKey) -> None:
    keys = StaticKeySource(jwks_of((rsa_key, "k")))
    open_validator = TokenValidator(keys)
    strict = TokenValidator(keys, audience="sandbox")
    single = sign(rsa_key, claims(aud="sandbox"), kid="k")
    listed = sign(rsa_key, claims(aud=["account", "sandbox"]), kid="k")
    other = sign(rsa_key, claims(aud="account"), kid="k")
    missing = sign(rsa_key, claims(), kid="k")
    for token in (single, listed, other, missing):
        assert (await open_validator.validate(token))["sub"] == "user-1"
    assert (await strict.validate(single))["aud"] == "sandbox"
    assert (await strict.validate(listed))["aud"] == ["account", "sandbox"]
    with pytest.raises(Unauthenticated, match="audience"):
        await strict.validate(other)
    with pytest.raises(Unauthenticated, match="'aud'"):
        await strict.validate(missing)


async def test_kid_selects_among_keys_of_the_same_type(rsa_keys: list[rsa.RSAPrivateKey]) -> None:
    validator = TokenValidator(StaticKeySource(jwks_of((rsa_keys[0], "a"), (rsa_keys[1], "b"))))
    assert (await validator.validate(sign(rsa_keys[1], claims(sub="via-b"), kid="b")))["sub"] == (
        "via-b"
    )
    with pytest.raises(Unauthenticated, match="signature"):
        await validator.validate(sign(rsa_keys[1], claims(), kid="a"))
    with pytest.raises(Unauthenticated, match="no RS256 key"):
        await validator.validate(sign(rsa_keys[1], claims(), kid="c"))


async def test_token_without_kid_is_tried_against_every_key(
    rsa_keys: list[rsa.RSAPrivateKey], ec_keys: list[ec.EllipticCurvePrivateKey]
) -> None:
    validator = TokenValidator(
        StaticKeySource(
            jwks_of((rsa_keys[0], "a"), (rsa_keys[1], "b"), (ec_keys[0], "c"), (ec_keys[1], None))
        )
    )
    every: list[PrivateKey] = [*rsa_keys, *ec_keys]
    for key in every:
        assert (await validator.validate(sign(key, claims(sub="anyone"))))["sub"] == "anyone"
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(Unauthenticated, match="2 RS256 key"):
        await validator.validate(sign(stranger, claims()))


async def test_authenticator_maps_claims_to_a_principal(rsa_key: rsa.RSAPrivateKey) -> None:
    auth = Authenticator(TokenValidator(StaticKeySource(jwks_of((rsa_key, "k")))))
    token = sign(
        rsa_key,
        claims(sub="u-9", org="legacy-org", realm_access={"roles": ["org-admin"]}, tier="pro"),
        kid="k",
    )
    principal = await auth.authenticate(token)
    assert (principal.sub, principal.org, principal.tier) == ("u-9", "legacy-org", "pro")
    assert principal.is_org_admin


@pytest.mark.parametrize("sub", [None, "", "   ", 42])
async def test_authenticator_rejects_a_token_without_sub(
    rsa_key: rsa.RSAPrivateKey, sub: object
) -> None:
    auth = Authenticator(TokenValidator(StaticKeySource(jwks_of((rsa_key, "k")))))
    with pytest.raises(Unauthenticated):
        await auth.authenticate(sign(rsa_key, claims(sub=sub), kid="k"))
