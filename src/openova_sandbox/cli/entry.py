"""The ``sandbox`` console script.

``sandbox pty-server …`` (the per-sandbox pod's process) is dispatched here, before the
typer CLI is built: the pod imports neither typer, click nor rich (:mod:`.pod`). Every
other command, and any ``pty-server`` invocation :func:`.pod.parse_args` does not read
for certain (``--help``, a usage error), is the full CLI's (:mod:`.main`).
"""

from __future__ import annotations

import sys


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["pty-server"]:
        from .pod import parse_args, run_pty_server

        parsed = parse_args(args[1:])
        if parsed is not None:
            run_pty_server(*parsed)
            return
    from .main import main as cli

    cli()
