"""Sign-in and identity: login links (redeeming them, and making one for another
device), the embedded issuer's documents, whoami, and the public auth config (the agent
catalogue is in ``agents.py``)."""

from __future__ import annotations

import hmac
import html
import secrets
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from ...auth.cookie import sign_cookie
from ...auth.signouts import jwt_id
from ...auth.sources import CookieRejected
from ...domain import audit
from ...domain.errors import Invalid, NotFound, SandboxError
from ...domain.model import format_time
from ...domain.principal import Principal
from ...services.logins import Redeemed, check_next
from ...services.qr import qr_svg
from .. import schemas
from ..edge import request_token
from ..errors import COOKIE_NAME
from ..json_body import load_json
from ..security import origin_allowed, require_principal
from .oidc import START_PATH, end_console_session

router = APIRouter(tags=["identity"])

Caller = Annotated[Principal, Depends(require_principal)]
COOKIE_MAX_AGE = 4 * 3600
# The confirmation form's double-submit nonce: a cookie only this site's own pages send
# back (SameSite=Strict), and the same value in the form. A page elsewhere can make a
# browser post the form, but cannot make it send the cookie.
NONCE_COOKIE = "sandbox_login_nonce"
NONCE_MAX_AGE = 600

_LOGIN_FAILED = """<!doctype html><meta charset="utf-8"><title>Sign-in link not valid</title>
<body style="font-family:system-ui;max-width:36rem;margin:4rem auto;line-height:1.5">
<h1>This sign-in link is not valid</h1><p>{reason}</p>
<p>Sign-in links work once. The terminal running <code>sandbox serve</code> prints a fresh
link when it starts; a signed-in browser makes one for another device (<em>Open on
another device</em> on a session page), and so does <code>sandbox login-link</code>.
You can also mint a token with <code>sandbox token --sub … --email … --org …</code>
and open <code>/login?token=&lt;token&gt;</code>.</p></body>"""


_CONFIRM = """<!doctype html><meta charset="utf-8"><title>Sign in to OpenOva Sandbox</title>
<body style="font-family:system-ui;max-width:36rem;margin:4rem auto;line-height:1.5">
<h1>Sign in as {who}?</h1>
<p>This link signs this browser in as <strong>{who}</strong> (organization
<code>{org}</code>). Continue only if you made it yourself: everything you then type in
a terminal goes to that account's sandboxes.</p>
<form method="post" action="/login"><input type="hidden" name="token" value="{token}">
<input type="hidden" name="nonce" value="{nonce}">
<input type="hidden" name="next" value="{next}">
<button type="submit" style="font-size:1rem;padding:.5rem 1rem">Sign in as {who}</button>
</form></body>"""


def _failed(exc: SandboxError) -> HTMLResponse:
    reason = "It has expired or was already used." if exc.code != "invalid" else exc.detail
    return HTMLResponse(_LOGIN_FAILED.format(reason=html.escape(reason)), status_code=401)


async def _audit_sign_in(
    request: Request,
    principal: Principal | None,
    *,
    via: str,
    refused: SandboxError | None = None,
) -> None:
    """A sign-in (or a refused one: an unknown signer is recorded without an org)."""
    detail = {"via": via, **({"error": refused.code} if refused else {})}
    outcome = "denied" if refused else "success"
    await request.app.state.deps.audit.record(
        audit.SIGN_IN, principal, outcome=outcome, detail=detail
    )


def _secure(request: Request) -> bool:
    # behind a TLS proxy the request may arrive as http; the public URL says https
    public = request.app.state.deps.settings.public_url.strip().lower()
    return request.url.scheme == "https" or public.startswith("https://")


def _signed_in(request: Request, redeemed: Redeemed) -> Response:
    deps = request.app.state.deps
    response = RedirectResponse(redeemed.next, status_code=303)
    response.set_cookie(
        COOKIE_NAME,
        sign_cookie(redeemed.session_token, deps.cookie_secret),
        max_age=COOKIE_MAX_AGE,
        path="/",
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    response.delete_cookie(NONCE_COOKIE, path="/login", httponly=True, samesite="strict")
    return response


def _next_or_default(value: str | None) -> str | None:
    """A ``next`` from the query or the form: checked; a bad one is ignored (the console)."""
    if not value:
        return None
    try:
        return check_next(value)
    except Invalid:
        return None


@router.get(
    "/login",
    response_class=RedirectResponse,
    status_code=303,
    responses={
        200: {"description": "a token that is not a login link's: confirm who signs in"},
        303: {"description": "cookie set; go to the console (or the link's `next`)"},
        401: {},
    },
)
async def login(
    request: Request,
    token: Annotated[str, Query(min_length=1, max_length=16384)],
    next: Annotated[str | None, Query(max_length=1024)] = None,
) -> Response:
    """Exchange a one-time login link (printed by `sandbox serve`, or made for another
    device) for the `catalyst_session` cookie and go to its page (`next`; default the
    console). Any other token (e.g. from `sandbox token`) first shows whom it signs in
    as, and signs in only from that page's form: a link from someone else cannot sign
    this browser into their account unnoticed (login CSRF)."""
    deps = request.app.state.deps
    target = _next_or_default(next)
    principal: Principal | None = None
    try:
        is_link, principal = await deps.logins.inspect(token)
        if is_link:
            redeemed = await deps.logins.redeem(token, next_path=target)
            await _audit_sign_in(request, redeemed.principal, via="login-link")
            return _signed_in(request, redeemed)
    except SandboxError as exc:
        await _audit_sign_in(request, principal, via="login-link", refused=exc)
        return _failed(exc)
    nonce = secrets.token_urlsafe(24)
    page = _CONFIRM.format(
        who=html.escape(principal.email or principal.sub),
        org=html.escape(principal.org or "-"),
        token=html.escape(token, quote=True),
        nonce=nonce,
        next=html.escape(target or "", quote=True),
    )
    # same-origin: the form's POST carries this server's Origin (no-referrer would make
    # Chromium send "Origin: null"), while the token in this page's URL still never
    # leaves the site in a Referer
    response = HTMLResponse(
        page,
        headers={
            "Cache-Control": "no-store",
            "Referrer-Policy": "same-origin",
            "X-Frame-Options": "DENY",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
            "form-action 'self'; frame-ancestors 'none'",
        },
    )
    response.set_cookie(
        NONCE_COOKIE,
        nonce,
        max_age=NONCE_MAX_AGE,
        path="/login",
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    return response


@router.post(
    "/login",
    response_class=RedirectResponse,
    status_code=303,
    responses={303: {"description": "cookie set"}, 401: {}, 403: {}},
    include_in_schema=False,
)
async def login_confirmed(request: Request) -> Response:
    """The confirmation form's submit; only from this server's own page: the browser's
    ``Origin`` must be this server (``null`` is not), and the form's nonce must match
    the cookie that page set."""
    deps = request.app.state.deps
    origin = (request.headers.get("origin") or "").strip().lower()
    if origin == "null" or not origin_allowed(request, deps.settings.public_url):
        return HTMLResponse("sign-in must come from this server's page", status_code=403)
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    token = (form.get("token") or [""])[0]
    nonce = (form.get("nonce") or [""])[0]
    expected = request.cookies.get(NONCE_COOKIE, "")
    if not nonce or not expected or not hmac.compare_digest(nonce, expected):
        return HTMLResponse(
            "sign-in must come from this server's page (open the sign-in link again)",
            status_code=403,
        )
    if not token:
        return _failed(SandboxError("the form has no token", code="invalid"))
    target = _next_or_default((form.get("next") or [""])[0])
    try:
        redeemed = await deps.logins.redeem(token, next_path=target)
    except SandboxError as exc:
        await _audit_sign_in(request, None, via="token", refused=exc)
        return _failed(exc)
    await _audit_sign_in(request, redeemed.principal, via="token")
    return _signed_in(request, redeemed)


@router.post(
    "/api/v1/sandbox/login-links",
    status_code=201,
    response_model=schemas.LoginLinkOut,
    responses={
        400: {"model": schemas.ErrorBody, "description": "invalid-json, invalid-next"},
        401: {"model": schemas.Unauthenticated},
        403: {"model": schemas.ErrorBody, "description": "token-not-allowed (asked with a token)"},
        409: {"model": schemas.ErrorBody, "description": "login-links-unavailable"},
    },
    openapi_extra={
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": schemas.LoginLinkBody.model_json_schema()}},
        }
    },
)
async def create_login_link(request: Request, caller: Caller) -> JSONResponse:
    """A one-time sign-in link for the caller (same identity), for another device:
    10 minutes, single use (remembered across restarts), landing on `next`."""
    raw = await request.body()
    body: Any = {}
    if raw.strip():
        body = load_json(raw)
    if not isinstance(body, dict):
        raise Invalid('request body must be a JSON object: {"next"?}', code="invalid-json")
    deps = request.app.state.deps
    base = deps.settings.public_url.strip() or str(request.base_url)
    link = deps.logins.link_for(caller, base_url=base, next_path=body.get("next"))
    return JSONResponse(
        {
            "url": link.url,
            "expiresAt": format_time(link.expires_at),
            "qrSvg": qr_svg(link.url),
        },
        status_code=201,
        headers={"Cache-Control": "no-store"},
    )


@router.post(
    "/logout",
    status_code=204,
    response_class=Response,
    responses={
        200: {
            "model": schemas.LogoutOut,
            "description": "signed out here; open `logoutUrl` to end the session at the "
            "identity provider too (RP-initiated logout)",
        },
        204: {"description": "signed out"},
        503: {
            "model": schemas.ErrorBody,
            "description": "the sign-out could not be recorded in the database; the "
            "cookie is kept: try again",
        },
    },
)
async def logout(request: Request) -> Response:
    """Sign out: clears the session cookie. A console session signed in with the OIDC
    issuer is also ended server-side (its refresh token revoked when the issuer offers
    revocation) and, when the issuer lists an `end_session_endpoint`, the answer is
    200 `{"logoutUrl"}` for the browser to open. A console signed in with a token cookie
    has its token recorded as signed out of until it expires, refused from then on,
    across restarts; when that record cannot be written the answer is 503 and the cookie
    stays, so that the sign-out is tried again rather than reported done."""
    logout_url = await end_console_session(request)
    await _end_token_cookie(request)
    response: Response = (
        JSONResponse({"logoutUrl": logout_url}, headers={"Cache-Control": "no-store"})
        if logout_url
        else Response(status_code=204)
    )
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict")
    return response


async def _end_token_cookie(request: Request) -> None:
    """A console signed in with a JWT cookie (no server-side session): the token is
    remembered as signed out of until it expires (auth/signouts.py), so the preview
    grants minted from it end now; recorded in the database before the answer
    (``BackendUnavailable``, 503 with the cookie kept, when that fails). Only the
    cookie's own token, once it verifies, and only from this server's pages (as an OIDC
    session's sign-out)."""
    deps = request.app.state.deps
    try:
        found = request_token(request, deps.cookie_secret)
    except CookieRejected:
        return
    if found is None or found.source != "cookie" or found.token.count(".") != 2:
        return
    if not origin_allowed(request, deps.settings.public_url):
        return
    validator = getattr(deps.authenticator, "validator", None)
    if validator is None:
        return
    try:
        claims = await validator.validate(found.token)
    except SandboxError:
        return
    sub, exp, jti = claims.get("sub"), claims.get("exp"), jwt_id(found.token)
    if isinstance(sub, str) and isinstance(exp, int | float) and jti:
        await deps.signouts.end(sub, jti, float(exp))


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
async def whoami(caller: Caller, request: Request) -> JSONResponse:
    body: dict[str, Any] = {
        "sub": caller.sub,
        "email": caller.email,
        "org": caller.org,
        "orgAdmin": caller.is_org_admin,
    }
    isolation = request.app.state.deps.isolation
    if isolation is not None:  # embedded mode: what keeps terminals apart (issue 12)
        body["isolation"] = isolation.details()
    return JSONResponse(body)


@router.get("/api/v1/sandbox/auth/config", response_model=schemas.AuthConfig)
async def auth_config(request: Request) -> JSONResponse:
    """Public: whether the console can sign in with an external OIDC issuer (an issuer
    and a client are configured), which, and the client `sandbox login` uses."""
    deps = request.app.state.deps
    settings = deps.settings
    sign_in = deps.oidc_sessions is not None
    body: dict[str, Any] = {"oidcConfigured": sign_in, "issuer": settings.oidc_issuer}
    # the CLI's client must be public (no secret on a laptop): the console's only when
    # that one has no secret either
    cli_client = settings.oidc_cli_client_id.strip() or (
        "" if settings.oidc_client_secret else settings.oidc_client_id.strip()
    )
    if settings.oidc_issuer and cli_client:
        body["cliClientId"] = cli_client
        body["scopes"] = settings.oidc_scopes
    if sign_in:
        body["signInUrl"] = START_PATH
    return JSONResponse(body)
