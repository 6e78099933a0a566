"""JWT validation: signature, algorithm, time and (when configured) issuer and audience.

Rules (sessions API, "Authentication"):

* Algorithms are exactly RS256 and ES256. The header's ``alg`` only *selects* among the
  keys: each key verifies with the one algorithm bound to its type (see ``keys``), so
  ``none``, HS256-signed-with-the-public-key and RS/ES mix-ups all fail.
* The key is chosen by ``kid``; a token without one is tried against every key.
* ``exp`` is required and enforced; ``nbf`` and ``iat`` are enforced when present; all
  with ``leeway_s`` of clock skew.
* ``iss`` and ``aud`` are enforced only when configured (an empty string means "not
  configured"); a token's ``aud`` is ignored when no audience is configured.

Every failure is :class:`Unauthenticated` whose ``detail`` says why — for logs only; the
API answers 401 without a detail. The token itself never appears in a detail.

A token that verified is remembered (its exact text, with the key that verified it, in
memory, at most ``VERIFIED_SECONDS`` and ``VERIFIED_MAX`` of them): the same token again
is answered without parsing it or checking its signature (issue 11: that was a quarter
of a list request's cost, and a console sends its token with every request). Each use
still asks the key source for the token's kid (which refreshes a remote JWKS on its
schedule) and is refused unless the remembered key is still published, and ``exp`` is
still checked with the same leeway: a remembered token stops working when it expires
or its key is withdrawn, as an unremembered one does.
"""

from __future__ import annotations

import time
from typing import Any

from ..domain.errors import Unauthenticated
from .keys import ALGORITHMS, KeySource, PublicKey

MAX_TOKEN_CHARS = 16 * 1024
VERIFIED_SECONDS = 60.0  # how long a verified token is answered from memory
VERIFIED_MAX = 4096  # tokens remembered at most (the oldest go first)


class TokenValidator:
    """Checks a compact JWS against a :class:`KeySource` and answers its claims."""

    def __init__(
        self,
        keys: KeySource,
        *,
        issuer: str = "",
        audience: str = "",
        leeway_s: int = 30,
        more_audiences: tuple[str, ...] = (),
    ) -> None:
        """``more_audiences``: further audiences accepted besides ``audience`` (a
        token's ``aud`` must name one of them); ignored without ``audience``."""
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._audiences = (
            tuple(dict.fromkeys(a for a in (audience, *more_audiences) if a)) if audience else ()
        )
        self._leeway = leeway_s
        # token text → (monotonic time it is forgotten, its exp, the key that verified
        # it, its kid, its claims)
        self._verified: dict[str, tuple[float, float, PublicKey, str | None, dict[str, Any]]] = {}

    @property
    def issuer(self) -> str:
        return self._issuer

    @property
    def audience(self) -> str:
        return self._audience

    async def validate(self, token: str) -> dict[str, Any]:
        if not token:
            raise Unauthenticated("empty token")
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthenticated(f"token longer than {MAX_TOKEN_CHARS} characters")
        known = self._verified.pop(token, None)
        if known is not None:
            forget_at, exp, key, kid, claims = known
            if time.time() >= exp + self._leeway:
                raise Unauthenticated("token has expired")
            if time.monotonic() < forget_at and key in await self._keys.keys_for(kid):
                self._verified[token] = known
                return dict(claims)
        claims, key = await self._verify(token)
        expires = claims.get("exp")
        if isinstance(expires, int | float) and not isinstance(expires, bool):
            while len(self._verified) >= VERIFIED_MAX:
                del self._verified[next(iter(self._verified))]
            forget_at = time.monotonic() + VERIFIED_SECONDS
            self._verified[token] = (forget_at, float(expires), key, key.kid, claims)
            return dict(claims)
        return claims

    async def _verify(self, token: str) -> tuple[dict[str, Any], PublicKey]:
        # imported at the first token, not at start (the lean pty-server's idle memory)
        import jwt
        from jwt.exceptions import (
            ExpiredSignatureError,
            ImmatureSignatureError,
            InvalidAudienceError,
            InvalidIssuedAtError,
            InvalidIssuerError,
            InvalidSignatureError,
            InvalidTokenError,
            MissingRequiredClaimError,
            PyJWTError,
        )

        try:
            header = jwt.get_unverified_header(token)
        except PyJWTError as exc:
            raise Unauthenticated(f"malformed token: {exc}") from exc
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise Unauthenticated(f"algorithm {alg!r} is not accepted (only RS256, ES256)")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise Unauthenticated("kid in the token header is not a string")

        candidates = [k for k in await self._keys.keys_for(kid) if k.algorithm == alg]
        if not candidates:
            raise Unauthenticated(f"no {alg} key published for kid {kid!r}")
        for key in candidates:
            try:
                claims = jwt.decode(
                    token,
                    key.key,
                    algorithms=[key.algorithm],
                    options={
                        "require": ["exp"],
                        "verify_iss": bool(self._issuer),
                        "verify_aud": bool(self._audience),
                    },
                    issuer=self._issuer or None,
                    audience=list(self._audiences) or None,
                    leeway=self._leeway,
                )
                return claims, key
            except InvalidSignatureError:
                continue  # another key with this kid (or no kid) may have signed it
            except ExpiredSignatureError as exc:
                raise Unauthenticated("token has expired") from exc
            except ImmatureSignatureError as exc:
                raise Unauthenticated("token is not yet valid") from exc
            except MissingRequiredClaimError as exc:
                raise Unauthenticated(f"token lacks the required claim {exc.claim!r}") from exc
            except InvalidIssuerError as exc:
                raise Unauthenticated(f"token issuer is not {self._issuer!r}") from exc
            except InvalidAudienceError as exc:
                named = " or ".join(repr(a) for a in self._audiences)
                raise Unauthenticated(f"token audience does not include {named}") from exc
            except InvalidIssuedAtError as exc:
                raise Unauthenticated(f"token iat is invalid: {exc}") from exc
            except InvalidTokenError as exc:
                raise Unauthenticated(f"invalid token: {exc}") from exc
            except PyJWTError as exc:  # e.g. a key that does not fit the algorithm
                raise Unauthenticated(f"token could not be verified: {exc}") from exc
        raise Unauthenticated(
            f"signature does not verify against {len(candidates)} {alg} key(s) for kid {kid!r}"
        )
