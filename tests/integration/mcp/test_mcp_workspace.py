"""``workspace.search`` and ``workspace.read`` (issue 14) called through their tool
handlers on real workspace folders where the embedded controller puts them
(``<data_dir>/workspaces/<namespace>/<name>``) and a real tantivy index in the data dir:
incremental re-indexing, deletions, skips, bounds, and paths that try to leave the
workspace (``..``, absolute, symlinks out, a symlinked folder)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from openova_sandbox.api.composition import build_api
from openova_sandbox.config import load_settings
from openova_sandbox.controller.local import workspace_path
from openova_sandbox.domain.errors import BackendUnavailable, Forbidden, Invalid, NotFound
from openova_sandbox.domain.model import ObjectMeta, Sandbox, SandboxSpec
from openova_sandbox.mcp.capabilities import Grant
from openova_sandbox.mcp.tools import workspace as workspace_tools
from openova_sandbox.mcp.tools.base import McpCaller, McpServices, ToolContext
from openova_sandbox.services.sandbox_reaper import SandboxReaper
from openova_sandbox.services.workspace_index import Limits, WorkspaceIndex
from openova_sandbox.store.memory import MemoryStore

TOOLS = {t.name: t for t in workspace_tools.TOOLS}


class World:
    def __init__(self, data_dir: Path, index: WorkspaceIndex) -> None:
        self.data_dir = data_dir
        self.index = index
        self.settings = load_settings(data_dir=data_dir, store="memory")

    def workspace(self, name: str, namespace: str = "acme") -> Path:
        ws = workspace_path(self.data_dir, namespace, name)
        ws.mkdir(parents=True, exist_ok=True)
        return ws

    def ctx(self, name: str, uid: str, namespace: str = "acme") -> ToolContext:
        caller = McpCaller(
            namespace=namespace,
            sandbox=name,
            uid=uid,
            owner_sub="sub-ada",
            owner_email="ada@acme.com",
            org="acme",
            grant=Grant(("*",)),
        )
        return ToolContext(caller, McpServices(settings=self.settings, workspace=self.index))


async def call(ctx: ToolContext, tool: str, **args: Any) -> Any:
    result = await TOOLS[tool].handler(ctx, args)
    json.dumps(result)  # what the server sends: JSON-able
    return result


def paths(result: dict[str, Any]) -> list[str]:
    return [hit["path"] for hit in result["hits"]]


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path / "data", WorkspaceIndex(tmp_path / "data"))


async def test_search_finds_lines_and_follows_changes(world: World) -> None:
    ws = world.workspace("one")
    ctx = world.ctx("one", "uid-one")
    (ws / "src").mkdir()
    (ws / "src" / "app.py").write_text("import os\n\n\ndef frobnicate(x):\n    return x * 2\n")
    (ws / "README.md").write_text("# Demo\nNothing to see.\n")

    first = await call(ctx, "workspace.search", query="frobnicate")
    assert paths(first) == ["src/app.py"]
    assert first["hits"][0]["lines"] == [{"line": 4, "text": "def frobnicate(x):"}]
    assert first["index"]["files"] == 2 and first["index"]["reindexed"] == 2

    # a term added after the first index is found, and only the changed file is read again
    (ws / "src" / "later.py").write_text("QUUXIFY_LIMIT = 3\n")
    found = await call(ctx, "workspace.search", query="quuxify")
    assert paths(found) == ["src/later.py"]
    assert found["index"]["reindexed"] == 1

    # an edit replaces the file's blocks: the old word is gone, the new one is there
    (ws / "README.md").write_text("# Demo\nNow with a zanzibar.\n")
    assert paths(await call(ctx, "workspace.search", query="zanzibar")) == ["README.md"]
    assert (await call(ctx, "workspace.search", query="nothing"))["hits"] == []

    # a deleted file disappears from the results
    (ws / "src" / "app.py").unlink()
    gone = await call(ctx, "workspace.search", query="frobnicate")
    assert gone["hits"] == [] and gone["index"]["removed"] == 1

    # nothing changed: nothing is read again
    idle = await call(ctx, "workspace.search", query="zanzibar")
    assert idle["index"]["reindexed"] == 0 and idle["index"]["removed"] == 0


async def test_the_index_survives_a_restart_without_reading_everything_again(
    world: World, tmp_path: Path
) -> None:
    ws = world.workspace("one")
    for i in range(5):
        (ws / f"f{i}.txt").write_text(f"common word{i}\n")
    await call(world.ctx("one", "uid-one"), "workspace.search", query="common")
    again = World(world.data_dir, WorkspaceIndex(world.data_dir))  # a new server process
    (ws / "f2.txt").write_text("common changed\n")
    result = await call(again.ctx("one", "uid-one"), "workspace.search", query="common")
    assert sorted(paths(result)) == [f"f{i}.txt" for i in range(5)]  # no duplicates
    assert result["index"]["reindexed"] == 1


async def test_skips_git_binary_large_and_symlinks(world: World, tmp_path: Path) -> None:
    ws = world.workspace("one")
    outside = tmp_path / "outside.txt"
    outside.write_text("plutonium outside the workspace\n")
    (ws / ".git").mkdir()
    (ws / ".git" / "config").write_text("plutonium in git\n")
    (ws / "node_modules" / "pkg").mkdir(parents=True)
    (ws / "node_modules" / "pkg" / "index.js").write_text("plutonium dependency\n")
    (ws / "blob.bin").write_bytes(b"plutonium\0binary")
    (ws / "latin1.txt").write_bytes("plutonium caf\xe9".encode("latin-1"))
    (ws / "big.txt").write_text("plutonium " * 200_000)  # 2 MB > 1 MiB
    os.symlink(outside, ws / "link.txt")
    os.symlink(tmp_path, ws / "linked-dir")
    (ws / "real.txt").write_text("plutonium here\n")

    result = await call(world.ctx("one", "uid-one"), "workspace.search", query="plutonium")
    assert paths(result) == ["real.txt"]
    assert result["index"]["skipped"] == {
        "binary": 2,
        "tooLarge": 1,
        "overLimit": 0,
        "gitignored": 0,
    }


async def test_limits_on_files_say_what_was_left_out(tmp_path: Path) -> None:
    world = World(tmp_path / "data", WorkspaceIndex(tmp_path / "data", limits=Limits(max_files=3)))
    ws = world.workspace("one")
    for i in range(5):
        (ws / f"f{i}.txt").write_text("kumquat\n")
    result = await call(world.ctx("one", "uid-one"), "workspace.search", query="kumquat")
    assert len(result["hits"]) == 3
    assert result["index"]["files"] == 3 and result["index"]["skipped"]["overLimit"] == 2


async def test_results_are_bounded_and_scoped_to_a_folder(world: World) -> None:
    ws = world.workspace("one")
    (ws / "a" / "deep").mkdir(parents=True)
    (ws / "ab").mkdir()
    for folder in ("a", "a/deep", "ab", "."):
        for i in range(3):
            (ws / folder / f"n{i}.txt").write_text("nectarine\n")
    ctx = world.ctx("one", "uid-one")
    everything = await call(ctx, "workspace.search", query="nectarine", limit=50)
    assert everything["total"] == 12 and len(everything["hits"]) == 12
    assert len((await call(ctx, "workspace.search", query="nectarine", limit=2))["hits"]) == 2
    under_a = paths(await call(ctx, "workspace.search", query="nectarine", path="a", limit=50))
    assert sorted(under_a) == sorted(
        [f"a/n{i}.txt" for i in range(3)] + [f"a/deep/n{i}.txt" for i in range(3)]
    )
    with pytest.raises(Invalid):
        await call(ctx, "workspace.search", query="nectarine", limit=51)
    with pytest.raises(Invalid, match="no words"):
        await call(ctx, "workspace.search", query="AND -- !!")
    with pytest.raises(Forbidden):
        await call(ctx, "workspace.search", query="nectarine", path="../other")


async def test_a_sandbox_searches_its_own_workspace_only(world: World) -> None:
    (world.workspace("one") / "mine.txt").write_text("persimmon of one\n")
    (world.workspace("two") / "theirs.txt").write_text("persimmon of two\n")
    one = await call(world.ctx("one", "uid-one"), "workspace.search", query="persimmon")
    two = await call(world.ctx("two", "uid-two"), "workspace.search", query="persimmon")
    assert paths(one) == ["mine.txt"] and paths(two) == ["theirs.txt"]
    with pytest.raises(NotFound, match="no workspace"):
        await call(world.ctx("three", "uid-three"), "workspace.search", query="persimmon")
    assert "uid-three" not in await world.index.known()  # no index for a missing workspace


async def test_read_is_bounded(tmp_path: Path) -> None:
    world = World(
        tmp_path / "data", WorkspaceIndex(tmp_path / "data", limits=Limits(read_bytes=64))
    )
    ws = world.workspace("one")
    (ws / "lines.txt").write_text("".join(f"line {i}\n" for i in range(1, 21)))
    ctx = world.ctx("one", "uid-one")

    part = await call(ctx, "workspace.read", path="lines.txt", line=3, limit=2)
    assert part["content"] == "line 3\nline 4"
    assert (part["startLine"], part["endLine"], part["truncated"], part["nextLine"]) == (
        3,
        4,
        True,
        5,
    )
    tail = await call(ctx, "workspace.read", path="./lines.txt", line=19)
    assert tail["content"] == "line 19\nline 20" and not tail["truncated"]
    cut = await call(ctx, "workspace.read", path="lines.txt")  # 64 bytes: whole lines only
    assert cut["content"].split("\n") == [f"line {i}" for i in range(1, 10)]
    assert cut["truncated"] and cut["nextLine"] == 10
    with pytest.raises(Invalid, match="past its end"):
        await call(ctx, "workspace.read", path="lines.txt", line=22)
    with pytest.raises(Invalid):
        await call(ctx, "workspace.read", path="lines.txt", limit=0)

    (ws / "blob.bin").write_bytes(b"\0\1\2")
    assert (await call(ctx, "workspace.read", path="blob.bin"))["binary"] is True
    (ws / "sub").mkdir()
    listing = await call(ctx, "workspace.read", path="")
    assert [(e["name"], e["type"]) for e in listing["entries"]] == [
        ("blob.bin", "file"),
        ("lines.txt", "file"),
        ("sub", "dir"),
    ]
    with pytest.raises(NotFound):
        await call(ctx, "workspace.read", path="missing.txt")


async def test_read_never_leaves_the_workspace(world: World, tmp_path: Path) -> None:
    ws = world.workspace("one")
    other = world.workspace("two")
    (other / "theirs.txt").write_text("not yours\n")
    secret = tmp_path / "secret.txt"
    secret.write_text("server secret\n")
    (ws / "inside.txt").write_text("fine\n")
    os.symlink(secret, ws / "abs-link")
    os.symlink("../two/theirs.txt", ws / "rel-link")
    os.symlink(tmp_path, ws / "dir-link")
    os.symlink("inside.txt", ws / "ok-link")
    (ws / "nested").mkdir()
    os.symlink("../inside.txt", ws / "nested" / "up-link")
    ctx = world.ctx("one", "uid-one")

    for path in ("../two/theirs.txt", "nested/../../two/theirs.txt", ".."):
        with pytest.raises(Forbidden, match=r"'\.\.'"):
            await call(ctx, "workspace.read", path=path)
    with pytest.raises(Invalid, match="relative"):
        await call(ctx, "workspace.read", path=str(secret))
    for path in ("abs-link", "rel-link", "dir-link/secret.txt", "dir-link"):
        with pytest.raises(Forbidden, match="outside the workspace"):
            await call(ctx, "workspace.read", path=path)
    # a link that stays inside is followed, and the answer names where it led
    for path in ("ok-link", "nested/up-link"):
        followed = await call(ctx, "workspace.read", path=path)
        assert (followed["path"], followed["content"]) == ("inside.txt", "fine")


async def test_the_index_goes_with_its_sandbox(world: World) -> None:
    store = MemoryStore()
    live = await store.create(
        Sandbox(
            metadata=ObjectMeta(name="two", namespace="acme"),
            spec=SandboxSpec(
                owner_email="ada@acme.com", org_slug="acme", agent_catalogue=("aider",)
            ),
        )
    )
    (world.workspace("one") / "a.txt").write_text("tamarind\n")
    (world.workspace("two") / "b.txt").write_text("tamarind\n")
    await call(world.ctx("one", "uid-one"), "workspace.search", query="tamarind")
    await call(world.ctx("two", live.metadata.uid), "workspace.search", query="tamarind")
    gone, kept = world.index.folder("uid-one"), world.index.folder(live.metadata.uid)
    assert set(await world.index.known()) == {"uid-one", live.metadata.uid}

    # uid-one is no live sandbox (deleted while the server was down): the sweep removes it
    assert await SandboxReaper(store, [world.index]).sweep() == 1
    assert not gone.exists() and kept.is_dir()
    assert set(await world.index.known()) == {live.metadata.uid}
    # and its sandbox searches on, from a fresh index when it comes back
    again = await call(world.ctx("one", "uid-one"), "workspace.search", query="tamarind")
    assert paths(again) == ["a.txt"]


async def test_a_damaged_index_answers_why_and_is_built_again(world: World) -> None:
    ws = world.workspace("one")
    (ws / "a.txt").write_text("apricot\n")
    ctx = world.ctx("one", "uid-one")
    await call(ctx, "workspace.search", query="apricot")
    shutil.rmtree(world.index.folder("uid-one"))  # the index's files gone under it
    (ws / "b.txt").write_text("apricot jam\n")
    with pytest.raises(BackendUnavailable) as caught:
        await call(ctx, "workspace.search", query="apricot")
    assert caught.value.code == "index-unavailable"
    rebuilt = await call(ctx, "workspace.search", query="apricot")
    assert sorted(paths(rebuilt)) == ["a.txt", "b.txt"]


async def test_a_link_swapped_in_after_the_check_is_not_followed(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race an agent could try: ``link`` resolves inside the workspace when checked,
    and a folder on the resolved path is a link out by the time it is opened. The second
    open, again one component at a time without following links, refuses it."""
    ws = world.workspace("one")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("server secret\n")
    (ws / "inside.txt").write_text("fine\n")
    os.symlink("inside.txt", ws / "link")
    os.symlink(outside, ws / "swapped")  # what the checked path became meanwhile
    real = os.path.realpath
    base = real(ws)

    def resolved_then_swapped(path: Any) -> str:
        found = real(path)
        return os.path.join(base, "swapped", "secret.txt") if found != base else found

    monkeypatch.setattr(os.path, "realpath", resolved_then_swapped)
    with pytest.raises(Forbidden) as caught:
        await call(world.ctx("one", "uid-one"), "workspace.read", path="link")
    assert caught.value.code == "path-changed"


def test_kubernetes_mode_offers_secrets_but_not_the_workspace(tmp_path: Path) -> None:
    """``sandbox api``: the workspaces are volumes of the sandbox pods, not on this
    machine, so the workspace tools are not listed; the secrets are (the database)."""
    settings = load_settings(data_dir=tmp_path / "data", store="memory", cookie_secret="c" * 32)
    deps = build_api(settings, store=MemoryStore())
    caller = McpCaller("acme", "one", "uid-one", "sub-ada", "ada@acme.com", "acme", Grant(("*",)))
    listed = {t.name for t in deps.mcp.tools_for(caller)}
    assert {"secrets.list", "secrets.get", "secrets.set"} <= listed
    assert not {n for n in listed if n.startswith("workspace.")}
    assert deps.workspace_index is None and deps.sandbox_secrets is not None


async def test_a_file_is_found_by_its_name_once(world: World) -> None:
    ws = world.workspace("one")
    (ws / "docs").mkdir()
    (ws / "docs" / "quokka_guide.md").write_text("".join(f"line {i}\n" for i in range(100)))
    (ws / "other.md").write_text("a quokka appears on line one\n")
    found = await call(world.ctx("one", "uid-one"), "workspace.search", query="quokka")
    assert sorted((h["path"], h["startLine"]) for h in found["hits"]) == [
        ("docs/quokka_guide.md", 1),  # its name: the first block only, of three
        ("other.md", 1),
    ]


async def test_many_sandboxes_at_once_with_few_open_indexes(tmp_path: Path) -> None:
    """Six sandboxes searched twice each, all at once, with room for two open indexes:
    indexes close and open again under concurrent searches (one in use is never closed:
    a second one on its folder could not take the writer lock), every search succeeds and
    each sandbox finds its own file only."""
    world = World(
        tmp_path / "data", WorkspaceIndex(tmp_path / "data", limits=Limits(open_indexes=2))
    )
    names = [f"s{i}" for i in range(6)]
    for name in names:
        (world.workspace(name) / f"{name}.txt").write_text(f"guava {name}\n")

    async def one(name: str, round_: int) -> list[str]:
        (world.workspace(name) / f"{name}.txt").write_text(f"guava {name} round{round_}\n")
        ctx = world.ctx(name, f"uid-{name}")
        return paths(await call(ctx, "workspace.search", query=f"guava round{round_}"))

    for round_ in range(2):  # two searches of each sandbox at once
        results = await asyncio.gather(*(one(name, round_) for name in names * 2))
        assert results == [[f"{name}.txt"] for name in names * 2]


async def test_a_crash_during_a_commit_rebuilds_the_index(world: World) -> None:
    ws = world.workspace("one")
    for i in range(3):
        (ws / f"f{i}.txt").write_text("loquat\n")
    await call(world.ctx("one", "uid-one"), "workspace.search", query="loquat")
    manifest = world.index.folder("uid-one") / "manifest.json"
    body = json.loads(manifest.read_text())
    assert body["state"] == "clean" and len(body["files"]) == 3
    # as a crash between "pending" and the commit's end leaves it
    manifest.write_text(json.dumps({**body, "state": "pending"}))
    again = World(world.data_dir, WorkspaceIndex(world.data_dir))  # the next process
    found = await call(again.ctx("one", "uid-one"), "workspace.search", query="loquat")
    assert found["index"]["reindexed"] == 3  # built again, not trusted
    assert sorted(paths(found)) == ["f0.txt", "f1.txt", "f2.txt"]


async def test_files_beyond_the_bytes_limit_cost_no_commit(tmp_path: Path) -> None:
    limits = Limits(max_indexed_bytes=100)
    world = World(tmp_path / "data", WorkspaceIndex(tmp_path / "data", limits=limits))
    ws = world.workspace("one")
    for i in range(4):
        (ws / f"f{i}.txt").write_text(f"lychee {i} " + "x" * 30 + "\n")  # 41 bytes each
    ctx = world.ctx("one", "uid-one")
    first = await call(ctx, "workspace.search", query="lychee")
    assert sorted(paths(first)) == ["f0.txt", "f1.txt"]
    assert first["index"]["skipped"]["overLimit"] == 2
    meta = world.index.folder("uid-one") / "meta.json"
    committed = meta.stat().st_mtime_ns
    again = await call(ctx, "workspace.search", query="lychee")
    assert again["index"]["reindexed"] == 0 and again["index"]["skipped"]["overLimit"] == 2
    assert meta.stat().st_mtime_ns == committed  # nothing written for the left-out files
    (ws / "f0.txt").unlink()  # room again: the next file in the walk's order comes in
    third = await call(ctx, "workspace.search", query="lychee")
    assert sorted(paths(third)) == ["f1.txt", "f2.txt"]


async def test_gitignored_files_are_left_out_as_git_would(world: World) -> None:
    ws = world.workspace("one")
    repo = ws / "site"
    (repo / "build").mkdir(parents=True)
    (repo / "src" / "gen").mkdir(parents=True)
    (repo / ".gitignore").write_text("build/\n*.log\n!keep.log\n")
    (repo / "src" / ".gitignore").write_text("gen/\n!debug.log\n")
    (repo / "build" / "out.js").write_text("pomelo built\n")
    (repo / "app.log").write_text("pomelo logged\n")
    (repo / "keep.log").write_text("pomelo kept\n")
    (repo / "src" / "main.py").write_text("pomelo = 1\n")
    (repo / "src" / "gen" / "api.py").write_text("pomelo generated\n")
    (repo / "src" / "debug.log").write_text("pomelo debug\n")  # taken back by src/
    (ws / "app.log").write_text("pomelo outside the repo\n")  # its rules stop at site/
    ctx = world.ctx("one", "uid-one")

    found = await call(ctx, "workspace.search", query="pomelo", limit=50)
    assert sorted(paths(found)) == [
        "app.log",
        "site/keep.log",
        "site/src/debug.log",
        "site/src/main.py",
    ]
    assert found["index"]["skipped"]["gitignored"] == 3  # build/, app.log, src/gen/

    # the rules change: what they no longer leave out comes in, nothing else is read again
    (repo / ".gitignore").write_text("build/\n")
    changed = await call(ctx, "workspace.search", query="pomelo", limit=50)
    assert "site/app.log" in paths(changed) and "site/build/out.js" not in paths(changed)
    assert changed["index"]["reindexed"] == 2  # app.log and the .gitignore itself
