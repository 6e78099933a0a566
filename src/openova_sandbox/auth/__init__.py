"""Authentication: token sources, JWT/JWKS validation, claims → Principal, embedded issuer.

See ``docs/auth.md``. Import from here; the submodules are named by role.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .authenticator import Authenticator, build_authenticator
    from .cookie import COOKIE_MAX_AGE_S, COOKIE_NAME, sign_cookie, verify_cookie
    from .issuer import EmbeddedIssuer
    from .keys import KeySource, PublicKey, StaticKeySource, jwk_thumbprint
    from .oidc import RemoteJwks
    from .sources import CookieRejected, TokenFound, extract_token
    from .validator import TokenValidator

# Each name is imported from its submodule on first use (PEP 562), so importing one
# submodule (``auth.cookie`` for the edge's token extraction) loads neither PyJWT nor
# cryptography nor httpx: the lean ``sandbox pty-server`` loads them at its first token.
_SUBMODULE = {
    "Authenticator": "authenticator",
    "build_authenticator": "authenticator",
    "COOKIE_MAX_AGE_S": "cookie",
    "COOKIE_NAME": "cookie",
    "sign_cookie": "cookie",
    "verify_cookie": "cookie",
    "EmbeddedIssuer": "issuer",
    "KeySource": "keys",
    "PublicKey": "keys",
    "StaticKeySource": "keys",
    "jwk_thumbprint": "keys",
    "RemoteJwks": "oidc",
    "CookieRejected": "sources",
    "TokenFound": "sources",
    "extract_token": "sources",
    "TokenValidator": "validator",
}


def __getattr__(name: str) -> Any:
    submodule = _SUBMODULE.get(name)
    if submodule is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{submodule}"), name)
    globals()[name] = value
    return value


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
