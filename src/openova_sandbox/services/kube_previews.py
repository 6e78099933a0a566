"""Previews in Kubernetes mode (issue 14, ``preview.*``; docs/mcp.md, "Previews"): the
API and the MCP server (``sandbox mcp --http``) only say what is wanted; the operator
does it (controller/kube/previews.py).

``preview.start`` adds ``{port, command, public, id}`` to the Sandbox's annotation
``sandbox.openova.io/previews`` (a write checked against the resourceVersion it read,
read again and retried on a conflict), then waits up to ``wait`` seconds for the
operator's ``status.portPreviews`` entry of that ``id`` to leave ``starting``, following
the sandbox through the informer (the copy every live view reads) or, without one, the
store. ``preview.stop`` removes the entry; ``preview.list`` and the live resource
``openova://preview/{id}/{port}`` read the annotation and the status of the object they
are given. The proxy (``/preview/<sandbox>/<port>/``) forwards to the port's Service
(``SANDBOX_KUBE_PREVIEW_URL_TEMPLATE``, by default ``preview_render.upstream_url``).

The proxy's use of a sandbox's previews is its activity (services/preview_use.py), and
the operator decides idleness: this replica writes the time of the use into the
annotation ``sandbox.openova.io/preview-used-at`` at most once per ``use_interval``
(30 s) per sandbox, in the background (never in the request's way), and skips the write
when the stored time is already that recent (another replica wrote it). While a preview
WebSocket is open, the write is repeated every interval. The write reads the Sandbox
and writes it with that resourceVersion (a conflict reads again), as the previews
annotation's; it needs the ``update`` on Sandboxes the API's Role already grants.

:class:`PreviewBackend` is what the tools, the live resources and the proxy need of a
previews service: embedded mode's ``PreviewsService`` has it, and so does
:class:`KubePreviews`.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import structlog

from ..controller.kube.preview_render import upstream_url
from ..controller.kube.previews import (
    ANNOTATION,
    ANNOTATION_USED,
    EXITED,
    LISTENING,
    MAX_PREVIEWS,
    REFUSED,
    STARTING,
    USE_INTERVAL,
    InvalidPreviews,
    Wanted,
    encode_wanted,
    parse_wanted,
    preview_path,
    status_entries,
)
from ..domain.errors import Conflict, Invalid, NotFound, QuotaExceeded
from ..domain.model import Sandbox, format_time, parse_time, utcnow
from ..store.base import Store
from .preview_use import PreviewUse
from .previews import PROXY_TIMEOUT, PreviewUnavailable, check_port, check_start

log = structlog.get_logger(__name__)

WRITE_ATTEMPTS = 5
POLL_SECONDS = 0.2  # following the store when there is no informer
ANNOTATION_WAKE = "openova.io/wake-requested"  # the operator's (controller/kube/reconcile.py)
WAKE_EVERY = 30.0  # seconds between two wake requests for one sandbox


class PreviewBackend(Protocol):
    """What the preview tools, live resources and proxy ask of a previews service."""

    async def start_preview(
        self, sandbox: Sandbox, port: Any, command: Any, *, wait: Any = 10.0
    ) -> dict[str, Any]: ...

    async def stop_preview(self, sandbox: Sandbox, port: Any) -> dict[str, Any]: ...

    def list_previews(self, sandbox: Sandbox) -> list[dict[str, Any]]: ...

    def upstream(self, sandbox: Sandbox, port: int) -> str: ...

    def instance(self, sandbox: Sandbox, port: int) -> str: ...

    def http(self) -> httpx.AsyncClient: ...

    def used(self, namespace: str, name: str) -> None: ...

    def holding(self, namespace: str, name: str) -> contextlib.AbstractContextManager[None]: ...


def _wanted(sandbox: Sandbox) -> list[Wanted]:
    """The annotation's previews; one the operator calls malformed is refused here too."""
    try:
        return parse_wanted(sandbox.metadata.annotations.get(ANNOTATION))
    except InvalidPreviews as exc:
        raise Conflict(
            f"sandbox {sandbox.name!r} has a malformed previews annotation: {exc}",
            code="previews-annotation-invalid",
        ) from None


def _announced(view: Mapping[str, Any]) -> dict[str, Any]:
    """What of a view the live resource announces a change of: all but a running
    preview's output (an exited one's comes with its exit)."""
    out = dict(view)
    if out.get("status") in (STARTING, LISTENING):
        out.pop("output", None)
    return out


class KubePreviews:
    """``preview.*`` over the Sandbox's annotation and status (Kubernetes mode)."""

    supports_public = True

    def __init__(
        self,
        store: Store,
        *,
        informer: Any = None,
        base_url: str = "",
        url_template: str = "",
    ) -> None:
        self._store = store
        self._informer = informer
        # how browsers reach the API (SANDBOX_PUBLIC_URL): the proxy's URLs; empty:
        # answers carry the path alone
        self.base_url = base_url
        # where the proxy reaches a port ({namespace}, {port}); the port's Service
        self._url_template = url_template
        self._http: httpx.AsyncClient | None = None
        self._seen: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
        self._woken: dict[tuple[str, str], float] = {}  # when a wake was last asked
        self._tasks: set[asyncio.Task[None]] = set()
        # the proxy's use of each sandbox's previews, and when it was last written
        self.use = PreviewUse()
        self.use_interval = USE_INTERVAL
        self._reported: dict[tuple[str, str], float] = {}
        self._ticker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        for task in list(self._tasks):
            task.cancel()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def http(self) -> httpx.AsyncClient:
        """The proxy's client (one: a client's set-up costs tens of milliseconds)."""
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=PROXY_TIMEOUT, follow_redirects=False, trust_env=False
            )
        return self._http

    # ------------------------------------------------------------ views
    def _view(
        self, sandbox: Sandbox, wanted: Wanted, entry: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        seen = dict(entry) if entry is not None and entry.get("id") == wanted.id else {}
        path = preview_path(sandbox, wanted.port)
        out: dict[str, Any] = {
            "sandbox": sandbox.name,
            "port": wanted.port,
            "command": wanted.command,
            "public": wanted.public,
            "status": seen.get("status") or STARTING,
            "url": f"{self.base_url.rstrip('/')}{path}" if self.base_url else path,
            "path": path,
            "output": str(seen.get("output") or ""),
        }
        if wanted.public and seen.get("url"):
            out["publicUrl"] = seen["url"]
        if out["status"] == EXITED:
            out["exitCode"] = seen.get("exitCode")
        if seen.get("message"):  # why it was refused, or a listening one's warning
            out["message"] = str(seen["message"])
        return out

    def list_previews(self, sandbox: Sandbox) -> list[dict[str, Any]]:
        try:
            wanted = _wanted(sandbox)
        except Conflict:
            return []
        entries = status_entries(sandbox)
        return [self._view(sandbox, w, entries.get(w.port)) for w in wanted]

    def changed_ports(self, sandbox: Sandbox, *, deleted: bool = False) -> list[int]:
        """The ports whose view changed since the last object of this sandbox seen here
        (the live resources announce them). A running preview's new output alone is no
        change: embedded mode announces a start, a stop and an exit, never output, and
        the operator rewrites a chatty server's tail every few seconds (the resource's
        next read shows it)."""
        key = (sandbox.namespace, sandbox.name)
        before = self._seen.pop(key, {})
        if deleted:
            self.use.forget(*key)
            self._reported.pop(key, None)
        now = {} if deleted else {v["port"]: _announced(v) for v in self.list_previews(sandbox)}
        if now:
            self._seen[key] = now
        return sorted(p for p in before.keys() | now.keys() if before.get(p) != now.get(p))

    # ------------------------------------------------------------ the tools
    async def start_preview(
        self,
        sandbox: Sandbox,
        port: Any,
        command: Any,
        *,
        wait: Any = 10.0,
        public: Any = False,
    ) -> dict[str, Any]:
        port, command, seconds = check_start(port, command, wait)
        if not isinstance(public, bool):
            raise Invalid("public must be true or false", code="invalid-public")
        started = Wanted(port, command, public, secrets.token_hex(8))

        def change(current: Sandbox, wanted: list[Wanted]) -> list[Wanted]:
            entries = status_entries(current)

            def live(w: Wanted) -> bool:
                entry = entries.get(w.port) or {}
                return entry.get("id") != w.id or entry.get("status") not in (EXITED, REFUSED)

            existing = next((w for w in wanted if w.port == port), None)
            if existing is not None and live(existing):
                raise Conflict(
                    f"port {port} of sandbox {current.name!r} already has a preview "
                    f"({existing.command!r}); stop it first",
                    code="preview-exists",
                )
            others = [w for w in wanted if w.port != port]
            if len(others) >= MAX_PREVIEWS or sum(live(w) for w in others) >= MAX_PREVIEWS:
                raise QuotaExceeded(
                    f"sandbox {current.name!r} already has {MAX_PREVIEWS} previews (the "
                    "limit); stop one first",
                    code="preview-limit",
                )
            return [*others, started]

        current = await self._write(sandbox, change)
        log.info("preview.requested", sandbox=sandbox.name, namespace=sandbox.namespace, port=port)
        current = await self._wait(current, started, seconds)
        return self._view(current, started, status_entries(current).get(port))

    async def stop_preview(self, sandbox: Sandbox, port: Any) -> dict[str, Any]:
        port = check_port(port)
        last: dict[str, Any] = {}

        def change(current: Sandbox, wanted: list[Wanted]) -> list[Wanted]:
            found = next((w for w in wanted if w.port == port), None)
            if found is None:
                raise NotFound(
                    f"sandbox {current.name!r} has no preview on port {port}",
                    code="preview-not-found",
                )
            last.update(self._view(current, found, status_entries(current).get(port)))
            return [w for w in wanted if w.port != port]

        await self._write(sandbox, change)
        log.info("preview.stop_requested", sandbox=sandbox.name, namespace=sandbox.namespace)
        return {**last, "status": "stopped"}

    async def _write(self, sandbox: Sandbox, change: Any) -> Sandbox:
        """Apply ``change`` to the freshly read annotation and write it with the
        resourceVersion it was read at; a conflict reads and tries again."""
        for _ in range(WRITE_ATTEMPTS):
            current = await self._store.get(sandbox.namespace, sandbox.name)
            if current.metadata.uid != sandbox.metadata.uid or current.deleting:
                raise Conflict(
                    f"sandbox {sandbox.name!r} is being deleted", code="sandbox-deleting"
                )
            wanted = change(current, _wanted(current))
            annotations = dict(current.metadata.annotations)
            if wanted:
                annotations[ANNOTATION] = encode_wanted(wanted)
            else:
                annotations.pop(ANNOTATION, None)
            try:
                written = await self._store.update(current.with_meta(annotations=annotations))
            except Conflict:
                continue
            return written if written is not None else current
        raise Conflict(
            f"sandbox {sandbox.name!r} kept changing while its previews were written; retry",
            code="sandbox-busy",
        )

    async def _wait(self, sandbox: Sandbox, started: Wanted, seconds: float) -> Sandbox:
        """The sandbox once its entry for ``started`` left ``starting`` (or as it is when
        ``seconds`` ran out)."""

        def settled(candidate: Sandbox) -> bool:
            entry = status_entries(candidate).get(started.port) or {}
            return entry.get("id") == started.id and entry.get("status") not in (None, STARTING)

        deadline = time.monotonic() + seconds
        informer = self._informer
        if informer is not None and informer.live:
            key = (sandbox.namespace, sandbox.name)
            sub = informer.subscribe(lambda s: (s.namespace, s.name) == key)
            try:
                current = next(
                    (s for s in informer.in_namespace(sandbox.namespace) if s.name == sandbox.name),
                    sandbox,
                )
                while not settled(current):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    item = await sub.next(timeout=remaining)
                    if item is None or not hasattr(item, "object"):
                        break  # timed out, or the stream ended
                    current = item.object
                return current
            finally:
                informer.unsubscribe(sub)
        current = sandbox
        while not settled(current) and time.monotonic() < deadline:
            await asyncio.sleep(POLL_SECONDS)  # no informer: the store, read again
            current = await self._store.get(sandbox.namespace, sandbox.name)
        return current

    # ------------------------------------------------------------ the proxy
    def upstream(self, sandbox: Sandbox, port: int) -> str:
        """The host the proxy forwards ``port`` of ``sandbox`` to (the port's Service),
        once the operator reports it listening."""
        wanted = next((w for w in self._wanted_or_none(sandbox) if w.port == port), None)
        if wanted is None:
            raise NotFound(
                f"sandbox {sandbox.name!r} has no preview on port {port}",
                code="preview-not-found",
            )
        if sandbox.status.phase == "Suspended":
            self._wake(sandbox)
            raise PreviewUnavailable(
                f"sandbox {sandbox.name!r} was suspended while idle and is being woken; "
                "its previews start again with it",
                code="preview-starting",
            )
        view = self._view(sandbox, wanted, status_entries(sandbox).get(port))
        if view["status"] in (EXITED, REFUSED):
            raise PreviewUnavailable(
                f"the preview on port {port} {view['status']}"
                + (f" with code {view.get('exitCode')}" if view["status"] == EXITED else ""),
                code="preview-exited",
            )
        if view["status"] != LISTENING:
            raise PreviewUnavailable(
                f"the preview on port {port} is not listening yet", code="preview-starting"
            )
        namespace = str(sandbox.status.extra.get("workspaceNamespace") or "")
        template = self._url_template
        url = template.format(namespace=namespace, port=port) if template else ""
        return urlsplit(url or upstream_url(namespace, port)).hostname or ""

    def _wake(self, sandbox: Sandbox) -> None:
        """Ask the operator to wake ``sandbox`` (the annotation an attach sets), at most
        every ``WAKE_EVERY`` seconds, without holding the request that asked."""
        key = (sandbox.namespace, sandbox.name)
        now = time.monotonic()
        if now - self._woken.get(key, -WAKE_EVERY) < WAKE_EVERY:
            return
        self._woken[key] = now
        task = asyncio.get_running_loop().create_task(self._write_wake(sandbox))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write_wake(self, sandbox: Sandbox) -> None:
        for _ in range(WRITE_ATTEMPTS):
            try:
                current = await self._store.get(sandbox.namespace, sandbox.name)
                annotations = {
                    **current.metadata.annotations,
                    ANNOTATION_WAKE: format_time(utcnow()),
                }
                await self._store.update(current.with_meta(annotations=annotations))
            except Conflict:
                continue
            except Exception as exc:  # the next request asks again
                log.info("preview.wake_failed", sandbox=sandbox.name, error=type(exc).__name__)
                self._woken.pop((sandbox.namespace, sandbox.name), None)
                return
            log.info("preview.wake_requested", sandbox=sandbox.name, namespace=sandbox.namespace)
            return

    # ------------------------------------------------------------ use (activity)
    def used(self, namespace: str, name: str) -> None:
        """The proxy served a request of the sandbox's previews: recorded, and written
        onto the Sandbox when the last write is ``use_interval`` old."""
        self.use.used(namespace, name)
        self._report(namespace, name)

    @contextlib.contextmanager
    def holding(self, namespace: str, name: str) -> Iterator[None]:
        """A WebSocket open to one of the sandbox's previews: use, written every
        interval while it is open."""
        with self.use.holding(namespace, name):
            self._report(namespace, name)
            if self._ticker is None or self._ticker.done():
                self._ticker = asyncio.get_running_loop().create_task(self._tick())
            yield
        self._report(namespace, name)

    def last_used(self, namespace: str, name: str) -> datetime | None:
        return self.use.last(namespace, name)

    async def _tick(self) -> None:
        """Every interval while a preview WebSocket is open: its sandbox is in use."""
        while self.use.held():
            await asyncio.sleep(max(self.use_interval / 2, 0.05))
            for namespace, name in self.use.held():
                self._report(namespace, name)

    def _report(self, namespace: str, name: str) -> None:
        """Write the use onto the Sandbox unless it was written less than
        ``use_interval`` ago by this replica (a dict lookup per request otherwise)."""
        key = (namespace, name)
        now = time.monotonic()
        if now - self._reported.get(key, -self.use_interval) < self.use_interval:
            return
        at = self.use.last(namespace, name)
        if at is None:
            return
        self._reported[key] = now
        task = asyncio.get_running_loop().create_task(self._write_used(namespace, name, at))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write_used(self, namespace: str, name: str, at: datetime) -> None:
        stamp = format_time(at)
        for _ in range(WRITE_ATTEMPTS):
            try:
                current = await self._store.get(namespace, name)
                if current.deleting:
                    return
                stored = parse_time(current.metadata.annotations.get(ANNOTATION_USED))
                if stored is not None and (at - stored).total_seconds() < self.use_interval:
                    return  # as recent as this replica would write (another one did)
                annotations = {**current.metadata.annotations, ANNOTATION_USED: stamp}
                await self._store.update(current.with_meta(annotations=annotations))
            except Conflict:
                continue
            except NotFound:
                return
            except Exception as exc:  # the next use asks again
                log.info("preview.use_write_failed", sandbox=name, error=type(exc).__name__)
                self._reported.pop((namespace, name), None)
                return
            log.debug("preview.use_written", sandbox=name, namespace=namespace, at=stamp)
            return
        self._reported.pop((namespace, name), None)  # kept changing: the next use retries

    def instance(self, sandbox: Sandbox, port: int) -> str:
        """The id of the current run of ``port`` (a new ``preview.start`` makes a new
        one): what the proxy binds a preview address to. ``NotFound`` without one."""
        wanted = next((w for w in self._wanted_or_none(sandbox) if w.port == port), None)
        if wanted is None:
            raise NotFound(
                f"sandbox {sandbox.name!r} has no preview on port {port}",
                code="preview-not-found",
            )
        return wanted.id

    @staticmethod
    def _wanted_or_none(sandbox: Sandbox) -> list[Wanted]:
        try:
            return _wanted(sandbox)
        except Conflict:
            return []


__all__ = ["KubePreviews", "PreviewBackend"]
