"""The embedded issuer: key persistence on disk, minted claims, JWKS and discovery."""

from __future__ import annotations

import asyncio
import stat
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest

from openova_sandbox.auth.authenticator import Authenticator
from openova_sandbox.auth.issuer import EmbeddedIssuer, key_path
from openova_sandbox.auth.keys import StaticKeySource, jwk_thumbprint
from openova_sandbox.auth.validator import TokenValidator
from openova_sandbox.domain.errors import Invalid, NotFound, Unauthenticated


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_start_creates_a_private_key_file(tmp_path: Path) -> None:
    issuer = EmbeddedIssuer.load_or_create(tmp_path, issuer_url="http://127.0.0.1:8080")
    path = key_path(tmp_path)
    assert path == tmp_path / "issuer" / "signing-key.pem"
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert [p.name for p in path.parent.iterdir()] == ["signing-key.pem"]  # no temp left
    assert issuer.kid == jwk_thumbprint(issuer.jwks()["keys"][0])


def test_restart_keeps_the_key_kid_and_issuer(tmp_path: Path) -> None:
    first = EmbeddedIssuer.load_or_create(tmp_path, issuer_url="http://127.0.0.1:8080")
    second = EmbeddedIssuer.load_or_create(tmp_path, issuer_url="http://other-host:9999")
    loaded = EmbeddedIssuer.load(tmp_path, issuer_url="")
    assert first.kid == second.kid == loaded.kid
    assert first.issuer == second.issuer == loaded.issuer == f"urn:openova-sandbox:{first.kid}"


def test_token_minted_by_the_cli_validates_against_the_server(tmp_path: Path) -> None:
    server = EmbeddedIssuer.load_or_create(tmp_path, issuer_url="http://localhost:8080")
    cli = EmbeddedIssuer.load(tmp_path, issuer_url="http://10.0.0.5:9000")
    token = cli.mint(sub="u1", email="u1@example.com", org="acme")
    validator = TokenValidator(StaticKeySource(server.jwks()), issuer=server.issuer)
    assert asyncio.run(validator.validate(token))["sub"] == "u1"


def test_load_without_a_key_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(NotFound) as info:
        EmbeddedIssuer.load(tmp_path, issuer_url="")
    assert info.value.detail == (
        f"no issuer key in {tmp_path}: run `sandbox serve --data-dir {tmp_path}` once first"
    )
    assert not (tmp_path / "issuer").exists()


def test_deleting_the_key_rotates_kid_and_issuer(tmp_path: Path) -> None:
    before = EmbeddedIssuer.load_or_create(tmp_path)
    old_token = before.mint(sub="u", email="", org="")
    key_path(tmp_path).unlink()
    after = EmbeddedIssuer.load_or_create(tmp_path)
    assert after.kid != before.kid
    assert after.issuer != before.issuer
    auth = Authenticator(TokenValidator(StaticKeySource(after.jwks()), issuer=after.issuer))
    with pytest.raises(Unauthenticated):
        asyncio.run(auth.authenticate(old_token))


def test_concurrent_first_starts_agree_on_one_key(tmp_path: Path) -> None:
    kids: list[str] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        barrier.wait(timeout=10)
        kids.append(EmbeddedIssuer.load_or_create(tmp_path).kid)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(kids) == 4
    assert len(set(kids)) == 1
    assert EmbeddedIssuer.load(tmp_path).kid == kids[0]
    assert [p.name for p in (tmp_path / "issuer").iterdir()] == ["signing-key.pem"]


def test_a_readable_key_file_is_tightened(tmp_path: Path) -> None:
    EmbeddedIssuer.load_or_create(tmp_path)
    key_path(tmp_path).chmod(0o644)
    EmbeddedIssuer.load(tmp_path)
    assert mode(key_path(tmp_path)) == 0o600


@pytest.mark.parametrize("content", [b"not a key", b""])
def test_a_corrupt_key_file_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = key_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises(Invalid, match="delete it"):
        EmbeddedIssuer.load_or_create(tmp_path)


def test_a_non_p256_key_file_is_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    path = key_path(tmp_path)
    path.parent.mkdir(parents=True)
    pem = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    with pytest.raises(Invalid, match="P-256"):
        EmbeddedIssuer.load(tmp_path)


def test_minted_claims_and_header() -> None:
    issuer = EmbeddedIssuer.generate()
    now = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    token = issuer.mint(
        sub="user-7",
        email="u7@example.com",
        org="acme",
        roles=["org-admin"],
        ttl=timedelta(minutes=10),
        extra={"tier": "pro", "preferred_username": "u7"},
        now=now,
    )
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "ES256", "typ": "JWT", "kid": issuer.kid}
    body = jwt.decode(token, options={"verify_signature": False})
    issued = int(now.timestamp())
    assert body["iss"] == issuer.issuer
    assert (body["sub"], body["email"], body["email_verified"]) == (
        "user-7",
        "u7@example.com",
        True,
    )
    assert body["org_id"] == "acme"
    assert body["realm_access"] == {"roles": ["org-admin"]}
    assert (body["iat"], body["nbf"], body["exp"]) == (issued, issued, issued + 600)
    assert (body["tier"], body["preferred_username"]) == ("pro", "u7")
    assert "aud" not in body
    assert len(body["jti"]) == 32


def test_audience_only_when_given() -> None:
    issuer = EmbeddedIssuer.generate()
    token = issuer.mint(sub="s", email="", org="", audience="sandbox")
    body = jwt.decode(token, options={"verify_signature": False})
    assert body["aud"] == "sandbox"
    assert "org_id" not in body
    assert body["email_verified"] is False


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sub": " "}, "sub"),
        ({"ttl": timedelta(0)}, "lifetime"),
        ({"extra": {"exp": 1, "iss": "x"}}, "exp, iss"),
    ],
)
def test_mint_refuses_bad_requests(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"sub": "s", "email": "", "org": ""}
    args.update(kwargs)
    with pytest.raises(Invalid, match=match):
        EmbeddedIssuer.generate().mint(**args)  # type: ignore[arg-type]


def test_minted_token_expires() -> None:
    issuer = EmbeddedIssuer.generate()
    past = datetime.fromtimestamp(time.time() - 7200, tz=UTC)
    token = issuer.mint(sub="s", email="", org="", ttl=timedelta(minutes=5), now=past)
    validator = TokenValidator(StaticKeySource(issuer.jwks()), issuer=issuer.issuer)
    with pytest.raises(Unauthenticated, match="expired"):
        asyncio.run(validator.validate(token))


def test_jwks_publishes_only_the_public_key() -> None:
    issuer = EmbeddedIssuer.generate()
    (jwk,) = issuer.jwks()["keys"]
    assert set(jwk) == {"kty", "crv", "x", "y", "kid", "alg", "use"}
    assert (jwk["kty"], jwk["crv"], jwk["alg"], jwk["use"]) == ("EC", "P-256", "ES256", "sig")
    issuer.jwks()["keys"][0]["kid"] = "changed"
    assert issuer.jwks()["keys"][0]["kid"] == issuer.kid  # callers get copies


def test_discovery_document() -> None:
    issuer = EmbeddedIssuer.generate(issuer_url="http://127.0.0.1:8080/")
    doc = issuer.openid_configuration()
    assert doc["issuer"] == issuer.issuer
    assert doc["jwks_uri"] == "http://127.0.0.1:8080/.well-known/jwks.json"
    assert doc["id_token_signing_alg_values_supported"] == ["ES256"]
    other = issuer.openid_configuration(base_url="https://sandbox.example")
    assert other["jwks_uri"] == "https://sandbox.example/.well-known/jwks.json"
    assert other["issuer"] == doc["issuer"]
