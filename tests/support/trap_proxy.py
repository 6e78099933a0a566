"""An HTTP(S) proxy that lets nothing through and remembers who tried.

Agents are started with ``HTTPS_PROXY``/``HTTP_PROXY`` (both spellings) pointing here and
``NO_PROXY`` naming the loopback addresses, so their calls to the fake model server go
direct while any other call (an update check against the npm registry or PyPI, a
telemetry upload, a model-list download) arrives here instead of the internet. Every
request line is recorded (``CONNECT registry.npmjs.org:443``, ``GET http://...``) and
answered 403 — except a ``CONNECT`` to a loopback address, which is tunnelled (some
agents send every call through the proxy whatever ``NO_PROXY`` says, their model calls
included, and the fake model server is on loopback), so a test can assert that an agent tried nothing behind the user's back —
and that assertion fails for an agent started without its no-update/no-telemetry
settings (the tests check that too).
"""

from __future__ import annotations

import select
import socket
import socketserver
import threading
from dataclasses import dataclass, field

from support.threaded_server import ThreadedServer

LOOPBACK = "127.0.0.1,localhost,::1"
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "[::1]"}


def _tunnel(client: socket.socket, host: str, port: int) -> None:
    """Pipe bytes both ways between the client and ``host:port`` until either closes."""
    try:
        upstream = socket.create_connection((host, port), timeout=10)
    except OSError:
        client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
        return
    with upstream:
        upstream.settimeout(None)
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        peers = {client: upstream, upstream: client}
        while True:
            readable, _, _ = select.select(list(peers), [], [], 300)
            if not readable:
                return
            for sock in readable:
                try:
                    data = sock.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                peers[sock].sendall(data)


@dataclass
class TrapProxy(ThreadedServer):
    attempts: list[str] = field(default_factory=list)
    _server: socketserver.ThreadingTCPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> TrapProxy:
        trap = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                try:
                    line = self.rfile.readline(8192).decode("latin-1").strip()
                except OSError:
                    return
                if not line:
                    return
                parts = line.split()
                target = " ".join(parts[:2]) if len(parts) >= 2 else line
                if len(parts) >= 2 and parts[0].upper() == "CONNECT":
                    host, _, port = parts[1].rpartition(":")
                    if host in _LOOPBACK_HOSTS and port.isdigit():
                        while self.rfile.readline(8192).strip():  # the request's headers
                            pass
                        _tunnel(self.connection, host.strip("[]"), int(port))
                        return
                with trap._lock:
                    trap.attempts.append(target)
                try:
                    self.wfile.write(
                        b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                except OSError:
                    return

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self._serve(socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler), "trap-proxy")
        return self

    @property
    def url(self) -> str:
        assert self._server is not None, "start the trap proxy first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def env(self) -> dict[str, str]:
        """The variables that send an agent's outside calls here."""
        return {
            "HTTPS_PROXY": self.url,
            "https_proxy": self.url,
            "HTTP_PROXY": self.url,
            "http_proxy": self.url,
            "ALL_PROXY": self.url,
            "NO_PROXY": LOOPBACK,
            "no_proxy": LOOPBACK,
        }

    def seen(self) -> list[str]:
        with self._lock:
            return list(self.attempts)
