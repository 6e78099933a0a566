"""The resource types the fake API server knows, and the discovery documents for them.

Built-in kinds are the ones this project's operator touches. Custom resources appear
only when their CustomResourceDefinition object is created, exactly like a real cluster,
so "CRD not installed" is a state tests can reach.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]

CRD_GROUP = "apiextensions.k8s.io"


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    status_subresource: bool = False
    # spec-bearing kinds count ``metadata.generation``; plain data kinds (ConfigMap) do not
    generation: bool = False
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    # set for custom resources: their openAPIV3Schema, enforced on every write
    schema: Mapping[str, Any] | None = None
    custom: bool = False
    extra_subresources: tuple[str, ...] = field(default=())

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def qualified(self) -> str:
        """``sandboxes.sandbox.openova.io`` — the name used in error messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


def _rt(group: str, plural: str, kind: str, *, namespaced: bool = True, **kw: Any) -> ResourceType:
    version = "v1"
    singular = kw.pop("singular", kind.lower())
    return ResourceType(group, version, plural, kind, namespaced, singular=singular, **kw)


BUILTIN: tuple[ResourceType, ...] = (
    _rt(
        "",
        "namespaces",
        "Namespace",
        namespaced=False,
        status_subresource=True,
        short_names=("ns",),
    ),
    _rt("", "resourcequotas", "ResourceQuota", status_subresource=True, short_names=("quota",)),
    _rt("", "serviceaccounts", "ServiceAccount", short_names=("sa",)),
    _rt("", "configmaps", "ConfigMap", short_names=("cm",)),
    _rt("", "secrets", "Secret"),
    _rt("", "services", "Service", status_subresource=True, short_names=("svc",)),
    _rt(
        "",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
        status_subresource=True,
        short_names=("pvc",),
    ),
    _rt("", "pods", "Pod", status_subresource=True, short_names=("po",)),
    _rt("", "events", "Event", short_names=("ev",)),
    _rt("rbac.authorization.k8s.io", "roles", "Role"),
    _rt("rbac.authorization.k8s.io", "rolebindings", "RoleBinding"),
    _rt("rbac.authorization.k8s.io", "clusterroles", "ClusterRole", namespaced=False),
    _rt("rbac.authorization.k8s.io", "clusterrolebindings", "ClusterRoleBinding", namespaced=False),
    _rt(
        "apps",
        "statefulsets",
        "StatefulSet",
        status_subresource=True,
        generation=True,
        short_names=("sts",),
        extra_subresources=("scale",),
    ),
    _rt(
        "apps",
        "deployments",
        "Deployment",
        status_subresource=True,
        generation=True,
        short_names=("deploy",),
    ),
    _rt(
        "networking.k8s.io",
        "networkpolicies",
        "NetworkPolicy",
        generation=True,
        short_names=("netpol",),
    ),
    _rt(
        "gateway.networking.k8s.io",
        "httproutes",
        "HTTPRoute",
        status_subresource=True,
        generation=True,
    ),
    _rt("coordination.k8s.io", "leases", "Lease"),
    _rt("events.k8s.io", "events", "Event"),
    _rt(
        CRD_GROUP,
        "customresourcedefinitions",
        "CustomResourceDefinition",
        namespaced=False,
        status_subresource=True,
        generation=True,
        short_names=("crd", "crds"),
    ),
)


def from_crd(crd: Mapping[str, Any]) -> list[ResourceType]:
    """The served versions of a CustomResourceDefinition, as resource types."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    out: list[ResourceType] = []
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        out.append(
            ResourceType(
                group=str(spec.get("group", "")),
                version=str(version.get("name", "v1")),
                plural=str(names.get("plural", "")),
                kind=str(names.get("kind", "")),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                singular=str(names.get("singular", "")),
                status_subresource="status" in (version.get("subresources") or {}),
                generation=True,
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                schema=schema,
                custom=True,
            )
        )
    return out


VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


def api_resource_list(group_version: str, types: Iterable[ResourceType]) -> JSON:
    resources: list[JSON] = []
    for rt in types:
        resources.append(
            {
                "name": rt.plural,
                "singularName": rt.singular,
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": VERBS,
                **({"shortNames": list(rt.short_names)} if rt.short_names else {}),
                **({"categories": list(rt.categories)} if rt.categories else {}),
            }
        )
        subs = (["status"] if rt.status_subresource else []) + list(rt.extra_subresources)
        for sub in subs:
            resources.append(
                {
                    "name": f"{rt.plural}/{sub}",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "kind": rt.kind if sub == "status" else "Scale",
                    "verbs": ["get", "patch", "update"],
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }


def api_group(name: str, versions: list[str]) -> JSON:
    entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": name,
        "versions": entries,
        "preferredVersion": entries[0],
    }
