"""JWK parsing, thumbprints and key selection."""

from __future__ import annotations

from typing import Any

import pytest
from auth_keyring import jwk_of
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from openova_sandbox.auth.keys import (
    StaticKeySource,
    jwk_thumbprint,
    key_from_jwk,
    keys_from_jwks,
    select,
)

# RFC 7638 §3.1: the example RSA key and its thumbprint.
RFC7638_KEY = {
    "kty": "RSA",
    "n": (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_"
        "BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_"
        "FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4"
        "vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    ),
    "e": "AQAB",
    "alg": "RS256",
    "kid": "2011-04-29",
}


def test_thumbprint_matches_rfc7638_example() -> None:
    assert jwk_thumbprint(RFC7638_KEY) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_thumbprint_ignores_optional_members_and_needs_required_ones() -> None:
    trimmed = {k: RFC7638_KEY[k] for k in ("kty", "n", "e")}
    assert jwk_thumbprint(trimmed) == jwk_thumbprint(RFC7638_KEY)
    with pytest.raises(ValueError, match="lacks"):
        jwk_thumbprint({"kty": "RSA", "n": "abc"})
    with pytest.raises(ValueError, match="type"):
        jwk_thumbprint({"kty": "weird"})


def test_rsa_and_p256_keys_are_bound_to_their_algorithm(
    rsa_keys: list[rsa.RSAPrivateKey], ec_keys: list[ec.EllipticCurvePrivateKey]
) -> None:
    rsa_pub = key_from_jwk(jwk_of(rsa_keys[0], "r"))
    ec_pub = key_from_jwk(jwk_of(ec_keys[0], "e"))
    assert (rsa_pub.kid, rsa_pub.algorithm) == ("r", "RS256")
    assert (ec_pub.kid, ec_pub.algorithm) == ("e", "ES256")
    assert rsa_pub.key.public_numbers() == rsa_keys[0].public_key().public_numbers()


def test_private_material_in_a_jwk_is_reduced_to_the_public_key(
    ec_keys: list[ec.EllipticCurvePrivateKey],
) -> None:
    private_jwk: dict[str, Any] = ECAlgorithm.to_jwk(ec_keys[0], as_dict=True)
    assert "d" in private_jwk
    parsed = key_from_jwk(private_jwk)
    assert isinstance(parsed.key, ec.EllipticCurvePublicKey)


def unusable_jwks(ec_keys: list[ec.EllipticCurvePrivateKey]) -> list[dict[str, Any]]:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    p384 = ec.generate_private_key(ec.SECP384R1())
    return [
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
        {**RSAAlgorithm.to_jwk(small.public_key(), as_dict=True), "kid": "small"},
        {**ECAlgorithm.to_jwk(p384.public_key(), as_dict=True), "kid": "p384"},
        {**jwk_of(ec_keys[0], "enc"), "use": "enc"},
        {**RFC7638_KEY, "alg": "RS512", "kid": "rs512"},
        {**jwk_of(ec_keys[0], "es384"), "alg": "ES384"},
        {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA", "kid": "broken"},
        {"kty": "RSA", "kid": 7, "n": "AQAB", "e": "AQAB"},
    ]


def test_unusable_keys_are_skipped_not_fatal(
    rsa_keys: list[rsa.RSAPrivateKey], ec_keys: list[ec.EllipticCurvePrivateKey]
) -> None:
    bad = unusable_jwks(ec_keys)
    for entry in bad:
        with pytest.raises(ValueError):
            key_from_jwk(entry)
    document = {"keys": [*bad, "not-an-object", jwk_of(rsa_keys[0], "good")]}
    assert [k.kid for k in keys_from_jwks(document)] == ["good"]


def test_a_document_without_keys_is_not_a_jwks() -> None:
    with pytest.raises(ValueError, match="keys"):
        keys_from_jwks({"issuer": "x"})


def test_select_by_kid_falls_back_to_kidless_keys(
    rsa_keys: list[rsa.RSAPrivateKey], ec_keys: list[ec.EllipticCurvePrivateKey]
) -> None:
    a = key_from_jwk(jwk_of(rsa_keys[0], "a"))
    b = key_from_jwk(jwk_of(ec_keys[0], "b"))
    anon = key_from_jwk(jwk_of(rsa_keys[1]))
    assert select([a, b, anon], "b") == [b]
    assert select([a, b, anon], None) == [a, b, anon]
    assert select([a, b, anon], "zzz") == [anon]
    assert select([a, b], "zzz") == []


async def test_static_source_answers_by_kid(ec_keys: list[ec.EllipticCurvePrivateKey]) -> None:
    source = StaticKeySource({"keys": [jwk_of(ec_keys[0], "one"), jwk_of(ec_keys[1], "two")]})
    assert [k.kid for k in await source.keys_for("two")] == ["two"]
    assert [k.kid for k in await source.keys_for(None)] == ["one", "two"]
    assert await source.keys_for("three") == []
