"""Sign-in and identity: the login link, the embedded issuer's documents, whoami,
the public auth config, and the agent catalogue as the console sees it."""

from __future__ import annotations

import html
import os
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from ...auth.cookie import sign_cookie
from ...domain.errors import NotFound, SandboxError
from ...domain.principal import Principal
from .. import schemas
from ..errors import COOKIE_NAME
from ..security import require_principal

router = APIRouter(tags=["identity"])

Caller = Annotated[Principal, Depends(require_principal)]
COOKIE_MAX_AGE = 4 * 3600

_LOGIN_FAILED = """<!doctype html><meta charset="utf-8"><title>Sign-in link not valid</title>
<body style="font-family:system-ui;max-width:36rem;margin:4rem auto;line-height:1.5">
<h1>This sign-in link is not valid</h1><p>{reason}</p>
<p>The terminal running <code>sandbox serve</code> prints a fresh link when it starts.
You can also mint a token with <code>sandbox token --sub … --email … --org …</code>
and open <code>/login?token=&lt;token&gt;</code>.</p></body>"""


@router.get(
    "/login",
    response_class=RedirectResponse,
    status_code=303,
    responses={303: {"description": "cookie set; go to the console"}, 401: {}},
)
async def login(
    request: Request, token: Annotated[str, Query(min_length=1, max_length=16384)]
) -> Response:
    """Exchange a token (from the link `sandbox serve` prints, or `sandbox token`)
    for the `catalyst_session` cookie and go to the console."""
    deps = request.app.state.deps
    try:
        session_token = await deps.logins.redeem(token)
    except SandboxError as exc:
        reason = "It has expired or was already used." if exc.code != "invalid" else exc.detail
        return HTMLResponse(_LOGIN_FAILED.format(reason=html.escape(reason)), status_code=401)
    response = RedirectResponse("/sandbox", status_code=303)
    response.set_cookie(
        COOKIE_NAME,
        sign_cookie(session_token, deps.cookie_secret),
        max_age=COOKIE_MAX_AGE,
        path="/",
        httponly=True,
        samesite="strict",
        # behind a TLS proxy the request may arrive as http; the public URL says https
        secure=request.url.scheme == "https"
        or deps.settings.public_url.strip().lower().startswith("https://"),
    )
    return response


@router.post("/logout", status_code=204, response_class=Response)
async def logout() -> Response:
    response = Response(status_code=204)
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict")
    return response


@router.get("/.well-known/openid-configuration", responses={404: {"model": schemas.ErrorBody}})
async def openid_configuration(request: Request) -> JSONResponse:
    issuer = request.app.state.deps.issuer
    if issuer is None:
        raise NotFound("this server validates tokens of an external issuer", code="not-found")
    base = str(request.base_url).rstrip("/")
    return JSONResponse(issuer.openid_configuration(base_url=base))


@router.get("/.well-known/jwks.json", responses={404: {"model": schemas.ErrorBody}})
async def jwks(request: Request) -> JSONResponse:
    issuer = request.app.state.deps.issuer
    if issuer is None:
        raise NotFound("this server validates tokens of an external issuer", code="not-found")
    return JSONResponse(issuer.jwks())


@router.get(
    "/api/v1/sandbox/whoami",
    response_model=schemas.WhoAmI,
    responses={401: {"model": schemas.Unauthenticated}},
)
async def whoami(caller: Caller) -> JSONResponse:
    return JSONResponse(
        {
            "sub": caller.sub,
            "email": caller.email,
            "org": caller.org,
            "orgAdmin": caller.is_org_admin,
        }
    )


@router.get("/api/v1/sandbox/auth/config", response_model=schemas.AuthConfig)
async def auth_config(request: Request) -> JSONResponse:
    """Public: tells the sign-in page whether an external OIDC issuer is configured."""
    settings = request.app.state.deps.settings
    return JSONResponse(
        {"oidcConfigured": bool(settings.oidc_issuer), "issuer": settings.oidc_issuer}
    )


@router.get(
    "/api/v1/sandbox/agents",
    response_model=schemas.AgentList,
    responses={401: {"model": schemas.Unauthenticated}},
)
async def agents(request: Request, caller: Caller) -> JSONResponse:
    """The API's agents with "installed?" (binary on this server's PATH)."""
    catalogue = request.app.state.deps.sessions.catalogue
    path = os.environ.get("PATH")
    out = []
    for slug in catalogue.api_slugs:
        agent = catalogue.get(slug)
        assert agent is not None
        out.append(
            {
                "id": agent.slug,
                "label": agent.label or agent.slug,
                "blurb": agent.blurb or agent.notes,
                "installed": agent.resolve_binary(path) is not None,
                "installHint": agent.install_hint,
                "byos": agent.slug == "claude-code",
            }
        )
    return JSONResponse({"agents": out})
