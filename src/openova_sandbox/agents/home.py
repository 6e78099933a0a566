"""Each sandbox's own HOME: seeded with its agents' config files before they start.

A sandbox's agents, shells and extra terminals all run with ``HOME`` set to a folder of
that sandbox alone (embedded mode: ``<data-dir>/homes/<namespace>/<name>``, beside its
workspace; Kubernetes mode: the pod's home volume), so one sandbox's agent state,
history and credentials are never another's, and nothing lands in the server's HOME.

Before an agent starts, :func:`prepare_home`

- creates the folder (0700) if it is not there;
- writes each of the agent's ``home_files`` that is not there yet (0600, folders 0700),
  rendered with ``string.Template.safe_substitute`` from the agent's environment —
  a file that is already there is kept, so the user's edits win;
- writes a git identity (the sandbox owner) when there is none: a fresh HOME has no
  ``.gitconfig``, and commits would fail without one;
- says whether the agent's resume arguments apply: they do when the agent was started
  in this HOME before (a marker file per agent, written at each start).

Rows put no secrets into files: API keys stay in the environment (the templates refer
to them the way each agent reads variables at run time).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from string import Template

from ..domain.catalogue import AgentSpec, HomeFile

HOME_MODE = 0o700
FILE_MODE = 0o600
# where the server keeps its own notes in a HOME (one marker per agent that ran here)
MARKER_DIR = ".openova-sandbox"

GITCONFIG = HomeFile(
    path=".gitconfig",
    template="[user]\n\tname = ${SANDBOX_OWNER}\n\temail = ${SANDBOX_OWNER}\n",
)


def render(template: str, env: Mapping[str, str]) -> str:
    """``${NAME}`` → the variable's value; unknown names (and a lone ``$``) stay as they
    are. ``$$`` is a literal ``$`` (JSON keys such as ``$$schema`` are written so)."""
    return Template(template).safe_substitute(env)


def _make_dirs(folder: Path, stop: Path) -> None:
    """``mkdir -p`` for ``folder`` up to ``stop`` (exclusive), each new folder 0700."""
    missing = []
    current = folder
    while current != stop and not current.exists():
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=HOME_MODE)
        except FileExistsError:
            continue
        path.chmod(HOME_MODE)  # mkdir's mode is filtered by the umask


def ensure_home(home: Path) -> None:
    """The folder and any missing parents, each new one 0700."""
    _make_dirs(home, Path(home.anchor))


def write_new(home: Path, relative: str, content: str) -> bool:
    """Write ``home/relative`` (0600) unless something is there already (a link too);
    ``False`` when nothing was written. Never writes through a link that leads out of
    the HOME (a folder the user linked elsewhere - maybe another sandbox's)."""
    target = home / relative
    if target.is_symlink() or target.exists():
        return False
    inside = home.resolve()
    parent = target.parent
    while not parent.exists():  # the part that exists decides where the file would land
        parent = parent.parent
    if not parent.resolve().is_relative_to(inside):
        return False
    _make_dirs(target.parent, home)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(content)
    return True


def seed(home: Path, files: Iterable[HomeFile], env: Mapping[str, str]) -> list[str]:
    """Write the files that are not there yet; returns the paths written."""
    ensure_home(home)
    written = []
    for item in files:
        if write_new(home, item.path, render(item.template, env)):
            written.append(item.path)
    return written


def _marker(home: Path, slug: str) -> Path:
    return home / MARKER_DIR / f"started-{slug}"


def has_run(home: Path, slug: str) -> bool:
    return _marker(home, slug).exists()


def mark_run(home: Path, slug: str) -> None:
    marker = _marker(home, slug)
    _make_dirs(marker.parent, home)
    marker.touch(mode=FILE_MODE)


# A login shell (the Shell row's ``bash -l``, the rescue ``sh -l``) runs /etc/profile,
# which on Debian sets PATH from scratch: the managed agents' folder, on the PATH every
# terminal of the sandbox is given, was gone in the Shell (``claude: command not found``).
# The spawn passes that PATH as ``SANDBOX_PATH`` too, and this file puts it back; then
# what Debian's own skeleton ~/.profile does. ``$$`` is a literal ``$`` (the template is
# rendered with ``string.Template``).
PROFILE = HomeFile(
    path=".profile",
    template=(
        "# Written by OpenOva Sandbox when this HOME had none; yours to edit.\n"
        "# /etc/profile resets PATH for login shells: put back the sandbox's (its agents).\n"
        'if [ -n "$${SANDBOX_PATH:-}" ]; then PATH="$$SANDBOX_PATH"; export PATH; fi\n'
        'if [ -n "$${BASH_VERSION:-}" ] && [ -f "$$HOME/.bashrc" ]; then . "$$HOME/.bashrc"; fi\n'
        'if [ -d "$$HOME/.local/bin" ]; then PATH="$$HOME/.local/bin:$$PATH"; fi\n'
    ),
)


def common_files(env: Mapping[str, str]) -> tuple[HomeFile, ...]:
    """Files every sandbox HOME gets, whatever runs in it."""
    return (PROFILE, GITCONFIG) if env.get("SANDBOX_OWNER") else (PROFILE,)


def prepare_home(
    home: Path, agent: AgentSpec | None, env: Mapping[str, str], *, resume: bool
) -> tuple[str, ...]:
    """Seed ``home`` for ``agent`` (``None``: a plain command) and return the arguments
    to add to its command line: its resume arguments when ``resume`` is asked and it
    ran in this HOME before, else none. Marks the agent as having run here."""
    files = [*common_files(env), *(agent.home_files if agent else ())]
    seed(home, files, env)
    if agent is None:
        return ()
    extra = agent.resume_args if resume and agent.resume_args and has_run(home, agent.slug) else ()
    mark_run(home, agent.slug)
    return extra
