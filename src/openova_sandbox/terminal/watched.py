"""A command on a PTY of its own that nobody attaches to: its output drained into a sink
(a full PTY would block it), its end noticed, and its whole session ended on request.

The previews' processes use it, embedded (services/previews.py) and in a sandbox pod
(terminal/preview_runner.py): the same reading, exit and HUP → TERM → KILL ladder in
both modes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from .pty import PtyProcess

READ_SIZE = 65536


def watch(process: PtyProcess, keep: Callable[[bytes], None], exited: Callable[[], None]) -> None:
    """Drain ``process``'s PTY into ``keep`` as it prints; call ``exited`` once its main
    process has ended (its pidfd is readable). On the running loop."""
    loop = asyncio.get_running_loop()

    def readable() -> None:
        data = process.read(READ_SIZE)
        if data is None:
            return
        if not data:
            loop.remove_reader(process.master_fd)
            return
        keep(data)

    def ended() -> None:
        if process.pidfd is not None:
            loop.remove_reader(process.pidfd)
        exited()

    loop.add_reader(process.master_fd, readable)
    if process.pidfd is not None:
        loop.add_reader(process.pidfd, ended)


async def end(process: PtyProcess, keep: Callable[[bytes], None]) -> None:
    """End every process of ``process``'s session (the terminals' ladder), keep what it
    printed last (before its descriptor closes) and stop watching it. The caller
    closes it."""
    loop = asyncio.get_running_loop()
    await process.terminate()
    with contextlib.suppress(ValueError, OSError):
        loop.remove_reader(process.master_fd)
    while data := process.read(READ_SIZE):
        keep(data)
    if process.pidfd is not None:
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(process.pidfd)


__all__ = ["end", "watch"]
