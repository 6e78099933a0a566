"""RemoteJwks against a live HTTP issuer on 127.0.0.1: discovery, cache, rotation, outages.

Time for the cache and the refetch rate limit comes from an injected clock, so nothing
here sleeps or depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio

import pytest
import structlog
from auth_idp import IssuerServer, jwks_of, token
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from openova_sandbox.auth.authenticator import build_authenticator
from openova_sandbox.auth.oidc import RemoteJwks
from openova_sandbox.auth.validator import TokenValidator
from openova_sandbox.config import Settings
from openova_sandbox.domain.errors import Unauthenticated

DISCOVERY = "/.well-known/openid-configuration"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


def remote(idp: IssuerServer, clock: Clock, *, discovery: bool = False) -> RemoteJwks:
    if discovery:
        return RemoteJwks(issuer=idp.url, clock=clock, timeout_s=5)
    return RemoteJwks(jwks_url=idp.jwks_url, clock=clock, timeout_s=5)


async def test_discovery_then_jwks_then_cache(
    idp: IssuerServer, clock: Clock, rsa_keys: list[rsa.RSAPrivateKey]
) -> None:
    idp.jwks = jwks_of((rsa_keys[0], "a"))
    validator = TokenValidator(remote(idp, clock, discovery=True), issuer=idp.url)
    for _ in range(5):
        claims = await validator.validate(token(rsa_keys[0], kid="a", iss=idp.url))
        assert claims["sub"] == "user-1"
    assert (idp.count(DISCOVERY), idp.count("/jwks")) == (1, 1)


async def test_jwks_url_skips_discovery(
    idp: IssuerServer, clock: Clock, ec_keys: list[ec.EllipticCurvePrivateKey]
) -> None:
    idp.jwks = jwks_of((ec_keys[0], "e"))
    validator = TokenValidator(remote(idp, clock))
    assert (await validator.validate(token(ec_keys[0], kid="e")))["sub"] == "user-1"
    assert (idp.count(DISCOVERY), idp.count("/jwks")) == (0, 1)


async def test_cache_is_refreshed_after_the_ttl(
    idp: IssuerServer, clock: Clock, rsa_keys: list[rsa.RSAPrivateKey]
) -> None:
    idp.jwks = jwks_of((rsa_keys[0], "a"))
    validator = TokenValidator(remote(idp, clock))
    await validator.validate(token(rsa_keys[0], kid="a"))
    clock.advance(599)
    await validator.validate(token(rsa_keys[0], kid="a"))
    assert idp.count("/jwks") == 1
    clock.advance(2)
    await validator.validate(token(rsa_keys[0], kid="a"))
    assert idp.count("/jwks") == 2


async def test_unknown_kid_triggers_one_refetch_then_succeeds(
    idp: IssuerServer, clock: Clock, rsa_keys: list[rsa.RSAPrivateKey]
) -> None:
    idp.jwks = jwks_of((rsa_keys[0], "old"))
    validator = TokenValidator(remote(idp, clock, discovery=True))
    await validator.validate(token(rsa_keys[0], kid="old"))
    clock.advance(60)  # long after the first fetch, well within the TTL
    idp.jwks = jwks_of((rsa_keys[0], "old"), (rsa_keys[1], "new"))  # the issuer rotates
    for _ in range(3):
        assert (await validator.validate(token(rsa_keys[1], kid="new", sub="b")))["sub"] == "b"
    assert (await validator.validate(token(rsa_keys[0], kid="old")))["sub"] == "user-1"
    assert idp.count("/jwks") == 2
    assert idp.count(DISCOVERY) == 1


async def test_unknown_kids_refetch_at_most_once_per_interval(
    idp: IssuerServer, clock: Clock, rsa_keys: list[rsa.RSAPrivateKey]
) -> None:
    idp.jwks = jwks_of((rsa_keys[0], "a"))
    validator = TokenValidator(remote(idp, clock))
    await validator.validate(token(rsa_keys[0], kid="a"))
    clock.advance(30)
    flood = [token(rsa_keys[1], kid=f"bogus-{i}") for i in range(25)]
    results = await asyncio.gather(*(validator.validate(t) for t in flood), return_exceptions=True)
    assert all(isinstance(r, Unauthenticated) for r in results)
    for t in flood:  # sequentially too
        with pytest.raises(Unauthenticated):
            await validator.validate(t)
    assert idp.count("/jwks") == 2  # the first fetch + one refetch for the whole flood
    clock.advance(9)
    with pytest.raises(Unauthenticated):
        await validator.validate(token(rsa_keys[1], kid="bogus-late"))
    assert idp.count("/jwks") == 2
    clock.advance(2)
    with pytest.raises(Unauthenticated):
        await validator.validate(token(rsa_keys[1], kid="bogus-later"))
    assert idp.count("/jwks") == 3
    # Known kids never wait for, or cause, a fetch.
    assert (await validator.validate(token(rsa_keys[0], kid="a")))["sub"] == "user-1"
    assert idp.count("/jwks") == 3


async def test_issuer_down_with_a_warm_cache_still_validates(
    idp: IssuerServer, clock: Clock, ec_keys: list[ec.EllipticCurvePrivateKey]
) -> None:
    idp.jwks = jwks_of((ec_keys[0], "e"))
    validator = TokenValidator(remote(idp, clock, discovery=True))
    await validator.validate(token(ec_keys[0], kid="e"))
    idp.stop()
    clock.advance(3600)  # cache long expired; every refresh attempt fails
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            assert (await validator.validate(token(ec_keys[0], kid="e")))["sub"] == "user-1"
            clock.advance(11)
        with pytest.raises(Unauthenticated):
            await validator.validate(token(ec_keys[1], kid="unknown"))
    failures = [e for e in logs if e["event"] == "auth.jwks.fetch_failed"]
    assert failures
    assert all(e["using_stale_keys"] for e in failures)


async def test_issuer_unreachable_and_no_cache_is_unauthenticated(
    ec_keys: list[ec.EllipticCurvePrivateKey], clock: Clock
) -> None:
    down = IssuerServer()
    url = down.jwks_url
    down.stop()
    validator = TokenValidator(RemoteJwks(jwks_url=url, clock=clock))
    with pytest.raises(Unauthenticated, match="unavailable"):
        await validator.validate(token(ec_keys[0], kid="e"))


async def test_failing_issuer_is_retried_only_after_the_interval_then_recovers(
    idp: IssuerServer, clock: Clock, ec_keys: list[ec.EllipticCurvePrivateKey]
) -> None:
    idp.jwks = jwks_of((ec_keys[0], "e"))
    idp.status = 503
    validator = TokenValidator(remote(idp, clock, discovery=True))
    good = token(ec_keys[0], kid="e")
    for _ in range(5):
        with pytest.raises(Unauthenticated, match="unavailable"):
            await validator.validate(good)
    assert idp.count(DISCOVERY) == 1
    idp.status = 200
    clock.advance(10)
    assert (await validator.validate(good))["sub"] == "user-1"
    assert (idp.count(DISCOVERY), idp.count("/jwks")) == (2, 1)


@pytest.mark.parametrize(
    "body",
    [b"<html>oops</html>", b"[]", b'{"nokeys": []}', b'{"keys": [{"kty": "oct", "k": "AA"}]}'],
)
async def test_a_broken_jwks_keeps_the_previous_keys(
    idp: IssuerServer, clock: Clock, rsa_keys: list[rsa.RSAPrivateKey], body: bytes
) -> None:
    idp.jwks = jwks_of((rsa_keys[0], "a"))
    validator = TokenValidator(remote(idp, clock))
    await validator.validate(token(rsa_keys[0], kid="a"))
    idp.raw_jwks = body
    clock.advance(700)
    assert (await validator.validate(token(rsa_keys[0], kid="a")))["sub"] == "user-1"
    assert idp.count("/jwks") == 2


async def test_discovery_issuer_mismatch_is_tolerated_and_logged(
    idp: IssuerServer, clock: Clock, rsa_keys: list[rsa.RSAPrivateKey]
) -> None:
    idp.jwks = jwks_of((rsa_keys[0], "a"))
    idp.advertised_issuer = "https://elsewhere.example"
    validator = TokenValidator(remote(idp, clock, discovery=True), issuer=idp.url)
    with structlog.testing.capture_logs() as logs:
        await validator.validate(token(rsa_keys[0], kid="a", iss=idp.url))
    assert any(e["event"] == "auth.oidc.issuer_mismatch" for e in logs)


async def test_settings_wire_a_remote_issuer_end_to_end(
    idp: IssuerServer, rsa_keys: list[rsa.RSAPrivateKey]
) -> None:
    idp.jwks = jwks_of((rsa_keys[0], "a"))
    settings = Settings(oidc_issuer=idp.url, oidc_audience="sandbox", jwks_url="")
    auth = build_authenticator(settings, issuer=None)
    principal = await auth.authenticate(
        token(rsa_keys[0], kid="a", sub="carol", iss=idp.url, aud="sandbox", org_id="acme")
    )
    assert (principal.sub, principal.org) == ("carol", "acme")
    with pytest.raises(Unauthenticated):
        await auth.authenticate(token(rsa_keys[0], kid="a", iss=idp.url, aud="other"))


async def test_tokens_never_reach_the_logs(
    idp: IssuerServer, rsa_keys: list[rsa.RSAPrivateKey]
) -> None:
    idp.jwks = jwks_of((rsa_keys[0], "a"))
    settings = Settings(jwks_url=idp.jwks_url, oidc_issuer="", oidc_audience="")
    auth = build_authenticator(settings, issuer=None)
    tokens = [
        token(rsa_keys[1], kid="a"),  # bad signature
        token(rsa_keys[1], kid="zzz"),  # unknown kid → refetch
        token(rsa_keys[0], kid="a", exp=1),  # expired
        token(rsa_keys[0], kid="a"),  # fine
    ]
    with structlog.testing.capture_logs() as logs:
        for t in tokens[:-1]:
            with pytest.raises(Unauthenticated) as info:
                await auth.authenticate(t)
            assert t not in str(info.value)
        await auth.authenticate(tokens[-1])
    text = repr(logs)
    assert logs
    for t in tokens:
        assert t not in text
        assert t.split(".")[2] not in text
