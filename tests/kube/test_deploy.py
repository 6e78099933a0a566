"""The kustomize base, rendered by ``kubectl kustomize`` and validated offline.

Proves: it renders; every object is valid for Kubernetes (strict schemas from
kubernetes-validate); the operator holds every permission it grants each sandbox (RBAC
refuses to let a subject grant more than it has); pods run hardened. Building the image
needs a container runtime, which the tests do not have: the Dockerfile is only checked
for the facts the manifests rely on.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from openova_sandbox.controller.kube.render import WORKSPACE_RULES, RenderConfig, render_children

from .samples import sandbox

ROOT = Path(__file__).parents[2]
K8S_VERSION = "1.30.0"


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        if os.environ.get("SANDBOX_TEST_REQUIRE_ALL") == "1":
            pytest.fail("kubectl is required here (.ci/run installs kubernetes-client)")
        pytest.skip("kubectl is not installed: the kustomize base cannot be rendered")
    out = subprocess.run(
        [kubectl, "kustomize", str(ROOT / "deploy" / "kubernetes")],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_key(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def test_the_base_contains_the_control_plane(manifests: list[dict[str, Any]]) -> None:
    # the generated ConfigMap's name carries a content hash: compare it by prefix
    keys = [
        (kind, name.rsplit("-", 1)[0]) if kind == "ConfigMap" else (kind, name)
        for kind, name in by_key(manifests)
    ]
    assert sorted(keys) == sorted(
        [
            ("ConfigMap", "sandbox-config"),
            ("ConfigMap", "sandbox-llm-config"),
            ("Namespace", "catalyst-system"),
            ("CustomResourceDefinition", "sandboxes.sandbox.openova.io"),
            ("ServiceAccount", "sandbox-api"),
            ("ServiceAccount", "sandbox-operator"),
            ("ClusterRole", "openova-sandbox-api"),
            ("ClusterRole", "openova-sandbox-operator"),
            ("ClusterRole", "openova-sandbox-workspace"),
            ("ValidatingAdmissionPolicy", "openova-sandbox-operator-namespaces"),
            ("ValidatingAdmissionPolicyBinding", "openova-sandbox-operator-namespaces"),
            ("ClusterRoleBinding", "openova-sandbox-api"),
            ("ClusterRoleBinding", "openova-sandbox-operator"),
            ("Role", "sandbox-operator-leader"),
            ("RoleBinding", "sandbox-operator-leader"),
            ("Deployment", "sandbox-api"),
            ("Deployment", "sandbox-operator"),
            ("Deployment", "sandbox-gateway"),
            ("Service", "sandbox-api"),
            ("Service", "sandbox-gateway"),
            ("PodDisruptionBudget", "sandbox-api"),
            ("ServiceAccount", "sandbox-mcp"),
            ("ClusterRoleBinding", "openova-sandbox-mcp"),
            ("Deployment", "sandbox-mcp"),
            ("Service", "sandbox-mcp"),
            ("PodDisruptionBudget", "sandbox-mcp"),
        ]
    )
    for doc in manifests:
        if doc["kind"] not in (
            "Namespace",
            "CustomResourceDefinition",
            "ClusterRole",
            "ClusterRoleBinding",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ):
            assert doc["metadata"]["namespace"] == "catalyst-system"


def test_every_object_is_valid_kubernetes(manifests: list[dict[str, Any]]) -> None:
    for doc in manifests:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_crd_is_the_one_the_tests_use(manifests: list[dict[str, Any]]) -> None:
    crd = by_key(manifests)[("CustomResourceDefinition", "sandboxes.sandbox.openova.io")]
    source = yaml.safe_load((ROOT / "deploy/crds/sandboxes.sandbox.openova.io.yaml").read_text())
    assert crd["spec"] == source["spec"]


def _grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (g, r, v)
        for rule in rules
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }


def test_operator_holds_only_what_it_uses_and_binds_the_workspace_role(
    manifests: list[dict[str, Any]],
) -> None:
    """Least privilege (issue 13): the operator no longer holds what each sandbox gets
    (it binds the pre-made ClusterRole by name) and has no cluster-wide verbs on secrets,
    pods or roles beyond what it uses."""
    objects = by_key(manifests)
    rules = objects[("ClusterRole", "openova-sandbox-operator")]["rules"]
    operator = _grants([r for r in rules if "resourceNames" not in r])
    workspace = objects[("ClusterRole", "openova-sandbox-workspace")]["rules"]
    assert workspace == WORKSPACE_RULES  # the renderer's list, verbatim
    # binding it: `bind` on that one name, nothing else on cluster roles or roles
    named = [r for r in rules if "resourceNames" in r]
    assert named == [
        {
            "apiGroups": ["rbac.authorization.k8s.io"],
            "resources": ["clusterroles"],
            "resourceNames": ["openova-sandbox-workspace"],
            "verbs": ["bind"],
        }
    ]
    assert not {g for g in operator if g[1] in {"roles", "clusterroles", "clusterrolebindings"}}
    assert not {g for g in operator if g[2] in {"bind", "escalate", "impersonate", "*"}}
    # secrets: its pods' own (written, never deleted or replaced); pods: read only
    assert {v for g, r, v in operator if r == "secrets"} == {
        "get",
        "list",
        "watch",
        "create",
        "patch",
    }
    assert {v for g, r, v in operator if r == "pods"} == {"get", "list", "watch"}
    assert not {
        r for g, r, v in operator if g in {"batch"} or r in {"deployments", "jobs", "pods/log"}
    }
    # delete only where the operator deletes: stale claims, its own namespaces, and a
    # stopped preview's Service, NetworkPolicy and HTTPRoute
    assert {r for g, r, v in operator if v == "delete"} == {
        "persistentvolumeclaims",
        "namespaces",
        "services",
        "networkpolicies",
        "httproutes",
    }
    # it may create every kind it renders
    children = render_children(
        sandbox(), "ns", RenderConfig(git_base_url="https://gitea.example.com")
    )
    plural = {
        "ResourceQuota": "resourcequotas",
        "ServiceAccount": "serviceaccounts",
        "RoleBinding": "rolebindings",
        "PersistentVolumeClaim": "persistentvolumeclaims",
        "ConfigMap": "configmaps",
        "Service": "services",
        "StatefulSet": "statefulsets",
        "HTTPRoute": "httproutes",
        "NetworkPolicy": "networkpolicies",
    }
    for child in children:
        group = child["apiVersion"].rpartition("/")[0]
        assert (group, plural[child["kind"]], "create") in operator, child["kind"]
    assert ("", "namespaces", "create") in operator
    assert ("sandbox.openova.io", "sandboxes/status", "update") in operator
    binding = next(c for c in children if c["kind"] == "RoleBinding")
    assert binding["roleRef"]["name"] == "openova-sandbox-workspace"


def test_namespace_deletion_is_limited_to_labelled_namespaces(
    manifests: list[dict[str, Any]],
) -> None:
    """RBAC cannot narrow namespace deletion to some namespaces: the admission policy in
    the base does, for the operator's service account, by the label the renderer sets.
    The CEL itself is evaluated on a real cluster only (docs/kubernetes.md)."""
    from openova_sandbox.controller.kube.render import LABEL_MANAGED_BY, MANAGED_BY

    objects = by_key(manifests)
    policy = objects[("ValidatingAdmissionPolicy", "openova-sandbox-operator-namespaces")]["spec"]
    (rule,) = policy["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["namespaces"] and "DELETE" in rule["operations"]
    (condition,) = policy["matchConditions"]
    account = objects[("ServiceAccount", "sandbox-operator")]["metadata"]
    assert (
        f"system:serviceaccount:{account['namespace']}:{account['name']}" in condition["expression"]
    )
    (validation,) = policy["validations"]
    assert f'"{LABEL_MANAGED_BY}"' in validation["expression"]
    assert f'"{MANAGED_BY}"' in validation["expression"]
    assert policy["failurePolicy"] == "Fail"
    binding = objects[("ValidatingAdmissionPolicyBinding", "openova-sandbox-operator-namespaces")]
    assert binding["spec"] == {
        "policyName": "openova-sandbox-operator-namespaces",
        "validationActions": ["Deny"],
    }


def test_api_may_only_touch_sandboxes(manifests: list[dict[str, Any]]) -> None:
    rules = by_key(manifests)[("ClusterRole", "openova-sandbox-api")]["rules"]
    api = _grants(rules)
    assert {g for g, _, _ in api} == {"sandbox.openova.io"}
    # create stands in a rule of its own, apart from get/list/watch/delete
    creating = [r for r in rules if "create" in r["verbs"]]
    assert [r["verbs"] for r in creating] == [["create"]]
    reading = [r for r in rules if "get" in r["verbs"] and r["resources"] == ["sandboxes"]]
    assert [sorted(r["verbs"]) for r in reading] == [["delete", "get", "list", "watch"]]
    # the API never writes status (that is the operator's)
    status = [r for r in rules if r["resources"] == ["sandboxes/status"]]
    assert [r["verbs"] for r in status] == [["get"]]


def test_pods_are_hardened(manifests: list[dict[str, Any]]) -> None:
    for name in ("sandbox-api", "sandbox-operator", "sandbox-gateway", "sandbox-mcp"):
        pod = by_key(manifests)[("Deployment", name)]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}


def test_operator_replicas_elect_a_leader(manifests: list[dict[str, Any]]) -> None:
    from openova_sandbox.controller.kube.leader import LEASE_NAME

    objects = by_key(manifests)
    operator = objects[("Deployment", "sandbox-operator")]["spec"]
    assert operator["replicas"] == 2
    container = operator["template"]["spec"]["containers"][0]
    assert container["args"][:2] == ["sandbox", "operator"]
    assert {p["containerPort"] for p in container["ports"]} == {8081}
    probe = container["livenessProbe"]["httpGet"]
    assert (probe["path"], probe["port"]) == ("/healthz", "metrics")
    assert container["ports"][0]["name"] == "metrics"
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # the Lease lives in the control-plane namespace (settings default) and may be written
    role = objects[("Role", "sandbox-operator-leader")]
    assert role["metadata"]["namespace"] == "catalyst-system"
    grants = {
        (verb, name)
        for rule in role["rules"]
        if rule["resources"] == ["leases"]
        for verb in rule["verbs"]
        for name in rule.get("resourceNames", ["*"])
    }
    assert {("create", "*"), ("get", LEASE_NAME), ("update", LEASE_NAME)} <= grants
    binding = objects[("RoleBinding", "sandbox-operator-leader")]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "sandbox-operator", "namespace": "catalyst-system"}
    ]


def test_the_api_runs_the_stateless_control_plane_with_shared_config(
    manifests: list[dict[str, Any]],
) -> None:
    objects = by_key(manifests)
    api = objects[("Deployment", "sandbox-api")]["spec"]["template"]["spec"]["containers"][0]
    operator = objects[("Deployment", "sandbox-operator")]["spec"]["template"]["spec"]
    assert api["args"][:2] == ["sandbox", "api"]
    config_maps = [k for k in objects if k[0] == "ConfigMap" and k[1].startswith("sandbox-config")]
    assert len(config_maps) == 1
    for container in (api, operator["containers"][0]):
        refs = [e["configMapRef"]["name"] for e in container.get("envFrom", [])]
        assert refs == [config_maps[0][1]]  # the generated, hash-suffixed name
    data = objects[config_maps[0]]["data"]
    assert "SANDBOX_OIDC_ISSUER" in data


def test_the_gateway_runs_alone_on_a_shared_database(manifests: list[dict[str, Any]]) -> None:
    objects = by_key(manifests)
    deployment = objects[("Deployment", "sandbox-gateway")]["spec"]
    assert deployment["replicas"] >= 2  # stateless: any number of replicas
    pod = deployment["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False  # it never calls the API server
    [container] = pod["containers"]
    assert container["args"][:2] == ["sandbox", "gateway"]
    env = {e["name"]: e for e in container["env"]}
    assert env["SANDBOX_STORE"]["value"] == "sql"
    # budgets hold across replicas only in one database: required, from a Secret
    db = env["SANDBOX_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert (db["name"], db["key"]) == ("sandbox-gateway-db", "url")
    assert not db.get("optional", False)
    config_path = env["SANDBOX_LLM_CONFIG"]["value"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert config_path == mounts["llm-config"] + "/config.yaml"
    config_map = volumes["llm-config"]["configMap"]["name"]
    assert config_map.startswith("sandbox-llm-config-")  # the generated one
    data = objects[("ConfigMap", config_map)]["data"]["config.yaml"]
    from openova_sandbox.gateway.config import parse_config

    assert parse_config(yaml.safe_load(data), source="base", env={}).providers == {}
    keys = volumes["llm-keys"]["secret"]
    assert keys["optional"] is True and keys["defaultMode"] == 0o440
    assert pod["securityContext"]["fsGroup"] == 1000  # so uid 1000 reads the key files
    service = objects[("Service", "sandbox-gateway")]["spec"]
    assert service["selector"] == {"app.kubernetes.io/name": "sandbox-gateway"}
    port = container["ports"][0]["containerPort"]
    assert service["ports"][0]["targetPort"] == port
    probe = container["readinessProbe"]["httpGet"]
    assert probe["path"] == "/readyz"


def test_sandbox_pods_are_pointed_at_the_gateway_service(manifests: list[dict[str, Any]]) -> None:
    """The URL the operator renders into sandbox pods by default is the base's gateway
    Service (its name, namespace and port)."""
    from urllib.parse import urlsplit

    url = urlsplit(RenderConfig(git_base_url="https://gitea.example.com").model_gateway_url)
    service = by_key(manifests)[("Service", "sandbox-gateway")]
    namespace = service["metadata"]["namespace"]
    assert url.hostname == f"{service['metadata']['name']}.{namespace}.svc"
    assert (url.port or 80) == service["spec"]["ports"][0]["port"]


def test_dockerfile_matches_what_the_manifests_run() -> None:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "sandbox" in scripts  # the manifests run `sandbox serve|operator|pty-server`
    assert "USER 1000:1000" in text  # runAsNonRoot with runAsUser 1000
    assert "EXPOSE 8080 7681" in text
    # the agent CLIs are chosen at build time, by catalogue id; by default every agent
    # with a pinned package (an image with no agent runs no terminal but the shell)
    defaults = re.findall(r'^ARG AGENTS="([^"]*)"$', text, re.M)
    assert defaults and len(set(defaults)) == 1, defaults
    assert set(defaults[0].split()) == {"claude-code", "opencode", "qwen-code", "aider", "shell"}
    # Node >= 20 (qwen-code needs it), never Debian's 18
    node = re.search(r"^ARG NODE_IMAGE=node:(\d+)\.\d+\.\d+-", text, re.M)
    assert node and int(node.group(1)) >= 20
    assert "nodejs" not in text
    # base images pinned to a version; nothing piped into a shell; downloads unprivileged
    assert ":latest" not in text
    assert not re.search(r"curl[^\n]*\|\s*(ba)?sh", text)
    agents_stage = text.split("AS agents", 1)[1].split("\nFROM ", 1)[0]
    assert agents_stage.index("USER 1000:1000") < agents_stage.index("npm install")
    assert agents_stage.index("USER 1000:1000") < agents_stage.index("cursor.com/install")
    from openova_sandbox.domain.catalogue import load_catalogue

    catalogue = load_catalogue(None)
    for slug in catalogue.api_slugs:
        assert f"{slug})" in text, slug
        package = catalogue.get(slug).package
        if package is not None:  # the image carries the version the server would install
            assert package.spec() in text, package.spec()
    assert (ROOT / "web" / "package-lock.json").exists()  # `npm ci` needs it


def test_the_operator_reaches_the_gateway_ledger(manifests: list[dict[str, Any]]) -> None:
    """It issues each sandbox's gateway token in the gateway's database (`sandbox
    operator` refuses to start without it, naming it: test_kube_shared_auth.py) and may
    write Secrets."""
    objects = by_key(manifests)
    pod = objects[("Deployment", "sandbox-operator")]["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    db = env["SANDBOX_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert (db["name"], db["key"], db["optional"]) == ("sandbox-gateway-db", "url", True)
    role = objects[("ClusterRole", "openova-sandbox-operator")]
    verbs = {
        verb
        for rule in role["rules"]
        if "" in rule["apiGroups"] and "secrets" in rule["resources"]
        for verb in rule["verbs"]
    }
    assert {"get", "create", "patch"} <= verbs


def test_the_api_reads_usage_and_budgets_from_the_gateway_database(
    manifests: list[dict[str, Any]],
) -> None:
    """Usage and budgets are kept by the gateway in its SQL database; every API replica
    must read that one, not a SQLite file of its own."""
    objects = by_key(manifests)
    api = objects[("Deployment", "sandbox-api")]
    env = {e["name"]: e for e in api["spec"]["template"]["spec"]["containers"][0]["env"]}
    db = env["SANDBOX_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert (db["name"], db["key"], db["optional"]) == ("sandbox-gateway-db", "url", True)


def test_every_api_replica_reads_the_same_issuer_key_and_cookie_secret(
    manifests: list[dict[str, Any]],
) -> None:
    """Sign-in across replicas (issue 13): the embedded issuer's key and the cookie secret
    come from one Secret each, the same for every replica; nothing in the base holds a
    value of its own."""
    objects = by_key(manifests)
    api = objects[("Deployment", "sandbox-api")]["spec"]
    assert api["replicas"] >= 2
    env = {e["name"]: e for e in api["template"]["spec"]["containers"][0]["env"]}
    key = env["SANDBOX_ISSUER_KEY"]["valueFrom"]["secretKeyRef"]
    assert (key["name"], key["key"]) == ("sandbox-issuer-key", "key.pem")
    cookie = env["SANDBOX_COOKIE_SECRET"]["valueFrom"]["secretKeyRef"]
    assert (cookie["name"], cookie["key"]) == ("sandbox-cookie-secret", "secret")
    assert not any(k[0] == "Secret" for k in objects)  # made by the documented step


def test_every_image_is_pinned_and_rewritten_by_kustomize(
    manifests: list[dict[str, Any]], tmp_path: Path
) -> None:
    """No :latest anywhere, and an overlay's `images:` moves every image, the ones the
    operator gives sandbox pods (its environment) included."""

    def images(docs: list[dict[str, Any]]) -> dict[str, str]:
        found = {}
        for doc in docs:
            if doc["kind"] != "Deployment":
                continue
            for c in doc["spec"]["template"]["spec"]["containers"]:
                found[f"{doc['metadata']['name']}/{c['name']}"] = c["image"]
                for e in c.get("env", []):
                    if e["name"] in {"SANDBOX_KUBE_IMAGE", "SANDBOX_KUBE_GIT_IMAGE"}:
                        found[e["name"]] = e["value"]
        return found

    base = images(manifests)
    assert base["SANDBOX_KUBE_IMAGE"] == base["sandbox-operator/operator"]
    for where, image in base.items():
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest", (where, image)
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [os.path.relpath(ROOT / "deploy" / "kubernetes", overlay)],
                "images": [
                    {
                        "name": "ghcr.io/openova/sandbox",
                        "newName": "registry.example/sb",
                        "newTag": "7.7.7",
                    },
                    {"name": "alpine/git", "newName": "registry.example/git", "newTag": "2"},
                ],
            }
        )
    )
    kubectl = shutil.which("kubectl")
    assert kubectl is not None
    out = subprocess.run(
        [kubectl, "kustomize", str(overlay)], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    moved = images([d for d in yaml.safe_load_all(out) if d])
    assert moved["SANDBOX_KUBE_IMAGE"] == "registry.example/sb:7.7.7"
    assert moved["SANDBOX_KUBE_GIT_IMAGE"] == "registry.example/git:2"
    assert set(moved.values()) == {"registry.example/sb:7.7.7", "registry.example/git:2"}


def test_a_drain_leaves_an_api_replica_serving(manifests: list[dict[str, Any]]) -> None:
    objects = by_key(manifests)
    pdb = objects[("PodDisruptionBudget", "sandbox-api")]["spec"]
    api = objects[("Deployment", "sandbox-api")]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= api["template"]["metadata"]["labels"].items()
    assert pdb["minAvailable"] == 1 < api["replicas"]


def test_the_mcp_server_runs_beside_the_api_with_its_rights_and_issuer_key(
    manifests: list[dict[str, Any]],
) -> None:
    """``sandbox mcp --http`` (issue 14): its own Deployment and Service, the API's
    rights on Sandboxes (the same ClusterRole, its own account), the shared issuer key its
    tokens are signed with, and the URL the operator gives sandbox pods is its Service."""
    from urllib.parse import urlsplit

    objects = by_key(manifests)
    deployment = objects[("Deployment", "sandbox-mcp")]["spec"]
    assert deployment["replicas"] >= 2
    pod = deployment["template"]["spec"]
    assert pod["serviceAccountName"] == "sandbox-mcp"
    binding = objects[("ClusterRoleBinding", "openova-sandbox-mcp")]
    assert binding["roleRef"]["name"] == "openova-sandbox-api"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "sandbox-mcp", "namespace": "catalyst-system"}
    ]
    [container] = pod["containers"]
    assert container["args"][:3] == ["sandbox", "mcp", "--http"]
    env = {e["name"]: e for e in container["env"]}
    assert env["SANDBOX_STORE"]["value"] == "kube"
    key = env["SANDBOX_ISSUER_KEY"]["valueFrom"]["secretKeyRef"]
    assert (key["name"], key["key"]) == ("sandbox-issuer-key", "key.pem")
    port = container["ports"][0]["containerPort"]
    assert str(port) == container["args"][container["args"].index("--port") + 1]
    service = objects[("Service", "sandbox-mcp")]
    assert service["spec"]["ports"][0]["targetPort"] == port
    config = next(v for k, v in objects.items() if k[1].startswith("sandbox-config"))
    url = urlsplit(config["data"]["SANDBOX_KUBE_MCP_URL"])
    assert url.hostname == f"sandbox-mcp.{service['metadata']['namespace']}.svc"
    assert (url.port or 80) == service["spec"]["ports"][0]["port"]
    assert url.path == "/mcp"
    pdb = objects[("PodDisruptionBudget", "sandbox-mcp")]["spec"]
    assert pdb["minAvailable"] == 1 < deployment["replicas"]
