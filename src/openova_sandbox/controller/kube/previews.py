"""A sandbox's previews in Kubernetes mode (issue 14, ``preview.*``; docs/kubernetes.md,
"Previews"), level-triggered as everything the operator does.

- **Wanted**: the annotation ``sandbox.openova.io/previews`` on the Sandbox, a JSON list
  of ``{port, command, public, id}`` written by the MCP server (``services/
  kube_previews.py``); ``id`` names one start (a new ``preview.start`` on the same port
  gets a new one, so an exited command is run again only when asked). Parsed strictly
  (:func:`parse_wanted`): ports 1024-65535, each once, at most 4, commands of at most
  4,096 characters. A malformed annotation changes nothing that runs and says why in the
  condition ``PreviewsReady`` (``False``/``InvalidPreviews``): the sandbox stays ``Ready``
  (a flag, not a provisioning condition).
- **Observed**: what the pod's terminal server runs (``GET /previews`` with the probe
  token, :func:`fetch`), asked with the ``/idle`` probe, and the preview objects among
  the sandbox's children (``preview_render.LABEL_PREVIEW_PORT``).
- **Plan** (:func:`plan_previews`, pure): the objects of every wanted port
  (``preview_render.render_preview``) applied when they differ, the others deleted; the
  pod told to run each wanted command it does not run under that id (``PUT
  /previews/{port}``) and to stop what is not wanted (``DELETE``), except an ``exited``
  run, which stays exited; and ``status.portPreviews``, one entry per wanted port:
  ``port``, ``id``, ``public``, ``status`` (``starting``, ``listening``, ``exited`` with
  ``exitCode``, ``refused`` with a ``message``), ``output`` (the newest ``OUTPUT_TAIL``
  characters the run printed, running or exited) with ``outputAt`` (when a running
  run's was written), ``path`` (the API's proxy), ``url`` for a public one. The pass is
  requeued in a second while one is starting, in ten while one runs (an exit is seen
  then) or the pod did not answer.

Why a running run's output is in the status (and not read from the pod by the API when
an agent lists): every reader sees the same thing (``preview.list``, the live resource,
``preview.start``'s answer, another sandbox's previews, several API replicas), and the
pod's ``/previews`` stays the operator's alone. Its cost is bounded: an unchanged tail
leaves the entry as it was, so nothing is written; a changed one rides with any other
change of the entry, and alone is rewritten at most every ``OUTPUT_EVERY`` (2 s on the
pass's whole-second clock; the pass its own write causes does not write again), so a
chatty dev server costs a status write every second or two while it starts (1 s polls)
and one per 10 s poll while it runs, and the status holds at most ``OUTPUT_TAIL``
characters of output per preview (``MAX_PREVIEWS`` of them). The price: while a preview
runs, what it printed shows up to a poll late (10 s), where embedded mode reads it live.

Why ``status.portPreviews`` and not ``status.previews``: the spec's ``previews[]`` is
``{prNumber, url, sha}`` (a preview per pull request), typed in the CRD without unknown
fields, so the API server would prune these entries; unknown fields at the top of the
status are kept.

Pod actions run before the status is written (``handlers.py``): a stopped preview whose
entry left the status is never left running by a write that went through first.

- **Use**: the annotation ``sandbox.openova.io/preview-used-at`` (RFC 3339, whole
  seconds) is when the owner last used a preview through the API's proxy, written by
  the API at most once per ``USE_INTERVAL`` per sandbox (``services/kube_previews.py``).
  The idle rule (``reconcile.py``) counts it as activity; a preview merely running is
  not activity.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import structlog

from ...domain.model import Sandbox, format_time, parse_time
from ...domain.status import FALSE, TRUE, Row
from .preview_render import LABEL_PREVIEW_PORT, MAX_PORT, MIN_PORT, render_preview
from .render import JSON, ChildRef, RenderConfig, RenderError, ref, route_host

log = structlog.get_logger(__name__)

ANNOTATION = "sandbox.openova.io/previews"
ANNOTATION_USED = "sandbox.openova.io/preview-used-at"
USE_INTERVAL = 30.0  # seconds: the most often the API writes ANNOTATION_USED per sandbox
STATUS_FIELD = "portPreviews"
CONDITION = "PreviewsReady"
MAX_PREVIEWS = 4
MAX_COMMAND = 4096
MAX_ANNOTATION = 24 * 1024
OUTPUT_TAIL = 1000  # characters of a run's output kept in the status (the newest)
OUTPUT_EVERY = 2.0  # seconds: the most often a running run's output alone is rewritten
STARTING_POLL = 1.0
RUNNING_POLL = 10.0
TIMEOUT = 5.0
STARTING = "starting"
LISTENING = "listening"
EXITED = "exited"
REFUSED = "refused"
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class Wanted:
    port: int
    command: str
    public: bool
    id: str

    def to_dict(self) -> JSON:
        return {"port": self.port, "command": self.command, "public": self.public, "id": self.id}


@dataclass(frozen=True)
class PodAction:
    """``put``: run ``command`` on ``port`` as ``id``; ``delete``: stop ``port``."""

    op: str
    port: int
    id: str = ""
    command: str = ""


class InvalidPreviews(ValueError):
    """The annotation cannot be read; the message says where."""


def parse_wanted(raw: str | None) -> list[Wanted]:
    """The annotation's previews, ordered by port; :class:`InvalidPreviews` saying what is
    wrong with it (absent or empty: none wanted)."""
    if raw is None or not raw.strip():
        return []
    if len(raw) > MAX_ANNOTATION:
        raise InvalidPreviews(f"{ANNOTATION} is longer than {MAX_ANNOTATION} characters")
    try:
        items = json.loads(raw)
    except ValueError as exc:
        raise InvalidPreviews(f"{ANNOTATION} is not JSON: {exc}") from None
    if not isinstance(items, list):
        raise InvalidPreviews(f"{ANNOTATION} must be a JSON list of previews")
    if len(items) > MAX_PREVIEWS:
        raise InvalidPreviews(f"{ANNOTATION} lists {len(items)} previews, at most {MAX_PREVIEWS}")
    out: dict[int, Wanted] = {}
    for i, item in enumerate(items):
        where = f"{ANNOTATION}[{i}]"
        if not isinstance(item, dict):
            raise InvalidPreviews(f"{where} must be an object {{port, command, public, id}}")
        port, command = item.get("port"), item.get("command")
        public, run_id = item.get("public", False), item.get("id")
        if isinstance(port, bool) or not isinstance(port, int) or not MIN_PORT <= port <= MAX_PORT:
            raise InvalidPreviews(f"{where}.port must be an integer in {MIN_PORT}-{MAX_PORT}")
        if port in out:
            raise InvalidPreviews(f"{where}.port {port} is listed twice")
        if not isinstance(command, str) or not command.strip():
            raise InvalidPreviews(f"{where}.command must be a non-empty string")
        if len(command) > MAX_COMMAND or "\0" in command:
            raise InvalidPreviews(
                f"{where}.command must be at most {MAX_COMMAND} characters, without NUL"
            )
        if not isinstance(public, bool):
            raise InvalidPreviews(f"{where}.public must be true or false")
        if not isinstance(run_id, str) or not _ID.match(run_id):
            raise InvalidPreviews(f"{where}.id must be 1-64 characters of A-Z, a-z, 0-9, _, -")
        out[port] = Wanted(port, command, public, run_id)
    return [out[p] for p in sorted(out)]


def encode_wanted(wanted: Sequence[Wanted]) -> str:
    return json.dumps(
        [w.to_dict() for w in sorted(wanted, key=lambda w: w.port)], separators=(",", ":")
    )


def status_entries(sandbox: Sandbox) -> dict[int, JSON]:
    """``status.portPreviews`` by port (entries that cannot be read are left out)."""
    found = sandbox.status.extra.get(STATUS_FIELD)
    out: dict[int, JSON] = {}
    for entry in found if isinstance(found, list) else ():
        if isinstance(entry, dict) and isinstance(entry.get("port"), int):
            out[entry["port"]] = dict(entry)
    return out


def wanted_or_shown(sandbox: Sandbox) -> bool:
    """Whether the pod's runs must be asked for: previews are wanted or still shown."""
    return bool(
        (sandbox.metadata.annotations.get(ANNOTATION) or "").strip()
        or sandbox.status.extra.get(STATUS_FIELD)
    )


def preview_path(sandbox: Sandbox, port: int) -> str:
    return f"/preview/{sandbox.name}/{port}/"


# ---------------------------------------------------------------- the plan (pure)
@dataclass(frozen=True)
class PreviewPlan:
    objects: tuple[JSON, ...] = ()  # every wanted port's objects (apply when different)
    stale: tuple[ChildRef, ...] = ()  # preview objects of ports no longer wanted
    actions: tuple[PodAction, ...] = ()
    entries: tuple[JSON, ...] | None = None  # status.portPreviews (None: leave it)
    flag: Row | None = None  # the PreviewsReady condition (None: not shown)
    requeue: float | None = None


def plan_previews(
    sandbox: Sandbox,
    namespace: str,
    children: Mapping[tuple[str, str], JSON],
    pod: Sequence[Mapping[str, Any]] | None,
    config: RenderConfig,
    *,
    pod_up: bool,
    now: datetime,
) -> PreviewPlan:
    """What to do about the sandbox's previews. ``pod``: what its terminal server runs
    (``None``: not known this pass); ``pod_up``: whether the pod is ready (when it is
    and ``pod`` is unknown, the probe failed: nothing is stopped or forgotten); ``now``:
    the pass's time (a running preview's output is rewritten at most every
    ``OUTPUT_EVERY``)."""
    shown = CONDITION in {c.type for c in sandbox.status.conditions}
    raw = sandbox.metadata.annotations.get(ANNOTATION)
    try:
        wanted = parse_wanted(raw)
    except InvalidPreviews as exc:
        # nothing that runs is touched until the annotation is fixed
        return PreviewPlan(flag=(CONDITION, FALSE, "InvalidPreviews", str(exc)))
    old = status_entries(sandbox)
    objects: list[JSON] = []
    refused: dict[int, str] = {}
    for w in wanted:
        try:
            objects += render_preview(sandbox, namespace, w.port, config, public=w.public)
        except RenderError as exc:
            refused[w.port] = str(exc)
    wanted_keys = {(o["kind"], o["metadata"]["name"]) for o in objects}
    stale = tuple(
        ref(obj)
        for key, obj in sorted(children.items())
        if key not in wanted_keys
        and LABEL_PREVIEW_PORT in ((obj.get("metadata") or {}).get("labels") or {})
    )
    running = {int(r["port"]): r for r in pod or () if isinstance(r.get("port"), int)}
    actions: list[PodAction] = []
    entries: list[JSON] = []
    for w in wanted:
        before = old.get(w.port) if (old.get(w.port) or {}).get("id") == w.id else None
        seen = running.get(w.port)
        entry: JSON = {"port": w.port, "id": w.id, "public": w.public}
        entry["path"] = preview_path(sandbox, w.port)
        if w.public and config.sandbox_host and w.port not in refused:
            entry["url"] = f"https://{route_host(sandbox, config)}{entry['path']}"
        if w.port in refused:
            entry.update(status=REFUSED, message=refused[w.port])
            if seen is not None:
                actions.append(PodAction("delete", w.port))
        elif seen is not None and seen.get("id") == w.id:
            entry.update(_observed(seen))
            _with_output(entry, before, seen, now)
        elif before is not None and before.get("status") in (EXITED, REFUSED):
            entry = before  # exited stays exited: run again only on a new start
            if seen is not None:
                actions.append(PodAction("delete", w.port))
        elif pod is not None:
            actions.append(PodAction("put", w.port, w.id, w.command))
            entry["status"] = STARTING
        else:
            # the pod's runs are unknown: what was seen last stands, a new one waits
            entry = dict(before) if before is not None else {**entry, "status": STARTING}
            if not pod_up and entry.get("status") == LISTENING:
                entry["status"] = STARTING  # started again once the pod is back
        entries.append(entry)
    if pod is not None:
        ports = {w.port for w in wanted}
        actions += [PodAction("delete", port) for port in sorted(running) if port not in ports]
    elif pod_up:
        # the probe failed: keep the entries of ports not wanted until the pod says
        # they are stopped
        kept = {e["port"] for e in entries}
        entries += [e for port, e in sorted(old.items()) if port not in kept]
    requeue = None
    statuses = {e.get("status") for e in entries}
    if pod_up and pod is not None and STARTING in statuses:
        requeue = STARTING_POLL
    elif pod_up and statuses & {STARTING, LISTENING}:
        # running, or a pod that did not answer (an image without the routes): gently
        requeue = RUNNING_POLL
    flag: Row | None = None
    if wanted or shown:
        if refused:
            port = min(refused)
            flag = (CONDITION, FALSE, "PreviewRefused", f"port {port}: {refused[port]}")
        else:
            flag = (CONDITION, TRUE, "AsWanted", f"{len(wanted)} preview(s) wanted")
    return PreviewPlan(
        objects=tuple(objects),
        stale=stale,
        actions=tuple(actions),
        entries=tuple(entries),
        flag=flag,
        requeue=requeue,
    )


def _observed(run: Mapping[str, Any]) -> JSON:
    status = run.get("status")
    if status == REFUSED:
        return {"status": REFUSED, "message": str(run.get("message") or "")[:OUTPUT_TAIL]}
    if status == EXITED:
        out: JSON = {"status": EXITED, "exitCode": run.get("exitCode")}
        tail = str(run.get("output") or "")[-OUTPUT_TAIL:]
        if tail:
            out["output"] = tail
        return out
    if status == LISTENING:
        said = str(run.get("message") or "")[:OUTPUT_TAIL]  # e.g. bound to loopback only
        return {"status": LISTENING, **({"message": said} if said else {})}
    return {"status": STARTING}


def _with_output(
    entry: JSON, before: Mapping[str, Any] | None, run: Mapping[str, Any], now: datetime
) -> None:
    """A running (``starting``, ``listening``) preview's output tail in ``entry``, with
    ``outputAt``, when it was last rewritten. An unchanged tail keeps its time, so the
    status stays as it was and nothing is written; a changed tail is written with any
    other change of the entry, and alone at most every ``OUTPUT_EVERY``: a chatty dev
    server costs a status write per pass at most, never a write per event its own
    write causes."""
    if entry.get("status") not in (STARTING, LISTENING):
        return
    tail = str(run.get("output") or "")[-OUTPUT_TAIL:]
    old = dict(before or {})
    old_tail, old_at = str(old.pop("output", "") or ""), old.pop("outputAt", None)
    if tail == old_tail:
        if tail:
            entry.update(output=tail, outputAt=old_at or format_time(now))
        return
    last = parse_time(old_at)
    if old == entry and last is not None and (now - last).total_seconds() < OUTPUT_EVERY:
        if old_tail:  # held back: only the output would change, and it did just now
            entry.update(output=old_tail, outputAt=old_at)
        return
    if tail:
        entry.update(output=tail, outputAt=format_time(now))


def with_entries(extra: Mapping[str, Any], entries: tuple[JSON, ...] | None) -> dict[str, Any]:
    """``status.extra`` with ``portPreviews`` set (removed when there are none)."""
    out = dict(extra)
    if entries is None:
        return out
    if entries:
        out[STATUS_FIELD] = [dict(e) for e in entries]
    else:
        out.pop(STATUS_FIELD, None)
    return out


# ---------------------------------------------------------------- the pod (I/O edge)
async def fetch(
    base_url: str, token: str, *, transport: httpx.AsyncBaseTransport | None = None
) -> list[JSON] | None:
    """What the pod's terminal server runs (``GET /previews``), ``None`` when it cannot
    be had (an older image without the route answers 404: ``None`` too)."""
    try:
        async with httpx.AsyncClient(transport=transport, timeout=TIMEOUT) as http:
            response = await http.get(
                base_url.rstrip("/") + "/previews", headers={"Authorization": f"Bearer {token}"}
            )
        response.raise_for_status()
        runs = response.json().get("previews")
        if not isinstance(runs, list):
            raise ValueError("no previews list")
        return [r for r in runs if isinstance(r, dict)]
    except (httpx.HTTPError, ValueError, TypeError, AttributeError) as exc:
        log.info("preview probe failed", url=base_url, error=str(exc))
        return None


async def act(base_url: str, token: str, actions: Sequence[PodAction]) -> None:
    """Tell the pod's terminal server what to run and stop (a run it refuses, a port
    another process of the pod holds, is recorded there as ``refused`` and read back at
    the next pass). A failure raises: the pass is retried."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        for action in actions:
            url = f"{base_url.rstrip('/')}/previews/{action.port}"
            if action.op == "put":
                body = {"id": action.id, "command": action.command}
                response = await http.put(url, json=body, headers=headers)
            else:
                response = await http.delete(url, headers=headers)
                if response.status_code == 404:
                    continue  # already gone
            response.raise_for_status()
