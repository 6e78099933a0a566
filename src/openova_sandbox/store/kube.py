"""The Kubernetes store: Sandboxes as custom resources, through lightkube's async client.

The API server already keeps the Store rules (resourceVersion, generation, status
subresource, finalizers, watch), so this adapter mostly translates: third-party errors
become the one error tree here and nowhere else (sessions-api.md, "503"):

- no configuration (not in a cluster, no ``KUBECONFIG``), or a cluster that cannot be
  reached → ``BackendUnavailable("sandbox-cluster-unavailable")``;
- the Sandbox kind unknown to the server → ``BackendUnavailable("sandbox-crd-not-installed")``
  (``list`` answers ``[]`` instead, as the spec wants);
- timeouts, refused connections, 429 and 5xx → ``BackendUnavailable
  ("sandbox-backend-unavailable")`` after one retry on a fresh connection, all within a
  5 s budget per call. Only requests that cannot have taken effect twice are retried:
  any request that failed to connect, GETs after a timeout, and non-creates after a 5xx;
- 401/403 → ``BackendForbidden`` with the server's message (a visible 500, not a 503).

Two details the API server does not give for free:
- *No-op status writes*: a status that decodes equal to the stored one is not written
  (``{"sessions": 0}`` and no status at all are the same value), which costs one GET.
- *Newest first*: ``creationTimestamp`` has whole seconds, so objects created within one
  second would tie. Create stamps an annotation with the client's nanosecond time, used
  only to order ties and hidden from callers; ``update`` copies the stored value back
  (one extra GET) so a caller's object, which never shows it, cannot erase it.
- ``watch("0")`` means "all retained history" here (the contract's meaning), so it asks
  the server for everything after resourceVersion 1: a real cluster compacts history
  within minutes and answers 410, which becomes ``Conflict("resource-version-too-old")``.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import errno
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar, cast

import httpx2
import structlog
from lightkube import AsyncClient, ConfigError, KubeConfig
from lightkube.core.exceptions import ApiError
from lightkube.core.generic_client import ALL_NS
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace as NamespaceResource

from ..domain.errors import (
    AlreadyExists,
    BackendForbidden,
    BackendUnavailable,
    Conflict,
    Invalid,
    NotFound,
    SandboxError,
)
from ..domain.model import API_GROUP, KIND, Sandbox
from .base import EventType, WatchEvent
from .semantics import already_exists, check_key, not_found, parse_version, too_old

log = structlog.get_logger(__name__)

T = TypeVar("T")
JSON = dict[str, Any]

PLURAL = "sandboxes"
CRD_NAME = f"{PLURAL}.{API_GROUP}"
ORDER_ANNOTATION = "sandbox.openova.io/created-at-ns"
BUDGET_SECONDS = 5.0

SandboxResource = create_namespaced_resource(API_GROUP, "v1", KIND, PLURAL)
NAMESPACE_NOT_FOUND = "namespace-not-found"
# an org namespace made by the API (not a workspace: the operator's admission policy
# keeps it from deleting it, docs/kubernetes.md)
ORG_NAMESPACE_LABELS = {
    "app.kubernetes.io/managed-by": "openova-sandbox-api",
    "openova.io/org-namespace": "true",
}

CLUSTER_UNAVAILABLE = "sandbox-cluster-unavailable"
CRD_NOT_INSTALLED = "sandbox-crd-not-installed"
BACKEND_UNAVAILABLE = "sandbox-backend-unavailable"
CRD_MISSING_DETAIL = f"{CRD_NAME} CRD missing on this cluster"
BACKEND_DETAIL = "sandbox backend temporarily unavailable"


class _Transient(Exception):
    """A failure worth one retry on a fresh connection; carries the error to raise."""

    def __init__(self, error: SandboxError) -> None:
        super().__init__(error.detail)
        self.error = error


def _refused(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError) or (
            isinstance(seen, OSError) and seen.errno == errno.ECONNREFUSED
        ):
            return True
        if "refused" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _status(exc: ApiError) -> tuple[int, str, str, JSON]:
    status = exc.status
    details = status.details.to_dict() if status.details is not None else {}
    return int(status.code or 0), str(status.reason or ""), str(status.message or ""), details


_EVENT_TYPES: dict[str, EventType] = {
    "ADDED": "ADDED",
    "MODIFIED": "MODIFIED",
    "DELETED": "DELETED",
}


def _plain(obj: Any) -> JSON:
    """A lightkube generic object as a plain Kubernetes JSON dict."""
    return cast(JSON, obj.to_dict())


def _order_key(raw: Mapping[str, Any]) -> tuple[str, str]:
    meta = raw.get("metadata") or {}
    return (
        str(meta.get("creationTimestamp") or ""),
        str((meta.get("annotations") or {}).get(ORDER_ANNOTATION, "")).zfill(20),
    )


def _decode(raw: Mapping[str, Any]) -> Sandbox:
    doc = dict(raw)
    meta = dict(doc.get("metadata") or {})
    annotations = dict(meta.get("annotations") or {})
    if annotations.pop(ORDER_ANNOTATION, None) is not None:
        if annotations:
            meta["annotations"] = annotations
        else:
            meta.pop("annotations", None)
    doc["metadata"] = meta
    return Sandbox.from_dict(doc)


class KubeStore:
    """``Store`` over ``sandboxes.sandbox.openova.io`` (see ``store/base.py``)."""

    def __init__(
        self,
        *,
        config: KubeConfig | None = None,
        kubeconfig_path: str | None = None,
        budget: float = BUDGET_SECONDS,
        create_namespaces: bool = False,
    ) -> None:
        self._config = config
        # an org's first Sandbox creates its namespace (labelled as ours) instead of
        # failing with namespace-not-found (SANDBOX_KUBE_CREATE_ORG_NAMESPACES)
        self._create_namespaces = create_namespaces
        self._kubeconfig_path = kubeconfig_path
        self._budget = budget
        self._client: AsyncClient | None = None
        self._retired: list[AsyncClient] = []
        self._config_error = ""
        self._closed = asyncio.Event()
        self._started = False

    # ----- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        self._closed.clear()
        if self._config is None:
            try:
                self._config = (
                    KubeConfig.from_file(self._kubeconfig_path)
                    if self._kubeconfig_path
                    else KubeConfig.from_env()
                )
            except (ConfigError, OSError, ValueError) as exc:
                self._config_error = f"no Kubernetes configuration: {exc}"
                log.warning("kube_store_unconfigured", reason=str(exc))
                return
        self._client = self._new_client()

    async def close(self) -> None:
        self._closed.set()
        clients = [c for c in (self._client, *self._retired) if c is not None]
        self._client, self._retired = None, []
        self._started = False
        for client in clients:
            await client.close()

    def _new_client(self) -> AsyncClient:
        attempt = httpx2.Timeout(self._budget / 2)
        return AsyncClient(config=self._config, timeout=attempt, trust_env=False)

    def _current(self) -> AsyncClient:
        if self._client is None:
            raise BackendUnavailable(
                self._config_error or "the Kubernetes store is not started",
                code=CLUSTER_UNAVAILABLE,
            )
        return self._client

    def _refresh(self, stale: AsyncClient) -> AsyncClient:
        """A client on new connections; the stale one closes with the store (others may
        still be mid-request on it)."""
        if self._client is stale:
            self._retired.append(stale)
            self._client = self._new_client()
        return self._current()

    # ----- calls ----------------------------------------------------------------------
    async def _call(
        self,
        fn: Callable[[AsyncClient], Awaitable[T]],
        *,
        verb: str,
        key: tuple[str, str] | None = None,
    ) -> T:
        client = self._current()
        try:
            async with asyncio.timeout(self._budget):
                try:
                    return await self._attempt(fn, client, verb=verb, key=key)
                except _Transient as first:
                    log.warning("kube_store_retry", verb=verb, reason=first.error.detail)
                    client = self._refresh(client)
                    try:
                        return await self._attempt(fn, client, verb=verb, key=key)
                    except _Transient as second:
                        raise second.error from None
        except TimeoutError:
            raise BackendUnavailable(BACKEND_DETAIL, code=BACKEND_UNAVAILABLE) from None

    async def _attempt(
        self,
        fn: Callable[[AsyncClient], Awaitable[T]],
        client: AsyncClient,
        *,
        verb: str,
        key: tuple[str, str] | None,
    ) -> T:
        try:
            return await fn(client)
        except ApiError as exc:
            raise self._map_api_error(exc, verb=verb, key=key) from exc
        except httpx2.TimeoutException as exc:
            error = BackendUnavailable(BACKEND_DETAIL, code=BACKEND_UNAVAILABLE)
            if isinstance(exc, httpx2.ConnectTimeout) or verb == "get":
                raise _Transient(error) from exc
            raise error from exc
        except httpx2.ConnectError as exc:
            if _refused(exc):
                raise _Transient(
                    BackendUnavailable(BACKEND_DETAIL, code=BACKEND_UNAVAILABLE)
                ) from exc
            raise _Transient(
                BackendUnavailable(f"Kubernetes API unreachable: {exc}", code=CLUSTER_UNAVAILABLE)
            ) from exc
        except httpx2.HTTPError as exc:
            raise BackendUnavailable(BACKEND_DETAIL, code=BACKEND_UNAVAILABLE) from exc

    def _map_api_error(self, exc: ApiError, *, verb: str, key: tuple[str, str] | None) -> Exception:
        code, reason, message, details = _status(exc)
        namespace, name = key or ("", "")
        if code == 404:
            if details.get("kind") == "namespaces":
                return Invalid(
                    f'namespace "{namespace}" does not exist on this cluster',
                    code=NAMESPACE_NOT_FOUND,
                )
            if not details.get("name"):
                return BackendUnavailable(CRD_MISSING_DETAIL, code=CRD_NOT_INSTALLED)
            return not_found(namespace, name)
        if code == 409 and reason == "AlreadyExists":
            return already_exists(namespace, name)
        if code == 409:
            return Conflict(
                f'sandbox "{name}" in namespace "{namespace}" was modified; read it again and retry'
            )
        if code == 410:
            return Conflict(message, code="resource-version-too-old")
        if code in (401, 403):
            return BackendForbidden(f"Kubernetes API refused the request: {message}")
        if code in (400, 422):
            return Invalid(message, code="invalid-sandbox")
        error = BackendUnavailable(BACKEND_DETAIL, code=BACKEND_UNAVAILABLE)
        if code == 429 or code >= 500:
            return _Transient(error) if verb != "create" else error
        return error

    # ----- Store ----------------------------------------------------------------------
    async def ping(self) -> None:
        async def run(client: AsyncClient) -> None:
            async for _ in client.list(SandboxResource, namespace=ALL_NS, chunk_size=1):
                break

        await self._call(run, verb="get")

    async def create(self, sandbox: Sandbox) -> Sandbox:
        namespace, name = check_key(sandbox)
        body = Sandbox(metadata=sandbox.metadata, spec=sandbox.spec).to_dict()
        del body["status"]
        meta = body["metadata"]
        for field in (
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ):
            meta.pop(field, None)
        meta.setdefault("annotations", {})[ORDER_ANNOTATION] = str(time.time_ns())

        async def run(client: AsyncClient) -> Any:
            return await client.create(SandboxResource.from_dict(body))

        try:
            created = await self._call(run, verb="create", key=(namespace, name))
        except Invalid as exc:
            if exc.code != NAMESPACE_NOT_FOUND or not self._create_namespaces:
                raise
            await self._create_namespace(namespace)
            created = await self._call(run, verb="create", key=(namespace, name))
        return _decode(_plain(created))

    async def _create_namespace(self, namespace: str) -> None:
        """An org's namespace, made on its first Sandbox; one made meanwhile by someone
        else is as good."""
        labelled = NamespaceResource(
            metadata=ObjectMeta(name=namespace, labels=dict(ORG_NAMESPACE_LABELS))
        )

        async def run(client: AsyncClient) -> Any:
            return await client.create(labelled)

        try:
            await self._call(run, verb="create", key=("", namespace))
        except AlreadyExists:
            return
        log.info("org_namespace_created", namespace=namespace)

    async def _raw(self, namespace: str, name: str) -> JSON:
        async def run(client: AsyncClient) -> Any:
            return await client.get(SandboxResource, name, namespace=namespace)

        found = await self._call(run, verb="get", key=(namespace, name))
        return _plain(found)

    async def get(self, namespace: str, name: str) -> Sandbox:
        return _decode(await self._raw(namespace, name))

    async def list(
        self,
        namespace: str | None = None,
        *,
        labels: Mapping[str, str] | None = None,
    ) -> builtins.list[Sandbox]:
        async def run(client: AsyncClient) -> builtins.list[JSON]:
            items = client.list(
                SandboxResource,
                namespace=namespace or ALL_NS,
                labels=dict(labels) if labels else None,
            )
            return [_plain(item) async for item in items]

        try:
            raws = await self._call(run, verb="get")
        except BackendUnavailable as exc:
            if exc.code == CRD_NOT_INSTALLED:
                return []
            raise
        raws.sort(key=_order_key, reverse=True)
        return [_decode(raw) for raw in raws]

    async def update(self, sandbox: Sandbox) -> Sandbox | None:
        namespace, name = check_key(sandbox)
        if not sandbox.metadata.resource_version:
            raise Conflict(
                f'sandbox "{name}" in namespace "{namespace}" was modified: no resourceVersion '
                "given; read it again and retry"
            )
        stored = await self._raw(namespace, name)
        body = sandbox.to_dict()
        body.pop("status", None)
        order = ((stored.get("metadata") or {}).get("annotations") or {}).get(ORDER_ANNOTATION)
        if order is not None:
            body["metadata"].setdefault("annotations", {})[ORDER_ANNOTATION] = order

        async def run(client: AsyncClient) -> Any:
            return await client.replace(SandboxResource.from_dict(body))

        result = _plain(await self._call(run, verb="update", key=(namespace, name)))
        meta = result.get("metadata") or {}
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return None  # the last finalizer went: the server removed the object
        return _decode(result)

    async def update_status(self, sandbox: Sandbox) -> Sandbox:
        namespace, name = check_key(sandbox)
        if not sandbox.metadata.resource_version:
            raise Conflict(
                f'sandbox "{name}" in namespace "{namespace}" was modified: no resourceVersion '
                "given; read it again and retry"
            )
        stored = _decode(await self._raw(namespace, name))
        if stored.metadata.resource_version != sandbox.metadata.resource_version:
            raise Conflict(
                f'sandbox "{name}" in namespace "{namespace}" was modified; read it again and retry'
            )
        if stored.status == sandbox.status:
            # The same status in another spelling (``sessions: 0`` vs absent) is no
            # change: no write, no new resourceVersion, like any no-op write.
            return stored
        body = sandbox.to_dict()

        async def run(client: AsyncClient) -> Any:
            return await client.replace(
                SandboxResource.Status.from_dict(body), name, namespace=namespace
            )

        result = await self._call(run, verb="update", key=(namespace, name))
        return _decode(_plain(result))

    async def delete(self, namespace: str, name: str) -> Sandbox | None:
        async def run(client: AsyncClient) -> None:
            await client.delete(SandboxResource, name, namespace=namespace)

        await self._call(run, verb="delete", key=(namespace, name))
        try:
            after = await self._raw(namespace, name)
        except NotFound:
            return None
        if not (after.get("metadata") or {}).get("deletionTimestamp"):
            return None  # gone and already re-created by someone else
        return _decode(after)

    # ----- watch ----------------------------------------------------------------------
    async def watch(self, since: str | None = None) -> AsyncIterator[WatchEvent]:
        version = parse_version(since)
        if version is None:
            position, snapshot = await self._snapshot()
            for raw in snapshot:
                sandbox = _decode(raw)
                yield WatchEvent("ADDED", sandbox, sandbox.metadata.resource_version)
        else:
            position = str(max(version, 1))
        if self._closed.is_set():
            return  # closed while the consumer held the listing: the watch just ends
        client = self._current()
        stream = client.watch(SandboxResource, namespace=ALL_NS, resource_version=position)
        iterator = aiter(stream)
        closed = asyncio.ensure_future(self._closed.wait())
        step: asyncio.Future[Any] | None = None
        try:
            while True:
                step = asyncio.ensure_future(anext(iterator))
                done, _ = await asyncio.wait({step, closed}, return_when=asyncio.FIRST_COMPLETED)
                if step not in done or self._closed.is_set():
                    # The store closed (its event may be set before the waiter has run):
                    # the watch ends, whatever the step made of the client going away.
                    step.cancel()
                    with contextlib.suppress(BaseException):
                        await step  # let the stream unwind before closing it
                    return
                try:
                    kind, obj = step.result()
                except StopAsyncIteration:
                    return
                except ApiError as exc:
                    code = _status(exc)[0]
                    if code == 410:
                        raise too_old(version or 0, 0) from exc
                    raise self._map_api_error(exc, verb="watch", key=None) from exc
                except httpx2.HTTPError as exc:
                    raise BackendUnavailable(BACKEND_DETAIL, code=BACKEND_UNAVAILABLE) from exc
                event_type = _EVENT_TYPES.get(kind)
                if event_type is None:
                    continue  # BOOKMARK
                sandbox = _decode(_plain(obj))
                yield WatchEvent(event_type, sandbox, sandbox.metadata.resource_version)
        finally:
            closed.cancel()
            if step is not None and not step.done():
                # Cancelled while a step was reading the stream (the consumer was
                # cancelled: SIGTERM): that step still runs the stream's generator, and
                # closing it now would raise "aclose(): asynchronous generator is already
                # running" in place of the cancellation, which the informer would take
                # for a failure and re-list. The step ends first.
                step.cancel()
                with contextlib.suppress(BaseException):
                    await step
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _snapshot(self) -> tuple[str, builtins.list[JSON]]:
        async def run(client: AsyncClient) -> tuple[str, builtins.list[JSON]]:
            items = client.list(SandboxResource, namespace=ALL_NS)
            raws = [_plain(item) async for item in items]
            return items.resourceVersion, raws

        version, raws = await self._call(run, verb="get")
        raws.sort(key=lambda r: int((r.get("metadata") or {}).get("resourceVersion") or 0))
        return version, raws
