"""The one error tree.

Every layer raises these; adapters translate third-party exceptions into them once, and
`api.errors` maps them to HTTP in one place. ``code`` is the wire ``error`` string and
``detail`` the human text, so the mapping never has to invent words.
"""

from __future__ import annotations


class SandboxError(Exception):
    """Base of every error this project raises on purpose."""

    code: str = "internal-error"

    def __init__(self, detail: str = "", *, code: str | None = None) -> None:
        super().__init__(detail or self.code)
        self.detail = detail
        if code is not None:
            self.code = code


class Unauthenticated(SandboxError):
    """No usable credentials: missing, malformed, expired or badly signed token."""

    code = "unauthenticated"


class UnusableClaim(Unauthenticated):
    """A valid token whose claims cannot be used (an org claim that is not a string).
    Unlike other 401s its detail is sent: the caller cannot fix it by signing in again,
    the issuer's claim mapping must change."""


class Forbidden(SandboxError):
    """Authenticated, but not allowed (e.g. BYOS disabled by policy)."""

    code = "forbidden"


class NotFound(SandboxError):
    code = "not-found"


class Conflict(SandboxError):
    """A write lost a race (stale resourceVersion) or collides with existing state."""

    code = "conflict"


class AlreadyExists(Conflict):
    code = "already-exists"


class Invalid(SandboxError):
    """The caller's input is wrong; ``code`` names the rule it broke."""

    code = "invalid"


class QuotaExceeded(SandboxError):
    code = "quota-exceeded"


class SessionLimit(QuotaExceeded):
    code = "session-limit"


class BackendUnavailable(SandboxError):
    """The store (or another backend) cannot be reached; the caller should retry later."""

    code = "sandbox-backend-unavailable"

    def __init__(self, detail: str = "", *, code: str | None = None, retry_after: int = 30) -> None:
        super().__init__(detail, code=code)
        self.retry_after = retry_after


class BackendForbidden(SandboxError):
    """The backend refused us (e.g. a 403 from an API server): a visible 500, not a 503."""

    code = "backend-forbidden"


class SpawnFailed(SandboxError):
    """A terminal process could not be started (binary missing, exec error)."""

    code = "spawn-failed"


class IllegalTransition(SandboxError):
    """A state machine was asked to move backwards or sideways."""

    code = "illegal-transition"


# terminal-protocol.md writes this 400's error string with a space, unlike the others
UNSUPPORTED_SIGNAL = "unsupported signal"
