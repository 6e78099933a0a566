"""The ``catalyst_session`` cookie's optional HMAC signature.

The cookie may hold ``<jwt>.<sig>``: ``sig`` is the base64url (no padding) HMAC-SHA256 of
the jwt under the cookie secret. A compact JWS always has exactly three dot-separated
parts, so a four-part value is a signed one and the fourth part is the signature — no
separate marker is needed. The signature binds the cookie to this deployment (a token
minted elsewhere cannot be planted as a cookie without the secret); the JWT inside is
still validated in full afterwards. Comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac

from ..domain.errors import Invalid
from .keys import b64url

COOKIE_NAME = "catalyst_session"
COOKIE_MAX_AGE_S = 4 * 60 * 60


def cookie_signature(jwt: str, secret: str) -> str:
    digest = hmac.new(secret.encode("utf-8"), jwt.encode("utf-8"), hashlib.sha256).digest()
    return b64url(digest)


def sign_cookie(jwt: str, secret: str) -> str:
    """``<jwt>.<sig>`` for the cookie; ``Invalid`` when there is no secret to sign with."""
    if not secret:
        raise Invalid(
            "no cookie secret configured (SANDBOX_COOKIE_SECRET)", code="no-cookie-secret"
        )
    if jwt.count(".") != 2:
        raise Invalid("only a compact JWT (three dot-separated parts) can be signed")
    return f"{jwt}.{cookie_signature(jwt, secret)}"


def is_signed(value: str) -> bool:
    """A JWT has three dot-separated parts; a signed cookie value has four."""
    return value.count(".") == 3


def verify_cookie(value: str, secret: str) -> str | None:
    """The jwt inside a signed cookie value when its signature verifies, else ``None``.

    ``None`` too when there is no secret: a signature that cannot be checked is not
    trusted.
    """
    if not secret or not is_signed(value):
        return None
    jwt, _, sig = value.rpartition(".")
    expected = cookie_signature(jwt, secret)
    if not hmac.compare_digest(expected.encode("ascii"), sig.encode("utf-8", "replace")):
        return None
    return jwt
