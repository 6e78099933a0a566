"""Authentication: token sources, JWT/JWKS validation, claims → Principal, embedded issuer.

See ``docs/auth.md``. Import from here; the submodules are named by role.
"""

from __future__ import annotations

from .authenticator import Authenticator, build_authenticator
from .cookie import COOKIE_MAX_AGE_S, COOKIE_NAME, sign_cookie, verify_cookie
from .issuer import EmbeddedIssuer
from .keys import KeySource, PublicKey, StaticKeySource, jwk_thumbprint
from .oidc import RemoteJwks
from .sources import CookieRejected, TokenFound, extract_token
from .validator import TokenValidator

__all__ = [
    "COOKIE_MAX_AGE_S",
    "COOKIE_NAME",
    "Authenticator",
    "CookieRejected",
    "EmbeddedIssuer",
    "KeySource",
    "PublicKey",
    "RemoteJwks",
    "StaticKeySource",
    "TokenFound",
    "TokenValidator",
    "build_authenticator",
    "extract_token",
    "jwk_thumbprint",
    "sign_cookie",
    "verify_cookie",
]
