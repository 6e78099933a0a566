"""Resuming the SSE stream over real HTTP: `retry:`, ids on every change, a reconnect
with `Last-Event-ID` (or `?lastEventId=`) that gets exactly what was missed, the
who-sees-what rule on the replay, and the `reset` frame for ids that cannot resume."""

from __future__ import annotations

from resource_callers import ADMIN, ALICE, BASE, BOB, CAROL, SESSIONS, STREAM, wait_until

KINDS = {"kinds": "sandbox"}


def split(ident):
    epoch, _, seq = ident.partition("-")
    return epoch, int(seq)


def seq(ident):
    return split(ident)[1]


def name_of(frame):
    return frame.data["object"]["metadata"]["name"]


def open_stream(api, headers, params=KINDS):
    reader = api.stream(STREAM, params=params, headers=headers)
    assert reader.response.status_code == 200
    return reader


def disconnect(api, reader):
    """Close a stream and wait until the server has dropped its subscription."""
    informer = api.deps.resources.informer
    before = informer.subscriber_count
    reader.close()
    wait_until(lambda: informer.subscriber_count < before)


def until_added(reader, name):
    """Every change frame up to and including the ADDED of ``name``."""
    frames = []
    while True:
        frame = reader.next_event()
        frames.append(frame)
        if frame.data["type"] == "ADDED" and name_of(frame) == name:
            return frames


def listed(api, headers):
    return api.http.get(f"{BASE}/local/k8s/sandboxes", headers=headers).json()["items"]


def reconciled(api, headers, name):
    """The controller has added its finalizer and written a status phase."""
    items = [i for i in listed(api, headers) if i["metadata"]["name"] == name]
    return bool(
        items and items[0]["metadata"].get("finalizers") and items[0]["status"].get("phase")
    )


def gone_from_list(api, headers, name):
    return all(i["metadata"]["name"] != name for i in listed(api, headers))


def test_the_stream_sets_retry_and_numbers_every_change(api):
    h = api.auth(**ALICE)
    reader = open_stream(api, h)
    ready = reader.next()
    assert ready.event == "ready" and ready.data["resumed"] is False
    assert reader.retry == 2000  # sent before ready
    epoch, start = split(ready.id)
    assert len(epoch) == 12

    name = api.create(h, "counted")
    assert api.http.delete(f"{SESSIONS}/{name}", headers=h).status_code == 204
    changes = []
    while not changes or changes[-1].data["type"] != "DELETED":
        changes.append(reader.next_event())
    assert changes[0].data["type"] == "ADDED"
    assert all(c.id is not None and split(c.id)[0] == epoch for c in changes)
    numbers = [seq(c.id) for c in changes]
    assert numbers == sorted(set(numbers)) and numbers[0] > start
    # only alice acts here: every change is hers, so there is no gap either
    assert numbers == list(range(start + 1, start + 1 + len(numbers)))


def test_a_reconnect_gets_exactly_what_was_missed_then_live_changes(api):
    h = api.auth(**ALICE)
    first = open_stream(api, h)
    assert first.next().event == "ready"
    early = api.create(h, "early")
    seen = first.next_event()
    assert seen.data["type"] == "ADDED" and name_of(seen) == early
    disconnect(api, first)

    # while no stream is open: create two, the controller modifies them, delete one
    gone = api.create(h, "gone")
    kept = api.create(h, "kept")
    wait_until(lambda: reconciled(api, h, gone) and reconciled(api, h, kept))
    assert api.http.delete(f"{SESSIONS}/{gone}", headers=h).status_code == 204
    wait_until(lambda: gone_from_list(api, h, gone))
    missed_until = seq(api.deps.resources.informer.position)

    resumed = open_stream(api, {**h, "Last-Event-ID": seen.id})
    ready = resumed.next()
    assert ready.event == "ready", ready  # no reset before it
    assert ready.data == {"cluster": "local", "kinds": ["sandbox"], "resumed": True}
    assert ready.id == seen.id  # the point the stream continues from
    replay = []
    while not replay or seq(replay[-1].id) < missed_until:
        replay.append(resumed.next_event())
    live_name = api.create(h, "live")
    live = until_added(resumed, live_name)

    everything = replay + live
    numbers = [seq(f.id) for f in everything]
    # in order, nothing repeated, nothing skipped, from right after the last id seen
    assert numbers == list(range(seq(seen.id) + 1, seq(seen.id) + 1 + len(numbers)))
    changes = [(f.data["type"], name_of(f)) for f in replay]
    assert ("ADDED", early) not in changes  # already seen before the disconnect
    assert changes.index(("ADDED", gone)) < changes.index(("ADDED", kept))
    assert changes.index(("ADDED", kept)) < changes.index(("DELETED", gone))
    assert ("MODIFIED", kept) in changes  # the controller's writes
    # the delete: deletionTimestamp set, then gone once the finalizer is released
    assert changes.index(("MODIFIED", gone)) < changes.index(("DELETED", gone))
    deleting = [f for f in replay if name_of(f) == gone and f.data["type"] == "MODIFIED"]
    assert deleting[-1].data["object"]["metadata"].get("deletionTimestamp")
    assert live[-1].data["type"] == "ADDED" and seq(live[-1].id) > missed_until

    # a client applying the replay to what it had ends where the server is
    state = {early: seen.data["object"]["metadata"]["resourceVersion"]}
    for frame in replay:
        if frame.data["type"] == "DELETED":
            state.pop(name_of(frame), None)
        else:
            state[name_of(frame)] = frame.data["object"]["metadata"]["resourceVersion"]
    assert set(state) == {early, kept}


def test_the_replay_keeps_to_who_sees_what(api):
    alice, bob, carol = api.auth(**ALICE), api.auth(**BOB), api.auth(**CAROL)
    admin = api.auth(**ADMIN)
    bob_first = open_stream(api, bob)
    admin_first = open_stream(api, admin, {**KINDS, "scope": "org"})
    bob_ready, admin_ready = bob_first.next(), admin_first.next()
    assert bob_ready.event == admin_ready.event == "ready"
    disconnect(api, bob_first)
    disconnect(api, admin_first)

    alices = api.create(alice, "alices")
    carols = api.create(carol, "carols")
    bobs = api.create(bob, "bobs")

    bob_again = open_stream(api, {**bob, "Last-Event-ID": bob_ready.id})
    admin_again = open_stream(
        api, {**admin, "Last-Event-ID": admin_ready.id}, {**KINDS, "scope": "org"}
    )
    assert bob_again.next().data["resumed"] is True
    assert admin_again.next().data["resumed"] is True
    marker = api.create(bob, "marker")
    bob_heard = until_added(bob_again, marker)
    admin_heard = until_added(admin_again, marker)

    assert name_of(bob_heard[0]) == bobs and bob_heard[0].data["type"] == "ADDED"
    assert {name_of(f) for f in bob_heard} == {bobs, marker}
    assert {name_of(f) for f in admin_heard} == {alices, bobs, marker}
    assert carols not in {name_of(f) for f in admin_heard}
    for heard in (bob_heard, admin_heard):
        numbers = [seq(f.id) for f in heard]
        assert numbers == sorted(set(numbers))


def test_ids_that_cannot_resume_get_a_reset_then_a_fresh_stream(api):
    h = api.auth(**ALICE)
    epoch, now = split(api.deps.resources.informer.position)
    other_epoch = ("0" if epoch[0] != "0" else "1") + epoch[1:]
    cases = [
        "garbage",
        "12345",
        "-1",
        f"{epoch}-",
        f"{epoch}-x",
        f"{epoch}-007",
        f"{other_epoch}-{now}",  # another process, or before a relist
        f"{epoch}-{now + 1000}",  # never issued
        "9" * 5000,
        b"\xff\xfe-1",  # not even text
    ]
    for value in cases:
        reader = open_stream(api, {**h, "Last-Event-ID": value})
        reset = reader.next()
        assert reset.event == "reset", (value, reset)
        assert reset.data == {"cluster": "local", "reason": "unknown-id"}
        ready = reader.next()
        assert ready.event == "ready" and ready.data["resumed"] is False
        assert split(ready.id)[0] == epoch
        disconnect(api, reader)

    # after the reset the stream is an ordinary fresh one
    reader = open_stream(api, {**h, "Last-Event-ID": "garbage"})
    assert [reader.next().event, reader.next().event] == ["reset", "ready"]
    name = api.create(h, "after-reset")
    assert name_of(reader.next_event()) == name


def test_an_empty_header_is_a_fresh_stream_without_reset(api):
    reader = open_stream(api, {**api.auth(**ALICE), "Last-Event-ID": ""})
    ready = reader.next()
    assert ready.event == "ready" and ready.data["resumed"] is False


def test_the_last_event_id_query_parameter_resumes_too(api):
    h = api.auth(**ALICE)
    first = open_stream(api, h)
    point = first.next().id
    disconnect(api, first)
    name = api.create(h, "by-query")

    reader = open_stream(api, h, {**KINDS, "lastEventId": point})
    ready = reader.next()
    assert ready.event == "ready" and ready.data["resumed"] is True
    first_change = reader.next_event()
    assert first_change.data["type"] == "ADDED" and name_of(first_change) == name
    assert seq(first_change.id) == seq(point) + 1

    bad = open_stream(api, h, {**KINDS, "lastEventId": "nope"})
    assert bad.next().data == {"cluster": "local", "reason": "unknown-id"}
    # the header wins over the query parameter
    both = open_stream(api, {**h, "Last-Event-ID": point}, {**KINDS, "lastEventId": "nope"})
    assert both.next().data["resumed"] is True


def missed_two_reconciled_creates(api):
    """Alice's stream position, then two sandboxes created and reconciled while she was
    away (two ADDEDs and the controller's MODIFIEDs: more than 2 changes)."""
    h = api.auth(**ALICE)
    first = open_stream(api, h)
    point = first.next().id
    disconnect(api, first)
    one, two = api.create(h, "one"), api.create(h, "two")
    wait_until(lambda: reconciled(api, h, one) and reconciled(api, h, two))
    return h, point


def test_an_id_whose_changes_left_the_history_gets_history_expired(api_with):
    api = api_with(history_size=2)
    h, point = missed_two_reconciled_creates(api)
    reader = open_stream(api, {**h, "Last-Event-ID": point})
    reset = reader.next()
    assert reset.event == "reset"
    assert reset.data == {"cluster": "local", "reason": "history-expired"}
    ready = reader.next()
    assert ready.event == "ready" and ready.data["resumed"] is False
    assert seq(ready.id) >= seq(point) + 4
    # the newest id is still in the history: resuming from there works
    fresh = open_stream(api, {**h, "Last-Event-ID": ready.id})
    assert fresh.next().data["resumed"] is True


def test_a_replay_bigger_than_a_subscriber_buffer_gets_too_far_behind(api_with):
    api = api_with(subscriber_capacity=2)
    h, point = missed_two_reconciled_creates(api)
    reader = open_stream(api, {**h, "Last-Event-ID": point})
    assert reader.next().data == {"cluster": "local", "reason": "too-far-behind"}
    assert reader.next().data["resumed"] is False
    # a stranger's replay from the same id is empty, so it fits
    stranger = open_stream(api, {**api.auth(**CAROL), "Last-Event-ID": point})
    assert stranger.next().data["resumed"] is True
