"""How every server of this project runs under uvicorn (CLI, tests and benchmarks alike).

- WebSocket implementation ``websockets-sansio``: the leanest of uvicorn's, with
  TCP_NODELAY on every socket (asyncio's default), so a keystroke is not held by Nagle.
- ``permessage-deflate`` off: terminal frames are already coalesced, compressing them
  costs CPU per viewer, and a compressed stream hides how far a slow viewer lags (the
  resync policy needs the real backlog).
- uvicorn's access log off and its log config left alone: requests are logged by the
  app with route templates only (query strings can carry ``access_token``).
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import uvicorn

UVICORN_OPTIONS: dict[str, Any] = {
    "ws": "websockets-sansio",
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
    ) -> None:
        super().__init__(config)
        self._on_shutdown = list(on_shutdown)
        self._on_listening = list(on_listening)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and not self.should_exit:
            for hook in self._on_listening:
                await hook()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for hook in self._on_shutdown:
            hook()
        await super().shutdown(sockets)


def shutdown_hooks(app: Any) -> list[Callable[[], None]]:
    """The hooks an app built by ``api.app.create_app`` asks for (none for other apps)."""
    state = getattr(app, "state", None)
    hooks = getattr(state, "shutdown_hooks", None)
    return list(hooks) if hooks else []
