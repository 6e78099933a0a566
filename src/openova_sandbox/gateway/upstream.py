"""The forwarder: one request to an upstream provider, its answer passed on as it comes.

Direct connections use a small HTTP/1.1 client of this module: asyncio protocols, the
``httptools`` response parser (uvicorn's, already here), a keep-alive pool per origin,
the request written in one piece. It exists for speed: through ``httpx`` (httpcore, h11,
anyio) one forwarded call cost ~1.1 ms of CPU on the 2-core machine the benchmark runs
on, this client ~0.05 ms, and the gateway's added latency target is under 1 ms
(bench/gateway.py). An upstream the environment routes through a proxy
(``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY``) is reached through ``httpx`` instead, which
speaks to proxies; both paths answer through the same :class:`UpstreamResponse`.

The answer's body is handed on in the pieces it arrives in (pieces that arrived together
are joined), never buffered beyond what the caller has not yet taken; a caller that
stops taking stops the reading (flow control). The upstream is asked for
``Accept-Encoding: identity`` (by the service), so these bytes are also what the usage
meter reads.

Failures become two errors the routes answer in the caller's API shape: the upstream
could not be reached, broke the connection or sent no valid HTTP
(:class:`UpstreamUnreachable`, 502), or did not answer in time (:class:`UpstreamTimeout`,
504): connecting, sending, and between any two reads of the answer. An upstream's own
4xx/5xx is not an error here: it is an answer, passed through with its body.

Closing an :class:`UpstreamResponse` before its end closes the connection, which is how
an upstream request is cancelled when the caller goes away.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import urllib.request
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Protocol, cast
from urllib.parse import urlsplit

import httptools
import httpx

from ..domain.errors import SandboxError
from .config import Timeouts

Headers = list[tuple[bytes, bytes]]
USER_AGENT = "openova-sandbox-gateway"
KEEPALIVE_SECONDS = 30.0  # an idle pooled connection older than this is closed, not reused
MAX_IDLE_PER_ORIGIN = 100
HIGH_WATER = 1024 * 1024  # unread answer bytes above which reading the upstream pauses


class UpstreamError(SandboxError):
    status = 502


class UpstreamUnreachable(UpstreamError):
    code = "upstream-unreachable"
    status = 502


class UpstreamTimeout(UpstreamError):
    code = "upstream-timeout"
    status = 504


class UpstreamResponse(Protocol):
    status: int
    headers: Headers

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


# --------------------------------------------------------------------------- the client


class _Connection(asyncio.Protocol):
    """One keep-alive connection; parses the answers of the requests written on it."""

    def __init__(self, origin: tuple[str, str, int]) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: Headers = []
        self.headers_done = False
        self._framed = True  # has a Content-Length or chunked body (else: until EOF)
        self.complete = False
        self.keep_alive = False
        self.received_any = False
        self.error: UpstreamError | None = None
        self.body: deque[bytes] = deque()
        self.buffered = 0
        self.paused = False
        self.waiter: asyncio.Future[None] | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail(UpstreamUnreachable("sent an answer that is not valid HTTP"))
            self.close()

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.headers_done and not self.complete and not self._framed:
            self.complete = True  # an answer delimited by the end of the connection
        elif not self.complete:
            self._fail(UpstreamUnreachable("closed the connection before its answer ended"))
        self._can_write.set()
        self._wake()

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        self.headers_done = True
        self._framed = any(
            name in (b"content-length", b"transfer-encoding") for name, _ in self.headers
        )
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    def _fail(self, error: UpstreamError) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, timeout: float, what: str, doing: str) -> None:
        """Until something arrives (or the connection ends), at most ``timeout``."""
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                await self.waiter
        except TimeoutError:
            raise UpstreamTimeout(f"{what} did not answer in time ({doing})") from None
        finally:
            self.waiter = None

    def take(self) -> bytes:
        """Every body piece buffered so far, joined."""
        data = self.body.popleft() if len(self.body) == 1 else b"".join(self.body)
        self.body.clear()
        self.buffered = 0
        if self.paused and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()
        return data

    async def write(self, data: bytes, timeout: float, what: str) -> None:
        assert self.transport is not None
        self.transport.write(data)
        if not self._can_write.is_set():
            try:
                async with asyncio.timeout(timeout):
                    await self._can_write.wait()
            except TimeoutError:
                raise UpstreamTimeout(f"{what} did not take the request in time") from None
        if self.closed and not self.received_any:
            raise UpstreamUnreachable(f"{what} closed the connection")

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _Answer:
    """The answer on a pooled connection; the connection goes back when it is read out."""

    def __init__(self, pool: _Pool, conn: _Connection, what: str, read_timeout: float) -> None:
        self._pool = pool
        self._conn = conn
        self._what = what
        self._read_timeout = read_timeout
        self._done = False
        self.status = conn.status
        self.headers = conn.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while True:
            if conn.body:
                yield conn.take()
                continue
            if conn.complete:
                break
            if conn.error is not None:
                raise conn.error
            await conn.wait(self._read_timeout, self._what, "reading its answer")
        self._done = True
        self._pool.release(conn)

    async def aclose(self) -> None:
        if not self._done:
            self._done = True
            self._conn.close()  # unread: this cancels the upstream request


class _Pool:
    def __init__(self, timeouts: Timeouts) -> None:
        self._timeouts = timeouts
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._ssl: ssl.SSLContext | None = None

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()  # system CAs; SSL_CERT_FILE honoured
        return self._ssl

    def _idle_connection(self, origin: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < KEEPALIVE_SECONDS:
                return conn
            conn.close()
        return None

    async def _connect(self, origin: tuple[str, str, int], what: str) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls = self._ssl_context() if scheme == "https" else None
        try:
            async with asyncio.timeout(self._timeouts.connect):
                _, conn = await loop.create_connection(
                    lambda: _Connection(origin),
                    host,
                    port,
                    ssl=tls,
                    server_hostname=host if tls else None,
                )
        except TimeoutError:
            raise UpstreamTimeout(f"{what} did not answer in time (connecting)") from None
        except ssl.SSLError as exc:
            raise UpstreamUnreachable(f"{what} failed TLS ({exc.reason or 'handshake'})") from None
        except OSError as exc:
            raise UpstreamUnreachable(f"{what} is unreachable ({type(exc).__name__})") from None
        return conn

    def release(self, conn: _Connection) -> None:
        if conn.closed or not conn.keep_alive:
            conn.close()
            return
        conn._reset()
        conn.idle_since = time.monotonic()
        idle = self._idle.setdefault(conn.origin, [])
        if len(idle) >= MAX_IDLE_PER_ORIGIN:
            conn.close()
        else:
            idle.append(conn)

    async def request(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        content: bytes | None,
        what: str,
    ) -> _Answer:
        parts = urlsplit(url)
        scheme = parts.scheme
        port = parts.port or (443 if scheme == "https" else 80)
        host = parts.hostname or ""
        origin = (scheme, host, port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        default_port = port == (443 if scheme == "https" else 80)
        authority = parts.netloc.rsplit("@", 1)[-1] if not default_port else host
        body = content or b""
        lines = [f"{method} {target} HTTP/1.1", f"host: {authority}"]
        has_agent = False
        for name, value in headers:
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                continue  # never let a header value start another header
            has_agent = has_agent or name == "user-agent"
            lines.append(f"{name}: {value}")
        if not has_agent:
            lines.append(f"user-agent: {USER_AGENT}")
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"content-length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        data = head + body
        for attempt in (1, 2):
            conn = self._idle_connection(origin)
            reused = conn is not None
            if conn is None:
                conn = await self._connect(origin, what)
            try:
                await conn.write(data, self._timeouts.write, what)
                while not conn.headers_done:
                    if conn.error is not None:
                        raise conn.error
                    await conn.wait(self._timeouts.read, what, "waiting for its answer")
            except UpstreamUnreachable:
                conn.close()
                # a pooled connection the upstream had just closed: once more on a new one
                # (nothing of the request was answered, so nothing was processed twice)
                if reused and not conn.received_any and attempt == 1:
                    continue
                raise
            except BaseException:
                conn.close()
                raise
            return _Answer(self, conn, what, self._timeouts.read)
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


# --------------------------------------------------------------------------- via httpx


def _translate(exc: httpx.HTTPError, what: str) -> UpstreamError:
    """An httpx failure as one of ours; the message names the upstream, never a key."""
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"{what} did not answer in time ({type(exc).__name__})")
    return UpstreamUnreachable(f"{what} is unreachable ({type(exc).__name__})")


class _HttpxAnswer:
    __slots__ = ("_response", "_what", "headers", "status")

    def __init__(self, response: httpx.Response, what: str) -> None:
        self._response = response
        self._what = what
        self.status = response.status_code
        self.headers: Headers = [(k.lower(), v) for k, v in response.headers.raw]

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_raw():
                if chunk:
                    yield chunk
        except httpx.HTTPError as exc:
            raise _translate(exc, self._what) from None

    async def aclose(self) -> None:
        await self._response.aclose()


# --------------------------------------------------------------------------- the facade


class Upstream:
    """The forwarder; :meth:`start`/:meth:`stop` open and close its connections.
    ``via_httpx``: every origin through httpx (tests of that path); by default only the
    origins the environment sends through a proxy."""

    def __init__(
        self,
        timeouts: Timeouts | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        via_httpx: bool = False,
        max_connections: int = 1000,
    ) -> None:
        timeouts = timeouts or Timeouts()
        self._timeouts = timeouts
        self._timeout = httpx.Timeout(
            connect=timeouts.connect, read=timeouts.read, write=timeouts.write, pool=timeouts.pool
        )
        self._transport = transport
        self._limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=100, keepalive_expiry=30
        )
        self._client: httpx.AsyncClient | None = None
        self._pool = _Pool(timeouts)
        self._via_httpx = via_httpx or transport is not None
        self._proxied: dict[str, bool] = {}

    @property
    def client(self) -> httpx.AsyncClient:
        """The httpx client (proxied origins, model listings)."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self._timeout,
                limits=self._limits,
                transport=self._transport,
                follow_redirects=False,
            )
        return self._client

    def proxied(self, url: str) -> bool:
        """Whether the environment sends ``url`` through a proxy (decided once per
        origin, as httpx would: ``*_PROXY`` and ``NO_PROXY``)."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        known = self._proxied.get(origin)
        if known is None:
            proxies = urllib.request.getproxies()
            known = bool(proxies.get(parts.scheme) or proxies.get("all")) and not (
                urllib.request.proxy_bypass(parts.hostname or "")
            )
            self._proxied[origin] = known
        return known

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self._pool.close()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def open(
        self,
        method: str,
        url: str,
        *,
        headers: Sequence[tuple[str, str]],
        content: bytes | None = None,
        what: str = "the upstream",
    ) -> UpstreamResponse:
        """Send the request; return once the status and headers are in."""
        if not (self._via_httpx or self.proxied(url)):
            return await self._pool.request(method, url, headers, content, what)
        request = self.client.build_request(method, url, headers=list(headers), content=content)
        try:
            response = await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise _translate(exc, what) from None
        return _HttpxAnswer(response, what)
