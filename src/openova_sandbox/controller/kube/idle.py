"""How the operator learns whether a sandbox is idle: it asks the sandbox's terminal
server (``GET /idle``) with a probe token kept in the workspace namespace's
``pty-probe`` Secret. The pod reads the same Secret (``SANDBOX_PROBE_TOKEN``), which
opens ``/idle`` and nothing else.

The Secret is created here, at the I/O edge, the first time it is needed (a random
token; a concurrent create by another pass is fine: the stored one wins). A probe that
fails is "unknown" and never counts as idleness.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import structlog
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Secret

from ...domain.model import parse_time
from .pod_secret import SecretReader, reader, secret_value
from .render import PROBE_SECRET

log = structlog.get_logger(__name__)
PROBE_TIMEOUT = 3.0


@dataclass(frozen=True)
class IdleReport:
    last_activity: datetime | None
    sessions: int
    viewers: int
    busy: bool


def _token_of(secret: Any) -> str:
    return secret_value(secret, "token")


async def ensure_probe_token(
    client: AsyncClient,
    namespace: str,
    *,
    labels: dict[str, str],
    read: SecretReader | None = None,
) -> str:
    existing = await (read or reader(client))(PROBE_SECRET, namespace)
    if existing is not None:
        return _token_of(existing)
    token = secrets.token_urlsafe(32)
    secret = Secret(
        metadata=ObjectMeta(name=PROBE_SECRET, namespace=namespace, labels=labels),
        data={"token": base64.b64encode(token.encode()).decode()},
        type="Opaque",
    )
    try:
        await client.create(secret)
    except ApiError as exc:
        if int(exc.status.code or 0) != 409:
            raise
        return _token_of(await client.get(Secret, PROBE_SECRET, namespace=namespace))
    log.info("probe secret created", namespace=namespace)
    return token


async def probe_idle(
    base_url: str, token: str, *, transport: httpx.AsyncBaseTransport | None = None
) -> IdleReport | None:
    """The terminal server's report, or ``None`` when it cannot be had."""
    try:
        async with httpx.AsyncClient(transport=transport, timeout=PROBE_TIMEOUT) as http:
            response = await http.get(
                base_url.rstrip("/") + "/idle", headers={"Authorization": f"Bearer {token}"}
            )
        response.raise_for_status()
        body = response.json()
        return IdleReport(
            last_activity=parse_time(body.get("lastActivityAt")),
            sessions=int(body.get("activeSessions", 0)),
            viewers=int(body.get("attachedViewers", 0)),
            busy=bool(body.get("agentBusy", False)),
        )
    except (httpx.HTTPError, ValueError, TypeError, AttributeError) as exc:
        log.info("idle probe failed", url=base_url, error=str(exc))
        return None
