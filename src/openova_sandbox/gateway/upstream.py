"""The forwarder: one request to an upstream provider, its answer passed on as it comes.

One pooled ``httpx.AsyncClient`` for the process (keep-alive connections are what keep
the added latency small). The answer is read with ``aiter_raw``: the bytes the upstream
sent, chunk by chunk as they arrive, never buffered. The upstream is asked for
``Accept-Encoding: identity``, so those bytes are also what the usage meter can read.

Failures become two errors the routes answer in the caller's API shape: the upstream
could not be reached or broke the connection (:class:`UpstreamUnreachable`, 502), or it
did not answer in time (:class:`UpstreamTimeout`, 504). An upstream's own 4xx/5xx is not
an error here: it is an answer, passed through with its body.

Closing an :class:`UpstreamResponse` before its end closes the connection, which is how
an upstream request is cancelled when the caller goes away.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import httpx

from ..domain.errors import SandboxError
from .config import Timeouts

Headers = list[tuple[bytes, bytes]]


class UpstreamError(SandboxError):
    status = 502


class UpstreamUnreachable(UpstreamError):
    code = "upstream-unreachable"
    status = 502


class UpstreamTimeout(UpstreamError):
    code = "upstream-timeout"
    status = 504


def _translate(exc: httpx.HTTPError, what: str) -> UpstreamError:
    """An httpx failure as one of ours; the message names the upstream, never a key."""
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"{what} did not answer in time ({type(exc).__name__})")
    return UpstreamUnreachable(f"{what} is unreachable ({type(exc).__name__})")


class UpstreamResponse:
    """An upstream's answer whose body is still to be read (or abandoned)."""

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


class Upstream:
    """The pooled client; :meth:`start`/:meth:`stop` open and close it."""

    def __init__(
        self,
        timeouts: Timeouts | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 1000,
    ) -> None:
        timeouts = timeouts or Timeouts()
        self._timeout = httpx.Timeout(
            connect=timeouts.connect, read=timeouts.read, write=timeouts.write, pool=timeouts.pool
        )
        self._transport = transport
        self._limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=100, keepalive_expiry=30
        )
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            # created on first use too: a route may run before start() in some tests
            self._client = httpx.AsyncClient(
                timeout=self._timeout,
                limits=self._limits,
                transport=self._transport,
                follow_redirects=False,
            )
        return self._client

    async def start(self) -> None:
        _ = self.client

    async def stop(self) -> None:
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
        request = self.client.build_request(method, url, headers=list(headers), content=content)
        try:
            response = await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise _translate(exc, what) from None
        return UpstreamResponse(response, what)
