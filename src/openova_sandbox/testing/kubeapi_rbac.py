"""RBAC for the fake API server (issue 13, "make the fake tell the truth"): requests made
with a token registered through ``FakeKube.add_user`` are authorized against the
Roles, ClusterRoles and their bindings stored in the fake, the way Kubernetes' RBAC
authorizer does; every other token stays all-powerful (the tests' own admin client).

What it models: rules by API group, resource (``plural`` or ``plural/subresource``),
verb and ``resourceNames`` (which never admit ``create``, ``list`` or ``watch``, as on a
real server); ClusterRoleBindings granting cluster-wide, RoleBindings granting in their
namespace (to a Role there or a ClusterRole); subjects by User, Group and ServiceAccount
(``system:serviceaccount:<ns>:<name>`` with its groups); and escalation prevention on
writing a RoleBinding or ClusterRoleBinding: allowed only with ``bind`` on the role it
names, or when the writer holds every permission of that role itself. Not modelled:
``escalate`` on writing roles, aggregated ClusterRoles, non-resource URLs (discovery is
open to everyone), impersonation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

RBAC = "rbac.authorization.k8s.io"
JSON = dict[str, Any]
NAMELESS_VERBS = frozenset({"create", "list", "watch", "deletecollection"})


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = field(default=())

    @classmethod
    def service_account(cls, namespace: str, name: str) -> User:
        return cls(
            f"system:serviceaccount:{namespace}:{name}",
            ("system:serviceaccounts", f"system:serviceaccounts:{namespace}"),
        )

    def all_groups(self) -> set[str]:
        return {*self.groups, "system:authenticated"}


def _objects(objects: Mapping[tuple[str, str], Mapping[Any, JSON]], plural: str) -> list[JSON]:
    return list((objects.get((RBAC, plural)) or {}).values())


def _subject_matches(subject: Mapping[str, Any], user: User, binding_ns: str) -> bool:
    kind = subject.get("kind")
    if kind == "User":
        return bool(subject.get("name") == user.name)
    if kind == "Group":
        return subject.get("name") in user.all_groups()
    if kind == "ServiceAccount":
        ns = subject.get("namespace") or binding_ns
        return user.name == f"system:serviceaccount:{ns}:{subject.get('name')}"
    return False


def _role_rules(
    objects: Mapping[tuple[str, str], Mapping[Any, JSON]], ref: Mapping[str, Any], ns: str
) -> list[JSON]:
    kind, name = ref.get("kind"), ref.get("name")
    if kind == "ClusterRole":
        store = objects.get((RBAC, "clusterroles")) or {}
        role = store.get(("", name))
    else:
        store = objects.get((RBAC, "roles")) or {}
        role = store.get((ns, name))
    return list((role or {}).get("rules") or [])


def rules_for(
    objects: Mapping[tuple[str, str], Mapping[Any, JSON]], user: User, namespace: str | None
) -> list[JSON]:
    """The rules that apply to ``user`` for a request in ``namespace`` (None:
    cluster-scoped or all namespaces: ClusterRoleBindings only)."""
    rules: list[JSON] = []
    for binding in _objects(objects, "clusterrolebindings"):
        if any(_subject_matches(s, user, "") for s in binding.get("subjects") or []):
            rules += _role_rules(objects, binding.get("roleRef") or {}, "")
    if namespace:
        for binding in _objects(objects, "rolebindings"):
            if binding["metadata"].get("namespace") != namespace:
                continue
            if any(_subject_matches(s, user, namespace) for s in binding.get("subjects") or []):
                rules += _role_rules(objects, binding.get("roleRef") or {}, namespace)
    return rules


def _has(values: Iterable[str], wanted: str) -> bool:
    values = list(values)
    return "*" in values or wanted in values


def rule_allows(rule: Mapping[str, Any], verb: str, group: str, resource: str, name: str) -> bool:
    if not (_has(rule.get("apiGroups") or [], group) and _has(rule.get("verbs") or [], verb)):
        return False
    if not _has(rule.get("resources") or [], resource):
        return False
    names = rule.get("resourceNames") or []
    if names:
        return verb not in NAMELESS_VERBS and bool(name) and name in names
    return True


def allowed(
    objects: Mapping[tuple[str, str], Mapping[Any, JSON]],
    user: User,
    *,
    verb: str,
    group: str,
    resource: str,
    namespace: str | None,
    name: str = "",
) -> bool:
    return any(
        rule_allows(rule, verb, group, resource, name)
        for rule in rules_for(objects, user, namespace)
    )


def forbidden_message(
    user: User, verb: str, group: str, resource: str, namespace: str | None, name: str
) -> str:
    what = f"{resource}.{group}" if group else resource
    where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    return (
        f'{what} "{name}" is forbidden: User "{user.name}" cannot {verb} resource '
        f'"{resource}" in API group "{group}"{where}'
    )


def escalation(
    objects: Mapping[tuple[str, str], Mapping[Any, JSON]],
    user: User,
    binding: Mapping[str, Any],
    namespace: str | None,
) -> str | None:
    """Why writing ``binding`` (a RoleBinding in ``namespace``, or a ClusterRoleBinding
    with ``namespace`` None) is an escalation, or None when it is allowed."""
    ref = binding.get("roleRef") or {}
    plural = "clusterroles" if ref.get("kind") == "ClusterRole" else "roles"
    name = str(ref.get("name") or "")
    if allowed(
        objects, user, verb="bind", group=RBAC, resource=plural, namespace=namespace, name=name
    ):
        return None
    missing = []
    for rule in _role_rules(objects, ref, namespace or ""):
        for group in rule.get("apiGroups") or []:
            for resource in rule.get("resources") or []:
                for verb in rule.get("verbs") or []:
                    for target in rule.get("resourceNames") or [""]:
                        if not allowed(
                            objects,
                            user,
                            verb=verb,
                            group=group,
                            resource=resource,
                            namespace=namespace,
                            name=target,
                        ):
                            missing.append(f"{{{group!r}, {resource!r}, {verb!r}}}")
    if not missing:
        return None
    return (
        f'user "{user.name}" is attempting to grant RBAC permissions not currently held: '
        + ", ".join(sorted(set(missing))[:10])
    )
