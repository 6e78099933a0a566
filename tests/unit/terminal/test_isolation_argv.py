"""The bubblewrap argv of a sandbox (terminal/isolation.py), built without starting it:
what is shown, read-only or not, what is hidden, in which order, and the limits."""

from __future__ import annotations

import pytest

from openova_sandbox.domain.errors import SpawnFailed
from openova_sandbox.terminal.isolation import (
    Policy,
    View,
    bwrap_argv,
    exposable,
    memory_bytes,
    path_dirs,
    visible,
    wrap,
)
from openova_sandbox.terminal.pty import SpawnSpec

DATA = "/srv/sandbox/data"
WS = f"{DATA}/workspaces/acme/box"
HOME = f"{DATA}/homes/acme/box"
POLICY = Policy(
    bwrap="/usr/bin/bwrap",
    prlimit="/usr/bin/prlimit",
    setsid="/usr/bin/setsid",
    system=(("/usr", ""), ("/bin", "usr/bin"), ("/etc", ""), ("/opt", "")),
    extra=("/nix/store",),
    agents_dir=f"{DATA}/agents",
    hidden=(DATA, "/home/server"),
    masked_files=("/etc/openova/llm.yaml",),
    masked_dirs=("/etc/ssh",),
    processes=300,
)
VIEW = View(workspace=WS, home=HOME, hostname="box", memory=1 << 30)


def pairs(argv: list[str], option: str) -> list[str]:
    """The argument after each ``option`` (the destination for binds: the last one)."""
    return [argv[i + 1] for i, a in enumerate(argv) if a == option]


def binds(argv: list[str], option: str) -> list[tuple[str, str]]:
    return [(argv[i + 1], argv[i + 2]) for i, a in enumerate(argv) if a == option]


def test_namespaces_capabilities_and_the_parent():
    argv = bwrap_argv(POLICY, VIEW, ["/bin/sh"], WS)
    head = argv[: argv.index("--")]
    for flag in (
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--disable-userns",
        "--die-with-parent",
    ):
        assert flag in head
    assert pairs(head, "--cap-drop") == ["ALL"]
    assert pairs(head, "--hostname") == ["box"]
    assert "--unshare-net" not in head
    assert "--new-session" not in head  # the agent takes the PTY itself (setsid --ctty)


def test_the_system_is_read_only_and_the_sandbox_folders_are_not():
    argv = bwrap_argv(POLICY, VIEW, ["/bin/sh"], WS)
    assert ("/usr", "/usr") in binds(argv, "--ro-bind")
    assert ("/etc", "/etc") in binds(argv, "--ro-bind")
    assert ("usr/bin", "/bin") in binds(argv, "--symlink")
    assert ("/nix/store", "/nix/store") in binds(argv, "--ro-bind-try")
    assert (f"{DATA}/agents", f"{DATA}/agents") in binds(argv, "--ro-bind-try")
    assert binds(argv, "--bind") == [(WS, WS), (HOME, HOME)]
    # nothing else of the data dir or the server's HOME is bound
    every = [*binds(argv, "--ro-bind"), *binds(argv, "--ro-bind-try"), *binds(argv, "--bind")]
    for source, _ in every:
        if source.startswith(DATA):
            assert source in (WS, HOME, f"{DATA}/agents")
        assert not source.startswith("/home/server")
    # the root is made read-only after every mount, and the cwd is the one asked for
    head = argv[: argv.index("--")]
    assert head[-4:] == ["--remount-ro", "/", "--chdir", WS]


def test_own_proc_dev_tmp_and_shm_each_at_most_half_the_memory_quota():
    argv = bwrap_argv(POLICY, VIEW, ["/bin/sh"], WS)
    assert pairs(argv, "--proc") == ["/proc"]
    assert pairs(argv, "--dev") == ["/dev"]
    assert pairs(argv, "--tmpfs")[-2:] == ["/dev/shm", "/tmp"]
    for target in ("/dev/shm", "/tmp"):
        at = argv.index(target)
        assert argv[at - 3 : at] == ["--size", str(1 << 29), "--tmpfs"]  # half the quota


def test_a_secret_below_a_shown_folder_is_covered_before_the_sandbox_folders():
    policy = Policy(**{**POLICY.__dict__, "hidden": ("/opt/sandbox", "/home/server")})
    ws = "/opt/sandbox/workspaces/acme/box"
    argv = bwrap_argv(policy, View(workspace=ws), ["/bin/sh"], ws)
    covered = argv.index("/opt/sandbox")
    assert argv[covered - 1] == "--tmpfs"
    assert argv.index("--bind") > covered  # the workspace is bound over the cover
    assert "/home/server" not in pairs(argv, "--tmpfs")  # not below anything shown


def test_masked_files_and_root_only_folders():
    argv = bwrap_argv(POLICY, VIEW, ["/bin/sh"], WS)
    assert ("/dev/null", "/etc/openova/llm.yaml") in binds(argv, "--ro-bind-try")
    assert "/etc/ssh" in pairs(argv, "--tmpfs")


def test_the_command_runs_under_limits_as_a_session_leader_on_the_terminal():
    argv = bwrap_argv(POLICY, VIEW, ["/usr/bin/claude", "--resume"], WS)
    tail = argv[argv.index("--") + 1 :]
    assert tail == [
        "/usr/bin/prlimit",
        "--nproc=300",
        f"--data={1 << 30}",
        "--",
        "/usr/bin/setsid",
        "--wait",
        "--ctty",
        "--",
        "/usr/bin/claude",
        "--resume",
    ]
    # without a quota, no memory limit; without a terminal (the start's probe), no setsid
    plain = bwrap_argv(POLICY, View(workspace=WS), ["/bin/true"], WS, terminal=False)
    assert plain[plain.index("--") + 1 :] == ["/usr/bin/prlimit", "--nproc=300", "--", "/bin/true"]


def test_no_network_for_an_offline_org_or_when_switched_off():
    offline = Policy(**{**POLICY.__dict__, "offline_orgs": frozenset({"acme"})})
    spec = SpawnSpec(argv=("/bin/sh",), cwd=WS)
    wrapped = wrap(offline, spec, workspace=WS, home=HOME, name="acme/box", org="acme")
    assert "--unshare-net" in wrapped.argv
    other = wrap(offline, spec, workspace=WS, home=HOME, name="beta/box", org="beta")
    assert "--unshare-net" not in other.argv
    off = Policy(**{**POLICY.__dict__, "network": False})
    assert "--unshare-net" in wrap(off, spec, workspace=WS, org="beta").argv


def test_wrap_keeps_the_environment_and_size_and_marks_the_spec_sandboxed():
    spec = SpawnSpec(argv=("/bin/sh", "-i"), cwd=WS, env={"HOME": HOME}, rows=40, cols=100)
    wrapped = wrap(POLICY, spec, workspace=WS, home=HOME, name="acme/box", memory="512Mi")
    assert wrapped.sandboxed and wrapped.env == {"HOME": HOME}
    assert (wrapped.rows, wrapped.cols, wrapped.cwd) == (40, 100, WS)
    assert wrapped.argv[0] == "/usr/bin/bwrap" and wrapped.argv[-2:] == ("/bin/sh", "-i")
    assert f"--data={512 << 20}" in wrapped.argv
    assert pairs(list(wrapped.argv), "--hostname") == ["box"]


@pytest.mark.parametrize(
    "cwd",
    [DATA, f"{DATA}/workspaces/acme/other", "/home/server/project", "/var/lib", "/srv", "/tmp/x"],
)
def test_a_working_directory_outside_the_view_is_refused(cwd):
    spec = SpawnSpec(argv=("/bin/sh",), cwd=cwd)
    with pytest.raises(SpawnFailed, match="not inside the sandbox"):
        wrap(POLICY, spec, workspace=WS, home=HOME)


def test_what_is_visible():
    assert visible(f"{WS}/src", POLICY, VIEW)
    assert visible(HOME, POLICY, VIEW)
    assert visible("/usr/lib", POLICY, VIEW)
    assert not visible("/tmp/x", POLICY, VIEW)  # the sandbox's /tmp is its own
    assert visible(f"{DATA}/agents/bin", POLICY, VIEW)
    assert not visible(f"{DATA}/issuer", POLICY, VIEW)
    assert not visible(f"{DATA}/workspaces/acme/boxer", POLICY, VIEW)  # a prefix is not in
    assert not visible("/home/server", POLICY, VIEW)


def test_exposable_and_the_path_directories(tmp_path):
    hidden = (str(tmp_path / "data"), str(tmp_path / "home"))
    assert exposable(str(tmp_path / "home" / ".local" / "bin"), hidden)
    assert not exposable(str(tmp_path), hidden)  # holds the data dir
    assert not exposable(str(tmp_path / "data"), hidden)
    for folder in ("tools/bin", "home/.local/bin", "data/agents/bin"):
        (tmp_path / folder).mkdir(parents=True)
    path = ":".join(
        [
            str(tmp_path / "tools/bin"),
            str(tmp_path / "home/.local/bin"),  # in the server's HOME: not shown
            str(tmp_path / "data/agents/bin"),  # the agents' folder is shown as a whole
            str(tmp_path / "missing"),
            "relative/bin",
            "",
            "/usr/bin",  # in a system folder already
            str(tmp_path / "tools/bin"),
        ]
    )
    assert path_dirs(path, hidden) == (str(tmp_path / "tools/bin"),)


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [("8Gi", 8 << 30), ("512Mi", 512 << 20), ("1G", 10**9), ("", None), ("lots", None)],
)
def test_memory_quota_in_bytes(quantity, expected):
    assert memory_bytes(quantity) == expected


def test_the_launcher_joins_the_sandbox_cgroups_before_bubblewrap():
    view = View(workspace=WS, cgroups=("/cg/pids/x/cgroup.procs", "/cg/memory/x/cgroup.procs"))
    argv = bwrap_argv(POLICY, view, ["/bin/sh"], WS)
    assert argv[:3] == ["/bin/sh", "-c", argv[2]]
    assert argv[3:8] == [
        "sh",
        "/cg/pids/x/cgroup.procs",
        "/cg/memory/x/cgroup.procs",
        "--",
        "/usr/bin/bwrap",
    ]
    assert "exec" in argv[2] and "exit 125" in argv[2]  # no join, no start
    assert bwrap_argv(POLICY, VIEW, ["/bin/sh"], WS)[0] == "/usr/bin/bwrap"


def test_a_program_outside_the_view_is_refused_with_the_way_out():
    spec = SpawnSpec(argv=("/home/server/.local/bin/agent",), cwd=WS)
    with pytest.raises(SpawnFailed, match="SANDBOX_ISOLATION_PATHS"):
        wrap(POLICY, spec, workspace=WS, home=HOME)
    for program in ("/usr/bin/env", f"{DATA}/agents/bin/claude", f"{WS}/run.sh", "/nix/store/x"):
        wrap(POLICY, SpawnSpec(argv=(program,), cwd=WS), workspace=WS, home=HOME)


def test_a_script_whose_interpreter_is_missing_or_hidden_is_refused(tmp_path):
    ws = str(tmp_path / "ws")
    policy = Policy(**{**POLICY.__dict__, "extra": (str(tmp_path / "bin"),)})
    (tmp_path / "bin").mkdir()
    (tmp_path / "ws").mkdir()
    script = tmp_path / "bin" / "agent"
    script.write_text("#!/nonexistent/interpreter\n")
    spec = SpawnSpec(argv=(str(script),), cwd=ws)
    with pytest.raises(SpawnFailed, match="interpreter /nonexistent/interpreter is not found"):
        wrap(policy, spec, workspace=ws)
    script.write_text(f"#!{tmp_path}/ws/../hidden/python\n")  # exists nowhere visible
    with pytest.raises(SpawnFailed, match="is not found"):
        wrap(policy, spec, workspace=ws)
    script.write_text("#!/bin/sh\necho fine\n")
    assert wrap(policy, spec, workspace=ws).sandboxed


def test_a_linked_agents_folder_is_shown_at_both_paths():
    linked = Policy(**{**POLICY.__dict__, "agents_real": "/srv/cache/agents"})
    argv = bwrap_argv(linked, VIEW, ["/bin/sh"], WS)
    shown = binds(argv, "--ro-bind-try")
    assert ("/srv/cache/agents", f"{DATA}/agents") in shown
    assert ("/srv/cache/agents", "/srv/cache/agents") in shown
    assert visible("/srv/cache/agents/npm/x/bin/agent", linked, VIEW)


def test_a_sandbox_without_a_home_gets_an_empty_one_where_its_home_points():
    spec = SpawnSpec(argv=("/bin/sh",), cwd=WS, env={"HOME": "/home/server"})
    argv = list(wrap(POLICY, spec, workspace=WS).argv)
    at = argv.index("/home/server")
    assert argv[at - 1] == "--tmpfs"
    assert at < len(argv) - 1 - argv[::-1].index("--remount-ro")  # before the root is read-only
    with_home = list(wrap(POLICY, spec, workspace=WS, home=HOME).argv)
    assert "/home/server" not in with_home  # its own HOME: nothing of the server's


def test_a_shown_folder_in_the_server_home_is_visible_the_rest_of_it_not():
    python = Policy(**{**POLICY.__dict__, "extra": ("/home/server/.pyenv/versions/3.11",)})
    assert visible("/home/server/.pyenv/versions/3.11/bin/python3", python, VIEW)
    assert not visible("/home/server/.ssh/id_ed25519", python, VIEW)
    spec = SpawnSpec(argv=("/home/server/.pyenv/versions/3.11/bin/python3",), cwd=WS)
    assert wrap(python, spec, workspace=WS).sandboxed  # (a path that does not exist here)
