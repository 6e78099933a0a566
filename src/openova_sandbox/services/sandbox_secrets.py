"""Each sandbox's secrets (issue 14, ``secrets.list|get|set``; docs/mcp.md, "Secrets").

- **Scope.** A secret belongs to one sandbox, by its uid: another sandbox (of the same
  owner too) never sees it, and a sandbox deleted and created again under the same name
  starts with none. The MCP tools pass the uid of the token's sandbox, never one the
  caller names.
- **Encrypted at rest.** Values are sealed here, before the backend sees them, with
  Fernet (AES-128-CBC + HMAC-SHA256) under a key derived from the cookie secret
  (HMAC-SHA256 of :data:`KEY_LABEL`), as the console's OIDC sessions are: every API
  replica of Kubernetes mode already shares that secret (``SANDBOX_COOKIE_SECRET``), and
  embedded mode keeps it in the data dir. The sealed text also holds the sandbox uid and
  the name, checked on opening, so a row copied onto another sandbox or name in the
  database does not open. Replacing the cookie secret makes the stored values unreadable
  (``secret-unreadable``: set them again).
- **Bounded.** Names ``[A-Za-z_][A-Za-z0-9_.-]*`` up to 128 characters (usable as
  environment variable names when they have no dot or dash); values are text up to
  :data:`MAX_VALUE_BYTES` (UTF-8); at most :data:`MAX_SECRETS` per sandbox.
- **Never logged.** Log events carry the sandbox and the secret's name, never the value;
  :class:`SecretValue` keeps it out of ``repr``.
- **Deleted with the sandbox**: :meth:`SandboxSecrets.forget` by
  ``services.sandbox_reaper`` when the sandbox is gone.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog
from cryptography.fernet import Fernet, InvalidToken

from ..auth.cookie import derived_key
from ..config import Settings
from ..domain.errors import BackendUnavailable, Invalid, NotFound, QuotaExceeded, SandboxError
from ..store.sql_secrets import SecretRow

log = structlog.get_logger(__name__)

KEY_LABEL = b"openova-sandbox sandbox-secrets key v1"
READ_CAPABILITY = "secrets.read"
NAME_PATTERN = r"[A-Za-z_][A-Za-z0-9_.-]{0,127}"
_NAME = re.compile(NAME_PATTERN)
MAX_NAME = 128
MAX_VALUE_BYTES = 64 * 1024
MAX_SECRETS = 100


class SecretBackend(Protocol):
    """Where sealed rows are kept: memory, or SQL (``store.sql_secrets``)."""

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def list(self, uid: str) -> list[SecretRow]: ...
    async def get(self, uid: str, name: str) -> SecretRow | None: ...
    async def put(
        self, uid: str, name: str, sealed: str, size: int, *, now: float, max_count: int
    ) -> bool: ...
    async def delete_sandbox(self, uid: str) -> int: ...
    async def sandboxes(self) -> dict[str, float]: ...


class MemorySecretBackend:
    """``SANDBOX_STORE=memory``: the rows in this process (sealed all the same)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], SecretRow] = {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def list(self, uid: str) -> list[SecretRow]:
        return sorted((r for (u, _), r in self.rows.items() if u == uid), key=lambda r: r.name)

    async def get(self, uid: str, name: str) -> SecretRow | None:
        return self.rows.get((uid, name))

    async def put(
        self, uid: str, name: str, sealed: str, size: int, *, now: float, max_count: int
    ) -> bool:
        old = self.rows.get((uid, name))
        if old is None and sum(1 for u, _ in self.rows if u == uid) >= max_count:
            return False
        created = old.created_at if old is not None else now
        self.rows[(uid, name)] = SecretRow(uid, name, sealed, size, created, now)
        return True

    async def delete_sandbox(self, uid: str) -> int:
        gone = [key for key in self.rows if key[0] == uid]
        for key in gone:
            del self.rows[key]
        return len(gone)

    async def sandboxes(self) -> dict[str, float]:
        oldest: dict[str, float] = {}
        for (uid, _), row in self.rows.items():
            oldest[uid] = min(oldest.get(uid, row.created_at), row.created_at)
        return oldest


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class SecretInfo:
    """What anyone with ``secrets.list`` may see of a secret: not its value."""

    name: str
    size: int
    created_at: float
    updated_at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size": self.size,
            "createdAt": _rfc3339(self.created_at),
            "updatedAt": _rfc3339(self.updated_at),
        }


@dataclass(frozen=True)
class SecretValue:
    info: SecretInfo
    value: str = field(repr=False)


def validate_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise Invalid(
            f"a secret name is 1-{MAX_NAME} characters of letters, digits, '_', '.' and "
            "'-', starting with a letter or '_'",
            code="invalid-secret-name",
        )
    return name


def validate_value(value: object) -> bytes:
    if not isinstance(value, str):
        raise Invalid("a secret value is a string", code="invalid-secret-value")
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a JSON "\ud800"
        raise Invalid("a secret value must be valid Unicode", code="invalid-secret-value") from None
    if len(raw) > MAX_VALUE_BYTES:
        raise Invalid(
            f"a secret value is at most {MAX_VALUE_BYTES} bytes (this one: {len(raw)})",
            code="secret-too-large",
        )
    return raw


UNREADABLE = (
    "the secret cannot be decrypted: the server's cookie secret changed since it was set "
    "(or the stored row was altered); set it again"
)


class SandboxSecrets:
    """The sandbox-scoped secret store over a backend; see the module docstring."""

    def __init__(
        self, backend: SecretBackend, *, key: bytes, clock: Callable[[], float] = time.time
    ) -> None:
        if len(key) != 32:
            raise ValueError("the secrets key is 32 bytes")
        self._backend = backend
        self._fernet = Fernet(base64.urlsafe_b64encode(key))
        self._clock = clock

    async def start(self) -> None:
        """Opened with the server; a database that cannot be reached then does not stop
        it: the backend opens on first use (the tools answer an error until then)."""
        try:
            await self._backend.start()
        except BackendUnavailable as exc:
            log.warning("secrets unreachable at start; opening on first use", error=exc.detail)

    async def stop(self) -> None:
        await self._backend.close()

    # --- sealing -------------------------------------------------------------------------

    def _seal(self, uid: str, name: str, value: str) -> str:
        plain = json.dumps({"uid": uid, "name": name, "value": value}, separators=(",", ":"))
        return self._fernet.encrypt(plain.encode("utf-8")).decode("ascii")

    def _open(self, row: SecretRow) -> str:
        try:
            data: Any = json.loads(self._fernet.decrypt(row.sealed.encode("ascii")))
        except (InvalidToken, ValueError, UnicodeError):
            data = None
        if (
            not isinstance(data, dict)
            or data.get("uid") != row.uid
            or data.get("name") != row.name
            or not isinstance(data.get("value"), str)
        ):
            log.warning("secret.unreadable", sandbox_uid=row.uid, secret=row.name)
            raise SandboxError(UNREADABLE, code="secret-unreadable")
        value: str = data["value"]
        return value

    # --- the operations ------------------------------------------------------------------

    async def list(self, uid: str) -> list[SecretInfo]:
        return [_info(row) for row in await self._backend.list(uid)]

    async def info(self, uid: str, name: str) -> SecretInfo:
        return _info(await self._row(uid, name))

    async def get(self, uid: str, name: str) -> SecretValue:
        row = await self._row(uid, name)
        return SecretValue(_info(row), self._open(row))

    async def set(self, uid: str, name: str, value: str) -> SecretInfo:
        validate_name(name)
        size = len(validate_value(value))
        sealed = self._seal(uid, name, value)
        if not await self._backend.put(
            uid, name, sealed, size, now=self._clock(), max_count=MAX_SECRETS
        ):
            raise QuotaExceeded(
                f"this sandbox already has {MAX_SECRETS} secrets, the most it may keep",
                code="too-many-secrets",
            )
        log.info("secret.set", sandbox_uid=uid, secret=name, size=size)
        return await self.info(uid, name)

    async def forget(self, uid: str) -> int:
        """Every secret of sandbox ``uid`` goes (the sandbox was deleted)."""
        removed = await self._backend.delete_sandbox(uid)
        if removed:
            log.info("secrets.removed", sandbox_uid=uid, count=removed)
        return removed

    async def known(self) -> dict[str, float]:
        """The sandbox uids holding secrets, with when their oldest one was set."""
        return await self._backend.sandboxes()

    async def _row(self, uid: str, name: str) -> SecretRow:
        validate_name(name)
        row = await self._backend.get(uid, name)
        if row is None:
            raise NotFound(f"this sandbox has no secret named {name!r}", code="secret-not-found")
        return row


def _info(row: SecretRow) -> SecretInfo:
    return SecretInfo(row.name, row.size, row.created_at, row.updated_at)


def secrets_backend(settings: Settings) -> SecretBackend:
    """Memory with ``SANDBOX_STORE=memory``; else the store's SQL database (Kubernetes
    mode: ``SANDBOX_DATABASE_URL``, shared by the replicas)."""
    if settings.store == "memory":
        return MemorySecretBackend()
    from ..store.sql_secrets import SqlSecretBackend

    if settings.store == "kube" and not settings.database_url:
        log.warning(
            "secrets_on_local_sqlite",
            detail="set SANDBOX_DATABASE_URL to the database every replica shares, or each "
            "replica keeps secrets of its own",
        )
    return SqlSecretBackend(settings.effective_database_url)


def build_sandbox_secrets(settings: Settings, *, cookie_secret: str) -> SandboxSecrets:
    if not cookie_secret:
        raise Invalid(
            "no cookie secret configured (SANDBOX_COOKIE_SECRET): sandbox secrets are "
            "encrypted with a key derived from it",
            code="no-cookie-secret",
        )
    return SandboxSecrets(secrets_backend(settings), key=derived_key(cookie_secret, KEY_LABEL))
