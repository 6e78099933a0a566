"""Stand-ins for `node` and `npm`, on a PATH a test controls.

The installer finds Node.js and npm on the PATH it is given; these scripts let the
tests decide what that Node reports (missing, too old, new enough) and make an npm
install fast and steerable without the registry: the fake npm prints progress, can wait
for a gate file (so a test sees an install *while it runs*), fails for versions
containing ``nope`` the way npm does, and otherwise lays out a prefix as npm would
(``node_modules/<pkg>/package.json`` and ``node_modules/.bin/<binary>``, a script that
answers ``--version``). Real installs are tested separately against the registry.
"""

from __future__ import annotations

import os
import stat
import sys
import textwrap
from pathlib import Path

# the built-in npm agents' packages and their commands
BINARIES = {
    "opencode-ai": "opencode",
    "@qwen-code/qwen-code": "qwen",
    "@anthropic-ai/claude-code": "claude",
}

FAKE_NPM = textwrap.dedent(
    """\
    #!{python}
    import json, os, sys, time
    from pathlib import Path

    BINARIES = {binaries!r}
    args = sys.argv[1:]
    prefix = Path(args[args.index("--prefix") + 1])
    spec = args[-1]
    name, _, version = spec.rpartition("@")
    log = os.environ.get("FAKE_NPM_LOG")
    if log:
        seen = {{k: v for k, v in os.environ.items() if k.lower().startswith("npm_config")}}
        with open(log, "a") as out:
            out.write(json.dumps({{"args": args, "env": seen, "cwd": os.getcwd()}}) + "\\n")
    print(f"fetching {{spec}}", flush=True)
    gate = os.environ.get("FAKE_NPM_GATE")
    if gate:
        deadline = time.monotonic() + 60
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.02)
    if "nope" in version:
        print(f"npm error code ETARGET", flush=True)
        print(f"npm error notarget No matching version found for {{spec}}.", flush=True)
        sys.exit(1)
    package = prefix / "node_modules" / name
    package.mkdir(parents=True)
    (package / "package.json").write_text(json.dumps({{"name": name, "version": version}}))
    binary = package / "cli.sh"
    binary.write_text(f"#!/bin/sh\\necho '{{name}} {{version}}'\\n")
    binary.chmod(0o755)
    bin_dir = prefix / "node_modules" / ".bin"
    bin_dir.mkdir()
    os.symlink(os.path.relpath(binary, bin_dir), bin_dir / BINARIES[name])
    print("added 1 package in 0s", flush=True)
    """
)


def _script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def fake_node(bin_dir: Path, version: str | None = "v20.11.1") -> Path:
    """A `node` answering ``version`` to --version (None: no node at all)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    if version is None:
        (bin_dir / "node").unlink(missing_ok=True)
    else:
        _script(bin_dir / "node", f"#!/bin/sh\necho '{version}'\n")
    return bin_dir


def fake_npm(bin_dir: Path, *, node: str | None = "v20.11.1") -> Path:
    """A bin dir with a fake `npm` and `node`; put it first on the installer's PATH."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    _script(bin_dir / "npm", FAKE_NPM.format(python=sys.executable, binaries=BINARIES))
    fake_node(bin_dir, node)
    return bin_dir


def path_with(bin_dir: Path) -> str:
    """``bin_dir`` first, then the test process's PATH."""
    return os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")])
