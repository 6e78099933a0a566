"""The workspace Secrets a sandbox pod reads into its environment (its model-gateway
token, its share grant key), at the I/O edge: read one, and write one — created when
missing (before the StatefulSet, so the pod starts with it), else replaced and the pod
template stamped (``kubectl.kubernetes.io/restartedAt``, as ``kubectl rollout restart``
does), because a running pod holds the old value in its environment."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import StatefulSet
from lightkube.resources.core_v1 import Secret
from lightkube.types import PatchType

from ...domain.model import utcnow
from .render import PTY_NAME

log = structlog.get_logger(__name__)

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


def api_code(exc: ApiError) -> int:
    """The HTTP status of an API server error (0 when it carries none)."""
    return int(getattr(getattr(exc, "status", None), "code", 0) or 0)


async def read_secret(client: AsyncClient, name: str, namespace: str) -> Any:
    """The Secret, or ``None`` when it does not exist."""
    try:
        return await client.get(Secret, name, namespace=namespace)
    except ApiError as exc:
        if api_code(exc) != 404:
            raise
    return None


# how a Secret is read: (name, namespace) -> the Secret or None (the operator reads its
# own labelled Secrets from its informer cache when it can, handlers.py)
SecretReader = Callable[[str, str], Awaitable[Any]]


def secret_value(secret: Any, key: str) -> str:
    """One decoded value of a Secret read with :func:`read_secret`, or of a Secret's
    JSON from a cache ("" when absent)."""
    if isinstance(secret, Mapping):
        data = secret.get("data") or {}
    else:
        data = getattr(secret, "data", None) or {}
    raw = data.get(key, "")
    return base64.b64decode(raw).decode() if raw else ""


async def put_secret(
    client: AsyncClient,
    *,
    name: str,
    namespace: str,
    labels: dict[str, str],
    key: str,
    value: str,
    existed: bool,
) -> bool:
    """Write ``key: value`` into the Secret ``name``; True when it was created, False
    when an existing one was replaced (and the pod rolled to read it)."""
    data = {key: base64.b64encode(value.encode()).decode()}
    if not existed:
        secret = Secret(
            metadata=ObjectMeta(name=name, namespace=namespace, labels=labels),
            data=data,
            type="Opaque",
        )
        try:
            await client.create(secret)
            return True
        except ApiError as exc:
            if api_code(exc) != 409:
                raise
    await client.patch(
        Secret, name, {"data": data}, namespace=namespace, patch_type=PatchType.MERGE
    )
    await restart_pod(client, namespace)
    return False


async def restart_pod(client: AsyncClient, namespace: str) -> None:
    """The running pod holds the replaced value in its environment: roll it (nothing to
    roll before its StatefulSet exists)."""
    patch = {
        "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: utcnow().isoformat()}}}}
    }
    try:
        await client.patch(
            StatefulSet, PTY_NAME, patch, namespace=namespace, patch_type=PatchType.MERGE
        )
    except ApiError as exc:
        if api_code(exc) != 404:
            raise


def reader(client: AsyncClient) -> SecretReader:
    """:func:`read_secret` through ``client``."""

    async def read(name: str, namespace: str) -> Any:
        return await read_secret(client, name, namespace)

    return read
