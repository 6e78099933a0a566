"""Where managed agents live and how a binary is looked up: bin dir first, then PATH."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from openova_sandbox.agents.paths import (
    MANIFEST,
    AgentPaths,
    Manifest,
    agent_search_path,
    current_install,
    locate,
)
from openova_sandbox.domain.catalogue import (
    SOURCE_BUILTIN,
    SOURCE_MANAGED,
    SOURCE_OVERRIDE,
    load_catalogue,
)

OPENCODE = load_catalogue(None).get("opencode")


def executable(path: Path, text: str = "#!/bin/sh\necho 1.0.0\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def managed_install(data_dir: Path, slug: str = "opencode", binary: str = "opencode") -> Path:
    """An install dir with a manifest and the bin link pointing into it."""
    paths = AgentPaths.of(data_dir)
    install = paths.npm / f"{slug}-0123abcd"
    entry = executable(install / "node_modules" / ".bin" / binary)
    manifest = Manifest(slug, "npm", "opencode-ai", "1.18.33", binary, "node_modules/.bin/x")
    (install / MANIFEST).write_text(manifest.to_json())
    paths.bin.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(entry, paths.bin), paths.link(binary))
    return install


def test_the_layout_is_under_the_data_dir_and_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = AgentPaths.of("data")
    assert paths.root == tmp_path / "data" / "agents"
    assert paths.bin == paths.root / "bin"
    assert paths.npm == paths.root / "npm"
    assert paths.venvs == paths.root / "venvs"
    assert paths.link("qwen") == paths.root / "bin" / "qwen"


def test_search_path_puts_the_bin_dir_first(tmp_path):
    bin_dir = str(tmp_path / "agents" / "bin")
    assert agent_search_path(tmp_path, "/usr/bin:/bin") == f"{bin_dir}:/usr/bin:/bin"
    # not twice, and empty entries (the current directory!) are dropped
    assert agent_search_path(tmp_path, f"{bin_dir}::/usr/bin:") == f"{bin_dir}:/usr/bin"
    assert agent_search_path(tmp_path, "") == bin_dir


def test_search_path_defaults_to_the_process_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/opt/x/bin:/usr/bin")
    assert agent_search_path(tmp_path).endswith(":/opt/x/bin:/usr/bin")


def test_locate_nowhere(tmp_path):
    found = locate(OPENCODE, tmp_path, str(tmp_path / "empty"))
    assert (found.path, found.source, found.installed) == (None, SOURCE_BUILTIN, False)


def test_locate_on_the_server_path_keeps_the_rows_source(tmp_path):
    on_path = executable(tmp_path / "usr" / "opencode")
    found = locate(OPENCODE, tmp_path / "data", str(tmp_path / "usr"))
    assert (found.path, found.source) == (str(on_path), SOURCE_BUILTIN)
    override = replace(OPENCODE, source=SOURCE_OVERRIDE)
    assert locate(override, tmp_path / "data", str(tmp_path / "usr")).source == SOURCE_OVERRIDE


def test_a_managed_install_wins_over_the_path(tmp_path):
    executable(tmp_path / "usr" / "opencode")
    managed_install(tmp_path / "data")
    found = locate(OPENCODE, tmp_path / "data", str(tmp_path / "usr"))
    assert found.source == SOURCE_MANAGED
    assert found.path == str(tmp_path / "data" / "agents" / "bin" / "opencode")
    manifest = current_install(tmp_path / "data", OPENCODE)
    assert manifest is not None
    assert (manifest.slug, manifest.version) == ("opencode", "1.18.33")


def test_a_dangling_link_is_not_installed(tmp_path):
    install = managed_install(tmp_path / "data")
    (install / "node_modules" / ".bin" / "opencode").unlink()
    executable(tmp_path / "usr" / "opencode")
    found = locate(OPENCODE, tmp_path / "data", str(tmp_path / "usr"))
    assert found.source == SOURCE_BUILTIN  # falls through to the PATH
    assert found.path == str(tmp_path / "usr" / "opencode")


def test_a_link_pointing_elsewhere_is_not_a_managed_install(tmp_path):
    paths = AgentPaths.of(tmp_path / "data")
    paths.bin.mkdir(parents=True)
    os.symlink(executable(tmp_path / "elsewhere" / "opencode"), paths.link("opencode"))
    assert paths.current_dir("opencode") is None
    assert current_install(tmp_path / "data", OPENCODE) is None
    # it is still found, in the bin dir (an operator's own link there counts as managed)
    assert locate(OPENCODE, tmp_path / "data", "").source == SOURCE_MANAGED


def test_an_install_of_another_slug_is_not_this_ones(tmp_path):
    managed_install(tmp_path / "data", slug="other")
    assert current_install(tmp_path / "data", OPENCODE) is None


def test_install_dirs_match_the_slug_exactly(tmp_path):
    paths = AgentPaths.of(tmp_path)
    for name in ("claude-code-0123abcd", "claude-0123abcd", "claude-xyz", "claude-0123abcd0"):
        (paths.npm / name).mkdir(parents=True)
    (paths.venvs / "claude-89abcdef").mkdir(parents=True)
    assert [p.name for p in paths.install_dirs("claude")] == [
        "claude-0123abcd",
        "claude-89abcdef",
    ]
    assert [p.name for p in paths.install_dirs("claude-code")] == ["claude-code-0123abcd"]
