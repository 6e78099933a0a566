"""Each sandbox's share grant key in Kubernetes mode (docs/shares.md, "Kubernetes
mode"; docs/kubernetes.md): the operator derives it from the grant secret it shares
with the API (``SANDBOX_SHARE_GRANT_SECRET``) and the sandbox's namespace and name
(``domain.share_grant.derive_key``), and keeps it in the Secret ``sandbox-share-grant``
(key ``key``) of the sandbox's workspace namespace, which the pod reads as
``SANDBOX_SHARE_GRANT_KEY``. The grant secret itself never leaves the control plane's
namespace.

At the I/O edge, like the gateway token (``gateway_token.py``):
- a Secret holding the key already is kept (no write);
- a missing Secret is created (before the StatefulSet, so the pod starts with it);
- a Secret holding another key (the grant secret was rotated) is rewritten and the pod
  template stamped, so the pod starts again with the new key.
"""

from __future__ import annotations

import base64
import hmac
from typing import Any

import structlog
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Secret
from lightkube.types import PatchType

from ...domain.model import Sandbox
from ...domain.share_grant import derive_key
from .gateway_token import _restart_pod
from .render import SHARE_GRANT_KEY_SECRET

log = structlog.get_logger(__name__)


def _key_of(secret: Any) -> str:
    data = getattr(secret, "data", None) or {}
    raw = data.get("key", "")
    return base64.b64decode(raw).decode() if raw else ""


async def ensure_share_grant_key(
    client: AsyncClient,
    grant_secret: str,
    sandbox: Sandbox,
    namespace: str,
    *,
    labels: dict[str, str],
) -> bool:
    """Make the workspace namespace's Secret hold ``sandbox``'s grant key. True when it
    was written."""
    key = derive_key(grant_secret, sandbox.namespace, sandbox.name)
    existing: Any = None
    try:
        existing = await client.get(Secret, SHARE_GRANT_KEY_SECRET, namespace=namespace)
    except ApiError as exc:
        if int(exc.status.code or 0) != 404:
            raise
    if existing is not None and hmac.compare_digest(_key_of(existing), key):
        return False
    data = {"key": base64.b64encode(key.encode()).decode()}
    created = False
    if existing is None:
        secret = Secret(
            metadata=ObjectMeta(name=SHARE_GRANT_KEY_SECRET, namespace=namespace, labels=labels),
            data=data,
            type="Opaque",
        )
        try:
            await client.create(secret)
            created = True
        except ApiError as exc:
            if int(exc.status.code or 0) != 409:
                raise
    if not created:
        await client.patch(
            Secret,
            SHARE_GRANT_KEY_SECRET,
            {"data": data},
            namespace=namespace,
            patch_type=PatchType.MERGE,
        )
        await _restart_pod(client, namespace)
    log.info(
        "share_grant_key_written",
        sandbox=sandbox.name,
        namespace=sandbox.namespace,
        workspace=namespace,
        replaced=not created,
    )
    return True
