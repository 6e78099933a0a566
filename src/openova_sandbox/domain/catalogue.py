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
import re
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
    # regexes (Python ``re``, multiline) searched in the screen's last non-empty lines:
    # a match after output went quiet means the agent waits for input (docs/activity.md)
    prompt_patterns: tuple[str, ...] = ()

    @property
    def offered_by_api(self) -> bool:
        return self.slug != RESCUE_SHELL

    @property
    def env_map(self) -> dict[str, str]:
        return dict(self.env)

    def resolve_binary(self, path: str | None) -> str | None:
        if os.path.isabs(self.binary):
            return self.binary if os.access(self.binary, os.X_OK) else None
        import shutil  # at the first lookup: shutil loads bz2 and lzma (pod RSS)

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
    *,
    settings: tuple[tuple[str, str], ...] = (),
    files: tuple[HomeFile, ...] = (),
    resume: tuple[str, ...] = (),
    prompts: tuple[str, ...] = (),
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
        env=settings,
        home_files=files,
        resume_args=resume,
        prompt_patterns=prompts,
    )


# What the built-in rows give each agent (docs/agents.md, "Homes and agent settings",
# says why, setting by setting). The rule: what must hold whatever the user does (no
# self-update, no telemetry, no model-list download) is set in the environment or on the
# command line, which a user's config file cannot undo; comfort (no first-run dialogs,
# the model provider) goes into files in the sandbox's HOME, which the user may edit.
# No file holds a secret: keys stay in the environment. ``$$`` is a literal ``$``.
_MODEL = "${SANDBOX_AGENT_MODEL}"

_AIDER_ENV = (
    ("AIDER_CHECK_UPDATE", "false"),  # with --yes-always it would pip-install updates
    ("AIDER_ANALYTICS", "false"),  # off, and never asks to opt in (--yes-always would)
    ("LITELLM_LOCAL_MODEL_COST_MAP", "True"),  # litellm's price list from the package
    ("AIDER_MODEL", f"openai/{_MODEL}"),
)
_AIDER_FILES = (
    HomeFile(".aider.conf.yml", "show-release-notes: false\n"),
    # a model aider knows needs no model-list download from GitHub at start
    HomeFile(
        ".aider.model.metadata.json",
        '{"openai/' + _MODEL + '": {"max_tokens": 8192, "max_input_tokens": 128000, '
        '"max_output_tokens": 8192, "input_cost_per_token": 0, "output_cost_per_token": 0, '
        '"litellm_provider": "openai", "mode": "chat"}}\n',
    ),
)

_CLAUDE_ENV = (
    ("DISABLE_AUTOUPDATER", "1"),
    ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),  # telemetry, error reports, updates
    ("DISABLE_TELEMETRY", "1"),
    ("DISABLE_ERROR_REPORTING", "1"),
    ("CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL", "1"),  # a GitHub fetch
    ("IS_SANDBOX", "1"),  # --dangerously-skip-permissions is refused as root otherwise
    ("ANTHROPIC_BASE_URL", "${LLM_GATEWAY_URL}"),
)
_CLAUDE_FILES = (
    HomeFile(
        ".claude.json",
        # preferredNotifChannel iterm2: it says "needs your permission" / "waiting for
        # your input" with OSC 9, which the activity tracker reads as waiting at once
        '{"hasCompletedOnboarding": true, "theme": "dark", "autoUpdates": false, '
        '"preferredNotifChannel": "iterm2", '
        '"projects": {"${PWD}": {"hasTrustDialogAccepted": true, '
        '"hasCompletedProjectOnboarding": true}}}\n',
    ),
    HomeFile(
        ".claude/settings.json",
        '{"skipDangerousModePermissionPrompt": true, "env": {"DISABLE_AUTOUPDATER": "1"}}\n',
    ),
)

_OPENCODE_ENV = (
    ("OPENCODE_DISABLE_AUTOUPDATE", "1"),
    ("OPENCODE_DISABLE_MODELS_FETCH", "1"),  # models.dev: the provider below lists its model
    ("OPENCODE_DISABLE_SHARE", "1"),  # never publish a session to opencode's share service
)
# opencode resolves {env:NAME} itself at start, so the file follows the server's settings
_OPENCODE_CONFIG = """{
  "$$schema": "https://opencode.ai/config.json",
  "autoupdate": false,
  "share": "disabled",
  "provider": {
    "sandbox": {
      "npm": "@ai-sdk/openai-compatible",
      "name": "Sandbox model",
      "options": {"baseURL": "{env:OPENAI_BASE_URL}", "apiKey": "{env:OPENAI_API_KEY}"},
      "models": {"{env:SANDBOX_AGENT_MODEL}": {}}
    }
  },
  "model": "sandbox/{env:SANDBOX_AGENT_MODEL}"
}
"""
# opencode installs its plugin SDK into each config folder at start unless the folder's
# package.json and lock already name it: these say so, so nothing is fetched from npm
_OPENCODE_PLUGIN_DEPS = '{"dependencies": {"@opencode-ai/plugin": "1.18.33"}}\n'
_OPENCODE_FILES = (
    HomeFile(".config/opencode/opencode.json", _OPENCODE_CONFIG),
    HomeFile(".config/opencode/package.json", _OPENCODE_PLUGIN_DEPS),
    HomeFile(
        ".config/opencode/package-lock.json",
        '{"lockfileVersion": 3, "packages": {"": '
        '{"dependencies": {"@opencode-ai/plugin": "1.18.33"}}}}\n',
    ),
    HomeFile(
        ".config/opencode/node_modules/.openova-sandbox",
        "OpenOva Sandbox: run `npm install` here to get @opencode-ai/plugin for plugins\n",
    ),
)

_QWEN_NO_UPDATE = (
    '"general": {"enableAutoUpdate": false}, "privacy": {"usageStatisticsEnabled": false}, '
    '"telemetry": {"enabled": false}'
)
_QWEN_SYSTEM = ".openova-sandbox/qwen-code/system-settings.json"
_QWEN_ENV = (
    ("OPENAI_MODEL", _MODEL),
    # system settings outrank the user's: no update check or install, no usage statistics
    ("QWEN_CODE_SYSTEM_SETTINGS_PATH", "${HOME}/" + _QWEN_SYSTEM),
)
_QWEN_FILES = (
    HomeFile(
        ".qwen/settings.json",
        '{"$$version": 4, "security": {"auth": {"selectedType": "openai"}}, '
        + _QWEN_NO_UPDATE
        + "}\n",
    ),
    HomeFile(_QWEN_SYSTEM, '{"$$version": 4, ' + _QWEN_NO_UPDATE + "}\n"),
)


# What each agent shows when it waits for its user (found by running them: docs/activity.md
# "Prompt patterns"). Searched in the last few non-empty screen lines, right-stripped, once
# output has been quiet for a second; a working agent animates a spinner, so it is never
# quiet while its input box is still on the screen.
_SHELL_PROMPTS = (r"[$#%>]\Z",)  # the last line ends in a prompt character
_AIDER_PROMPTS = (
    r"^[\w ]*>\Z",  # its empty input line, last: "> ", "ask> ", "architect multi> "
    r"\(Y\)es/\(N\)o",  # a confirmation
)
_CLAUDE_PROMPTS = (
    # the input box (U+276F, then a no-break space), "esc to interrupt" nowhere near
    r"\A(?![\s\S]*esc to interrupt)[\s\S]*^\u276f(?:\s|$)",
    r"Do you want to (?:proceed|make this edit|create)",
)
_OPENCODE_PROMPTS = (
    # the status line under the input box: "esc interrupt" sits there while it works
    r"^(?!.*esc interrupt).*ctrl\+p commands$",
    r"Permission required|Allow once",
)
_QWEN_PROMPTS = (
    # the input box (the conversation's "> " lines are indented), no "esc to cancel" spinner
    r"\A(?![\s\S]*esc to cancel)[\s\S]*^> ",
    r"Yes, allow once|Do you want to proceed\?|Apply this change\?|Allow execution of",
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
        settings=_AIDER_ENV,
        files=_AIDER_FILES,
        resume=("--restore-chat-history",),
        prompts=_AIDER_PROMPTS,
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
        settings=_CLAUDE_ENV,
        files=_CLAUDE_FILES,
        prompts=_CLAUDE_PROMPTS,
        # no resume: `claude --continue` exits 1 where there is no conversation yet
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
        settings=_OPENCODE_ENV,
        files=_OPENCODE_FILES,
        resume=("--continue",),
        prompts=_OPENCODE_PROMPTS,
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
        settings=_QWEN_ENV,
        files=_QWEN_FILES,
        resume=("--continue",),
        prompts=_QWEN_PROMPTS,
    ),
    _row(
        SHELL,
        "bash",
        ("-l",),
        (),
        "Shell",
        "A terminal in the sandbox's workspace: git, editors, and anything you run by hand.",
        "",
        prompts=_SHELL_PROMPTS,
    ),
    _row(
        RESCUE_SHELL,
        "/bin/sh",
        ("-l",),
        (),
        "Rescue shell",
        "A plain login shell in the sandbox's workspace.",
        "",
        prompts=_SHELL_PROMPTS,
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


def _prompt_patterns(raw: object, slug: str, inherited: tuple[str, ...]) -> tuple[str, ...]:
    """An override row's ``promptPatterns`` (absent: the built-in row's, if any). A
    pattern that does not compile is an error naming the row, not a silent drop."""
    if raw is None:
        return inherited
    if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
        raise CatalogueError(f"agent {slug!r}: promptPatterns must be a list of regexes")
    for pattern in raw:
        try:
            re.compile(pattern, re.MULTILINE)
        except re.error as exc:
            raise CatalogueError(f"agent {slug!r}: prompt pattern {pattern!r}: {exc}") from exc
    return tuple(raw)


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
        prompt_patterns=_prompt_patterns(
            raw.get("promptPatterns"), slug.strip(), builtin.prompt_patterns if builtin else ()
        ),
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
