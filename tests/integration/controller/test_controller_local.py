"""The local runtime on its own: folders, modes, clones and their failure modes."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest
from controller_support import RecordingTerminals, new_sandbox

from openova_sandbox.controller.local import LocalRuntime, workspace_path
from openova_sandbox.controller.reconcile import (
    CloneRepo,
    EnsureWorkspace,
    RemoveWorkspace,
    StopTerminals,
)
from openova_sandbox.domain.errors import Invalid


def runtime(data_dir: Path, base: str, **options: object) -> LocalRuntime:
    return LocalRuntime(RecordingTerminals(), data_dir=data_dir, git_base_url=base, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["..", ".", "", "a/b", "a\\b", "x\x00y"])
def test_workspace_path_refuses_names_that_escape(tmp_path: Path, bad: str) -> None:
    with pytest.raises(Invalid):
        workspace_path(tmp_path, bad, "box")
    with pytest.raises(Invalid):
        workspace_path(tmp_path, "acme", bad)


async def test_workspace_folders_are_private_and_removed_with_their_namespace(
    data_dir: Path, git_base: Path
) -> None:
    rt = runtime(data_dir, git_base.as_uri())
    sb = new_sandbox("box")
    assert await rt.execute(sb, EnsureWorkspace())
    ws = workspace_path(data_dir.absolute(), "acme", "box")
    for folder in (ws, ws.parent, ws.parent.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert rt.observe(sb).workspace_exists
    assert await rt.execute(sb, EnsureWorkspace())  # idempotent
    assert await rt.execute(sb, RemoveWorkspace())
    assert not ws.exists() and not ws.parent.exists()
    assert (data_dir / "workspaces").is_dir()
    assert await rt.execute(sb, RemoveWorkspace())  # idempotent


async def test_a_clone_replaces_leftovers_of_an_interrupted_attempt(
    data_dir: Path, git_base: Path
) -> None:
    rt = runtime(data_dir, git_base.as_uri() + "/")
    sb = new_sandbox("box", repos=("acme/app",))
    await rt.execute(sb, EnsureWorkspace())
    ws = workspace_path(data_dir, "acme", "box")
    leftover = ws / ".clone-app-deadbeef"
    (leftover / "objects").mkdir(parents=True)
    (ws / "app").mkdir()  # an empty folder where the clone goes is fine
    assert await rt.execute(sb, CloneRepo("acme/app"))
    assert not leftover.exists()
    assert (ws / "app" / "README.md").read_text() == "hello from acme/app\n"
    assert rt.observe(sb).cloned == frozenset({"acme/app"})


async def test_a_folder_in_the_way_is_reported_not_overwritten(
    data_dir: Path, git_base: Path
) -> None:
    rt = runtime(data_dir, git_base.as_uri())
    sb = new_sandbox("box", repos=("acme/app",))
    await rt.execute(sb, EnsureWorkspace())
    mine = workspace_path(data_dir, "acme", "box") / "app" / "notes.txt"
    mine.parent.mkdir()
    mine.write_text("keep me")
    assert not await rt.execute(sb, CloneRepo("acme/app"))
    assert mine.read_text() == "keep me"
    assert "already exists" in rt.observe(sb).clone_errors["acme/app"]


async def test_a_missing_git_binary_is_a_clone_failure(data_dir: Path, git_base: Path) -> None:
    rt = runtime(data_dir, git_base.as_uri(), git_binary=str(data_dir / "no-such-git"))
    sb = new_sandbox("box", repos=("acme/app",))
    await rt.execute(sb, EnsureWorkspace())
    assert not await rt.execute(sb, CloneRepo("acme/app"))
    assert "cannot run" in rt.observe(sb).clone_errors["acme/app"]
    assert list(workspace_path(data_dir, "acme", "box").iterdir()) == []


async def test_no_git_base_url_is_a_clone_failure(data_dir: Path) -> None:
    rt = runtime(data_dir, "", storage_interval=60.0)
    sb = new_sandbox("box", repos=("acme/app",))
    await rt.execute(sb, EnsureWorkspace())
    assert not await rt.execute(sb, CloneRepo("acme/app"))
    assert "SANDBOX_GIT_BASE_URL" in rt.observe(sb).clone_errors["acme/app"]


async def test_clone_errors_belong_to_one_generation(data_dir: Path) -> None:
    rt = runtime(data_dir, "", storage_interval=60.0)
    sb = new_sandbox("box", repos=("acme/app",)).with_meta(generation=1)
    await rt.execute(sb, EnsureWorkspace())
    await rt.execute(sb, CloneRepo("acme/app"))
    assert rt.observe(sb).clone_errors
    assert rt.observe(sb.with_meta(generation=2)).clone_errors == {}


async def test_stop_terminals_goes_to_the_terminal_host(data_dir: Path) -> None:
    host = RecordingTerminals()
    host.live[("acme", "box")] = 3
    rt = LocalRuntime(host, data_dir=data_dir, git_base_url="")
    sb = new_sandbox("box")
    assert rt.observe(sb).sessions == 3
    assert await rt.execute(sb, StopTerminals())
    assert host.stopped == [("acme", "box")]
    assert rt.observe(sb).sessions == 0


async def test_the_base_urls_credential_is_not_left_in_the_clone(
    data_dir: Path, git_base: Path
) -> None:
    """Over HTTP (git's dumb protocol) with a user and password in the base URL: the
    clone works, and its .git/config names the origin without them."""
    import functools
    import http.server
    import threading

    from controller_support import git

    git("update-server-info", cwd=git_base / "acme" / "app.git")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(git_base))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        rt = runtime(data_dir, f"http://gitbot:s3cret-token@127.0.0.1:{port}")
        sb = new_sandbox("box", repos=("acme/app",))
        await rt.execute(sb, EnsureWorkspace())
        assert await rt.execute(sb, CloneRepo("acme/app"))
        clone = workspace_path(data_dir, "acme", "box") / "app"
        assert (clone / "README.md").read_text() == "hello from acme/app\n"
        config = (clone / ".git" / "config").read_text()
        assert "s3cret-token" not in config and "gitbot" not in config
        assert f"url = http://127.0.0.1:{port}/acme/app.git" in config
    finally:
        server.shutdown()
        server.server_close()


async def test_the_workspace_size_is_measured_in_the_background(data_dir: Path) -> None:
    rt = runtime(data_dir, "", storage_interval=60.0)
    sb = new_sandbox("box")
    assert await rt.execute(sb, EnsureWorkspace())
    ws = workspace_path(data_dir.absolute(), "acme", "box")
    (ws / "big").write_bytes(b"x" * (3 << 20))
    (ws / "sub").mkdir()
    (ws / "sub" / "same").hardlink_to(ws / "big")  # one inode, counted once
    (ws / "link").symlink_to("/usr")  # not followed
    assert rt.observe(sb).storage_used is None  # measuring now, in a thread
    for _ in range(200):
        used = rt.observe(sb).storage_used
        if used is not None:
            break
        await asyncio.sleep(0.01)
    assert used is not None and 3 << 20 <= used < 4 << 20
    assert await rt.execute(sb, RemoveWorkspace())
    assert rt.observe(sb).storage_used is None
