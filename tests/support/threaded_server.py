"""A socketserver served from a daemon thread, stopped by :meth:`stop` or a with-block.

The fake model server and the trap proxy are both one of these: the subclass builds its
server in ``start`` and hands it to :meth:`_serve`.
"""

from __future__ import annotations

import socketserver
import threading
from typing import Self


class ThreadedServer:
    _server: socketserver.ThreadingTCPServer | None

    def start(self) -> Self:
        raise NotImplementedError

    def _serve(self, server: socketserver.ThreadingTCPServer, name: str) -> threading.Thread:
        """Serve ``server`` from a daemon thread (one daemon thread per connection)."""
        self._server = server
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
