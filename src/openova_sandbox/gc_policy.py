"""Garbage collection for a long-running server: full collections that scan only what
is new since the last one.

CPython's collector is generational, and its oldest generation is scanned whole: every
long-lived container object of the process (modules' functions, classes, pydantic's
field infos, FastAPI's routes, the informer's copy of every Sandbox) on each full
collection, with the event loop stopped meanwhile. ``bench/control_plane.py`` measured
it (issue 11): during a burst of 1,000 creates, full collections over ~260,000 objects
took 150-190 ms of CPU each and were the neighbour's p99 (docs/architecture.md, "Garbage
collection").

What this does, process-wide, once the server is listening (:func:`install`):

1. a full collection, then ``gc.freeze()``: everything alive at start (the framework,
   the imported modules) moves to the permanent generation, which is never scanned;
2. after every full collection, ``gc.freeze()`` again: what survived it is long-lived
   too, so the next full collection scans only what is new since. Frozen objects are
   still freed by reference counting the moment they are unused; only a *cycle* among
   them that becomes garbage waits;
3. every ``refresh_seconds`` (default an hour) one full collection scans everything
   again (``gc.unfreeze()`` first), which frees such cycles: the memory a cycle can hold
   is bounded by what became cyclic garbage in an hour among long-lived objects
   (connections that lived long, then closed).

The pty-server pod does not use it: its heap is a few thousand objects.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

REFRESH_SECONDS = 3600.0


@dataclass
class GcPolicy:
    """Freeze after each full collection; a whole scan every ``refresh_seconds``."""

    refresh_seconds: float = REFRESH_SECONDS
    clock: Callable[[], float] = time.monotonic
    full_collections: int = 0
    whole_scans: int = 0
    last_pause_s: float = 0.0
    _started: float = 0.0
    _refreshed: float = field(default=0.0)
    _installed: bool = False

    def install(self) -> None:
        """Collect, freeze what is alive, and freeze again after each full collection."""
        if self._installed:
            return
        gc.collect()
        gc.freeze()
        self._refreshed = self.clock()
        gc.callbacks.append(self._callback)
        self._installed = True

    def uninstall(self) -> None:
        """Stop (and put the frozen objects back under collection)."""
        if not self._installed:
            return
        gc.callbacks.remove(self._callback)
        gc.unfreeze()
        self._installed = False

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
            return
        self.last_pause_s = time.perf_counter() - self._started
        self.full_collections += 1
        now = self.clock()
        if now - self._refreshed >= self.refresh_seconds:
            # the next full collection scans every object (the frozen ones back in the
            # oldest generation) and frees cycles among long-lived objects; it freezes
            # what survives again
            self._refreshed = now
            self.whole_scans += 1
            gc.unfreeze()
            return
        gc.freeze()


_POLICY = GcPolicy()


def install() -> GcPolicy:
    """The process's policy, installed (once: a second call changes nothing)."""
    _POLICY.install()
    return _POLICY
