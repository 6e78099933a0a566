"""Per-user Claude Code tokens, encrypted at rest in the data directory.

A subscription token is as good as the user's Claude account, so it never sits on disk
in clear: each user's tokens are one Fernet-encrypted file (AES-128-CBC + HMAC-SHA256)
named by the SHA-256 of the user's ``sub`` (the directory listing reveals no user ids).
The key is generated once into ``<data_dir>/byos/key`` with mode 0600 and published
atomically (hard link of a finished temp file), so two processes starting together agree
on one key. Writes go to a temp file in the same directory and are renamed into place,
so a crash leaves the old tokens or the new ones, never half a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import structlog
from cryptography.fernet import Fernet, InvalidToken

log = structlog.get_logger(__name__)

KEY_FILE = "key"
TOKENS_DIR = "tokens"
SUFFIX = ".fernet"


@dataclass(frozen=True)
class StoredTokens:
    """One user's connection. The secrets are kept out of ``repr`` (and so out of logs)."""

    access_token: str = field(repr=False)
    refresh_token: str = field(default="", repr=False)
    token_type: str = "Bearer"
    scope: str = ""
    expires_at: float | None = None
    account_email: str = ""
    connected_at: float = 0.0

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> StoredTokens:
        data: Any = json.loads(raw)
        if not isinstance(data, dict) or not isinstance(data.get("access_token"), str):
            raise ValueError("not a token record")
        expires = data.get("expires_at")
        return cls(
            access_token=data["access_token"],
            refresh_token=str(data.get("refresh_token") or ""),
            token_type=str(data.get("token_type") or "Bearer"),
            scope=str(data.get("scope") or ""),
            expires_at=float(expires) if isinstance(expires, int | float) else None,
            account_email=str(data.get("account_email") or ""),
            connected_at=float(data.get("connected_at") or 0.0),
        )


def _write_private(path: Path, payload: bytes) -> Path:
    """Write ``payload`` to a fresh 0600 temp file next to ``path``; return the temp path."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, payload)
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


class TokenVault:
    """Encrypted token files under ``root`` (``<data_dir>/byos``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._fernet: Fernet | None = None

    def path_for(self, sub: str) -> Path:
        digest = hashlib.sha256(sub.encode("utf-8")).hexdigest()
        return self.root / TOKENS_DIR / f"{digest}{SUFFIX}"

    def put(self, sub: str, tokens: StoredTokens) -> None:
        path = self.path_for(sub)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = _write_private(path, self._cipher().encrypt(tokens.to_json()))
        os.replace(tmp, path)

    def get(self, sub: str) -> StoredTokens | None:
        """The user's tokens; ``None`` when not connected or the file cannot be decrypted
        (for instance after the key was replaced): the user simply connects again."""
        path = self.path_for(sub)
        try:
            sealed = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return StoredTokens.from_json(self._cipher().decrypt(sealed))
        except (InvalidToken, ValueError) as exc:
            log.warning("byos token file unreadable", file=path.name, error=type(exc).__name__)
            return None

    def delete(self, sub: str) -> bool:
        try:
            self.path_for(sub).unlink()
        except FileNotFoundError:
            return False
        return True

    def _cipher(self) -> Fernet:
        if self._fernet is None:
            self._fernet = Fernet(self._load_or_create_key())
        return self._fernet

    def _load_or_create_key(self) -> bytes:
        key_path = self.root / KEY_FILE
        if not key_path.exists():
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = _write_private(key_path, Fernet.generate_key())
            try:
                os.link(tmp, key_path)  # fails if another process published a key first
                log.info("byos encryption key created", path=str(key_path))
            except FileExistsError:
                pass
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
        return key_path.read_bytes().strip()
