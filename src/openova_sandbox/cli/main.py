"""The `sandbox` command.

`serve` runs the embedded all-in-one server; `token` mints a token from a data dir's
embedded issuer; `ls`/`create`/`get`/`rm`/`attach` talk to a running server. Every
failure prints a message on stderr and exits non-zero (1 for API/usage errors, 2 for
bad invocations as typer does).
"""

from __future__ import annotations

import getpass
import json
import os
import re
import sys
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn
from urllib.parse import quote

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .. import __version__
from ..config import Settings, load_settings
from ..domain.errors import SandboxError
from ..serving import UVICORN_OPTIONS, shutdown_hooks
from ..serving import Server as HttpServer
from .agents import app as agents_app
from .client import ApiClient, ApiError

app = typer.Typer(
    name="sandbox",
    help="OpenOva Sandbox: long-lived coding-agent sessions in a browser terminal.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(agents_app, name="agents")
err = Console(stderr=True)
out = Console()

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data folder (default $SANDBOX_DATA_DIR or .sandbox)"),
]
Server = Annotated[
    str, typer.Option("--server", envvar="SANDBOX_SERVER", help="Base URL of a running server")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")]


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def settings_or_exit(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except SandboxError as exc:
        fail(exc.detail)


def local_identity() -> dict[str, Any]:
    """Who the embedded server's login link and the CLI's minted tokens speak for."""
    user = re.sub(r"[^a-z0-9-]+", "-", getpass.getuser().lower()).strip("-") or "user"
    return {
        "sub": f"local-{user}",
        "email": f"{user}@sandbox.local",
        "org": "local",
        "roles": ["org-admin"],
    }


MAX_TTL = timedelta(days=3650)


def parse_ttl(text: str) -> timedelta:
    match = re.fullmatch(r"\s*(\d{1,12})\s*([smhd]?)\s*", text)
    usage = f"--ttl {text!r}: use a positive number with s, m, h or d (e.g. 90m, 1h)"
    if not match or int(match.group(1)) <= 0:
        fail(usage)
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match.group(2) or "s"]
    try:
        lifetime = timedelta(**{unit: int(match.group(1))})
    except OverflowError:
        lifetime = MAX_TTL + MAX_TTL
    if lifetime > MAX_TTL:
        fail(f"--ttl {text!r}: at most {MAX_TTL.days}d")
    return lifetime


def version_callback(value: bool) -> None:
    if value:
        out.print(f"sandbox {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=version_callback, is_eager=True)
    ] = False,
) -> None:
    """OpenOva Sandbox."""
    from ..logs import configure

    # client commands log warnings only, on stderr; serve/pty-server reconfigure
    configure(level="warning")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8080,
    data_dir: DataDir = None,
) -> None:
    """Run the embedded all-in-one server (API, console, controller, terminals)."""
    import uvicorn

    from ..api.app import create_app
    from ..api.composition import build_embedded
    from ..logs import configure

    settings = settings_or_exit(data_dir=data_dir)
    configure(level=settings.log_level, json=settings.log_json)
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    base = settings.public_url.rstrip("/") or f"http://{shown_host}:{port}"
    try:
        deps = build_embedded(settings, public_url=base)
    except SandboxError as exc:
        fail(exc.detail)
    except OSError as exc:
        fail(f"cannot use the data dir {settings.data_dir}: {exc.strerror or exc}")

    async def announce() -> None:
        out.print(f"OpenOva Sandbox {__version__} serving on {base}", highlight=False)
        out.print(f"Console:     {base}/sandbox", highlight=False)
        if deps.issuer is None:
            # tokens come from the external issuer: a link minted here would not validate
            out.print(
                f"Sign-in:     tokens of {settings.oidc_issuer or settings.jwks_url}; "
                f"open {base}/login?token=<token>",
                highlight=False,
                soft_wrap=True,
            )
        else:
            ident = local_identity()
            token = deps.logins.login_link_token(
                sub=ident["sub"], email=ident["email"], org=ident["org"], roles=ident["roles"]
            )
            out.print(
                f"Login (one-time, 1 h): {base}/login?token={token}",
                highlight=False,
                soft_wrap=True,
            )
        sys.stdout.flush()

    app_ = create_app(deps)
    config = uvicorn.Config(
        app_,
        host=host,
        port=port,
        **UVICORN_OPTIONS,
        ws_ping_interval=20,
        ws_ping_timeout=20,
        timeout_graceful_shutdown=10,
    )
    server = HttpServer(config, on_shutdown=shutdown_hooks(app_), on_listening=[announce])
    try:
        server.run()
    except SystemExit:  # uvicorn's way of saying the startup failed
        server.started = False
    if not server.started:
        fail(f"could not start on {host}:{port} (address in use? see the log above)")


@app.command("api")
def api_cmd(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "0.0.0.0",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8080,
) -> None:
    """Run the control plane alone (Kubernetes mode: SANDBOX_STORE=kube; terminals are
    proxied to each sandbox's terminal server, the operator runs separately)."""
    import uvicorn

    from ..api.app import create_app
    from ..api.composition import build_api
    from ..logs import configure

    settings = settings_or_exit()
    configure(level=settings.log_level, json=settings.log_json)
    try:
        deps = build_api(settings, public_url=settings.public_url)
    except SandboxError as exc:
        fail(exc.detail)
    app_ = create_app(deps)
    config = uvicorn.Config(app_, host=host, port=port, **UVICORN_OPTIONS)
    HttpServer(config, on_shutdown=shutdown_hooks(app_)).run()


@app.command()
def token(
    sub: Annotated[str, typer.Option(help="Subject (user id)")],
    email: Annotated[str, typer.Option(help="Email claim (owner of created sandboxes)")],
    org: Annotated[str, typer.Option(help="Organization (org_id claim)")],
    role: Annotated[list[str] | None, typer.Option(help="Realm role; repeatable")] = None,
    ttl: Annotated[str, typer.Option(help="Lifetime, e.g. 30m, 1h, 7d")] = "1h",
    data_dir: DataDir = None,
) -> None:
    """Print a JWT signed by the data dir's embedded issuer."""
    from ..auth.issuer import EmbeddedIssuer

    settings = settings_or_exit(data_dir=data_dir)
    lifetime = parse_ttl(ttl)
    try:
        issuer = EmbeddedIssuer.load(Path(settings.data_dir))
        jwt = issuer.mint(
            sub=sub,
            email=email,
            org=org,
            roles=role or [],
            ttl=lifetime,
            audience=settings.oidc_audience,
        )
    except SandboxError as exc:
        fail(exc.detail)
    typer.echo(jwt)


def client_for(server: str, data_dir: Path | None) -> ApiClient:
    env_token = os.environ.get("SANDBOX_TOKEN", "").strip()
    if env_token:
        if not env_token.isascii() or not env_token.isprintable():
            fail(
                "SANDBOX_TOKEN is not a token (a JWT is printable ASCII); mint one with "
                "`sandbox token`"
            )
        return ApiClient(server, env_token)
    from ..auth.issuer import EmbeddedIssuer

    settings = settings_or_exit(data_dir=data_dir)
    try:
        issuer = EmbeddedIssuer.load(Path(settings.data_dir))
    except SandboxError as exc:
        fail(f"no SANDBOX_TOKEN set and {exc.detail}")
    ident = local_identity()
    minted = issuer.mint(
        sub=ident["sub"],
        email=ident["email"],
        org=ident["org"],
        roles=ident["roles"],
        ttl=timedelta(minutes=10),
        audience=settings.oidc_audience,
    )
    return ApiClient(server, minted)


def call(client: ApiClient, method: str, path: str, body: Any = None) -> Any:
    try:
        response = client.request(method, path, json=body)
    except ApiError as exc:
        fail(str(exc))
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        fail(
            f"{client.server} answered {method} {path} with something that is not the API "
            "(is --server the server's base URL, e.g. http://127.0.0.1:8080?)"
        )


def session_path(sandbox_id: str, suffix: str = "") -> str:
    """The API path of one sandbox; the id is one path segment whatever it holds."""
    if not sandbox_id.strip():
        fail("the sandbox ID is empty")
    return f"/api/v1/sandbox/sessions/{quote(sandbox_id, safe='')}{suffix}"


def print_items(items: list[dict[str, Any]]) -> None:
    table = Table(box=None, header_style="bold")
    for column in ("ID", "NAME", "AGENT", "STATUS", "REPO", "SESSIONS", "CREATED"):
        table.add_column(column)
    for item in items:
        table.add_row(
            item["id"],
            item["name"],
            item["agent"],
            item["status"],
            item["repo"] or "-",
            str(item["sessions"]),
            item["createdAt"],
        )
    out.print(table)


DEFAULT_SERVER = "http://127.0.0.1:8080"


@app.command("ls")
def list_cmd(
    server: Server = DEFAULT_SERVER,
    data_dir: DataDir = None,
    org: Annotated[bool, typer.Option("--org", help="Every sandbox of the org (admins)")] = False,
    as_json: AsJson = False,
) -> None:
    """List your sandboxes."""
    body = call(
        client_for(server, data_dir),
        "GET",
        "/api/v1/sandbox/sessions" + ("?scope=org" if org else ""),
    )
    if as_json:
        typer.echo(json.dumps(body, indent=2))
    elif not body["sandboxes"]:
        out.print("No sandboxes yet. Create one with: sandbox create --agent <agent>")
    else:
        print_items(body["sandboxes"])


@app.command()
def create(
    agent: Annotated[str, typer.Option(help="Agent id, e.g. claude-code or aider")],
    name: Annotated[str | None, typer.Option(help="Sandbox name")] = None,
    repo: Annotated[str | None, typer.Option(help="Repository to clone, org/repo")] = None,
    server: Server = DEFAULT_SERVER,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Create a sandbox."""
    payload: dict[str, Any] = {"agent": agent}
    if name is not None:
        payload["name"] = name
    if repo is not None:
        payload["repo"] = repo
    item = call(client_for(server, data_dir), "POST", "/api/v1/sandbox/sessions", payload)
    if as_json:
        typer.echo(json.dumps(item, indent=2))
    else:
        print_items([item])


@app.command()
def get(
    sandbox_id: Annotated[str, typer.Argument(metavar="ID")],
    server: Server = DEFAULT_SERVER,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Show one sandbox."""
    item = call(client_for(server, data_dir), "GET", session_path(sandbox_id))
    if as_json:
        typer.echo(json.dumps(item, indent=2))
        return
    print_items([item])
    for cond in item["conditions"]:
        out.print(
            f"  {cond['type']:<16} {cond['status']:<8} {cond.get('reason', '')}"
            f" {cond.get('message', '')}",
            highlight=False,
        )


@app.command()
def rm(
    sandbox_id: Annotated[str, typer.Argument(metavar="ID")],
    server: Server = DEFAULT_SERVER,
    data_dir: DataDir = None,
) -> None:
    """Delete a sandbox (its terminals stop, its workspace is removed)."""
    call(client_for(server, data_dir), "DELETE", session_path(sandbox_id))
    out.print(f"deleted {sandbox_id}")


@app.command("attach")
def attach_cmd(
    sandbox_id: Annotated[str, typer.Argument(metavar="ID")],
    server: Server = DEFAULT_SERVER,
    data_dir: DataDir = None,
) -> None:
    """Attach this terminal to a sandbox's agent (Ctrl-] detaches; the agent keeps running)."""
    import asyncio

    import websockets

    from .attach import attach

    client = client_for(server, data_dir)
    call(client, "GET", session_path(sandbox_id))  # clear 404/401 first
    try:
        ended = asyncio.run(attach(client, sandbox_id))
    except (OSError, websockets.WebSocketException) as exc:
        fail(f"attach failed: {exc}")
    except ApiError as exc:
        fail(str(exc))
    err.print(f"\r\n[sandbox] {ended.why}", highlight=False, markup=False)
    if not ended.ok:
        raise typer.Exit(1)


@app.command("pty-server")
def pty_server(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "0.0.0.0",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 7681,
) -> None:
    """Run the terminal server of one sandbox (the per-sandbox pod in Kubernetes),
    configured by SANDBOX_ID, SANDBOX_NAMESPACE, SANDBOX_OWNER_EMAIL, SANDBOX_ORG_ID,
    SANDBOX_DEFAULT_AGENT, SANDBOX_SESSION_LIMIT and SANDBOX_OIDC_ISSUER/SANDBOX_JWKS_URL."""
    import uvicorn

    from ..auth.authenticator import build_authenticator
    from ..auth.issuer import EmbeddedIssuer
    from ..auth.sources import extract_token
    from ..logs import configure
    from ..services.terminals import prepare_spawn
    from ..terminal.standalone import build_standalone_app

    settings = settings_or_exit()
    configure(level=settings.log_level, json=settings.log_json)
    if not settings.pty_sandbox_id:
        fail("SANDBOX_ID is required: the sandbox whose terminals this server runs")
    issuer = None
    if not (settings.oidc_issuer or settings.jwks_url):
        try:
            issuer = EmbeddedIssuer.load(Path(settings.data_dir))
        except SandboxError as exc:
            fail(f"no SANDBOX_OIDC_ISSUER or SANDBOX_JWKS_URL set, and {exc.detail}")
    authenticator = build_authenticator(settings, issuer=issuer)

    def extract(
        *, authorization: str | None, query_token: str | None, cookie: str | None
    ) -> str | None:
        found = extract_token(
            authorization=authorization,
            query_token=query_token,
            cookie=cookie,
            cookie_secret=settings.cookie_secret,
        )
        return found.token if found else None

    app_ = build_standalone_app(
        settings,
        authenticate=authenticator.authenticate,
        extract_token=extract,
        public_origin=settings.public_url or None,
        prepare_spawn=prepare_spawn,  # seeds the pod's HOME (its home volume) per agent
    )
    uvicorn.run(app_, host=host, port=port, **UVICORN_OPTIONS)


@app.command()
def operator(
    namespace: Annotated[
        str | None,
        typer.Option(help="Watch Sandboxes in this namespace only (default: all namespaces)"),
    ] = None,
    metrics_port: Annotated[
        int, typer.Option(help="Port of the Prometheus /metrics endpoint (0: none)")
    ] = 8081,
) -> None:
    """Run the Kubernetes operator (reconciles every Sandbox into its namespace; KUBECONFIG
    or in-cluster config). Replicas elect a leader with a Lease; only it reconciles."""
    import asyncio

    from ..controller.kube.operator import run_operator
    from ..logs import configure

    settings = settings_or_exit()
    configure(level=settings.log_level, json=settings.log_json)
    asyncio.run(
        run_operator(settings, namespace=namespace or None, metrics_port=metrics_port or None)
    )


@app.command()
def openapi() -> None:
    """Print the API's OpenAPI document (the console's client is generated from it)."""
    typer.echo(json.dumps(openapi_document(), indent=2, sort_keys=True))


def openapi_document() -> dict[str, Any]:
    import tempfile

    from ..api.app import create_app
    from ..api.composition import build_embedded

    with tempfile.TemporaryDirectory() as tmp:
        settings = settings_or_exit(data_dir=Path(tmp), store="memory")
        document: dict[str, Any] = create_app(build_embedded(settings)).openapi()
    return document


def main() -> None:
    app()
