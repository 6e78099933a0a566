"""The CLI's two rich consoles (stdout and stderr), made at their first use.

``rich`` (~2 MiB with its console, markup and tables) is imported when a command first
prints through them, not when the ``sandbox`` command starts: ``sandbox pty-server``,
the per-sandbox pod, never does (tests/integration/cli/test_pty_server_footprint.py).
A rich ``Console`` made at first use behaves as one made at import: it writes to the
``sys.stdout``/``sys.stderr`` of the moment either way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


class LazyConsole:
    """``rich.console.Console(stderr=stderr)``, created by the first ``print``."""

    def __init__(self, *, stderr: bool = False) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self._stderr)
        return self._console

    def print(self, *objects: Any, **options: Any) -> None:
        self.console.print(*objects, **options)


def escape(markup: str) -> str:
    """``rich.markup.escape``: ``markup`` printed as it is, never as console markup."""
    from rich.markup import escape as rich_escape

    return rich_escape(markup)
