"""The server's garbage-collection policy (openova_sandbox.gc_policy). The collector's
state is process-wide, so each case runs in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_install_freezes_what_is_alive_so_a_full_collection_does_not_scan_it() -> None:
    out = run(
        """
        import gc
        from openova_sandbox.gc_policy import GcPolicy
        keep = [[i] for i in range(50_000)]  # lists are always tracked
        before = len(gc.get_objects())
        GcPolicy().install()
        print(gc.get_freeze_count() >= 50_000, len(gc.get_objects()) < before // 10)
        """
    )
    assert out == "True True"


def test_survivors_of_a_full_collection_are_frozen_and_young_objects_are_not() -> None:
    out = run(
        """
        import gc
        from openova_sandbox.gc_policy import GcPolicy
        policy = GcPolicy()
        policy.install()
        frozen = gc.get_freeze_count()
        later = [[i] for i in range(20_000)]
        gc.collect(1)  # not a full collection: nothing is frozen
        same = gc.get_freeze_count() == frozen
        gc.collect()
        print(same, gc.get_freeze_count() >= frozen + 20_000, policy.full_collections)
        """
    )
    assert out == "True True 1"


def test_a_cycle_among_frozen_objects_is_freed_by_the_next_whole_scan() -> None:
    out = run(
        """
        import gc, weakref
        from openova_sandbox.gc_policy import GcPolicy
        now = [0.0]
        policy = GcPolicy(refresh_seconds=60, clock=lambda: now[0])
        class Node:
            pass
        a, b = Node(), Node()
        a.peer, b.peer = b, a
        probe = weakref.ref(a)
        policy.install()  # the cycle is alive, so it is frozen
        del a, b  # now it is garbage that only the collector can free
        gc.collect()
        kept_while_frozen = probe() is not None
        now[0] = 61.0
        gc.collect()  # the refresh: this one puts everything back under collection
        gc.collect()  # and this one scans it all
        print(kept_while_frozen, probe() is None, policy.whole_scans)
        """
    )
    assert out == "True True 1"


def test_install_twice_changes_nothing_and_uninstall_unfreezes() -> None:
    out = run(
        """
        import gc
        from openova_sandbox.gc_policy import GcPolicy
        policy = GcPolicy()
        policy.install()
        policy.install()
        once = gc.callbacks.count(policy._callback) == 1
        policy.uninstall()
        print(once, gc.get_freeze_count() == 0, policy._callback not in gc.callbacks)
        """
    )
    assert out == "True True True"
