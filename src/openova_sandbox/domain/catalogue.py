"""The agent catalogue: the built-in rows, the override file, and "installed?" checks.

Reading the override file is the one I/O here; it takes an explicit path and PATH
string so the rules stay testable without touching the process environment.

A row says how to start an agent (binary, args, required variables), what to give it
(``env``: merged into its environment; ``home_files``: config files rendered into the
sandbox's own HOME before it starts; ``resume_args``: used instead of a fresh start when
the agent has run in that HOME before), and how the server installs it (``package``)
or, when it cannot, what to tell the operator (``manual_install``).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import Invalid

RESCUE_SHELL = "sovereign-shell"
# the plain shell offered next to the agents, so a fresh install can always start a terminal
SHELL = "shell"

SOURCE_BUILTIN, SOURCE_OVERRIDE, SOURCE_MANAGED = "builtin", "override", "managed"
NPM, PIP = "npm", "pip"


@dataclass(frozen=True)
class AgentPackage:
    """What ``sandbox agents install`` installs: an npm package into the agents' npm
    prefix, or a PyPI distribution into the agent's own venv, at a pinned version."""

    manager: str  # NPM or PIP
    name: str
    version: str

    def spec(self, version: str | None = None) -> str:
        """The installer's argument: ``name@version`` (npm) or ``name==version`` (pip)."""
        sep = "@" if self.manager == NPM else "=="
        return f"{self.name}{sep}{version or self.version}"


@dataclass(frozen=True)
class HomeFile:
    """A config file written into the sandbox's HOME (``path`` relative to it) before the
    agent starts, unless the file is already there (the user's edits win). ``template``
    may name variables of the agent's environment as ``${NAME}`` (string.Template)."""

    path: str
    template: str


_OPENAI = ("OPENAI_BASE_URL", "OPENAI_API_KEY")


@dataclass(frozen=True)
class AgentSpec:
    slug: str
    binary: str
    default_args: tuple[str, ...] = ()
    default_cwd: str = ""
    # Each inner tuple is alternatives: one of them must be set.
    required_env: tuple[tuple[str, ...], ...] = ()
    notes: str = ""
    label: str = ""
    blurb: str = ""
    install_hint: str = ""
    # (name, value) pairs merged into the agent's environment; values are never logged
    env: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    home_files: tuple[HomeFile, ...] = ()
    resume_args: tuple[str, ...] = ()
    package: AgentPackage | None = None
    manual_install: str = ""
    source: str = SOURCE_BUILTIN

    @property
    def offered_by_api(self) -> bool:
        return self.slug != RESCUE_SHELL

    @property
    def env_map(self) -> dict[str, str]:
        return dict(self.env)

    def resolve_binary(self, path: str | None) -> str | None:
        if os.path.isabs(self.binary):
            return self.binary if os.access(self.binary, os.X_OK) else None
        return shutil.which(self.binary, path=path)

    def missing_env(self, env: Mapping[str, str]) -> list[str]:
        """Required variables (or alternatives, joined by `` or ``) not set in ``env``."""
        return [
            " or ".join(group)
            for group in self.required_env
            if not any(env.get(name) for name in group)
        ]


def _row(
    slug: str,
    binary: str,
    args: tuple[str, ...],
    env: tuple[tuple[str, ...], ...],
    label: str,
    blurb: str,
    hint: str,
    package: AgentPackage | None = None,
    manual: str = "",
) -> AgentSpec:
    return AgentSpec(
        slug=slug,
        binary=binary,
        default_args=args,
        required_env=env,
        label=label,
        blurb=blurb,
        install_hint=hint,
        package=package,
        manual_install=manual,
    )


BUILTIN: tuple[AgentSpec, ...] = (
    _row(
        "aider",
        "aider",
        ("--yes-always", "--no-auto-commits"),
        (_OPENAI[:1], _OPENAI[1:]),
        "Aider",
        "Pair programming in your terminal, git-aware edits.",
        "sandbox agents install aider",
        AgentPackage(PIP, "aider-chat", "0.86.2"),
    ),
    _row(
        "claude-code",
        "claude",
        ("--dangerously-skip-permissions",),
        (("LLM_GATEWAY_URL", "ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN"),),
        "Claude Code",
        "Anthropic's agentic coding CLI.",
        "sandbox agents install claude-code",
        AgentPackage(NPM, "@anthropic-ai/claude-code", "2.1.332"),
    ),
    _row(
        "cursor-agent",
        "cursor-agent",
        (),
        (("LLM_GATEWAY_URL",),),
        "Cursor Agent",
        "Cursor's coding agent, headless in a terminal.",
        "install cursor-agent by hand (see `sandbox agents install cursor-agent`)",
        manual=(
            "cursor-agent has only a vendor installer (no npm or PyPI package): run "
            "`curl https://cursor.com/install -fsS | bash` as the server's user, or put "
            "the binary on the server's PATH, or point an override row's `binary` at it"
        ),
    ),
    _row(
        "little-coder",
        "little-coder",
        (),
        (_OPENAI[:1], _OPENAI[1:]),
        "Little Coder",
        "A small, fast coding agent for focused tasks.",
        "install little-coder by hand (see `sandbox agents install little-coder`)",
        manual=(
            "little-coder has no package in the registries this server installs from: put "
            "its binary on the server's PATH or point an override row's `binary` at it"
        ),
    ),
    _row(
        "opencode",
        "opencode",
        (),
        (_OPENAI[:1], _OPENAI[1:]),
        "OpenCode",
        "Open-source AI coding agent built for the terminal.",
        "sandbox agents install opencode",
        AgentPackage(NPM, "opencode-ai", "1.18.33"),
    ),
    _row(
        "qwen-code",
        "qwen",
        (),
        (_OPENAI[:1], _OPENAI[1:]),
        "Qwen Code",
        "Command-line agent tuned for Qwen coder models.",
        "sandbox agents install qwen-code",
        # 0.15 is the last line that runs on Node 20 (later ones need Node 22)
        AgentPackage(NPM, "@qwen-code/qwen-code", "0.15.10"),
    ),
    _row(
        SHELL,
        "bash",
        ("-l",),
        (),
        "Shell",
        "A terminal in the sandbox's workspace: git, editors, and anything you run by hand.",
        "",
    ),
    _row(
        RESCUE_SHELL,
        "/bin/sh",
        ("-l",),
        (),
        "Rescue shell",
        "A plain login shell in the sandbox's workspace.",
        "",
    ),
)


@dataclass(frozen=True)
class Catalogue:
    agents: Mapping[str, AgentSpec] = field(default_factory=dict)

    def get(self, slug: str) -> AgentSpec | None:
        return self.agents.get(slug)

    @property
    def api_slugs(self) -> list[str]:
        """Slugs a sessions-API create may name, sorted (the detail lists them so)."""
        return sorted(s for s, a in self.agents.items() if a.offered_by_api)

    def __iter__(self) -> Iterator[AgentSpec]:
        return iter(self.agents.values())

    def narrowed(self, offered: Iterable[str]) -> Catalogue:
        """Only the agents in ``offered`` are left for the sessions API; the rescue shell
        stays (the terminal server still needs it). An empty ``offered`` keeps all."""
        keep = set(offered)
        if not keep:
            return self
        return Catalogue(
            agents={s: a for s, a in self.agents.items() if not a.offered_by_api or s in keep}
        )


class CatalogueError(Invalid):
    """The override file exists but cannot be used (not JSON, not a list)."""

    code = "invalid-catalogue"


def _string_map(raw: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, dict):
        return ()
    return tuple((str(k), str(v)) for k, v in raw.items() if isinstance(k, str) and k)


def _home_files(raw: object) -> tuple[HomeFile, ...]:
    if not isinstance(raw, list):
        return ()
    files = []
    for item in raw:
        if isinstance(item, dict) and isinstance(item.get("path"), str):
            path = str(item["path"]).strip()
            content = item.get("content", "")
            if path and not os.path.isabs(path) and ".." not in Path(path).parts:
                files.append(HomeFile(path=path, template=str(content)))
    return tuple(files)


def _strings(raw: object) -> tuple[str, ...]:
    return tuple(str(a) for a in raw) if isinstance(raw, list) else ()


def _parse_override_row(raw: object) -> AgentSpec | None:
    if not isinstance(raw, dict):
        return None
    slug, binary = raw.get("slug"), raw.get("binary")
    if not isinstance(slug, str) or not slug.strip() or not isinstance(binary, str):
        return None
    if not binary.strip():
        return None
    env = raw.get("requiredEnv") or []
    builtin = next((a for a in BUILTIN if a.slug == slug.strip()), None)
    return AgentSpec(
        slug=slug.strip(),
        binary=binary.strip(),
        default_args=_strings(raw.get("defaultArgs") or []),
        default_cwd=str(raw.get("defaultCwd") or ""),
        required_env=tuple(
            tuple(part.strip() for part in str(e).split("|") if part.strip()) for e in env
        )
        if isinstance(env, list)
        else (),
        notes=str(raw.get("notes") or ""),
        label=str(raw.get("label") or (builtin.label if builtin else slug.strip())),
        blurb=str(raw.get("blurb") or raw.get("notes") or (builtin.blurb if builtin else "")),
        install_hint=str(raw.get("installHint") or (builtin.install_hint if builtin else "")),
        env=_string_map(raw.get("env")),
        home_files=_home_files(raw.get("homeFiles")),
        resume_args=_strings(raw.get("resumeArgs") or []),
        source=SOURCE_OVERRIDE,
    )


def load_catalogue(override_path: str | Path | None) -> Catalogue:
    """Built-ins, with rows of the override file replacing (or adding) by slug.

    A missing file means built-ins only; a file that is there but is not a JSON array
    raises :class:`CatalogueError` naming it (a typo must not silently drop the
    operator's rows); rows without a slug or binary are skipped.
    """
    agents = {a.slug: a for a in BUILTIN}
    if override_path:
        path = Path(override_path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            text = None
        except OSError as exc:
            raise CatalogueError(f"agent catalogue {path}: cannot read it: {exc}") from exc
        if text is not None:
            try:
                rows = json.loads(text)
            except ValueError as exc:
                raise CatalogueError(f"agent catalogue {path}: not valid JSON: {exc}") from exc
            if not isinstance(rows, list):
                raise CatalogueError(f"agent catalogue {path}: must be a JSON array of rows")
            for raw in rows:
                parsed = _parse_override_row(raw)
                if parsed is not None:
                    agents[parsed.slug] = parsed
    return Catalogue(agents=agents)
