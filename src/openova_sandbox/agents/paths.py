"""Where the server's own agent installs live, and how an agent's binary is found.

Layout under ``<data-dir>/agents/``::

    bin/<binary>          symlink to the binary of the agent's current install
    npm/<slug>-<id>/      one npm prefix per install of an npm agent
    venvs/<slug>-<id>/    one venv per install of a pip agent
    .locks/<slug>.lock    held while an install or removal of that agent runs

An install never moves once it is built (a venv cannot be moved: its scripts name their
interpreter by absolute path), so "switching to the new install" is replacing the
``bin/`` symlink, which is atomic; an install dir no symlink points to is debris of a
failed or interrupted install and is swept by the next install or removal of that agent.

The registry, the "installed?" checks and ``sandbox agents list`` all look in ``bin/``
first and then in the server's ``PATH`` (:func:`agent_search_path`), so installed agents
are found without touching the server's own environment.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..domain.catalogue import SOURCE_MANAGED, AgentSpec

AGENTS_DIR = "agents"
MANIFEST = ".openova-install.json"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_INSTALL_ID = re.compile(r"^[0-9a-f]{8}$")


@dataclass(frozen=True)
class AgentPaths:
    """The agents folder of one data dir (absolute, so PATH entries stay valid)."""

    root: Path

    @classmethod
    def of(cls, data_dir: str | os.PathLike[str]) -> AgentPaths:
        return cls(Path(os.path.abspath(data_dir)) / AGENTS_DIR)

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def npm(self) -> Path:
        return self.root / "npm"

    @property
    def venvs(self) -> Path:
        return self.root / "venvs"

    @property
    def locks(self) -> Path:
        return self.root / ".locks"

    def link(self, binary: str) -> Path:
        return self.bin / binary

    def install_dirs(self, slug: str) -> list[Path]:
        """Every install dir of ``slug`` (current, old or half-built), npm and venvs."""
        found = []
        for parent in (self.npm, self.venvs):
            try:
                names = sorted(os.listdir(parent))
            except OSError:
                continue
            prefix = f"{slug}-"
            for name in names:
                if name.startswith(prefix) and _INSTALL_ID.match(name[len(prefix) :]):
                    found.append(parent / name)
        return found

    def current_dir(self, binary: str) -> Path | None:
        """The install dir ``bin/<binary>`` points into, if it points into this folder."""
        link = self.link(binary)
        try:
            target = os.readlink(link)
        except OSError:
            return None
        resolved = Path(os.path.normpath(os.path.join(self.bin, target)))
        try:
            parts = resolved.relative_to(self.root).parts
        except ValueError:
            return None
        if len(parts) < 2 or parts[0] not in ("npm", "venvs"):
            return None
        return self.root / parts[0] / parts[1]


@dataclass(frozen=True)
class Manifest:
    """What an install dir holds, written last: a dir without one is unfinished."""

    slug: str
    manager: str
    package: str
    version: str
    binary: str
    entry: str  # the binary, relative to the install dir

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, sort_keys=True)


def read_manifest(install_dir: Path) -> Manifest | None:
    try:
        raw = json.loads((install_dir / MANIFEST).read_text(encoding="utf-8"))
        return Manifest(**{k: str(raw[k]) for k in Manifest.__dataclass_fields__})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def current_install(data_dir: str | os.PathLike[str], spec: AgentSpec) -> Manifest | None:
    """The managed install ``spec``'s binary link points to (None: not managed here)."""
    paths = AgentPaths.of(data_dir)
    if os.path.isabs(spec.binary):
        return None
    install_dir = paths.current_dir(spec.binary)
    manifest = read_manifest(install_dir) if install_dir else None
    if manifest is None or manifest.slug != spec.slug:
        return None
    return manifest


def agent_search_path(data_dir: str | os.PathLike[str], server_path: str | None = None) -> str:
    """The managed ``bin/`` dir first, then the server's PATH (``$PATH`` when None)."""
    if server_path is None:
        server_path = os.environ.get("PATH") or DEFAULT_PATH
    bin_dir = str(AgentPaths.of(data_dir).bin)
    rest = [p for p in server_path.split(os.pathsep) if p and p != bin_dir]
    return os.pathsep.join([bin_dir, *rest])


@dataclass(frozen=True)
class Located:
    """Where an agent's binary resolves: ``path`` None when it is nowhere; ``source``
    is ``managed`` for a binary in the agents' ``bin/``, else the row's own source."""

    path: str | None
    source: str

    @property
    def installed(self) -> bool:
        return self.path is not None


def locate(
    spec: AgentSpec, data_dir: str | os.PathLike[str], server_path: str | None = None
) -> Located:
    found = spec.resolve_binary(agent_search_path(data_dir, server_path))
    if found is not None and os.path.dirname(found) == str(AgentPaths.of(data_dir).bin):
        return Located(found, SOURCE_MANAGED)
    return Located(found, spec.source)
