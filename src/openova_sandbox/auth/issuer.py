"""The embedded token issuer: lets `sandbox serve` run with no external identity provider.

* **The key.** One ES256 (P-256) private key, generated on first start into
  ``<data_dir>/issuer/signing-key.pem`` (PKCS#8 PEM, file 0600, directory 0700). It is
  written to a temporary file, fsynced and then *linked* into place, so a reader never
  sees half a key and two processes starting at once end up with the same key (the
  loser of the race loads the winner's). A group- or world-readable key file is
  tightened to 0600 with a warning.
* **kid** is the RFC 7638 thumbprint of the public key: stable across restarts, derived
  from nothing but the key.
* **iss** is ``urn:openova-sandbox:<kid>``, likewise a pure function of the key. It is
  deliberately *not* the URL the server was reached through: a token minted by
  ``sandbox token`` must validate whether the browser came in via ``localhost``, an IP or
  a tunnel, and whether the port changed since the first start. Rotating the key
  (delete the file and restart) therefore changes both kid and iss, and every token
  minted before is rejected — which is what rotation is for.
* ``base_url`` (where the server is served) is used only for the discovery document's
  ``jwks_uri``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from ..domain.errors import Invalid, NotFound
from .keys import public_jwk

if TYPE_CHECKING:  # imported where a key is made or read (see auth.keys)
    from cryptography.hazmat.primitives.asymmetric import ec

log = structlog.get_logger(__name__)

ISSUER_DIR = "issuer"
KEY_FILE = "signing-key.pem"
ISSUER_PREFIX = "urn:openova-sandbox:"
JWKS_PATH = "/.well-known/jwks.json"
RESERVED_CLAIMS = frozenset({"iss", "sub", "iat", "nbf", "exp", "jti"})


def key_path(data_dir: Path) -> Path:
    return data_dir / ISSUER_DIR / KEY_FILE


class EmbeddedIssuer:
    """Mints ES256 tokens and publishes the matching JWKS and discovery document."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey, *, base_url: str = "") -> None:
        from cryptography.hazmat.primitives.asymmetric import ec

        if not isinstance(private_key.curve, ec.SECP256R1):
            raise Invalid("the embedded issuer needs a P-256 key", code="invalid-issuer-key")
        self._key = private_key
        self._jwk = public_jwk(private_key.public_key())
        self._base_url = base_url.rstrip("/")

    # --- construction -----------------------------------------------------------------
    @classmethod
    def generate(cls, *, issuer_url: str = "") -> EmbeddedIssuer:
        """A fresh in-memory issuer (nothing on disk): for tests and throwaway servers."""
        from cryptography.hazmat.primitives.asymmetric import ec

        return cls(ec.generate_private_key(ec.SECP256R1()), base_url=issuer_url)

    @classmethod
    def load(cls, data_dir: Path, *, issuer_url: str = "") -> EmbeddedIssuer:
        """The issuer whose key ``sandbox serve`` created; ``NotFound`` when there is none."""
        return cls(_read_key(_existing_key(data_dir)), base_url=issuer_url)

    @classmethod
    def from_pem(
        cls, pem: str, *, issuer_url: str = "", source: str = "SANDBOX_ISSUER_KEY"
    ) -> EmbeddedIssuer:
        """The issuer of a key given as PEM text (several servers sharing one key, e.g.
        every API replica in Kubernetes); ``Invalid`` naming ``source`` when it is not an
        unencrypted P-256 private key."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        try:
            key = serialization.load_pem_private_key(pem.strip().encode(), password=None)
        except (ValueError, TypeError) as exc:
            raise Invalid(
                f"{source} is not an unencrypted PEM private key ({exc})",
                code="invalid-issuer-key",
            ) from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(
            key.curve, ec.SECP256R1
        ):
            raise Invalid(f"{source} is not a P-256 EC key", code="invalid-issuer-key")
        return cls(key, base_url=issuer_url)

    @classmethod
    def loader(cls, data_dir: Path, *, issuer_url: str = "") -> Callable[[], EmbeddedIssuer]:
        """``load`` deferred: ``NotFound`` now when there is no key file, the key itself
        is read (and cryptography imported) when the answer is first called. What the
        lean ``sandbox pty-server`` trusts in embedded mode: nothing of PyJWT or
        cryptography is in memory until its first token."""
        _existing_key(data_dir)
        return lambda: cls.load(data_dir, issuer_url=issuer_url)

    @classmethod
    def load_or_create(cls, data_dir: Path, *, issuer_url: str = "") -> EmbeddedIssuer:
        """Load the key, generating it first when this data dir has none."""
        directory = data_dir / ISSUER_DIR
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        if stat.S_IMODE(directory.stat().st_mode) != 0o700:
            directory.chmod(0o700)
        path = directory / KEY_FILE
        if not path.exists():
            _create_key(path)
        return cls(_read_key(path), base_url=issuer_url)

    # --- identity ---------------------------------------------------------------------
    @property
    def kid(self) -> str:
        return str(self._jwk["kid"])

    @property
    def issuer(self) -> str:
        """The ``iss`` of every token minted here (see the module docstring)."""
        return ISSUER_PREFIX + self.kid

    @property
    def base_url(self) -> str:
        return self._base_url

    # --- tokens -----------------------------------------------------------------------
    def mint(
        self,
        *,
        sub: str,
        email: str,
        org: str,
        roles: Sequence[str] = (),
        ttl: timedelta = timedelta(hours=1),
        extra: Mapping[str, Any] | None = None,
        audience: str = "",
        now: datetime | None = None,
    ) -> str:
        """A signed ES256 JWT for ``sub``.

        Claims: iss, sub, email, email_verified, org_id (when ``org`` is set),
        realm_access.roles, iat, nbf (= iat), exp (= iat + ttl), jti, and aud only when
        ``audience`` is given. ``extra`` adds or replaces any other claim; the identity and
        time claims cannot be overridden through it.
        """
        if not sub.strip():
            raise Invalid("a token needs a non-empty sub", code="invalid-claims")
        if ttl <= timedelta(0):
            raise Invalid("token lifetime must be positive", code="invalid-claims")
        clash = sorted(RESERVED_CLAIMS.intersection(extra or {}))
        if clash:
            raise Invalid(
                f"claims {', '.join(clash)} are set by the issuer, not by extra",
                code="invalid-claims",
            )
        issued = int((now or datetime.now(UTC)).timestamp())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": sub,
            "email": email,
            "email_verified": bool(email),
            "realm_access": {"roles": list(roles)},
            "iat": issued,
            "nbf": issued,
            "exp": issued + int(ttl.total_seconds()),
            "jti": uuid.uuid4().hex,
        }
        if org:
            claims["org_id"] = org
        if audience:
            claims["aud"] = audience
        claims.update(extra or {})
        import jwt

        return jwt.encode(claims, self._key, algorithm="ES256", headers={"kid": self.kid})

    # --- publication ------------------------------------------------------------------
    def jwks(self) -> dict[str, Any]:
        """The public key set (never the private part)."""
        return {"keys": [dict(self._jwk)]}

    def openid_configuration(self, *, base_url: str | None = None) -> dict[str, Any]:
        """The discovery document; ``jwks_uri`` under ``base_url`` (default: the one given)."""
        base = (self._base_url if base_url is None else base_url).rstrip("/")
        return {
            "issuer": self.issuer,
            "jwks_uri": base + JWKS_PATH,
            "id_token_signing_alg_values_supported": ["ES256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "claims_supported": [
                "iss",
                "sub",
                "email",
                "email_verified",
                "org_id",
                "realm_access",
                "iat",
                "nbf",
                "exp",
                "jti",
            ],
        }


def _existing_key(data_dir: Path) -> Path:
    path = key_path(data_dir)
    if not path.is_file():
        raise NotFound(
            f"no issuer key in {data_dir}: run `sandbox serve --data-dir {data_dir}` once first"
        )
    return path


def _create_key(path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)  # fails if another process created it first: keep theirs
            created = True
        except FileExistsError:
            created = False
        except OSError:  # a filesystem without hard links: last writer wins, still atomic
            os.replace(tmp, path)
            created = True
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(path.parent)
    if created:
        log.info("auth.issuer.key_created", path=str(path))


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read_key(path: Path) -> ec.EllipticCurvePrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("auth.issuer.key_mode_tightened", path=str(path), mode=oct(mode))
        path.chmod(0o600)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise Invalid(
            f"{path} is not a readable unencrypted PEM private key ({exc}); "
            "delete it to generate a new one",
            code="invalid-issuer-key",
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise Invalid(
            f"{path} is not a P-256 EC key; delete it to generate a new one",
            code="invalid-issuer-key",
        )
    return key
