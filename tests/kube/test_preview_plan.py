"""The operator's previews plan, pure and by case (controller/kube/previews.py): the
Sandbox's annotation and status, the preview objects present and what the pod runs ->
objects, pod actions, ``status.portPreviews``, the ``PreviewsReady`` flag, requeue."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from openova_sandbox.controller.kube.preview_render import render_preview
from openova_sandbox.controller.kube.previews import (
    ANNOTATION,
    CONDITION,
    OUTPUT_EVERY,
    OUTPUT_TAIL,
    RUNNING_POLL,
    STARTING_POLL,
    InvalidPreviews,
    PodAction,
    Wanted,
    encode_wanted,
    parse_wanted,
    plan_previews,
)
from openova_sandbox.controller.kube.render import JSON, RenderConfig
from openova_sandbox.domain.model import Sandbox

from .samples import NOW, sandbox

CONFIG = RenderConfig(git_base_url="https://gitea.example.com", sandbox_host="{org}.example.com")
NS = "sandbox-dev-at-acme-com"
SERVE = "python3 -m http.server $PORT"


def box(
    wanted: list[Wanted] | str | None = None, entries: list[dict[str, Any]] | None = None
) -> Sandbox:
    annotations = {}
    if isinstance(wanted, list):
        annotations[ANNOTATION] = encode_wanted(wanted)
    elif wanted is not None:
        annotations[ANNOTATION] = wanted
    status: dict[str, Any] = {"phase": "Ready"}
    if entries is not None:
        status["portPreviews"] = entries
    return sandbox("dev", annotations=annotations, status=status)


def present(sb: Sandbox, port: int, *, public: bool = False) -> dict[tuple[str, str], Any]:
    return {
        (o["kind"], o["metadata"]["name"]): o
        for o in render_preview(sb, NS, port, CONFIG, public=public)
    }


def test_nothing_wanted_nothing_shown_is_an_empty_plan() -> None:
    plan = plan_previews(box(), NS, {}, [], CONFIG, pod_up=True, now=NOW)
    assert (plan.objects, plan.stale, plan.actions, plan.entries) == ((), (), (), ())
    assert plan.flag is None and plan.requeue is None


def test_a_new_preview_is_rendered_started_and_polled_each_second() -> None:
    sb = box([Wanted(8000, SERVE, False, "r1")])
    plan = plan_previews(sb, NS, {}, [], CONFIG, pod_up=True, now=NOW)
    assert [(o["kind"], o["metadata"]["name"]) for o in plan.objects] == [
        ("Service", "preview-8000"),
        ("NetworkPolicy", "preview-8000"),
    ]
    assert plan.actions == (PodAction("put", 8000, "r1", SERVE),)
    assert plan.entries == (
        {
            "port": 8000,
            "id": "r1",
            "public": False,
            "path": "/preview/dev/8000/",
            "status": "starting",
        },
    )
    assert plan.flag == (CONDITION, "True", "AsWanted", "1 preview(s) wanted")
    assert plan.requeue == STARTING_POLL


def test_a_listening_run_is_left_alone_and_polled_for_its_exit() -> None:
    sb = box([Wanted(8000, SERVE, True, "r1")])
    pod = [{"port": 8000, "id": "r1", "status": "listening", "output": "..."}]
    plan = plan_previews(sb, NS, present(sb, 8000, public=True), pod, CONFIG, pod_up=True, now=NOW)
    assert plan.actions == ()
    assert plan.entries is not None
    entry = plan.entries[0]
    assert entry["status"] == "listening"
    assert entry["url"] == "https://acme.example.com/preview/dev/8000/"
    assert plan.requeue == RUNNING_POLL


def running(output: str, status: str = "listening") -> list[dict[str, Any]]:
    return [{"port": 8000, "id": "r1", "status": status, "output": output}]


def passed(sb: Sandbox, pod: list[dict[str, Any]], seconds: float) -> tuple[JSON, ...]:
    """The entries of a pass ``seconds`` after ``NOW`` over ``sb`` and the pod's runs."""
    at = NOW + timedelta(seconds=seconds)
    entries = plan_previews(sb, NS, {}, pod, CONFIG, pod_up=True, now=at).entries
    assert entries is not None
    return entries


def test_a_running_preview_shows_the_tail_of_its_output() -> None:
    sb = box([Wanted(8000, SERVE, False, "r1")])
    (starting,) = passed(sb, running("compiling...\n", "starting"), 0)
    assert (starting["status"], starting["output"]) == ("starting", "compiling...\n")
    assert starting["outputAt"] == "2026-01-01T12:00:00Z"
    # bounded: the newest OUTPUT_TAIL characters of what the pod keeps (16 KiB)
    (chatty,) = passed(sb, running("x" * 5000 + "listening on :8000"), 0)
    assert len(chatty["output"]) == OUTPUT_TAIL and chatty["output"].endswith("on :8000")
    # nothing printed yet: no output field at all (as before)
    (quiet,) = passed(sb, running(""), 0)
    assert "output" not in quiet and "outputAt" not in quiet


def test_an_unchanged_tail_leaves_the_status_as_it_was() -> None:
    wanted = [Wanted(8000, SERVE, False, "r1")]
    shown = passed(box(wanted), running("ready in 300 ms\n"), 0)
    # later passes over the same output: the very same entries, so no status write
    again = box(wanted, entries=[dict(e) for e in shown])
    for later in (1, 5, 60):
        assert passed(again, running("ready in 300 ms\n"), later) == shown


def test_new_output_alone_is_written_at_most_every_output_every() -> None:
    wanted = [Wanted(8000, SERVE, False, "r1")]
    shown = passed(box(wanted), running("a\n"), 0)
    sb = box(wanted, entries=[dict(e) for e in shown])
    # the pass its own write causes, a second later: only the output would change
    assert passed(sb, running("a\nb\n"), 1) == shown
    # OUTPUT_EVERY later it is written, stamped anew
    (later,) = passed(sb, running("a\nb\n"), OUTPUT_EVERY)
    assert (later["output"], later["outputAt"]) == ("a\nb\n", "2026-01-01T12:00:02Z")
    # a change of the entry takes the newest output with it at once
    (exited,) = passed(sb, [{**running("a\nb\nboom\n")[0], "status": "exited", "exitCode": 1}], 1)
    assert (exited["status"], exited["output"]) == ("exited", "a\nb\nboom\n")
    (listening,) = passed(
        box(wanted, entries=[{**dict(shown[0]), "status": "starting"}]), running("a\nb\n"), 1
    )
    assert (listening["status"], listening["output"]) == ("listening", "a\nb\n")


def test_an_exit_is_recorded_with_its_tail_and_never_run_again() -> None:
    sb = box([Wanted(8000, SERVE, False, "r1")])
    pod = [{"port": 8000, "id": "r1", "status": "exited", "exitCode": 2, "output": "x" * 5000}]
    entry = dict(plan_previews(sb, NS, {}, pod, CONFIG, pod_up=True, now=NOW).entries[0])  # type: ignore[index]
    assert (entry["status"], entry["exitCode"], len(entry["output"])) == ("exited", 2, 1000)
    # the pod restarted (it runs nothing): the exited entry stands, nothing is started
    restarted = box([Wanted(8000, SERVE, False, "r1")], entries=[entry])
    plan = plan_previews(restarted, NS, {}, [], CONFIG, pod_up=True, now=NOW)
    assert plan.actions == () and plan.entries == (entry,) and plan.requeue is None
    # a new start (a new id) runs it again
    again = box([Wanted(8000, SERVE, False, "r2")], entries=[entry])
    plan = plan_previews(again, NS, {}, [], CONFIG, pod_up=True, now=NOW)
    assert plan.actions == (PodAction("put", 8000, "r2", SERVE),)


def test_a_restarted_pod_runs_a_listening_preview_again() -> None:
    shown = [{"port": 8000, "id": "r1", "public": False, "status": "listening"}]
    sb = box([Wanted(8000, SERVE, False, "r1")], entries=shown)
    plan = plan_previews(sb, NS, {}, [], CONFIG, pod_up=True, now=NOW)
    assert plan.actions == (PodAction("put", 8000, "r1", SERVE),)


def test_what_is_not_wanted_is_stopped_and_its_objects_deleted() -> None:
    sb = box(entries=[{"port": 8000, "id": "r1", "status": "listening"}])
    pod = [{"port": 8000, "id": "r1", "status": "listening"}]
    plan = plan_previews(sb, NS, present(sb, 8000, public=True), pod, CONFIG, pod_up=True, now=NOW)
    assert plan.actions == (PodAction("delete", 8000),)
    assert sorted(r["kind"] for r in plan.stale) == ["HTTPRoute", "NetworkPolicy", "Service"]
    assert plan.entries == ()


def test_a_public_preview_turned_private_loses_its_route_only() -> None:
    sb = box([Wanted(8000, SERVE, False, "r1")])
    plan = plan_previews(
        sb, NS, present(sb, 8000, public=True), None, CONFIG, pod_up=False, now=NOW
    )
    assert [r["kind"] for r in plan.stale] == ["HTTPRoute"]


def test_a_pod_that_did_not_answer_keeps_what_was_seen() -> None:
    shown = [
        {"port": 8000, "id": "r1", "status": "listening"},
        {"port": 9000, "id": "r9", "status": "listening"},  # being stopped
    ]
    sb = box([Wanted(8000, SERVE, False, "r1")], entries=shown)
    plan = plan_previews(sb, NS, {}, None, CONFIG, pod_up=True, now=NOW)
    assert plan.actions == ()
    assert plan.entries == tuple(shown)  # 9000 stays until the pod says it stopped
    # asked again gently, even for a preview still starting (an image without the routes)
    starting = box([Wanted(8000, SERVE, False, "r2")], entries=shown)
    assert (
        plan_previews(starting, NS, {}, None, CONFIG, pod_up=True, now=NOW).requeue == RUNNING_POLL
    )


def test_a_suspended_pod_shows_its_previews_starting_without_polling() -> None:
    shown = [{"port": 8000, "id": "r1", "status": "listening"}]
    sb = box([Wanted(8000, SERVE, False, "r1")], entries=shown)
    plan = plan_previews(sb, NS, {}, None, CONFIG, pod_up=False, now=NOW)
    assert plan.entries is not None and plan.entries[0]["status"] == "starting"
    assert plan.requeue is None and plan.actions == ()


def test_a_public_preview_without_routes_is_refused_with_the_reason() -> None:
    no_routes = RenderConfig(git_base_url="https://gitea.example.com", http_route=False)
    sb = box([Wanted(8000, SERVE, True, "r1")])
    plan = plan_previews(sb, NS, {}, [], no_routes, pod_up=True, now=NOW)
    assert plan.objects == () and plan.actions == ()
    assert plan.entries is not None and plan.entries[0]["status"] == "refused"
    assert plan.flag is not None and plan.flag[1:3] == ("False", "PreviewRefused")
    assert "HTTPRoute" in plan.flag[3]


def test_a_refusal_by_the_pod_is_shown() -> None:
    sb = box([Wanted(8000, SERVE, False, "r1")])
    pod = [{"port": 8000, "id": "r1", "status": "refused", "message": "port 8000 in use"}]
    plan = plan_previews(sb, NS, {}, pod, CONFIG, pod_up=True, now=NOW)
    assert plan.entries is not None
    assert (plan.entries[0]["status"], plan.entries[0]["message"]) == (
        "refused",
        "port 8000 in use",
    )


def test_a_malformed_annotation_touches_nothing_and_says_why() -> None:
    sb = box("[{]")
    pod = [{"port": 8000, "id": "r1", "status": "listening"}]
    plan = plan_previews(sb, NS, present(sb, 8000), pod, CONFIG, pod_up=True, now=NOW)
    assert (plan.objects, plan.stale, plan.actions, plan.entries) == ((), (), (), None)
    assert plan.flag is not None and plan.flag[1:3] == ("False", "InvalidPreviews")
    assert "is not JSON" in plan.flag[3]


def one(**item: Any) -> str:
    return json.dumps([{"port": 8000, "command": "x", "id": "a", **item}])


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        ("{}", "must be a JSON list"),
        ("[1]", "[0] must be an object"),
        (one(port=80), "[0].port must be an integer in 1024-65535"),
        (one(port="8000"), "[0].port must be an integer"),
        (one(port=True), "[0].port must be an integer"),
        (one(command=""), "[0].command must be a non-empty string"),
        (one(command="x" * 4097), "at most 4096 characters"),
        (one(command="a\0b"), "without NUL"),
        (one(public="yes"), "[0].public must be true or false"),
        (one(id=""), "[0].id must be 1-64 characters"),
        (one(id="a b"), "[0].id must be 1-64 characters"),
        (json.dumps([{"port": 8000, "command": "x", "id": "a"}] * 2), "listed twice"),
        (
            json.dumps([{"port": 2000 + i, "command": "x", "id": "a"} for i in range(5)]),
            "at most 4",
        ),
        ("[" + " " * 30000 + "]", "longer than"),
    ],
)
def test_the_annotation_is_read_strictly(raw: str, said: str) -> None:
    with pytest.raises(InvalidPreviews, match=None) as refused:
        parse_wanted(raw)
    assert said in str(refused.value)


def test_the_annotation_round_trips() -> None:
    wanted = [Wanted(9000, "b", True, "y"), Wanted(8000, "a", False, "x")]
    assert parse_wanted(encode_wanted(wanted)) == sorted(wanted, key=lambda w: w.port)
    assert parse_wanted(None) == [] and parse_wanted("  ") == []
