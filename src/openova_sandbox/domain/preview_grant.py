"""Preview grants: the capability in a preview's address (docs/mcp.md, "Previews").

A preview's pages are served with ``Content-Security-Policy: sandbox`` (no
``allow-same-origin``): they run in an opaque origin, so the browser sends them none of
the console's ``SameSite=Strict`` cookie and shows them none of its storage. Their own
requests (subresources, fetches, the dev server's socket) are authenticated instead by
a grant in the path, ``/preview/<sandbox>/<port>/~<grant>/…``, which the proxy mints
when the owner's signed-in visit arrives at the plain ``/preview/<sandbox>/<port>/``.

A grant is ``<payload>.<signature>``: the payload a base64url JSON object naming the
sandbox (namespace and name), the port, the preview *instance* (a random id of one run
of the preview: started again on the same port, it is another instance), the user it
was minted for (subject, email, org, roles, tier: the proxy checks that user's access
to the sandbox again on every request), the sign-in it was minted from (the
*credential*, below) and its expiry; the signature a base64url HMAC-SHA256 of the
payload under a key derived from the server's cookie secret (every replica that signs
the console's cookies checks grants alike). So a grant opens one port of one sandbox,
for one run of its preview, as one user, for as long as the sign-in lasts and at most
until it expires: a stopped preview, one started again, a deleted sandbox, a user who
lost access, or the sign-in ended (signed out, the token revoked) makes it worthless.

The credential names the sign-in without giving it away (the grant is in the page's
address, which the page and its server read): ``s:<handle>`` a console session
(auth/oidc_sessions.py, the SHA-256 of its id), ``t:<id>`` a personal access token (its
id, which is not the token), ``j:<jti>`` a JWT by its id (a token cookie is signed out
of by ``POST /logout``: auth/signouts.py), ``""`` a JWT without one (it ends at its
expiry only).

Pure: HMAC and JSON from the standard library.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from .errors import Unauthenticated

GRANT_MARK = "~"  # the path segment after the port that carries a grant starts with it
GRANT_TTL_SECONDS = 4 * 60 * 60  # at most; never past the sign-in it was minted from
KEY_LABEL = b"openova-sandbox preview-grant key v1"
MAX_GRANT_CHARS = 2048
INVALID = "preview-grant-invalid"
# the kinds of sign-in a grant can be bound to (``PreviewGrant.credential``)
VIA_SESSION = "s"
VIA_TOKEN = "t"
VIA_JWT = "j"
EXPIRED = "preview-grant-expired"


@dataclass(frozen=True)
class PreviewGrant:
    namespace: str
    sandbox: str
    port: int
    instance: str
    sub: str
    email: str
    org: str
    roles: tuple[str, ...]
    tier: str
    expires_at: int  # epoch seconds
    credential: str = ""  # the sign-in it came from: ``<kind>:<id>``, "" for none

    @property
    def via(self) -> tuple[str, str]:
        """The credential as ``(kind, id)``; ``("", "")`` for none."""
        return via_of(self.credential)


def credential(kind: str, ident: str) -> str:
    """``<kind>:<id>`` for a grant's ``credential``; ``""`` when ``ident`` is empty."""
    return f"{kind}:{ident}" if ident else ""


def via_of(text: str) -> tuple[str, str]:
    """A ``credential`` as ``(kind, id)``; ``("", "")`` for none."""
    kind, _, ident = text.partition(":")
    return (kind, ident) if ident else ("", "")


class GrantRefused(Unauthenticated):
    """A grant that does not open this preview: ``code`` says whether it is malformed,
    forged or for another place (``preview-grant-invalid``) or past its expiry
    (``preview-grant-expired``)."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest())


def mint_grant(key: bytes, grant: PreviewGrant) -> str:
    claims = {
        "n": grant.namespace,
        "s": grant.sandbox,
        "p": grant.port,
        "i": grant.instance,
        "u": grant.sub,
        "e": grant.email,
        "o": grant.org,
        "r": list(grant.roles),
        "t": grant.tier,
        "x": grant.expires_at,
        "c": grant.credential,
    }
    payload = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    return f"{payload}.{_signature(key, payload)}"


def read_grant(key: bytes, text: str, *, sandbox: str, port: int, now: float) -> PreviewGrant:
    """The grant ``text`` says, when it is signed with ``key``, names ``sandbox`` and
    ``port`` and has not expired; else :class:`GrantRefused` (its detail never
    repeats the grant)."""
    if len(text) > MAX_GRANT_CHARS or text.count(".") != 1:
        raise GrantRefused("the preview grant is malformed", code=INVALID)
    payload, signature = text.split(".")
    try:
        payload.encode("ascii")
        expected = _signature(key, payload)
    except UnicodeEncodeError as exc:
        raise GrantRefused("the preview grant is malformed", code=INVALID) from exc
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        raise GrantRefused("the preview grant's signature does not verify", code=INVALID)
    try:
        claims: Any = json.loads(_unb64(payload))
    except (ValueError, binascii.Error) as exc:
        raise GrantRefused("the preview grant is malformed", code=INVALID) from exc
    grant = _grant(claims)
    if grant.sandbox != sandbox or grant.port != port:
        raise GrantRefused("the preview grant is for another preview", code=INVALID)
    if grant.expires_at <= now:
        raise GrantRefused("the preview grant has expired", code=EXPIRED)
    return grant


def _grant(claims: Any) -> PreviewGrant:
    def text(name: str) -> str:
        value = claims.get(name)
        if not isinstance(value, str):
            raise GrantRefused(f"the preview grant's {name!r} is not a string", code=INVALID)
        return value

    if not isinstance(claims, dict):
        raise GrantRefused("the preview grant is malformed", code=INVALID)
    port, expires, roles = claims.get("p"), claims.get("x"), claims.get("r")
    if (
        not (isinstance(port, int) and isinstance(expires, int))
        or isinstance(port, bool)
        or isinstance(expires, bool)
    ):
        raise GrantRefused("the preview grant's port or expiry is not a number", code=INVALID)
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise GrantRefused("the preview grant's roles are not a list of names", code=INVALID)
    grant = PreviewGrant(
        namespace=text("n"),
        sandbox=text("s"),
        port=port,
        instance=text("i"),
        sub=text("u"),
        email=text("e"),
        org=text("o"),
        roles=tuple(roles),
        tier=text("t"),
        expires_at=expires,
        credential=text("c"),
    )
    if grant.credential and grant.via[0] not in (VIA_SESSION, VIA_TOKEN, VIA_JWT):
        raise GrantRefused("the preview grant names no sign-in it knows", code=INVALID)
    return grant
