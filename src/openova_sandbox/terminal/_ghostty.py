"""The few libghostty-vt calls the screen model makes, over the library pyghostty ships.

Why not ``import pyghostty``: its binding declares the whole C API (3,500 lines) with
cffi at import, which costs ~0.45 s and a few MiB in every process that serves
terminals (the per-sandbox ``pty-server`` is meant to stay small). The declarations
are in :mod:`._ghostty_decls`, parsed ahead of time into :mod:`._ghostty_ffi` (so no C
parser is loaded at run time either); ``tests/unit/terminal/test_ghostty_abi.py``
checks every size, offset and constant against pyghostty's own declarations, so an
upgrade that changes the ABI fails there.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from ._ghostty_ffi import ffi as ffi  # re-exported: the screen model uses it

# enum values (pyghostty 0.1.x headers), checked against pyghostty by the ABI test
CONSTANTS = {
    "GHOSTTY_FORMATTER_FORMAT_PLAIN": 0,
    "GHOSTTY_FORMATTER_FORMAT_VT": 1,
    "GHOSTTY_TERMINAL_OPT_SCROLLBACK_MAX_BYTES": 27,
    "GHOSTTY_TERMINAL_OPT_SCROLLBACK_MAX_LINES": 28,
    "GHOSTTY_TERMINAL_OPT_MODE": 34,
    "GHOSTTY_TERMINAL_OPT_TITLE_CHANGED": 5,
    "GHOSTTY_TERMINAL_DATA_COLS": 1,
    "GHOSTTY_TERMINAL_DATA_ROWS": 2,
    "GHOSTTY_TERMINAL_DATA_CURSOR_X": 3,
    "GHOSTTY_TERMINAL_DATA_CURSOR_Y": 4,
    "GHOSTTY_TERMINAL_DATA_ACTIVE_SCREEN": 6,
    "GHOSTTY_TERMINAL_DATA_TITLE": 12,
    "GHOSTTY_TERMINAL_DATA_TOTAL_ROWS": 14,
    "GHOSTTY_TERMINAL_DATA_SCROLLBACK_ROWS": 15,
    "GHOSTTY_POINT_TAG_SCREEN": 2,
    "GHOSTTY_CELL_DATA_CONTENT_TAG": 2,
    "GHOSTTY_CELL_DATA_WIDE": 3,
    "GHOSTTY_CELL_DATA_HAS_TEXT": 4,
    "GHOSTTY_CELL_DATA_HAS_STYLING": 5,
    "GHOSTTY_CELL_CONTENT_CODEPOINT_GRAPHEME": 1,
    "GHOSTTY_CELL_WIDE_SPACER_TAIL": 2,
    "GHOSTTY_CELL_WIDE_SPACER_HEAD": 3,
    "GHOSTTY_OUT_OF_SPACE": -3,
    "GHOSTTY_TERMINAL_DATA_MODE": 37,
    "GHOSTTY_TERMINAL_DATA_VT_GROUND": 38,
    "GHOSTTY_TERMINAL_SCREEN_ALTERNATE": 1,
    "GHOSTTY_RENDER_STATE_DATA_CURSOR_VISUAL_STYLE": 10,
    "GHOSTTY_RENDER_STATE_DATA_CURSOR_BLINKING": 12,
    "GHOSTTY_RENDER_STATE_CURSOR_VISUAL_STYLE_BAR": 0,
    "GHOSTTY_RENDER_STATE_CURSOR_VISUAL_STYLE_BLOCK": 1,
    "GHOSTTY_RENDER_STATE_CURSOR_VISUAL_STYLE_UNDERLINE": 2,
    "GHOSTTY_RENDER_STATE_CURSOR_VISUAL_STYLE_BLOCK_HOLLOW": 3,
}

FORMAT_PLAIN: int = CONSTANTS["GHOSTTY_FORMATTER_FORMAT_PLAIN"]
FORMAT_VT: int = CONSTANTS["GHOSTTY_FORMATTER_FORMAT_VT"]
OPT_SCROLLBACK_MAX_BYTES: int = CONSTANTS["GHOSTTY_TERMINAL_OPT_SCROLLBACK_MAX_BYTES"]
OPT_SCROLLBACK_MAX_LINES: int = CONSTANTS["GHOSTTY_TERMINAL_OPT_SCROLLBACK_MAX_LINES"]
OPT_TITLE_CHANGED: int = CONSTANTS["GHOSTTY_TERMINAL_OPT_TITLE_CHANGED"]
OPT_MODE: int = CONSTANTS["GHOSTTY_TERMINAL_OPT_MODE"]
DATA_COLS: int = CONSTANTS["GHOSTTY_TERMINAL_DATA_COLS"]
DATA_ROWS: int = CONSTANTS["GHOSTTY_TERMINAL_DATA_ROWS"]
DATA_CURSOR_X: int = CONSTANTS["GHOSTTY_TERMINAL_DATA_CURSOR_X"]
DATA_CURSOR_Y: int = CONSTANTS["GHOSTTY_TERMINAL_DATA_CURSOR_Y"]
DATA_ACTIVE_SCREEN: int = CONSTANTS["GHOSTTY_TERMINAL_DATA_ACTIVE_SCREEN"]
DATA_TITLE: int = CONSTANTS["GHOSTTY_TERMINAL_DATA_TITLE"]
DATA_TOTAL_ROWS: int = CONSTANTS["GHOSTTY_TERMINAL_DATA_TOTAL_ROWS"]
DATA_SCROLLBACK_ROWS: int = CONSTANTS["GHOSTTY_TERMINAL_DATA_SCROLLBACK_ROWS"]
POINT_TAG_SCREEN: int = CONSTANTS["GHOSTTY_POINT_TAG_SCREEN"]
CELL_CONTENT_TAG: int = CONSTANTS["GHOSTTY_CELL_DATA_CONTENT_TAG"]
CELL_WIDE: int = CONSTANTS["GHOSTTY_CELL_DATA_WIDE"]
CELL_HAS_TEXT: int = CONSTANTS["GHOSTTY_CELL_DATA_HAS_TEXT"]
CELL_HAS_STYLING: int = CONSTANTS["GHOSTTY_CELL_DATA_HAS_STYLING"]
CONTENT_GRAPHEME: int = CONSTANTS["GHOSTTY_CELL_CONTENT_CODEPOINT_GRAPHEME"]
WIDE_SPACER_TAIL: int = CONSTANTS["GHOSTTY_CELL_WIDE_SPACER_TAIL"]
WIDE_SPACER_HEAD: int = CONSTANTS["GHOSTTY_CELL_WIDE_SPACER_HEAD"]
# The packed cell (GhosttyCell, a uint64) as libghostty lays it out: content tag (2 bits),
# code point or colour (24), style id (16), wide (2), then flags. A never-written cell is
# all zero below the wide bits. The snapshot reads rows of cells this way (one native call
# a cell instead of three); the ABI test checks it against ghostty_cell_get.
CELL_WIDE_SHIFT = 42
CELL_BLANK_MASK = (1 << CELL_WIDE_SHIFT) - 1
OUT_OF_SPACE: int = CONSTANTS["GHOSTTY_OUT_OF_SPACE"]
DATA_MODE: int = CONSTANTS["GHOSTTY_TERMINAL_DATA_MODE"]
DATA_VT_GROUND: int = CONSTANTS["GHOSTTY_TERMINAL_DATA_VT_GROUND"]
SCREEN_ALTERNATE: int = CONSTANTS["GHOSTTY_TERMINAL_SCREEN_ALTERNATE"]
RS_CURSOR_VISUAL_STYLE: int = CONSTANTS["GHOSTTY_RENDER_STATE_DATA_CURSOR_VISUAL_STYLE"]
RS_CURSOR_BLINKING: int = CONSTANTS["GHOSTTY_RENDER_STATE_DATA_CURSOR_BLINKING"]
STYLE_BAR: int = CONSTANTS["GHOSTTY_RENDER_STATE_CURSOR_VISUAL_STYLE_BAR"]
STYLE_BLOCK: int = CONSTANTS["GHOSTTY_RENDER_STATE_CURSOR_VISUAL_STYLE_BLOCK"]
STYLE_UNDERLINE: int = CONSTANTS["GHOSTTY_RENDER_STATE_CURSOR_VISUAL_STYLE_UNDERLINE"]
STYLE_BLOCK_HOLLOW: int = CONSTANTS["GHOSTTY_RENDER_STATE_CURSOR_VISUAL_STYLE_BLOCK_HOLLOW"]


def library_path() -> str:
    """The libghostty-vt pyghostty ships (``PYGHOSTTY_LIB`` overrides, as for pyghostty)."""
    override = os.environ.get("PYGHOSTTY_LIB")
    if override:
        return override
    spec = importlib.util.find_spec("pyghostty")  # locates the package, runs none of it
    if spec is None or not spec.submodule_search_locations:
        raise OSError("pyghostty is not installed: the screen model needs its libghostty-vt")
    folder = Path(next(iter(spec.submodule_search_locations))) / "_lib"
    for suffix in (".so", ".dylib", ".dll"):
        candidate = folder / f"libghostty-vt{suffix}"
        if candidate.exists():
            return str(candidate)
    raise OSError(f"libghostty-vt not found in {folder}")


lib: Any = ffi.dlopen(library_path())
