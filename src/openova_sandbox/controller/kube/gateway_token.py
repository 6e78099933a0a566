"""Each sandbox's model-gateway token in Kubernetes mode (docs/gateway.md, "Kubernetes
mode"): the operator holds the gateway's ledger (the SQL database of
``SANDBOX_DATABASE_URL``), issues the sandbox's token there (stored hashed) and keeps the
plaintext only in the Secret ``sandbox-gateway-token`` (key ``token``) of the sandbox's
workspace namespace, which the pod reads as ``SANDBOX_MODEL_GATEWAY_TOKEN``. Deleting
the sandbox revokes it.

At the I/O edge, like the probe token (``idle.py``):
- a Secret whose token still authenticates as this sandbox is kept (no write);
- a missing Secret, or one whose token the ledger no longer knows (the database was
  restored, or the token was replaced), gets a new token; when it replaced a token the
  pod already read, the pod template is stamped (``kubectl.kubernetes.io/restartedAt``,
  as ``kubectl rollout restart`` does) so the pod starts again with the new one;
- when the ledger does not answer, an existing Secret is kept as it is (the sandbox
  keeps running) and a missing one fails the pass (retried): the pod waits for it.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import structlog
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import StatefulSet
from lightkube.resources.core_v1 import Secret
from lightkube.types import PatchType

from ...config import Settings
from ...domain.errors import SandboxError
from ...domain.ledger import identity_of
from ...domain.model import Sandbox, utcnow
from ..ports import TokenLedger as Ledger
from .render import GATEWAY_TOKEN_SECRET, PTY_NAME

log = structlog.get_logger(__name__)

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


def open_ledger(
    settings: Settings, make: Callable[[Settings], Ledger] | None = None
) -> Ledger | None:
    """The gateway's ledger for the operator: the database of ``SANDBOX_DATABASE_URL``
    (the gateway's, from the Secret ``sandbox-gateway-db``). Without one: ``None``,
    logged once; pods then get the gateway's URL without a token. ``make`` builds it
    (the entry point passes the services' ``make_ledger``: the controller layer does not
    reach up to build one)."""
    if not settings.database_url:
        log.warning(
            "operator_no_gateway_ledger",
            detail="SANDBOX_DATABASE_URL is not set: sandbox pods get no model-gateway "
            "token (set it to the gateway's database, Secret sandbox-gateway-db)",
        )
        return None
    if make is None:
        log.warning("operator_no_gateway_ledger", detail="no ledger factory given")
        return None
    return make(settings)


def _code(exc: ApiError) -> int:
    return int(exc.status.code or 0)


def _token_of(secret: Any) -> str:
    data = getattr(secret, "data", None) or {}
    raw = data.get("token", "")
    return base64.b64decode(raw).decode() if raw else ""


async def _valid(ledger: Ledger, sandbox: Sandbox, token: str) -> bool | None:
    """Whether ``token`` is this sandbox's current token; ``None``: the ledger did not
    answer."""
    try:
        await ledger.start()  # idempotent; opens it again after the operator's cleanup
        identity = await ledger.authenticate(token)
    except SandboxError as exc:
        log.warning(
            "gateway_token_check_failed",
            sandbox=sandbox.name,
            namespace=sandbox.namespace,
            error=exc.detail,
        )
        return None
    return (
        identity is not None
        and identity.namespace == sandbox.namespace
        and identity.sandbox == sandbox.name
    )


async def ensure_gateway_token(
    client: AsyncClient,
    ledger: Ledger,
    sandbox: Sandbox,
    namespace: str,
    *,
    labels: dict[str, str],
) -> bool:
    """Make the workspace namespace's token Secret hold a token the ledger knows for
    ``sandbox``. True when a token was issued."""
    existing: Any = None
    try:
        existing = await client.get(Secret, GATEWAY_TOKEN_SECRET, namespace=namespace)
    except ApiError as exc:
        if _code(exc) != 404:
            raise
    if existing is not None:
        token = _token_of(existing)
        valid = await _valid(ledger, sandbox, token) if token else False
        if valid is None or valid:
            return False
    await ledger.start()
    token = await ledger.issue_token(identity_of(sandbox))
    data = {"token": base64.b64encode(token.encode()).decode()}
    created = False
    if existing is None:
        secret = Secret(
            metadata=ObjectMeta(name=GATEWAY_TOKEN_SECRET, namespace=namespace, labels=labels),
            data=data,
            type="Opaque",
        )
        try:
            await client.create(secret)
            created = True
        except ApiError as exc:
            if _code(exc) != 409:
                raise
    if not created:
        await client.patch(
            Secret,
            GATEWAY_TOKEN_SECRET,
            {"data": data},
            namespace=namespace,
            patch_type=PatchType.MERGE,
        )
        await _restart_pod(client, namespace)
    log.info(
        "gateway_token_issued",
        sandbox=sandbox.name,
        namespace=sandbox.namespace,
        workspace=namespace,
        replaced=not created,
    )
    return True


async def _restart_pod(client: AsyncClient, namespace: str) -> None:
    """The running pod holds the replaced token in its environment: roll it."""
    patch = {
        "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: utcnow().isoformat()}}}}
    }
    try:
        await client.patch(
            StatefulSet, PTY_NAME, patch, namespace=namespace, patch_type=PatchType.MERGE
        )
    except ApiError as exc:
        if _code(exc) != 404:
            raise


async def revoke_gateway_token(ledger: Ledger, sandbox: Sandbox) -> None:
    """The sandbox is being deleted: its token stops working (idempotent). Raises when
    the ledger does not answer, so the finalizer is kept and the pass retried."""
    await ledger.start()
    await ledger.revoke(sandbox.namespace, sandbox.name)
    log.info("gateway_token_revoked", sandbox=sandbox.name, namespace=sandbox.namespace)
