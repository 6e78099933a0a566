"""How the control plane's servers run under uvicorn (CLI, tests and benchmarks alike).

The per-sandbox terminal server (``sandbox pty-server``, one pod per sandbox) does not:
it serves its few routes with its own HTTP/1.1 + WebSocket server
(:mod:`openova_sandbox.api.terminal_edge.pty_server`), so its pod imports no ASGI stack.

- WebSocket implementation: uvicorn's ``websockets-sansio`` (the leanest of its own),
  extended so a terminal viewer's frames bypass the ASGI message loop once accepted
  (:mod:`openova_sandbox.api.terminal_edge.lean_ws`); TCP_NODELAY on every socket
  (asyncio's default), so a keystroke is not held by Nagle.
- ``permessage-deflate`` off: terminal frames are already coalesced, compressing them
  costs CPU per viewer, and a compressed stream hides how far a slow viewer lags (the
  resync policy needs the real backlog).
- Once bound, the app's ``on_bound`` hooks learn the address it listens on (with the
  real port when 0 was asked for): embedded mode's agents reach the model gateway there.
- uvicorn's access log off and its log config left alone: requests are logged by the
  app with route templates only (query strings can carry ``access_token``).
- The CLI's servers (``gc_policy=True``) install :mod:`openova_sandbox.gc_policy` once
  listening: full garbage collections scan only what is new since the last one instead
  of every long-lived object (they stopped the loop for 150-190 ms at 1,000 sandboxes).
  Tests' in-process servers leave the collector of the test process alone.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import uvicorn

from . import gc_policy as gc_policy_module
from .api.terminal_edge.lean_ws import LeanWebSocketProtocol

UVICORN_OPTIONS: dict[str, Any] = {
    "ws": LeanWebSocketProtocol,
    "ws_per_message_deflate": False,
    "access_log": False,
    "log_config": None,
}


class Server(uvicorn.Server):
    """uvicorn's server, telling the app when it is listening and when shutdown *begins*.

    - ``on_listening`` coroutines run once the sockets are bound (the lifespan startup
      runs before binding, so announcing from there would print URLs for a port that
      turns out to be taken).
    - uvicorn waits for open responses before it runs the lifespan shutdown, so endless
      responses (event streams) would hold the process for the whole graceful timeout.
      ``on_shutdown`` callables run first (synchronously, on the server's loop) so those
      responses can end at once.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        on_shutdown: Sequence[Callable[[], None]] = (),
        on_listening: Sequence[Callable[[], Awaitable[None]]] = (),
        gc_policy: bool = False,
    ) -> None:
        super().__init__(config)
        self._on_shutdown = list(on_shutdown)
        self._on_listening = list(on_listening)
        self._gc_policy = gc_policy

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and not self.should_exit:
            address = bound_address(self.servers)
            if address is not None:
                for bound in bound_hooks(self.config.app):
                    bound(*address)
            for hook in self._on_listening:
                await hook()
            if self._gc_policy:
                gc_policy_module.install()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for hook in self._on_shutdown:
            hook()
        await super().shutdown(sockets)


def bound_address(servers: Sequence[Any]) -> tuple[str, int] | None:
    """The host and port of the first TCP socket the server listens on (the port is
    the real one when 0 was asked for)."""
    for server in servers:
        for sock in getattr(server, "sockets", ()):
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                host, port = sock.getsockname()[:2]
                return str(host), int(port)
    return None


def bound_hooks(app: Any) -> list[Callable[[str, int], None]]:
    """What an app built by ``api.app.create_app`` wants told of the address it is
    served on, once the sockets are bound (``AppDeps.on_bound``: the model gateway's
    URL for agents); none for other apps."""
    deps = getattr(getattr(app, "state", None), "deps", None)
    hooks = getattr(deps, "on_bound", None)
    return list(hooks) if hooks else []


def shutdown_hooks(app: Any) -> list[Callable[[], None]]:
    """The hooks an app built by ``api.app.create_app`` asks for (none for other apps)."""
    state = getattr(app, "state", None)
    hooks = getattr(state, "shutdown_hooks", None)
    return list(hooks) if hooks else []
