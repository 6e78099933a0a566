"""Pod Security admission for the fake API server (issue 13): a Pod created in a
namespace labelled ``pod-security.kubernetes.io/enforce: restricted`` must meet the
``restricted`` profile of Kubernetes' Pod Security Standards, or the create is refused
(403, as the real admission plugin answers). Checked: host namespaces and ports,
privileged containers, added capabilities (NET_BIND_SERVICE only) and dropping ALL,
allowPrivilegeEscalation false, runAsNonRoot, runAsUser not 0, a RuntimeDefault or
Localhost seccomp profile, volume types, /proc mount, sysctls. ``baseline`` checks are
the subset a restricted pod meets anyway; the ``warn`` and ``audit`` modes and checks of
workload templates (StatefulSets) are not modelled, only enforcement on Pods.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ENFORCE = "pod-security.kubernetes.io/enforce"
ALLOWED_VOLUMES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)


def _containers(spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [
        *(spec.get("initContainers") or []),
        *(spec.get("containers") or []),
        *(spec.get("ephemeralContainers") or []),
    ]


def restricted_violations(spec: Mapping[str, Any]) -> list[str]:
    """What in a pod ``spec`` breaks the restricted profile (empty: nothing)."""
    out: list[str] = []
    pod_sc = spec.get("securityContext") or {}
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(host):
            out.append(f"host namespaces ({host}=true)")
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            out.append(f'restricted volume types (volume "{volume.get("name")}")')
    if pod_sc.get("sysctls"):
        out.append("forbidden sysctls")
    for c in _containers(spec):
        name = c.get("name", "")
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            out.append(f'privileged (container "{name}")')
        if any(p.get("hostPort") for p in c.get("ports") or []):
            out.append(f'hostPort (container "{name}")')
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f'allowPrivilegeEscalation != false (container "{name}")')
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f'unrestricted capabilities (container "{name}" must drop ALL)')
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append(f'unrestricted capabilities (container "{name}" adds some)')
        non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        if non_root is not True:
            out.append(f'runAsNonRoot != true (container "{name}")')
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            out.append(f'runAsUser=0 (container "{name}")')
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f'seccompProfile (container "{name}" must be RuntimeDefault)')
        if sc.get("procMount") not in (None, "Default"):
            out.append(f'procMount (container "{name}")')
    return out


def admission_refusal(namespace: Mapping[str, Any], pod: Mapping[str, Any]) -> str | None:
    """The Forbidden message for ``pod`` in ``namespace``, or None when admitted."""
    level = ((namespace.get("metadata") or {}).get("labels") or {}).get(ENFORCE)
    if level != "restricted":
        return None
    problems = restricted_violations(pod.get("spec") or {})
    if not problems:
        return None
    name = (pod.get("metadata") or {}).get("name", "")
    return f'pods "{name}" is forbidden: violates PodSecurity "restricted:latest": ' + ", ".join(
        problems
    )
