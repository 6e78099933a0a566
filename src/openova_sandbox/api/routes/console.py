"""The built web console, served at ``/sandbox`` (``/`` redirects there).

Any ``/sandbox/...`` path that is not an asset answers the SPA's ``index.html`` so deep
links (``/sandbox/<id>``) survive a reload. Assets are content-hashed by the build, so
they are cached for a year; ``index.html`` is never cached.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

router = APIRouter(include_in_schema=False)

_NOT_BUILT = """<!doctype html><meta charset="utf-8"><title>OpenOva Sandbox</title>
<body style="font-family:system-ui;max-width:36rem;margin:4rem auto;line-height:1.5">
<h1>Console not built</h1><p>The web console's assets are missing from this install.
Run <code>make run</code> from a source checkout (it builds them), or install a built
package. The API is available under <code>/api/v1/sandbox</code>.</p></body>"""


def dist_dir() -> Path:
    return Path(str(resources.files("openova_sandbox"))) / "web" / "dist"


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/sandbox", status_code=307)


@router.get("/sandbox")
@router.get("/sandbox/{path:path}")
async def console(path: str = "") -> Response:
    dist = dist_dir().resolve()
    index = dist / "index.html"
    if not index.is_file():
        return HTMLResponse(_NOT_BUILT, status_code=503)
    if path:
        try:
            candidate = (dist / path).resolve()
            servable = candidate.is_relative_to(dist) and candidate.is_file()
        except (OSError, ValueError):  # a NUL byte, a name too long: not a file of ours
            servable = False
        if servable and candidate != index:
            return FileResponse(
                candidate, headers={"Cache-Control": "public, max-age=31536000, immutable"}
            )
        if path.startswith("assets/"):
            return Response(status_code=404)
    return FileResponse(index, headers={"Cache-Control": "no-cache"})
