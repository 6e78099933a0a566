"""`sandbox pty-server` (one per sandbox pod in Kubernetes) imports only what it serves.

The command runs for real in a fresh interpreter, as far as building its app: the
uvicorn server's ``run`` is replaced by one that reports the interpreter's modules and
exits, so nothing listens. Whatever the command path pulls in is in that list, so a
top-level import of the control plane, the operator or the SQL store shows up here
(each costs the pod memory it never uses: bench/terminal.py measures the RSS).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = r"""
import json, sys
import uvicorn.server

def report(self, *args, **kwargs):
    print("MODULES " + json.dumps(sorted(sys.modules)))
    sys.stdout.flush()
    raise SystemExit(0)

uvicorn.server.Server.run = report
from openova_sandbox.cli.main import main
sys.argv = ["sandbox", "pty-server", "--host", "127.0.0.1", "--port", "7681"]
main()
"""

# third-party packages of other processes (control plane, operator, SQL store)
FORBIDDEN_PACKAGES = ("sqlalchemy", "aiosqlite", "kopf", "lightkube", "fastapi")
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
)


def pty_server_modules(tmp_path) -> list[str]:
    env = {
        **os.environ,
        "SANDBOX_ID": "box",
        "SANDBOX_OWNER_EMAIL": "dev@acme.com",
        "SANDBOX_JWKS_URL": "http://127.0.0.1:9/jwks",  # fetched on the first token only
        "SANDBOX_DATA_DIR": str(tmp_path / "data"),
        "SANDBOX_WORKDIR": str(tmp_path),
    }
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
    # the command got as far as serving: its app and the terminal runtime are loaded
    assert "openova_sandbox.terminal.registry" in modules
    assert "uvicorn.server" in modules
    heavy = sorted(m for m in modules if m.split(".")[0] in FORBIDDEN_PACKAGES)
    assert heavy == [], heavy
    ours = sorted(m for m in modules if m.startswith(FORBIDDEN_MODULES))
    assert ours == [], ours
