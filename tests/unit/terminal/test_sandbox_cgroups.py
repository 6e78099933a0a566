"""Per-sandbox cgroups (terminal/cgroups.py) on a stand-in hierarchy: which controllers
are found where, the limits written, removal, and what earlier runs left."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

from openova_sandbox.terminal.cgroups import PREFIX, Cgroups, cpu_quota_us, enter_argv, find

OWN_V1 = "4:memory:/jobs/server\n8:pids:/\n1:cpu,cpuacct:/\n0::/\n"


def hierarchy(root: Path, controllers: dict[str, str]) -> None:
    for name, own in controllers.items():
        folder = root / name / own.lstrip("/")
        folder.mkdir(parents=True)
        (folder / "cgroup.procs").write_text("")


def test_v1_controllers_are_found_in_this_process_own_cgroup(tmp_path):
    hierarchy(tmp_path, {"memory": "/jobs/server", "pids": "/", "cpu": "/"})
    found = find(tmp_path, OWN_V1)
    assert found["memory"].path == tmp_path / "memory/jobs/server"
    assert found["pids"].path == tmp_path / "pids"
    assert found["cpu"].path == tmp_path / "cpu"
    assert not any(base.v2 for base in found.values())
    assert list((tmp_path / "pids").iterdir()) == [tmp_path / "pids/cgroup.procs"]  # probe gone


def test_v2_only_where_the_controller_is_delegated(tmp_path):
    own = tmp_path / "user.slice/me"
    own.mkdir(parents=True)
    (own / "cgroup.subtree_control").write_text("cpu pids\n")
    found = find(tmp_path, "0::/user.slice/me\n")
    assert sorted(found) == ["cpu", "pids"] and all(b.v2 for b in found.values())
    assert find(tmp_path, "0::/elsewhere\n") == {}


def test_a_controller_that_is_not_mounted_is_not_found(tmp_path):
    (tmp_path / "pids").mkdir()  # a folder, but no cgroup hierarchy in it
    assert find(tmp_path, "8:pids:/\n4:memory:/\n") == {}


def test_limits_written_for_v1_and_removed_with_the_sandbox(tmp_path):
    hierarchy(tmp_path, {"memory": "/jobs/server", "pids": "/", "cpu": "/"})
    groups = Cgroups(find(tmp_path, OWN_V1), processes=64)
    procs = groups.prepare("acme/box", memory=256 << 20, cpu="500m")
    server = f"{PREFIX}{os.getpid()}"
    pids = tmp_path / "pids" / server / "acme" / "box"
    memory = tmp_path / "memory/jobs/server" / server / "acme" / "box"
    cpu = tmp_path / "cpu" / server / "acme" / "box"
    assert sorted(procs) == sorted(str(f / "cgroup.procs") for f in (pids, memory, cpu))
    assert (pids / "pids.max").read_text() == "64"
    assert (memory / "memory.limit_in_bytes").read_text() == str(256 << 20)
    assert (cpu / "cpu.cfs_quota_us").read_text() == "50000"
    assert (cpu / "cpu.cfs_period_us").read_text() == "100000"
    for folder in (pids, memory, cpu):  # a real cgroup dir has only control files
        for file in folder.iterdir():
            file.unlink()
    groups.close()
    assert not (tmp_path / "pids" / server).exists()
    assert not (tmp_path / "memory/jobs/server" / server).exists()


def test_v2_limits(tmp_path):
    own = tmp_path / "me"
    own.mkdir()
    (own / "cgroup.subtree_control").write_text("cpu memory pids")
    groups = Cgroups(find(tmp_path, "0::/me\n"), processes=10)
    groups.prepare("a/b", memory=1 << 30, cpu="500m")
    folder = own / f"{PREFIX}{os.getpid()}" / "a" / "b"
    assert (folder / "memory.max").read_text() == str(1 << 30)
    assert (folder / "cpu.max").read_text() == "50000 100000"
    assert (folder / "pids.max").read_text() == "10"


def test_earlier_servers_empty_cgroups_are_swept_not_a_running_one(tmp_path):
    hierarchy(tmp_path, {"pids": "/"})
    dead = 2**22 + 1  # above pid_max's default ceiling: no such process
    old = tmp_path / "pids" / f"{PREFIX}{dead}" / "acme" / "box"
    old.mkdir(parents=True)
    running = tmp_path / "pids" / f"{PREFIX}1" / "acme" / "box"  # pid 1 is always there
    running.mkdir(parents=True)
    Cgroups(find(tmp_path, "8:pids:/\n"), processes=10).sweep()
    assert not (tmp_path / "pids" / f"{PREFIX}{dead}").exists()
    assert running.is_dir()


def test_keys_that_would_read_alike_get_their_own_cgroups(tmp_path):
    hierarchy(tmp_path, {"pids": "/"})
    groups = Cgroups(find(tmp_path, "8:pids:/\n"), processes=10)
    assert groups.prepare("a.b/c", memory=None, cpu="") != groups.prepare(
        "a/b.c", memory=None, cpu=""
    )


def test_cpu_quota_and_the_entry_prefix():
    assert cpu_quota_us("4") == 400_000
    assert cpu_quota_us("250m") == 25_000
    assert cpu_quota_us("1m") == 1000  # the kernel's minimum
    assert cpu_quota_us("") is None and cpu_quota_us("fast") is None
    assert enter_argv([]) == []
    assert enter_argv(["/a"])[-2:] == ["/a", "--"]


def test_a_cpu_quota_of_all_the_machine_is_not_joined(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    hierarchy(tmp_path, {"cpu": "/", "pids": "/"})
    groups = Cgroups(find(tmp_path, "1:cpu:/\n8:pids:/\n"), processes=10)
    joined = groups.prepare("a/b", memory=None, cpu="4")
    assert [Path(p).parts[-5] for p in joined] == ["pids"]
    assert len(groups.prepare("a/c", memory=None, cpu="1500m")) == 2


def test_prime_writes_the_thread_own_id_to_the_cgroup_it_is_in_v1(tmp_path):
    hierarchy(tmp_path, {"memory": "/jobs/server", "pids": "/", "cpu": "/"})
    for base in ("pids", "memory/jobs/server", "cpu"):
        (tmp_path / base / "tasks").write_text("")
    groups = Cgroups(find(tmp_path, OWN_V1), processes=64)
    primer = groups.prime()
    assert primer is not None
    primer.join(5)
    first = next(iter(groups.bases.values())).path
    assert (first / "tasks").read_text() == str(primer.native_id)  # the thread, not the process
    assert primer.native_id != threading.get_native_id()
    groups.close()


def test_prime_writes_the_process_id_on_v2(tmp_path):
    own = tmp_path / "user.slice/me"
    own.mkdir(parents=True)
    (own / "cgroup.subtree_control").write_text("pids\n")
    (own / "cgroup.procs").write_text("")
    groups = Cgroups(find(tmp_path, "0::/user.slice/me\n"), processes=64)
    primer = groups.prime()
    assert primer is not None
    primer.join(5)
    assert (own / "cgroup.procs").read_text() == str(os.getpid())
    groups.close()


def test_one_primer_at_a_time_and_close_waits_for_it(tmp_path):
    """A write that blocks (a FIFO whose buffer is full stands in for the kernel's wait)
    keeps the primer alive: no second one starts; close() waits for it, then closes."""
    hierarchy(tmp_path, {"pids": "/"})
    tasks = tmp_path / "pids" / "tasks"
    os.mkfifo(tasks)
    reader = os.open(tasks, os.O_RDONLY | os.O_NONBLOCK)
    filler = os.open(tasks, os.O_WRONLY | os.O_NONBLOCK)
    try:
        with contextlib.suppress(BlockingIOError):
            while True:
                os.write(filler, b"x" * 4096)
        groups = Cgroups(find(tmp_path, "8:pids:/\n"), processes=64)
        primer = groups.prime()
        assert primer is not None and primer.is_alive()
        assert groups.prime() is None  # the first is still waiting
        drained = b""
        closing = threading.Thread(target=groups.close)
        closing.start()
        while primer.is_alive():
            with contextlib.suppress(BlockingIOError):
                drained += os.read(reader, 65536)
        closing.join(5)
        with contextlib.suppress(BlockingIOError):
            drained += os.read(reader, 65536)
        assert drained.endswith(str(primer.native_id).encode())
        assert groups._prime_fd is None
    finally:
        os.close(filler)
        os.close(reader)


def test_a_refused_prime_turns_priming_off(tmp_path):
    hierarchy(tmp_path, {"pids": "/"})
    (tmp_path / "pids" / "tasks").mkdir()  # cannot be opened for writing
    groups = Cgroups(find(tmp_path, "8:pids:/\n"), processes=64)
    assert groups.prime() is None
    (tmp_path / "pids" / "tasks").rmdir()
    (tmp_path / "pids" / "tasks").write_text("")
    assert groups.prime() is None  # not tried again
    assert (tmp_path / "pids" / "tasks").read_text() == ""


def test_prepare_again_with_the_same_limits_writes_nothing(tmp_path):
    hierarchy(tmp_path, {"pids": "/", "memory": "/jobs/server"})
    groups = Cgroups(find(tmp_path, OWN_V1), processes=64)
    first = groups.prepare("acme/box", memory=256 << 20, cpu="")
    limit = (
        tmp_path
        / "memory/jobs/server"
        / f"{PREFIX}{os.getpid()}"
        / "acme/box/memory.limit_in_bytes"
    )
    limit.write_text("changed by hand")
    assert groups.prepare("acme/box", memory=256 << 20, cpu="") == first
    assert limit.read_text() == "changed by hand"  # the same limits: not written again
    groups.prepare("acme/box", memory=512 << 20, cpu="")  # a new quota is written
    assert limit.read_text() == str(512 << 20)
