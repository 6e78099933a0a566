"""The forwarder's own HTTP/1.1 client against raw asyncio servers written here.

Proves: connections are kept alive and reused; chunked, length-delimited and
close-delimited bodies come out whole; a pooled connection the upstream dropped is
retried once on a new one, a fresh one is not; a server that sends no valid HTTP, one
that refuses, one that stalls mid-body and one that closes mid-body each give the named
error; a slow reader pauses the upstream (flow control) and loses nothing; closing an
answer early closes its connection; a header value cannot start another header; HTTPS
upstreams are verified against the trusted CAs (SSL_CERT_FILE honoured); which
origins go through httpx (a proxy in the environment) and that httpx path's answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from openova_sandbox.gateway import upstream as upstream_module
from openova_sandbox.gateway.config import Timeouts
from openova_sandbox.gateway.upstream import Upstream, UpstreamTimeout, UpstreamUnreachable

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Server"], Awaitable[None]]


@dataclass
class Server:
    handler: Handler
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    closed_by_peer: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer, self)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            self.closed_by_peer.set()
            return None
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        body = await reader.readexactly(length) if length else b""
        self.requests.append(head + body)
        return head + body

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/x"


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[Server]:
    server = Server(handler)
    listener = await asyncio.start_server(server._serve, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()


@contextlib.asynccontextmanager
async def client(**timeouts: float) -> AsyncIterator[Upstream]:
    upstream = Upstream(Timeouts(**timeouts))
    await upstream.start()
    try:
        yield upstream
    finally:
        await upstream.stop()


async def fetch(upstream: Upstream, url: str, body: bytes = b"{}") -> tuple[int, bytes]:
    answer = await upstream.open(
        "POST", url, headers=[("content-type", "application/json")], content=body
    )
    data = b"".join([chunk async for chunk in answer.chunks()])
    return answer.status, data


async def collect(answer: Any, into: list[bytes]) -> None:
    async for chunk in answer.chunks():
        into.append(chunk)


def answer_with(raw: bytes) -> Handler:
    async def handle(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        while await server.read_request(reader) is not None:
            writer.write(raw)
            await writer.drain()

    return handle


LENGTH = (
    b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{"ok":true}'
)
CHUNKED = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    b"7\r\ndata: 1\r\n7\r\ndata: 2\r\n0\r\n\r\n"
)


async def test_keep_alive_and_both_framings() -> None:
    async with serving(answer_with(LENGTH)) as server, client() as up:
        for _ in range(3):
            assert await fetch(up, server.url) == (200, b'{"ok":true}')
        assert server.connections == 1
        first = server.requests[0]
        assert first.startswith(b"POST /v1/x HTTP/1.1\r\nhost: 127.0.0.1:")
        assert b"content-length: 2\r\n" in first and first.endswith(b"\r\n\r\n{}")
        assert b"user-agent: openova-sandbox-gateway" in first
    async with serving(answer_with(CHUNKED)) as server, client() as up:
        assert await fetch(up, server.url) == (200, b"data: 1data: 2")
        assert await fetch(up, server.url) == (200, b"data: 1data: 2")
        assert server.connections == 1


async def test_a_body_delimited_by_the_end_of_the_connection() -> None:
    async def handle(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\npart one, ")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"part two")
        await writer.drain()

    async with serving(handle) as server, client() as up:
        assert await fetch(up, server.url) == (200, b"part one, part two")
        assert await fetch(up, server.url) == (200, b"part one, part two")
        assert server.connections == 2  # not kept: the answer needed the close


async def test_a_dropped_pooled_connection_is_retried_once_on_a_new_one() -> None:
    async def handle(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        await server.read_request(reader)
        writer.write(LENGTH)
        await writer.drain()
        if server.connections == 1:
            await server.read_request(reader)  # the second request: dropped unanswered
            return
        while await server.read_request(reader) is not None:
            writer.write(LENGTH)
            await writer.drain()

    async with serving(handle) as server, client() as up:
        assert await fetch(up, server.url) == (200, b'{"ok":true}')
        assert await fetch(up, server.url) == (200, b'{"ok":true}')
        assert server.connections == 2


async def test_a_fresh_connection_dropped_is_not_retried() -> None:
    async def handle(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        await server.read_request(reader)  # and close without an answer

    async with serving(handle) as server, client() as up:
        with pytest.raises(UpstreamUnreachable, match="closed the connection"):
            await fetch(up, server.url)
        assert server.connections == 1


async def test_no_valid_http_refused_stalled_and_cut_answers() -> None:
    async with serving(answer_with(b"SMTP ready\r\n\r\n")) as server, client() as up:
        with pytest.raises(UpstreamUnreachable, match="not valid HTTP"):
            await fetch(up, server.url)
    async with serving(answer_with(LENGTH)) as server:
        port = server.port
    async with client() as up:
        with pytest.raises(UpstreamUnreachable, match="unreachable"):
            await fetch(up, f"http://127.0.0.1:{port}/v1/x")

    async def stall(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhalf")
        await writer.drain()
        await asyncio.sleep(5)

    async with serving(stall) as server, client(read=0.3) as up:
        answer = await up.open("POST", server.url, headers=[], content=b"{}")
        got: list[bytes] = []
        with pytest.raises(UpstreamTimeout, match="did not answer in time"):
            await collect(answer, got)
        assert got == [b"half"]

    async def cut(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhalf")
        await writer.drain()

    async with serving(cut) as server, client() as up:
        answer = await up.open("POST", server.url, headers=[], content=b"{}")
        with pytest.raises(UpstreamUnreachable, match="before its answer ended"):
            await collect(answer, [])


async def test_a_slow_reader_pauses_the_upstream_and_loses_nothing() -> None:
    size = 8 * 1024 * 1024
    payload = bytes(range(256)) * (size // 256)

    async def big(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size)
        for start in range(0, size, 65536):
            writer.write(payload[start : start + 65536])
            await writer.drain()

    async with serving(big) as server, client() as up:
        answer = await up.open("POST", server.url, headers=[], content=b"{}")
        conn = answer._conn  # type: ignore[attr-defined]
        received = bytearray()
        paused = False
        async for chunk in answer.chunks():
            received += chunk
            await asyncio.sleep(0.01)  # a slow caller: meanwhile the upstream is paused
            paused = paused or conn.paused
        assert bytes(received) == payload
        assert paused
        assert conn.buffered <= upstream_module.HIGH_WATER + 65536


async def test_closing_an_answer_early_closes_its_connection() -> None:
    async def endless(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        try:
            while True:
                writer.write(b"5\r\nhello\r\n")
                await writer.drain()
                await asyncio.sleep(0.01)
        finally:
            server.closed_by_peer.set()  # the write failed: the client closed

    async with serving(endless) as server, client() as up:
        answer = await up.open("POST", server.url, headers=[], content=b"{}")
        async for _ in answer.chunks():
            break
        await answer.aclose()
        await asyncio.wait_for(server.closed_by_peer.wait(), 5)


async def test_a_header_value_cannot_start_another_header() -> None:
    async with serving(answer_with(LENGTH)) as server, client() as up:
        answer = await up.open(
            "POST",
            server.url,
            headers=[("x-ok", "1"), ("x-evil", "a\r\nx-injected: 1"), ("x-after", "2")],
            content=b"{}",
        )
        async for _ in answer.chunks():
            pass
        sent = server.requests[0]
        assert b"x-injected" not in sent
        assert b"x-ok: 1\r\n" in sent and b"x-after: 2\r\n" in sent


def test_which_origins_go_through_a_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    assert not Upstream().proxied("https://api.openai.com/v1")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost,.svc")
    up = Upstream()
    assert up.proxied("https://api.openai.com/v1")
    assert not up.proxied("http://127.0.0.1:9000/v1")  # no HTTP_PROXY, and bypassed
    assert not up.proxied("https://models.default.svc/v1")


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake provider")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


async def test_https_upstreams_are_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert_file, key_file = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    server = Server(answer_with(LENGTH))
    listener = await asyncio.start_server(server._serve, "127.0.0.1", 0, ssl=context)
    port = listener.sockets[0].getsockname()[1]
    try:
        # not trusted: the handshake fails, named
        async with client() as up:
            with pytest.raises(UpstreamUnreachable, match="failed TLS"):
                await fetch(up, f"https://localhost:{port}/v1/x")
        # trusted (SSL_CERT_FILE, as an operator would point at their CA): answers
        monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
        async with client() as up:
            assert await fetch(up, f"https://localhost:{port}/v1/x") == (200, b'{"ok":true}')
            assert await fetch(up, f"https://127.0.0.1:{port}/v1/x") == (200, b'{"ok":true}')
        assert server.requests[0].startswith(b"POST /v1/x HTTP/1.1\r\nhost: localhost:")
    finally:
        listener.close()
