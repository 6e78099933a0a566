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

from collections.abc import Callable

import structlog
from lightkube import AsyncClient

from ...config import Settings
from ...domain.errors import SandboxError
from ...domain.ledger import identity_of
from ...domain.model import Sandbox
from ..ports import TokenLedger as Ledger
from .pod_secret import SecretReader, put_secret, secret_value
from .pod_secret import reader as _reader
from .render import GATEWAY_TOKEN_SECRET

log = structlog.get_logger(__name__)


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
    read: SecretReader | None = None,
) -> bool:
    """Make the workspace namespace's token Secret hold a token the ledger knows for
    ``sandbox``. True when a token was issued."""
    existing = await (read or _reader(client))(GATEWAY_TOKEN_SECRET, namespace)
    if existing is not None:
        token = secret_value(existing, "token")
        valid = await _valid(ledger, sandbox, token) if token else False
        if valid is None or valid:
            return False
    await ledger.start()
    token = await ledger.issue_token(identity_of(sandbox))
    created = await put_secret(
        client,
        name=GATEWAY_TOKEN_SECRET,
        namespace=namespace,
        labels=labels,
        key="token",
        value=token,
        existed=existing is not None,
    )
    log.info(
        "gateway_token_issued",
        sandbox=sandbox.name,
        namespace=sandbox.namespace,
        workspace=namespace,
        replaced=not created,
    )
    return True


async def revoke_gateway_token(ledger: Ledger, sandbox: Sandbox) -> None:
    """The sandbox is being deleted: its token stops working (idempotent). Raises when
    the ledger does not answer, so the finalizer is kept and the pass retried."""
    await ledger.start()
    await ledger.revoke(sandbox.namespace, sandbox.name)
    log.info("gateway_token_revoked", sandbox=sandbox.name, namespace=sandbox.namespace)
