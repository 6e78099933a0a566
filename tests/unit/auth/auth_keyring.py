"""Signing helpers shared by the auth unit tests (a plain module: conftest is for fixtures)."""

from __future__ import annotations

import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from openova_sandbox.auth.keys import public_jwk

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def jwk_of(key: PrivateKey, kid: str | None = None) -> dict[str, Any]:
    jwk = public_jwk(key.public_key(), kid=kid)
    if kid is None:
        jwk.pop("kid")
    return jwk


def jwks_of(*entries: tuple[PrivateKey, str | None]) -> dict[str, Any]:
    return {"keys": [jwk_of(key, kid) for key, kid in entries]}


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"sub": "user-1", "email": "a@example.com", "iat": now, "exp": now + 300}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(key: PrivateKey, payload: dict[str, Any], *, kid: str | None = None) -> str:
    alg = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(payload, key, algorithm=alg, headers=headers)
