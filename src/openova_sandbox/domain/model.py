"""The Sandbox resource: the same document in every store (see sandbox-resource.md).

Frozen dataclasses for what the code reasons about; ``extra`` dictionaries keep fields
this version does not know (the CRD preserves unknown fields, so must we). ``to_dict`` /
``from_dict`` speak the Kubernetes JSON shape (camelCase), which is also what the SQL
store persists, so a document moves between backends unchanged.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

API_GROUP = "sandbox.openova.io"
API_VERSION = f"{API_GROUP}/v1"
KIND = "Sandbox"
FINALIZER = "sandbox.openova.io/finalizer"

LABEL_AGENT = "catalyst.openova.io/sandbox-agent"
LABEL_ORG = "catalyst.openova.io/organization"
LABEL_OWNER = "openova.io/sandbox-owner"
ANNOTATION_DISPLAY_NAME = "catalyst.openova.io/sandbox-display-name"
ANNOTATION_CREATED_BY = "openova.io/created-by"
ANNOTATION_SUB = "openova.io/owner-sub"

CONDITION_TYPES: tuple[str, ...] = (
    "NamespaceReady",
    "RBACReady",
    "PVCsReady",
    "PtyReady",
    "McpReady",
    "TokenReady",
)
READY = "Ready"

JSON = dict[str, Any]


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_time(value: datetime) -> str:
    """RFC 3339 with seconds, UTC, ``Z`` suffix (the wire format of ``createdAt``)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_time_nano(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _str(raw: Mapping[str, Any], key: str) -> str:
    value = raw.get(key, "")
    return value if isinstance(value, str) else ""


def _extra(raw: Mapping[str, Any], known: frozenset[str]) -> JSON:
    """A deep copy of the fields of ``raw`` the model does not know (an ``extra``). The
    known ones are converted to new values by ``from_dict``, so copying them first (a
    deep copy of the whole document) would only be thrown away."""
    return {key: copy.deepcopy(value) for key, value in raw.items() if key not in known}


def _copied(extra: Mapping[str, Any]) -> JSON:
    """A deep copy of an ``extra`` for ``to_dict`` (usually empty: nothing to copy)."""
    return copy.deepcopy(dict(extra)) if extra else {}


_META_FIELDS = frozenset(
    (
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "labels",
        "annotations",
        "finalizers",
    )
)
_SPEC_FIELDS = frozenset(("owner", "quota", "agentCatalogue", "repos"))
_STATUS_FIELDS = frozenset(
    (
        "phase",
        "conditions",
        "sessions",
        "storageUsed",
        "spend30d",
        "previews",
        "observedGeneration",
        "lastActivityAt",
    )
)


@dataclass(frozen=True)
class ObjectMeta:
    name: str
    namespace: str
    uid: str = ""
    resource_version: str = ""
    generation: int = 0
    creation_timestamp: datetime | None = None
    deletion_timestamp: datetime | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    finalizers: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> JSON:
        out: JSON = _copied(self.extra)
        out.update({"name": self.name, "namespace": self.namespace})
        if self.uid:
            out["uid"] = self.uid
        if self.resource_version:
            out["resourceVersion"] = self.resource_version
        if self.generation:
            out["generation"] = self.generation
        if self.creation_timestamp:
            out["creationTimestamp"] = format_time(self.creation_timestamp)
        if self.deletion_timestamp:
            out["deletionTimestamp"] = format_time(self.deletion_timestamp)
        if self.labels:
            out["labels"] = dict(self.labels)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.finalizers:
            out["finalizers"] = list(self.finalizers)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ObjectMeta:
        generation = raw.get("generation", 0)
        labels = raw.get("labels") or {}
        annotations = raw.get("annotations") or {}
        finalizers = raw.get("finalizers") or []
        return cls(
            name=_str(raw, "name"),
            namespace=_str(raw, "namespace"),
            uid=_str(raw, "uid"),
            resource_version=_str(raw, "resourceVersion"),
            generation=generation if isinstance(generation, int) else 0,
            creation_timestamp=parse_time(raw.get("creationTimestamp")),
            deletion_timestamp=parse_time(raw.get("deletionTimestamp")),
            labels={str(k): str(v) for k, v in dict(labels).items()},
            annotations={str(k): str(v) for k, v in dict(annotations).items()},
            finalizers=tuple(str(f) for f in finalizers),
            extra=_extra(raw, _META_FIELDS),
        )


@dataclass(frozen=True)
class Quota:
    cpu: str = "4"
    memory: str = "8Gi"
    storage: str = "50Gi"
    concurrent_sessions: int = 3

    def to_dict(self) -> JSON:
        return {
            "cpu": self.cpu,
            "memory": self.memory,
            "storage": self.storage,
            "concurrentSessions": self.concurrent_sessions,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Quota:
        sessions = raw.get("concurrentSessions", 3)
        return cls(
            cpu=str(raw.get("cpu", "4")),
            memory=str(raw.get("memory", "8Gi")),
            storage=str(raw.get("storage", "50Gi")),
            concurrent_sessions=sessions if isinstance(sessions, int) else 3,
        )


@dataclass(frozen=True)
class SandboxSpec:
    owner_email: str
    org_slug: str
    quota: Quota = field(default_factory=Quota)
    agent_catalogue: tuple[str, ...] = ()
    repos: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def default_agent(self) -> str:
        return self.agent_catalogue[0] if self.agent_catalogue else ""

    def to_dict(self) -> JSON:
        out: JSON = _copied(self.extra)
        out["owner"] = {"email": self.owner_email, "orgRef": {"slug": self.org_slug}}
        out["quota"] = self.quota.to_dict()
        if self.agent_catalogue:
            out["agentCatalogue"] = list(self.agent_catalogue)
        if self.repos:
            out["repos"] = [{"giteaRepo": repo} for repo in self.repos]
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> SandboxSpec:
        owner = raw.get("owner") or {}
        org_ref = owner.get("orgRef") or {} if isinstance(owner, dict) else {}
        repos = raw.get("repos") or []
        return cls(
            owner_email=str(owner.get("email", "")) if isinstance(owner, dict) else "",
            org_slug=str(org_ref.get("slug", "")) if isinstance(org_ref, dict) else "",
            quota=Quota.from_dict(raw.get("quota") or {}),
            agent_catalogue=tuple(str(a) for a in raw.get("agentCatalogue") or []),
            repos=tuple(str(r.get("giteaRepo", "")) for r in repos if isinstance(r, dict)),
            extra=_extra(raw, _SPEC_FIELDS),
        )


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str = ""
    message: str = ""
    last_transition_time: datetime | None = None

    def to_dict(self) -> JSON:
        out: JSON = {"type": self.type, "status": self.status}
        if self.reason:
            out["reason"] = self.reason
        if self.message:
            out["message"] = self.message
        if self.last_transition_time:
            out["lastTransitionTime"] = format_time(self.last_transition_time)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Condition:
        return cls(
            type=str(raw.get("type", "")),
            status=str(raw.get("status", "Unknown")),
            reason=str(raw.get("reason", "") or ""),
            message=str(raw.get("message", "") or ""),
            last_transition_time=parse_time(raw.get("lastTransitionTime")),
        )


@dataclass(frozen=True)
class Preview:
    pr_number: int
    url: str
    sha: str = ""

    def to_dict(self) -> JSON:
        out: JSON = {"prNumber": self.pr_number, "url": self.url}
        if self.sha:
            out["sha"] = self.sha
        return out


@dataclass(frozen=True)
class SandboxStatus:
    phase: str = ""
    conditions: tuple[Condition, ...] = ()
    sessions: int = 0
    storage_used: str = ""
    spend_30d: str = ""
    previews: tuple[Preview, ...] = ()
    observed_generation: int = 0
    last_activity_at: datetime | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    def to_dict(self) -> JSON:
        out: JSON = _copied(self.extra)
        if self.phase:
            out["phase"] = self.phase
        if self.conditions:
            out["conditions"] = [c.to_dict() for c in self.conditions]
        out["sessions"] = self.sessions
        if self.storage_used:
            out["storageUsed"] = self.storage_used
        if self.spend_30d:
            out["spend30d"] = self.spend_30d
        if self.previews:
            out["previews"] = [p.to_dict() for p in self.previews]
        if self.observed_generation:
            out["observedGeneration"] = self.observed_generation
        if self.last_activity_at:
            out["lastActivityAt"] = format_time_nano(self.last_activity_at)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> SandboxStatus:
        previews = []
        for p in raw.get("previews") or []:
            if isinstance(p, dict) and isinstance(p.get("prNumber"), int):
                previews.append(
                    Preview(p["prNumber"], str(p.get("url", "")), str(p.get("sha", "")))
                )
        sessions = raw.get("sessions", 0)
        observed = raw.get("observedGeneration", 0)
        return cls(
            phase=_str(raw, "phase"),
            conditions=tuple(
                Condition.from_dict(c) for c in raw.get("conditions") or [] if isinstance(c, dict)
            ),
            sessions=sessions if isinstance(sessions, int) else 0,
            storage_used=_str(raw, "storageUsed"),
            spend_30d=_str(raw, "spend30d"),
            previews=tuple(previews),
            observed_generation=observed if isinstance(observed, int) else 0,
            last_activity_at=parse_time(raw.get("lastActivityAt")),
            extra=_extra(raw, _STATUS_FIELDS),
        )


@dataclass(frozen=True)
class Sandbox:
    metadata: ObjectMeta
    spec: SandboxSpec
    status: SandboxStatus = field(default_factory=SandboxStatus)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def key(self) -> tuple[str, str]:
        return (self.metadata.namespace, self.metadata.name)

    @property
    def deleting(self) -> bool:
        return self.metadata.deletion_timestamp is not None

    def with_meta(self, **changes: Any) -> Sandbox:
        return replace(self, metadata=replace(self.metadata, **changes))

    def with_status(self, status: SandboxStatus) -> Sandbox:
        return replace(self, status=status)

    def to_dict(self) -> JSON:
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": self.metadata.to_dict(),
            "spec": self.spec.to_dict(),
            "status": self.status.to_dict(),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Sandbox:
        return cls(
            metadata=ObjectMeta.from_dict(raw.get("metadata") or {}),
            spec=SandboxSpec.from_dict(raw.get("spec") or {}),
            status=SandboxStatus.from_dict(raw.get("status") or {}),
        )
