"""QR codes of sign-in links: an SVG for the console, text for a terminal (segno)."""

from __future__ import annotations

import io

import segno

# Low error correction keeps a ~800-character link at the smallest size a phone reads
# from a screen; a screen is not a torn sticker.
_ERROR = "L"


def qr_svg(text: str) -> str:
    """A standalone SVG (black on white, with a quiet zone), no XML declaration."""
    out = io.BytesIO()
    segno.make(text, error=_ERROR).save(
        out, kind="svg", xmldecl=False, scale=4, border=2, dark="#000", light="#fff"
    )
    return out.getvalue().decode()


def qr_text(text: str) -> str:
    """Lines of half-block characters for a terminal (light modules drawn in the
    foreground colour, as on a dark terminal), two modules per character row."""
    out = io.StringIO()
    segno.make(text, error=_ERROR).terminal(out=out, compact=True, border=2)
    return out.getvalue()
