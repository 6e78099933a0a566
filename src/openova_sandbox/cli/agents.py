"""`sandbox agents list|install|remove`: the agents of a data dir, managed locally.

These work on the data dir directly (no server needed, none contacted): an install made
here is found by a running server at the next start of a terminal, because the server
looks in ``<data-dir>/agents/bin`` before its PATH. Installs of one agent are serialized
with the server's own (a lock file per agent).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from ..agents.installer import Installer, parse_target
from ..agents.status import agent_statuses
from ..config import Settings, load_settings
from ..domain.catalogue import AgentSpec, Catalogue, load_catalogue
from ..domain.errors import SandboxError
from .console import LazyConsole, escape

app = typer.Typer(
    name="agents",
    help="List, install and remove the coding agents this server runs.",
    no_args_is_help=True,
)
err = LazyConsole(stderr=True)
out = LazyConsole()

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data folder (default $SANDBOX_DATA_DIR or .sandbox)"),
]


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _settings(data_dir: Path | None) -> Settings:
    try:
        return load_settings(data_dir=data_dir)
    except SandboxError as exc:
        fail(exc.detail)


def _catalogue(settings: Settings) -> Catalogue:
    """The catalogue the server would offer (override file, SANDBOX_AGENTS)."""
    try:
        return load_catalogue(settings.agents_path).narrowed(settings.agents)
    except SandboxError as exc:
        fail(exc.detail)


def _agent_env(settings: Settings) -> dict[str, str]:
    """What the server's terminals would get for models (the built-in gateway's
    variables for the protocols it has providers for), to name what is missing."""
    from ..api.composition import agent_env_preview

    try:
        return agent_env_preview(settings, kube=False)
    except SandboxError as exc:  # SANDBOX_LLM_CONFIG cannot be used: the server says so too
        fail(exc.detail)


def _offered(catalogue: Catalogue) -> list[AgentSpec]:
    return [a for slug in catalogue.api_slugs if (a := catalogue.get(slug)) is not None]


@app.command("list")
def list_cmd(
    data_dir: DataDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")] = False,
) -> None:
    """Show every agent: installed?, version, source, path, what is missing.

    SOURCE is builtin or override (the catalogue row, found on the PATH) or managed
    (installed by `sandbox agents install` into the data dir)."""
    settings = _settings(data_dir)
    statuses = agent_statuses(
        _offered(_catalogue(settings)), settings.data_dir, env=_agent_env(settings)
    )
    rows: list[dict[str, Any]] = [
        {
            "slug": s.spec.slug,
            "label": s.spec.label or s.spec.slug,
            "kind": s.kind,
            "installed": s.installed,
            "version": s.version,
            "source": s.located.source,
            "path": s.located.path,
            "missing": list(s.missing),
            "installable": s.installable,
            "package": s.package,
            "manualInstall": s.manual_install,
        }
        for s in statuses
    ]
    if as_json:
        typer.echo(json.dumps({"agents": rows}, indent=2))
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in ("SLUG", "INSTALLED", "VERSION", "SOURCE", "PATH", "MISSING"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            row["slug"],
            "yes" if row["installed"] else "no",
            row["version"] or "-",
            row["source"],
            row["path"] or "-",
            ", ".join(row["missing"]) or "-",
        )
    out.print(table, highlight=False)
    if any(not r["installed"] and r["installable"] for r in rows):
        out.print(
            "Install one with: sandbox agents install <slug>[@version]",
            highlight=False,
            markup=False,
        )


@app.command("install")
def install_cmd(
    targets: Annotated[
        list[str],
        typer.Argument(metavar="SLUG[@VERSION]...", help="e.g. opencode or opencode@1.18.33"),
    ],
    data_dir: DataDir = None,
) -> None:
    """Install agents into the data dir (the pinned version unless one is given).

    npm agents need Node.js 20 or newer. Installing what is installed does nothing; a
    failed install leaves the previous one as it was."""
    settings = _settings(data_dir)
    catalogue = _catalogue(settings)
    _data_dir(settings)
    installer = Installer(settings.data_dir, catalogue)
    failed = []
    for target in targets:
        try:
            slug, version = parse_target(target)
            installer.install(slug, version, progress=_echo)
        except SandboxError as exc:
            err.print(
                f"[red]error:[/red] {escape(target)}: {escape(exc.detail or exc.code)}",
                highlight=False,
                soft_wrap=True,
            )
            failed.append(target)
    if failed:
        raise typer.Exit(1)


@app.command("remove")
def remove_cmd(
    slug: Annotated[str, typer.Argument(metavar="SLUG")],
    data_dir: DataDir = None,
) -> None:
    """Remove an agent installed by `sandbox agents install` (not one on the PATH)."""
    settings = _settings(data_dir)
    try:
        Installer(settings.data_dir, _catalogue(settings)).remove(slug, progress=_echo)
    except SandboxError as exc:
        fail(exc.detail or exc.code)


def _echo(line: str) -> None:
    typer.echo(line)


def _data_dir(settings: Settings) -> None:
    """A new data dir is private (as `sandbox serve` makes it)."""
    path = Path(settings.data_dir)
    if not path.exists():
        try:
            path.mkdir(mode=0o700, parents=True)
        except OSError as exc:
            fail(f"cannot create the data dir {path}: {exc.strerror or exc}")
    elif not os.access(path, os.W_OK):
        fail(f"the data dir {path} is not writable")
