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


# --- the server-side session's cookie (auth/oidc_sessions.py) ---------------------------
SESSION_PREFIX = "oidc:"
SESSION_KEY_LABEL = b"openova-sandbox oidc-session key v1"
_SESSION_SIG_LABEL = b"openova-sandbox oidc-session cookie v1:"


def derived_key(secret: str, label: bytes) -> bytes:
    """A key for one purpose, derived from the cookie secret (HMAC-SHA256 of a label)."""
    return hmac.new(secret.encode("utf-8"), label, hashlib.sha256).digest()


def session_cookie(sid: str, secret: str) -> str:
    """``oidc:<sid>:<sig>`` for a server-side session; a JWT never holds a colon, so a
    session cookie and a token cookie cannot be taken for each other."""
    if not secret:
        raise Invalid(
            "no cookie secret configured (SANDBOX_COOKIE_SECRET)", code="no-cookie-secret"
        )
    key = derived_key(secret, _SESSION_SIG_LABEL)
    sig = b64url(hmac.new(key, sid.encode("ascii"), hashlib.sha256).digest())
    return f"{SESSION_PREFIX}{sid}:{sig}"


def is_session(value: str) -> bool:
    return value.startswith(SESSION_PREFIX)


def session_id_of(value: str, secret: str) -> str | None:
    """The session id of a session cookie whose signature verifies, else ``None``."""
    if not secret or not is_session(value):
        return None
    sid, sep, _ = value[len(SESSION_PREFIX) :].partition(":")
    if not sep or not sid or len(sid) > 128 or not sid.isascii() or not sid.isprintable():
        return None
    expected = session_cookie(sid, secret)
    if not hmac.compare_digest(expected.encode("ascii"), value.encode("utf-8", "replace")):
        return None
    return sid
