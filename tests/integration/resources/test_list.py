"""The list route over real HTTP: shape, filters, paging, visibility and its errors."""

from __future__ import annotations

import base64

from resource_callers import ADMIN, ALICE, BASE, BOB, CAROL, LIST

from openova_sandbox.domain.model import LABEL_AGENT


def names(body):
    return [item["metadata"]["name"] for item in body["items"]]


def test_list_shape_is_full_documents_sorted_with_cluster_echoed(api):
    h = api.auth(**ALICE)
    second = api.create(h, "zeta")
    first = api.create(h, "alpha")
    for path in (LIST, f"{BASE}/local/k8s/sandbox"):
        response = api.http.get(path, headers=h)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["kind"] == "sandbox"
        assert body["cluster"] == "local"
        assert body["ageSeconds"] == 0
        assert "continue" not in body
        assert names(body) == sorted([first, second])
        item = body["items"][0]
        assert item["apiVersion"] == "sandbox.openova.io/v1" and item["kind"] == "Sandbox"
        assert item["metadata"]["namespace"] == "acme"
        assert item["metadata"]["resourceVersion"].isdigit()
        assert item["spec"]["owner"]["email"] == "alice@acme.com"


def test_unknown_cluster_and_kind_are_404_with_useful_detail(api):
    h = api.auth(**ALICE)
    gone = api.http.get(f"{BASE}/prod-eu/k8s/sandboxes", headers=h)
    assert gone.status_code == 404
    assert gone.json()["error"] == "cluster-not-found"
    assert "local" in gone.json()["detail"] and "prod-eu" in gone.json()["detail"]
    kind = api.http.get(f"{BASE}/local/k8s/pods", headers=h)
    assert kind.status_code == 404
    assert kind.json()["error"] == "unknown-kind"
    assert "sandbox" in kind.json()["detail"] and "pods" in kind.json()["detail"]


def test_requires_a_token(api):
    assert api.http.get(LIST).status_code == 401
    bad = api.http.get(LIST, headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401


def test_visibility_follows_the_sessions_rules(api):
    alice, bob, admin, carol = (api.auth(**p) for p in (ALICE, BOB, ADMIN, CAROL))
    a = api.create(alice, "one")
    b = api.create(bob, "two")
    c = api.create(carol, "three")

    def listed(headers, **params):
        response = api.http.get(LIST, headers=headers, params=params)
        assert response.status_code == 200, response.text
        return names(response.json())

    assert listed(alice) == [a]
    assert listed(bob) == [b]
    assert listed(carol) == [c]
    assert listed(admin) == []  # own objects only, like the sessions list
    assert listed(admin, scope="org") == sorted([a, b])  # the org, never globex
    assert listed(bob, scope="org") == [b]  # not an admin: still only their own
    # the sessions list agrees, object for object
    sessions = api.http.get("/api/v1/sandbox/sessions", headers=admin, params={"scope": "org"})
    assert sorted(s["id"] for s in sessions.json()["sandboxes"]) == listed(admin, scope="org")
    bad = api.http.get(LIST, headers=alice, params={"scope": "everything"})
    assert bad.status_code == 400 and bad.json()["error"] == "invalid-scope"


def test_namespace_filter_stays_within_what_the_caller_sees(api):
    alice, carol = api.auth(**ALICE), api.auth(**CAROL)
    a = api.create(alice, "one")
    api.create(carol, "three")
    assert names(api.http.get(LIST, headers=alice, params={"ns": "acme"}).json()) == [a]
    assert names(api.http.get(LIST, headers=alice, params={"ns": "globex"}).json()) == []


def test_label_selectors(api):
    h = api.auth(**ALICE)
    claude = api.create(h, "one", agent="claude-code")
    other = api.create(h, "two", agent="aider")

    def select(selector):
        response = api.http.get(LIST, headers=h, params={"labelSelector": selector})
        assert response.status_code == 200, response.text
        return names(response.json())

    assert select(f"{LABEL_AGENT}=claude-code") == [claude]
    assert select(f"{LABEL_AGENT}==aider") == [other]
    assert select(f"{LABEL_AGENT}!=claude-code") == [other]
    assert select(LABEL_AGENT) == sorted([claude, other])
    assert select(f"!{LABEL_AGENT}") == []
    assert select("no-such-label") == []
    assert select("!no-such-label") == sorted([claude, other])
    assert select(f"{LABEL_AGENT}=claude-code,catalyst.openova.io/organization=acme") == [claude]
    assert select(f"{LABEL_AGENT}=claude-code,catalyst.openova.io/organization=x") == []
    for bad in ("a=b=c", "a,,b", "=x", "bad key=1", "a in (b)", "k=-x", "-k"):
        response = api.http.get(LIST, headers=h, params={"labelSelector": bad})
        assert response.status_code == 400, bad
        assert response.json()["error"] == "invalid-label-selector"
        assert bad in response.json()["detail"]


def test_paging_walks_every_object_once_in_order(api):
    h = api.auth(**ALICE)
    created = sorted(api.create(h, f"box{i}") for i in range(5))
    seen, pages, token = [], 0, None
    while True:
        params = {"limit": 2} | ({"continue": token} if token else {})
        body = api.http.get(LIST, headers=h, params=params).json()
        pages += 1
        seen += names(body)
        token = body.get("continue")
        if token is None:
            break
        assert len(body["items"]) == 2
    assert seen == created
    assert pages == 3
    # a write between pages does not repeat or skip what is left
    first = api.http.get(LIST, headers=h, params={"limit": 2}).json()
    api.create(h, "aaa-before-the-cursor")
    rest = api.http.get(LIST, headers=h, params={"continue": first["continue"]}).json()
    assert names(first) + names(rest) == created


def test_bad_paging_parameters_are_400(api):
    h = api.auth(**ALICE)
    for limit in ("0", "501", "-1", "ten"):
        response = api.http.get(LIST, headers=h, params={"limit": limit})
        assert response.status_code == 400, limit
        assert "limit" in response.json()["detail"]
    forged = base64.urlsafe_b64encode(b"no-slash-here").decode().rstrip("=")
    for token in ("%%%", "not base64!", forged, "Zm9v"):
        response = api.http.get(LIST, headers=h, params={"continue": token})
        assert response.status_code == 400, token
        assert response.json()["error"] == "invalid-continue"
