"""The terminal registry's spawn hook for sandboxes with a HOME of their own.

Embedded mode (``TerminalsService``) and ``sandbox pty-server`` (the pod's home volume)
both pass :func:`prepare_spawn`. It lives apart from :mod:`.terminals` so the lean
pty-server imports only what seeding a HOME needs (``agents.home`` and the spawn spec),
not the control plane's sessions, controller, store and event bus
(``tests/integration/cli/test_pty_server_footprint.py``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import structlog

from ..agents.home import prepare_home
from ..agents.mcp_config import configure as configure_mcp
from ..domain.catalogue import AgentSpec
from ..terminal.pty import SpawnSpec

log = structlog.get_logger(__name__)


def prepare_spawn(
    spec: SpawnSpec, *, agent: AgentSpec | None, home: str, resume: bool
) -> SpawnSpec:
    """The registry's spawn hook: seed the sandbox's HOME for ``agent``, point its MCP
    client config at the sandbox's MCP server (``agents.mcp_config``: the entry names
    ``SANDBOX_MCP_URL``/``SANDBOX_MCP_TOKEN`` of ``spec.env``), add its resume arguments
    when it ran there before and ``resume`` is asked."""
    extra = prepare_home(Path(home), agent, spec.env, resume=resume)
    if agent is not None:
        outcome = configure_mcp(Path(home), agent.slug, spec.env)
        if outcome.state == "skipped":  # the user's file: the agent starts without MCP
            log.info(
                "mcp.agent_config_skipped",
                agent=agent.slug,
                file=outcome.path,
                reason=outcome.reason,
            )
    return dataclasses.replace(spec, argv=(*spec.argv, *extra)) if extra else spec
