"""The screen model's own libghostty-vt declarations match pyghostty's (same library).

``terminal/_ghostty_decls.py`` declares only the calls it makes (pyghostty's full binding
costs ~0.45 s at import); every struct size/offset and constant it relies on is checked
here against pyghostty's generated declarations, so an upgrade that moves one fails.
"""

from __future__ import annotations

import pytest
from pyghostty._ffi import ffi as full_ffi
from pyghostty._ffi import lib as full_lib

from openova_sandbox.terminal import _ghostty

STRUCTS = {
    "GhosttyString": ("ptr", "len"),
    "GhosttyTerminalModeConfig": ("mode", "value"),
    "GhosttyFormatterScreenExtra": (
        "size",
        "cursor",
        "style",
        "hyperlink",
        "protection",
        "kitty_keyboard",
        "charsets",
    ),
    "GhosttyFormatterTerminalExtra": (
        "size",
        "palette",
        "modes",
        "scrolling_region",
        "tabstops",
        "pwd",
        "keyboard",
        "screen",
    ),
    "GhosttyFormatterTerminalOptions": ("size", "emit", "unwrap", "trim", "extra", "selection"),
    "GhosttyGridRef": ("size", "node", "x", "y"),
    "GhosttySelection": ("size", "start", "end", "rectangle"),
}


def test_the_point_twin_has_the_unions_size_and_alignment() -> None:
    ours, real = _ghostty.ffi, full_ffi
    assert (ours.sizeof("GhosttyPointS"), ours.alignof("GhosttyPointS")) == (
        real.sizeof("GhosttyPoint"),
        real.alignof("GhosttyPoint"),
    )
    assert ours.offsetof("GhosttyPointS", "value") == real.offsetof("GhosttyPoint", "value")


@pytest.mark.parametrize("name", sorted(STRUCTS))
def test_struct_layouts_match(name: str) -> None:
    ours = _ghostty.ffi
    assert ours.sizeof(name) == full_ffi.sizeof(name)
    assert ours.alignof(name) == full_ffi.alignof(name)
    for field in STRUCTS[name]:
        assert ours.offsetof(name, field) == full_ffi.offsetof(name, field), field
    assert [f for f, _ in full_ffi.typeof(name).fields] == list(STRUCTS[name])


def test_enums_are_int_sized_and_constants_match() -> None:
    for enum in (
        "GhosttyResult",
        "GhosttyTerminalOption",
        "GhosttyTerminalData",
        "GhosttyFormatterFormat",
        "GhosttyRenderStateData",
        "GhosttyTerminalScreen",
        "GhosttyRenderStateCursorVisualStyle",
    ):
        assert full_ffi.sizeof(enum) == _ghostty.ffi.sizeof("int"), enum
    for name, value in _ghostty.CONSTANTS.items():
        assert getattr(full_lib, name) == value, name


def test_the_same_library_is_loaded() -> None:
    import pyghostty._ffi as binding

    assert binding._libpath() == _ghostty.library_path()


def test_the_generated_ffi_module_is_the_declarations_of_today() -> None:
    """``_ghostty_ffi.py`` is generated from ``_ghostty_decls.CDEF``: a change to the
    declarations without regenerating it fails here (and a hand edit of it too)."""
    from openova_sandbox.terminal import _ghostty_decls

    assert _ghostty_decls.TARGET.read_text() == _ghostty_decls.generate(), (
        "regenerate: python -m openova_sandbox.terminal._ghostty_decls"
    )


def test_the_screen_model_loads_no_c_parser() -> None:
    """The run-time FFI comes from the generated module: no pycparser in the process."""
    import subprocess
    import sys

    code = (
        "import sys; import openova_sandbox.terminal.screen; "
        "print(sorted(m for m in sys.modules if m.startswith(('pycparser', 'cffi'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
