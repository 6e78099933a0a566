"""Posts every terminal activity transition to ``SANDBOX_NOTIFY_WEBHOOK`` (docs/activity.md).

The registry calls :meth:`ActivityWebhook.__call__` on the event loop for each transition
(``registry.activity_listeners``); it only builds the JSON body and appends it to a
bounded queue (the oldest entry is dropped when full, and counted), so a slow or dead
receiver never costs the terminals anything. One sender task posts the queue in order:

* a timeout per request (``timeout``);
* retries with exponential backoff only where a retry can help: connection errors,
  timeouts and 5xx answers (at most ``attempts`` tries); a 4xx is the receiver saying
  no, so it is logged once and dropped;
* the URL may hold credentials (``https://user:secret@host/…`` — httpx sends them as
  Basic auth — or a token in the query): logs name only the scheme, host and path.

Body: ``{"sandbox", "namespace", "owner", "terminal", "agent", "state", "previous", "at",
"excerpt"}``; ``excerpt`` is the screen's last five non-empty lines, at most 500
characters (what the agent is asking, typically).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog

from ..terminal.activity import excerpt
from ..terminal.registry import TerminalRegistry
from ..terminal.session import TerminalSession

log = structlog.get_logger(__name__)

QUEUE_MAX = 256
TIMEOUT = 5.0
ATTEMPTS = 4
BACKOFF = 0.5  # seconds before the first retry; doubles each time
BACKOFF_MAX = 10.0


def redacted(url: str) -> str:
    """``scheme://host[:port]/path`` — never userinfo, query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class _Retry(Exception):
    """A failure worth another try (connect error, timeout, 5xx)."""


class ActivityWebhook:
    """The webhook sender; register the instance itself as an activity listener."""

    def __init__(
        self,
        url: str,
        *,
        registry: TerminalRegistry | None = None,
        queue_max: int = QUEUE_MAX,
        timeout: float = TIMEOUT,
        attempts: int = ATTEMPTS,
        backoff: float = BACKOFF,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._url = url
        self._where = redacted(url)
        self._registry = registry
        self._queue: deque[dict[str, Any]] = deque(maxlen=queue_max)
        self._wake = asyncio.Event()
        self._timeout = timeout
        self._attempts = max(1, attempts)
        self._backoff = backoff
        self._transport = transport
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.dropped = 0  # entries pushed out of a full queue
        self.sent = 0
        self.failed = 0

    @property
    def where(self) -> str:
        """The URL as logs show it (no credentials)."""
        return self._where

    # ------------------------------------------------------------------ the listener
    def __call__(self, sandbox_id: str, session: TerminalSession, old: str, new: str) -> None:
        """Queue one transition (runs on the event loop; never blocks, never raises)."""
        if self._closing:
            return
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
            log.warning("notify.webhook.dropped", url=self._where, dropped=self.dropped)
        self._queue.append(self.body(sandbox_id, session, old, new))
        self._wake.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def body(self, sandbox_id: str, session: TerminalSession, old: str, new: str) -> dict[str, Any]:
        namespace, name = _split(sandbox_id)
        owner = ""
        if self._registry is not None:
            with contextlib.suppress(Exception):  # a sandbox removed meanwhile
                context = self._registry.context(sandbox_id)
                namespace, owner = context.namespace or namespace, context.owner
        try:
            text = excerpt(session.screen.text())
        except Exception:  # the screen is best effort here; the transition is what counts
            text = ""
        return {
            "sandbox": name,
            "namespace": namespace,
            "owner": owner,
            "terminal": session.id,
            "agent": session.agent,
            "state": new,
            "previous": old,
            "at": self._clock().isoformat().replace("+00:00", "Z"),
            "excerpt": text,
        }

    # ------------------------------------------------------------------ the sender
    async def start(self) -> None:
        """Background-service hook: the sender starts with the first transition."""
        return None

    async def stop(self) -> None:
        await self.aclose()

    async def aclose(self, drain: float = 2.0) -> None:
        """Stop taking transitions; give the queue ``drain`` seconds, then stop."""
        self._closing = True
        task, self._task = self._task, None
        if task is None:
            return
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), drain)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        async with httpx.AsyncClient(
            transport=self._transport, timeout=self._timeout, follow_redirects=False
        ) as http:
            while True:
                while self._queue:
                    await self._deliver(http, self._queue.popleft())
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()

    async def _deliver(self, http: httpx.AsyncClient, body: dict[str, Any]) -> None:
        delay = self._backoff
        for attempt in range(1, self._attempts + 1):
            try:
                await self._post(http, body)
                self.sent += 1
                return
            except _Retry as exc:
                if attempt == self._attempts or self._closing:
                    self.failed += 1
                    log.warning(
                        "notify.webhook.failed", url=self._where, error=str(exc), tries=attempt
                    )
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
            except _Refused as exc:
                self.failed += 1
                log.warning("notify.webhook.refused", url=self._where, status=exc.status)
                return

    async def _post(self, http: httpx.AsyncClient, body: dict[str, Any]) -> None:
        try:
            response = await http.post(self._url, json=body)
        except httpx.TransportError as exc:  # connect errors, timeouts, broken connections
            raise _Retry(type(exc).__name__) from None
        if response.status_code >= 500:
            raise _Retry(f"status {response.status_code}")
        if response.status_code >= 400:
            raise _Refused(response.status_code)


class _Refused(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _split(sandbox_id: str) -> tuple[str, str]:
    """Embedded registry keys are ``namespace/name``; a pty-server's id is the name."""
    namespace, _, name = sandbox_id.rpartition("/")
    return namespace, name


def attach_webhook(registry: TerminalRegistry, url: str) -> ActivityWebhook | None:
    """Register a webhook sender for ``url`` with ``registry`` (None when ``url`` is empty)."""
    if not url:
        return None
    hook = ActivityWebhook(url, registry=registry)
    registry.activity_listeners.append(hook)
    log.info("notify.webhook.on", url=hook.where)
    return hook
