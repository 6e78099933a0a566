"""kopf glue around the pure reconcile: observe, decide, act. No rules live here.

Why ``kopf.on.event`` and not kopf's create/update/delete handlers: those keep kopf's own
finalizer and progress annotations on every Sandbox, while the spec names one finalizer
(``sandbox.openova.io/finalizer``) that our reconcile adds and releases itself. So kopf
is used for what it is best at (discovery, watching, reconnecting, per-object
serialisation) and every event, plus a timer when a plan asks to look again, runs the
same loop: read the Sandbox fresh, observe its workspace, ``reconcile``, execute.

Execution order follows the plan's contract: finalizer first, then status (so the chosen
workspace namespace is recorded before anything is created in it), then objects in
order, then deletions, then the finalizer release. A 409 anywhere means someone else
wrote first: the loop simply runs again on fresh state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import kopf
import structlog
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.core.resource_registry import resource_registry
from lightkube.generic_resource import create_namespaced_resource
from lightkube.types import PatchType

from ...domain.model import API_GROUP, FINALIZER, KIND, Sandbox, utcnow
from ..ports import McpTokenSource
from ..ports import TokenLedger as Ledger
from ..workqueue import WorkQueue
from .cache import (
    NAMESPACE_INDEX,
    SANDBOX_INDEX,
    Freshness,
    InformerCache,
    child_index,
    same_version,
    versions,
)
from .gateway_token import ensure_gateway_token, revoke_gateway_token
from .idle import IdleReport, ensure_probe_token, probe_idle
from .mcp_token import ensure_mcp_token
from .metrics import OperatorMetrics
from .names import sandbox_key, sandbox_label
from .pod_secret import read_secret
from .previews import act as act_on_previews
from .previews import fetch as fetch_previews
from .previews import wanted_or_shown as previews_wanted
from .reconcile import (
    KubeObserved,
    KubePlan,
    candidate_namespaces,
    choose_namespace,
    holder,
    reconcile,
    refused_status,
)
from .render import (
    ANNOTATION_HOLDER,
    GIT_SECRET,
    LABEL_MANAGED_BY,
    LABEL_SANDBOX,
    LABEL_SANDBOX_NAMESPACE,
    MANAGED_BY,
    ChildRef,
    RenderConfig,
    selector_labels,
)
from .render import labels as child_labels
from .share_grant_key import ensure_share_grant_key

log = structlog.get_logger(__name__)

JSON = dict[str, Any]
SandboxResource = create_namespaced_resource(API_GROUP, "v1", KIND, "sandboxes")
NamespaceResource: Any = resource_registry.load("v1", "Namespace")
PodResource: Any = resource_registry.load("v1", "Pod")

# kind -> (group, version, plural) of every namespaced child the renderer makes
CHILD_KINDS: dict[str, tuple[str, str, str]] = {
    "ResourceQuota": ("", "v1", "resourcequotas"),
    "ServiceAccount": ("", "v1", "serviceaccounts"),
    "RoleBinding": ("rbac.authorization.k8s.io", "v1", "rolebindings"),
    "PersistentVolumeClaim": ("", "v1", "persistentvolumeclaims"),
    "ConfigMap": ("", "v1", "configmaps"),
    "Service": ("", "v1", "services"),
    "StatefulSet": ("apps", "v1", "statefulsets"),
    "HTTPRoute": ("gateway.networking.k8s.io", "v1", "httproutes"),
    "NetworkPolicy": ("networking.k8s.io", "v1", "networkpolicies"),
    "Secret": ("", "v1", "secrets"),
}
# what the API server answers for an object it will never accept as rendered
PERMANENT_CODES = frozenset({400, 422})
# Claims are created once: their spec is immutable apart from growing, so never patched.
CREATE_ONLY = {"PersistentVolumeClaim"}


def _resource(kind: str) -> Any:
    """lightkube's class for ``kind``: its typed model for Kubernetes kinds, a generic
    one for the Gateway API (lightkube allows one class per kind)."""
    group, version, plural = CHILD_KINDS[kind]
    if kind == "HTTPRoute":
        return create_namespaced_resource(group, version, kind, plural)
    return resource_registry.load(f"{group}/{version}" if group else version, kind)


def cached_kinds(options: OperatorOptions) -> dict[str, tuple[str, str, str]]:
    """The child kinds kopf watches (by our label) and caches: all of them, routes
    only when they are rendered."""
    return {
        kind: gvp
        for kind, gvp in CHILD_KINDS.items()
        if kind != "HTTPRoute" or options.render.http_route
    }


def _managed(obj: Mapping[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(LABEL_MANAGED_BY) == MANAGED_BY)


def _child_selector(sandbox: Sandbox) -> dict[str, str]:
    """The labels every child of ``sandbox`` carries (besides ``managed-by``)."""
    return {LABEL_SANDBOX: sandbox_label(sandbox), LABEL_SANDBOX_NAMESPACE: sandbox.namespace}


def _plain(obj: Any) -> JSON:
    return cast(JSON, obj.to_dict())


def _code(exc: ApiError) -> int:
    return int(exc.status.code or 0)


@dataclass
class OperatorOptions:
    render: RenderConfig
    # upper bound for a plan's "look again in N seconds" (tests make it short)
    max_requeue: float = 60.0
    # first retry after a failed pass (API error, timeout); doubles up to max_requeue
    error_backoff: float = 1.0
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    clock: Callable[[], datetime] = utcnow
    # how to reach a sandbox's terminal server ({namespace}); empty: never probe /idle
    pty_url_template: str = ""
    # the model gateway's ledger: each sandbox's token Secret is issued from it and the
    # token revoked on deletion (gateway_token.py); None: no tokens
    ledger: Ledger | None = None
    # the grant secret each sandbox's share grant key is derived from
    # (share_grant_key.py); empty: no keys, share links refused in Kubernetes mode
    share_grant_secret: str = field(default="", repr=False)
    # signs each sandbox's MCP token (mcp_token.py); None: no tokens, no MCP in pods
    mcp_tokens: McpTokenSource | None = None
    # level-triggered (issue 13): every sandbox is looked at again at least this often,
    # whatever happened, so drift nobody was told about (an edited child) is repaired;
    # a deleted child is repaired at once through the child watches
    resync_seconds: float = 300.0
    # read the Sandboxes, our namespaces and children from kopf's indices when they
    # agree with the API server (cache.py); False: every pass reads the API server
    informer_cache: bool = True
    # with the cache: each sandbox is still read directly at least this often, which
    # bounds what a cache can miss (a deletion while kopf re-listed after a 410, the
    # git credentials Secret, which is not cached)
    verify_seconds: float = 3600.0


class SandboxOperator:
    """One reconcile pass per Sandbox key at a time, through the controllers' work queue
    (``controller/workqueue.py``): kopf's events add a key (any number of them while a
    pass runs coalesce into one more pass), a plan's "look again" and the periodic
    resync are its timers, a failed pass is retried with a doubling delay.

    Why a queue beside kopf: kopf retries (``TemporaryError(delay=…)``), timers and
    daemons only for handlers that hold kopf's finalizer on every object, and naming
    kopf's finalizer ours makes kopf remove it whenever no such handler needs it. The
    spec names one finalizer, held until the workspace namespace is gone, so the
    operator keeps its own and kopf is used for watching, indexing and serialising
    events (docs/kubernetes.md, "Level-triggered operator")."""

    def __init__(
        self, options: OperatorOptions, *, client_factory: Callable[[], AsyncClient]
    ) -> None:
        self.options = options
        self._client_factory = client_factory
        self._client: AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.queue = WorkQueue(
            self._pass,
            self._spawn,
            backoff_start=options.error_backoff,
            backoff_max=options.max_requeue,
        )
        # kopf's indices of what it watches, read instead of the API server when they
        # agree with it (cache.py); the git credentials Secret (not ours, so not
        # watched) as last read directly, per sandbox
        self.cache = InformerCache(
            {kind: plural for kind, (_, _, plural) in cached_kinds(options).items()}
        )
        self.freshness = Freshness()
        self._git_secret: dict[tuple[str, str], JSON | None] = {}
        # when each sandbox was last read directly (monotonic seconds)
        self._verified: dict[tuple[str, str], float] = {}

    @property
    def client(self) -> AsyncClient:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        self.queue.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.queue = WorkQueue(
            self._pass,
            self._spawn,
            backoff_start=self.options.error_backoff,
            backoff_max=self.options.max_requeue,
        )  # a new leader term starts with an open queue
        self.freshness = Freshness()  # and a new cache, read directly once per sandbox
        self._git_secret.clear()
        self._verified.clear()
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self.options.ledger is not None:
            await self.options.ledger.close()  # opened again on its next use

    # ----- the loop -------------------------------------------------------------------
    def trigger(self, namespace: str, name: str) -> None:
        """Reconcile this Sandbox now (or once more after its running pass)."""
        self.queue.add((namespace, name))

    async def _pass(self, key: tuple[str, str]) -> float | None:
        """One pass for the queue: when to look again (None: only on an event). A failed
        pass (500, timeout, connection) is counted and raised: the queue retries it with
        a doubling delay; kopf does not retry event handlers."""
        metrics = self.options.metrics
        try:
            return await self.run(*key)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.freshness.wrote(key)
            code = _code(exc) if isinstance(exc, ApiError) else 0
            error = str(code) if code else type(exc).__name__
            metrics.reconciles.labels(result="error").inc()
            metrics.failures.labels(error=error).inc()
            raise

    async def run(self, namespace: str, name: str) -> float | None:
        """One pass: read, decide, act. Answers when to look again."""
        key = (namespace, name)
        # read directly while the cache may not agree, once per sandbox and term (the
        # git credentials Secret is not cached: it is remembered from that read), and
        # every verify_seconds
        verified = self._verified.get(key)
        direct = (
            not self.cache.ready
            or self.freshness.stale(key)
            or verified is None
            or time.monotonic() - verified >= self.options.verify_seconds
        )
        raw = None if direct else self.cache.sandbox(key)
        if raw is None:
            direct = True
            try:
                raw = _plain(await self.client.get(SandboxResource, name, namespace=namespace))
            except ApiError as exc:
                if _code(exc) == 404:
                    self._forget(key)
                    return None
                raise
        sandbox = Sandbox.from_dict(raw)
        self.freshness.wrote(key)  # until this pass is known to have written nothing
        observed = await self.observe(sandbox) if direct else await self.observe_cached(sandbox)
        wrote = await self._gateway_token(sandbox, observed, cached=not direct)
        wrote = await self._share_grant_key(sandbox, observed, cached=not direct) or wrote
        wrote = await self._mcp_token(sandbox, observed, cached=not direct) or wrote
        plan = reconcile(sandbox, observed, self.options.clock(), self.options.render)
        delay = plan.requeue_after
        metrics = self.options.metrics
        try:
            await self.execute(sandbox, plan)
        except kopf.PermanentError as exc:
            # the API server refuses what this spec renders: retrying cannot help until
            # the spec changes (a new generation), as with every spec problem
            await self._refused(key, str(exc))
            return None
        except ApiError as exc:
            if _code(exc) != 409:
                raise
            log.info("sandbox_write_conflict", namespace=namespace, name=name)
            metrics.reconciles.labels(result="conflict").inc()
            delay = 0.0
        else:
            metrics.reconciles.labels(result="unchanged" if plan.empty else "changed").inc()
            if plan.status is not None:
                metrics.transition(sandbox.status, plan.status)
            if plan.empty and not wrote and (not direct or self._agrees(raw, observed)):
                self.freshness.agreed(key)
        if delay is not None:
            return min(delay, self.options.max_requeue)
        if sandbox.metadata.deletion_timestamp:
            return None
        return self.options.resync_seconds  # the periodic resync

    async def _refused(self, key: tuple[str, str], message: str) -> None:
        """Fail the sandbox for this generation with the API server's refusal."""
        current = Sandbox.from_dict(
            _plain(await self.client.get(SandboxResource, key[1], namespace=key[0]))
        )
        status = refused_status(current, message, self.options.clock())
        body = current.with_status(status).to_dict()
        await self.client.replace(
            SandboxResource.Status.from_dict(body), current.name, namespace=current.namespace
        )
        log.warning("sandbox_manifest_refused", namespace=key[0], name=key[1], detail=message)
        self.options.metrics.reconciles.labels(result="changed").inc()
        self.options.metrics.transition(current.status, status)

    async def child_changed(self, obj: Mapping[str, Any], *, deleted: bool) -> None:
        """A child of some sandbox was changed or deleted (by anyone, ourselves
        included): reconcile that sandbox now (a pass that finds it as wanted writes
        nothing). Its workspace namespace's holder annotation names it (a child's own
        labels may carry a hashed sandbox name); a namespace names itself."""
        meta = obj.get("metadata") or {}
        if obj.get("kind") == "Namespace":
            holder_key = (meta.get("annotations") or {}).get(ANNOTATION_HOLDER, "")
        else:
            ns_name = str(meta.get("namespace", ""))
            ns_obj = (
                self.cache.namespace(ns_name)
                if self.cache.ready
                else await self._get_namespace(ns_name)
            )
            if ns_obj is None or (ns_obj.get("metadata") or {}).get("deletionTimestamp"):
                return  # the whole workspace is going: its sandbox is being deleted
            holder_key = holder(ns_obj) or ""
        namespace, _, name = holder_key.partition("/")
        if namespace and name:
            if deleted:
                log.info(
                    "sandbox_child_deleted_elsewhere",
                    kind=obj.get("kind"),
                    child=meta.get("name"),
                    namespace=namespace,
                    name=name,
                )
            self.trigger(namespace, name)

    def _forget(self, key: tuple[str, str]) -> None:
        self.freshness.forget(key)
        self._git_secret.pop(key, None)
        self._verified.pop(key, None)

    def _agrees(self, raw: JSON, observed: KubeObserved) -> bool:
        """Whether what was just read from the API server is what the cache holds:
        the Sandbox, our namespaces and our children, at the same resourceVersions."""
        if not self.cache.ready:
            return False
        sandbox = Sandbox.from_dict(raw)
        if not same_version(self.cache.sandbox((sandbox.namespace, sandbox.name)), raw):
            return False
        for name, obj in observed.namespaces.items():
            if _managed(obj) and not same_version(self.cache.namespace(name), obj):
                return False
        chosen = choose_namespace(sandbox, observed)
        read = {k: v for k, v in observed.children.items() if _managed(v)}
        cached = self.cache.children(chosen, _child_selector(sandbox))
        cached = {k: v for k, v in cached.items() if k[0] != "Secret"}
        return versions(read) == versions(cached)

    # ----- observe --------------------------------------------------------------------
    async def _get_namespace(self, name: str) -> JSON | None:
        try:
            return _plain(await self.client.get(NamespaceResource, name))
        except ApiError as exc:
            if _code(exc) == 404:
                return None
            raise

    async def observe(self, sandbox: Sandbox) -> KubeObserved:
        self._git_secret[(sandbox.namespace, sandbox.name)] = None  # until read below
        self._verified[(sandbox.namespace, sandbox.name)] = time.monotonic()
        namespaces: dict[str, JSON] = {}
        for name in candidate_namespaces(sandbox):
            found = await self._get_namespace(name)
            if found is not None:
                namespaces[name] = found
        chosen = choose_namespace(sandbox, KubeObserved(namespaces=namespaces))
        children: dict[tuple[str, str], JSON] = {}
        pods: list[JSON] = []
        ns_obj = namespaces.get(chosen)
        if ns_obj is not None and holder(ns_obj) == sandbox_key(sandbox):
            selector: dict[str, Any] = _child_selector(sandbox)
            for kind in CHILD_KINDS:
                if kind == "Secret" or (kind == "HTTPRoute" and not self.options.render.http_route):
                    continue
                async for item in self.client.list(
                    _resource(kind), namespace=chosen, labels=selector
                ):
                    obj = _plain(item)
                    obj.setdefault("kind", kind)
                    children[(kind, obj["metadata"]["name"])] = obj
            git = await read_secret(self.client, GIT_SECRET, chosen)
            if git is not None:
                children[("Secret", GIT_SECRET)] = _plain(git)
            self._git_secret[(sandbox.namespace, sandbox.name)] = (
                _plain(git) if git is not None else None
            )
            pods = await self._pods(sandbox, chosen)
        return await self._with_probe(sandbox, namespaces, children, chosen, pods, cached=False)

    async def observe_cached(self, sandbox: Sandbox) -> KubeObserved:
        """:meth:`observe` from the informer cache. A candidate namespace the cache
        does not hold may still exist without our label (someone else's): the one
        about to be chosen is then asked for."""
        namespaces: dict[str, JSON] = {}
        for name in candidate_namespaces(sandbox):
            found = self.cache.namespace(name)
            if found is not None:
                namespaces[name] = found
        asked: set[str] = set()
        chosen = choose_namespace(sandbox, KubeObserved(namespaces=namespaces))
        while chosen not in namespaces and chosen not in asked:
            asked.add(chosen)
            found = await self._get_namespace(chosen)
            if found is None:
                break
            namespaces[chosen] = found
            chosen = choose_namespace(sandbox, KubeObserved(namespaces=namespaces))
        children: dict[tuple[str, str], JSON] = {}
        pods: list[JSON] = []
        ns_obj = namespaces.get(chosen)
        if ns_obj is not None and holder(ns_obj) == sandbox_key(sandbox):
            children = {
                k: v
                for k, v in self.cache.children(chosen, _child_selector(sandbox)).items()
                if k[0] != "Secret"
            }
            git = self._git_secret.get((sandbox.namespace, sandbox.name))
            if git is not None:
                children[("Secret", GIT_SECRET)] = git
            pods = await self._pods(sandbox, chosen)
        return await self._with_probe(sandbox, namespaces, children, chosen, pods, cached=True)

    async def _pods(self, sandbox: Sandbox, namespace: str) -> list[JSON]:
        """The sandbox's pods, while it is not Ready (only a failed clone is read from
        them; pods are not cached)."""
        if sandbox.status.phase == "Ready":
            return []
        pod_selector: dict[str, Any] = dict(selector_labels(sandbox))
        return [
            _plain(p)
            async for p in self.client.list(PodResource, namespace=namespace, labels=pod_selector)
        ]

    async def _with_probe(
        self,
        sandbox: Sandbox,
        namespaces: dict[str, JSON],
        children: dict[tuple[str, str], JSON],
        chosen: str,
        pods: list[JSON],
        *,
        cached: bool,
    ) -> KubeObserved:
        attempted, report = await self._probe(sandbox, chosen, children, cached=cached)
        if report is None:
            return KubeObserved(
                namespaces=namespaces, children=children, probe_failed=attempted, pods=tuple(pods)
            )
        runs = None
        if previews_wanted(sandbox):  # what the pod runs, asked as /idle was (previews.py)
            runs = await fetch_previews(*await self._pod_access(sandbox, chosen, cached=cached))
        return KubeObserved(
            namespaces=namespaces,
            children=children,
            pods=tuple(pods),
            viewers_attached=report.viewers > 0 or report.busy,
            sessions=report.sessions,
            last_activity=report.last_activity,
            probed=True,
            pod_previews=None if runs is None else tuple(runs),
        )

    async def _pod_access(
        self, sandbox: Sandbox, namespace: str, *, cached: bool
    ) -> tuple[str, str]:
        """The sandbox's terminal server: its URL and the probe token that opens /idle
        and /previews."""
        token = await ensure_probe_token(
            self.client, namespace, labels=child_labels(sandbox), read=self._secret_reader(cached)
        )
        return self.options.pty_url_template.format(namespace=namespace), token

    def _secret_reader(self, cached: bool) -> Any:
        """How this pass reads our own Secrets: from the cache when it agrees with the
        API server, else directly."""

        async def read(name: str, namespace: str) -> Any:
            if not cached:
                return await read_secret(self.client, name, namespace)
            return self.cache.children(namespace, {}).get(("Secret", name))

        return read

    async def _probe(
        self,
        sandbox: Sandbox,
        namespace: str,
        children: Mapping[tuple[str, str], JSON],
        *,
        cached: bool = False,
    ) -> tuple[bool, IdleReport | None]:
        """Ask a Ready sandbox's running terminal server how idle it is: whether it was
        asked, and its report (None when not asked or it did not answer)."""
        template = self.options.pty_url_template
        sts = children.get(("StatefulSet", "pty-server")) or {}
        ready = int((sts.get("status") or {}).get("readyReplicas") or 0)
        if not template or sandbox.status.phase != "Ready" or ready < 1:
            return False, None
        token = await ensure_probe_token(
            self.client, namespace, labels=child_labels(sandbox), read=self._secret_reader(cached)
        )
        return True, await probe_idle(template.format(namespace=namespace), token)

    def _held_workspace(self, sandbox: Sandbox, observed: KubeObserved) -> str | None:
        """The workspace namespace this live sandbox holds (``None``: none yet, or it
        is going away): where its Secrets are written."""
        if sandbox.deleting:
            return None
        chosen = choose_namespace(sandbox, observed)
        ns_obj = observed.namespaces.get(chosen)
        if ns_obj is None or holder(ns_obj) != sandbox_key(sandbox):
            return None
        if (ns_obj.get("metadata") or {}).get("deletionTimestamp"):
            return None
        return chosen

    async def _gateway_token(
        self, sandbox: Sandbox, observed: KubeObserved, *, cached: bool
    ) -> bool:
        """Before the plan runs (so before the StatefulSet is created): the sandbox's
        token Secret, in the workspace namespace this sandbox holds. True when written."""
        ledger = self.options.ledger
        chosen = self._held_workspace(sandbox, observed) if ledger is not None else None
        if ledger is None or chosen is None:
            return False
        return await ensure_gateway_token(
            self.client,
            ledger,
            sandbox,
            chosen,
            labels=child_labels(sandbox),
            read=self._secret_reader(cached),
        )

    async def _share_grant_key(
        self, sandbox: Sandbox, observed: KubeObserved, *, cached: bool
    ) -> bool:
        """Before the plan runs, too: the sandbox's share grant key Secret."""
        secret = self.options.share_grant_secret
        chosen = self._held_workspace(sandbox, observed) if secret else None
        if chosen is None:
            return False
        return await ensure_share_grant_key(
            self.client,
            secret,
            sandbox,
            chosen,
            labels=child_labels(sandbox),
            read=self._secret_reader(cached),
        )

    async def _mcp_token(self, sandbox: Sandbox, observed: KubeObserved, *, cached: bool) -> bool:
        """Before the plan runs, too: the sandbox's MCP token Secret."""
        source = self.options.mcp_tokens
        chosen = self._held_workspace(sandbox, observed) if source is not None else None
        if source is None or chosen is None:
            return False
        return await ensure_mcp_token(
            self.client,
            source,
            sandbox,
            chosen,
            labels=child_labels(sandbox),
            read=self._secret_reader(cached),
        )

    # ----- execute --------------------------------------------------------------------
    async def execute(self, sandbox: Sandbox, plan: KubePlan) -> None:
        current = sandbox
        if plan.add_finalizer:
            current = await self._set_finalizers(current, (*current.metadata.finalizers, FINALIZER))
        if plan.preview_actions:
            # before the status: a preview stopped here has left it only once it is
            # stopped (a failure retries the pass, which asks again)
            url, token = await self._pod_access(sandbox, plan.workspace, cached=False)
            await act_on_previews(url, token, plan.preview_actions)
        if plan.status is not None:
            body = current.with_status(plan.status).to_dict()
            written = await self.client.replace(
                SandboxResource.Status.from_dict(body), current.name, namespace=current.namespace
            )
            current = Sandbox.from_dict(_plain(written))
        for obj in plan.apply:
            await self._apply(obj)
        for ref in plan.delete:
            await self._delete(ref)
        if plan.remove_finalizer:
            if self.options.ledger is not None:
                await revoke_gateway_token(self.options.ledger, current)
            kept = tuple(f for f in current.metadata.finalizers if f != FINALIZER)
            await self._set_finalizers(current, kept)

    async def _set_finalizers(self, sandbox: Sandbox, finalizers: tuple[str, ...]) -> Sandbox:
        patch = {
            "metadata": {
                "finalizers": list(finalizers) or None,
                "resourceVersion": sandbox.metadata.resource_version,
            }
        }
        result = await self.client.patch(
            SandboxResource,
            sandbox.name,
            patch,
            namespace=sandbox.namespace,
            patch_type=PatchType.MERGE,
        )
        return Sandbox.from_dict(_plain(result))

    async def _apply(self, obj: Mapping[str, Any]) -> None:
        """Create or update ``obj``. A refusal for what the object is (400 BadRequest,
        422 Invalid: a schema, a CEL rule, an admission policy) is permanent for this
        spec: ``kopf.PermanentError``, and no retry."""
        try:
            await self._apply_one(obj)
        except ApiError as exc:
            if _code(exc) not in PERMANENT_CODES:
                raise
            meta = obj["metadata"]
            raise kopf.PermanentError(
                f"the API server refused {obj['kind']} {meta['name']}: "
                f"{exc.status.message or exc.status.reason}"
            ) from exc

    async def _apply_one(self, obj: Mapping[str, Any]) -> None:
        kind = obj["kind"]
        meta = obj["metadata"]
        if kind == "Namespace":
            res, namespace = NamespaceResource, None
        else:
            res, namespace = _resource(kind), meta["namespace"]
        try:
            await self.client.create(res.from_dict(dict(obj)))
            log.info("sandbox_child_created", kind=kind, name=meta["name"], namespace=namespace)
            return
        except ApiError as exc:
            if _code(exc) != 409 or kind in CREATE_ONLY:
                if _code(exc) == 409:
                    return
                raise
        if kind == "Namespace":
            existing = await self._get_namespace(meta["name"])
            if existing is None or holder(existing) != holder(obj):
                return  # someone else's: the next reconcile moves to another name
            patch: JSON = {
                "metadata": {"labels": meta.get("labels"), "annotations": meta.get("annotations")}
            }
        else:
            patch = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
        client: Any = self.client  # one call for both scopes; lightkube types them apart
        await client.patch(
            res, meta["name"], patch, namespace=namespace, patch_type=PatchType.MERGE
        )
        log.info("sandbox_child_updated", kind=kind, name=meta["name"], namespace=namespace)

    async def _delete(self, ref: ChildRef) -> None:
        try:
            if ref["kind"] == "Namespace":
                await self.client.delete(NamespaceResource, ref["name"])
            else:
                await self.client.delete(
                    _resource(ref["kind"]), ref["name"], namespace=ref["namespace"]
                )
            log.info("sandbox_child_deleted", kind=ref["kind"], name=ref["name"])
        except ApiError as exc:
            if _code(exc) != 404:
                raise


def build_registry(
    options: OperatorOptions,
    *,
    client_factory: Callable[[], AsyncClient] | None = None,
) -> kopf.OperatorRegistry:
    """A kopf registry with the Sandbox operator's handlers (nothing at import time)."""
    registry = kopf.OperatorRegistry()
    operator = SandboxOperator(options, client_factory=client_factory or AsyncClient)

    @kopf.on.login(registry=registry)
    def _login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # In a pod: the service account; elsewhere: $KUBECONFIG (kopf's own readers).
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    children = cached_kinds(options)
    ours = f"{LABEL_MANAGED_BY}={MANAGED_BY}"

    @kopf.on.startup(registry=registry)
    async def _configure(settings: kopf.OperatorSettings, **kwargs: Any) -> None:
        settings.posting.level = logging.WARNING
        settings.watching.server_timeout = 300
        # the API server filters the child watches by our label (kopf's filters on the
        # handlers alone would stream every object of each kind to us). Not namespaces:
        # kopf's own scan of them (--namespace) must see unlabelled ones too
        for _, _, plural in children.values():
            settings.watching.label_selectors[plural] = ours
        # the indices are filled by the watches before any handler runs
        if options.informer_cache:
            operator.cache.bind(kwargs)

    @kopf.on.cleanup(registry=registry)
    async def _close(**_: Any) -> None:
        operator.cache.unbind()
        await operator.close()

    # ----- the informer cache: kopf's indices of what it watches (cache.py)
    @kopf.index(API_GROUP, "v1", "sandboxes", id=SANDBOX_INDEX, registry=registry)
    def _index_sandbox(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> Any:
        return {(namespace or "", name): {**body, "kind": KIND}}

    @kopf.index(
        "",
        "v1",
        "namespaces",
        id=NAMESPACE_INDEX,
        labels={LABEL_MANAGED_BY: MANAGED_BY},
        registry=registry,
    )
    def _index_namespace(body: kopf.Body, name: str, **_: Any) -> Any:
        return {name: {**body, "kind": "Namespace"}}

    for kind, (group, version, plural) in children.items():

        def index_child(body: kopf.Body, namespace: str | None, param: Any = None, **_: Any) -> Any:
            return {namespace or "": {**body, "kind": param}}

        kopf.index(
            group,
            version,
            plural,
            id=child_index(plural),
            param=kind,
            labels={LABEL_MANAGED_BY: MANAGED_BY},
            registry=registry,
        )(index_child)

    @kopf.on.event(API_GROUP, "v1", "sandboxes", registry=registry)
    async def _on_sandbox(event: Mapping[str, Any], **_: Any) -> None:
        meta = (event.get("object") or {}).get("metadata") or {}
        if event.get("type") == "DELETED":
            return
        operator.trigger(str(meta.get("namespace", "")), str(meta.get("name", "")))

    async def _on_child(event: Mapping[str, Any], **_: Any) -> None:
        # not the initial listing (type None) nor creations (our own, mostly)
        if event.get("type") in ("MODIFIED", "DELETED"):
            obj = dict(event.get("object") or {})
            obj.setdefault("kind", "")
            await operator.child_changed(obj, deleted=event.get("type") == "DELETED")

    # The children, by our label: a deleted or edited one is put back at once, and a
    # StatefulSet's readiness is seen when it changes
    watched = dict(children)
    watched["Namespace"] = ("", "v1", "namespaces")
    for kind, (group, version, plural) in watched.items():

        async def on_child(event: Mapping[str, Any], kind: str = kind, **_: Any) -> None:
            obj = dict(event.get("object") or {})
            obj["kind"] = kind
            await _on_child({**event, "object": obj})

        kopf.on.event(
            group,
            version,
            plural,
            id=f"child-{plural}",
            labels={LABEL_MANAGED_BY: MANAGED_BY},
            registry=registry,
        )(on_child)

    return registry
