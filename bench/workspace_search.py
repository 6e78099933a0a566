"""Workspace search bench: what does ``workspace.search`` cost as a workspace grows and
changes? (docs/mcp.md, "Workspace search")

One bounded run in this process, on the service the tool calls
(``services.workspace_index.WorkspaceIndex``; the MCP call's own cost is
``bench/mcp_calls.py``'s): a synthetic workspace of ``--files`` text files of 60 lines
(words from a 5,000-word vocabulary) in 100 x 7 folders under a 21-pattern
``.gitignore``, then

1. the first search, which indexes everything;
2. searches with nothing changed: the walk that compares every file's (mtime, size,
   inode) with the manifest, then the query;
3. searches after one file changed: the walk, that file indexed again, the commit;
4. the query alone (no walk), for comparison;

and the index's size on disk and this process's peak RSS.

    .venv/bin/python bench/workspace_search.py [--files 10000] [--samples 20]

Not a test: the figures depend on the machine and its load; nothing asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from common import Row, pct, run_header, table
from openova_sandbox.controller.local import workspace_path
from openova_sandbox.services.workspace_index import WorkspaceIndex

WORDS = [f"w{i}" for i in range(5000)] + ["def", "return", "class", "import", "self"]
NS, NAME, UID = "bench", "big", "uid-bench"


# a repository's usual .gitignore: every file is matched against it once, then only
# when it or the file changes
GITIGNORE = "\n".join(
    ["*.pyc", "*.log", "*.tmp", "dist/", "build/", ".env", "coverage/", "*.egg-info/"]
    + [f"generated_{i}/" for i in range(12)]
    + ["!keep.log"]
)


def make_workspace(ws: Path, files: int) -> int:
    rnd = random.Random(1)
    total = 0
    (ws / ".gitignore").write_text(GITIGNORE + "\n")
    for i in range(files):
        folder = ws / f"pkg{i % 100}" / f"mod{i % 7}"
        folder.mkdir(parents=True, exist_ok=True)
        text = "".join(" ".join(rnd.choice(WORDS) for _ in range(8)) + "\n" for _ in range(60))
        (folder / f"f{i}.py").write_text(text)
        total += len(text)
    return total


async def timed(samples: int, step: Callable[[int], Awaitable[None]]) -> list[float]:
    out = []
    for k in range(samples):
        started = time.perf_counter()
        await step(k)
        out.append(time.perf_counter() - started)
    return out


def ms(values: list[float]) -> str:
    return f"p50 {pct(values, 0.5) * 1000:.1f} ms, p95 {pct(values, 0.95) * 1000:.1f} ms"


async def main(files: int, samples: int) -> None:
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="bench-ws-"))
    try:
        ws = workspace_path(root, NS, NAME)
        ws.mkdir(parents=True)
        text_bytes = make_workspace(ws, files)
        index = WorkspaceIndex(root)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

        t = time.perf_counter()
        first = await index.search(NS, NAME, UID, "w42")
        first_s = time.perf_counter() - t

        async def unchanged(_k: int) -> None:
            await index.search(NS, NAME, UID, "w42 w17")

        async def one_changed(k: int) -> None:
            (ws / "pkg1" / "mod1" / "edited.py").write_text(f"zebra{k} edited\n")
            found = await index.search(NS, NAME, UID, f"zebra{k}")
            assert found["hits"], found

        entry = await index._entry(UID)
        entry.users -= 1

        async def query_only(_k: int) -> None:
            await asyncio.to_thread(index._query, entry, "w42 w17", 10, [])

        still = await timed(samples, unchanged)
        changed = await timed(samples, one_changed)
        query = await timed(samples, query_only)
        disk = sum(f.stat().st_size for f in index.folder(UID).rglob("*") if f.is_file())
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        rows: list[Row] = [
            ("workspace", f"{files} files, {text_bytes / 1e6:.1f} MB of text", "", None),
            ("first search (indexes everything)", f"{first_s:.2f} s", "", None),
            ("search, nothing changed", ms(still), "", None),
            ("search after one file changed", ms(changed), "", None),
            ("the query alone", ms(query), "", None),
            ("index on disk", f"{disk / 1e6:.1f} MB", "", None),
            (
                "peak RSS (before indexing)",
                f"{rss / 1e6:.0f} MB ({rss_before / 1e6:.0f} MB)",
                "",
                None,
            ),
        ]
        assert first["index"]["files"] == files + 1  # and the .gitignore
        print(run_header("bench/workspace_search.py", started))
        print()
        print(table(rows))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.files, args.samples))
