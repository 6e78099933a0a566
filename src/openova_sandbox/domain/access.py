"""Who may use a sandbox's terminals and API item: its owner or an admin of its org.

One rule for the control plane (``SessionsService.can_see``) and the terminal server
(``sandbox pty-server``): the caller's namespace (their ``org`` claim verbatim, else the
configured default) must be the sandbox's namespace, and the caller must own the sandbox
or be an org admin. The owner is recognised by token subject when it is known, else by
email (case-insensitive). Namespaces are compared, not org slugs: every org name that is
not a valid slug shares the slug ``default``, so a slug comparison would let an admin of
one such org into another's sandboxes.
"""

from __future__ import annotations

from dataclasses import dataclass

from .naming import namespace_for
from .principal import Principal

OWNER, ADMIN, SHARE = "owner", "admin", "share"  # how a viewer got in (logged as ``via``)


@dataclass(frozen=True)
class SandboxOwner:
    """What the rule needs to know about a sandbox. Without a namespace (a terminal
    server configured without one) only the owner is admitted."""

    namespace: str
    email: str = ""
    sub: str = ""

    def owned_by(self, principal: Principal) -> bool:
        if self.sub.strip():
            return principal.sub == self.sub.strip()
        email = principal.email.strip().lower()
        return bool(email) and self.email.strip().lower() == email

    def admits(self, principal: Principal, default_namespace: str | None) -> str | None:
        """``"owner"`` or ``"admin"`` when the caller may use the sandbox, else ``None``."""
        namespace = self.namespace.strip()
        if namespace and namespace_for(principal.org, default_namespace) != namespace:
            return None
        if self.owned_by(principal):
            return OWNER
        if namespace and principal.is_org_admin:
            return ADMIN
        return None
