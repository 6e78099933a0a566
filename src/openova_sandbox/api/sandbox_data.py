"""What the MCP tools keep per sandbox besides the Sandbox itself, assembled for a mode:
the secrets (``secrets.*``, both modes: the store's database), the workspace index
(``workspace.*``, embedded only: the workspaces are on this machine) and the reaper that
removes both when their sandbox is deleted (docs/mcp.md, "Workspace search", "Secrets").
"""

from __future__ import annotations

from pathlib import Path

from ..config import Settings
from ..services.sandbox_reaper import Reapable, SandboxReaper
from ..services.sandbox_secrets import build_sandbox_secrets
from ..services.workspace_index import WorkspaceIndex
from .deps import AppDeps


def add_sandbox_data(deps: AppDeps, settings: Settings, *, workspace: bool) -> None:
    """``deps.sandbox_secrets``, ``deps.workspace_index`` (``workspace``: embedded) and
    the reaper, as background parts after the informer they follow."""
    secrets = build_sandbox_secrets(settings, cookie_secret=deps.cookie_secret)
    index = WorkspaceIndex(Path(settings.data_dir)) if workspace else None
    parts: list[Reapable] = [secrets, *([index] if index is not None else [])]
    informer = deps.resources.informer if deps.resources is not None else None
    deps.sandbox_secrets = secrets
    deps.workspace_index = index
    deps.background += [secrets, *([index] if index is not None else [])]
    deps.background.append(SandboxReaper(deps.store, parts, informer=informer))
