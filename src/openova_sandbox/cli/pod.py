"""`sandbox pty-server` without the typer CLI: what the per-sandbox pod runs.

The console script's entry (:mod:`.entry`) sends ``sandbox pty-server [--host H]
[--port N]`` here before typer, click or rich are imported; anything else it cannot
read for certain (``--help``, an unknown flag, a bad port) goes to the full CLI, whose
``pty-server`` command runs this same function, so help, errors and behaviour are the
CLI's. Messages go to stderr as the CLI prints them (``error: …``), exit status 1.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from ..config import Settings, load_settings
from ..domain.errors import SandboxError

DEFAULT_HOST = "0.0.0.0"
DEFAULT_PORT = 7681


def fail(message: str, code: int = 1) -> NoReturn:
    label = "\x1b[31merror:\x1b[0m" if sys.stderr.isatty() else "error:"
    print(f"{label} {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def startup_error(exc: SandboxError) -> str:
    """What a server that cannot start says (an unusable override file names itself)."""
    from ..domain.catalogue import CatalogueError

    if isinstance(exc, CatalogueError):
        return (
            f"{exc.detail}; fix the file or remove it (OPENOVA_SANDBOX_AGENTS_PATH names "
            "it), then start again"
        )
    return exc.detail


def parse_args(args: Sequence[str]) -> tuple[str, int] | None:
    """``--host H`` / ``--host=H`` and ``--port N`` / ``--port=N`` (1-65535); ``None``
    for anything else (the full CLI then answers it: help, usage errors)."""
    host, port = DEFAULT_HOST, DEFAULT_PORT
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        name, eq, value = arg.partition("=")
        if name not in ("--host", "--port"):
            return None
        if not eq:
            if not rest:
                return None
            value = rest.pop(0)
        if name == "--host":
            host = value
        elif value.isascii() and value.isdigit() and 1 <= int(value) <= 65535:
            port = int(value)
        else:
            return None
    return host, port


def run_pty_server(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Run the terminal server of one sandbox, configured by the environment."""
    from ..logs import configure  # first: structlog is imported without rich's tracebacks

    # isort: split
    from ..api.terminal_edge import pty_server
    from ..api.terminal_edge.standalone import build_standalone_app
    from ..auth.authenticator import build_authenticator
    from ..auth.issuer import EmbeddedIssuer
    from ..services.agent_spawn import prepare_spawn

    settings = _settings()
    configure(level=settings.log_level, json=settings.log_json)
    if not settings.pty_sandbox_id:
        fail("SANDBOX_ID is required: the sandbox whose terminals this server runs")
    issuer = None
    if not (settings.oidc_issuer or settings.jwks_url):
        try:  # the key file must be there; it is read at the first token (idle memory)
            issuer = EmbeddedIssuer.loader(Path(settings.data_dir))
        except SandboxError as exc:
            fail(f"no SANDBOX_OIDC_ISSUER or SANDBOX_JWKS_URL set, and {exc.detail}")
    # besides the control plane's audience, the console client's: the ID tokens it
    # relays for console sessions name that one (docs/auth.md, "Kubernetes mode's
    # sandbox pods"); none checked without SANDBOX_OIDC_AUDIENCE
    console = (settings.oidc_client_id,) if settings.oidc_client_id else ()
    authenticator = build_authenticator(settings, issuer=issuer, more_audiences=console)
    try:
        app = build_standalone_app(
            settings,
            authenticate=authenticator.authenticate,
            cookie_secret=settings.cookie_secret,
            public_origin=settings.public_url or None,
            prepare_spawn=prepare_spawn,  # seeds the pod's HOME (its home volume) per agent
        )
    except SandboxError as exc:
        fail(startup_error(exc))
    pty_server.run(app, host, port, loop=settings.pty_event_loop)


def _settings() -> Settings:
    try:
        return load_settings()
    except SandboxError as exc:
        fail(exc.detail)
