"""Agent catalogues for tests that need sandboxes but not real agents.

Create refuses an agent that is not installed (``agent-not-installed``) or lacks its
variables (``agent-not-configured``). Tests about something else (names, ownership,
streams, the CLI) get an override file whose rows keep every built-in slug but run a
stand-in that is always there and needs nothing: ``/bin/cat`` by default.
"""

from __future__ import annotations

import json
from pathlib import Path

from openova_sandbox.domain.catalogue import BUILTIN, SHELL


def stand_in_rows(binary: str = "/bin/cat", args: tuple[str, ...] = ()) -> list[dict[str, object]]:
    """One override row per agent the API offers (the shell is already runnable)."""
    return [
        {"slug": agent.slug, "binary": binary, "defaultArgs": list(args), "requiredEnv": []}
        for agent in BUILTIN
        if agent.offered_by_api and agent.slug != SHELL
    ]


def write_stand_ins(path: Path, binary: str = "/bin/cat", args: tuple[str, ...] = ()) -> Path:
    """Write the stand-in catalogue to ``path`` unless the test wrote its own there."""
    if not path.exists():
        path.write_text(json.dumps(stand_in_rows(binary, args)))
    return path
