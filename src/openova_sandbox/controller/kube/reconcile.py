"""The Kubernetes reconcile: (Sandbox, what the cluster holds, now) -> KubePlan. Pure.

The glue (``handlers.py``) observes the workspace namespace and its children, calls
:func:`reconcile`, then applies the plan: finalizer first, objects in order, deletions,
status last. Validation rules are shared with the embedded controller
(``controller.reconcile.validate``), so a spec fails the same way in both modes.

Decisions:
- The workspace namespace is chosen once and recorded in ``status.workspaceNamespace``
  (a preserved unknown field): ``sandbox-<owner-uid>`` unless another sandbox already
  holds it (its ``openova.io/sandbox-key`` annotation names the holder), else
  ``sandbox-<owner-uid>-<hash>``. Nothing is written into a namespace this sandbox does
  not hold, so two sandboxes racing for the plain name cannot share it: the loser sees
  the holder and moves to its hashed name.
- Children are applied only when missing or different from what is rendered (desired
  fields must match; fields the server adds are ignored), so a settled sandbox yields an
  empty plan and no writes.
- ``PVCsReady`` means the claims exist; binding is proven by the pod becoming ready
  (``PtyReady``), since WaitForFirstConsumer storage keeps claims Pending until then.
- Idle scaling: ``Ready`` with no viewer attached and no activity for
  ``idleScaling.timeoutMinutes`` → replicas 0, ``Suspended``. Activity is what the
  terminal server reports (``status.lastActivityAt``); a sandbox that never reported any
  is never suspended, since its idleness cannot be known; an attach request (the API
  sets ``openova.io/wake-requested`` to the attach time) → replicas 1 and back through
  readiness. The owner's use of a preview through the API's proxy is activity too: the
  API writes ``sandbox.openova.io/preview-used-at`` (previews.py) at most every 30 s
  while it is used, and it counts as the pod's report does (folded into
  ``status.lastActivityAt``); a time ahead of the operator's clock counts as now, one
  more than ``USE_SKEW`` ahead not at all.
- Deletion deletes the workspace namespace and releases the finalizer only when the
  namespace is gone (everything in it went with it).
- Phase steps, the ``Ready`` summary and the condition merge are the status kernel's
  (``domain.status``), shared with the embedded controller.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from ...domain.model import FINALIZER, Sandbox, SandboxStatus, parse_time
from ...domain.quantity import parse_quantity
from ...domain.status import (
    FAILED,
    FALSE,
    PENDING,
    PROVISIONING,
    SUSPENDED,
    TRUE,
    UNKNOWN,
    Failure,
    Row,
    next_status,
    step,
)
from ...domain.status import READY as PHASE_READY
from ..reconcile import CLONE_FAILED, MANIFEST_RENDER_FAILED, validate
from ..scrub import clean_message
from .names import hashed_namespace, plain_namespace, repo_pvc, sandbox_key, sandbox_label
from .previews import ANNOTATION_USED, PodAction, plan_previews, with_entries
from .render import (
    ANNOTATION_HOLDER,
    CLONE_CONTAINER,
    GIT_SECRET,
    HOME_PVC,
    LABEL_MANAGED_BY,
    LABEL_SANDBOX,
    LABEL_SANDBOX_NAMESPACE,
    MANAGED_BY,
    MCP_CONFIGMAP,
    MCP_TOKEN_SECRET,
    NETWORK_POLICY,
    PTY_NAME,
    QUOTA_NAME,
    SERVICE_ACCOUNT,
    ChildRef,
    RenderConfig,
    RenderError,
    ref,
    render_children,
    render_namespace,
    session_path,
)

JSON = dict[str, Any]
STATUS_NAMESPACE = "workspaceNamespace"
ANNOTATION_WAKE = "openova.io/wake-requested"
WAIT_SECONDS = 5.0
DELETE_POLL_SECONDS = 2.0
IDLE_CHECK_SECONDS = 60.0
ACTIVITY_GRANULARITY = timedelta(seconds=30)
USE_SKEW = timedelta(seconds=60)  # how far ahead the API's clock may be (preview use)
DEFAULT_IDLE_MINUTES = 30

ChildKey = tuple[str, str]  # (kind, name)


@dataclass(frozen=True)
class KubeObserved:
    """What the cluster holds for one sandbox, read just before reconciling it.

    ``namespaces`` maps a candidate workspace namespace name (plain and hashed) to the
    object when it exists; ``children`` are the objects found in the chosen namespace.
    """

    namespaces: Mapping[str, JSON] = field(default_factory=dict)
    children: Mapping[ChildKey, JSON] = field(default_factory=dict)
    viewers_attached: bool = False
    sessions: int = 0
    last_activity: datetime | None = None
    # True when the terminal server's /idle answered for this pass (the fields above
    # are then its report; otherwise they are unknown and leave the status alone)
    probed: bool = False
    # True when /idle was asked and did not answer: idleness is unknown, so the
    # sandbox is kept up rather than suspended on stale activity
    probe_failed: bool = False
    # the sandbox's terminal-server pods (their status tells a failed clone)
    pods: tuple[JSON, ...] = ()
    # what the terminal server runs as previews (GET /previews, asked with /idle when
    # the sandbox has any); None: not asked, or no answer (previews.py)
    pod_previews: tuple[JSON, ...] | None = None


@dataclass(frozen=True)
class KubePlan:
    add_finalizer: bool = False
    apply: tuple[JSON, ...] = ()  # create when missing, else update to this
    delete: tuple[ChildRef, ...] = ()
    status: SandboxStatus | None = None  # None: unchanged
    remove_finalizer: bool = False
    requeue_after: float | None = None
    # what the pod's terminal server must start or stop (previews.py), in ``workspace``
    preview_actions: tuple[PodAction, ...] = ()
    workspace: str = ""

    @property
    def empty(self) -> bool:
        return not (
            self.add_finalizer
            or self.apply
            or self.delete
            or self.status is not None
            or self.remove_finalizer
            or self.preview_actions
        )


def candidate_namespaces(sandbox: Sandbox) -> tuple[str, ...]:
    """The namespaces the glue must look up before calling :func:`reconcile`."""
    recorded = sandbox.status.extra.get(STATUS_NAMESPACE)
    names = [plain_namespace(sandbox), hashed_namespace(sandbox)]
    if isinstance(recorded, str) and recorded and recorded not in names:
        names.insert(0, recorded)
    return tuple(names)


def holder(namespace: Mapping[str, Any]) -> str:
    annotations = (namespace.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(ANNOTATION_HOLDER, ""))


def choose_namespace(sandbox: Sandbox, observed: KubeObserved) -> str:
    """The workspace namespace this sandbox holds or may take."""
    me = sandbox_key(sandbox)
    recorded = sandbox.status.extra.get(STATUS_NAMESPACE)
    if isinstance(recorded, str) and recorded:
        existing = observed.namespaces.get(recorded)
        if existing is None or holder(existing) == me:
            return recorded
    plain = plain_namespace(sandbox)
    existing = observed.namespaces.get(plain)
    if existing is None or holder(existing) == me:
        return plain
    return hashed_namespace(sandbox)


def contains(actual: Any, desired: Any) -> bool:
    """Whether ``actual`` has every field ``desired`` sets, with equal values."""
    if isinstance(desired, dict):
        return isinstance(actual, dict) and all(
            k in actual and contains(actual[k], v) for k, v in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(desired)
            and all(contains(a, d) for a, d in zip(actual, desired, strict=True))
        )
    return bool(actual == desired)


QUOTA_EXCEEDED = "QuotaExceeded"


def reconcile(
    sandbox: Sandbox, observed: KubeObserved, now: datetime, config: RenderConfig
) -> KubePlan:
    now = now.replace(microsecond=0)
    meta, status = sandbox.metadata, sandbox.status
    has_finalizer = FINALIZER in meta.finalizers

    if sandbox.deleting:
        return _finalize(sandbox, observed, has_finalizer=has_finalizer)

    if status.phase == FAILED and status.observed_generation == meta.generation:
        return KubePlan()  # permanent for this generation

    failure = validate(sandbox)
    namespace = choose_namespace(sandbox, observed)
    replicas = _replicas(sandbox, observed, now)
    children: list[JSON] = []
    if failure is None:
        try:
            children = render_children(sandbox, namespace, config, replicas=replicas)
        except RenderError as exc:
            failure = Failure(MANIFEST_RENDER_FAILED, str(exc), "PVCsReady")
    if failure is None:
        failure = storage_failure(sandbox, config)
    if failure is None and status.phase != PHASE_READY:
        failure = clone_failure(observed.pods)
    if failure is not None:
        rows = _conditions(
            sandbox,
            observed,
            namespace,
            replicas=replicas,
            failure=failure,
            config=config,
        )
        new = _status(sandbox, rows, phase=FAILED, now=now, namespace=None, failure=failure)
        return _plan(status, new)

    if not has_finalizer:
        rows = _conditions(
            sandbox,
            observed,
            namespace,
            replicas=replicas,
            failure=None,
            config=config,
        )
        new = _status(sandbox, rows, phase=PENDING, now=now, namespace=namespace)
        return KubePlan(add_finalizer=True, status=_changed(status, new), requeue_after=0.0)

    ns_obj = observed.namespaces.get(namespace)
    rows = _conditions(
        sandbox,
        observed,
        namespace,
        replicas=replicas,
        failure=None,
        config=config,
    )
    if ns_obj is None:
        new = _status(sandbox, rows, phase=PROVISIONING, now=now, namespace=namespace)
        return KubePlan(
            apply=(render_namespace(sandbox, namespace),),
            status=_changed(status, new),
            requeue_after=0.0,
        )
    if (ns_obj.get("metadata") or {}).get("deletionTimestamp"):
        new = _status(sandbox, rows, phase=PROVISIONING, now=now, namespace=namespace)
        return KubePlan(status=_changed(status, new), requeue_after=WAIT_SECONDS)

    apply: list[JSON] = []
    wanted_ns = render_namespace(sandbox, namespace)
    if not contains(ns_obj, wanted_ns):
        apply.append(wanted_ns)
    wanted_keys = set()
    for child in children:
        key = (child["kind"], child["metadata"]["name"])
        wanted_keys.add(key)
        if not contains(observed.children.get(key), child):
            apply.append(child)
    stale = [
        ref(obj)
        for key, obj in sorted(observed.children.items())
        if key not in wanted_keys and key[0] == "PersistentVolumeClaim" and _ours(sandbox, obj)
    ]
    # the previews the Sandbox's annotation wants (previews.py): their objects, the
    # pod's runs and status.portPreviews
    previews = plan_previews(
        sandbox,
        namespace,
        observed.children,
        observed.pod_previews,
        config,
        pod_up=observed.probed or observed.probe_failed,
        now=now,
    )
    for obj in previews.objects:
        if not contains(observed.children.get((obj["kind"], obj["metadata"]["name"])), obj):
            apply.append(obj)
    stale += previews.stale

    if replicas == 0:
        target = SUSPENDED
    elif all(row[1] == TRUE for row in rows):
        target = PHASE_READY
    else:
        target = PROVISIONING
    phase = step(status.phase, target)
    new = _with_activity(
        _status(
            sandbox,
            rows,
            phase=phase,
            now=now,
            namespace=namespace,
            flags=() if previews.flag is None else (previews.flag,),
            previews=previews.entries,
        ),
        observed,
        _used_at(sandbox, now),
    )
    requeue: float | None = None
    if apply or stale or phase != target:
        requeue = 0.0
    elif phase == PROVISIONING:
        requeue = WAIT_SECONDS
    elif phase == PHASE_READY and _idle_enabled(sandbox):
        requeue = IDLE_CHECK_SECONDS
    if previews.requeue is not None:
        requeue = previews.requeue if requeue is None else min(requeue, previews.requeue)
    return KubePlan(
        apply=tuple(apply),
        delete=tuple(stale),
        status=_changed(status, new),
        requeue_after=requeue,
        preview_actions=previews.actions,
        workspace=namespace,
    )


def _with_activity(
    status: SandboxStatus, observed: KubeObserved, used: datetime | None = None
) -> SandboxStatus:
    """Record what the terminal server reported: live sessions, and its last activity,
    or the last use of a preview (``used``) when that is later (only when it moved by
    ``ACTIVITY_GRANULARITY``, so a busy agent is not a status write per probe). A
    suspended sandbox has no live sessions."""
    if status.phase == SUSPENDED:
        return replace(status, sessions=0)
    last = status.last_activity_at
    seen = _latest(observed.last_activity if observed.probed else None, used)
    if seen is not None and (last is None or seen - last >= ACTIVITY_GRANULARITY):
        last = seen.replace(microsecond=0)
    if not observed.probed:
        return replace(status, last_activity_at=last)
    return replace(status, sessions=observed.sessions, last_activity_at=last)


def _used_at(sandbox: Sandbox, now: datetime) -> datetime | None:
    """When the owner last used a preview through the API's proxy (the annotation the
    API writes), never later than ``now``; a time more than ``USE_SKEW`` ahead (not a
    clock's drift: a hand-written time) is ignored, so it cannot keep a sandbox up."""
    used = parse_time(sandbox.metadata.annotations.get(ANNOTATION_USED))
    if used is None or used - now > USE_SKEW:
        return None
    return min(used, now)


def storage_failure(sandbox: Sandbox, config: RenderConfig) -> Failure | None:
    """``QuotaExceeded`` when the claims the renderer makes (one per repo, plus home)
    add up to more than ``quota.storage``: the namespace's ResourceQuota would refuse
    the last claims and the sandbox would wait forever. Permanent for the generation,
    like every spec problem. Sizes that cannot be read are not judged."""
    repos = len(dict.fromkeys(sandbox.spec.repos))
    each, home = parse_quantity(config.repo_storage), parse_quantity(config.home_storage)
    allowed = parse_quantity(sandbox.spec.quota.storage)
    if each is None or home is None or allowed is None:
        return None
    if each * repos + home <= allowed:
        return None
    return Failure(
        QUOTA_EXCEEDED,
        f"{repos} repo volume(s) of {config.repo_storage} and a home volume of "
        f"{config.home_storage} need more than quota.storage {sandbox.spec.quota.storage}",
        "PVCsReady",
    )


def clone_failure(pods: Sequence[Mapping[str, Any]]) -> Failure | None:
    """``CloneFailed`` when a pod's ``git-clone`` init container ended with an error:
    permanent for the generation, as in embedded mode (the console offers Delete +
    retry). The message is the container's termination message (git's last output,
    ``FallbackToLogsOnError``), credentials scrubbed."""
    for pod in pods:
        for entry in (pod.get("status") or {}).get("initContainerStatuses") or ():
            if entry.get("name") != CLONE_CONTAINER:
                continue
            for state in (entry.get("state") or {}, entry.get("lastState") or {}):
                ended = state.get("terminated") or {}
                code = ended.get("exitCode")
                if isinstance(code, int) and code != 0:
                    said = str(ended.get("message") or ended.get("reason") or "").strip()
                    detail = f"git clone exited with {code}" + (f": {said}" if said else "")
                    return Failure(CLONE_FAILED, clean_message(detail), "PVCsReady")
    return None


def _ours(sandbox: Sandbox, obj: Mapping[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return (
        labels.get(LABEL_MANAGED_BY) == MANAGED_BY
        and labels.get(LABEL_SANDBOX) == sandbox_label(sandbox)
        and labels.get(LABEL_SANDBOX_NAMESPACE) == sandbox.namespace
    )


def _finalize(sandbox: Sandbox, observed: KubeObserved, *, has_finalizer: bool) -> KubePlan:
    if not has_finalizer:
        return KubePlan()
    me = sandbox_key(sandbox)
    mine = [(name, obj) for name, obj in sorted(observed.namespaces.items()) if holder(obj) == me]
    if not mine:
        return KubePlan(remove_finalizer=True)
    deletes = tuple(
        ChildRef(apiVersion="v1", kind="Namespace", namespace="", name=name)
        for name, obj in mine
        if not (obj.get("metadata") or {}).get("deletionTimestamp")
    )
    return KubePlan(delete=deletes, requeue_after=DELETE_POLL_SECONDS)


def _idle_enabled(sandbox: Sandbox) -> bool:
    idle = sandbox.spec.extra.get("idleScaling") or {}
    return not (isinstance(idle, dict) and idle.get("enabled") is False)


def _idle_timeout(sandbox: Sandbox) -> timedelta:
    idle = sandbox.spec.extra.get("idleScaling") or {}
    minutes = idle.get("timeoutMinutes") if isinstance(idle, dict) else None
    if not isinstance(minutes, int) or minutes < 1:
        minutes = DEFAULT_IDLE_MINUTES
    return timedelta(minutes=minutes)


def _replicas(sandbox: Sandbox, observed: KubeObserved, now: datetime) -> int:
    """1, or 0 when the sandbox is (or is becoming) suspended for idleness.

    The wake annotation holds the time of the attach that asked for it: it wakes a
    sandbox suspended before that time and counts as activity afterwards, so it never
    needs clearing and a stale one wakes nothing.
    """
    status = sandbox.status
    if observed.viewers_attached or not _idle_enabled(sandbox):
        return 1
    wake_at = parse_time(sandbox.metadata.annotations.get(ANNOTATION_WAKE))
    if status.phase == SUSPENDED:
        pty = status.condition("PtyReady")
        since = pty.last_transition_time if pty is not None else None
        # ">=": both have whole seconds, and an attach in the second of the suspension
        # must wake it; an older annotation cannot tie, since suspending needs a whole
        # idle timeout (at least a minute) after the last activity, wake included.
        woken = wake_at is not None and (since is None or wake_at >= since)
        return 1 if woken else 0
    if status.phase != PHASE_READY or observed.probe_failed:
        return 1
    last = _latest(_latest(status.last_activity_at, observed.last_activity), wake_at)
    last = _latest(last, _used_at(sandbox, now))
    if last is None:
        return 1  # no activity ever reported: never guess a sandbox idle
    if observed.sessions > 0 and observed.last_activity is None:
        return 1
    return 0 if now - last >= _idle_timeout(sandbox) else 1


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a or b
    return max(a, b)


def _conditions(
    sandbox: Sandbox,
    observed: KubeObserved,
    namespace: str,
    *,
    replicas: int,
    failure: Failure | None,
    config: RenderConfig,
) -> list[Row]:
    route, mcp_url, mcp_token = config.http_route, config.mcp_url, config.mcp_token
    kids = observed.children
    blocked = f"not attempted: {failure.reason}" if failure else ""

    def row(type_: str, ok: bool, reason: str, message: str, waiting: str) -> Row:
        if failure is not None and failure.condition == type_:
            return (type_, FALSE, failure.reason, failure.message)
        if ok and failure is None:
            return (type_, TRUE, reason, message)
        return (
            type_,
            UNKNOWN,
            "NotAttempted" if blocked else "Creating",
            blocked or waiting,
        )

    ns_obj = observed.namespaces.get(namespace)
    ns_ok = ns_obj is not None and not (ns_obj.get("metadata") or {}).get("deletionTimestamp")
    # access rules: the quota, the account and its binding, and the network policy (a
    # deleted one shows here until it is put back: drift is visible, issue 13)
    rbac = [("ResourceQuota", QUOTA_NAME), ("NetworkPolicy", NETWORK_POLICY)] + [
        (kind, SERVICE_ACCOUNT) for kind in ("ServiceAccount", "RoleBinding")
    ]
    wanted_pvcs = {("PersistentVolumeClaim", HOME_PVC)} | {
        ("PersistentVolumeClaim", repo_pvc(r)) for r in dict.fromkeys(sandbox.spec.repos)
    }
    sts = kids.get(("StatefulSet", PTY_NAME)) or {}
    ready = int((sts.get("status") or {}).get("readyReplicas") or 0)
    suspended = replicas == 0
    out = [
        row(
            "NamespaceReady",
            ns_ok,
            "Created",
            f"namespace {namespace} is active",
            f"creating namespace {namespace}",
        ),
        row(
            "RBACReady",
            all(k in kids for k in rbac),
            "Created",
            "quota, service account, role binding and network policy exist",
            "creating access rules",
        ),
        row(
            "PVCsReady",
            all(k in kids for k in wanted_pvcs),
            "ClaimsCreated",
            f"{len(wanted_pvcs)} volume claim(s) exist",
            "creating volume claims",
        ),
    ]
    if suspended and failure is None:
        out.append(("PtyReady", FALSE, "Suspended", "scaled to zero while idle"))
    else:
        out.append(
            row(
                "PtyReady",
                ready >= 1 and ("Service", PTY_NAME) in kids,
                "Ready",
                "the terminal server is ready",
                "waiting for the terminal server to become ready",
            )
        )
    if route:
        out.append(
            row(
                "RouteReady",
                ("HTTPRoute", PTY_NAME) in kids,
                "Created",
                f"route {session_path(sandbox)} exists",
                "creating the route",
            )
        )
    else:
        out.append(
            ("RouteReady", TRUE, "Skipped", "Gateway API not installed: the API proxies terminals")
            if failure is None
            else row("RouteReady", False, "", "", "")
        )
    # McpReady (docs/mcp.md, "Agents configured automatically"): what the operator knows,
    # no more - it does not call the MCP server, and it says so
    # the agents' token: the Secret mcp_token.py writes, when the operator can sign one
    if not mcp_url:
        mcp = ("McpReady", TRUE, "NotApplicable", "no MCP server configured (SANDBOX_KUBE_MCP_URL)")
    elif not mcp_token:
        mcp = (
            "McpReady",
            TRUE,
            "NoToken",
            f"MCP server {mcp_url} configured, but the operator has no issuer key "
            "(SANDBOX_ISSUER_KEY): the agents get no MCP token",
        )
    else:
        mcp = row(
            "McpReady",
            # the token Secret is written before every plan (a failure fails the pass)
            ("ConfigMap", MCP_CONFIGMAP) in kids,
            "Configured",
            f"the agents reach the MCP server {mcp_url} with the sandbox's token "
            f"(Secret {MCP_TOKEN_SECRET}; the server is not probed)",
            "writing the MCP client configuration and token",
        )
    out.append(mcp)
    has_token = ("Secret", GIT_SECRET) in kids
    if not sandbox.spec.repos:
        token = ("TokenReady", TRUE, "NotRequired", "no repos to clone")
    elif has_token:
        token = ("TokenReady", TRUE, "CredentialPresent", f"secret {GIT_SECRET} exists")
    else:
        token = (
            "TokenReady",
            TRUE,
            "Anonymous",
            f"no secret {GIT_SECRET}: repos are cloned without credentials",
        )
    out.append(token if failure is None else row("TokenReady", False, "", "", ""))
    return out


def _status(
    sandbox: Sandbox,
    rows: list[Row],
    *,
    phase: str,
    now: datetime,
    namespace: str | None,
    failure: Failure | None = None,
    flags: Sequence[Row] = (),
    previews: tuple[JSON, ...] | None = None,
) -> SandboxStatus:
    """The status kernel's (``domain.status.next_status``), with the chosen workspace
    namespace recorded (and the previews' entries and condition, previews.py)."""
    old = sandbox.status
    extra = with_entries(old.extra, previews)
    if namespace is not None:
        extra[STATUS_NAMESPACE] = namespace
    return next_status(
        replace(old, extra=extra),
        rows,
        phase=phase,
        now=now,
        generation=sandbox.metadata.generation,
        failure=failure,
        flags=flags,
    )


MANIFEST_REFUSED = "ManifestRefused"


def refused_status(sandbox: Sandbox, message: str, now: datetime) -> SandboxStatus:
    """``Failed``/``ManifestRefused`` for this generation: the API server refused an
    object this spec renders (400/422), so no pass can succeed until the spec changes.
    The provisioning conditions stay as last written."""
    rows = [
        (c.type, c.status, c.reason, c.message)
        for c in sandbox.status.conditions
        if c.type != "Ready"
    ]
    failure = Failure(MANIFEST_REFUSED, clean_message(message), "Ready")
    return next_status(
        sandbox.status,
        rows,
        phase=FAILED,
        now=now,
        generation=sandbox.metadata.generation,
        failure=failure,
    )


def _changed(old: SandboxStatus, new: SandboxStatus) -> SandboxStatus | None:
    return None if new == old else new


def _plan(old: SandboxStatus, new: SandboxStatus) -> KubePlan:
    return KubePlan(status=_changed(old, new))


__all__ = [
    "ANNOTATION_WAKE",
    "STATUS_NAMESPACE",
    "KubeObserved",
    "KubePlan",
    "candidate_namespaces",
    "choose_namespace",
    "contains",
    "parse_time",
    "reconcile",
    "refused_status",
]
