"""Sign-outs of token cookies: ``POST /logout`` of a console signed in with a JWT in its
``catalyst_session`` cookie (the embedded issuer's session token, or a token signed in
with at ``/login``).

Such a cookie holds no server-side session to forget: the JWT stays valid until its
``exp``. Logging out clears the cookie, and remembers the token here by its ``jti`` (and
``sub``) until it expires, so what was opened *from* that sign-in ends with it: the
preview grants minted from it (docs/mcp.md, "Previews") are refused from the next
request, and a preview WebSocket under one is closed (:meth:`SignOuts.wait`).

In this process's memory: the embedded server is one process, and the token cookie
lives there (Kubernetes mode's console signs in with server-side OIDC sessions, which
every replica shares; a token cookie signed out through one replica is known by that
replica only). A server restart forgets it, and ends every embedded preview with it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import weakref
from collections.abc import Callable

# at most this many sign-outs are remembered; past it the ones expiring first go
MAX_REMEMBERED = 100_000


def jwt_id(token: str) -> str:
    """The ``jti`` of a compact JWT, ``""`` when it has none. The payload is read, not
    verified: only for a token the authenticator has just admitted."""
    parts = token.split(".")
    if len(parts) != 3:
        return ""
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return ""
    jti = claims.get("jti") if isinstance(claims, dict) else None
    return jti if isinstance(jti, str) and 0 < len(jti) <= 256 else ""


class SignOuts:
    """Token cookies signed out of, by ``(sub, jti)``, until they expire."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._ended: dict[tuple[str, str], float] = {}  # (sub, jti) -> the token's exp
        # set when signed out here; kept only while a connection waits on it
        self._events: weakref.WeakValueDictionary[tuple[str, str], asyncio.Event] = (
            weakref.WeakValueDictionary()
        )

    def end(self, sub: str, jti: str, expires_at: float) -> None:
        """The token ``jti`` of ``sub`` was signed out of: remembered until it expires."""
        now = self._clock()
        if not jti or expires_at <= now:
            return
        if len(self._ended) >= MAX_REMEMBERED:
            for key in [k for k, exp in self._ended.items() if exp <= now]:
                del self._ended[key]
            while len(self._ended) >= MAX_REMEMBERED:
                del self._ended[min(self._ended, key=self._ended.__getitem__)]
        self._ended[(sub, jti)] = expires_at
        event = self._events.get((sub, jti))
        if event is not None:
            event.set()

    def ended(self, sub: str, jti: str) -> bool:
        """Whether the token ``jti`` of ``sub`` was signed out of (and has not expired)."""
        exp = self._ended.get((sub, jti))
        if exp is None:
            return False
        if exp <= self._clock():
            del self._ended[(sub, jti)]
            return False
        return True

    async def wait(self, sub: str, jti: str) -> None:
        """Return once the token ``jti`` of ``sub`` is signed out of (at once if it is)."""
        key = (sub, jti)
        event = self._events.get(key)
        if event is None:
            event = self._events[key] = asyncio.Event()
        if self.ended(sub, jti):
            return
        await event.wait()
