"""The embedded controller: watch the store, reconcile each Sandbox, execute its plan.

One supervisor task owns a task group holding the watch loop, the activity sweep and one
short-lived worker per busy Sandbox (see :mod:`.workqueue`); ``stop()`` cancels the
supervisor and with it everything, including running ``git`` processes.

Each run of a worker takes the object from the newest watch event it has not used yet
(else reads it from the store), observes the machine, calls the
pure :func:`.reconcile.reconcile` and executes the plan in its order: the finalizer first
(a store write; a new sandbox's empty folders are made meanwhile), then the status, then
the runtime actions, then the finalizer's release. The next pass of the same run starts
from the object the last write returned, without reading it again, unless a runtime
action (a clone, which may take minutes) ran after that write. Writes use the object's
resourceVersion; a ``Conflict`` means someone else wrote first, so the worker re-reads
and reconciles again. An event's object is never trusted beyond that: a stale one costs
a Conflict and a read, a missed one at most an extra pass; the events of the
controller's own writes are not queued (their outcome was reconciled by the pass that
wrote them), so a sandbox that just became Ready is not looked at again at once.

The sweep looks at every known Sandbox every few seconds. That is how ``status.sessions``
and ``status.lastActivityAt`` stay current and how ``PtyReady`` follows the terminal
server, which announce nothing; the reconciler writes only when a value changed. It
reads no store (issue 11: re-reading every object each 3 s cost a thousand sandboxes'
owner 44 % of a core while idle, and their neighbours' latency): the controller keeps
the newest object it knows of each Sandbox (from watch events, the relist and its own
writes), reconciles that copy against a fresh observation in memory, and queues a pass
only for a Sandbox whose plan is not empty, starting from the copy (a stale copy costs
a Conflict and one read, as for an event).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import structlog

from ..domain.errors import Conflict, NotFound
from ..domain.model import FINALIZER, Sandbox, SandboxStatus, utcnow
from .local import DEFAULT_CLONE_TIMEOUT, LocalRuntime, RuntimeAction
from .ports import SandboxStore, TerminalHost
from .reconcile import (
    AddFinalizer,
    CloneRepo,
    EnsureWorkspace,
    Observed,
    Plan,
    RemoveFinalizer,
    RemoveWorkspace,
    StopTerminals,
    reconcile,
    reconcile_orphan,
)
from .scrub import scrub_credentials
from .workqueue import Key, WorkQueue, backoff_delay

log = structlog.get_logger(__name__)

TOO_OLD = "resource-version-too-old"
# A worker re-reconciles in place while plans keep making progress, up to this many passes.
MAX_PASSES = 16
STALL_DELAY = 1.0
SWEEP_SECONDS = 3.0  # how often every known Sandbox is looked at (activity, sessions)
SWEEP_SLICE = 64  # sandboxes the sweep reconciles in memory between two yields to the loop


class EmbeddedController:
    """Reconciles every Sandbox of ``store`` into workspaces on this machine."""

    def __init__(
        self,
        store: SandboxStore,
        terminals: TerminalHost,
        *,
        data_dir: Path,
        git_base_url: str,
        clock: Callable[[], datetime] = utcnow,
        sweep_interval: float | None = None,
        clone_timeout: float = DEFAULT_CLONE_TIMEOUT,
        max_concurrent_clones: int = 4,
        storage_interval: float | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._sweep_interval = SWEEP_SECONDS if sweep_interval is None else sweep_interval
        self._runtime = LocalRuntime(
            terminals,
            data_dir=data_dir,
            git_base_url=git_base_url,
            clone_timeout=clone_timeout,
            max_concurrent_clones=max_concurrent_clones,
            storage_interval=storage_interval,
        )
        self._known: set[Key] = set()
        self._synced = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._queue: WorkQueue | None = None
        self._clone_tasks: dict[Key, asyncio.Task[bool]] = {}
        # the resourceVersion of this controller's last write per Sandbox: the watch event
        # it causes needs no pass (the writing pass reconciled its outcome)
        self._written: dict[Key, str] = {}
        # the object of the newest watch event per Sandbox, not yet taken by a worker: a
        # run starts from it instead of reading the store (any later change is a later
        # event, which queues another run; a stale one makes the first write Conflict)
        self._latest: dict[Key, Sandbox] = {}
        # the newest object known of each Sandbox (events, relist, own writes, reads):
        # what the sweep reconciles in memory instead of reading the store
        self._objects: dict[Key, Sandbox] = {}
        # per Sandbox, the (resourceVersion, observation) the sweep last found settled
        self._settled: dict[Key, tuple[str, Observed]] = {}
        self.sweep_passes = 0  # passes the sweep queued (observability, tests)
        # told every written status whose phase changed (the product's sandbox.ready and
        # sandbox.failed events, events.product); must not raise or block
        self.on_phase: Callable[[Sandbox], None] | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def runtime(self) -> LocalRuntime:
        return self._runtime

    async def start(self) -> None:
        """Start watching; returns at once (idempotent)."""
        if self._supervisor is not None and not self._supervisor.done():
            return
        self._synced.clear()
        ready = asyncio.Event()
        self._supervisor = asyncio.create_task(self._supervise(ready), name="sandbox-controller")
        await ready.wait()

    async def stop(self) -> None:
        """Cancel every worker, clone and loop, and wait for them to end."""
        task, self._supervisor = self._supervisor, None
        if task is None:
            return
        if self._queue is not None:
            self._queue.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        log.info("controller.stopped")

    async def wait_idle(self) -> None:
        """Until the first listing is processed and no Sandbox is being reconciled."""
        await self._synced.wait()
        if self._queue is not None:
            await self._queue.wait_idle()

    async def _supervise(self, ready: asyncio.Event) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                self._queue = WorkQueue(self._reconcile_key, group.create_task)
                group.create_task(self._watch_loop(), name="sandbox-controller-watch")
                group.create_task(self._sweep_loop(), name="sandbox-controller-sweep")
                log.info("controller.started")
                ready.set()
        except* Exception as group_error:  # a bug: say so rather than stop silently
            for exc in group_error.exceptions:
                log.error(
                    "controller.crashed", error=scrub_credentials(f"{type(exc).__name__}: {exc}")
                )
        finally:
            ready.set()
            if self._queue is not None:
                self._queue.close()

    # ------------------------------------------------------------------ watching

    async def _watch_loop(self) -> None:
        since: str | None = None
        failures = 0
        while True:
            try:
                if since is None:
                    await self._relist()
                async for event in self._store.watch(since):
                    since = event.resource_version
                    failures = 0
                    key = event.object.key
                    if event.type == "DELETED":
                        self._known.discard(key)
                        self._written.pop(key, None)
                        self._latest.pop(key, None)
                        self._objects.pop(key, None)
                        self._settled.pop(key, None)
                    else:
                        self._known.add(key)
                        self._latest[key] = event.object
                        self._keep(event.object)
                        if event.object.deleting:
                            self._preempt(key)
                        if self._written.get(key) == event.resource_version:
                            continue  # our own write: nothing new to look at
                    self._enqueue(key)
            except Exception as exc:
                if isinstance(exc, Conflict) and exc.code == TOO_OLD:
                    log.info("controller.watch.expired", since=since)
                    since = None
                    continue
                failures += 1
                delay = backoff_delay(failures)
                log.warning(
                    "controller.watch.failed",
                    since=since,
                    retry_in=delay,
                    error=scrub_credentials(str(exc)),
                )
                await asyncio.sleep(delay)
            else:
                await asyncio.sleep(backoff_delay(1))  # the stream ended: resume from `since`

    async def _relist(self) -> None:
        self._latest.clear()  # events of before the gap may describe objects now gone
        objects = await self._store.list()
        listed = {sb.key for sb in objects}
        self._objects = {sb.key: sb for sb in objects}
        # Keys we knew that vanished while we were not watching: their worker finds them
        # gone and cleans up after them.
        vanished = self._known - listed
        self._known = set(listed)
        for key in (*listed, *vanished):
            self._enqueue(key)
        self._synced.set()

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval)
            await self.sweep()

    async def sweep(self) -> None:
        """Queue a pass for every known Sandbox whose plan, from the copy and a fresh
        observation, is not empty (a Sandbox with no copy yet is queued as before); a
        failing one keeps its back-off (``WorkQueue.poke``)."""
        queue = self._queue
        if queue is not None and self._synced.is_set():
            # terminals of a sandbox the store no longer has (an attach that spawned
            # after the deletion's last look): the orphan clean-up ends them
            for key in self._runtime.sandboxes_with_terminals():
                if key not in self._known and not queue.busy(key):
                    self.sweep_passes += 1
                    queue.poke(key)
        for done, key in enumerate(tuple(self._known), start=1):
            if done % SWEEP_SLICE == 0:
                await asyncio.sleep(0)  # a thousand sandboxes must not hold the loop
            queue = self._queue
            if queue is None or queue.busy(key) or queue.backing_off(key):
                continue
            cached = self._objects.get(key)
            if cached is not None:
                try:
                    observed = self._runtime.observe(cached)
                    seen = (cached.metadata.resource_version, observed)
                    # the same object observed the same as when its plan was last
                    # empty: still empty (reconcile is pure), so no need to ask again
                    if self._settled.get(key) == seen:
                        continue
                    settled = reconcile(cached, observed, self._clock()).empty
                except Exception:  # the worker will meet it, log it and back off
                    settled = False
                if settled:
                    self._settled[key] = seen
                    continue
                self._settled.pop(key, None)
                self._latest.setdefault(key, cached)
            self.sweep_passes += 1
            queue.poke(key)

    def requeue(self, namespace: str, name: str) -> None:
        """Look at one Sandbox again soon (the terminals say its agent could not start,
        or started again): the sweep would, but later."""
        self._enqueue((namespace, name))

    def _enqueue(self, key: Key) -> None:
        if self._queue is not None:
            self._queue.add(key)

    def _preempt(self, key: Key) -> None:
        """A deleted Sandbox should not wait for its clone to finish: cancel the clone."""
        task = self._clone_tasks.get(key)
        if task is not None and not task.done():
            log.info("controller.clone.preempted", namespace=key[0], sandbox=key[1])
            task.cancel()

    # ------------------------------------------------------------------ reconciling

    async def _reconcile_key(self, key: Key) -> float | None:
        sandbox = self._latest.pop(key, None)
        for _ in range(MAX_PASSES):
            if sandbox is None:
                try:
                    sandbox = await self._store.get(*key)
                except NotFound:
                    await self._clean_up_orphan(key)
                    return None
                self._keep(sandbox)
            observed = self._runtime.observe(sandbox)
            plan = reconcile(sandbox, observed, self._clock())
            if plan.empty:
                return plan.requeue_after
            try:
                sandbox = await self._execute(sandbox, plan)
            except Conflict:
                log.debug("controller.write.conflict", namespace=key[0], sandbox=key[1])
                sandbox = None
                continue
            except NotFound:  # removed while we wrote: the next read cleans up after it
                sandbox = None
                continue
            # After actions, look again at once: the next pass records their outcome.
            if not plan.actions and plan.requeue_after != 0:
                return plan.requeue_after
        return STALL_DELAY  # still moving after many passes: let other triggers in first

    async def _execute(self, sandbox: Sandbox, plan: Plan) -> Sandbox | None:
        """Apply ``plan`` in order; stop at the first runtime action that failed.

        Returns the object as the store holds it after the last write, when nothing ran
        after that write (the next pass may start from it); ``None``: read it again."""
        current: Sandbox | None = sandbox
        status = plan.status
        actions = plan.actions
        if actions[:1] == (AddFinalizer(),):
            folders = actions[1:2] == (EnsureWorkspace(),)
            current = await self._add_finalizer(sandbox, with_workspace=folders)
            actions = actions[2 if folders else 1 :]
        fresh = True  # nothing but store writes since ``current`` was written
        for action in actions:
            if current is None:
                return None  # the object is gone
            if status is not None:
                current, status = await self._write_status(current, status), None
            if isinstance(action, RemoveFinalizer):
                if self._runtime.sessions(*current.key):
                    # a terminal was opened while the others were stopped (an attach
                    # past its checks just before the deletion): the object stays, and
                    # with it the deletion mark that refuses attaches, until a pass
                    # finds none (issue 11: the tombstone lasts until removal is done)
                    log.info(
                        "controller.deletion.terminals_left",
                        namespace=current.namespace,
                        sandbox=current.name,
                    )
                    return None
                current = await self._set_finalizer(current, present=False)
                continue
            assert not isinstance(action, AddFinalizer)  # only ever first (Plan)
            fresh = False
            if not await self._run(current, action):
                return None
        if status is not None and current is not None:
            current, fresh = await self._write_status(current, status), True
        return current if fresh else None

    async def _add_finalizer(self, sandbox: Sandbox, *, with_workspace: bool) -> Sandbox | None:
        """The finalizer write; a new sandbox's empty folders are made meanwhile (if the
        write fails they stay for the retry, or the orphan clean-up removes them)."""
        if not with_workspace:
            return await self._set_finalizer(sandbox, present=True)
        folders = asyncio.ensure_future(self._runtime.execute(sandbox, EnsureWorkspace()))
        try:
            written = await self._set_finalizer(sandbox, present=True)
        except Exception:
            with contextlib.suppress(Exception):
                await folders
            raise
        except BaseException:
            folders.cancel()
            raise
        await folders
        return written

    async def _run(self, sandbox: Sandbox, action: RuntimeAction) -> bool:
        if not isinstance(action, CloneRepo):
            return await self._runtime.execute(sandbox, action)
        # Clones run in a child task so a deletion can cancel just the clone (_preempt).
        task = asyncio.create_task(self._runtime.execute(sandbox, action))
        self._clone_tasks[sandbox.key] = task
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and current is not None and not current.cancelling():
                return False  # preempted by a deletion; the next pass finalizes
            raise
        finally:
            self._clone_tasks.pop(sandbox.key, None)

    async def _set_finalizer(self, sandbox: Sandbox, *, present: bool) -> Sandbox | None:
        others = tuple(f for f in sandbox.metadata.finalizers if f != FINALIZER)
        finalizers = (*others, FINALIZER) if present else others
        updated = await self._store.update(sandbox.with_meta(finalizers=finalizers))
        ns, name = sandbox.key
        self._remember(updated, sandbox.key)
        log.info(
            "controller.finalizer.added" if present else "controller.finalizer.released",
            namespace=ns,
            sandbox=name,
        )
        if updated is None:
            self._runtime.forget(ns, name)
        return updated

    async def _write_status(self, sandbox: Sandbox, status: SandboxStatus) -> Sandbox:
        written = await self._store.update_status(sandbox.with_status(status))
        self._remember(written, sandbox.key)
        if status.phase != sandbox.status.phase:
            ns, name = sandbox.key
            ready = status.condition("Ready")
            log.info(
                "controller.phase.changed",
                namespace=ns,
                sandbox=name,
                phase=status.phase,
                previous=sandbox.status.phase or None,
                reason=ready.reason if ready else None,
            )
            if self.on_phase is not None and written is not None:
                self.on_phase(written)
        return written

    def _remember(self, written: Sandbox | None, key: Key) -> None:
        if written is None:
            self._written.pop(key, None)
            self._objects.pop(key, None)
        else:
            self._written[key] = written.metadata.resource_version
            self._keep(written)

    def _keep(self, sandbox: Sandbox) -> None:
        """``sandbox`` becomes the copy of its key unless the copy is newer."""
        current = self._objects.get(sandbox.key)
        if current is None or _version(current) <= _version(sandbox):
            self._objects[sandbox.key] = sandbox

    async def _clean_up_orphan(self, key: Key) -> None:
        self._known.discard(key)
        self._written.pop(key, None)
        self._latest.pop(key, None)
        self._objects.pop(key, None)
        self._settled.pop(key, None)
        plan = reconcile_orphan(self._runtime.observe_orphan(*key))
        for action in plan.actions:
            if isinstance(action, StopTerminals):
                await self._runtime.stop_terminals(*key)
            elif isinstance(action, RemoveWorkspace):
                await self._runtime.remove_workspace(*key)
        self._runtime.forget(*key)


def _version(sandbox: Sandbox) -> int:
    text = sandbox.metadata.resource_version
    return int(text) if text.isdigit() else 0
