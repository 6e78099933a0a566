"""Kubernetes reads for a sandbox's agents (issue 14, ``k8s.read.*``; docs/mcp.md,
"Kubernetes reads"), in Kubernetes mode only.

Limited to the sandbox's own workspace namespace (``status.workspaceNamespace``, chosen
by the operator) and to what the sandbox's Role allows: the kinds and verbs of
``controller.kube.render.WORKSPACE_RULES``, the rules of the ClusterRole its RoleBinding
names (a test keeps the two equal with deploy/kubernetes/rbac-workspace.yaml). A kind
outside them is refused before the cluster is asked, Secrets included: the Role grants
no Secret, so neither does this. What the rules allow is read with this process's
client; the tests run it as the sandbox's own ServiceAccount, so the API server's RBAC
agrees with the refusals made here.

Bounded: a list answers at most ``MAX_LIST`` items (compact summaries; ``get`` gives
one whole object, without ``managedFields`` and with long ConfigMap values cut),
logs at most ``MAX_TAIL`` lines and ``MAX_LOG_BYTES``, events at most ``MAX_LIST``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx2
from lightkube import AsyncClient, ConfigError, KubeConfig
from lightkube.core.exceptions import ApiError
from lightkube.resources.apps_v1 import Deployment, StatefulSet
from lightkube.resources.core_v1 import (
    ConfigMap,
    Event,
    PersistentVolumeClaim,
    Pod,
    Service,
)

from ..controller.kube.render import WORKSPACE_RULES
from ..domain.errors import (
    BackendUnavailable,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    SandboxError,
)
from ..domain.model import Sandbox

STATUS_NAMESPACE = "workspaceNamespace"  # where the operator records it (kube/reconcile.py)
DEFAULT_LIST = 50
MAX_LIST = 200
DEFAULT_TAIL = 100
MAX_TAIL = 1000
MAX_LOG_BYTES = 256 * 1024
MAX_VALUE = 16 * 1024  # characters of one ConfigMap value shown by get
TIMEOUT = 10.0
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


@dataclass(frozen=True)
class Kind:
    name: str  # as agents write it: Pod, Deployment…
    group: str
    plural: str
    resource: Any  # lightkube's class


_CLASSES: dict[tuple[str, str], tuple[str, Any]] = {
    ("", "pods"): ("Pod", Pod),
    ("", "services"): ("Service", Service),
    ("", "configmaps"): ("ConfigMap", ConfigMap),
    ("", "persistentvolumeclaims"): ("PersistentVolumeClaim", PersistentVolumeClaim),
    ("", "events"): ("Event", Event),
    ("apps", "deployments"): ("Deployment", Deployment),
    ("apps", "statefulsets"): ("StatefulSet", StatefulSet),
}


def allowed(verb: str, group: str, resource: str) -> bool:
    """Whether the sandbox's Role grants ``verb`` on ``group``/``resource``."""
    return any(
        group in rule.get("apiGroups", ())
        and resource in rule.get("resources", ())
        and verb in rule.get("verbs", ())
        for rule in WORKSPACE_RULES
    )


def readable_kinds() -> dict[str, Kind]:
    """The kinds ``get`` and ``list`` serve: those the Role grants both verbs on and this
    module has a client class for (lower-cased name, plural and ``Kind`` all key it)."""
    kinds: dict[str, Kind] = {}
    for (group, plural), (name, resource) in _CLASSES.items():
        if allowed("get", group, plural) and allowed("list", group, plural):
            kind = Kind(name, group, plural, resource)
            for key in (name.lower(), plural, name.lower() + "s"):
                kinds[key] = kind
    return kinds


KINDS = readable_kinds()


def kind_of(text: Any) -> Kind:
    if not isinstance(text, str) or not text.strip():
        raise Invalid("kind must be a non-empty string, e.g. Pod", code="invalid-kind")
    found = KINDS.get(text.strip().lower())
    if found is None:
        names = sorted({k.name for k in KINDS.values()})
        raise Forbidden(
            f"kind {text!r} is not readable by this sandbox: its Role grants "
            f"{', '.join(names)} (no Secrets)",
            code="kind-not-allowed",
        )
    return found


def check_name(name: Any, what: str = "name") -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise Invalid(f"{what} {name!r} is not a Kubernetes object name", code="invalid-name")
    return name


def check_labels(labels: Any) -> dict[str, Any]:
    if labels is None:
        return {}
    if not isinstance(labels, Mapping):
        raise Invalid("labels must be an object of label: value", code="invalid-labels")
    out: dict[str, Any] = {}
    for key, value in labels.items():
        if not isinstance(key, str) or not _LABEL_KEY.match(key):
            raise Invalid(f"{key!r} is not a label key", code="invalid-labels")
        if not isinstance(value, str) or not _LABEL_VALUE.match(value):
            raise Invalid(f"{value!r} is not a label value", code="invalid-labels")
        out[key] = value
    return out


def bounded(value: Any, default: int, most: int, what: str) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise Invalid(f"{what} must be an integer from 1 to {most}", code=f"invalid-{what}")
    return value


def workspace_namespace(sandbox: Sandbox) -> str:
    namespace = sandbox.status.extra.get(STATUS_NAMESPACE)
    if not isinstance(namespace, str) or not namespace:
        raise Conflict(
            f"sandbox {sandbox.name!r} has no workspace namespace yet (the operator has "
            "not provisioned it)",
            code="sandbox-not-ready",
        )
    return namespace


# ---------------------------------------------------------------- shapes
def _plain(obj: Any) -> dict[str, Any]:
    data: dict[str, Any] = obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)
    return data


def trimmed(obj: dict[str, Any]) -> dict[str, Any]:
    """One object as ``get`` answers it: no ``managedFields`` nor last-applied copy, and
    ConfigMap values longer than ``MAX_VALUE`` cut (said in the value)."""
    meta = dict(obj.get("metadata") or {})
    meta.pop("managedFields", None)
    annotations = dict(meta.get("annotations") or {})
    annotations.pop("kubectl.kubernetes.io/last-applied-configuration", None)
    if annotations or "annotations" in meta:
        meta["annotations"] = annotations
    out = {**obj, "metadata": meta}
    for field in ("data", "binaryData"):
        values = out.get(field)
        if isinstance(values, dict):
            out[field] = {
                k: v
                if not isinstance(v, str) or len(v) <= MAX_VALUE
                else v[:MAX_VALUE] + f"… [cut: {len(v)} characters]"
                for k, v in values.items()
            }
    return out


def summary(kind: Kind, obj: dict[str, Any]) -> dict[str, Any]:
    """A list item: name, age, labels and what matters of the kind's status."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    out: dict[str, Any] = {
        "name": meta.get("name"),
        "created": meta.get("creationTimestamp"),
        "labels": meta.get("labels") or {},
    }
    if kind.plural == "pods":
        statuses = status.get("containerStatuses") or []
        out["phase"] = status.get("phase")
        out["ready"] = f"{sum(1 for c in statuses if c.get('ready'))}/{len(statuses)}"
        out["restarts"] = sum(int(c.get("restartCount") or 0) for c in statuses)
        out["containers"] = [c.get("name") for c in spec.get("containers") or []]
    elif kind.plural in ("deployments", "statefulsets"):
        out["replicas"] = spec.get("replicas")
        out["readyReplicas"] = status.get("readyReplicas") or 0
    elif kind.plural == "services":
        out["type"] = spec.get("type") or "ClusterIP"
        out["ports"] = [
            {k: p.get(k) for k in ("name", "port", "targetPort", "protocol") if k in p}
            for p in spec.get("ports") or []
        ]
    elif kind.plural == "persistentvolumeclaims":
        out["phase"] = status.get("phase")
        out["request"] = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
    elif kind.plural == "configmaps":
        out["keys"] = sorted((obj.get("data") or {}).keys())
    elif kind.plural == "events":
        out.update(event_view(obj))
    return out


def event_view(obj: dict[str, Any]) -> dict[str, Any]:
    involved = obj.get("involvedObject") or {}
    return {
        "type": obj.get("type"),
        "reason": obj.get("reason"),
        "message": obj.get("message"),
        "object": f"{involved.get('kind', '')}/{involved.get('name', '')}",
        "count": obj.get("count"),
        "last": obj.get("lastTimestamp")
        or obj.get("eventTime")
        or (obj.get("metadata") or {}).get("creationTimestamp"),
    }


# ---------------------------------------------------------------- the reader
class KubeReader:
    """Read access to sandboxes' workspace namespaces, within their Role. Its client is
    made at the first read (from ``kubeconfig_path``, else the environment: in-cluster,
    the pod's ServiceAccount), so a process without a cluster configuration starts and
    each read says what is missing."""

    def __init__(self, client: AsyncClient | None = None, *, kubeconfig_path: str = "") -> None:
        self._client = client
        self._kubeconfig_path = kubeconfig_path

    @classmethod
    def from_config(cls, kubeconfig_path: str = "") -> KubeReader:
        return cls(kubeconfig_path=kubeconfig_path)

    def _current(self) -> AsyncClient:
        if self._client is None:
            try:
                config = (
                    KubeConfig.from_file(self._kubeconfig_path)
                    if self._kubeconfig_path
                    else KubeConfig.from_env()
                )
            except (ConfigError, OSError, ValueError) as exc:
                raise BackendUnavailable(f"no Kubernetes configuration: {exc}") from exc
            self._client = AsyncClient(
                config=config, timeout=httpx2.Timeout(TIMEOUT), trust_env=False
            )
        return self._client

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        await self.close()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def get(self, sandbox: Sandbox, kind: Any, name: Any) -> dict[str, Any]:
        found = kind_of(kind)
        name = check_name(name)
        namespace = workspace_namespace(sandbox)
        try:
            obj = await self._current().get(found.resource, name=name, namespace=namespace)
        except (ApiError, httpx2.HTTPError) as exc:
            raise _error(exc, f"{found.name} {name!r}") from exc
        return trimmed(_plain(obj))

    async def list(
        self, sandbox: Sandbox, kind: Any, *, labels: Any = None, limit: Any = None
    ) -> dict[str, Any]:
        found = kind_of(kind)
        selector = check_labels(labels)
        most = bounded(limit, DEFAULT_LIST, MAX_LIST, "limit")
        namespace = workspace_namespace(sandbox)
        items: list[dict[str, Any]] = []
        more = False
        try:
            async for obj in self._current().list(
                found.resource, namespace=namespace, labels=selector or None, chunk_size=most
            ):
                if len(items) == most:
                    more = True
                    break
                items.append(summary(found, _plain(obj)))
        except (ApiError, httpx2.HTTPError) as exc:
            raise _error(exc, found.plural) from exc
        return {"kind": found.name, "namespace": namespace, "items": items, "more": more}

    async def logs(
        self, sandbox: Sandbox, pod: Any, *, container: Any = None, tail: Any = None
    ) -> dict[str, Any]:
        if not allowed("get", "", "pods/log"):
            raise Forbidden("the sandbox's Role grants no pod logs", code="kind-not-allowed")
        pod = check_name(pod, "pod")
        if container is not None:
            container = check_name(container, "container")
        lines_wanted = bounded(tail, DEFAULT_TAIL, MAX_TAIL, "tail")
        namespace = workspace_namespace(sandbox)
        lines: list[str] = []
        size = 0
        cut = False
        try:
            async for line in self._current().log(
                pod,
                namespace=namespace,
                container=container,
                tail_lines=lines_wanted,
                newlines=False,
            ):
                size += len(line) + 1
                if size > MAX_LOG_BYTES:
                    cut = True
                    break
                lines.append(line)
        except (ApiError, httpx2.HTTPError) as exc:
            raise _error(exc, f"the logs of pod {pod!r}") from exc
        return {"pod": pod, "container": container, "lines": lines, "cut": cut}

    async def events(
        self, sandbox: Sandbox, *, name: Any = None, limit: Any = None
    ) -> dict[str, Any]:
        """The namespace's events, newest first; ``name``: only those about that object."""
        if not allowed("list", "", "events"):
            raise Forbidden("the sandbox's Role grants no events", code="kind-not-allowed")
        if name is not None:
            name = check_name(name)
        most = bounded(limit, DEFAULT_LIST, MAX_LIST, "limit")
        namespace = workspace_namespace(sandbox)
        found: list[dict[str, Any]] = []
        seen = 0
        try:
            async for obj in self._current().list(Event, namespace=namespace, chunk_size=MAX_LIST):
                seen += 1
                event = _plain(obj)
                if name is None or (event.get("involvedObject") or {}).get("name") == name:
                    found.append(event_view(event))
                if seen >= 10 * MAX_LIST:
                    break  # a namespace flooded with events: the first pages only
        except (ApiError, httpx2.HTTPError) as exc:
            raise _error(exc, "events") from exc
        found.sort(key=lambda e: str(e.get("last") or ""), reverse=True)
        return {"namespace": namespace, "events": found[:most], "more": len(found) > most}


def _error(exc: Exception, what: str) -> SandboxError:
    if isinstance(exc, ApiError):
        code = exc.status.code or 0
        message = exc.status.message or ""
        if code == 404:
            return NotFound(f"{what} not found in the sandbox's namespace", code="not-found")
        if code == 403:
            return Forbidden(f"the cluster refused to read {what}: {message}", code="forbidden")
        if code == 400:
            return Invalid(f"the cluster refused to read {what}: {message}", code="invalid")
        return BackendUnavailable(f"the cluster answered {code} reading {what}: {message}")
    return BackendUnavailable(f"the cluster did not answer reading {what}: {type(exc).__name__}")
