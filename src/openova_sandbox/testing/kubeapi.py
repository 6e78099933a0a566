"""A fake Kubernetes API server: a Starlette app on a real socket, for tests.

Why a fake server instead of mocking a client: the operator and the kube store talk
HTTP through real client libraries (lightkube, kopf/aiohttp), so the only honest seam is
the wire. This app speaks enough of the API (discovery, CRUD, status subresource,
merge/JSON patch, watch, finalizers, cascades, ``Status`` errors) for those clients to
run unmodified, and lets a test break it on purpose (``inject``). Its limits are listed
in ``docs/kubernetes.md``.

Usage::

    with run_fake_kube(crds=[CRD_PATH]) as kube:
        kube.url, kube.kubeconfig_path
        kube.inject(method="GET", path=r"/apis/sandbox\\.openova\\.io/.*", status=500)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import uvicorn
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .kubeapi_controllers import run_controllers, settle
from .kubeapi_patch import PatchError, json_patch, merge_patch
from .kubeapi_rbac import RBAC, User, escalation, forbidden_message
from .kubeapi_rbac import allowed as rbac_allowed
from .kubeapi_resources import JSON, ResourceType, api_group, api_resource_list
from .kubeapi_selectors import SelectorError, field_selector, label_selector
from .kubeapi_storage import ApiError, Storage, invalid, status_body

T = TypeVar("T")

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    410: "Gone",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


@dataclass
class Fault:
    """Break the next ``times`` requests matching ``method`` and ``path`` (a regex,
    searched in the URL path): answer ``status`` with a Status body, or, when ``hang``
    is set, sleep that many seconds first (a client timeout fires before the answer)."""

    method: str | None
    path: re.Pattern[str]
    status: int = 500
    hang: float = 0.0
    times: int = 1
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and bool(self.path.search(path))


def _json(data: Any, status: int = 200) -> Response:
    return JSONResponse(data, status_code=status)


def _error(exc: ApiError) -> Response:
    return _json(exc.status(), exc.code)


@dataclass(frozen=True)
class Target:
    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str


def kube_verb(method: str, t: Target, watch: str | None) -> str:
    """The Kubernetes verb of a request: get, list, watch, create, update, patch, delete."""
    if method == "GET":
        if t.name is not None:
            return "get"
        return "watch" if watch in ("true", "1") else "list"
    return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(
        method, method.lower()
    )


class FakeKubeApp:
    """The ASGI app plus its state; handlers run on the server's event loop."""

    def __init__(self, *, history: int = 10_000, without: frozenset[str] = frozenset()) -> None:
        self.history = history
        self.without = without
        # tokens whose requests RBAC authorizes (kubeapi_rbac.py); others are admins
        self.users: dict[str, User] = {}
        # what RBAC refused: (method, path, message)
        self.forbidden: list[tuple[str, str, str]] = []
        # pods' logs (FakeKube.set_pod_log): (namespace, pod, container) → text
        self.pod_logs: dict[tuple[str, str, str], str] = {}
        self.storage: Storage | None = None
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str]] = []
        # (Kubernetes verb, resource plural) of every request that reached a resource
        self.calls: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._controllers: asyncio.Task[None] | None = None
        self.app = Starlette(
            routes=[
                Route(
                    "/{path:path}", self.handle, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]
                )
            ],
            lifespan=self._lifespan,
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        self.storage = Storage(history=self.history, without=self.without)
        self._controllers = asyncio.create_task(run_controllers(self.storage))
        try:
            yield
        finally:
            await self.storage.close()
            self._controllers.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._controllers

    @property
    def state(self) -> Storage:
        if self.storage is None:
            raise RuntimeError("the fake API server is not running")
        return self.storage

    def add_fault(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.hits += 1
                    if fault.hits >= fault.times:
                        self.faults.remove(fault)
                    return fault
        return None

    # ----- routing --------------------------------------------------------------------
    async def handle(self, request: Request) -> Response:
        path = "/" + request.path_params["path"]
        with self._lock:
            self.requests.append((request.method, path))
        fault = self._take_fault(request.method, path)
        if fault is not None:
            if fault.hang:
                await asyncio.sleep(fault.hang)
            reason = _REASONS.get(fault.status, "InternalError")
            return _json(
                status_body(fault.status, reason, f"injected fault: {reason}", None), fault.status
            )
        try:
            return await self._dispatch(request, path)
        except ApiError as exc:
            return _error(exc)
        except (SelectorError, json.JSONDecodeError, yaml.YAMLError) as exc:
            return _error(ApiError(400, "BadRequest", str(exc)))
        except PatchError as exc:
            return _error(ApiError(422, "Invalid", str(exc)))

    async def _dispatch(self, request: Request, path: str) -> Response:
        state = self.state
        segs = [s for s in path.split("/") if s]
        if segs == ["version"]:
            return _json(
                {
                    "major": "1",
                    "minor": "32",
                    "gitVersion": "v1.32.0-openova-fake",
                    "platform": "linux/amd64",
                }
            )
        if segs == ["healthz"] or segs == ["readyz"] or segs == ["livez"]:
            return Response("ok", media_type="text/plain")
        if segs == ["api"]:
            return _json(
                {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
            )
        if segs == ["apis"]:
            groups = [api_group(g, v) for g, v in sorted(state.groups().items()) if g]
            return _json({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        if segs[:2] == ["api", "v1"]:
            api_version, rest = "v1", segs[2:]
        elif len(segs) >= 3 and segs[0] == "apis":
            api_version, rest = f"{segs[1]}/{segs[2]}", segs[3:]
        elif len(segs) == 2 and segs[0] == "apis":
            versions = state.groups().get(segs[1])
            if not versions:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return _json(api_group(segs[1], versions))
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            types = [rt for rt in state.types.values() if rt.api_version == api_version]
            if not types:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return _json(api_resource_list(api_version, types))
        target = self._target(api_version, rest)
        return await self._verb(request, target)

    def _target(self, api_version: str, rest: list[str]) -> Target:
        state = self.state
        missing = ApiError(404, "NotFound", "the server could not find the requested resource")
        if len(rest) >= 3 and rest[0] == "namespaces":
            rt = state.lookup(api_version, rest[2])
            if rt is not None and rt.namespaced and len(rest) <= 5:
                return Target(
                    rt,
                    rest[1],
                    rest[3] if len(rest) > 3 else None,
                    rest[4] if len(rest) > 4 else "",
                )
        rt = state.lookup(api_version, rest[0])
        if rt is None or len(rest) > 3:
            raise missing
        if len(rest) == 1:
            return Target(rt, None, None, "")
        if rt.namespaced:
            raise missing
        return Target(rt, None, rest[1], rest[2] if len(rest) > 2 else "")

    async def _authorize(self, request: Request, t: Target) -> None:
        header = request.headers.get("authorization", "")
        user = self.users.get(header.removeprefix("Bearer ").strip()) if header else None
        if user is None:
            return
        method = request.method
        verb = kube_verb(method, t, request.query_params.get("watch"))
        resource = t.rt.plural + (f"/{t.subresource}" if t.subresource else "")
        objects = self.state.objects
        refused = ""
        if not rbac_allowed(
            objects,
            user,
            verb=verb,
            group=t.rt.group,
            resource=resource,
            namespace=t.namespace,
            name=t.name or "",
        ):
            refused = forbidden_message(user, verb, t.rt.group, resource, t.namespace, t.name or "")
        elif (
            t.rt.group == RBAC
            and t.rt.plural in ("rolebindings", "clusterrolebindings")
            and method in ("POST", "PUT")
        ):
            body = json.loads(await request.body() or b"{}")
            why = escalation(objects, user, body, t.namespace)
            if why:
                name = (body.get("metadata") or {}).get("name", "")
                refused = f'{t.rt.plural}.{RBAC} "{name}" is forbidden: {why}'
        if refused:
            with self._lock:
                self.forbidden.append((method, request.url.path, refused))
            raise ApiError(403, "Forbidden", refused)

    async def _verb(self, request: Request, t: Target) -> Response:
        with self._lock:
            self.calls.append(
                (kube_verb(request.method, t, request.query_params.get("watch")), t.rt.plural)
            )
        await self._authorize(request, t)
        state = self.state
        if t.subresource == "log" and t.rt.plural == "pods" and request.method == "GET":
            return self._pod_log(t, request.query_params)
        if t.subresource not in ("", "status", "scale", "finalize"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if t.subresource == "status" and not t.rt.status_subresource:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        query = request.query_params
        method = request.method
        ns = t.namespace or ""
        if t.name is None:
            if method == "GET":
                labels = label_selector(query.get("labelSelector"))
                fields = field_selector(query.get("fieldSelector"))
                if query.get("watch") in ("true", "1"):
                    return self._watch(t, query, labels, fields)
                return _json(state.list(t.rt, t.namespace, labels=labels, fields=fields))
            if method == "POST" and (t.namespace is not None or not t.rt.namespaced):
                created = await state.create(t.rt, ns, await self._body(request))
                return _json(created, 201)
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported here")
        if method == "GET":
            return _json(state.get(t.rt, ns, t.name))
        if method == "PUT":
            body = await self._body(request)
            result = await state.replace(t.rt, ns, t.name, body, subresource=t.subresource)
            return _json(result)
        if method == "PATCH":
            return _json(await self._patch(request, t))
        if method == "DELETE":
            raw = await request.body()
            options = json.loads(raw) if raw.strip() else {}
            if query.get("propagationPolicy"):
                options["propagationPolicy"] = query["propagationPolicy"]
            return _json(await state.delete(t.rt, ns, t.name, options=options))
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported here")

    def _pod_log(self, t: Target, query: Any) -> Response:
        """``pods/log``: the text set for the pod's container, its last ``tailLines``
        lines; the real server's 400s for a missing or unknown container. Not modelled:
        ``follow``, ``sinceSeconds``, ``limitBytes``, ``previous``, timestamps."""
        pod = self.state.get(t.rt, t.namespace or "", t.name or "")
        names = [c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or []]
        container = query.get("container") or ""
        if not container:
            if len(names) != 1:
                raise ApiError(
                    400,
                    "BadRequest",
                    f"a container name must be specified for pod {t.name}, choose one of: "
                    f"[{' '.join(names)}]",
                )
            container = names[0]
        elif container not in names:
            raise ApiError(
                400, "BadRequest", f"container {container} is not valid for pod {t.name}"
            )
        with self._lock:
            text = self.pod_logs.get((t.namespace or "", t.name or "", container), "")
        tail = query.get("tailLines")
        if tail is not None and tail.isdigit():
            lines = text.splitlines(keepends=True)
            text = "".join(lines[len(lines) - int(tail) :] if int(tail) else [])
        return Response(text, media_type="text/plain")

    async def _body(self, request: Request) -> Any:
        raw = await request.body()
        if "yaml" in request.headers.get("content-type", ""):
            return yaml.safe_load(raw)
        return json.loads(raw or b"null")

    async def _patch(self, request: Request, t: Target) -> JSON:
        state = self.state
        assert t.name is not None
        ctype = request.headers.get("content-type", "").split(";")[0].strip()
        # the body first: with no await between reading the object and writing it, a
        # patch without a resourceVersion never conflicts with a concurrent write (the
        # API server retries such a patch itself)
        patch = await self._body(request)
        current = state.get(t.rt, t.namespace or "", t.name)
        if ctype == "application/json-patch+json":
            updated = json_patch(current, patch)
        elif ctype == "application/merge-patch+json" or (
            ctype == "application/strategic-merge-patch+json" and not t.rt.custom
        ):
            if not isinstance(patch, dict):
                raise ApiError(400, "BadRequest", "a merge patch must be a JSON object")
            updated = merge_patch(current, patch)
        else:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types "
                f"include: application/json-patch+json, application/merge-patch+json"
                f"{'' if t.rt.custom else ', application/strategic-merge-patch+json'}",
            )
        if not isinstance(updated, dict) or not isinstance(updated.get("metadata"), dict):
            raise invalid(t.rt, t.name, ["metadata: Required value"])
        wanted_rv = None
        if isinstance(patch, dict):
            wanted_rv = (patch.get("metadata") or {}).get("resourceVersion")
        if not wanted_rv:
            updated["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        return await state.replace(
            t.rt, t.namespace or "", t.name, updated, subresource=t.subresource, require_rv=False
        )

    def _watch(
        self,
        t: Target,
        query: Any,
        labels: Callable[[Any], bool],
        fields: Callable[[Any], bool],
    ) -> Response:
        state = self.state
        timeout = float(query.get("timeoutSeconds") or 0) or None
        since = query.get("resourceVersion")

        async def lines() -> AsyncIterator[bytes]:
            stream = state.watch(t.rt, t.namespace, since=since, labels=labels, fields=fields)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout if timeout else None
            try:
                while True:
                    remaining = deadline - loop.time() if deadline else None
                    if remaining is not None and remaining <= 0:
                        return
                    try:
                        event = await asyncio.wait_for(anext(stream), remaining)
                    except (StopAsyncIteration, TimeoutError):
                        return
                    yield (json.dumps(event) + "\n").encode()
            except ApiError as exc:
                yield (json.dumps({"type": "ERROR", "object": exc.status()}) + "\n").encode()
            finally:
                await stream.aclose()

        return StreamingResponse(lines(), media_type="application/json")


@dataclass
class FakeKube:
    """A running fake API server (see ``run_fake_kube``)."""

    url: str
    kubeconfig_path: Path
    fake: FakeKubeApp
    loop: asyncio.AbstractEventLoop

    def call(self, fn: Callable[[Storage], Coroutine[Any, Any, T]]) -> T:
        """Run ``fn(storage)`` on the server's loop and wait for it (test setup, checks)."""
        return asyncio.run_coroutine_threadsafe(fn(self.fake.state), self.loop).result(timeout=10)

    def inject(
        self,
        *,
        method: str | None = None,
        path: str = ".*",
        status: int = 500,
        hang: float = 0.0,
        times: int = 1,
    ) -> Fault:
        fault = Fault(method.upper() if method else None, re.compile(path), status, hang, times)
        self.fake.add_fault(fault)
        return fault

    def set_pod_log(self, namespace: str, pod: str, container: str, text: str) -> None:
        """What ``pods/log`` answers for ``container`` of ``pod`` (the pod must exist)."""
        with self.fake._lock:
            self.fake.pod_logs[(namespace, pod, container)] = text

    def add_user(self, token: str, user: User) -> Path:
        """Authorize requests bearing ``token`` as ``user`` with the fake's RBAC objects
        (kubeapi_rbac.py); answers a kubeconfig file that uses that token."""
        self.fake.users[token] = user
        path = self.kubeconfig_path.with_name(f"kubeconfig-{len(self.fake.users)}")
        path.write_text(kubeconfig(self.url).replace("fake-token", token))
        return path

    @property
    def forbidden(self) -> list[tuple[str, str, str]]:
        """What RBAC refused so far: (method, path, message)."""
        with self.fake._lock:
            return list(self.fake.forbidden)

    def clear_faults(self) -> None:
        with self.fake._lock:
            self.fake.faults.clear()

    def compact(self) -> None:
        """Drop watch history: watches from older resourceVersions now get 410 Expired."""

        async def run(state: Storage) -> None:
            state.compact()

        self.call(run)

    def set_history(self, events: int) -> None:
        """Keep only the last ``events`` changes for watches (older ones get 410)."""

        async def run(state: Storage) -> None:
            state.set_history(events)

        self.call(run)

    @property
    def requests(self) -> list[tuple[str, str]]:
        with self.fake._lock:
            return list(self.fake.requests)

    @property
    def calls(self) -> list[tuple[str, str]]:
        """(verb, resource plural) of every request that reached a resource, in order:
        what a client asked by Kubernetes verb (``get``/``list``/``watch``/``create``/
        ``update``/``patch``/``delete``); faults injected before that are not in it."""
        with self.fake._lock:
            return list(self.fake.calls)

    def apply(self, obj: JSON) -> JSON:
        """Create ``obj`` directly (no HTTP), e.g. a CRD or a namespace for a test."""

        async def run(state: Storage) -> JSON:
            api_version = obj["apiVersion"]
            rt = next(
                (
                    r
                    for r in state.types.values()
                    if r.api_version == api_version and r.kind == obj["kind"]
                ),
                None,
            )
            if rt is None:
                raise ApiError(404, "NotFound", f"no kind {obj['kind']} in {api_version}")
            ns = (obj.get("metadata") or {}).get("namespace", "") if rt.namespaced else ""
            return await state.create(rt, ns, obj)

        return self.call(run)

    def set_ready_replicas(self, namespace: str, name: str, ready: int) -> JSON:
        """Play the StatefulSet controller: report ``ready`` pods ready."""

        async def run(state: Storage) -> JSON:
            rt = state.lookup("apps/v1", "statefulsets")
            assert rt is not None
            current = state.get(rt, namespace, name)
            status = dict(current.get("status") or {})
            status.update(
                replicas=(current.get("spec") or {}).get("replicas", 1),
                readyReplicas=ready,
                availableReplicas=ready,
                observedGeneration=current["metadata"].get("generation", 1),
            )
            return await state.replace(
                rt, namespace, name, {**current, "status": status}, subresource="status"
            )

        return self.call(run)

    def settle(self) -> None:
        """Run garbage collection and namespace termination to completion now."""

        async def run(state: Storage) -> None:
            await settle(state)

        self.call(run)


def kubeconfig(url: str, *, namespace: str = "default") -> str:
    text: str = yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": url}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [
                {
                    "name": "fake",
                    "context": {"cluster": "fake", "user": "fake", "namespace": namespace},
                }
            ],
            "current-context": "fake",
        }
    )
    return text


@contextlib.contextmanager
def run_fake_kube(
    *,
    crds: Sequence[Path | JSON] = (),
    namespaces: Sequence[str] = ("default",),
    history: int = 10_000,
    gateway_api: bool = True,
) -> Iterator[FakeKube]:
    """Run the fake API server on 127.0.0.1 (a free port) in its own thread.
    ``gateway_api`` False: a cluster without the Gateway API (no HTTPRoute kind)."""
    without = frozenset() if gateway_api else frozenset({"gateway.networking.k8s.io"})
    fake = FakeKubeApp(history=history, without=without)
    config = uvicorn.Config(
        fake.app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=2,
        access_log=False,
    )
    server = uvicorn.Server(config)
    loop_box: list[asyncio.AbstractEventLoop] = []

    def serve() -> None:
        loop = asyncio.new_event_loop()
        loop_box.append(loop)
        try:
            loop.run_until_complete(server.serve())
        finally:
            loop.close()

    thread = threading.Thread(target=serve, name="fake-kube-apiserver", daemon=True)
    thread.start()
    for _ in range(1000):
        if server.started or not thread.is_alive():
            break
        threading.Event().wait(0.01)
    if not server.started:
        raise RuntimeError("the fake API server did not start")
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="fake-kube-") as tmp:
        path = Path(tmp) / "kubeconfig"
        path.write_text(kubeconfig(url))
        kube = FakeKube(url=url, kubeconfig_path=path, fake=fake, loop=loop_box[0])
        try:
            for ns in namespaces:
                kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
            for crd in crds:
                kube.apply(yaml.safe_load(crd.read_text()) if isinstance(crd, Path) else crd)
            yield kube
        finally:

            async def stop(state: Storage) -> None:
                await state.close()

            with contextlib.suppress(Exception):
                kube.call(stop)
            server.should_exit = True
            thread.join(timeout=10)
