"""The authenticated caller, derived from token claims."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import UnusableClaim

ORG_ADMIN_ROLE = "org-admin"
# the ``purpose`` claim of a login link's token: it opens /login once, nothing else
LOGIN_PURPOSE = "login"
# the ``purpose`` claim of a sandbox's MCP token (services.mcp_tokens): it opens the MCP
# server for that sandbox's agents, never the API
MCP_PURPOSE = "mcp"
# the ``purpose`` claim of a console sign-in's session token, minted for the token cookie
# when a login link is redeemed: it lives in that cookie only, so a sign-out ends it
# however it is presented (auth/signouts.py); an API token like any other otherwise
CONSOLE_PURPOSE = "console"
_TIER_RANK = {"free": 0, "user": 0, "pro": 1, "team": 2, "admin": 3, "owner": 4, "superadmin": 5}


@dataclass(frozen=True)
class Principal:
    sub: str
    email: str = ""
    org: str = ""
    roles: frozenset[str] = field(default_factory=frozenset)  # realm roles only
    tier: str = ""
    groups: tuple[str, ...] = ()
    username: str = ""
    scopes: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()
    # the token's ``exp`` (epoch seconds): live connections end then (issue 11)
    expires_at: float | None = field(default=None, compare=False)
    # the id of the personal access token the caller used; "" for a JWT (issue 11)
    via_token: str = field(default="", compare=False)

    def seconds_left(self) -> float | None:
        """Seconds until the token expires (0 when past); ``None`` when it does not say."""
        if self.expires_at is None:
            return None
        return max(0.0, self.expires_at - time.time())

    @property
    def is_org_admin(self) -> bool:
        """Realm role ``org-admin`` or a tier at or above ``admin`` (sessions-api.md),
        and an org to administer: without one the caller shares the default namespace
        with every other org-less user, so the role grants nothing (issue 11).
        Groups are not roles: a group named ``org-admin`` grants nothing."""
        if not self.org.strip():
            return False
        if ORG_ADMIN_ROLE in self.roles:
            return True
        return _TIER_RANK.get(self.tier.strip().lower(), -1) >= _TIER_RANK["admin"]


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, list | tuple):
        return tuple(v for v in value if isinstance(v, str))
    return ()


def _org_claim(claims: Mapping[str, Any]) -> str:
    """``org_id`` when it is a non-blank string, else the legacy ``org``. A claim that is
    present but not a string (a list, as Keycloak's organization claim comes; an object;
    a number) is refused, never read as "no org": an org-less caller would land in the
    shared default namespace."""
    for key in ("org_id", "org"):
        value = claims.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise UnusableClaim(
                f"the token's {key} claim is a {_json_type(value)}, not a string: this "
                "server takes the caller's organization from a single string"
            )
        if value.strip():
            return value
    return ""


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "list"
    return type(value).__name__


def principal_from_claims(claims: Mapping[str, Any]) -> Principal | None:
    """Build a Principal from validated claims; ``None`` when ``sub`` is missing;
    :class:`UnusableClaim` when the org claim is not a string."""
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.strip():
        return None
    org = _org_claim(claims)
    realm = claims.get("realm_access")
    roles = _strings(realm.get("roles")) if isinstance(realm, Mapping) else ()

    def text(key: str) -> str:
        value = claims.get(key)
        return value if isinstance(value, str) else ""

    return Principal(
        sub=sub,
        email=text("email").strip(),
        org=org.strip() if isinstance(org, str) else "",
        roles=frozenset(roles),
        tier=text("tier"),
        groups=_strings(claims.get("groups")),
        username=text("preferred_username"),
        scopes=_strings(claims.get("openova_scopes")),
        capabilities=_strings(claims.get("capabilities")),
        expires_at=_expiry(claims.get("exp")),
    )


def _expiry(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
