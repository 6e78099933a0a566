"""Each sandbox's MCP token in Kubernetes mode (docs/mcp.md, "Server and tokens"): the
operator signs it with the control plane's issuer key (``SANDBOX_ISSUER_KEY``, the
Secret ``sandbox-issuer-key`` the API replicas and the MCP server share), and keeps it
in the Secret ``sandbox-mcp-token`` (key ``token``) of the sandbox's workspace namespace,
which the pod reads as ``SANDBOX_MCP_TOKEN``; its terminals hand it to the agents' MCP
client config with ``SANDBOX_MCP_URL`` (``agents.mcp_config``), as embedded mode does.

At the I/O edge, through ``pod_secret.py`` like the gateway token:
- a Secret whose token is still good for the sandbox (signed by this key, for this
  sandbox's uid, with its current capabilities, not near its expiry) is kept: no write;
- a missing Secret is created before the StatefulSet, so the pod starts with it;
- any other (the key was rotated, the capabilities changed, the token nears its expiry)
  is replaced and the pod template stamped, so the pod starts again with the new one.

Revocation needs no write: the MCP server refuses a token whose sandbox is gone or is
being deleted, whatever the Secret holds.
"""

from __future__ import annotations

import structlog
from lightkube import AsyncClient

from ...domain.model import Sandbox
from ..ports import McpTokenSource
from .pod_secret import SecretReader, put_secret, secret_value
from .pod_secret import reader as _reader
from .render import MCP_TOKEN_SECRET

log = structlog.get_logger(__name__)


async def ensure_mcp_token(
    client: AsyncClient,
    source: McpTokenSource,
    sandbox: Sandbox,
    namespace: str,
    *,
    labels: dict[str, str],
    read: SecretReader | None = None,
) -> bool:
    """Make the workspace namespace's Secret hold a good MCP token of ``sandbox``. True
    when it was written."""
    existing = await (read or _reader(client))(MCP_TOKEN_SECRET, namespace)
    if existing is not None:
        held = secret_value(existing, "token")
        if held and await source.current(held, sandbox):
            return False
    created = await put_secret(
        client,
        name=MCP_TOKEN_SECRET,
        namespace=namespace,
        labels=labels,
        key="token",
        value=source.issue(sandbox),
        existed=existing is not None,
    )
    log.info(
        "mcp_token_written",
        sandbox=sandbox.name,
        namespace=sandbox.namespace,
        workspace=namespace,
        replaced=not created,
    )
    return True
