"""`sandbox tokens create|list|revoke`: personal access tokens for scripts (issue 11;
docs/api.md, "Personal access tokens").

Against a running server, with the CLI's usual credentials (``SANDBOX_TOKEN``, else a
token minted from the data dir). ``create`` prints the new token alone on stdout (so
``TOKEN=$(sandbox tokens create ci)`` works) and what it is on stderr; the server shows
it this once. Use it as ``SANDBOX_TOKEN`` or ``Authorization: Bearer``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from .console import LazyConsole, escape

app = typer.Typer(
    name="tokens",
    help="Personal access tokens for scripts: create, list, revoke.",
    no_args_is_help=True,
)
err = LazyConsole(stderr=True)
out = LazyConsole()

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data folder (default $SANDBOX_DATA_DIR or .sandbox)"),
]
Server = Annotated[
    str | None,
    typer.Option("--server", help="Base URL of a running server", show_default=False),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")]
TOKENS = "/api/v1/sandbox/tokens"


def _client(server: str | None, data_dir: Path | None) -> Any:
    from .main import client_for

    return client_for(server, data_dir)


def _call(client: Any, method: str, path: str, body: Any = None) -> Any:
    from .main import call

    return call(client, method, path, body)


@app.command("create")
def create_cmd(
    name: Annotated[str, typer.Argument(help="A label for the token, like the script's name")],
    expires_in_days: Annotated[
        int | None,
        typer.Option("--expires-in-days", help="Days until it expires (default: the server's)"),
    ] = None,
    as_json: AsJson = False,
    server: Server = None,
    data_dir: DataDir = None,
) -> None:
    """Create a token; it is printed once (stdout), its details on stderr."""
    body: dict[str, Any] = {"name": name}
    if expires_in_days is not None:
        body["expiresInDays"] = expires_in_days
    created = _call(_client(server, data_dir), "POST", TOKENS, body)
    if as_json:
        print(json.dumps(created, indent=2))
        return
    err.print(
        f"token {escape(created['id'])} ({escape(created['name'])}), expires "
        f"{escape(created['expiresAt'])}; shown once, keep it safe:",
        highlight=False,
        soft_wrap=True,
    )
    print(created["token"])


@app.command("list")
def list_cmd(
    org: Annotated[bool, typer.Option("--org", help="Every token of the org (org admins)")] = False,
    as_json: AsJson = False,
    server: Server = None,
    data_dir: DataDir = None,
) -> None:
    """Your tokens (never the tokens themselves): id, name, expiry, last use."""
    path = TOKENS + ("?scope=org" if org else "")
    listed = _call(_client(server, data_dir), "GET", path)["tokens"]
    if as_json:
        print(json.dumps(listed, indent=2))
        return
    if not listed:
        err.print("no tokens; create one with `sandbox tokens create <name>`", highlight=False)
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in ("ID", "NAME", *(["OWNER"] if org else []), "EXPIRES", "LAST USED"):
        table.add_column(column)
    for token in listed:
        expires = token["expiresAt"] + (" (expired)" if token["expired"] else "")
        table.add_row(
            escape(token["id"]),
            escape(token["name"]),
            *([escape(token["owner"])] if org else []),
            escape(expires),
            escape(token["lastUsedAt"] or "never"),
        )
    out.print(table)


@app.command("revoke")
def revoke_cmd(
    token_id: Annotated[str, typer.Argument(metavar="ID", help="The token's id (`tokens list`)")],
    server: Server = None,
    data_dir: DataDir = None,
) -> None:
    """Revoke a token: it stops working at once on this server (on other replicas
    within seconds)."""
    from urllib.parse import quote

    _call(_client(server, data_dir), "DELETE", f"{TOKENS}/{quote(token_id, safe='')}")
    err.print(f"revoked {escape(token_id)}", highlight=False)
