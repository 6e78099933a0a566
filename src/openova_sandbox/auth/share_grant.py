"""Share grants as JWTs (rules and key derivation in ``domain.share_grant``;
docs/shares.md, "Kubernetes mode").

:class:`ShareGrantIssuer` is the control plane's: it holds the grant secret and mints,
for one attach through a share link, an HS256 token signed with that sandbox's derived
key. :class:`ShareGrantVerifier` is the sandbox's terminal server's: it holds only its
own derived key and accepts a token only when

- the header is ``alg: HS256`` and ``typ: share-grant`` (no other algorithm is offered
  to the key, so no algorithm confusion; a user's RS256/ES256 token is never a grant);
- the signature verifies with this sandbox's key (a grant for another sandbox does not);
- ``aud`` is this sandbox (``pty-server:<namespace>/<name>``), ``exp`` has not passed
  (minted with a 60 s life), ``iat`` is not in the future;
- ``mode`` is ``read`` or ``write`` and ``share``/``who``/``jti`` are present;
- its ``jti`` was not used before (each grant opens one connection).

Every refusal is ``Unauthenticated`` with code ``share-grant-invalid``; the reason goes
to the log only.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import structlog

from ..domain.errors import Invalid, Unauthenticated
from ..domain.share_grant import (
    GRANT_TTL_SECONDS,
    GRANT_TYPE,
    ShareGrant,
    audience,
    check_secret,
    derive_key,
)
from ..domain.terminal_wire import READ, WRITE

log = structlog.get_logger(__name__)

ALGORITHM = "HS256"
ISSUER = "openova-sandbox-control-plane"
LEEWAY_SECONDS = 5  # clock skew between the control plane and a pod
INVALID = "share-grant-invalid"
REMEMBERED_JTIS = 4096


class ShareGrantIssuer:
    """Mints grants with per-sandbox keys derived from ``secret`` (the control plane's
    ``SANDBOX_SHARE_GRANT_SECRET``)."""

    def __init__(
        self,
        secret: str,
        *,
        ttl_seconds: int = GRANT_TTL_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        check_secret(secret)
        self._secret = secret
        self._ttl = ttl_seconds
        self._clock = clock

    def __repr__(self) -> str:
        return "ShareGrantIssuer(<secret>)"

    def mint(
        self,
        *,
        namespace: str,
        sandbox: str,
        who: str,
        mode: str,
        share_id: str,
        share_expires_at: float,
    ) -> str:
        now = int(self._clock())
        claims = {
            "iss": ISSUER,
            "aud": audience(namespace, sandbox),
            "sub": who,
            "mode": mode,
            "share": share_id,
            "shx": int(share_expires_at),
            "iat": now,
            "exp": now + self._ttl,
            "jti": secrets.token_urlsafe(16),
        }
        key = derive_key(self._secret, namespace, sandbox)
        import jwt

        return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"typ": GRANT_TYPE})


class ShareGrantVerifier:
    """Verifies grants for ``namespace/sandbox`` with its derived ``key`` (the pod's
    ``SANDBOX_SHARE_GRANT_KEY``); each grant is accepted once."""

    def __init__(
        self,
        key: str,
        *,
        namespace: str,
        sandbox: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(key) < 32:
            raise Invalid(
                "SANDBOX_SHARE_GRANT_KEY is too short to be a share grant key (the "
                "operator writes it from the Secret sandbox-share-grant)",
                code="invalid-share-grant-key",
            )
        self._key = key
        self._namespace = namespace
        self._sandbox = sandbox
        self._audience = audience(namespace, sandbox)
        self._clock = clock
        self._used: OrderedDict[str, float] = OrderedDict()  # jti -> exp
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ShareGrantVerifier({self._audience})"

    def __call__(self, token: str) -> ShareGrant:
        try:
            return self._verify(token)
        except Unauthenticated as exc:
            log.info("share_grant.refused", reason=exc.detail, sandbox=self._sandbox)
            raise

    def _verify(self, token: str) -> ShareGrant:
        # PyJWT (with cryptography, ~12 MiB) is imported at the first grant, not when
        # the pty-server starts with its share grant key (auth.keys, "idle memory")
        import jwt

        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise _invalid(f"malformed: {exc}") from exc
        if header.get("alg") != ALGORITHM or header.get("typ") != GRANT_TYPE:
            raise _invalid(f"not a share grant (alg {header.get('alg')!r})")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=ISSUER,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "aud", "iss", "jti", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise _invalid(f"{type(exc).__name__}: {exc}") from exc
        now = self._clock()
        mode, share, who, jti = (claims.get(k) for k in ("mode", "share", "sub", "jti"))
        shx = claims.get("shx")
        if mode not in (READ, WRITE):
            raise _invalid(f"mode {mode!r}")
        if not (isinstance(share, str) and share and isinstance(who, str) and who):
            raise _invalid("no share or viewer")
        if not isinstance(jti, str) or not jti:
            raise _invalid("no jti")
        if not isinstance(shx, int) or isinstance(shx, bool) or shx <= now:
            raise _invalid("the share has expired")
        self._spend(jti, float(claims["exp"]), now)
        return ShareGrant(
            sandbox=self._sandbox,
            namespace=self._namespace,
            who=who,
            mode=str(mode),
            share_id=share,
            share_expires_at=float(shx),
            grant_id=jti,
        )

    def _spend(self, jti: str, exp: float, now: float) -> None:
        with self._lock:
            for old, old_exp in list(self._used.items()):
                if old_exp + LEEWAY_SECONDS >= now and len(self._used) <= REMEMBERED_JTIS:
                    break
                del self._used[old]
            if jti in self._used:
                raise _invalid("replayed")
            self._used[jti] = exp


def _invalid(reason: str) -> Unauthenticated:
    return Unauthenticated(reason, code=INVALID)
