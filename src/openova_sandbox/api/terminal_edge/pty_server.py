"""The pty-server's own HTTP/1.1 and WebSocket server: asyncio, h11 and :mod:`.ws_frames`.

``sandbox pty-server`` (one per sandbox pod in Kubernetes) serves a :class:`~.pty_app.PtyApp`
with this instead of uvicorn + starlette + websockets: an idle pod holds ~10 MiB less
(docs/terminal.md, "pty-server RSS"), and a keystroke goes from ``data_received`` to the
PTY without an ASGI message loop.

- HTTP/1.1 is parsed by ``h11`` (keep-alive, pipelining, chunked bodies); a request it
  cannot parse is a 400, headers over :data:`MAX_HEADER_BYTES` a 431, a body over
  :data:`MAX_BODY_BYTES` a 413, each answered and the connection closed. A path no route
  has is a 404, a method its route does not take a 405 with ``Allow`` (as Starlette
  answered; a path that matches with its trailing slash toggled is redirected 307, as
  Starlette did). An unexpected handler error is a 500 (logged), never a dropped socket.
- A WebSocket upgrade (``Upgrade: websocket`` and ``Connection: upgrade``) on the attach
  route is handed to the app before any handshake: it accepts (101, with
  ``sandbox.v2`` when offered) or denies with a plain HTTP response. A bad handshake is a
  400 (``Sec-WebSocket-Key`` missing or not 16 bytes in base64, not a GET) or a 426
  (``Sec-WebSocket-Version`` not 13), an upgrade on any other path a 403 (as uvicorn
  answered a socket the app closed before accepting). After the 101, frames are
  :class:`~.ws_frames.LeanSocket`'s; the server pings every 20 s and closes 1011 when a
  ping is not answered within 20 s; its own close waits up to 10 s for the peer's.
- Shutdown (SIGTERM/SIGINT): stop listening, close open WebSockets with 1012 (service
  restart), finish requests in flight, then the app's shutdown (its terminals end).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import ipaddress
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.cookies import _unquote  # Starlette's cookie parser unquotes with it too
from typing import Any, cast
from urllib.parse import parse_qsl, unquote

import h11
import structlog

from ...domain.terminal_wire import RAW, clip_reason
from .pty_app import PtyApp, Reply, text_reply
from .ws_frames import OP_CLOSE, OP_PING, OP_TEXT, LeanSocket, Sink, frame_header

log = structlog.get_logger(__name__)

MAX_HEADER_BYTES = 16 * 1024  # request line and headers (h11's default)
MAX_BODY_BYTES = 1024 * 1024  # the largest request body (a create's is ~1 KiB)
WS_MAX_SIZE = 16 * 1024 * 1024  # a client message (uvicorn's ws_max_size)
PING_INTERVAL = 20.0
PING_TIMEOUT = 20.0
CLOSE_TIMEOUT = 10.0
KEEP_ALIVE_TIMEOUT = 5.0  # an idle HTTP connection is closed after this (uvicorn's default)
CLOSE_SERVICE_RESTART = 1012
CLOSE_INTERNAL_ERROR = 1011  # an internal error, or a keepalive ping unanswered
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# the reason phrases of the statuses this server sends (http.HTTPStatus costs an enum)
_REASONS = {
    101: b"Switching Protocols",
    200: b"OK",
    201: b"Created",
    204: b"No Content",
    307: b"Temporary Redirect",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    409: b"Conflict",
    413: b"Content Too Large",
    426: b"Upgrade Required",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}


# ------------------------------------------------------------------ request
class Headers(Mapping[str, str]):
    """Request headers by lower-case name; the first of repeated ones wins (``get``), as
    Starlette's do; :meth:`all` lists them all."""

    def __init__(self, raw: Sequence[tuple[bytes, bytes]]) -> None:
        self._raw = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in raw]
        self._first: dict[str, str] = {}
        for key, value in self._raw:
            self._first.setdefault(key, value)

    def __getitem__(self, key: str) -> str:
        return self._first[key.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._first)

    def __len__(self) -> int:
        return len(self._first)

    def all(self, key: str) -> list[str]:
        key = key.lower()
        return [v for k, v in self._raw if k == key]


def parse_cookies(header: str) -> dict[str, str]:
    """A ``Cookie`` header as Starlette parsed it (``cookie_parser``): ``;``-separated,
    values unquoted, a bare value under the empty name."""
    found: dict[str, str] = {}
    for chunk in header.split(";"):
        key, sep, value = chunk.partition("=")
        if not sep:
            key, value = "", key
        key, value = key.strip(), value.strip()
        if key or value:
            found[key] = _unquote(value)
    return found


@dataclass(frozen=True)
class URL:
    scheme: str
    netloc: str
    path: str
    query: str


class HttpRequest:
    """One request as the app reads it (:class:`~.pty_app.Request` and, for an upgrade,
    the reading half of :class:`~.pty_app.Upgrade`)."""

    def __init__(self, method: str, target: bytes, headers: Headers, local: str, ws: bool) -> None:
        raw_path, _, query = target.decode("latin-1").partition("?")
        self.method = method
        self.path = unquote(raw_path)
        self.raw_path = raw_path
        self.headers = headers
        self.query_params: dict[str, str] = dict(parse_qsl(query, keep_blank_values=True))
        self.cookies = parse_cookies(headers.get("cookie", ""))
        self.url = URL("ws" if ws else "http", headers.get("host") or local, self.path, query)
        self.path_params: dict[str, str] = {}
        self.body = b""

    @property
    def subprotocols(self) -> list[str]:
        offered = ",".join(self.headers.all("sec-websocket-protocol"))
        return [p.strip() for p in offered.split(",") if p.strip()]


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_date_cache: list[Any] = [0, b""]


def http_date() -> bytes:
    """The ``Date`` header's value (RFC 9110 §5.6.7), made once a second."""
    now = int(time.time())
    if _date_cache[0] != now:
        t = time.gmtime(now)
        _date_cache[:] = [
            now,
            f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT".encode(),
        ]
    value: bytes = _date_cache[1]
    return value


def _tokens(value: str) -> set[str]:
    return {t.strip().lower() for t in value.split(",") if t.strip()}


def _is_upgrade(headers: Headers) -> bool:
    return "websocket" in _tokens(headers.get("upgrade", "")) and "upgrade" in _tokens(
        ",".join(headers.all("connection"))
    )


def _handshake_problem(request: HttpRequest) -> Reply | None:
    """What is wrong with a WebSocket handshake (RFC 6455 §4.2.1), as a reply."""
    if request.method != "GET":
        return text_reply("Failed to open a WebSocket connection: the method must be GET.\n", 400)
    if request.headers.get("sec-websocket-version", "").strip() != "13":
        return text_reply(
            "Failed to open a WebSocket connection: unsupported Sec-WebSocket-Version.\n",
            426,
            (("Sec-WebSocket-Version", "13"),),
        )
    key = request.headers.get("sec-websocket-key", "").strip()
    try:
        valid = len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        valid = False
    if not valid:
        return text_reply(
            "Failed to open a WebSocket connection: invalid Sec-WebSocket-Key header.\n", 400
        )
    return None


def _accept_key(key: str) -> str:
    return base64.b64encode(
        hashlib.sha1(key.strip().encode() + _WS_GUID, usedforsecurity=False).digest()
    ).decode()


# ------------------------------------------------------------------ WebSocket
class WsChannel:
    """An accepted WebSocket as the attach pumps' ``Channel``, on the lean frame path."""

    def __init__(self, link: HttpConnection, protocol: str, query: Mapping[str, str]) -> None:
        self._link = link
        self._protocol = protocol
        self._query = query
        assert link.lean is not None
        self._lean: LeanSocket = link.lean

    @property
    def protocol(self) -> str:
        return self._protocol

    @property
    def query(self) -> Mapping[str, str]:
        return self._query

    lean = True

    def set_sink(self, sink: Sink | None) -> bool:
        self._lean.set_sink(sink)
        return True

    def send_now(self, data: bytes) -> bool:
        return self._lean.send_now(data)

    def direct_send(self, offsets: bool) -> Callable[[bytes, int], bool]:
        """The socket's synchronous send for ``Viewer.send_directly`` (see channel.py)."""
        return self._lean.send_live_at if offsets else self._lean.send_live

    async def send_bytes(self, data: bytes) -> None:
        await self._lean.send(data)

    async def send_text(self, text: str) -> None:
        await self._lean.send(text.encode(), OP_TEXT)

    async def receive(self) -> bytes | str | None:
        return await self._lean.receive()

    async def close(self, code: int, reason: str = "") -> None:
        self._link.close_ws(code, clip_reason(reason))


class Upgrade(HttpRequest):
    """A WebSocket upgrade the app answers: :meth:`accept` or :meth:`deny`."""

    link: HttpConnection

    async def accept(self, subprotocol: str | None) -> WsChannel:
        return self.link.accept_ws(self, subprotocol)

    async def deny(self, reply: Reply) -> None:
        self.link.deny_ws(reply)


# ------------------------------------------------------------------ connection
class HttpConnection(asyncio.Protocol):
    """One TCP connection: HTTP/1.1 requests, or one WebSocket after an upgrade. It is
    also the :class:`~.ws_frames.FrameOwner` of that WebSocket."""

    def __init__(self, server: PtyHttpServer) -> None:
        self.server = server
        self.app = server.app
        self.loop = asyncio.get_running_loop()
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.writable = asyncio.Event()
        self.writable.set()
        self.max_size = WS_MAX_SIZE
        self.close_sent = False
        self.lean: LeanSocket | None = None
        self._request: HttpRequest | None = None
        self._body = bytearray()
        self._task: asyncio.Task[None] | None = None
        self._local = ""
        self.disconnected = False
        self._answered = False  # the upgrade got its 101 or its HTTP answer
        self._closing_down = False
        self._ping: asyncio.TimerHandle | None = None
        self._awaiting_pong = False
        self._close_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None

    # -------------------------------------------------------------- asyncio
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # a keystroke is not held back by Nagle's algorithm (asyncio and uvloop set
            # this too; said here so it does not depend on how the socket was made)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock = transport.get_extra_info("sockname")
        if isinstance(sock, tuple):
            host, port = sock[:2]
            self._local = f"{host}:{port}" if ":" not in str(host) else f"[{host}]:{port}"
        self.server.connections.add(self)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.disconnected = True
        self.server.gone(self)
        self._cancel_timers()
        self.writable.set()  # a writer waiting for room finds the link gone
        if self.lean is not None:
            self.lean.lost()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def data_received(self, data: bytes) -> None:
        lean = self.lean
        if lean is not None:
            if not lean.gone:
                lean.feed(data)
            return
        self._disarm_idle()
        try:
            self.conn.receive_data(data)
        except h11.RemoteProtocolError:  # data after the connection closed
            self.transport.close()
            return
        self._pump()

    def eof_received(self) -> bool | None:
        if self.lean is None:
            with contextlib.suppress(h11.RemoteProtocolError):
                self.conn.receive_data(b"")
                self._pump()
        return None

    # -------------------------------------------------------------- HTTP
    def _pump(self) -> None:
        while self._task is None and not self.disconnected and self.lean is None:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                self._fail_request(exc)
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self._start(event)
            elif isinstance(event, h11.Data):
                self._body += event.data
                if len(self._body) > MAX_BODY_BYTES:
                    self._refuse(text_reply("Request body too large", 413))
                    return
            elif isinstance(event, h11.EndOfMessage):
                request = self._request
                assert request is not None
                request.body = bytes(self._body)
                self._body = bytearray()
                self.transport.pause_reading()
                self._task = self.loop.create_task(self._handle(request))
            elif isinstance(event, h11.ConnectionClosed):
                self.transport.close()
                return

    def _start(self, event: h11.Request) -> None:
        # h11 bounds a request head that arrives in pieces; one that arrived whole is
        # measured here
        size = len(event.target) + sum(len(k) + len(v) + 4 for k, v in event.headers)
        if size > MAX_HEADER_BYTES:
            self._refuse(text_reply("Request header fields too large", 431))
            return
        headers = Headers(event.headers)
        ws = _is_upgrade(headers)
        request = (Upgrade if ws else HttpRequest)(
            event.method.decode("ascii", "replace").upper(), event.target, headers, self._local, ws
        )
        self._request = request
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            self._refuse(text_reply("Request body too large", 413))

    def _fail_request(self, exc: h11.RemoteProtocolError) -> None:
        status = exc.error_status_hint  # 431 for headers past MAX_HEADER_BYTES, else 400
        detail = "Request header fields too large" if status == 431 else "Invalid HTTP request"
        self._refuse(text_reply(detail, status))

    def _refuse(self, reply: Reply) -> None:
        """Answer with ``reply`` where HTTP still allows one, then close."""
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            with contextlib.suppress(h11.LocalProtocolError):
                self._write_reply(reply, close=True)
        self.disconnected = True
        self.transport.close()

    def _write_reply(self, reply: Reply, *, close: bool = False, head: bool = False) -> None:
        headers = [(b"date", http_date())]
        headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers]
        if reply.content_type is not None:
            headers.append((b"content-type", reply.content_type.encode("latin-1")))
        if reply.status >= 200 and reply.status not in (204, 304):
            headers.append((b"content-length", str(len(reply.body)).encode()))
        if close:
            headers.append((b"connection", b"close"))
        reason = _REASONS.get(reply.status, b"")
        response = h11.Response(status_code=reply.status, headers=headers, reason=reason)
        out = self.conn.send(response) or b""
        if reply.body and not head and reply.status not in (204, 304):
            out += self.conn.send(h11.Data(data=reply.body)) or b""
        out += self.conn.send(h11.EndOfMessage()) or b""
        self.transport.write(out)

    async def _handle(self, request: HttpRequest) -> None:
        try:
            if isinstance(request, Upgrade):
                await self._websocket(request)
                return
            reply = await self._dispatch(request)
            if self.disconnected:
                return
            close = self._closing_down or self.conn.their_state is not h11.DONE
            try:
                self._write_reply(reply, close=close, head=request.method == "HEAD")
            except h11.LocalProtocolError:
                self.transport.close()
                return
            if self.conn.our_state is h11.MUST_CLOSE or close:
                self.transport.close()
                return
            self.conn.start_next_cycle()
            self._arm_idle()
        finally:
            self._task = None
        if not self.disconnected and self.lean is None:
            self.transport.resume_reading()
            self._pump()

    async def _dispatch(self, request: HttpRequest) -> Reply:
        found = self.app.match(request.path)
        if found is None:
            return self._redirect_or_404(request)
        route, params = found
        handler = route.methods.get(request.method)
        if handler is None:
            allow = ", ".join(sorted(route.methods))
            return text_reply("Method Not Allowed", 405, (("allow", allow),))
        request.path_params = params
        try:
            return await handler(request)
        except Exception:
            log.exception("terminal.server.error", method=request.method, route=route.path)
            return text_reply("Internal Server Error", 500)

    def _redirect_or_404(self, request: HttpRequest) -> Reply:
        path = request.path
        if path != "/":
            other = path[:-1] if path.endswith("/") else path + "/"
            if self.app.match(other) is not None:
                raw = request.raw_path
                raw = raw[:-1] if raw.endswith("/") else raw + "/"
                query = f"?{request.url.query}" if request.url.query else ""
                location = f"http://{request.url.netloc}{raw}{query}"
                return Reply(307, b"", None, (("location", location),))
        return text_reply("Not Found", 404)

    # -------------------------------------------------------------- WebSocket
    async def _websocket(self, upgrade: Upgrade) -> None:
        upgrade.link = self
        params = self.app.attach_params(upgrade.path)
        problem = _handshake_problem(upgrade)
        if params is None:
            self.deny_ws(text_reply("", 403) if problem is None else problem)
            return
        if problem is not None:
            self.deny_ws(problem)
            return
        upgrade.path_params = params
        try:
            await self.app.attach(upgrade)
        except ConnectionError:  # the client left: nothing to answer before the 101
            if not self._answered:
                return
        except Exception:
            log.exception("terminal.server.error", route="/sessions/{id}/attach")
            if not self._answered:
                self.deny_ws(text_reply("Internal Server Error", 500))
            else:
                self.close_ws(CLOSE_INTERNAL_ERROR, "")
            return
        if not self._answered:  # the app neither accepted nor denied: forbidden
            self.deny_ws(text_reply("", 403))
        elif not self.close_sent:
            self.close_ws(1000, "")

    def accept_ws(self, upgrade: Upgrade, subprotocol: str | None) -> WsChannel:
        if self._answered or self.disconnected:
            raise ConnectionError("the connection is gone")
        headers = [
            (b"upgrade", b"websocket"),
            (b"connection", b"Upgrade"),
            (b"sec-websocket-accept", _accept_key(upgrade.headers["sec-websocket-key"]).encode()),
        ]
        if subprotocol:
            headers.append((b"sec-websocket-protocol", subprotocol.encode()))
        self.transport.write(
            self.conn.send(
                h11.InformationalResponse(
                    status_code=101, headers=headers, reason=b"Switching Protocols"
                )
            )
            or b""
        )
        self._answered = True
        trailing, _ = self.conn.trailing_data
        self.lean = LeanSocket(self)
        self.transport.resume_reading()
        self._schedule_ping()
        if trailing:
            self.lean.feed(bytes(trailing))
        return WsChannel(self, subprotocol or RAW, upgrade.query_params)

    def deny_ws(self, reply: Reply) -> None:
        if self._answered or self.disconnected:
            return
        self._answered = True
        with contextlib.suppress(h11.LocalProtocolError):
            self._write_reply(reply, close=True)
        self.disconnected = True
        self.transport.close()

    def close_ws(self, code: int, reason: str) -> None:
        """Our close frame; the TCP link ends when the peer answers (or in 10 s)."""
        if self.close_sent or self.disconnected or self.transport.is_closing():
            return
        self.close_sent = True
        payload = code.to_bytes(2, "big") + reason.encode()
        self.transport.write(frame_header(OP_CLOSE, len(payload)) + payload)
        if self.lean is not None and self.lean.gone:
            self.transport.close()
            return
        self._close_timer = self.loop.call_later(CLOSE_TIMEOUT, self.transport.close)

    # FrameOwner (``disconnected`` is the attribute: read per keystroke)
    def peer_gone(self, code: int, reason: str) -> None:
        self._cancel_timers()

    def pong(self, payload: bytes) -> None:
        self._awaiting_pong = False

    def close_answered(self) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None

    def _schedule_ping(self) -> None:
        self._ping = self.loop.call_later(PING_INTERVAL, self._keepalive)

    def _keepalive(self) -> None:
        if self.disconnected or self.close_sent:
            return
        if self._awaiting_pong:  # no pong within PING_TIMEOUT: the peer is gone
            self.close_ws(CLOSE_INTERNAL_ERROR, "keepalive ping timeout")
            self.transport.close()
            return
        self._awaiting_pong = True
        payload = os.urandom(4)
        self.transport.write(frame_header(OP_PING, len(payload)) + payload)
        self._ping = self.loop.call_later(PING_TIMEOUT, self._keepalive)

    def _cancel_timers(self) -> None:
        for timer in (self._ping, self._close_timer, self._idle_timer):
            if timer is not None:
                timer.cancel()
        self._ping = self._close_timer = self._idle_timer = None

    def _arm_idle(self) -> None:
        """Close a keep-alive connection that sends nothing for KEEP_ALIVE_TIMEOUT."""
        self._disarm_idle()
        self._idle_timer = self.loop.call_later(KEEP_ALIVE_TIMEOUT, self._idle_expired)

    def _disarm_idle(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _idle_expired(self) -> None:
        self._idle_timer = None
        if self._task is None and self.lean is None and self.conn.their_state is h11.IDLE:
            self.disconnected = True
            self.transport.close()

    # -------------------------------------------------------------- shutdown
    def shutdown(self) -> None:
        """Server shutdown: a WebSocket is closed 1012, an idle HTTP link at once, a
        request in flight after its response."""
        self._closing_down = True
        if self.lean is not None:
            self.close_ws(CLOSE_SERVICE_RESTART, "")
        elif self._task is None:
            self.transport.close()

    @property
    def busy(self) -> bool:
        return self._task is not None or (self.lean is not None and not self.disconnected)


# ------------------------------------------------------------------ server
BACKLOG = 2048


def _listening_socket(host: str, port: int) -> socket.socket | None:
    """A listening socket for an address literal (``0.0.0.0``, ``::``, ``127.0.0.1``),
    bound here so no name is resolved: uvloop resolves through libuv's thread pool,
    whose four threads an idle pod would keep for nothing. ``None`` for a host name."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return None
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class PtyHttpServer:
    """Serves one :class:`~.pty_app.PtyApp` on a TCP address."""

    def __init__(self, app: PtyApp) -> None:
        self.app = app
        self.connections: set[HttpConnection] = set()
        self._drained: asyncio.Event | None = None
        self._server: asyncio.Server | None = None
        self.port = 0
        self.host = ""

    def gone(self, connection: HttpConnection) -> None:
        self.connections.discard(connection)
        if not self.connections and self._drained is not None:
            self._drained.set()

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        sock = _listening_socket(host, port)
        if sock is None:  # a host name: resolved by the loop
            self._server = await loop.create_server(
                lambda: HttpConnection(self), host, port, reuse_address=True, backlog=BACKLOG
            )
        else:
            self._server = await loop.create_server(
                lambda: HttpConnection(self), sock=sock, backlog=BACKLOG
            )
        for sock in self._server.sockets:
            self.host, self.port = sock.getsockname()[:2]
            break

    async def stop(self, grace: float = 10.0) -> None:
        """Stop listening, close every connection (WebSockets 1012), wait up to ``grace``
        seconds for them, then the app's shutdown."""
        if self._server is not None:
            self._server.close()
        self._drained = asyncio.Event()
        for connection in list(self.connections):
            connection.shutdown()
        if self.connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), grace)
        for connection in list(self.connections):
            connection.transport.abort()
        await self.app.shutdown()


def release_freed_heap() -> None:
    """Give the pages of memory freed during start-up back to the system, once, before
    the server idles: glibc's allocator keeps them (import-time parse and compile
    temporaries, the screen library's C declarations parsed by cffi), ~1 MiB of an idle
    pod's RSS. ``malloc_trim`` is glibc's; elsewhere this does nothing."""
    import ctypes
    import gc

    gc.collect()
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return
    trim(0)


def new_loop(loop: str = "auto") -> asyncio.AbstractEventLoop:
    """``uvloop`` when installed and ``loop`` is ``auto`` or ``uvloop``, else asyncio's."""
    if loop in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if loop == "uvloop":
                raise
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def run(
    app: PtyApp,
    host: str,
    port: int,
    *,
    loop: str = "auto",
    on_listening: Callable[[str, int], None] | None = None,
) -> None:
    """Serve ``app`` until SIGTERM or SIGINT (the pod's process)."""
    event_loop = new_loop(loop)
    asyncio.set_event_loop(event_loop)
    try:
        event_loop.run_until_complete(_serve(app, host, port, on_listening))
    finally:
        event_loop.close()


async def _serve(
    app: PtyApp, host: str, port: int, on_listening: Callable[[str, int], None] | None
) -> None:
    server = PtyHttpServer(app)
    await server.start(host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    release_freed_heap()
    log.info("terminal.server.listening", host=server.host, port=server.port)
    if on_listening is not None:
        on_listening(server.host, server.port)
    await stop.wait()
    log.info("terminal.server.stopping")
    await server.stop()


@contextlib.contextmanager
def serve_in_thread(
    app: PtyApp, *, host: str = "127.0.0.1", port: int = 0
) -> Iterator[PtyHttpServer]:
    """Serve ``app`` on a thread with its own loop until the block exits (tests, benches)."""
    ready = threading.Event()
    holder: dict[str, Any] = {}
    loop = asyncio.new_event_loop()

    def main() -> None:
        asyncio.set_event_loop(loop)
        server = PtyHttpServer(app)
        try:
            loop.run_until_complete(server.start(host, port))
        except BaseException as exc:
            holder["error"] = exc
            ready.set()
            return
        holder["server"] = server
        ready.set()
        loop.run_forever()
        loop.run_until_complete(server.stop())
        loop.close()

    thread = threading.Thread(target=main, name=f"pty-server-{port}", daemon=True)
    thread.start()
    ready.wait(20)
    if "server" not in holder:
        raise RuntimeError(f"pty server on {host}:{port} did not start: {holder.get('error')}")
    try:
        yield holder["server"]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=20)
