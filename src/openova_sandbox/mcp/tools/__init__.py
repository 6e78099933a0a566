"""Every MCP tool, gathered from the family modules (one module per family)."""

from __future__ import annotations

from .base import Tool


def all_tools() -> list[Tool]:
    """The tools of every family, in a stable order. Each family module exposes
    ``TOOLS: list[Tool]``; add a module's import here when it lands."""
    from . import k8s, preview, sandbox, secrets, session, usage, workspace

    tools: list[Tool] = []
    tools += session.TOOLS
    tools += sandbox.TOOLS
    tools += usage.TOOLS
    tools += preview.TOOLS
    tools += k8s.TOOLS
    tools += workspace.TOOLS
    tools += secrets.TOOLS
    return tools
