"""Claims → :class:`Principal` as the operator configured it (issue 11).

Identity providers put the caller's organization and admin rights in different places;
where they are is configuration (``SANDBOX_OIDC_*``, docs/auth.md, "Claim mapping"):

* **Org** — from the claim ``org_claim`` (a dotted path; default ``org_id``, with the
  legacy ``org`` as fallback when the default is kept), or, when ``org_group_prefix`` is
  set, from the caller's ``groups`` that start with it (``/orgs/acme/...`` → ``acme``).
  A string is the org. A list (Keycloak's ``organization`` claim), or an object whose
  keys are orgs (Keycloak's with attributes), or several matching groups, name the
  orgs the caller belongs to: the one the caller *asked for* is taken (the console's
  sign-in ``?org=``, the CLI's ``X-Sandbox-Org``); a request for one not among them is
  refused, and so is a list claim with no request, even a list of one (the issue's rule:
  the one matching a requested org, or refused). Org *groups* are different: one
  matching group is the caller's org; several need the request. Any other shape (a
  number, a list holding a number; an object under the default ``org_id``) is refused
  too. A refusal is :class:`UnusableClaim`: a 401 whose detail says what was found,
  never a silent default — an org-less caller would land in the shared namespace.
* **Org admin** — any of: a realm role in ``admin_roles`` (default ``org-admin``), a
  group in ``admin_groups`` (``{org}`` is replaced by the mapped org), a ``tier`` at or
  above ``admin_tier`` (default ``admin``; empty: tiers grant nothing). The decision is
  written into the Principal (``org-admin`` among its roles, or not) so the one rule of
  :class:`Principal` (an org is required) still applies.

The default mapping is what ``principal_from_claims`` has always done.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..domain.errors import UnusableClaim
from ..domain.principal import ORG_ADMIN_ROLE, Principal, principal_from_claims

if TYPE_CHECKING:
    from ..config import Settings

_TIER_RANK = {"free": 0, "user": 0, "pro": 1, "team": 2, "admin": 3, "owner": 4, "superadmin": 5}
DEFAULT_ORG_CLAIM = "org_id"
# the org a request asked for (the API's ``X-Sandbox-Org`` header; set by the HTTP glue
# around ``Authenticator.authenticate``): picks one of several orgs a token names
REQUESTED_ORG: ContextVar[str | None] = ContextVar("requested_org", default=None)
ORG_HEADER = "x-sandbox-org"
MAX_ORG_CHARS = 253


@contextmanager
def requested_org(headers: Mapping[str, str]) -> Iterator[None]:
    """Authenticate within this to read a token for the org the request's
    ``X-Sandbox-Org`` header asks for: the control plane's API and a sandbox pod's
    terminal server (to which the control plane relays the org it chose) alike."""
    asked = REQUESTED_ORG.set(headers.get(ORG_HEADER))
    try:
        yield
    finally:
        REQUESTED_ORG.reset(asked)


def _words(value: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(w.strip() for w in value.replace(",", " ").split() if w.strip())
    return tuple(w.strip() for w in value if w.strip())


@dataclass(frozen=True)
class ClaimMapping:
    org_claim: str = DEFAULT_ORG_CLAIM
    org_group_prefix: str = ""
    admin_roles: tuple[str, ...] = (ORG_ADMIN_ROLE,)
    admin_groups: tuple[str, ...] = ()
    admin_tier: str = "admin"
    _admin_rank: int = field(default=3, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        tier = self.admin_tier.strip().lower()
        if tier and tier not in _TIER_RANK:
            raise ValueError(
                f"admin tier {self.admin_tier!r} is not one of {', '.join(_TIER_RANK)}"
            )
        object.__setattr__(self, "_admin_rank", _TIER_RANK[tier] if tier else 99)

    @classmethod
    def from_settings(cls, settings: Settings) -> ClaimMapping:
        return cls(
            org_claim=settings.oidc_org_claim.strip() or DEFAULT_ORG_CLAIM,
            org_group_prefix=settings.oidc_org_group_prefix.strip(),
            admin_roles=_words(settings.oidc_admin_roles),
            admin_groups=_words(settings.oidc_admin_groups),
            admin_tier=settings.oidc_admin_tier.strip(),
        )

    @property
    def is_default(self) -> bool:
        return self == ClaimMapping()

    # --- the org ------------------------------------------------------------------
    def orgs_offered(self, claims: Mapping[str, Any]) -> list[str] | str:
        """The org as a string when the token names exactly one by a string claim, else
        the list of orgs it names (possibly empty). ``UnusableClaim`` for a bad shape."""
        if self.org_group_prefix:
            return self._orgs_from_groups(claims)
        names = [self.org_claim]
        if self.org_claim == DEFAULT_ORG_CLAIM:
            names.append("org")  # the legacy claim, as the spec reads it
        for name in names:
            found, value = _lookup(claims, name)
            if not found or value is None:
                continue
            if isinstance(value, str):
                if value.strip():
                    return value.strip()
                continue
            if isinstance(value, list | tuple):
                if not all(isinstance(v, str) for v in value):
                    raise UnusableClaim(
                        f"the token's {name} claim is a list holding something other than "
                        "strings: this server reads organizations as strings"
                    )
                return _unique(v.strip() for v in value if v.strip())
            if isinstance(value, Mapping) and self.org_claim != DEFAULT_ORG_CLAIM:
                # Keycloak's organization claim with attributes: {"acme": {...}, ...}
                return _unique(str(k).strip() for k in value if str(k).strip())
            raise UnusableClaim(
                f"the token's {name} claim is a {_json_type(value)}, not a string: this "
                "server takes the caller's organization from a single string"
            )
        return ""

    def _orgs_from_groups(self, claims: Mapping[str, Any]) -> list[str]:
        groups = claims.get("groups")
        if groups is None:
            return []
        if not isinstance(groups, list | tuple) or not all(isinstance(g, str) for g in groups):
            raise UnusableClaim("the token's groups claim is not a list of strings")
        prefix = self.org_group_prefix
        orgs = []
        for group in groups:
            if group.startswith(prefix):
                rest = group[len(prefix) :].strip("/")
                name = rest.split("/", 1)[0].strip()
                if name:
                    orgs.append(name)
        return _unique(orgs)

    def choose_org(self, claims: Mapping[str, Any], requested: str | None) -> str:
        """The caller's org under this mapping (``""``: the token names none)."""
        offered = self.orgs_offered(claims)
        # one org group is the caller's org; a claim that is a list always needs the
        # request (the issue: "a list → the one matching a requested org, or refused")
        alone_is_enough = bool(self.org_group_prefix)
        wanted = (requested or "").strip()
        where = (
            f"groups under {self.org_group_prefix!r}"
            if self.org_group_prefix
            else f"the token's {self.org_claim} claim"
        )
        if isinstance(offered, str):
            if wanted and wanted != offered:
                raise UnusableClaim(
                    f"organization {wanted!r} was asked for, but {where} says {offered!r}"
                )
            return offered
        if not offered:
            if wanted:
                raise UnusableClaim(
                    f"organization {wanted!r} was asked for, but {where} names none"
                )
            return ""
        if wanted:
            if wanted in offered:
                return wanted
            raise UnusableClaim(
                f"organization {wanted!r} is not among those {where} names: "
                + ", ".join(offered[:20])
            )
        if len(offered) == 1 and alone_is_enough:
            return offered[0]
        shape = "" if self.org_group_prefix else ", not a string"
        raise UnusableClaim(
            f"{where} names {len(offered)} organization(s){shape} ({', '.join(offered[:20])}): "
            "say which one to use (sign in choosing an organization, or `sandbox login "
            "--org`)",
        )

    # --- the principal ------------------------------------------------------------
    def principal(
        self, claims: Mapping[str, Any], *, requested_org: str | None = None
    ) -> Principal | None:
        """The caller; ``None`` without a usable ``sub``; ``UnusableClaim`` when the org
        cannot be told (see the module docstring)."""
        org = self.choose_org(claims, requested_org)
        if len(org) > MAX_ORG_CHARS:
            raise UnusableClaim(f"the organization name is longer than {MAX_ORG_CHARS} characters")
        # the org claim was read above; the domain's reading is given what it accepts
        plain = {k: v for k, v in claims.items() if k not in ("org_id", "org")}
        base = principal_from_claims(plain)
        if base is None:
            return None
        admin = self._is_admin(base, org)
        roles = set(base.roles) - {ORG_ADMIN_ROLE}
        if admin:
            roles.add(ORG_ADMIN_ROLE)
        tier = base.tier
        if not admin and _TIER_RANK.get(tier.strip().lower(), -1) >= _TIER_RANK["admin"]:
            tier = ""  # the mapping said no: the Principal's own tier rule must not say yes
        return replace(base, org=org, roles=frozenset(roles), tier=tier)

    def _is_admin(self, base: Principal, org: str) -> bool:
        if not org:
            return False
        if any(role in base.roles for role in self.admin_roles):
            return True
        if self.admin_groups:
            wanted = {g.replace("{org}", org) for g in self.admin_groups}
            if wanted.intersection(base.groups):
                return True
        return _TIER_RANK.get(base.tier.strip().lower(), -1) >= self._admin_rank


def _lookup(claims: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    """A claim by name, or by a dotted path into objects (``a.b``) when there is no
    claim with the dotted name itself."""
    if path in claims:
        return True, claims[path]
    node: Any = claims
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _unique(values: Any) -> list[str]:
    seen: dict[str, None] = {}
    for value in values:
        seen.setdefault(value, None)
    return list(seen)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__
