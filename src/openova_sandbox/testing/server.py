"""Run an ASGI app under a real uvicorn server on a loopback port, for tests and benches.

The server runs on its own thread with its own event loop, so the test's loop (or a
framework like kopf that cancels foreign tasks) never shares a loop with it.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn

from ..serving import UVICORN_OPTIONS, Server, shutdown_hooks


@dataclass(frozen=True)
class RunningServer:
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve_in_thread(
    app: Any, *, host: str = "127.0.0.1", port: int = 0, start_timeout: float = 20.0
) -> Iterator[RunningServer]:
    """Serve ``app`` until the block exits; lifespan start-up completes before yielding.
    A terminal server's app (``sandbox pty-server``'s ``PtyApp``) runs on its own HTTP
    server, as in its pod."""
    port = port or free_port(host)
    from ..api.terminal_edge.pty_app import PtyApp

    if isinstance(app, PtyApp):
        from ..api.terminal_edge import pty_server

        with pty_server.serve_in_thread(app, host=host, port=port) as running:
            yield RunningServer(host, running.port)
        return
    config = uvicorn.Config(app, host=host, port=port, lifespan="on", **UVICORN_OPTIONS)
    server = Server(config, on_shutdown=shutdown_hooks(app))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"test server on {host}:{port} did not start")
        time.sleep(0.01)
    try:
        yield RunningServer(host, port)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
