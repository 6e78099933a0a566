"""The C declarations of the libghostty-vt calls the screen model makes, and the
generator of :mod:`._ghostty_ffi` from them.

Why a generated module: cffi parses C declarations with pycparser, which costs the
per-sandbox ``pty-server`` ~1 MiB of RSS at start (issue 10's RSS target). cffi's
*out-of-line ABI mode* parses them once, here, and writes a Python module holding the
parsed types (``_ghostty_ffi.py``, committed); at run time that module builds the FFI
from them with ``_cffi_backend`` alone. ``tests/unit/terminal/test_ghostty_abi.py``
regenerates it and fails when the committed file differs, so these declarations and the
module cannot drift apart. Regenerate with ``python -m openova_sandbox.terminal._ghostty_decls``.

The declarations are copied from pyghostty's ``_cdef.py`` (same library, same ABI;
enums are ``int``); the ABI test checks every size, offset and constant against
pyghostty's own declarations, so an upgrade that changes the ABI fails there.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

MODULE = "openova_sandbox.terminal._ghostty_ffi"
TARGET = Path(__file__).with_name("_ghostty_ffi.py")
HEADER = (
    "# Generated from CDEF in _ghostty_decls.py by cffi (out-of-line ABI mode): do not\n"
    "# edit; regenerate with `python -m openova_sandbox.terminal._ghostty_decls`.\n"
    "# mypy: ignore-errors\n"
)

CDEF = """
typedef int GhosttyResult;
typedef struct GhosttyTerminalImpl* GhosttyTerminal;
typedef struct GhosttyFormatterImpl* GhosttyFormatter;
typedef struct GhosttyRenderStateImpl* GhosttyRenderState;
typedef uint16_t GhosttyMode;
typedef struct { const uint8_t* ptr; size_t len; } GhosttyString;
typedef struct { GhosttyMode mode; bool value; } GhosttyTerminalModeConfig;
typedef struct {
  size_t size; bool cursor; bool style; bool hyperlink; bool protection;
  bool kitty_keyboard; bool charsets;
} GhosttyFormatterScreenExtra;
typedef struct {
  size_t size; bool palette; bool modes; bool scrolling_region; bool tabstops; bool pwd;
  bool keyboard; GhosttyFormatterScreenExtra screen;
} GhosttyFormatterTerminalExtra;
typedef struct { size_t size; void *node; uint16_t x; uint16_t y; } GhosttyGridRef;
typedef struct {
  size_t size; GhosttyGridRef start; GhosttyGridRef end; bool rectangle;
} GhosttySelection;
typedef struct {
  size_t size; int emit; bool unwrap; bool trim; GhosttyFormatterTerminalExtra extra;
  const GhosttySelection *selection;
} GhosttyFormatterTerminalOptions;
/* GhosttyPoint is a tagged union passed by value, which ABI-mode cffi cannot pass; a
   struct of the same size and alignment has the same calling convention (pyghostty
   uses the same twin; the ABI test compares it with the real type) */
typedef struct { uint16_t x; uint32_t y; uint64_t _pad; } GhosttyPointValueS;
typedef struct { int tag; GhosttyPointValueS value; } GhosttyPointS;

GhosttyResult ghostty_terminal_new(const void* allocator, GhosttyTerminal* terminal,
                                   uint16_t cols, uint16_t rows);
void ghostty_terminal_free(GhosttyTerminal terminal);
GhosttyResult ghostty_terminal_resize(GhosttyTerminal terminal, uint16_t cols, uint16_t rows,
                                      uint32_t cell_width_px, uint32_t cell_height_px);
GhosttyResult ghostty_terminal_set(GhosttyTerminal terminal, int option, const void* value);
GhosttyResult ghostty_terminal_get(GhosttyTerminal terminal, int data, void *out);
void ghostty_terminal_vt_write(GhosttyTerminal terminal, const uint8_t* data, size_t len);
typedef void (*GhosttyTerminalTitleChangedFn)(GhosttyTerminal terminal, void* userdata);
GhosttyResult ghostty_terminal_grid_ref(GhosttyTerminal terminal, GhosttyPointS point,
                                        GhosttyGridRef *out_ref);
typedef uint64_t GhosttyCell;
GhosttyResult ghostty_grid_ref_cell(const GhosttyGridRef *ref, GhosttyCell *out_cell);
GhosttyResult ghostty_grid_ref_graphemes(const GhosttyGridRef *ref, uint32_t *buf,
                                         size_t buf_len, size_t *out_len);
GhosttyResult ghostty_cell_get_multi(GhosttyCell cell, size_t count, const int* keys,
                                     void** values, size_t* out_written);

GhosttyResult ghostty_formatter_terminal_new(const void* allocator, GhosttyFormatter* formatter,
                                             GhosttyTerminal terminal,
                                             GhosttyFormatterTerminalOptions options);
GhosttyResult ghostty_formatter_format_buf(GhosttyFormatter formatter, uint8_t* buf,
                                           size_t buf_len, size_t* out_written);
void ghostty_formatter_free(GhosttyFormatter formatter);

GhosttyResult ghostty_render_state_new(const void* allocator, GhosttyRenderState* state);
void ghostty_render_state_free(GhosttyRenderState state);
GhosttyResult ghostty_render_state_update(GhosttyRenderState state, GhosttyTerminal terminal);
GhosttyResult ghostty_render_state_get(GhosttyRenderState state, int data, void* out);
"""


def generate() -> str:
    """The text of ``_ghostty_ffi.py`` for these declarations."""
    from cffi import FFI  # type: ignore[import-untyped]

    builder = FFI()
    builder.cdef(CDEF)
    builder.set_source(MODULE, None)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "ffi.py"
        builder.emit_python_code(str(out))
        body = out.read_text()
    return HEADER + body.replace("# auto-generated file\n", "", 1)


if __name__ == "__main__":
    TARGET.write_text(generate())  # (cffi names the file it generated on stdout)
