"""Sign-in and identity: the login link, the embedded issuer's documents, whoami,
and the public auth config (the agent catalogue is in ``agents.py``)."""

from __future__ import annotations

import html
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from ...auth.cookie import sign_cookie
from ...domain.errors import NotFound, SandboxError
from ...domain.principal import Principal
from .. import schemas
from ..errors import COOKIE_NAME
from ..security import origin_allowed, require_principal

router = APIRouter(tags=["identity"])

Caller = Annotated[Principal, Depends(require_principal)]
COOKIE_MAX_AGE = 4 * 3600

_LOGIN_FAILED = """<!doctype html><meta charset="utf-8"><title>Sign-in link not valid</title>
<body style="font-family:system-ui;max-width:36rem;margin:4rem auto;line-height:1.5">
<h1>This sign-in link is not valid</h1><p>{reason}</p>
<p>The terminal running <code>sandbox serve</code> prints a fresh link when it starts.
You can also mint a token with <code>sandbox token --sub … --email … --org …</code>
and open <code>/login?token=&lt;token&gt;</code>.</p></body>"""


_CONFIRM = """<!doctype html><meta charset="utf-8"><title>Sign in to OpenOva Sandbox</title>
<body style="font-family:system-ui;max-width:36rem;margin:4rem auto;line-height:1.5">
<h1>Sign in as {who}?</h1>
<p>This link signs this browser in as <strong>{who}</strong> (organization
<code>{org}</code>). Continue only if you made it yourself: everything you then type in
a terminal goes to that account's sandboxes.</p>
<form method="post" action="/login"><input type="hidden" name="token" value="{token}">
<button type="submit" style="font-size:1rem;padding:.5rem 1rem">Sign in as {who}</button>
</form></body>"""


def _failed(exc: SandboxError) -> HTMLResponse:
    reason = "It has expired or was already used." if exc.code != "invalid" else exc.detail
    return HTMLResponse(_LOGIN_FAILED.format(reason=html.escape(reason)), status_code=401)


def _signed_in(request: Request, session_token: str) -> Response:
    deps = request.app.state.deps
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


@router.get(
    "/login",
    response_class=RedirectResponse,
    status_code=303,
    responses={
        200: {"description": "a token that is not a login link's: confirm who signs in"},
        303: {"description": "cookie set; go to the console"},
        401: {},
    },
)
async def login(
    request: Request, token: Annotated[str, Query(min_length=1, max_length=16384)]
) -> Response:
    """Exchange the one-time link `sandbox serve` prints for the `catalyst_session`
    cookie and go to the console. Any other token (e.g. from `sandbox token`) first shows
    whom it signs in as, and signs in only from that page's form: a link from someone
    else cannot sign this browser into their account unnoticed (login CSRF)."""
    deps = request.app.state.deps
    try:
        is_link, principal = await deps.logins.inspect(token)
        if is_link:
            return _signed_in(request, await deps.logins.redeem(token))
    except SandboxError as exc:
        return _failed(exc)
    page = _CONFIRM.format(
        who=html.escape(principal.email or principal.sub),
        org=html.escape(principal.org or "-"),
        token=html.escape(token, quote=True),
    )
    return HTMLResponse(
        page, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    )


@router.post(
    "/login",
    response_class=RedirectResponse,
    status_code=303,
    responses={303: {"description": "cookie set"}, 401: {}, 403: {}},
    include_in_schema=False,
)
async def login_confirmed(request: Request) -> Response:
    """The confirmation form's submit; only from this server's own page."""
    if not origin_allowed(request, request.app.state.deps.settings.public_url):
        return HTMLResponse("sign-in must come from this server's page", status_code=403)
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    token = (form.get("token") or [""])[0]
    if not token:
        return _failed(SandboxError("the form has no token", code="invalid"))
    try:
        return _signed_in(request, await request.app.state.deps.logins.redeem(token))
    except SandboxError as exc:
        return _failed(exc)


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
