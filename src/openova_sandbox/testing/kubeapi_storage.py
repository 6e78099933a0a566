"""The fake API server's state and write semantics, independent of HTTP.

Everything runs on the server's event loop (the HTTP layer and the test helpers both
hop onto it), so there are no locks: an ``asyncio.Condition`` wakes watchers and the
background controllers (``kubeapi_controllers``) play garbage collection and namespace
termination.

Semantics kept because an operator can observe them: one global monotonic
``resourceVersion``; ``generation`` bumped only by spec changes on spec-bearing kinds;
the status subresource split; stale writes → 409; finalizers holding deletion; no new
finalizers once deleting; owner-reference and namespace cascades happening *after* the
DELETE call returns; watch history that can be compacted so clients see 410 Expired.
"""

from __future__ import annotations

import asyncio
import copy
import random
import uuid
from collections import deque
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .kubeapi_psa import admission_refusal
from .kubeapi_resources import BUILTIN, CRD_GROUP, JSON, ResourceType, from_crd
from .kubeapi_selectors import Predicate
from .kubeapi_validation import validation_causes

Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped
TypeKey = tuple[str, str]  # (group, plural)

_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


class ApiError(Exception):
    """A Kubernetes ``Status`` failure: HTTP code, reason and message."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = dict(details or {})

    def status(self) -> JSON:
        return status_body(self.code, self.reason, self.message, self.details)


def status_body(code: int, reason: str, message: str, details: Mapping[str, Any] | None) -> JSON:
    body: JSON = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = dict(details)
    return body


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _details(rt: ResourceType, name: str) -> JSON:
    return {"name": name, "group": rt.group, "kind": rt.plural}


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        404, "NotFound", f'{rt.qualified} "{name}" not found', details=_details(rt, name)
    )


def conflict(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {rt.qualified} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        details=_details(rt, name),
    )


def invalid(rt: ResourceType, name: str, causes: list[str]) -> ApiError:
    return ApiError(
        422,
        "Invalid",
        f'{rt.kind}.{rt.group or "core"} "{name}" is invalid: ' + ", ".join(causes),
        details={**_details(rt, name), "causes": [{"message": c} for c in causes]},
    )


@dataclass(frozen=True)
class Event:
    rv: int
    group: str
    plural: str
    namespace: str
    type: str
    object: JSON


class Storage:
    """All objects of the fake cluster, with the API server's write rules."""

    def __init__(self, *, history: int = 10_000, without: frozenset[str] = frozenset()) -> None:
        """``without``: API groups of the built-in kinds this cluster does not serve (e.g.
        ``gateway.networking.k8s.io``: a cluster without the Gateway API CRDs)."""
        self.types: dict[tuple[str, str], ResourceType] = {}  # (apiVersion, plural)
        self.objects: dict[TypeKey, dict[Key, JSON]] = {}
        self.rv = 0
        self.events: deque[Event] = deque(maxlen=history)
        self.compacted_rv = 0
        self.changed = asyncio.Condition()
        self.dirty = asyncio.Event()
        self.closing = False
        for rt in BUILTIN:
            if rt.group not in without:
                self.register(rt)

    # ----- resource types -------------------------------------------------------------
    def register(self, rt: ResourceType) -> None:
        self.types[(rt.api_version, rt.plural)] = rt
        self.objects.setdefault((rt.group, rt.plural), {})

    def unregister(self, group: str, plural: str) -> None:
        for key in [k for k, rt in self.types.items() if (rt.group, rt.plural) == (group, plural)]:
            del self.types[key]

    def lookup(self, api_version: str, plural: str) -> ResourceType | None:
        return self.types.get((api_version, plural))

    def groups(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for rt in self.types.values():
            versions = out.setdefault(rt.group, [])
            if rt.version not in versions:
                versions.append(rt.version)
        return out

    def by_type(self, rt: ResourceType) -> dict[Key, JSON]:
        return self.objects.setdefault((rt.group, rt.plural), {})

    # ----- helpers --------------------------------------------------------------------
    def bump(self) -> str:
        self.rv += 1
        return str(self.rv)

    async def emit(self, rt: ResourceType, kind: str, obj: JSON) -> None:
        meta = obj["metadata"]
        self.events.append(
            Event(
                int(meta["resourceVersion"]),
                rt.group,
                rt.plural,
                meta.get("namespace", ""),
                kind,
                copy.deepcopy(obj),
            )
        )
        self.dirty.set()
        async with self.changed:
            self.changed.notify_all()

    def _key(self, rt: ResourceType, namespace: str, name: str) -> Key:
        return (namespace if rt.namespaced else "", name)

    def find(self, rt: ResourceType, namespace: str, name: str) -> JSON | None:
        return self.by_type(rt).get(self._key(rt, namespace, name))

    def get(self, rt: ResourceType, namespace: str, name: str) -> JSON:
        obj = self.find(rt, namespace, name)
        if obj is None:
            raise not_found(rt, name)
        return copy.deepcopy(obj)

    def _namespace_obj(self, name: str) -> JSON | None:
        return self.objects[("", "namespaces")].get(("", name))

    def _validate(self, rt: ResourceType, obj: JSON, old: JSON | None = None) -> None:
        causes = validation_causes(rt, obj, old)
        if causes:
            raise invalid(rt, obj["metadata"].get("name", ""), causes)

    # ----- writes ---------------------------------------------------------------------
    async def create(self, rt: ResourceType, namespace: str, body: JSON) -> JSON:
        obj = copy.deepcopy(body)
        if not isinstance(obj, dict):
            raise ApiError(400, "BadRequest", "the body must be a JSON object")
        if obj.get("kind") not in (None, rt.kind) or obj.get("apiVersion") not in (
            None,
            rt.api_version,
        ):
            raise ApiError(
                400,
                "BadRequest",
                f"the API version in the data ({obj.get('apiVersion')}) does not match the "
                f"expected API version ({rt.api_version})",
            )
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        meta = obj.setdefault("metadata", {})
        if rt.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request",
                )
            meta["namespace"] = namespace
            ns = self._namespace_obj(namespace)
            if ns is None:
                raise ApiError(
                    404,
                    "NotFound",
                    f'namespaces "{namespace}" not found',
                    details={"name": namespace, "kind": "namespaces"},
                )
            if ns["metadata"].get("deletionTimestamp"):
                raise ApiError(
                    403,
                    "Forbidden",
                    f'{rt.plural} "{meta.get("name", "")}" is forbidden: unable to create new '
                    f"content in namespace {namespace} because it is being terminated",
                )
            if rt.plural == "pods" and rt.group == "":
                refused = admission_refusal(ns, obj)
                if refused:
                    raise ApiError(403, "Forbidden", refused)
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            prefix = meta.get("generateName")
            if not prefix:
                raise invalid(rt, "", ["metadata.name: Required value: name or generateName"])
            suffix = "".join(random.choices(_GENERATE_ALPHABET, k=5))  # noqa: S311
            meta["name"] = f"{prefix}{suffix}"
        for field in ("uid", "resourceVersion", "deletionTimestamp", "generation"):
            meta.pop(field, None)
        if rt.status_subresource:
            obj.pop("status", None)
        if rt.plural == "namespaces":
            obj["spec"] = {"finalizers": ["kubernetes"]}
            obj["status"] = {"phase": "Active"}
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
        self._validate(rt, obj)
        key = self._key(rt, namespace, meta["name"])
        if key in self.by_type(rt):
            raise ApiError(
                409,
                "AlreadyExists",
                f'{rt.qualified} "{meta["name"]}" already exists',
                details=_details(rt, meta["name"]),
            )
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        if rt.generation:
            meta["generation"] = 1
        meta["resourceVersion"] = self.bump()
        if rt.group == CRD_GROUP and rt.plural == "customresourcedefinitions":
            self._establish(obj)
        self.by_type(rt)[key] = obj
        await self.emit(rt, "ADDED", obj)
        return copy.deepcopy(obj)

    def _establish(self, crd: JSON) -> None:
        new_types = from_crd(crd)
        for existing in new_types:
            current = self.lookup(existing.api_version, existing.plural)
            if current is not None and not current.custom:
                raise ApiError(409, "AlreadyExists", f"{existing.qualified} is a built-in kind")
        for new in new_types:
            self.register(new)
        crd["status"] = {
            "acceptedNames": copy.deepcopy((crd.get("spec") or {}).get("names") or {}),
            "storedVersions": [t.version for t in new_types][:1],
            "conditions": [
                {
                    "type": "NamesAccepted",
                    "status": "True",
                    "reason": "NoConflicts",
                    "lastTransitionTime": _now(),
                },
                {
                    "type": "Established",
                    "status": "True",
                    "reason": "InitialNamesAccepted",
                    "lastTransitionTime": _now(),
                },
            ],
        }

    async def replace(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        body: JSON,
        *,
        subresource: str = "",
        precondition_rv: str | None = None,
        require_rv: bool | None = None,
    ) -> JSON:
        """PUT (and the final step of PATCH): the write rules of the API server."""
        current = self.find(rt, namespace, name)
        if current is None:
            raise not_found(rt, name)
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body must be a JSON object")
        new = copy.deepcopy(body)
        new_meta = new.setdefault("metadata", {})
        if not isinstance(new_meta, dict):
            raise invalid(rt, name, ["metadata: must be an object"])
        if new_meta.get("name", name) != name:
            raise ApiError(
                400, "BadRequest", "the name of the object does not match the name on the URL"
            )
        given_rv = (
            precondition_rv if precondition_rv is not None else new_meta.get("resourceVersion")
        )
        if require_rv is None:
            require_rv = rt.custom
        if not given_rv and require_rv:
            raise invalid(
                rt,
                name,
                ["metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"],
            )
        if given_rv and given_rv != current["metadata"]["resourceVersion"]:
            raise conflict(rt, name)
        old_meta = current["metadata"]
        merged: JSON
        if subresource == "status":
            merged = copy.deepcopy(current)
            if "status" in new:
                merged["status"] = new["status"]
            else:
                merged.pop("status", None)
        else:
            merged = new
            merged["apiVersion"], merged["kind"] = rt.api_version, rt.kind
            if rt.status_subresource:
                if "status" in current:
                    merged["status"] = copy.deepcopy(current["status"])
                else:
                    merged.pop("status", None)
            meta = merged["metadata"]
            for field in (
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ):
                if field in old_meta:
                    meta[field] = old_meta[field]
                else:
                    meta.pop(field, None)
            meta["name"] = name
            if rt.namespaced:
                meta["namespace"] = namespace
            if rt.plural == "namespaces":
                merged["spec"] = copy.deepcopy(current.get("spec") or {})
                merged["status"] = copy.deepcopy(current.get("status") or {})
            if old_meta.get("deletionTimestamp"):
                added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
                if added:
                    raise invalid(
                        rt,
                        name,
                        [
                            "metadata.finalizers: Forbidden: no new finalizers can be added "
                            "if the object is being deleted, found new finalizers "
                            + str(sorted(added))
                        ],
                    )
        merged["metadata"]["resourceVersion"] = old_meta["resourceVersion"]
        if merged == current:
            return copy.deepcopy(current)  # a no-op write does not bump resourceVersion
        self._validate(rt, merged, current)
        if rt.generation and subresource != "status":
            spec_old = {k: v for k, v in current.items() if k not in ("metadata", "status")}
            spec_new = {k: v for k, v in merged.items() if k not in ("metadata", "status")}
            if spec_old != spec_new:
                merged["metadata"]["generation"] = int(old_meta.get("generation", 1)) + 1
        merged["metadata"]["resourceVersion"] = self.bump()
        key = self._key(rt, namespace, name)
        releasing = bool(merged["metadata"].get("deletionTimestamp")) and not merged[
            "metadata"
        ].get("finalizers")
        if releasing and rt.plural != "namespaces":
            del self.by_type(rt)[key]
            await self.emit(rt, "DELETED", merged)
            return copy.deepcopy(merged)
        self.by_type(rt)[key] = merged
        await self.emit(rt, "MODIFIED", merged)
        return copy.deepcopy(merged)

    async def delete(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        *,
        options: Mapping[str, Any] | None = None,
    ) -> JSON:
        current = self.find(rt, namespace, name)
        if current is None:
            raise not_found(rt, name)
        options = options or {}
        pre = options.get("preconditions") or {}
        meta = current["metadata"]
        if pre.get("uid") and pre["uid"] != meta["uid"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {rt.qualified} "{name}": Precondition failed: '
                f"UID in precondition: {pre['uid']}, UID in object meta: {meta['uid']}",
                details=_details(rt, name),
            )
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
            raise conflict(rt, name)
        if options.get("propagationPolicy") == "Orphan" or options.get("orphanDependents"):
            await self._orphan(meta["uid"])
        finalizers = list(meta.get("finalizers") or [])
        if rt.plural == "namespaces":
            finalizers += list((current.get("spec") or {}).get("finalizers") or [])
        if finalizers:
            if meta.get("deletionTimestamp"):
                return copy.deepcopy(current)
            meta["deletionTimestamp"] = _now()
            meta["deletionGracePeriodSeconds"] = 0
            if rt.plural == "namespaces":
                current.setdefault("status", {})["phase"] = "Terminating"
            meta["resourceVersion"] = self.bump()
            await self.emit(rt, "MODIFIED", current)
            return copy.deepcopy(current)
        del self.by_type(rt)[self._key(rt, namespace, name)]
        meta["resourceVersion"] = self.bump()
        await self.emit(rt, "DELETED", current)
        if rt.group == CRD_GROUP and rt.plural == "customresourcedefinitions":
            await self._drop_crd(current)
        return copy.deepcopy(current)

    async def _drop_crd(self, crd: JSON) -> None:
        spec = crd.get("spec") or {}
        group, plural = spec.get("group", ""), (spec.get("names") or {}).get("plural", "")
        types = [rt for rt in self.types.values() if (rt.group, rt.plural) == (group, plural)]
        self.unregister(group, plural)
        objs = self.objects.pop((group, plural), {})
        for obj in objs.values():
            obj["metadata"]["resourceVersion"] = self.bump()
            if types:
                await self.emit(types[0], "DELETED", obj)

    async def _orphan(self, uid: str) -> None:
        for (group, plural), objs in self.objects.items():
            for obj in objs.values():
                refs = obj["metadata"].get("ownerReferences") or []
                kept = [r for r in refs if r.get("uid") != uid]
                if len(kept) != len(refs):
                    obj["metadata"]["ownerReferences"] = kept
                    obj["metadata"]["resourceVersion"] = self.bump()
                    rt = self.type_of(group, plural)
                    if rt is not None:
                        await self.emit(rt, "MODIFIED", obj)

    def type_of(self, group: str, plural: str) -> ResourceType | None:
        return next(
            (rt for rt in self.types.values() if (rt.group, rt.plural) == (group, plural)), None
        )

    # ----- reads ----------------------------------------------------------------------
    def list(
        self,
        rt: ResourceType,
        namespace: str | None,
        *,
        labels: Predicate,
        fields: Callable[[Mapping[str, Any]], bool],
    ) -> JSON:
        items = []
        for (ns, _name), obj in sorted(self.by_type(rt).items()):
            if namespace and rt.namespaced and ns != namespace:
                continue
            if labels(obj["metadata"].get("labels") or {}) and fields(obj):
                items.append(copy.deepcopy(obj))
        return {
            "kind": rt.list_kind,
            "apiVersion": rt.api_version,
            "metadata": {"resourceVersion": str(self.rv)},
            "items": items,
        }

    async def watch(
        self,
        rt: ResourceType,
        namespace: str | None,
        *,
        since: str | None,
        labels: Predicate,
        fields: Callable[[Mapping[str, Any]], bool],
    ) -> AsyncGenerator[JSON, None]:
        """Events after ``since`` (all current objects as ADDED when absent or "0")."""

        def wanted(ev: Event) -> bool:
            if (ev.group, ev.plural) != (rt.group, rt.plural):
                return False
            if namespace and rt.namespaced and ev.namespace != namespace:
                return False
            return labels(ev.object["metadata"].get("labels") or {}) and fields(ev.object)

        if not since or since == "0":
            snapshot = self.list(rt, namespace, labels=labels, fields=fields)
            for item in snapshot["items"]:
                yield {"type": "ADDED", "object": item}
            position = int(snapshot["metadata"]["resourceVersion"])
        else:
            try:
                position = int(since)
            except ValueError:
                raise ApiError(400, "BadRequest", f"invalid resource version {since!r}") from None
            oldest = self.events[0].rv if self.events else self.rv + 1
            if position < self.compacted_rv or (self.events and position < oldest - 1):
                yield {
                    "type": "ERROR",
                    "object": status_body(
                        410,
                        "Expired",
                        f"too old resource version: {position} "
                        f"({max(self.compacted_rv, oldest - 1)})",
                        None,
                    ),
                }
                return
        while not self.closing:
            pending = [ev for ev in self.events if ev.rv > position]
            for ev in pending:
                position = ev.rv
                if wanted(ev):
                    yield {"type": ev.type, "object": copy.deepcopy(ev.object)}
            async with self.changed:
                if self.closing or (self.events and self.events[-1].rv > position):
                    continue
                await self.changed.wait()

    async def close(self) -> None:
        self.closing = True
        async with self.changed:
            self.changed.notify_all()

    def set_history(self, events: int) -> None:
        dropped = len(self.events) - events
        if dropped > 0:
            self.compacted_rv = max(self.compacted_rv, self.events[dropped - 1].rv)
        self.events = deque(self.events, maxlen=events)

    def compact(self) -> None:
        """Forget watch history: a watch from any older resourceVersion gets 410 Expired."""
        self.compacted_rv = self.rv
        self.events.clear()
