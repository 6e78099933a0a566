"""The fake API server, driven over real HTTP with plain httpx.

Each test states an API-server rule a client could observe and checks the wire answer.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from openova_sandbox.testing.kubeapi import FakeKube

from .conftest import CRD_PATH

SB = "/apis/sandbox.openova.io/v1/namespaces/acme/sandboxes"
CM = "/api/v1/namespaces/acme/configmaps"
MERGE = {"Content-Type": "application/merge-patch+json"}
JSONPATCH = {"Content-Type": "application/json-patch+json"}


@pytest.fixture
def http(kube: FakeKube) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=kube.url, timeout=5) as client:
        yield client


def sandbox(name: str = "sb1", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "sandbox.openova.io/v1",
        "kind": "Sandbox",
        "metadata": {"name": name, "labels": {"team": "web"}},
        "spec": {
            "owner": {"email": "dev@acme.com", "orgRef": {"slug": "acme"}},
            "quota": {"cpu": "4", "memory": "8Gi", "storage": "50Gi", "concurrentSessions": 3},
            **spec,
        },
    }


def test_discovery_lists_the_crd_group_only_when_the_crd_exists(
    kube: FakeKube, bare_kube: FakeKube
) -> None:
    with httpx.Client(base_url=bare_kube.url) as bare:
        groups = [g["name"] for g in bare.get("/apis").json()["groups"]]
        assert "sandbox.openova.io" not in groups
        assert "apps" in groups
        missing = bare.get("/apis/sandbox.openova.io/v1/namespaces/acme/sandboxes/x")
        assert missing.status_code == 404
        assert missing.json()["reason"] == "NotFound"
        assert bare.get("/apis/sandbox.openova.io/v1").status_code == 404
    with httpx.Client(base_url=kube.url) as client:
        assert client.get("/api").json()["versions"] == ["v1"]
        resources = client.get("/apis/sandbox.openova.io/v1").json()["resources"]
        main = next(r for r in resources if r["name"] == "sandboxes")
        assert main["kind"] == "Sandbox" and main["namespaced"] is True
        assert main["shortNames"] == ["sb", "sbx"]
        assert any(r["name"] == "sandboxes/status" for r in resources)
        core = [r["name"] for r in client.get("/api/v1").json()["resources"]]
        assert {"namespaces", "configmaps", "secrets", "services"} <= set(core)


def test_crd_created_over_http_registers_the_kind(bare_kube: FakeKube) -> None:
    crd = yaml.safe_load(CRD_PATH.read_text())
    with httpx.Client(base_url=bare_kube.url) as client:
        made = client.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd)
        assert made.status_code == 201
        types = {c["type"]: c["status"] for c in made.json()["status"]["conditions"]}
        assert types["Established"] == "True"
        assert client.post(SB, json=sandbox()).status_code == 201
        client.delete(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/sandboxes.sandbox.openova.io"
        )
        assert client.get(SB).status_code == 404


def test_create_sets_server_fields(http: httpx.Client) -> None:
    first = http.post(SB, json=sandbox("a"))
    second = http.post(SB, json=sandbox("b"))
    assert first.status_code == second.status_code == 201
    a, b = first.json()["metadata"], second.json()["metadata"]
    assert a["namespace"] == "acme" and a["generation"] == 1
    assert a["uid"] != b["uid"] and len(a["uid"]) == 36
    assert int(b["resourceVersion"]) > int(a["resourceVersion"])
    assert a["creationTimestamp"].endswith("Z")
    cm = http.post(
        CM, json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}}
    ).json()
    assert int(cm["metadata"]["resourceVersion"]) > int(b["resourceVersion"])  # one counter
    assert "generation" not in cm["metadata"]


def test_create_ignores_status_when_there_is_a_status_subresource(http: httpx.Client) -> None:
    body = sandbox()
    body["status"] = {"phase": "Ready"}
    assert "status" not in http.post(SB, json=body).json()


def test_generate_name(http: httpx.Client) -> None:
    body = sandbox()
    body["metadata"] = {"generateName": "sb-"}
    name = http.post(SB, json=body).json()["metadata"]["name"]
    assert name.startswith("sb-") and len(name) == 8
    body["metadata"] = {}
    nameless = http.post(SB, json=body)
    assert nameless.status_code == 422 and nameless.json()["reason"] == "Invalid"


def test_errors_are_status_objects_with_real_reasons(http: httpx.Client) -> None:
    assert http.post(SB, json=sandbox()).status_code == 201
    dup = http.post(SB, json=sandbox())
    assert dup.status_code == 409
    assert dup.json() | {"message": ""} == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "",
        "reason": "AlreadyExists",
        "code": 409,
        "details": {"name": "sb1", "group": "sandbox.openova.io", "kind": "sandboxes"},
    }
    gone = http.get(f"{SB}/nope").json()
    assert (gone["code"], gone["reason"]) == (404, "NotFound")
    assert gone["message"] == 'sandboxes.sandbox.openova.io "nope" not found'
    no_ns = http.post("/apis/sandbox.openova.io/v1/namespaces/ghost/sandboxes", json=sandbox())
    assert no_ns.status_code == 404 and 'namespaces "ghost" not found' in no_ns.json()["message"]


def test_schema_of_the_crd_is_enforced(http: httpx.Client) -> None:
    bad = sandbox()
    bad["spec"]["quota"]["concurrentSessions"] = 11
    answer = http.post(SB, json=bad)
    assert answer.status_code == 422
    assert answer.json()["reason"] == "Invalid"
    assert "spec.quota.concurrentSessions" in answer.json()["message"]


def test_label_values_are_validated(http: httpx.Client) -> None:
    body = sandbox()
    body["metadata"]["labels"] = {"openova.io/sandbox-owner": "x" * 64}
    assert http.post(SB, json=body).status_code == 422


def test_status_subresource_split_and_generation(http: httpx.Client) -> None:
    created = http.post(SB, json=sandbox()).json()
    status = http.patch(
        f"{SB}/sb1/status",
        headers=MERGE,
        json={"status": {"phase": "Ready"}, "spec": {"planId": "sandbox-pro"}},
    )
    assert status.status_code == 200
    after = status.json()
    assert after["status"]["phase"] == "Ready"
    assert "planId" not in after["spec"]  # /status writes only status
    assert after["metadata"]["generation"] == 1
    main = http.patch(
        f"{SB}/sb1",
        headers=MERGE,
        json={"status": {"phase": "Failed"}, "metadata": {"labels": {"x": "y"}}},
    )
    assert main.json()["status"]["phase"] == "Ready"  # main writes ignore status
    assert main.json()["metadata"]["generation"] == 1  # labels are not spec
    spec = http.patch(f"{SB}/sb1", headers=MERGE, json={"spec": {"planId": "sandbox-pro"}})
    assert spec.json()["metadata"]["generation"] == 2
    assert int(spec.json()["metadata"]["resourceVersion"]) > int(
        created["metadata"]["resourceVersion"]
    )


def test_noop_write_keeps_resource_version(http: httpx.Client) -> None:
    created = http.post(SB, json=sandbox()).json()
    same = http.patch(f"{SB}/sb1", headers=MERGE, json={"metadata": {"labels": {"team": "web"}}})
    assert same.json()["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


def test_put_with_stale_version_conflicts(http: httpx.Client) -> None:
    created = http.post(SB, json=sandbox()).json()
    created["spec"]["planId"] = "sandbox-pro"
    assert http.put(f"{SB}/sb1", json=created).status_code == 200
    created["spec"]["planId"] = "sandbox-ent"
    stale = http.put(f"{SB}/sb1", json=created)
    assert stale.status_code == 409 and stale.json()["reason"] == "Conflict"
    del created["metadata"]["resourceVersion"]
    unconditional = http.put(f"{SB}/sb1", json=created)
    assert unconditional.status_code == 422  # custom resources need a resourceVersion


def test_merge_patch_with_stale_version_conflicts(http: httpx.Client) -> None:
    http.post(SB, json=sandbox())
    answer = http.patch(
        f"{SB}/sb1",
        headers=MERGE,
        json={"metadata": {"resourceVersion": "1"}, "spec": {"planId": "x"}},
    )
    assert answer.status_code == 409


def test_json_patch_and_failed_test_op(http: httpx.Client) -> None:
    http.post(SB, json=sandbox())
    ok = http.patch(
        f"{SB}/sb1",
        headers=JSONPATCH,
        json=[
            {"op": "test", "path": "/spec/quota/cpu", "value": "4"},
            {"op": "replace", "path": "/spec/quota/cpu", "value": "2"},
            {"op": "add", "path": "/metadata/finalizers", "value": ["a/b"]},
        ],
    )
    assert ok.status_code == 200 and ok.json()["spec"]["quota"]["cpu"] == "2"
    failed = http.patch(
        f"{SB}/sb1",
        headers=JSONPATCH,
        json=[{"op": "test", "path": "/spec/quota/cpu", "value": "4"}],
    )
    assert failed.status_code == 422 and failed.json()["reason"] == "Invalid"
    assert http.get(f"{SB}/sb1").json()["spec"]["quota"]["cpu"] == "2"


def test_strategic_merge_patch_is_refused_for_custom_resources(http: httpx.Client) -> None:
    http.post(SB, json=sandbox())
    smp = {"Content-Type": "application/strategic-merge-patch+json"}
    assert http.patch(f"{SB}/sb1", headers=smp, json={"spec": {}}).status_code == 415
    http.post(CM, json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})
    applied = http.patch(f"{CM}/c", headers=smp, json={"data": {"k": "v"}})
    assert applied.status_code == 200 and applied.json()["data"] == {"k": "v"}


def test_finalizers_hold_deletion(http: httpx.Client) -> None:
    body = sandbox()
    body["metadata"]["finalizers"] = ["sandbox.openova.io/finalizer"]
    http.post(SB, json=body)
    marked = http.delete(f"{SB}/sb1")
    assert marked.status_code == 200
    stamp = marked.json()["metadata"]["deletionTimestamp"]
    again = http.delete(f"{SB}/sb1").json()
    assert again["metadata"]["deletionTimestamp"] == stamp
    more = http.patch(
        f"{SB}/sb1",
        headers=MERGE,
        json={"metadata": {"finalizers": ["sandbox.openova.io/finalizer", "x/y"]}},
    )
    assert more.status_code == 422
    released = http.patch(f"{SB}/sb1", headers=MERGE, json={"metadata": {"finalizers": None}})
    assert released.status_code == 200
    assert http.get(f"{SB}/sb1").status_code == 404


def test_delete_preconditions(http: httpx.Client) -> None:
    http.post(SB, json=sandbox())
    answer = http.request("DELETE", f"{SB}/sb1", json={"preconditions": {"uid": "not-the-uid"}})
    assert answer.status_code == 409


def test_label_selectors_and_list_version(http: httpx.Client) -> None:
    for name, team, tier in (("a", "web", "gold"), ("b", "api", "gold"), ("c", "web", None)):
        body = sandbox(name)
        body["metadata"]["labels"] = {"team": team, **({"tier": tier} if tier else {})}
        http.post(SB, json=body)

    def names(selector: str) -> list[str]:
        data = http.get(SB, params={"labelSelector": selector}).json()
        return [i["metadata"]["name"] for i in data["items"]]

    assert names("team=web") == ["a", "c"]
    assert names("team!=web") == ["b"]
    assert names("team in (api, ops)") == ["b"]
    assert names("team notin (api)") == ["a", "c"]
    assert names("tier") == ["a", "b"]
    assert names("!tier") == ["c"]
    assert names("team=web,tier=gold") == ["a"]
    listing = http.get(SB).json()
    assert listing["kind"] == "SandboxList"
    assert int(listing["metadata"]["resourceVersion"]) >= max(
        int(i["metadata"]["resourceVersion"]) for i in listing["items"]
    )
    assert http.get(SB, params={"labelSelector": "a b"}).status_code == 400
    everywhere = http.get("/apis/sandbox.openova.io/v1/sandboxes").json()["items"]
    assert len(everywhere) == 3


def _read_events(
    url: str,
    path: str,
    params: dict[str, str],
    count: int,
    *,
    first: threading.Event | None = None,
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    with (
        httpx.Client(base_url=url, timeout=30) as client,
        client.stream(
            "GET", path, params={"watch": "true", "timeoutSeconds": "30", **params}
        ) as response,
    ):
        for line in response.iter_lines():
            if line:
                events.append(json.loads(line))
                if first is not None:
                    first.set()
            if len(events) >= count:
                break
    return events


def test_watch_from_a_version_sees_later_changes_in_order(
    kube: FakeKube, http: httpx.Client
) -> None:
    start = http.get(SB).json()["metadata"]["resourceVersion"]
    http.post(SB, json=sandbox("a"))
    http.patch(f"{SB}/a", headers=MERGE, json={"spec": {"planId": "sandbox-pro"}})
    http.delete(f"{SB}/a")
    events = _read_events(kube.url, SB, {"resourceVersion": start}, 3)
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert versions == sorted(versions)


def test_watch_follows_live_changes(kube: FakeKube, http: httpx.Client) -> None:
    http.post(SB, json=sandbox("old"))
    got: list[dict[str, Any]] = []
    first = threading.Event()
    reader = threading.Thread(
        target=lambda: got.extend(
            _read_events(kube.url, SB, {"labelSelector": "team=web"}, 2, first=first)
        )
    )
    reader.start()
    # the initial ADDED (no resourceVersion given) comes first; then a live one
    assert first.wait(timeout=20)
    http.post(SB, json=sandbox("new"))
    reader.join(timeout=40)  # the watch itself ends after 30 s
    assert not reader.is_alive()
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in got] == [
        ("ADDED", "old"),
        ("ADDED", "new"),
    ]


def test_watch_from_a_compacted_version_is_expired(kube: FakeKube, http: httpx.Client) -> None:
    http.post(SB, json=sandbox("a"))
    kube.compact()
    (event,) = _read_events(kube.url, SB, {"resourceVersion": "1"}, 1)
    assert event["type"] == "ERROR"
    assert (event["object"]["code"], event["object"]["reason"]) == (410, "Expired")


def test_owner_reference_cascade(kube: FakeKube, http: httpx.Client) -> None:
    owner = http.post(SB, json=sandbox()).json()
    ref = {
        "apiVersion": "sandbox.openova.io/v1",
        "kind": "Sandbox",
        "name": "sb1",
        "uid": owner["metadata"]["uid"],
    }
    http.post(
        CM,
        json={
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "child", "ownerReferences": [ref]},
        },
    )
    http.post(CM, json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "free"}})
    http.delete(f"{SB}/sb1")
    kube.settle()
    assert http.get(f"{CM}/child").status_code == 404
    assert http.get(f"{CM}/free").status_code == 200


def test_orphan_propagation_keeps_dependents(kube: FakeKube, http: httpx.Client) -> None:
    owner = http.post(SB, json=sandbox()).json()
    ref = {
        "apiVersion": "sandbox.openova.io/v1",
        "kind": "Sandbox",
        "name": "sb1",
        "uid": owner["metadata"]["uid"],
    }
    http.post(
        CM,
        json={
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "child", "ownerReferences": [ref]},
        },
    )
    http.request("DELETE", f"{SB}/sb1", json={"propagationPolicy": "Orphan"})
    kube.settle()
    child = http.get(f"{CM}/child").json()
    assert child["metadata"].get("ownerReferences") == []


def test_namespace_cascade(kube: FakeKube, http: httpx.Client) -> None:
    http.post(
        "/api/v1/namespaces",
        json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "doomed"}},
    )
    ns_cm = "/api/v1/namespaces/doomed/configmaps"
    held = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "held", "finalizers": ["x.io/hold"]},
    }
    http.post(ns_cm, json=held)
    http.post(ns_cm, json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})
    ns = http.delete("/api/v1/namespaces/doomed").json()
    assert ns["status"]["phase"] == "Terminating"
    refused = http.post(
        ns_cm, json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "late"}}
    )
    assert refused.status_code == 403 and refused.json()["reason"] == "Forbidden"
    kube.settle()
    assert http.get(f"{ns_cm}/c").status_code == 404
    assert http.get(f"{ns_cm}/held").json()["metadata"]["deletionTimestamp"]
    assert http.get("/api/v1/namespaces/doomed").status_code == 200  # still terminating
    http.patch(f"{ns_cm}/held", headers=MERGE, json={"metadata": {"finalizers": None}})
    kube.settle()
    assert http.get("/api/v1/namespaces/doomed").status_code == 404


def test_set_ready_replicas_plays_the_statefulset_controller(
    kube: FakeKube, http: httpx.Client
) -> None:
    sts = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "pty-server"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"a": "b"}},
            "serviceName": "x",
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": []}},
        },
    }
    http.post("/apis/apps/v1/namespaces/acme/statefulsets", json=sts)
    kube.set_ready_replicas("acme", "pty-server", 1)
    got = http.get("/apis/apps/v1/namespaces/acme/statefulsets/pty-server").json()
    assert got["status"]["readyReplicas"] == 1
    assert got["metadata"]["generation"] == 1


def test_fault_injection_error_then_recovery(kube: FakeKube, http: httpx.Client) -> None:
    kube.inject(method="GET", path=r"/sandboxes$", status=500)
    broken = http.get(SB)
    assert broken.status_code == 500 and broken.json()["reason"] == "InternalError"
    assert http.get(SB).status_code == 200  # only the next matching request
    kube.inject(method="POST", path="sandboxes", status=403, times=2)
    assert http.post(SB, json=sandbox()).json()["reason"] == "Forbidden"
    assert http.post(SB, json=sandbox()).status_code == 403
    assert http.post(SB, json=sandbox()).status_code == 201


def test_fault_injection_hang_outlives_a_client_timeout(kube: FakeKube) -> None:
    kube.inject(method="GET", path="sandboxes", hang=2.0)
    with httpx.Client(base_url=kube.url, timeout=0.3) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.get(SB)
        kube.clear_faults()


def test_kubeconfig_points_at_the_server(kube: FakeKube) -> None:
    config = yaml.safe_load(kube.kubeconfig_path.read_text())
    assert config["clusters"][0]["cluster"]["server"] == kube.url


def test_crd_defaults_are_applied(http: httpx.Client) -> None:
    body = sandbox()
    body["spec"]["idleScaling"] = {}
    made = http.post(SB, json=body).json()
    assert made["spec"]["idleScaling"] == {"enabled": True, "timeoutMinutes": 30}
    assert "idleScaling" not in http.post(SB, json=sandbox("plain")).json()["spec"]
