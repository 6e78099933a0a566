"""Render the Kubernetes objects of one Sandbox (sandbox-resource.md, "What the
Kubernetes controller creates"). Pure: plain dicts in Kubernetes JSON shape, no client.

Decisions:
- Everything namespaced lives in the sandbox's own workspace namespace, so deleting that
  namespace removes it all; nothing carries an ownerReference (a cluster-scoped
  Namespace cannot be owned by a namespaced Sandbox, and children live in another
  namespace than their Sandbox).
- Volumes are standalone PVCs (``repo-<slug>`` and ``home``), not volumeClaimTemplates:
  the spec names them, and they outlive a StatefulSet that is recreated.
- The StatefulSet's replicas are 1, or 0 while suspended; ``concurrentSessions`` never
  scales it (it is the terminal server's session limit instead).
- The pod's container limits equal the quota (the agents run as children of the
  terminal server, so the sandbox's CPU and memory are that container's); it requests
  only a fraction of it (``request_percent``, default 10 %), so an idle terminal does
  not reserve a node's worth of CPU and memory (issue 13).
- Least privilege (issue 13): the workspace's RoleBinding names the pre-made ClusterRole
  ``openova-sandbox-workspace`` (deploy/kubernetes/rbac-workspace.yaml; read-only, no
  secrets), which the operator may ``bind`` by that name only, instead of a Role the
  operator would have to hold itself; the namespace enforces Pod Security
  ``restricted``; the quota caps pods and forbids LoadBalancer and NodePort services;
  egress is denied except DNS, git, the control plane and the model gateway, and never
  to the cloud metadata address.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Any, TypedDict
from urllib.parse import urlsplit

from ... import __version__
from ...domain.model import ANNOTATION_SUB, Sandbox
from ...domain.naming import repo_name
from ...domain.quantity import parse_quantity, smaller
from .names import owner_label, repo_pvc, sandbox_key, sandbox_label

JSON = dict[str, Any]

MANAGED_BY = "openova-sandbox"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_SANDBOX = "openova.io/sandbox"
LABEL_ORG = "openova.io/organization"
LABEL_OWNER = "openova.io/sandbox-owner"
LABEL_SANDBOX_NAMESPACE = "openova.io/sandbox-namespace"
ANNOTATION_HOLDER = "openova.io/sandbox-key"

PTY_NAME = "pty-server"
PTY_PORT = 7681
SERVICE_ACCOUNT = "sandbox"
QUOTA_NAME = "sandbox-quota"
MCP_CONFIGMAP = "sandbox-mcp-config"
HOME_PVC = "home"
NETWORK_POLICY = "sandbox-ingress"
# the pre-made ClusterRole the workspace's RoleBinding names (rbac-workspace.yaml)
WORKSPACE_CLUSTER_ROLE = "openova-sandbox-workspace"
# pods a workspace may run at once: the terminal server, and one more while a
# StatefulSet update replaces it
POD_LIMIT = "2"
# cloud instance metadata (AWS, GCP, Azure, OpenStack): never reachable from a sandbox
METADATA_CIDRS = ("169.254.169.254/32",)
# git over HTTPS and SSH (clones, and the agents' pushes)
GIT_PORTS = (443, 22)
GIT_SECRET = "sandbox-git-credentials"
# the bearer secret that opens the terminal server's /idle to the operator's probe
PROBE_SECRET = "pty-probe"
# the sandbox's own model-gateway token (key ``token``), written by the operator from
# its ledger (``gateway_token.py``) and read by the pod as SANDBOX_MODEL_GATEWAY_TOKEN
GATEWAY_TOKEN_SECRET = "sandbox-gateway-token"
# the sandbox's share grant key (key ``key``), derived by the operator from the grant
# secret (``share_grant_key.py``) and read by the pod as SANDBOX_SHARE_GRANT_KEY
SHARE_GRANT_KEY_SECRET = "sandbox-share-grant"
# the sandbox's MCP token (key ``token``), signed by the operator with the control
# plane's issuer key (``mcp_token.py``) and read by the pod as SANDBOX_MCP_TOKEN
MCP_TOKEN_SECRET = "sandbox-mcp-token"
# the MCP server's ServiceAccount in the control plane's namespace (mcp.yaml): a second
# subject of each workspace's RoleBinding, for its k8s.read.* tools
MCP_SERVICE_ACCOUNT = "sandbox-mcp"
WORKSPACE = "/workspace"
CLONE_CONTAINER = "git-clone"
WORKSPACE_SUBPATH = "workspace"  # the folder of the home volume mounted at WORKSPACE
HOME = "/home/sandbox"
TMP = "/tmp"  # noqa: S108 - an emptyDir inside the pod, not the host's /tmp
RUN_AS = 1000


class RenderError(ValueError):
    """The spec cannot be turned into valid objects (condition ``ManifestRenderFailed``)."""


class ChildRef(TypedDict):
    apiVersion: str
    kind: str
    namespace: str  # "" for cluster-scoped
    name: str


@dataclass(frozen=True)
class RenderConfig:
    """Cluster-specific choices; defaults suit a plain cluster with a Gateway API gateway."""

    image: str = f"ghcr.io/openova/sandbox:{__version__}"
    git_image: str = "alpine/git:2.45.2"
    image_pull_policy: str = "IfNotPresent"
    repo_storage: str = "5Gi"
    home_storage: str = "5Gi"
    storage_class: str = ""
    git_base_url: str = ""  # e.g. https://gitea.example.com (repos are <base>/<org>/<name>.git)
    gateway_name: str = "catalyst-gateway"
    gateway_namespace: str = "catalyst-system"
    control_plane_namespace: str = "catalyst-system"
    # HTTPRoute hostname; ``{namespace}`` (the Sandbox's own, i.e. its org's) and
    # ``{org}`` are filled in, so that a sandbox name used in two orgs gets two
    # hostnames instead of clashing on one; empty: the gateway's listeners decide
    sandbox_host: str = ""
    # render the HTTPRoute (False: the Gateway API is not installed; the API proxies
    # terminals itself, and condition RouteReady says the route was skipped)
    http_route: bool = True
    oidc_issuer: str = ""
    jwks_url: str = ""
    # the audience the control plane checks on bearers, and its console client (the
    # audience of the ID tokens it relays for console sessions): the terminal server
    # admits a token naming one of them (empty: no audience, the control plane's rule)
    oidc_audience: str = ""
    oidc_client_id: str = ""
    # the control plane's claim mapping as (variable, value) pairs, every one of them
    # (``config.claim_mapping_env``): the terminal server maps relayed tokens the same way
    claim_mapping: tuple[tuple[str, str], ...] = ()
    ring_buffer_bytes: int = 2 * 1024 * 1024
    mcp_url: str = ""  # the agents' MCP server; empty: none configured
    mcp_needs_token: bool = False  # mount the ServiceAccount token for the MCP server
    # callers without an org live in this namespace (the control plane's setting, passed
    # on so the terminal server applies the same ownership rule)
    default_namespace: str = ""
    # the model gateway's Service (its root, without /llm): the terminal server gives its
    # agents OPENAI_BASE_URL/ANTHROPIC_BASE_URL under it (docs/gateway.md); empty: none
    model_gateway_url: str = "http://sandbox-gateway.catalyst-system.svc"
    # the operator holds the gateway's ledger and writes each sandbox's token Secret:
    # the pod reads SANDBOX_MODEL_GATEWAY_TOKEN from it (False: no ledger, no token)
    model_gateway_token: bool = False
    # the operator has the share grant secret and writes each sandbox's grant key
    # Secret: the pod reads SANDBOX_SHARE_GRANT_KEY from it (False: share links are
    # refused in Kubernetes mode, docs/shares.md)
    share_grants: bool = False
    # the operator has the issuer key and writes each sandbox's MCP token Secret: the
    # pod reads SANDBOX_MCP_TOKEN from it and SANDBOX_MCP_URL (``mcp_url``) beside it,
    # and its agents' MCP client config names both (False: no MCP for the agents)
    mcp_token: bool = False
    # the share of the quota the terminal container requests (its limits are the quota)
    request_percent: int = 10
    # size limit of the pod's /tmp and its ephemeral-storage limit (also quota'd)
    tmp_size: str = "1Gi"
    ephemeral_storage: str = "4Gi"
    # namespaces whose pods may open the terminal server besides the gateway's and the
    # control plane's: the data plane (e.g. Envoy Gateway's proxies run in
    # envoy-gateway-system, not where the Gateway object is)
    ingress_namespaces: tuple[str, ...] = ()


def labels(sandbox: Sandbox) -> dict[str, str]:
    return {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_SANDBOX: sandbox_label(sandbox),
        LABEL_ORG: sandbox.spec.org_slug,
        LABEL_OWNER: owner_label(sandbox),
        LABEL_SANDBOX_NAMESPACE: sandbox.namespace,
    }


def selector_labels(sandbox: Sandbox) -> dict[str, str]:
    return {"app.kubernetes.io/name": PTY_NAME, LABEL_SANDBOX: sandbox_label(sandbox)}


def ref(obj: Mapping[str, Any]) -> ChildRef:
    meta = obj["metadata"]
    return ChildRef(
        apiVersion=obj["apiVersion"],
        kind=obj["kind"],
        namespace=meta.get("namespace", ""),
        name=meta["name"],
    )


def _meta(sandbox: Sandbox, name: str, namespace: str | None) -> JSON:
    meta: JSON = {"name": name, "labels": labels(sandbox)}
    if namespace is not None:
        meta["namespace"] = namespace
    return meta


# Pod Security admission: the workspace runs only pods that meet ``restricted``
POD_SECURITY = {
    f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "audit", "warn")
}


def render_namespace(sandbox: Sandbox, namespace: str) -> JSON:
    meta = _meta(sandbox, namespace, None)
    meta["labels"].update(POD_SECURITY)
    meta["annotations"] = {ANNOTATION_HOLDER: sandbox_key(sandbox)}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def _repos(sandbox: Sandbox) -> list[str]:
    repos = list(dict.fromkeys(sandbox.spec.repos))
    seen: dict[str, str] = {}
    for repo in repos:
        for key, what in ((repo_pvc(repo), "volume"), (repo_name(repo), "folder")):
            other = seen.get(f"{what}:{key}")
            if other is not None:
                raise RenderError(
                    f"repos {other!r} and {repo!r} would share the {what} {key!r}; "
                    "give them distinct names"
                )
            seen[f"{what}:{key}"] = repo
    return repos


def render_children(
    sandbox: Sandbox, namespace: str, config: RenderConfig, *, replicas: int = 1
) -> list[JSON]:
    """Every namespaced child, in creation order (access rules before the workload)."""
    repos = _repos(sandbox)
    return [
        _quota(sandbox, namespace, config),
        _service_account(sandbox, namespace, config),
        _role_binding(sandbox, namespace, config),
        *[_pvc(sandbox, namespace, repo_pvc(r), config.repo_storage, config) for r in repos],
        _pvc(sandbox, namespace, HOME_PVC, config.home_storage, config),
        _mcp_config(sandbox, namespace, config),
        _service(sandbox, namespace),
        _statefulset(sandbox, namespace, config, repos=repos, replicas=replicas),
        *([_http_route(sandbox, namespace, config)] if config.http_route else []),
        _network_policy(sandbox, namespace, config),
    ]


def _quota(sandbox: Sandbox, ns: str, config: RenderConfig) -> JSON:
    q = sandbox.spec.quota
    ephemeral = config.ephemeral_storage
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": _meta(sandbox, QUOTA_NAME, ns),
        "spec": {
            "hard": {
                "requests.cpu": q.cpu,
                "limits.cpu": q.cpu,
                "requests.memory": q.memory,
                "limits.memory": q.memory,
                "requests.storage": q.storage,
                "requests.ephemeral-storage": ephemeral,
                "limits.ephemeral-storage": ephemeral,
                "pods": POD_LIMIT,
                "services.loadbalancers": "0",
                "services.nodeports": "0",
            }
        },
    }


def _service_account(sandbox: Sandbox, ns: str, config: RenderConfig) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(sandbox, SERVICE_ACCOUNT, ns),
        "automountServiceAccountToken": config.mcp_needs_token,
    }


# What the sandbox's ServiceAccount may do in its own namespace (the ClusterRole
# openova-sandbox-workspace in deploy/kubernetes/rbac-workspace.yaml holds exactly these;
# a test keeps them equal): read what runs there, for an MCP server that reports on it.
# No secrets, no writes: the agents' workloads are the terminal server's children.
WORKSPACE_RULES: list[JSON] = [
    {
        "apiGroups": [""],
        "resources": [
            "pods",
            "pods/log",
            "services",
            "configmaps",
            "persistentvolumeclaims",
            "events",
        ],
        "verbs": ["get", "list", "watch"],
    },
    {
        "apiGroups": ["apps"],
        "resources": ["deployments", "statefulsets"],
        "verbs": ["get", "list", "watch"],
    },
]


def _role_binding(sandbox: Sandbox, ns: str, config: RenderConfig) -> JSON:
    subjects = [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": ns}]
    if config.mcp_url:
        # the MCP server's k8s.read.* tools read this namespace with its own
        # ServiceAccount (deploy/kubernetes/mcp.yaml): the same read-only rules, here only
        subjects.append(
            {
                "kind": "ServiceAccount",
                "name": MCP_SERVICE_ACCOUNT,
                "namespace": config.control_plane_namespace,
            }
        )
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(sandbox, SERVICE_ACCOUNT, ns),
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": WORKSPACE_CLUSTER_ROLE,
        },
        "subjects": subjects,
    }


def _pvc(sandbox: Sandbox, ns: str, name: str, size: str, config: RenderConfig) -> JSON:
    spec: JSON = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": size}},
    }
    if config.storage_class:
        spec["storageClassName"] = config.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _meta(sandbox, name, ns),
        "spec": spec,
    }


def mcp_client_config(sandbox: Sandbox, config: RenderConfig) -> JSON:
    """The agents' MCP client configuration (what ``mcp.json`` in the ConfigMap holds)."""
    servers: JSON = {}
    if config.mcp_url:
        servers["openova-sandbox"] = {"type": "http", "url": config.mcp_url}
    capabilities = sandbox.spec.extra.get("capabilities") or []
    return {
        "sandbox": sandbox.name,
        "agents": list(sandbox.spec.agent_catalogue),
        "capabilities": [str(c) for c in capabilities],
        "mcpServers": servers,
    }


def _mcp_config(sandbox: Sandbox, ns: str, config: RenderConfig) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(sandbox, MCP_CONFIGMAP, ns),
        "data": {"mcp.json": json.dumps(mcp_client_config(sandbox, config), sort_keys=True)},
    }


def _service(sandbox: Sandbox, ns: str) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(sandbox, PTY_NAME, ns),
        "spec": {
            "selector": selector_labels(sandbox),
            "ports": [
                {"name": "http", "port": PTY_PORT, "targetPort": PTY_PORT, "protocol": "TCP"}
            ],
        },
    }


_HARDENED = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "runAsUser": RUN_AS,
    "runAsGroup": RUN_AS,
    "seccompProfile": {"type": "RuntimeDefault"},
}

# Clones each repo once: a checkout with a commit (a restarted pod) is left alone, a
# half-done one is retried, and a volume's lost+found does not get in the way. The token
# comes from an optional secret and reaches git through a credential helper, never
# through the URL or argv.
CLONE_SCRIPT = r"""set -eu
helper='!f() { test -z "$GIT_TOKEN" || printf "username=sandbox\npassword=%s\n" "$GIT_TOKEN"; }; f'
while read -r dir url; do
  [ -n "$dir" ] || continue
  if git -C "$dir" rev-parse -q --verify HEAD >/dev/null 2>&1; then
    echo "keep $dir"; continue
  fi
  git -c init.defaultBranch=main init -q "$dir"
  git -C "$dir" remote remove origin 2>/dev/null || true
  git -C "$dir" remote add origin "$url"
  git -C "$dir" -c credential.helper="$helper" fetch -q --depth 1 origin HEAD
  git -C "$dir" checkout -q FETCH_HEAD
  echo "cloned $dir"
done <<REPOS_END
$REPOS
REPOS_END
"""


def share(quantity: str, percent: int, *, cpu: bool) -> str:
    """``percent`` % of a quota ``quantity``, in millicores or MiB (rounded down), at least
    10m or 32Mi and never above the quantity itself."""
    value = parse_quantity(quantity)
    if value is None:
        return quantity
    part = value * Decimal(percent) / 100
    if cpu:
        text = f"{max(int((part * 1000).to_integral_value(ROUND_DOWN)), 10)}m"
    else:
        mib = int((part / (1024 * 1024)).to_integral_value(ROUND_DOWN))
        text = f"{max(mib, 32)}Mi"
    return text if (parse_quantity(text) or value) < value else quantity


def _clone_url(repo: str, config: RenderConfig) -> str:
    base = config.git_base_url.strip().rstrip("/")
    if not base:
        # a relative URL would only fail inside the pod's init container, later and
        # less clearly (condition ManifestRenderFailed names the setting instead)
        raise RenderError(
            f"repo {repo!r} needs a git server: the operator has no SANDBOX_GIT_BASE_URL"
        )
    return f"{base}/{repo}.git"


def _statefulset(
    sandbox: Sandbox, ns: str, config: RenderConfig, *, repos: list[str], replicas: int
) -> JSON:
    spec = sandbox.spec
    repo_mounts = [{"name": repo_pvc(r), "mountPath": f"{WORKSPACE}/{repo_name(r)}"} for r in repos]
    volumes: list[JSON] = [
        {"name": repo_pvc(r), "persistentVolumeClaim": {"claimName": repo_pvc(r)}} for r in repos
    ]
    volumes += [
        {"name": HOME_PVC, "persistentVolumeClaim": {"claimName": HOME_PVC}},
        {"name": "mcp-config", "configMap": {"name": MCP_CONFIGMAP}},
        {"name": "tmp", "emptyDir": {"sizeLimit": config.tmp_size}},
    ]
    owner_sub = sandbox.metadata.annotations.get(ANNOTATION_SUB, "")
    env = [
        {"name": "SANDBOX_ID", "value": sandbox.name},
        {"name": "SANDBOX_NAMESPACE", "value": sandbox.namespace},
        {"name": "CATALYST_SANDBOX_DEFAULT_NAMESPACE", "value": config.default_namespace},
        {"name": "SANDBOX_OWNER_EMAIL", "value": spec.owner_email},
        {"name": "SANDBOX_OWNER_SUB", "value": owner_sub},
        {"name": "SANDBOX_ORG_ID", "value": spec.org_slug},
        {"name": "SANDBOX_DEFAULT_AGENT", "value": spec.default_agent},
        {"name": "SANDBOX_SESSION_LIMIT", "value": str(spec.quota.concurrent_sessions)},
        {"name": "SANDBOX_RING_BUFFER_BYTES", "value": str(config.ring_buffer_bytes)},
        {"name": "SANDBOX_OIDC_ISSUER", "value": config.oidc_issuer},
        {"name": "SANDBOX_JWKS_URL", "value": config.jwks_url},
        {"name": "SANDBOX_OIDC_AUDIENCE", "value": config.oidc_audience},
        {"name": "SANDBOX_OIDC_CLIENT_ID", "value": config.oidc_client_id},
        *({"name": name, "value": value} for name, value in config.claim_mapping),
        {"name": "SANDBOX_WORKDIR", "value": WORKSPACE},
        {"name": "SANDBOX_MCP_CONFIG", "value": "/etc/openova/mcp/mcp.json"},
        # the agents' model gateway; never a provider key
        {"name": "SANDBOX_MODEL_GATEWAY_URL", "value": config.model_gateway_url},
        {"name": "HOME", "value": HOME},
        {
            "name": "SANDBOX_PROBE_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": PROBE_SECRET, "key": "token", "optional": True}},
        },
    ]
    if config.model_gateway_token:
        # the sandbox's own gateway token, from its Secret (never a literal in the pod
        # spec); not optional: the operator writes the Secret before the StatefulSet,
        # and a pod without it waits rather than starting agents without a key
        env.append(
            {
                "name": "SANDBOX_MODEL_GATEWAY_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": GATEWAY_TOKEN_SECRET, "key": "token"}},
            }
        )
    if config.share_grants:
        # the key that admits share links' viewers (this sandbox's only); written
        # before the StatefulSet, like the gateway token
        env.append(
            {
                "name": "SANDBOX_SHARE_GRANT_KEY",
                "valueFrom": {"secretKeyRef": {"name": SHARE_GRANT_KEY_SECRET, "key": "key"}},
            }
        )
    if config.mcp_token and config.mcp_url:
        # the agents' MCP server and the sandbox's token for it (written before the
        # StatefulSet); the terminals put both into each agent's MCP client config
        env += [
            {"name": "SANDBOX_MCP_URL", "value": config.mcp_url},
            {
                "name": "SANDBOX_MCP_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": MCP_TOKEN_SECRET, "key": "token"}},
            },
        ]
    probe = {"httpGet": {"path": "/healthz", "port": PTY_PORT}, "periodSeconds": 10}
    main: JSON = {
        "name": PTY_NAME,
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        "args": ["sandbox", "pty-server"],
        "ports": [{"name": "http", "containerPort": PTY_PORT, "protocol": "TCP"}],
        "env": env,
        "resources": {
            "requests": {
                "cpu": share(spec.quota.cpu, config.request_percent, cpu=True),
                "memory": share(spec.quota.memory, config.request_percent, cpu=False),
                "ephemeral-storage": smaller("256Mi", config.ephemeral_storage),
            },
            "limits": {
                "cpu": spec.quota.cpu,
                "memory": spec.quota.memory,
                "ephemeral-storage": config.ephemeral_storage,
            },
        },
        "readinessProbe": {**probe, "initialDelaySeconds": 1},
        "livenessProbe": {**probe, "initialDelaySeconds": 10, "failureThreshold": 6},
        "securityContext": dict(_HARDENED),
        "volumeMounts": [
            # the workspace root is a folder of the home volume, so it exists (and is
            # writable, and survives restarts) with or without repos; each repo volume
            # is mounted inside it
            {"name": HOME_PVC, "mountPath": WORKSPACE, "subPath": WORKSPACE_SUBPATH},
            *repo_mounts,
            {"name": HOME_PVC, "mountPath": HOME},
            {"name": "mcp-config", "mountPath": "/etc/openova/mcp", "readOnly": True},
            {"name": "tmp", "mountPath": TMP},
        ],
    }
    pod_spec: JSON = {
        "serviceAccountName": SERVICE_ACCOUNT,
        "automountServiceAccountToken": config.mcp_needs_token,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            # a volume already owned by the group is not walked again at each start
            # (a large workspace would otherwise delay every wake)
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [main],
        "volumes": volumes,
    }
    if repos:
        listing = "\n".join(f"{WORKSPACE}/{repo_name(r)} {_clone_url(r, config)}" for r in repos)
        pod_spec["initContainers"] = [
            {
                "name": CLONE_CONTAINER,
                "image": config.git_image,
                # git's last output becomes the termination message on failure, which
                # the operator copies (scrubbed) into the CloneFailed condition
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "imagePullPolicy": config.image_pull_policy,
                "command": ["/bin/sh", "-c", CLONE_SCRIPT],
                "env": [
                    {"name": "REPOS", "value": listing},
                    {"name": "HOME", "value": TMP},
                    {
                        "name": "GIT_TOKEN",
                        "valueFrom": {
                            "secretKeyRef": {"name": GIT_SECRET, "key": "token", "optional": True}
                        },
                    },
                ],
                # a pod's quota charge is the larger of its init and main containers:
                # kept within the sandbox's quota so a small quota still admits the pod
                "resources": {
                    "requests": {
                        "cpu": smaller("100m", spec.quota.cpu),
                        "memory": smaller("128Mi", spec.quota.memory),
                        "ephemeral-storage": smaller("64Mi", config.ephemeral_storage),
                    },
                    "limits": {
                        "cpu": smaller("500m", spec.quota.cpu),
                        "memory": smaller("256Mi", spec.quota.memory),
                        "ephemeral-storage": smaller("256Mi", config.ephemeral_storage),
                    },
                },
                "securityContext": dict(_HARDENED),
                "volumeMounts": [*repo_mounts, {"name": "tmp", "mountPath": TMP}],
            }
        ]
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _meta(sandbox, PTY_NAME, ns),
        "spec": {
            "replicas": replicas,
            "serviceName": PTY_NAME,
            "selector": {"matchLabels": selector_labels(sandbox)},
            "template": {
                "metadata": {"labels": {**labels(sandbox), **selector_labels(sandbox)}},
                "spec": pod_spec,
            },
        },
    }


def session_path(sandbox: Sandbox) -> str:
    return f"/sessions/{sandbox.name}"


def route_host(sandbox: Sandbox, config: RenderConfig) -> str:
    """The route's hostname: ``sandbox_host`` with ``{namespace}`` and ``{org}`` filled in
    (an invalid result fails the render rather than the route's create)."""
    host = config.sandbox_host.replace("{namespace}", sandbox.namespace).replace(
        "{org}", sandbox.spec.org_slug
    )
    if not _HOSTNAME.match(host):
        raise RenderError(f"SANDBOX_KUBE_SANDBOX_HOST gives {host!r}, which is not a DNS name")
    return host


_HOSTNAME = re.compile(
    r"^(\*\.)?([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)*[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
)


def _http_route(sandbox: Sandbox, ns: str, config: RenderConfig) -> JSON:
    spec: JSON = {
        "parentRefs": [{"name": config.gateway_name, "namespace": config.gateway_namespace}],
        "rules": [
            {
                "matches": [{"path": {"type": "PathPrefix", "value": session_path(sandbox)}}],
                "backendRefs": [{"name": PTY_NAME, "port": PTY_PORT}],
            }
        ],
    }
    if config.sandbox_host:
        spec["hostnames"] = [route_host(sandbox, config)]
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": _meta(sandbox, PTY_NAME, ns),
        "spec": spec,
    }


def service_namespace(url: str) -> str | None:
    """The namespace of an in-cluster Service URL (``<service>.<namespace>.svc...``)."""
    parts = (urlsplit(url).hostname or "").split(".")
    if len(parts) >= 3 and parts[2] == "svc":
        return parts[1]
    return None


def _namespaces(names: set[str]) -> JSON:
    return {
        "namespaceSelector": {
            "matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": sorted(names)}
            ]
        }
    }


def _network_policy(sandbox: Sandbox, ns: str, config: RenderConfig) -> JSON:
    """Ingress: the terminal port, from the gateway's, the control plane's and the
    configured data-plane namespaces. Egress: DNS; the control plane (the API's JWKS)
    and the model gateway; git over HTTPS/SSH anywhere but the metadata address.
    Nothing else: an agent reaches models only through the gateway."""
    internal = {config.control_plane_namespace}
    for url in (config.model_gateway_url, config.jwks_url):
        namespace = service_namespace(url)
        if namespace:
            internal.add(namespace)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(sandbox, NETWORK_POLICY, ns),
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    "from": [
                        _namespaces(
                            {
                                config.gateway_namespace,
                                config.control_plane_namespace,
                                *config.ingress_namespaces,
                            }
                        )
                    ],
                    "ports": [{"protocol": "TCP", "port": PTY_PORT}],
                }
            ],
            "egress": [
                {
                    "to": [{"namespaceSelector": {}}],
                    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                },
                {"to": [_namespaces(internal)]},
                {
                    "to": [
                        {"ipBlock": {"cidr": "0.0.0.0/0", "except": list(METADATA_CIDRS)}},
                    ],
                    "ports": [{"protocol": "TCP", "port": port} for port in GIT_PORTS],
                },
            ],
        },
    }
