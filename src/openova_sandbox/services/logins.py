"""Login links: exchange a token for the console's session cookie.

The link `sandbox serve` prints carries a short-lived token marked ``purpose: login``
with a ``jti``; it can be redeemed once (the jti is remembered until it expires) and is
exchanged for a fresh session token, so a link seen over someone's shoulder or left in a
scrollback cannot be replayed. Tokens without that mark (from `sandbox token` or an
external issuer) are used as the session token as they are.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Protocol

from ..domain.errors import Unauthenticated
from ..domain.principal import LOGIN_PURPOSE, Principal, principal_from_claims

SESSION_TTL = timedelta(hours=4)


class Minter(Protocol):
    def mint(
        self,
        *,
        sub: str,
        email: str,
        org: str,
        roles: Any = (),
        ttl: timedelta = ...,
        extra: Any = None,
    ) -> str: ...


class LoginService:
    def __init__(
        self,
        *,
        validate: Callable[[str], Awaitable[dict[str, Any]]],
        minter: Minter | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._validate = validate
        self._minter = minter
        self._clock = clock
        self._used: dict[str, float] = {}

    def login_link_token(self, *, sub: str, email: str, org: str, roles: list[str]) -> str:
        if self._minter is None:
            raise Unauthenticated("no embedded issuer to mint a login link")
        return self._minter.mint(
            sub=sub,
            email=email,
            org=org,
            roles=roles,
            ttl=timedelta(hours=1),
            extra={"purpose": LOGIN_PURPOSE},
        )

    async def inspect(self, token: str) -> tuple[bool, Principal]:
        """Whether ``token`` is a login link's, and whom it speaks for (validated)."""
        claims = await self._validate(token)
        principal = principal_from_claims(claims)
        if principal is None:
            raise Unauthenticated("token has no sub")
        return claims.get("purpose") == LOGIN_PURPOSE, principal

    async def redeem(self, token: str) -> str:
        claims = await self._validate(token)
        principal = principal_from_claims(claims)
        if principal is None:
            raise Unauthenticated("token has no sub")
        if claims.get("purpose") != LOGIN_PURPOSE:
            return token
        now = self._clock()
        self._used = {jti: exp for jti, exp in self._used.items() if exp > now}
        jti = str(claims.get("jti", ""))
        if not jti or jti in self._used:
            raise Unauthenticated("login link already used")
        self._used[jti] = float(claims.get("exp", now + 3600))
        if self._minter is None:
            raise Unauthenticated("no embedded issuer to mint a session")
        return self._minter.mint(
            sub=principal.sub,
            email=principal.email,
            org=principal.org,
            roles=sorted(principal.roles),
            ttl=SESSION_TTL,
        )
