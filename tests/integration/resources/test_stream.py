"""The SSE stream over real HTTP: ready, the life of a sandbox as events, visibility,
pings, auth through ``?access_token=``, errors, and unsubscribe on disconnect."""

from __future__ import annotations

from datetime import datetime

from resource_callers import ALICE, BASE, BOB, CAROL, SESSIONS, STREAM, wait_until


def test_ready_then_added_modified_deleted(api):
    h = api.auth(**ALICE)
    reader = api.stream(STREAM, params={"kinds": "sandboxes"}, headers=h)
    response = reader.response
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    ready = reader.next()
    assert ready is not None and ready.event == "ready"
    assert ready.data == {"cluster": "local", "kinds": ["sandbox"], "resumed": False}

    name = api.create(h, "live")
    added = reader.next_event()
    assert added.data["type"] == "ADDED"
    assert added.data["cluster"] == "local" and added.data["kind"] == "sandbox"
    assert added.data["object"]["metadata"]["name"] == name
    assert added.data["object"]["kind"] == "Sandbox"
    assert datetime.fromisoformat(added.data["at"].replace("Z", "+00:00")).tzinfo is not None

    # the embedded controller adds its finalizer and writes status: MODIFIED events
    modified = reader.next_event()
    assert modified.data["type"] == "MODIFIED"
    assert modified.data["object"]["metadata"]["name"] == name
    assert int(modified.data["object"]["metadata"]["resourceVersion"]) > int(
        added.data["object"]["metadata"]["resourceVersion"]
    )

    assert api.http.delete(f"{SESSIONS}/{name}", headers=h).status_code == 204
    deleted = reader.next_event(lambda f: f.event == "message" and f.data["type"] == "DELETED")
    assert deleted.data["object"]["metadata"]["name"] == name
    listed = api.http.get(f"{BASE}/local/k8s/sandboxes", headers=h).json()
    assert listed["items"] == []


def test_a_stranger_sees_none_of_the_events_of_others(api):
    alice, bob, carol = api.auth(**ALICE), api.auth(**BOB), api.auth(**CAROL)
    bob_stream = api.stream(STREAM, params={"kinds": "sandbox"}, headers=bob)
    carol_stream = api.stream(STREAM, params={"kinds": "sandbox"}, headers=carol)
    assert bob_stream.next().event == "ready"
    assert carol_stream.next().event == "ready"
    api.create(alice, "secret")
    mine = api.create(bob, "mine")
    theirs = api.create(carol, "theirs")
    # the first change either stranger hears about is their own: nothing of alice's
    first_bob = bob_stream.next_event()
    assert first_bob.data["object"]["metadata"]["name"] == mine
    assert first_bob.data["type"] == "ADDED"
    first_carol = carol_stream.next_event()
    assert first_carol.data["object"]["metadata"]["name"] == theirs
    assert first_carol.data["object"]["metadata"]["namespace"] == "globex"


def test_org_admin_with_org_scope_hears_the_whole_org(api):
    admin = api.auth(sub="root-sub-0003", email="root@acme.com", org="acme", roles=("org-admin",))
    reader = api.stream(STREAM, params={"kinds": "sandbox", "scope": "org"}, headers=admin)
    assert reader.next().event == "ready"
    name = api.create(api.auth(**ALICE), "watched")
    heard = reader.next_event()
    assert heard.data["object"]["metadata"]["name"] == name


def test_pings_keep_an_idle_stream_open(api):
    api.deps.resources.ping_interval = 0.2
    reader = api.stream(STREAM, params={"kinds": "sandbox"}, headers=api.auth(**ALICE))
    assert reader.next().event == "ready"
    ping = reader.next(timeout=10)
    assert ping is not None and ping.event == "comment" and ping.data == "ping"
    assert reader.next(timeout=10).event == "comment"


def test_access_token_in_the_query_authenticates(api):
    token = api.token(**ALICE)
    reader = api.stream(STREAM, params={"kinds": "sandbox", "access_token": token})
    assert reader.response.status_code == 200
    assert reader.next().event == "ready"


def test_errors_before_the_stream_starts(api):
    h = api.auth(**ALICE)
    cases = [
        ({"kinds": "sandbox"}, {}, 401, "unauthenticated"),
        ({}, h, 400, "invalid-request"),
        ({"kinds": ""}, h, 400, "missing-kinds"),
        ({"kinds": "sandbox,pods"}, h, 400, "unknown-kind"),
        ({"kinds": "sandbox", "scope": "all"}, h, 400, "invalid-scope"),
    ]
    for params, headers, status, code in cases:
        response = api.http.get(STREAM, params=params, headers=headers)
        assert response.status_code == status, (params, response.text)
        assert response.json()["error"] == code
    other = api.http.get(f"{BASE}/elsewhere/k8s/stream", params={"kinds": "sandbox"}, headers=h)
    assert other.status_code == 404 and other.json()["error"] == "cluster-not-found"


def test_a_disconnected_client_is_unsubscribed(api):
    informer = api.deps.resources.informer
    # the server's own followers (the MCP live resources, the sandbox reaper)
    own = informer.subscriber_count
    reader = api.stream(STREAM, params={"kinds": "sandbox"}, headers=api.auth(**ALICE))
    assert reader.next().event == "ready"
    assert informer.subscriber_count == own + 1
    reader.close()
    wait_until(lambda: informer.subscriber_count == own)


def test_ending_streams_for_shutdown_closes_them_with_a_final_event(api):
    reader = api.stream(STREAM, params={"kinds": "sandbox"}, headers=api.auth(**ALICE))
    assert reader.next().event == "ready"
    api.deps.resources.end_streams()  # what a stopping server calls (from any thread)
    end = reader.next_event(lambda f: f.event == "end")
    assert end.data == {"cluster": "local", "reason": "shutdown"}
    assert reader.next() is None  # the response is complete
    assert api.deps.resources.informer.subscriber_count == 0
    # the cache itself keeps serving
    h = api.auth(**ALICE)
    assert api.http.get(f"{BASE}/local/k8s/sandboxes", headers=h).status_code == 200
