"""Issue 11: the sweep reads no store. With sandboxes Ready and nothing changing, sweeps
make no store call at all; what the terminal server changes (sessions, activity) is still
written within a sweep, and a removed workspace is still repaired."""

from __future__ import annotations

import asyncio
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from controller_support import ControllerFactory, RecordingTerminals, new_sandbox, phase, wait_for


class CountingStore:
    """The real store, with every call the controller makes counted by name."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name in ("get", "list", "update", "update_status"):

            async def counted(*args: Any, **kw: Any) -> Any:
                self.calls[name] += 1
                return await attr(*args, **kw)

            return counted
        return attr


async def test_sweeps_of_settled_sandboxes_read_no_store(
    store: Any, controller: ControllerFactory, terminals: RecordingTerminals, data_dir: Path
) -> None:
    names = [f"box{i}" for i in range(20)]
    for name in names:
        await store.create(new_sandbox(name))
    counting = CountingStore(store)
    async with controller(store=counting, sweep_interval=0.05) as ctl:
        for name in names:
            await wait_for(store, ("acme", name), phase("Ready"))
        await ctl.wait_idle()
        counting.calls.clear()
        swept = ctl.sweep_passes
        for _ in range(10):  # ten sweeps' worth, every sandbox settled
            await ctl.sweep()
        await asyncio.sleep(0.3)  # and the loop's own sweeps meanwhile
        await ctl.wait_idle()
        # before: one store.get per sandbox per sweep (10 x 20 here)
        assert counting.calls == Counter(), counting.calls
        assert ctl.sweep_passes == swept

        # the terminal server changes: the next sweep writes it, reading nothing
        terminals.live[("acme", "box3")] = 2
        await wait_for(store, ("acme", "box3"), lambda sb: sb.status.sessions == 2, timeout=5)
        await ctl.wait_idle()
        assert counting.calls["get"] == 0 and counting.calls["list"] == 0, counting.calls
        assert counting.calls["update_status"] >= 1

        # a workspace removed behind the controller's back is made again
        shutil.rmtree(data_dir / "workspaces" / "acme" / "box7")
        for _ in range(200):
            if (data_dir / "workspaces" / "acme" / "box7").is_dir():
                break
            await asyncio.sleep(0.02)
        assert (data_dir / "workspaces" / "acme" / "box7").is_dir()
