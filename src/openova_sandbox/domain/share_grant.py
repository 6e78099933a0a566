"""Share grants: how a sandbox's terminal server (Kubernetes mode) learns that the
control plane let someone in through a share link (docs/shares.md, "Kubernetes mode").

The control plane checks the link (``SharesService.access``) and then mints a grant for
that one attach: an HS256 JWT (``auth.share_grant``) naming the sandbox, the viewer,
the mode, the share and a short ``exp``. It is signed with the sandbox's own **grant
key**, derived here from the control plane's grant secret
(``SANDBOX_SHARE_GRANT_SECRET``, which the API and the operator share) and the
sandbox's namespace and name. The operator writes that derived key, and only it, into
the workspace namespace's Secret ``sandbox-share-grant``; the pod reads it as
``SANDBOX_SHARE_GRANT_KEY``. So a pod holds a key that opens itself and nothing else: a
grant minted for sandbox A fails the signature check in sandbox B's pod, and a pod that
is taken over learns no key of any other sandbox. The audience (namespace/name) is
checked too, independently of the key.

Pure: HMAC from the standard library, no JWT library (the domain imports none).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from .errors import Invalid

SHARE_GRANT_HEADER = "x-sandbox-share-grant"  # the relay's header to the pod
GRANT_TTL_SECONDS = 60  # a grant only opens the connection; the relay then holds it
GRANT_TYPE = "share-grant"  # the JWT's ``typ``: never mistaken for a user's token
MIN_SECRET_CHARS = 32
_LABEL = b"openova-sandbox/share-grant/v1"


@dataclass(frozen=True)
class ShareGrant:
    """What a verified grant says: ``who`` (email, else subject) may attach to
    ``namespace/sandbox`` in ``mode`` through ``share_id`` until the share's
    ``share_expires_at`` (epoch seconds)."""

    sandbox: str
    namespace: str
    who: str
    mode: str
    share_id: str
    share_expires_at: float
    grant_id: str


def check_secret(secret: str) -> None:
    """The grant secret must be long enough to be a key (raises ``Invalid``)."""
    if len(secret) < MIN_SECRET_CHARS:
        raise Invalid(
            f"SANDBOX_SHARE_GRANT_SECRET must be at least {MIN_SECRET_CHARS} characters "
            "(e.g. `openssl rand -base64 48`)",
            code="invalid-share-grant-secret",
        )


def derive_key(secret: str, namespace: str, sandbox: str) -> str:
    """The grant key of ``namespace/sandbox``: base64url(HMAC-SHA256(secret, label ‖
    namespace ‖ name)), NUL-separated so no two (namespace, name) pairs collide."""
    check_secret(secret)
    message = b"\0".join((_LABEL, namespace.encode(), sandbox.encode()))
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def audience(namespace: str, sandbox: str) -> str:
    """The ``aud`` of a grant for ``namespace/sandbox``'s terminal server."""
    return f"pty-server:{namespace}/{sandbox}"
