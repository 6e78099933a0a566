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

from ..agents.home import prepare_home
from ..domain.catalogue import AgentSpec
from ..terminal.pty import SpawnSpec


def prepare_spawn(
    spec: SpawnSpec, *, agent: AgentSpec | None, home: str, resume: bool
) -> SpawnSpec:
    """The registry's spawn hook: seed the sandbox's HOME for ``agent``, add its resume
    arguments when it ran there before and ``resume`` is asked."""
    extra = prepare_home(Path(home), agent, spec.env, resume=resume)
    return dataclasses.replace(spec, argv=(*spec.argv, *extra)) if extra else spec
