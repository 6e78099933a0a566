"""The built-in rows' prompt patterns against screens the real agents drew (qwen-code
0.15.10, opencode 1.18.33, claude-code 2.1.332, aider 0.86.2, run offline against
support/fake_llm.py; docs/activity.md, "Prompt patterns"): each waiting screen matches,
each working screen does not. And the override file's ``promptPatterns``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from openova_sandbox.domain.catalogue import CatalogueError, load_catalogue
from openova_sandbox.terminal.activity import ActivityTracker

RULE = "─" * 100

WAITING = {
    "qwen-code": f"""  Tips: Type / to open the command popup; Tab autocompletes slash commands.

  > ping-abc

  ✦ PONG-abc

{RULE}
>   Type your message or @path/to/file
{RULE}
  ? for shortcuts
""",
    "opencode": """     PONG-abc

     ▣  Build · fake-model · 15.2s
  ┃
  ┃
  ┃
  ┃  Build · fake-model Sandbox model
  ╹▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀
   /tmp/work                                                 13  ctrl+p commands
""",
    "claude-code": f""" ▐▛███▛█   Claude Code v2.1.332
  ⎿  Not logged in · Please run /login
{RULE}
\u276f\u00a0Once fixed, resend your message
{RULE}
  ⏵⏵ bypass permissions on (shift+tab to cycle)
""",
    "aider": f"""Aider v0.86.2
Model: openai/fake-model with whole edit format
{RULE}
> ping-abc

PONG-abc

Tokens: 594 sent, 4 received.
{RULE}
>
""",
    "shell": "user@box:~/work$ ls\nREADME.md  src\nuser@box:~/work$ \n\n\n",
}

WORKING = {
    "qwen-code": f"""  > ping-abc
  ⠙ Reticulating splines... (0s · esc to cancel)
{RULE}
>   Type your message or @path/to/file
{RULE}
  ? for shortcuts
""",
    "opencode": """  ┃
  ┃
  ┃  Build · fake-model Sandbox model
  ╹▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀▀
   ■■⬝⬝⬝⬝⬝⬝  esc interrupt                             tab agents  ctrl+p commands
""",
    "claude-code": f"""✽ Cultivating…
{RULE}
\u276f\u00a0
{RULE}
  ⏵⏵ bypass permissions on (shift+tab to cycle) · esc to interrupt
""",
    "aider": f"""{RULE}
> ping-abc
Waiting for fake-model
""",
    "shell": "user@box:~/work$ sleep 100\n\n",
}


def _tracker(slug: str) -> ActivityTracker:
    spec = load_catalogue(None).get(slug)
    assert spec is not None and spec.prompt_patterns, slug
    return ActivityTracker(prompt_patterns=spec.prompt_patterns, now=0.0)


@pytest.mark.parametrize("slug", sorted(WAITING))
def test_a_waiting_agent_matches_its_prompt_patterns(slug: str) -> None:
    assert _tracker(slug).matches_prompt(WAITING[slug])


@pytest.mark.parametrize("slug", sorted(WORKING))
def test_a_working_agent_does_not(slug: str) -> None:
    assert not _tracker(slug).matches_prompt(WORKING[slug])


def test_every_builtin_agent_with_a_package_has_prompt_patterns() -> None:
    catalogue = load_catalogue(None)
    for spec in catalogue:
        if spec.package is not None:
            assert spec.prompt_patterns, spec.slug


def _write(tmp_path: Path, rows: list[dict[str, object]]) -> Path:
    path = tmp_path / "agents.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def test_an_override_row_sets_or_inherits_prompt_patterns(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        [
            {"slug": "mine", "binary": "mine", "promptPatterns": ["^mine> $"]},
            {"slug": "aider", "binary": "/opt/aider"},  # keeps the built-in patterns
            {"slug": "opencode", "binary": "opencode", "promptPatterns": []},  # none
        ],
    )
    catalogue = load_catalogue(path)
    builtin = load_catalogue(None)
    assert catalogue.agents["mine"].prompt_patterns == ("^mine> $",)
    assert catalogue.agents["aider"].prompt_patterns == builtin.agents["aider"].prompt_patterns
    assert catalogue.agents["opencode"].prompt_patterns == ()


@pytest.mark.parametrize("bad", [["(unclosed"], "^> $", [1]])
def test_a_bad_prompt_pattern_is_an_error_naming_the_row(tmp_path: Path, bad: object) -> None:
    path = _write(tmp_path, [{"slug": "mine", "binary": "mine", "promptPatterns": bad}])
    with pytest.raises(CatalogueError, match="'mine'"):
        load_catalogue(path)
