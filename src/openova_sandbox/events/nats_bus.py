"""The event bus over NATS JetStream: events travel between API replicas (issue 14).

Layout (docs/mcp.md, "Live resources and events"):

- **one stream per deployment** (``SANDBOX_EVENTS_STREAM``, default ``SANDBOX_EVENTS``)
  holding the subjects ``<stream>.<event type>`` (``SANDBOX_EVENTS.sandbox.created``),
  file storage, kept ``max_age`` (a day by default): anything outside (audit, billing)
  can read it with its own consumer;
- **one durable pull consumer per replica** (``SANDBOX_EVENTS_REPLICA``, default the
  host name: a pod's name), starting at the events published after it was first made.
  Every replica sees every event, its own included, in the stream's order; a replica
  that restarts resumes after the last event it acknowledged. A consumer that no replica
  has pulled from for ``inactive_seconds`` (an hour) is removed by the server;
- **durable publish**: :meth:`NatsBus.publish` returns only once JetStream acknowledged
  the event (it is stored), retrying across a reconnect until ``publish_timeout``, with
  the event's id as ``Nats-Msg-Id`` so a retry of a stored event is not stored twice;
  past the timeout it raises :class:`EventNotPublished`;
- **delivery**: a supervisor task connects (retrying with a capped back-off while the
  server is away), makes the stream and the consumer if they are missing, long-polls one
  event at a time (JetStream holds a larger pull until it is full or expires: latency),
  hands each event to the local subscribers' queues and acknowledges it. An
  event delivered again (its acknowledgement was lost in a restart) is dropped by id.

The client reconnects by itself (``max_reconnect_attempts=-1``); what it cannot resume
(a pull request in flight, a stream deleted meanwhile) the supervisor does by starting
over. Nothing here logs a credential: the URL is logged without its user info.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    StorageType,
    StreamConfig,
)

from .bus import Event, Fanout

log = structlog.get_logger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_TYPE = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$")
SEEN_IDS = 4096  # ids remembered to drop a redelivery


class EventNotPublished(RuntimeError):
    """JetStream did not acknowledge the event within the publish timeout."""


def safe_url(url: str) -> str:
    """``url`` without user info (a token or password in it is never logged)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def consumer_name(replica: str) -> str:
    """A durable consumer name from a replica's name (a pod or host name): what NATS
    refuses in a name (``.``, ``*``, ``>``, blanks...) becomes ``-``."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "-", replica.strip())[:64].strip("-")
    return cleaned or "replica"


class NatsBus:
    """``events.bus.EventBus`` over JetStream; see the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        stream: str = "SANDBOX_EVENTS",
        replica: str = "",
        max_age: float = 86400.0,
        publish_timeout: float = 5.0,
        fetch_wait: float = 5.0,
        inactive_seconds: float = 3600.0,
        max_queue: int = 1000,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
    ) -> None:
        if not _NAME.match(stream):
            raise ValueError(f"stream name {stream!r}: letters, digits, '_' and '-' only")
        self.url = url
        self.stream = stream
        self.consumer = consumer_name(replica or socket.gethostname())
        self._max_age = max_age
        self._publish_timeout = publish_timeout
        self._fetch_wait = fetch_wait
        self._inactive = inactive_seconds
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._fanout = Fanout(max_queue)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._ready = asyncio.Event()  # connected, stream and consumer in place
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0  # events handed to subscribers (observability, tests)
        self.redelivered = 0  # events dropped as already delivered

    # --- the EventBus seam -----------------------------------------------------------

    def subscribe(self) -> asyncio.Queue[Event]:
        return self._fanout.subscribe()

    def unsubscribe(self, queue: asyncio.Queue[Event]) -> None:
        self._fanout.unsubscribe(queue)

    async def publish(self, event: Event) -> None:
        """Store ``event`` in the stream; returns once JetStream acknowledged it."""
        if not _TYPE.match(event.type):
            raise ValueError(f"event type {event.type!r} is not a subject token path")
        data = json.dumps(
            {"id": event.id, "type": event.type, "at": event.at, "payload": event.payload},
            separators=(",", ":"),
            default=str,
        ).encode()
        if self._task is None:
            raise EventNotPublished(f"event {event.type} not published: the event bus is stopped")
        subject = f"{self.stream}.{event.type}"
        headers = {"Nats-Msg-Id": event.id}
        deadline = time.monotonic() + self._publish_timeout
        last = "not connected"
        delay = self._backoff_initial
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise EventNotPublished(
                    f"event {event.type} ({event.id}) not acknowledged by JetStream at "
                    f"{safe_url(self.url)} within {self._publish_timeout:g}s: {last}"
                )
            js = self._js
            if js is None or not self._ready.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._ready.wait()
                continue
            try:
                ack = await js.publish(
                    subject,
                    data,
                    timeout=min(remaining, 2.0),
                    stream=self.stream,
                    headers=dict(headers),
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                last = f"{type(exc).__name__}: {exc}".rstrip(": ")
                await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                delay = min(delay * 2, 1.0)
                continue
            if ack.duplicate:
                log.debug("event publish retried; stored once", event_type=event.type)
            return

    # --- lifecycle -----------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    async def wait_ready(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError:
            return False
        return True

    async def start(self) -> None:
        """Start the supervisor; returns at once (the server may come later)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._supervise(), name="nats-event-bus")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._ready.clear()
        await self._close()

    async def _close(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await nc.close()

    # --- the supervisor ---------------------------------------------------------------

    async def _supervise(self) -> None:
        delay = self._backoff_initial
        while True:
            try:
                psub = await self._prepare()
                delay = self._backoff_initial
                self._ready.set()
                log.info(
                    "event bus ready",
                    url=safe_url(self.url),
                    stream=self.stream,
                    consumer=self.consumer,
                )
                await self._consume(psub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._ready.clear()
                log.warning(
                    "event bus interrupted; retrying",
                    url=safe_url(self.url),
                    error_type=type(exc).__name__,
                    error=str(exc),
                    retry_in=round(delay, 2),
                )
                if self._nc is not None and self._nc.is_closed:
                    self._nc = self._js = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._backoff_max)

    async def _prepare(self) -> JetStreamContext.PullSubscription:
        if self._nc is None:
            self._nc = await nats.connect(
                servers=[self.url],
                name=f"sandbox-events-{self.consumer}",
                connect_timeout=2,
                reconnect_time_wait=0.25,
                max_reconnect_attempts=-1,
                allow_reconnect=True,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
            )
            self._js = self._nc.jetstream(timeout=2.0)
        js = self._js
        assert js is not None
        try:
            await js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            await js.add_stream(
                StreamConfig(
                    name=self.stream,
                    subjects=[f"{self.stream}.>"],
                    storage=StorageType.FILE,
                    max_age=self._max_age,
                    duplicate_window=min(120.0, self._max_age),
                )
            )
            log.info("event stream created", stream=self.stream)
        return await js.pull_subscribe(
            f"{self.stream}.>",
            durable=self.consumer,
            stream=self.stream,
            config=ConsumerConfig(
                durable_name=self.consumer,
                deliver_policy=DeliverPolicy.NEW,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=30.0,
                max_ack_pending=10_000,
                inactive_threshold=self._inactive,
            ),
        )

    async def _consume(self, psub: JetStreamContext.PullSubscription) -> None:
        try:
            while True:
                try:
                    # one at a time: the server answers a one-message pull as soon as an
                    # event is stored (a larger batch is held until full or expired)
                    messages = await psub.fetch(batch=1, timeout=self._fetch_wait)
                except (nats.errors.TimeoutError, TimeoutError):
                    if self._nc is None or self._nc.is_closed:
                        raise ConnectionError("the NATS connection is closed") from None
                    continue
                for message in messages:
                    self._deliver(message.data)
                    with contextlib.suppress(Exception):
                        await message.ack()
        finally:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()

    def _deliver(self, data: bytes) -> None:
        try:
            body: Any = json.loads(data)
            event = Event(
                type=str(body["type"]),
                payload=dict(body.get("payload") or {}),
                id=str(body["id"]),
                at=str(body.get("at") or ""),
            )
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("event dropped: not an event", error=str(exc), size=len(data))
            return
        if event.id in self._seen:
            self.redelivered += 1
            return
        self._seen[event.id] = None
        if len(self._seen) > SEEN_IDS:
            self._seen.popitem(last=False)
        self.delivered += 1
        self._fanout.offer(event)

    async def _on_error(self, exc: Exception) -> None:
        log.debug("nats client error", error_type=type(exc).__name__, error=str(exc))

    async def _on_disconnected(self) -> None:
        log.info("event bus disconnected", url=safe_url(self.url))

    async def _on_reconnected(self) -> None:
        log.info("event bus reconnected", url=safe_url(self.url))
