"""Property: a token signed by one key never validates against a key set without it."""

from __future__ import annotations

import asyncio
import functools

from auth_keyring import PrivateKey, claims, jwks_of, sign
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openova_sandbox.auth.keys import StaticKeySource
from openova_sandbox.auth.validator import TokenValidator
from openova_sandbox.domain.errors import Unauthenticated

POOL_SIZE = 6


@functools.cache
def pool() -> tuple[PrivateKey, ...]:
    """Key generation is slow, so Hypothesis draws from a fixed pool of real keys."""
    rsa_keys = [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2)]
    ec_keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(POOL_SIZE - 2)]
    return (*rsa_keys, *ec_keys)


@st.composite
def scenario(draw: st.DrawFn) -> tuple[int, list[int], str | None, str]:
    signer = draw(st.integers(0, POOL_SIZE - 1))
    others = [i for i in range(POOL_SIZE) if i != signer]
    key_set = draw(st.lists(st.sampled_from(others), min_size=0, max_size=len(others), unique=True))
    # The attacker may name any published kid, none, or an unknown one.
    kid = draw(st.one_of(st.none(), st.sampled_from([f"k{i}" for i in range(POOL_SIZE)])))
    sub = draw(st.text(min_size=1, max_size=20))
    return signer, key_set, kid, sub


def validate(keys: list[int], token: str) -> object:
    validator = TokenValidator(StaticKeySource(jwks_of(*((pool()[i], f"k{i}") for i in keys))))
    return asyncio.run(validator.validate(token))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario())
def test_token_signed_by_a_never_validates_against_set_b(
    case: tuple[int, list[int], str | None, str],
) -> None:
    signer, key_set, kid, sub = case
    token = sign(pool()[signer], claims(sub=sub), kid=kid)
    try:
        validate(key_set, token)
    except Unauthenticated:
        pass
    else:
        raise AssertionError(f"token by key {signer} validated against keys {key_set}")
    # Control: the same token does validate once its key is published under its kid.
    if kid is None or kid == f"k{signer}":
        result = validate([*key_set, signer], token)
        assert isinstance(result, dict)
        assert result["sub"] == sub
