"""Each sandbox's share grant key in Kubernetes mode (docs/shares.md, "Kubernetes
mode"; docs/kubernetes.md): the operator derives it from the grant secret it shares
with the API (``SANDBOX_SHARE_GRANT_SECRET``) and the sandbox's namespace and name
(``domain.share_grant.derive_key``), and keeps it in the Secret ``sandbox-share-grant``
(key ``key``) of the sandbox's workspace namespace, which the pod reads as
``SANDBOX_SHARE_GRANT_KEY``. The grant secret itself never leaves the control plane's
namespace.

At the I/O edge, through ``pod_secret.py`` like the gateway token:
- a Secret holding the key already is kept (no write);
- a missing Secret is created (before the StatefulSet, so the pod starts with it);
- a Secret holding another key (the grant secret was rotated) is rewritten and the pod
  template stamped, so the pod starts again with the new key.
"""

from __future__ import annotations

import hmac

import structlog
from lightkube import AsyncClient

from ...domain.model import Sandbox
from ...domain.share_grant import derive_key
from .pod_secret import SecretReader, put_secret, secret_value
from .pod_secret import reader as _reader
from .render import SHARE_GRANT_KEY_SECRET

log = structlog.get_logger(__name__)


async def ensure_share_grant_key(
    client: AsyncClient,
    grant_secret: str,
    sandbox: Sandbox,
    namespace: str,
    *,
    labels: dict[str, str],
    read: SecretReader | None = None,
) -> bool:
    """Make the workspace namespace's Secret hold ``sandbox``'s grant key. True when it
    was written."""
    key = derive_key(grant_secret, sandbox.namespace, sandbox.name)
    existing = await (read or _reader(client))(SHARE_GRANT_KEY_SECRET, namespace)
    if existing is not None and hmac.compare_digest(secret_value(existing, "key"), key):
        return False
    created = await put_secret(
        client,
        name=SHARE_GRANT_KEY_SECRET,
        namespace=namespace,
        labels=labels,
        key="key",
        value=key,
        existed=existing is not None,
    )
    log.info(
        "share_grant_key_written",
        sandbox=sandbox.name,
        namespace=sandbox.namespace,
        workspace=namespace,
        replaced=not created,
    )
    return True
