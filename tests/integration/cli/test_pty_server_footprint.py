"""`sandbox pty-server` (one per sandbox pod in Kubernetes) imports only what it serves.

The command runs for real in a fresh interpreter, entered as the console script enters
(``cli.entry``), as far as building its app: the pod server's ``run`` is replaced by one
that reports the interpreter's modules and exits, so nothing listens. Whatever the
command path pulls in is in that list, so a top-level import of the control plane, the
operator, the SQL store, a web framework, the typer CLI or pydantic shows up here (each
costs the pod memory it never uses: bench/terminal.py measures the RSS; the pod serves
HTTP and WebSockets itself with h11 and ``api/terminal_edge/pty_server.py``).

What the pty-server does need only at its first token or request (PyJWT and
cryptography to verify a token, httpx to fetch a JWKS) is imported then; rich only when
the CLI prints, and structlog comes without rich's tracebacks: none of these is in
memory while a pod idles.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from openova_sandbox.auth.issuer import EmbeddedIssuer

PROBE = r"""
import importlib.abc, importlib.util, json, sys

def report(app, host, port, **kwargs):
    print("MODULES " + json.dumps(sorted(sys.modules)))
    sys.stdout.flush()
    raise SystemExit(0)

class ReportInsteadOfServing(importlib.abc.MetaPathFinder):
    # patches the pod server's run() as its module loads, in the command's own import
    # order (importing it here first would hide an import-order mistake)
    def find_spec(self, name, path, target=None):
        if name != "openova_sandbox.api.terminal_edge.pty_server":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        exec_module = spec.loader.exec_module

        def patched(module):
            exec_module(module)
            module.run = report

        spec.loader.exec_module = patched
        return spec

sys.meta_path.insert(0, ReportInsteadOfServing())
from openova_sandbox.cli.entry import main
sys.argv = ["sandbox", "pty-server", "--host", "127.0.0.1", "--port", "7681"]
main()
"""

# third-party packages of other processes (control plane, operator, SQL store), the
# ASGI stack the control plane runs on, the typer CLI and pydantic: none in the pod
FORBIDDEN_PACKAGES = (
    "sqlalchemy",
    "aiosqlite",
    "kopf",
    "lightkube",
    "fastapi",
    "uvicorn",
    "starlette",
    "websockets",
    "anyio",
    "watchfiles",
    "click",
    "typer",
    "pydantic",
    "pydantic_core",
    "pydantic_settings",
    "greenlet",
    "attr",
    # cffi's C parser: the screen's declarations come parsed (terminal/_ghostty_ffi.py)
    "pycparser",
    "cffi",
)
# this project's modules that only the control plane, operator or gateway use
FORBIDDEN_MODULES = (
    "openova_sandbox.api.app",
    "openova_sandbox.api.composition",
    "openova_sandbox.api.routes",
    "openova_sandbox.controller.kube",
    "openova_sandbox.store.sql",
    "openova_sandbox.gateway",
    # the control plane's terminals service and what it drags in: the pty-server's spawn
    # hook is services.agent_spawn (agents.home and the spawn spec only)
    "openova_sandbox.services.terminals",
    "openova_sandbox.services.sessions",
    "openova_sandbox.services.sandbox_tokens",
    "openova_sandbox.services.gateway_ledger",
    "openova_sandbox.controller",
    "openova_sandbox.store",
    "openova_sandbox.events",
    # embedded isolation (bubblewrap, cgroups): a pod is the sandbox; loaded at the first
    # isolated spawn only
    "openova_sandbox.terminal.isolation",
    "openova_sandbox.terminal.cgroups",
)
# imported at the first token (or request) that needs them, not at start: an idle pod
# holds none (~14 MiB together); rich never (structlog's rich tracebacks are never used,
# see openova_sandbox.logs); prometheus_client at the first /metrics scrape
LAZY_PACKAGES = ("jwt", "cryptography", "httpx", "pygments", "rich", "prometheus_client")
LAZY_MODULES = (
    "openova_sandbox.services.notify",
    "openova_sandbox.terminal.metrics",
    "openova_sandbox.domain.ledger",
    "openova_sandbox.domain.model",
)
# what the pod does import to serve: the runtime, its own HTTP server and h11 (uvloop
# comes with run(), which the probe replaces)
SERVED = (
    "openova_sandbox.terminal.registry",
    "openova_sandbox.api.terminal_edge.pty_server",
    "openova_sandbox.api.terminal_edge.ws_frames",
    "h11",
)


def pty_server_modules(tmp_path, *, embedded: bool = False) -> list[str]:
    env = {
        **os.environ,
        "SANDBOX_ID": "box",
        "SANDBOX_OWNER_EMAIL": "dev@acme.com",
        "SANDBOX_JWKS_URL": "http://127.0.0.1:9/jwks",  # fetched on the first token only
        "SANDBOX_DATA_DIR": str(tmp_path / "data"),
        "SANDBOX_WORKDIR": str(tmp_path),
        # as the operator configures a pod: it verifies share grants (PyJWT at the first)
        "SANDBOX_SHARE_GRANT_KEY": "k" * 43,
    }
    if embedded:  # trusts the data dir's embedded issuer (as bench/terminal.py runs it)
        EmbeddedIssuer.load_or_create(tmp_path / "data")
        for name in ("SANDBOX_JWKS_URL", "SANDBOX_OIDC_ISSUER"):
            env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = [x for x in done.stdout.splitlines() if x.startswith("MODULES ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    modules: list[str] = json.loads(lines[0].removeprefix("MODULES "))
    return modules


def test_the_pty_server_imports_no_control_plane_operator_or_sql(tmp_path):
    modules = pty_server_modules(tmp_path)
    # the command got as far as serving: its app, server and the terminal runtime
    assert set(SERVED) <= set(modules), sorted(set(SERVED) - set(modules))
    heavy = sorted(m for m in modules if m.split(".")[0] in FORBIDDEN_PACKAGES)
    assert heavy == [], heavy
    ours = sorted(m for m in modules if m.startswith(FORBIDDEN_MODULES))
    assert ours == [], ours


@pytest.mark.parametrize("embedded", [False, True], ids=["jwks", "embedded-issuer"])
def test_the_pty_server_loads_token_libraries_at_the_first_token_not_at_start(tmp_path, embedded):
    modules = pty_server_modules(tmp_path, embedded=embedded)
    assert "openova_sandbox.auth.authenticator" in modules
    early = sorted(m for m in modules if m.split(".")[0] in LAZY_PACKAGES or m in LAZY_MODULES)
    assert early == [], early
