"""The `sandbox` command.

`serve` runs the embedded all-in-one server (`api`, `operator`, `pty-server` and
`gateway` are Kubernetes mode's parts); `token` mints a token from a data dir's
embedded issuer; `ls`/`create`/`get`/`rm`/`attach`/`login-link` talk to a running
server (``--server`` before or after the command, else ``$SANDBOX_SERVER``, else
http://127.0.0.1:8080). Every failure prints a message on stderr and exits non-zero (1
for API/usage errors, 2 for bad invocations as typer does).
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import sys
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn
from urllib.parse import quote, urlsplit

import typer

from .. import __version__
from ..config import Settings, load_settings
from ..domain.errors import SandboxError
from ..serving import UVICORN_OPTIONS, shutdown_hooks
from ..serving import Server as HttpServer
from .agents import app as agents_app
from .audit import app as audit_app
from .client import ApiClient, ApiError
from .console import LazyConsole, escape
from .login import login_cmd, logout_cmd
from .mcp import mcp_cmd
from .pod import startup_error
from .tokens import app as tokens_app


def _flags_show_no_type() -> None:
    """typer prints a type after every option in help, so flags read ``--json <bool>``,
    as if they took a value; a flag (``--json``, ``--help``) shows none."""
    from typer.core import TyperOption

    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is None or getattr(shown, "flags_show_no_type", False):
        return

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag else shown(self, ctx)

    display_type_rich.flags_show_no_type = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_show_no_type()

app = typer.Typer(
    name="sandbox",
    help="OpenOva Sandbox: long-lived coding-agent sessions in a browser terminal.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(agents_app, name="agents")
app.command("login")(login_cmd)
app.command("logout")(logout_cmd)
app.add_typer(audit_app, name="audit")
app.add_typer(tokens_app, name="tokens")
app.command("mcp")(mcp_cmd)
err = LazyConsole(stderr=True)  # rich is imported at the first print, not at start
out = LazyConsole()

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data folder (default $SANDBOX_DATA_DIR or .sandbox)"),
]
SERVER_HELP = (
    "Base URL of a running server (also before the command; default $SANDBOX_SERVER, "
    "else http://127.0.0.1:8080)"
)
Server = Annotated[str | None, typer.Option("--server", help=SERVER_HELP, show_default=False)]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")]
DEFAULT_SERVER = "http://127.0.0.1:8080"
_global_server: str | None = None  # `sandbox --server URL <command>`


def server_url(option: str | None) -> str:
    """The command's --server, else the one before the command, else $SANDBOX_SERVER."""
    chosen = option or _global_server or os.environ.get("SANDBOX_SERVER", "").strip()
    return chosen or DEFAULT_SERVER


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
        bool,
        typer.Option(
            "--version", callback=version_callback, is_eager=True, help="Print the version"
        ),
    ] = False,
    server: Server = None,
) -> None:
    """OpenOva Sandbox."""
    global _global_server
    from ..logs import configure

    _global_server = server
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
        fail(startup_error(exc))
    except OSError as exc:
        fail(f"cannot use the data dir {settings.data_dir}: {exc.strerror or exc}")

    async def announce() -> None:
        # the first listing and reconcile log; let them, so the link is the last line
        await settled(deps)
        out.print(f"OpenOva Sandbox {__version__} serving on {base}", highlight=False)
        out.print(f"Console:  {base}/sandbox", highlight=False)
        out.print("Agents:   sandbox agents list / sandbox agents install <agent>", highlight=False)
        if deps.mcp is not None:  # each agent's MCP config gets its sandbox's token at start
            out.print(f"MCP:      {base}/mcp (docs/mcp.md)", highlight=False)
        iso = deps.isolation
        if iso is not None:  # issue 12: what keeps the terminals apart, or that nothing does
            said = (
                "each sandbox in its own bubblewrap view (workspace, HOME, /tmp, processes)"
                if iso.policy is not None
                else f"NONE ({iso.reason}): every terminal runs as this server's user and "
                "can read the data dir and every workspace; serve one user only"
            )
            out.print(f"Isolation: {said}", highlight=False, soft_wrap=True)
        if deps.oidc_sessions is not None:
            # the console and the CLI sign in at the external issuer (docs/auth.md)
            out.print(
                f"Sign-in:  the console's Sign in (identity provider "
                f"{settings.oidc_issuer}); the CLI: sandbox login --server {base}; a "
                f"token: open {base}/login?token=<token>",
                highlight=False,
                soft_wrap=True,
            )
        elif deps.issuer is None:
            # tokens come from the external issuer: a link minted here would not validate
            out.print(
                f"Sign-in:  tokens of {settings.oidc_issuer or settings.jwks_url}; "
                f"open {base}/login?token=<token>",
                highlight=False,
                soft_wrap=True,
            )
        else:
            out.print(
                "Phone:    sandbox login-link [--session ID] prints a link and QR code",
                highlight=False,
            )
            ident = local_identity()
            token = deps.logins.login_link_token(
                sub=ident["sub"], email=ident["email"], org=ident["org"], roles=ident["roles"]
            )
            out.print()
            out.print("[bold]Sign in (one-time link, valid 1 h):[/bold]", highlight=False)
            out.print(
                f"[bold green]{escape(base)}/login?token={token}[/bold green]",
                highlight=False,
                soft_wrap=True,
            )
            out.print()
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
    server = HttpServer(
        config, on_shutdown=shutdown_hooks(app_), on_listening=[announce], gc_policy=True
    )
    try:
        server.run()
    except SystemExit:  # uvicorn's way of saying the startup failed
        server.started = False
    if not server.started:
        fail(f"could not start on {host}:{port} (address in use? see the log above)")


STARTUP_SETTLE_SECONDS = 5.0


async def settled(deps: Any) -> None:
    """Until the start-up work that logs is done (the resource cache's first listing,
    the controller's first pass), at most a few seconds."""
    import asyncio
    import contextlib

    from ..controller.runner import EmbeddedController

    waits: list[Any] = []
    if deps.resources is not None:
        waits.append(deps.resources.informer.wait_synced(STARTUP_SETTLE_SECONDS))
    waits += [p.wait_idle() for p in deps.background if isinstance(p, EmbeddedController)]
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(STARTUP_SETTLE_SECONDS):
            await asyncio.gather(*waits)


@app.command("api")
def api_cmd(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "0.0.0.0",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8080,
) -> None:
    """Run the control plane alone (Kubernetes mode: SANDBOX_STORE=kube; terminals are
    proxied to each sandbox's terminal server, the operator runs separately)."""
    import uvicorn

    from ..api.app import create_app
    from ..api.composition import build_api, shared_auth_problems
    from ..logs import configure

    settings = settings_or_exit()
    configure(level=settings.log_level, json=settings.log_json)
    if settings.store == "kube" and (problems := shared_auth_problems(settings)):
        fail("sandbox api (Kubernetes mode) cannot start: " + "; ".join(problems))
    try:
        deps = build_api(settings, public_url=settings.public_url)
    except SandboxError as exc:
        fail(startup_error(exc))
    app_ = create_app(deps)
    config = uvicorn.Config(app_, host=host, port=port, **UVICORN_OPTIONS)
    HttpServer(config, on_shutdown=shutdown_hooks(app_), gc_policy=True).run()


@app.command("gateway")
def gateway_cmd(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "0.0.0.0",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8090,
) -> None:
    """Run the model gateway alone (Kubernetes mode: its own Deployment; stateless, any
    number of replicas). Upstreams from SANDBOX_LLM_CONFIG (else OPENAI_*/ANTHROPIC_*);
    tokens, usage and budgets in the store's SQL database (SANDBOX_DATABASE_URL)."""
    import uvicorn

    from ..api.composition import build_gateway_app
    from ..logs import configure

    settings = settings_or_exit()
    configure(level=settings.log_level, json=settings.log_json)
    try:
        app_ = build_gateway_app(settings)
    except SandboxError as exc:
        fail(startup_error(exc))
    config = uvicorn.Config(app_, host=host, port=port, **UVICORN_OPTIONS)
    HttpServer(config, on_shutdown=shutdown_hooks(app_), gc_policy=True).run()


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


def server_answers(server: str) -> bool:
    """Whether something answers ``/healthz`` at ``server`` (to give the right advice)."""
    import httpx

    try:
        return httpx.get(server.rstrip("/") + "/healthz", timeout=3).status_code < 500
    except httpx.HTTPError:
        return False


def client_for(server: str | None, data_dir: Path | None) -> ApiClient:
    url = server_url(server)
    env_token = os.environ.get("SANDBOX_TOKEN", "").strip()
    if env_token:
        if not env_token.isascii() or not env_token.isprintable():
            fail(
                "SANDBOX_TOKEN is not a token (a JWT is printable ASCII); mint one with "
                "`sandbox token`"
            )
        return ApiClient(url, env_token, token_from="SANDBOX_TOKEN")
    from .login import stored_client

    signed_in = stored_client(url)  # `sandbox login`'s token, refreshed when due
    if signed_in is not None:
        return signed_in
    from ..auth.issuer import EmbeddedIssuer

    settings = settings_or_exit(data_dir=data_dir)
    try:
        issuer = EmbeddedIssuer.load(Path(settings.data_dir))
    except SandboxError:
        where = settings.data_dir
        if server_answers(url):
            fail(
                f"the server at {url} is running, but {where} is not its data dir (no "
                "issuer key there) and no SANDBOX_TOKEN is set: pass the data dir it was "
                "started with (--data-dir or SANDBOX_DATA_DIR), or set SANDBOX_TOKEN to a "
                "token from `sandbox token --data-dir <its data dir> …`"
            )
        fail(
            f"no server answers at {url} and {where} has no issuer key: start one with "
            f"`sandbox serve --data-dir {where}`, or point --server (and --data-dir) at "
            "yours"
        )
    ident = local_identity()
    minted = issuer.mint(
        sub=ident["sub"],
        email=ident["email"],
        org=ident["org"],
        roles=ident["roles"],
        ttl=timedelta(minutes=10),
        audience=settings.oidc_audience,
    )
    return ApiClient(url, minted, token_from=f"the data dir {settings.data_dir}")


def call(client: ApiClient, method: str, path: str, body: Any = None) -> Any:
    try:
        response = client.request(method, path, json=body)
    except ApiError as exc:
        fail(advice(client, exc))
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        fail(
            f"{client.server} answered {method} {path} with something that is not the API "
            "(is --server the server's base URL, e.g. http://127.0.0.1:8080?)"
        )


def advice(client: ApiClient, exc: ApiError) -> str:
    """The error, with what to do about it where the situation says so."""
    if exc.status == 0:
        return (
            f"{exc.detail}: is the server running? Start one with `sandbox serve`, or "
            "point --server at yours"
        )
    if exc.status == 401 and exc.code == "unauthenticated":
        if client.token_from == "sandbox login":
            return (
                f"the server at {client.server} did not accept the sign-in of `sandbox "
                f"login` (HTTP 401{': ' + exc.detail if exc.detail else ''}): run "
                "`sandbox login` again"
            )
        if client.token_from == "SANDBOX_TOKEN":
            return (
                f"the server at {client.server} did not accept SANDBOX_TOKEN (HTTP 401: "
                "expired, or from another issuer?): mint a new one with `sandbox token`"
            )
        return (
            f"the server at {client.server} did not accept a token from "
            f"{client.token_from} (HTTP 401): is that the data dir it was started with? "
            "Pass its --data-dir (or SANDBOX_DATA_DIR), or set SANDBOX_TOKEN"
        )
    return str(exc)


def session_path(sandbox_id: str, suffix: str = "") -> str:
    """The API path of one sandbox; the id is one path segment whatever it holds."""
    if not sandbox_id.strip():
        fail("the sandbox ID is empty")
    return f"/api/v1/sandbox/sessions/{quote(sandbox_id, safe='')}{suffix}"


COLUMNS = (
    ("ID", "id"),
    ("NAME", "name"),
    ("AGENT", "agent"),
    ("STATUS", "status"),
    ("REPO", "repo"),
    ("SESSIONS", "sessions"),
    ("CREATED", "createdAt"),
)


def print_items(items: list[dict[str, Any]]) -> None:
    """Plain columns, each as wide as its widest value: an ID is never cut (it is what
    get/attach/rm need); a line wider than the terminal wraps instead."""
    rows = [[title for title, _ in COLUMNS]]
    for item in items:
        rows.append([str(item.get(key) or ("-" if key == "repo" else "")) for _, key in COLUMNS])
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    for row in rows:
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        typer.echo(line.rstrip())


@app.command("ls")
def list_cmd(
    server: Server = None,
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
    agent: Annotated[str, typer.Option(help="Agent id, e.g. shell, opencode or claude-code")],
    name: Annotated[str | None, typer.Option(help="Sandbox name")] = None,
    repo: Annotated[str | None, typer.Option(help="Repository to clone, org/repo")] = None,
    server: Server = None,
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
    server: Server = None,
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
            markup=False,
        )


@app.command()
def rm(
    sandbox_id: Annotated[str, typer.Argument(metavar="ID")],
    server: Server = None,
    data_dir: DataDir = None,
) -> None:
    """Delete a sandbox (its terminals stop, its workspace is removed)."""
    client = client_for(server, data_dir)
    # the API's DELETE is idempotent (204 for what is already gone): ask first, so a
    # mistyped ID is said to be missing instead of "deleted"
    try:
        client.request("GET", session_path(sandbox_id))
    except ApiError as exc:
        if exc.status == 404:
            fail(f'no sandbox "{sandbox_id}" here (see `sandbox ls`); nothing deleted')
        fail(advice(client, exc))
    call(client, "DELETE", session_path(sandbox_id))
    out.print(f"deleted {sandbox_id}", highlight=False, markup=False)


@app.command("attach")
def attach_cmd(
    sandbox_id: Annotated[str, typer.Argument(metavar="ID")],
    server: Server = None,
    data_dir: DataDir = None,
) -> None:
    """Attach this terminal to a sandbox's agent (Ctrl-] detaches; the agent keeps running)."""
    import asyncio

    import websockets

    from .attach import attach

    path = session_path(sandbox_id)
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        fail(
            "sandbox attach needs a terminal (its input and output are not one): run it "
            "in a terminal, or open the sandbox in the console"
        )
    client = client_for(server, data_dir)
    call(client, "GET", path)  # clear 404/401 first
    try:
        ended = asyncio.run(attach(client, sandbox_id))
    except (OSError, websockets.WebSocketException) as exc:
        fail(f"attach failed: {exc}")
    except ApiError as exc:
        fail(advice(client, exc))
    err.print(f"\r\n[sandbox] {ended.why}", highlight=False, markup=False)
    if not ended.ok:
        raise typer.Exit(1)


@app.command("login-link")
def login_link(
    session: Annotated[
        str | None, typer.Option("--session", help="Land on this sandbox's page")
    ] = None,
    server: Server = None,
    data_dir: DataDir = None,
) -> None:
    """Print a one-time sign-in link (10 min, single use) and its QR code, to open the
    console, or one sandbox's page, on another device as the same user."""
    from ..services.logins import CONSOLE, session_page
    from ..services.qr import qr_text

    client = client_for(server, data_dir)
    if session is not None:
        call(client, "GET", session_path(session))  # a clear 404 before making a link
    body = {"next": session_page(session) if session is not None else CONSOLE}
    link = call(client, "POST", "/api/v1/sandbox/login-links", body)
    url = str(link["url"])
    out.print(
        f"One-time sign-in link (single use, expires {link['expiresAt']}):",
        highlight=False,
        markup=False,
    )
    out.print(url, highlight=False, markup=False, soft_wrap=True)
    out.print()
    code = qr_text(url)
    width = max(len(line) for line in code.splitlines())
    columns = shutil.get_terminal_size((0, 0)).columns
    if sys.stdout.isatty() and columns < width:
        err.print(
            f"(the QR code needs a terminal {width} columns wide, this one has {columns}: "
            "widen it and run this again, or open the link)",
            highlight=False,
            markup=False,
        )
    else:
        typer.echo(code, nl=False)
    host = (urlsplit(url).hostname or "").lower()
    if host in ("127.0.0.1", "localhost", "::1") or host.startswith("127."):
        err.print(
            f"note: the link names {host}, which another device cannot reach: start the "
            "server with --host 0.0.0.0 and SANDBOX_PUBLIC_URL=http://<this machine's "
            "address>:<port>",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


@app.command("pty-server")
def pty_server(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "0.0.0.0",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 7681,
) -> None:
    """Run the terminal server of one sandbox (the per-sandbox pod in Kubernetes),
    configured by SANDBOX_ID, SANDBOX_NAMESPACE, SANDBOX_OWNER_EMAIL, SANDBOX_ORG_ID,
    SANDBOX_DEFAULT_AGENT, SANDBOX_SESSION_LIMIT and SANDBOX_OIDC_ISSUER/SANDBOX_JWKS_URL."""
    from .pod import run_pty_server  # the same run as the console script's early dispatch

    run_pty_server(host, port)


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

    from ..controller.kube.operator import run_operator, startup_problems
    from ..logs import configure

    settings = settings_or_exit()
    configure(level=settings.log_level, json=settings.log_json)
    if problems := startup_problems(settings):
        fail("sandbox operator cannot start: " + "; ".join(problems))
    from ..services.gateway_ledger import make_ledger
    from ..services.mcp_tokens import pod_mcp_tokens

    try:
        mcp_tokens = pod_mcp_tokens(settings)
    except SandboxError as exc:
        fail(startup_error(exc))
    if settings.kube_mcp_url and mcp_tokens is None:
        typer.echo(
            "sandbox operator: no SANDBOX_ISSUER_KEY (Secret sandbox-issuer-key): sandbox "
            "pods get no MCP token, so their agents are not configured for the MCP server",
            err=True,
        )
    asyncio.run(
        run_operator(
            settings,
            namespace=namespace or None,
            metrics_port=metrics_port or None,
            ledger_factory=make_ledger,
            mcp_tokens=mcp_tokens,
        )
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
        try:
            deps = build_embedded(settings)
        except SandboxError as exc:
            fail(startup_error(exc))
        document: dict[str, Any] = create_app(deps).openapi()
    return document


def main() -> None:
    """The full CLI (the console script enters at :mod:`.entry`, which runs
    ``sandbox pty-server`` without it)."""
    app()
