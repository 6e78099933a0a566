"""A real OIDC issuer double on 127.0.0.1 (discovery + JWKS over HTTP, counting hits)
and token signing helpers for the auth integration tests."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from openova_sandbox.auth.keys import public_jwk

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def jwks_of(*entries: tuple[PrivateKey, str]) -> dict[str, Any]:
    return {"keys": [public_jwk(key.public_key(), kid=kid) for key, kid in entries]}


def token(key: PrivateKey, *, kid: str | None, sub: str = "user-1", **extra: Any) -> str:
    now = int(time.time())
    payload = {"sub": sub, "iat": now, "exp": now + 300, **extra}
    alg = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid} if kid else None)


class IssuerServer:
    """Serves ``/.well-known/openid-configuration`` and ``/jwks``; the test mutates it."""

    def __init__(self) -> None:
        self.jwks: dict[str, Any] = {"keys": []}
        self.status = 200
        self.raw_jwks: bytes | None = None  # served instead of ``jwks`` when set
        self.advertised_issuer: str | None = None
        self.hits: Counter[str] = Counter()
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with owner._lock:
                    owner.hits[self.path] += 1
                    status, body = owner._answer(self.path)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()
        self.running = True

    @property
    def url(self) -> str:
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}"

    @property
    def jwks_url(self) -> str:
        return self.url + "/jwks"

    def _answer(self, path: str) -> tuple[int, bytes]:
        if self.status != 200:
            return self.status, b'{"error":"down"}'
        if path == "/.well-known/openid-configuration":
            doc = {"issuer": self.advertised_issuer or self.url, "jwks_uri": self.jwks_url}
            return 200, json.dumps(doc).encode()
        if path == "/jwks":
            return 200, self.raw_jwks if self.raw_jwks is not None else json.dumps(
                self.jwks
            ).encode()
        return 404, b"{}"

    def count(self, path: str) -> int:
        with self._lock:
            return self.hits[path]

    def stop(self) -> None:
        if self.running:
            self.running = False
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=10)
