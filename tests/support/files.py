"""Looking through what a test left on disk."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def holding(roots: list[Path], needle: str) -> list[str]:
    """The files under ``roots`` that contain ``needle``."""
    found = []
    for root in roots:
        for folder, _, names in os.walk(root):
            for name in names:
                path = Path(folder, name)
                with contextlib.suppress(OSError):
                    if needle.encode() in path.read_bytes():
                        found.append(str(path))
    return found
