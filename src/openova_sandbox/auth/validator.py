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
"""

from __future__ import annotations

from typing import Any

from ..domain.errors import Unauthenticated
from .keys import ALGORITHMS, KeySource

MAX_TOKEN_CHARS = 16 * 1024


class TokenValidator:
    """Checks a compact JWS against a :class:`KeySource` and answers its claims."""

    def __init__(
        self,
        keys: KeySource,
        *,
        issuer: str = "",
        audience: str = "",
        leeway_s: int = 30,
    ) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_s

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
                return jwt.decode(
                    token,
                    key.key,
                    algorithms=[key.algorithm],
                    options={
                        "require": ["exp"],
                        "verify_iss": bool(self._issuer),
                        "verify_aud": bool(self._audience),
                    },
                    issuer=self._issuer or None,
                    audience=self._audience or None,
                    leeway=self._leeway,
                )
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
                raise Unauthenticated(
                    f"token audience does not include {self._audience!r}"
                ) from exc
            except InvalidIssuedAtError as exc:
                raise Unauthenticated(f"token iat is invalid: {exc}") from exc
            except InvalidTokenError as exc:
                raise Unauthenticated(f"invalid token: {exc}") from exc
            except PyJWTError as exc:  # e.g. a key that does not fit the algorithm
                raise Unauthenticated(f"token could not be verified: {exc}") from exc
        raise Unauthenticated(
            f"signature does not verify against {len(candidates)} {alg} key(s) for kid {kid!r}"
        )
