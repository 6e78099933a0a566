"""Verification keys: what a JWKS becomes before any token is checked against it.

A published JWK is turned into a :class:`PublicKey` that carries exactly one algorithm,
decided by the key's *type* (RSA → RS256, EC P-256 → ES256), never by the token. That
is what makes algorithm confusion impossible: an HS256 token cannot be checked against
an RSA key, because the only algorithm that key is ever offered to is RS256. Keys we
cannot use (symmetric ``oct`` keys, other curves, ``use: enc``, small RSA moduli, an
``alg`` other than RS256/ES256) are skipped with a warning rather than failing the whole
set, so one odd key at the issuer does not lock everybody out.

The :class:`KeySource` Protocol is the seam between validation and where keys come from:
:class:`StaticKeySource` for a fixed JWKS (the embedded issuer) and
:class:`~openova_sandbox.auth.oidc.RemoteJwks` for an OIDC issuer.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias

import structlog

if TYPE_CHECKING:
    # imported where keys are parsed, not here: the pty-server loads PyJWT and
    # cryptography (~8.5 MiB) at its first token, not at start
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    VerifyKey: TypeAlias = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

log = structlog.get_logger(__name__)

Algorithm: TypeAlias = Literal["RS256", "ES256"]
ALGORITHMS: tuple[Algorithm, ...] = ("RS256", "ES256")
MIN_RSA_BITS = 2048

# RFC 7638 §3.2: the required members of each key type, in lexicographic order.
_THUMBPRINT_MEMBERS: Mapping[str, tuple[str, ...]] = {
    "RSA": ("e", "kty", "n"),
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
    "oct": ("k", "kty"),
}


@dataclass(frozen=True)
class PublicKey:
    """One usable verification key: the algorithm is bound to the key, not the token."""

    kid: str | None
    algorithm: Algorithm
    key: VerifyKey


class KeySource(Protocol):
    """Where verification keys come from.

    ``keys_for(kid)`` answers the keys a token with that ``kid`` may be checked against:
    the keys published under that kid, or every published key when the token has no kid.
    It raises :class:`~openova_sandbox.domain.errors.Unauthenticated` when no key set can
    be obtained at all.
    """

    async def keys_for(self, kid: str | None) -> list[PublicKey]: ...


def b64url(data: bytes) -> str:
    """base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url): a kid that is a pure function of the key."""
    kty = jwk.get("kty")
    members = _THUMBPRINT_MEMBERS.get(kty) if isinstance(kty, str) else None
    if members is None:
        raise ValueError(f"cannot take the thumbprint of a key of type {kty!r}")
    missing = [m for m in members if not isinstance(jwk.get(m), str)]
    if missing:
        raise ValueError(f"JWK lacks required member(s) {', '.join(missing)}")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


def public_jwk(key: VerifyKey, *, kid: str | None = None) -> dict[str, Any]:
    """The public JWK of ``key`` with ``alg``/``use`` set and ``kid`` (default: thumbprint)."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import ECAlgorithm, RSAAlgorithm

    if isinstance(key, rsa.RSAPublicKey):
        jwk = RSAAlgorithm.to_jwk(key, as_dict=True)
        alg: Algorithm = "RS256"
    else:
        jwk = ECAlgorithm.to_jwk(key, as_dict=True)
        alg = "ES256"
    jwk = {k: v for k, v in jwk.items() if k in _THUMBPRINT_MEMBERS[str(jwk["kty"])]}
    jwk.update(kid=kid or jwk_thumbprint(jwk), alg=alg, use="sig")
    return jwk


def key_from_jwk(jwk: Mapping[str, Any]) -> PublicKey:
    """Turn one JWK into a :class:`PublicKey`; ``ValueError`` says why it is unusable."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from jwt.algorithms import ECAlgorithm, RSAAlgorithm
    from jwt.exceptions import InvalidKeyError

    kty = jwk.get("kty")
    use = jwk.get("use")
    if use not in (None, "sig"):
        raise ValueError(f"key use is {use!r}, not 'sig'")
    declared = jwk.get("alg")
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise ValueError("kid is not a string")
    try:
        if kty == "RSA":
            if declared not in (None, "RS256"):
                raise ValueError(f"RSA key declared for {declared!r}, only RS256 is accepted")
            loaded: Any = RSAAlgorithm.from_jwk(dict(jwk))
            rsa_key = loaded.public_key() if isinstance(loaded, rsa.RSAPrivateKey) else loaded
            if not isinstance(rsa_key, rsa.RSAPublicKey):
                raise ValueError("not an RSA public key")
            if rsa_key.key_size < MIN_RSA_BITS:
                raise ValueError(f"RSA key of {rsa_key.key_size} bits is below {MIN_RSA_BITS}")
            return PublicKey(kid=kid, algorithm="RS256", key=rsa_key)
        if kty == "EC":
            if jwk.get("crv") != "P-256":
                raise ValueError(f"EC curve {jwk.get('crv')!r} is not P-256")
            if declared not in (None, "ES256"):
                raise ValueError(f"EC key declared for {declared!r}, only ES256 is accepted")
            loaded = ECAlgorithm.from_jwk(dict(jwk))
            ec_key = (
                loaded.public_key() if isinstance(loaded, ec.EllipticCurvePrivateKey) else loaded
            )
            if not isinstance(ec_key, ec.EllipticCurvePublicKey):
                raise ValueError("not an EC public key")
            return PublicKey(kid=kid, algorithm="ES256", key=ec_key)
    except InvalidKeyError as exc:
        raise ValueError(f"malformed {kty} key: {exc}") from exc
    raise ValueError(f"key type {kty!r} is not accepted (only RSA and EC P-256)")


def keys_from_jwks(jwks: Mapping[str, Any], *, origin: str = "jwks") -> list[PublicKey]:
    """Every usable key of a JWKS document; unusable ones are logged and skipped.

    ``ValueError`` when the document itself is not a JWKS (no ``keys`` list).
    """
    raw = jwks.get("keys")
    if not isinstance(raw, list):
        raise ValueError("JWKS document has no 'keys' list")
    keys: list[PublicKey] = []
    for index, entry in enumerate(raw):
        if not isinstance(entry, Mapping):
            log.warning("auth.jwks.key_skipped", origin=origin, index=index, reason="not an object")
            continue
        try:
            keys.append(key_from_jwk(entry))
        except ValueError as exc:
            log.warning(
                "auth.jwks.key_skipped",
                origin=origin,
                index=index,
                kid=entry.get("kid") if isinstance(entry.get("kid"), str) else None,
                reason=str(exc),
            )
    return keys


def select(keys: Sequence[PublicKey], kid: str | None) -> list[PublicKey]:
    """The keys a token with ``kid`` may be checked against.

    No kid: every key (some issuers omit it). A kid: the keys published under it; if none
    is, the keys published *without* a kid (an issuer that names its tokens but not its
    keys), and otherwise nothing.
    """
    if kid is None:
        return list(keys)
    matching = [k for k in keys if k.kid == kid]
    return matching or [k for k in keys if k.kid is None]


def has_kid(keys: Iterable[PublicKey], kid: str) -> bool:
    return any(k.kid == kid for k in keys)


class StaticKeySource:
    """A fixed key set, e.g. the embedded issuer's own JWKS. Never fetches anything."""

    def __init__(self, jwks: Mapping[str, Any]) -> None:
        self._keys = tuple(keys_from_jwks(jwks, origin="static"))

    @property
    def keys(self) -> tuple[PublicKey, ...]:
        return self._keys

    async def keys_for(self, kid: str | None) -> list[PublicKey]:
        return select(self._keys, kid)
