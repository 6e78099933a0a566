"""The agent catalogue: the built-in rows, the override file, and "installed?" checks.

Reading the override file is the one I/O here; it takes an explicit path and PATH
string so the rules stay testable without touching the process environment.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

RESCUE_SHELL = "sovereign-shell"

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

    @property
    def offered_by_api(self) -> bool:
        return self.slug != RESCUE_SHELL

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
) -> AgentSpec:
    return AgentSpec(
        slug=slug,
        binary=binary,
        default_args=args,
        required_env=env,
        label=label,
        blurb=blurb,
        install_hint=hint,
    )


BUILTIN: tuple[AgentSpec, ...] = (
    _row(
        "aider",
        "aider",
        ("--yes-always", "--no-auto-commits"),
        (_OPENAI[:1], _OPENAI[1:]),
        "Aider",
        "Pair programming in your terminal, git-aware edits.",
        "pip install aider-chat",
    ),
    _row(
        "claude-code",
        "claude",
        ("--dangerously-skip-permissions",),
        (("LLM_GATEWAY_URL", "ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN"),),
        "Claude Code",
        "Anthropic's agentic coding CLI.",
        "npm install -g @anthropic-ai/claude-code",
    ),
    _row(
        "cursor-agent",
        "cursor-agent",
        (),
        (("LLM_GATEWAY_URL",),),
        "Cursor Agent",
        "Cursor's coding agent, headless in a terminal.",
        "install cursor-agent from cursor.com/cli",
    ),
    _row(
        "little-coder",
        "little-coder",
        (),
        (_OPENAI[:1], _OPENAI[1:]),
        "Little Coder",
        "A small, fast coding agent for focused tasks.",
        "pip install little-coder",
    ),
    _row(
        "opencode",
        "opencode",
        (),
        (_OPENAI[:1], _OPENAI[1:]),
        "OpenCode",
        "Open-source AI coding agent built for the terminal.",
        "npm install -g opencode-ai",
    ),
    _row(
        "qwen-code",
        "qwen",
        (),
        (_OPENAI[:1], _OPENAI[1:]),
        "Qwen Code",
        "Command-line agent tuned for Qwen coder models.",
        "npm install -g @qwen-code/qwen-code",
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


def _parse_override_row(raw: object) -> AgentSpec | None:
    if not isinstance(raw, dict):
        return None
    slug, binary = raw.get("slug"), raw.get("binary")
    if not isinstance(slug, str) or not slug.strip() or not isinstance(binary, str):
        return None
    if not binary.strip():
        return None
    args = raw.get("defaultArgs") or []
    env = raw.get("requiredEnv") or []
    builtin = next((a for a in BUILTIN if a.slug == slug.strip()), None)
    return AgentSpec(
        slug=slug.strip(),
        binary=binary.strip(),
        default_args=tuple(str(a) for a in args) if isinstance(args, list) else (),
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
    )


def load_catalogue(override_path: str | Path | None) -> Catalogue:
    """Built-ins, with rows of the override file replacing (or adding) by slug.

    A missing or unparsable file means built-ins only; bad rows are skipped.
    """
    agents = {a.slug: a for a in BUILTIN}
    if override_path:
        try:
            rows = json.loads(Path(override_path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            rows = None
        if isinstance(rows, list):
            for raw in rows:
                parsed = _parse_override_row(raw)
                if parsed is not None:
                    agents[parsed.slug] = parsed
    return Catalogue(agents=agents)
