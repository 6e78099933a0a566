"""The rendered objects: what the spec lists, valid against the Kubernetes schemas.

Built-in kinds are validated offline with ``kubernetes-validate`` (it ships the
Kubernetes OpenAPI schemas, strict mode: unknown fields are errors). The HTTPRoute is a
Gateway API custom resource no PyPI package ships a schema for; its shape is checked
field by field instead.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from openova_sandbox.controller.kube.names import (
    dns_label,
    hashed_namespace,
    plain_namespace,
    repo_pvc,
)
from openova_sandbox.controller.kube.render import (
    CLONE_SCRIPT,
    WORKSPACE_CLUSTER_ROLE,
    WORKSPACE_RULES,
    RenderConfig,
    RenderError,
    render_children,
    render_namespace,
    service_namespace,
    share,
)

from .samples import sandbox

K8S_VERSION = "1.30.0"
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
CONFIG = RenderConfig(
    git_base_url="https://gitea.example.com",
    sandbox_host="sandbox.example.com",
    oidc_issuer="https://id.example.com/realms/openova",
    jwks_url="https://id.example.com/realms/openova/protocol/openid-connect/certs",
)
MANAGED = {
    "app.kubernetes.io/managed-by": "openova-sandbox",
    "openova.io/sandbox": "claude-code-1234abcd",
    "openova.io/organization": "acme",
    "openova.io/sandbox-owner": "dev-at-acme-com",
}


def by_kind(objs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objs}


@pytest.fixture
def rendered() -> list[dict[str, Any]]:
    sb = sandbox(repos=("acme/web-app", "acme/API.Server"))
    return [
        render_namespace(sb, "sandbox-dev-at-acme-com"),
        *render_children(sb, "sandbox-dev-at-acme-com", CONFIG),
    ]


def test_everything_the_spec_lists_is_rendered(rendered: list[dict[str, Any]]) -> None:
    assert sorted(by_kind(rendered)) == sorted(
        [
            ("Namespace", "sandbox-dev-at-acme-com"),
            ("ResourceQuota", "sandbox-quota"),
            ("ServiceAccount", "sandbox"),
            ("RoleBinding", "sandbox"),
            ("PersistentVolumeClaim", "repo-web-app"),
            ("PersistentVolumeClaim", "repo-api-server"),
            ("PersistentVolumeClaim", "home"),
            ("ConfigMap", "sandbox-mcp-config"),
            ("Service", "pty-server"),
            ("StatefulSet", "pty-server"),
            ("HTTPRoute", "pty-server"),
            ("NetworkPolicy", "sandbox-ingress"),
        ]
    )


def test_all_labelled_and_namespaced_in_the_workspace(rendered: list[dict[str, Any]]) -> None:
    for obj in rendered:
        assert MANAGED.items() <= obj["metadata"]["labels"].items(), obj["kind"]
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "sandbox-dev-at-acme-com"


BUILTIN_KINDS = [
    "Namespace",
    "ResourceQuota",
    "ServiceAccount",
    "RoleBinding",
    "PersistentVolumeClaim",
    "ConfigMap",
    "Service",
    "StatefulSet",
    "NetworkPolicy",
]


@pytest.mark.parametrize("kind", BUILTIN_KINDS)
def test_builtin_kinds_validate_against_kubernetes_schemas(
    rendered: list[dict[str, Any]], kind: str
) -> None:
    objs = [o for o in rendered if o["kind"] == kind]
    assert objs
    for obj in objs:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_validation_is_not_vacuous(rendered: list[dict[str, Any]]) -> None:
    sts = by_kind(rendered)[("StatefulSet", "pty-server")]
    sts["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, K8S_VERSION, strict=True)


def test_http_route_publishes_the_session_path(rendered: list[dict[str, Any]]) -> None:
    route = by_kind(rendered)[("HTTPRoute", "pty-server")]
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["hostnames"] == ["sandbox.example.com"]
    assert route["spec"]["parentRefs"] == [
        {"name": "catalyst-gateway", "namespace": "catalyst-system"}
    ]
    (rule,) = route["spec"]["rules"]
    assert rule["matches"] == [
        {"path": {"type": "PathPrefix", "value": "/sessions/claude-code-1234abcd"}}
    ]
    assert rule["backendRefs"] == [{"name": "pty-server", "port": 7681}]


def test_quota_mirrors_the_spec(rendered: list[dict[str, Any]]) -> None:
    quota = by_kind(rendered)[("ResourceQuota", "sandbox-quota")]
    assert quota["spec"]["hard"] == {
        "requests.cpu": "4",
        "limits.cpu": "4",
        "requests.memory": "8Gi",
        "limits.memory": "8Gi",
        "requests.storage": "50Gi",
        # issue 13: ephemeral storage bounded, pods counted, no externally exposed service
        "requests.ephemeral-storage": "4Gi",
        "limits.ephemeral-storage": "4Gi",
        "pods": "2",
        "services.loadbalancers": "0",
        "services.nodeports": "0",
    }


def test_the_workspace_binds_the_premade_read_only_cluster_role(
    rendered: list[dict[str, Any]],
) -> None:
    """Least privilege (issue 13): no Role is written (the operator would have to hold
    everything it grants); the binding names the pre-made ClusterRole, inside the
    workspace namespace only, and that role reads, never writes, and never secrets."""
    assert not [o for o in rendered if o["kind"] == "Role"]
    binding = by_kind(rendered)[("RoleBinding", "sandbox")]
    assert binding["metadata"]["namespace"] == "sandbox-dev-at-acme-com"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": WORKSPACE_CLUSTER_ROLE,
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "sandbox", "namespace": "sandbox-dev-at-acme-com"}
    ]
    resources = {
        (g, r) for rule in WORKSPACE_RULES for g in rule["apiGroups"] for r in rule["resources"]
    }
    assert ("", "secrets") not in resources
    assert {v for rule in WORKSPACE_RULES for v in rule["verbs"]} == {"get", "list", "watch"}
    assert by_kind(rendered)[("ServiceAccount", "sandbox")]["automountServiceAccountToken"] is False


def test_the_mcp_servers_account_reads_the_workspace_through_the_same_binding() -> None:
    """With an MCP server (its k8s.read.* tools), its ServiceAccount of mcp.yaml is a
    second subject of the workspace's RoleBinding: the same read-only rules, in that
    namespace only; without one, the sandbox's own account alone."""
    import yaml

    root = Path(__file__).parents[2] / "deploy" / "kubernetes"
    (account,) = [
        o
        for o in yaml.safe_load_all((root / "mcp.yaml").read_text())
        if o and o["kind"] == "ServiceAccount"
    ]
    sb = sandbox()
    with_mcp = RenderConfig(
        git_base_url="https://gitea.example.com", mcp_url="http://sandbox-mcp/mcp"
    )
    binding = by_kind(render_children(sb, "ws", with_mcp))[("RoleBinding", "sandbox")]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "sandbox", "namespace": "ws"},
        {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": account["metadata"]["namespace"],
        },
    ]
    assert account["metadata"]["namespace"] == with_mcp.control_plane_namespace
    binding = by_kind(render_children(sb, "ws", CONFIG))[("RoleBinding", "sandbox")]
    assert [s["name"] for s in binding["subjects"]] == ["sandbox"]


def test_the_workspace_namespace_enforces_pod_security_restricted(
    rendered: list[dict[str, Any]],
) -> None:
    labels = by_kind(rendered)[("Namespace", "sandbox-dev-at-acme-com")]["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"


def test_the_pod_meets_pod_security_restricted(rendered: list[dict[str, Any]]) -> None:
    """The rules of the restricted profile (Kubernetes' Pod Security Standards) checked
    field by field, for every container; the fake API server does not run Pod Security
    admission (docs/kubernetes.md)."""
    pod = by_kind(rendered)[("StatefulSet", "pty-server")]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] in {"RuntimeDefault", "Localhost"}
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    allowed_volumes = {"configMap", "emptyDir", "persistentVolumeClaim", "secret", "projected"}
    for volume in pod["volumes"]:
        assert set(volume) - {"name"} <= allowed_volumes, volume
    for c in pod["containers"] + pod.get("initContainers", []):
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add")
        assert sc.get("runAsUser", 1) != 0 and not sc.get("privileged")
        assert not any("hostPort" in port for port in c.get("ports", []))


def test_the_terminal_requests_a_share_of_the_quota_and_bounds_its_disk(
    rendered: list[dict[str, Any]],
) -> None:
    pod = by_kind(rendered)[("StatefulSet", "pty-server")]["spec"]["template"]["spec"]
    (main,) = pod["containers"]
    # quota 4 CPU / 8Gi: requests 10 %, limits the whole quota
    assert main["resources"]["requests"] == {
        "cpu": "400m",
        "memory": "819Mi",
        "ephemeral-storage": "256Mi",
    }
    assert main["resources"]["limits"] == {"cpu": "4", "memory": "8Gi", "ephemeral-storage": "4Gi"}
    tmp = next(v for v in pod["volumes"] if v["name"] == "tmp")
    assert tmp["emptyDir"] == {"sizeLimit": "1Gi"}
    assert pod["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"


@pytest.mark.parametrize(
    ("quantity", "percent", "cpu", "expected"),
    [
        ("4", 10, True, "400m"),
        ("250m", 10, True, "25m"),
        ("50m", 10, True, "10m"),  # at least 10m
        ("5m", 10, True, "5m"),  # never above the quota itself
        ("8Gi", 25, False, "2048Mi"),
        ("200Mi", 10, False, "32Mi"),  # at least 32Mi
        ("16Mi", 10, False, "16Mi"),
        ("1G", 50, False, "476Mi"),
        ("4", 100, True, "4"),  # the whole quota written as the quota is
    ],
)
def test_share_of_a_quota(quantity: str, percent: int, cpu: bool, expected: str) -> None:
    assert share(quantity, percent, cpu=cpu) == expected


def test_statefulset_is_one_hardened_replica(rendered: list[dict[str, Any]]) -> None:
    sts = by_kind(rendered)[("StatefulSet", "pty-server")]
    assert sts["spec"]["replicas"] == 1
    pod = sts["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"] + pod["initContainers"]:
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["runAsNonRoot"] is True
    (main,) = pod["containers"]
    assert main["ports"][0]["containerPort"] == 7681
    for probe in ("readinessProbe", "livenessProbe"):
        assert main[probe]["httpGet"] == {"path": "/healthz", "port": 7681}
    env = {e["name"]: e.get("value") for e in main["env"]}
    assert env["SANDBOX_ID"] == "claude-code-1234abcd"
    assert env["SANDBOX_NAMESPACE"] == "acme"
    assert env["SANDBOX_OWNER_EMAIL"] == "dev@acme.com"
    assert env["SANDBOX_OWNER_SUB"] == ""  # made by kubectl: no subject recorded
    assert env["SANDBOX_ORG_ID"] == "acme"
    assert env["SANDBOX_DEFAULT_AGENT"] == "claude-code"
    assert env["SANDBOX_SESSION_LIMIT"] == "3"
    assert env["SANDBOX_RING_BUFFER_BYTES"] == str(CONFIG.ring_buffer_bytes)
    assert env["SANDBOX_OIDC_ISSUER"] == CONFIG.oidc_issuer
    assert env["SANDBOX_JWKS_URL"] == CONFIG.jwks_url
    mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
    assert mounts["/workspace/web-app"] == "repo-web-app"
    assert mounts["/workspace/API.Server"] == "repo-api-server"
    assert mounts["/home/sandbox"] == "home"
    # the workspace root exists on a writable volume (the root filesystem is read-only)
    # and comes before the repo mounts nested in it
    root = main["volumeMounts"][0]
    assert (root["mountPath"], root["name"], root["subPath"]) == ("/workspace", "home", "workspace")
    assert env["SANDBOX_WORKDIR"] == "/workspace"


def test_a_sandbox_without_repos_still_has_a_writable_workspace() -> None:
    sts = by_kind(render_children(sandbox(repos=()), "ns-x", CONFIG))
    pod = sts[("StatefulSet", "pty-server")]["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    (main,) = pod["containers"]
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    env = {e["name"]: e.get("value") for e in main["env"]}
    workdir = env["SANDBOX_WORKDIR"]
    mounts = [m for m in main["volumeMounts"] if m["mountPath"] == workdir]
    assert mounts and not mounts[0].get("readOnly")
    claim = {v["name"]: v for v in pod["volumes"]}[mounts[0]["name"]]
    assert "persistentVolumeClaim" in claim  # kept across restarts and suspensions


def test_a_name_too_long_for_a_label_still_gives_valid_distinct_labels() -> None:
    # kubectl accepts Sandbox names of up to 253 characters; label values stop at 63
    names = ("x" * 70, "x" * 71)
    values = set()
    for name in names:
        objs = render_children(sandbox(name=name), "ns-x", CONFIG)
        for obj in objs:
            for key, value in obj["metadata"]["labels"].items():
                assert len(value) <= 63 and LABEL_VALUE.match(value), (key, value)
        sts = by_kind(objs)[("StatefulSet", "pty-server")]["spec"]
        selector = sts["selector"]["matchLabels"]
        assert selector.items() <= sts["template"]["metadata"]["labels"].items()
        values.add(selector["openova.io/sandbox"])
    assert len(values) == 2


def test_concurrent_sessions_never_scale_the_statefulset() -> None:
    sb = sandbox(
        extra_spec={
            "quota": {"cpu": "1", "memory": "1Gi", "storage": "5Gi", "concurrentSessions": 10}
        }
    )
    sts = by_kind(render_children(sb, "ns-x", CONFIG))[("StatefulSet", "pty-server")]
    assert sts["spec"]["replicas"] == 1
    suspended = by_kind(render_children(sb, "ns-x", CONFIG, replicas=0))
    assert suspended[("StatefulSet", "pty-server")]["spec"]["replicas"] == 0


def test_network_policy_admits_only_gateway_and_control_plane(
    rendered: list[dict[str, Any]],
) -> None:
    policy = by_kind(rendered)[("NetworkPolicy", "sandbox-ingress")]
    assert policy["spec"]["podSelector"] == {}
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    (rule,) = policy["spec"]["ingress"]
    (peer,) = rule["from"]
    (expr,) = peer["namespaceSelector"]["matchExpressions"]
    assert expr == {
        "key": "kubernetes.io/metadata.name",
        "operator": "In",
        "values": ["catalyst-system"],
    }


def test_egress_is_denied_but_for_dns_git_the_gateway_and_the_api(
    rendered: list[dict[str, Any]],
) -> None:
    egress = by_kind(rendered)[("NetworkPolicy", "sandbox-ingress")]["spec"]["egress"]
    dns, internal, git = egress
    assert dns["ports"] == [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    (peer,) = internal["to"]
    # the control plane (the API's JWKS) and the model gateway's namespace (from its URL)
    assert peer["namespaceSelector"]["matchExpressions"][0]["values"] == ["catalyst-system"]
    assert "ports" not in internal
    (block,) = git["to"]
    assert block["ipBlock"] == {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}
    assert sorted(p["port"] for p in git["ports"]) == [22, 443]
    # nothing else reaches the metadata address: no rule without ports to all addresses
    for rule in egress:
        for to in rule["to"]:
            assert to.get("ipBlock", {}).get("cidr") != "0.0.0.0/0" or "ports" in rule


def test_the_data_plane_and_an_elsewhere_gateway_are_configurable() -> None:
    config = RenderConfig(
        git_base_url="https://gitea.example.com",
        ingress_namespaces=("envoy-gateway-system",),
        model_gateway_url="http://llm.models.svc.cluster.local:8090",
    )
    policy = by_kind(render_children(sandbox(), "ns-x", config))[
        ("NetworkPolicy", "sandbox-ingress")
    ]
    (rule,) = policy["spec"]["ingress"]
    values = rule["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"]
    assert values == ["catalyst-system", "envoy-gateway-system"]
    internal = policy["spec"]["egress"][1]["to"][0]["namespaceSelector"]
    assert internal["matchExpressions"][0]["values"] == ["catalyst-system", "models"]
    assert service_namespace("https://api.example.com") is None


def test_mcp_config_lists_agents_and_capabilities() -> None:
    sb = sandbox(extra_spec={"capabilities": ["git.*"]})
    config = RenderConfig(
        git_base_url="https://gitea.example.com", mcp_url="http://mcp.catalyst-system:8080/mcp"
    )
    cm = by_kind(render_children(sb, "ns-x", config))[("ConfigMap", "sandbox-mcp-config")]
    data = json.loads(cm["data"]["mcp.json"])
    assert data["agents"] == ["claude-code"]
    assert data["capabilities"] == ["git.*"]
    assert data["mcpServers"]["openova-sandbox"]["url"] == config.mcp_url


def test_repos_that_collide_are_a_render_failure() -> None:
    with pytest.raises(RenderError, match="repo-web"):
        render_children(sandbox(repos=("acme/Web", "acme/web")), "ns-x", CONFIG)


def test_no_repos_means_no_clone_container() -> None:
    sts = by_kind(render_children(sandbox(repos=()), "ns", CONFIG))[("StatefulSet", "pty-server")]
    assert "initContainers" not in sts["spec"]["template"]["spec"]


@pytest.mark.parametrize(
    ("email", "expected"),
    [
        ("dev@acme.com", "sandbox-dev-at-acme-com"),
        ("First.Last+tag@Example.org", "sandbox-first-last-plus-tag-at-example-org"),
    ],
)
def test_plain_namespace_names(email: str, expected: str) -> None:
    assert plain_namespace(sandbox(email=email)) == expected


def test_long_or_odd_owners_still_make_valid_distinct_names() -> None:
    long_a = sandbox(email="a" * 120 + "@acme.com")
    long_b = sandbox(email="a" * 121 + "@acme.com")
    odd = sandbox(email="o'brien@acme.com")
    names = [plain_namespace(long_a), plain_namespace(long_b), plain_namespace(odd)]
    for name in names:
        assert len(name) <= 63
        kubernetes_validate.validate(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
            K8S_VERSION,
            strict=True,
        )
    assert len(set(names)) == 3
    assert hashed_namespace(long_a) != plain_namespace(long_a)
    assert len(hashed_namespace(long_a)) <= 63
    for obj in render_children(long_a, names[0], CONFIG):
        assert len(obj["metadata"]["labels"]["openova.io/sandbox-owner"]) <= 63


def test_hashed_namespace_differs_per_sandbox() -> None:
    one, two = sandbox(name="one"), sandbox(name="two")
    assert hashed_namespace(one) != hashed_namespace(two)
    assert hashed_namespace(one).startswith("sandbox-dev-at-acme-com-")


def test_dns_label_keeps_valid_names_and_repairs_others() -> None:
    assert dns_label("web-app") == "web-app"
    assert repo_pvc("acme/API.Server") == "repo-api-server"
    repaired = dns_label("-Weird_Name-")
    assert repaired.startswith("weird-name-") and len(repaired) <= 63


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


def test_clone_script_clones_once_with_real_git(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    _git("init", "-q", "-b", "main", cwd=source)
    (source / "README").write_text("hello\n")
    _git("add", "README", cwd=source)
    _git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init", cwd=source)
    workspace = tmp_path / "workspace"
    (workspace / "web").mkdir(parents=True)
    (workspace / "web" / "lost+found").mkdir()  # what a fresh ext4 volume holds
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "GIT_TOKEN": "",
        "REPOS": f"{workspace / 'web'} file://{source}",
    }
    first = subprocess.run(
        ["sh", "-c", CLONE_SCRIPT], env=env, capture_output=True, text=True, timeout=60
    )
    assert first.returncode == 0, first.stderr
    assert (workspace / "web" / "README").read_text() == "hello\n"
    assert "cloned" in first.stdout
    (workspace / "web" / "local-change").write_text("mine")
    second = subprocess.run(
        ["sh", "-c", CLONE_SCRIPT], env=env, capture_output=True, text=True, timeout=60
    )
    assert second.returncode == 0 and "keep" in second.stdout
    assert (workspace / "web" / "local-change").exists()


def test_clone_script_fails_loudly_on_a_bad_repo(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "REPOS": f"{tmp_path / 'w'} file://{tmp_path / 'missing'}",
    }
    result = subprocess.run(
        ["sh", "-c", CLONE_SCRIPT], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0


def test_the_clone_container_stays_within_a_small_quota() -> None:
    small = {
        "quota": {"cpu": "250m", "memory": "200Mi", "storage": "50Gi", "concurrentSessions": 1}
    }
    pod = by_kind(render_children(sandbox(extra_spec=small), "ns-x", CONFIG))[
        ("StatefulSet", "pty-server")
    ]["spec"]["template"]["spec"]
    (clone,) = pod["initContainers"]
    assert clone["resources"]["limits"] == {
        "cpu": "250m",
        "memory": "200Mi",
        "ephemeral-storage": "256Mi",
    }
    assert clone["resources"]["requests"] == {
        "cpu": "100m",
        "memory": "128Mi",
        "ephemeral-storage": "64Mi",
    }
    # a roomy quota keeps the clone container's own bounds
    pod = by_kind(render_children(sandbox(), "ns-x", CONFIG))[("StatefulSet", "pty-server")]
    (clone,) = pod["spec"]["template"]["spec"]["initContainers"]
    assert clone["resources"]["limits"]["cpu"] == "500m"
    assert clone["resources"]["limits"]["memory"] == "256Mi"


def test_the_owner_subject_reaches_the_terminal_server() -> None:
    sb = sandbox(annotations={"openova.io/owner-sub": "user-sub-1"})
    sts = by_kind(render_children(sb, "ns-x", CONFIG))[("StatefulSet", "pty-server")]
    (main,) = sts["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in main["env"]}
    assert env["SANDBOX_OWNER_SUB"] == "user-sub-1"


def test_the_pod_reaches_the_model_gateway_and_holds_no_provider_key() -> None:
    """Its terminal server gives the agents the gateway Service's URLs; no provider key
    (nor any variable a key could hide in) is rendered. Without a ledger in the
    operator there is no token to render."""
    config = RenderConfig(
        git_base_url="https://gitea.example.com", model_gateway_url="http://llm.gw.svc:8090"
    )
    sts = by_kind(render_children(sandbox(), "ns-x", config))[("StatefulSet", "pty-server")]
    (main,) = sts["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in main["env"]}
    assert env["SANDBOX_MODEL_GATEWAY_URL"]["value"] == "http://llm.gw.svc:8090"
    keys = {"OPENAI_API_KEY", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"}
    assert not keys & set(env)
    assert "SANDBOX_MODEL_GATEWAY_TOKEN" not in env
    default = by_kind(
        render_children(sandbox(), "ns-x", RenderConfig(git_base_url="https://gitea.example.com"))
    )
    (main,) = default[("StatefulSet", "pty-server")]["spec"]["template"]["spec"]["containers"]
    urls = {e["name"]: e.get("value") for e in main["env"]}
    assert urls["SANDBOX_MODEL_GATEWAY_URL"] == "http://sandbox-gateway.catalyst-system.svc"


def test_the_gateway_token_comes_from_the_sandbox_secret() -> None:
    """With the ledger in the operator, the pod reads its token from the Secret the
    operator writes (``secretKeyRef``, not optional): never a literal in the spec."""
    config = RenderConfig(git_base_url="https://gitea.example.com", model_gateway_token=True)
    sts = by_kind(render_children(sandbox(), "ns-x", config))[("StatefulSet", "pty-server")]
    (main,) = sts["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in main["env"]}
    token = env["SANDBOX_MODEL_GATEWAY_TOKEN"]
    assert "value" not in token
    assert token["valueFrom"] == {"secretKeyRef": {"name": "sandbox-gateway-token", "key": "token"}}


def test_no_provider_key_or_secret_value_is_ever_in_the_pod_spec() -> None:
    """Model access (issue 13): the pod gets the gateway's URL and its own token from
    a Secret by reference; no literal key, no envFrom that could carry one."""
    config = RenderConfig(
        git_base_url="https://gitea.example.com", model_gateway_token=True, share_grants=True
    )
    sts = by_kind(render_children(sandbox(), "ns-x", config))[("StatefulSet", "pty-server")]
    pod = sts["spec"]["template"]["spec"]
    for container in pod["containers"] + pod.get("initContainers", []):
        assert "envFrom" not in container
        for env in container["env"]:
            secretish = any(w in env["name"] for w in ("KEY", "TOKEN", "SECRET", "PASSWORD"))
            if secretish:
                assert "value" not in env, env["name"]
                assert "secretKeyRef" in env["valueFrom"], env["name"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["SANDBOX_MODEL_GATEWAY_URL"]["value"] == config.model_gateway_url
    assert not {"OPENAI_API_KEY", "ANTHROPIC_API_KEY"} & set(env)
