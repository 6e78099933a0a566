"""Issue 11: a terminal opened in the deletion's race window is ended by the deletion.

Two windows: a terminal that appears while the controller stops the sandbox's terminals
(the deletion mark stays, refusing attaches, until a pass finds none: the finalizer is
released only then), and one that appears after the object is gone (an attach that read
the sandbox before the deletion and spawned after it: the sweep ends it)."""

from __future__ import annotations

from typing import Any

from controller_support import (
    ControllerFactory,
    RecordingTerminals,
    new_sandbox,
    phase,
    wait_for,
    wait_gone,
)

from openova_sandbox.domain.model import FINALIZER, Sandbox

KEY = ("acme", "box")


class RacyTerminals(RecordingTerminals):
    """The first stop of the sandbox is followed by a terminal opened at once (an
    attach landing while the deletion runs)."""

    def __init__(self) -> None:
        super().__init__()
        self.racing = True

    async def stop_sandbox(self, namespace: str, name: str) -> None:
        await super().stop_sandbox(namespace, name)
        if self.racing:
            self.racing = False
            self.live[(namespace, name)] = 1


class ReleaseWitness:
    """The store; every release of our finalizer records the live terminals then."""

    def __init__(self, inner: Any, terminals: RecordingTerminals) -> None:
        self.inner, self.terminals = inner, terminals
        self.live_at_release: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def update(self, sandbox: Sandbox) -> Sandbox | None:
        if sandbox.deleting and FINALIZER not in sandbox.metadata.finalizers:
            self.live_at_release.append(self.terminals.sessions(*sandbox.key))
        return await self.inner.update(sandbox)


async def test_the_finalizer_waits_until_no_terminal_is_left(
    store: Any, controller: ControllerFactory
) -> None:
    terminals = RacyTerminals()
    witness = ReleaseWitness(store, terminals)
    await store.create(new_sandbox("box"))
    async with controller(store=witness, terminals=terminals):
        await wait_for(store, KEY, phase("Ready"))
        await store.delete(*KEY)
        await wait_gone(store, KEY)
    # before: released while the late terminal ran (the object gone, its terminal not)
    assert witness.live_at_release == [0]
    assert terminals.stopped.count(KEY) >= 2 and terminals.sessions(*KEY) == 0


async def test_the_sweep_ends_a_terminal_of_a_sandbox_that_is_gone(
    store: Any, controller: ControllerFactory, terminals: RecordingTerminals
) -> None:
    await store.create(new_sandbox("box"))
    async with controller(sweep_interval=0.05) as ctl:
        await wait_for(store, KEY, phase("Ready"))
        await store.delete(*KEY)
        await wait_gone(store, KEY)
        await ctl.wait_idle()
        stops = terminals.stopped.count(KEY)
        terminals.live[KEY] = 1  # spawned by an attach that read the sandbox before
        await wait_for_condition(lambda: terminals.sessions(*KEY) == 0)
        assert terminals.stopped.count(KEY) == stops + 1


async def wait_for_condition(check: Any, timeout: float = 10.0) -> None:
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the timeout"
        await asyncio.sleep(0.02)
