"""One catalogue row's state, as ``sandbox agents list`` and ``GET /agents`` show it:
where its binary resolves (managed ``bin/`` first, then the server's PATH), what it
reports as its version, what is missing to start it, and whether the server can
install it."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..domain.catalogue import SHELL, AgentSpec
from .installer import package_of
from .paths import Located, agent_search_path, locate
from .versions import probe_version


@dataclass(frozen=True)
class AgentStatus:
    spec: AgentSpec
    located: Located
    version: str | None
    missing: tuple[str, ...]

    @property
    def installed(self) -> bool:
        return self.located.installed

    @property
    def kind(self) -> str:
        return "shell" if self.spec.slug == SHELL else "agent"

    @property
    def installable(self) -> bool:
        return package_of(self.spec) is not None and not os.path.isabs(self.spec.binary)

    @property
    def manual_install(self) -> str | None:
        return None if self.installable else (self.spec.manual_install or None)

    @property
    def package(self) -> str | None:
        package = package_of(self.spec) if self.installable else None
        return package.spec() if package else None


def missing_for(spec: AgentSpec, located: Located, env: Mapping[str, str]) -> tuple[str, ...]:
    """``binary <name>`` when it is nowhere, then each required variable (or group of
    alternatives) neither the server's settings nor the row's ``env`` set."""
    missing = [] if located.installed else [f"binary {spec.binary}"]
    missing += spec.missing_env({**env, **spec.env_map})
    return tuple(missing)


def agent_statuses(
    specs: Iterable[AgentSpec],
    data_dir: str | os.PathLike[str],
    *,
    env: Mapping[str, str],
    server_path: str | None = None,
    probe: bool = True,
) -> list[AgentStatus]:
    """The rows' states, in order; the version probes (cached) run concurrently."""
    rows = list(specs)
    search = agent_search_path(data_dir, server_path)
    located = [locate(spec, data_dir, server_path) for spec in rows]

    def version(pair: tuple[AgentSpec, Located]) -> str | None:
        spec, where = pair
        if not probe or where.path is None:
            return None
        return probe_version(where.path, env={**spec.env_map, "PATH": search})

    with ThreadPoolExecutor(max_workers=max(1, min(8, len(rows)))) as pool:
        versions = list(pool.map(version, zip(rows, located, strict=True)))
    return [
        AgentStatus(spec, where, ver, missing_for(spec, where, env))
        for spec, where, ver in zip(rows, located, versions, strict=True)
    ]
