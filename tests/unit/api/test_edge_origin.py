"""The one Origin rule of both HTTP edges (api/edge.py), on real Starlette connections."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from openova_sandbox.api.edge import origin_allowed, origin_of_url


def conn(
    origin: str | None, *, host: str = "sandbox.example.com", scheme: str = "ws"
) -> HTTPConnection:
    headers = [(b"host", host.encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    return HTTPConnection(
        {"type": "websocket", "scheme": scheme, "path": "/", "headers": headers, "server": None}
    )


def test_no_origin_is_a_cli_and_is_fine() -> None:
    assert origin_allowed(conn(None), "")
    assert origin_allowed(conn(None), "https://sandbox.example.com")


def test_without_a_public_url_the_origin_is_the_server_as_reached() -> None:
    assert origin_allowed(conn("http://sandbox.example.com"), "")
    assert origin_allowed(conn("HTTP://Sandbox.Example.com/"), "")
    assert origin_allowed(conn("https://sandbox.example.com", scheme="wss"), "")
    assert not origin_allowed(conn("http://evil.example"), "")
    assert not origin_allowed(conn("http://sandbox.example.com:8443"), "")  # another port
    assert not origin_allowed(conn("null"), "")
    # an http page never reaches an https listener; an https page may reach a plain
    # listener behind a TLS-terminating proxy
    assert not origin_allowed(conn("http://sandbox.example.com", scheme="wss"), "")
    assert origin_allowed(conn("https://sandbox.example.com", scheme="ws"), "")


def test_a_public_url_is_the_only_origin_then() -> None:
    public = "https://Sandbox.Example.com/console/"
    assert origin_allowed(conn("https://sandbox.example.com"), public)
    assert not origin_allowed(conn("http://sandbox.example.com"), public)
    assert not origin_allowed(conn("https://127.0.0.1:8000", host="127.0.0.1:8000"), public)


def test_origin_of_a_public_url_drops_path_and_case() -> None:
    assert origin_of_url("https://Sandbox.Example.com:8443/console/") == (
        "https://sandbox.example.com:8443"
    )
    assert origin_of_url("http://localhost:8000") == "http://localhost:8000"
