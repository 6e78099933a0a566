"""What a browser viewer shows: terminal output rendered by the console's own xterm.js.

``render.mjs`` (beside this file) runs ``@xterm/headless`` — the same major version as
``web/``'s ``@xterm/xterm`` (6), pinned in ``package.json`` with its lock — and prints
every visible cell (characters, width, colours, attributes), the cursor, the active
buffer (normal or alternate), the input modes (application cursor keys/keypad,
bracketed paste, mouse tracking mode and encoding, focus reporting, synchronized
output, ...), the title and the scrolling region, plus what xterm.js itself answered
(the replies a browser would send back as input: answers to queries).

The Node packages are installed the way the agent installs are (support/agents_cache.py):
the first time a test asks for them, with npm, whose download cache (``~/.npm``)
persists, so a warm machine needs no network; they stay in ``node_modules`` here
(ignored by git) for later sessions. ``npm ci`` from the lock: exact versions.
When Node.js is missing the test is skipped, or fails under ``SANDBOX_TEST_REQUIRE_ALL=1``.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support.agents_cache import node_problem, skip_or_fail

HERE = Path(__file__).resolve().parent
STAMP = HERE / "node_modules" / ".installed-from-lock"
MODES = (
    "applicationCursorKeysMode",
    "applicationKeypadMode",
    "bracketedPasteMode",
    "mouseTrackingMode",
    "mouseEncoding",
    "sendFocusMode",
    "synchronizedOutputMode",
    "originMode",
    "insertMode",
    "wraparoundMode",
)


def ensure_installed() -> str:
    """``node`` with the pinned packages installed here (once); skips when impossible."""
    problem = node_problem()
    if problem:
        skip_or_fail(problem)
    lock = HERE / "package-lock.json"
    with open(HERE / ".install.lock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        if not STAMP.exists() or STAMP.read_text() != lock.read_text():
            npm = shutil.which("npm")
            assert npm is not None
            out = subprocess.run(
                [npm, "ci", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=HERE,
                capture_output=True,
                text=True,
                timeout=300,
            )
            if out.returncode != 0:
                skip_or_fail(f"npm ci for the xterm renderer failed: {out.stderr[-2000:]}")
            STAMP.write_text(lock.read_text())
    node = shutil.which("node")
    assert node is not None
    return node


RESET = "reset"  # a chunk: the viewer resets its terminal (before a sandbox.v2 snapshot)
Chunk = bytes | tuple[int, int] | str  # output, a resize to (cols, rows), or RESET


@dataclass(frozen=True)
class Screen:
    """One rendered screen (see render.mjs for the fields)."""

    raw: dict[str, Any]

    @property
    def lines(self) -> list[str]:
        return list(self.raw["lines"])

    @property
    def cells(self) -> list[list[list[Any]]]:
        return list(self.raw["cells"])

    @property
    def modes(self) -> dict[str, Any]:
        return {name: self.raw["modes"][name] for name in MODES}

    @property
    def buffer(self) -> str:
        return str(self.raw["buffer"])

    @property
    def cursor(self) -> dict[str, Any]:
        return dict(self.raw["cursor"])

    @property
    def replies(self) -> bytes:
        return base64.b64decode(self.raw["replies"])

    @property
    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.lines)

    def paste(self, text: str) -> bytes:
        """The bytes xterm.js sends for a paste of ``text`` (its prepareTextForTerminal
        and bracketTextForPaste): newlines become CR, bracketed when the mode is on."""
        body = text.replace("\r\n", "\r").replace("\n", "\r")
        if self.raw["modes"]["bracketedPasteMode"]:
            body = f"\x1b[200~{body}\x1b[201~"
        return body.encode()


def render(
    cols: int,
    rows: int,
    chunks: Iterable[Chunk],
    *,
    scrollback: int = 1000,
    serialize: bool = False,
) -> Screen:
    """Write ``chunks`` (in order) into a fresh xterm.js of ``cols`` x ``rows``."""
    node = ensure_installed()
    job = {
        "cols": cols,
        "rows": rows,
        "scrollback": scrollback,
        "serialize": serialize,
        "chunks": [
            base64.b64encode(c).decode()
            if isinstance(c, bytes)
            else {"reset": True}
            if c == RESET
            else {"resize": list(c)}
            for c in chunks
        ],
    }
    out = subprocess.run(
        [node, str(HERE / "render.mjs")],
        input=json.dumps(job).encode(),
        capture_output=True,
        timeout=120,
        env={**os.environ, "NODE_PATH": str(HERE / "node_modules")},
        cwd=HERE,
    )
    if out.returncode != 0:
        raise RuntimeError(f"render.mjs failed: {out.stderr.decode(errors='replace')[-3000:]}")
    return Screen(json.loads(out.stdout))


def differences(expected: Screen, got: Screen, *, limit: int = 40) -> list[str]:
    """Every way ``got`` differs from ``expected`` (size, buffer, modes, cursor, title,
    scrolling region, then cell by cell), at most ``limit`` cell lines; [] when equal."""
    out: list[str] = []
    for key in ("cols", "rows", "buffer", "title", "scroll"):
        if expected.raw[key] != got.raw[key]:
            out.append(f"{key}: expected {expected.raw[key]!r}, got {got.raw[key]!r}")
    for name in MODES:
        if expected.modes[name] != got.modes[name]:
            out.append(f"mode {name}: expected {expected.modes[name]!r}, got {got.modes[name]!r}")
    if expected.cursor != got.cursor:
        out.append(f"cursor: expected {expected.cursor}, got {got.cursor}")
    if (expected.raw["cols"], expected.raw["rows"]) != (got.raw["cols"], got.raw["rows"]):
        return out
    cells = 0
    for y, (want_row, got_row) in enumerate(zip(expected.cells, got.cells, strict=True)):
        for x, (want, have) in enumerate(zip(want_row, got_row, strict=True)):
            if want != have:
                cells += 1
                if cells <= limit:
                    out.append(f"cell ({x},{y}): expected {want}, got {have}")
    if cells:
        total = expected.raw["cols"] * expected.raw["rows"]
        out.append(f"{cells} of {total} cells differ ({100 * (total - cells) / total:.1f} % equal)")
    return out


def side_by_side(expected: Screen, got: Screen, *, limit: int = 12) -> str:
    """The rows whose text differs, both versions (for failure messages)."""
    lines = []
    for y in range(max(len(expected.lines), len(got.lines))):
        a = expected.lines[y] if y < len(expected.lines) else ""
        b = got.lines[y] if y < len(got.lines) else ""
        if a != b and len(lines) < limit:
            lines.append(f"row {y:3} live |{a}|\n        fresh|{b}|")
    return "\n".join(lines)


def available() -> None:
    """For a fixture: install now (or skip/fail) so the first render is not slow."""
    ensure_installed()
    if not (HERE / "node_modules" / "@xterm" / "headless").is_dir():
        pytest.fail("@xterm/headless is not installed for the renderer")
