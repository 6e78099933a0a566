"""Console sign-in with the configured OIDC issuer (issue 11): authorization code + PKCE.

``GET /auth/oidc/start`` sends the browser to the issuer with a fresh ``state``, ``nonce``
and PKCE verifier, kept in a short-lived encrypted cookie bound to this browser
(``sandbox_oidc_flow``: ``Path=/auth/oidc``, ``SameSite=Lax`` so it travels on the
issuer's redirect back, 10 min). ``GET /auth/oidc/callback`` checks ``state`` against
that cookie, exchanges the code (with the verifier), checks the ID token (signature,
``iss``, ``aud``, ``nonce``), maps the claims (``auth/claims.py``) and starts a
server-side session (``auth/oidc_sessions.py``); the browser gets only the session's id
in ``catalyst_session``. Anything that goes wrong is an HTML page saying what, with a
401 for a sign-in that cannot be used (an unusable claim: never a silent default).
"""

from __future__ import annotations

import base64
import hmac
import html
import json
from typing import Annotated, Any
from urllib.parse import urlencode

import structlog
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ...auth.cookie import COOKIE_NAME, derived_key, session_cookie, session_id_of
from ...auth.oidc_client import new_secret
from ...auth.oidc_sessions import SESSION_TTL_S, OidcSessions
from ...domain.errors import BackendUnavailable, SandboxError, Unauthenticated, UnusableClaim
from ...services.logins import DEFAULT_NEXT, check_next
from ..security import origin_allowed

log = structlog.get_logger(__name__)
router = APIRouter(tags=["identity"])

START_PATH = "/auth/oidc/start"
CALLBACK_PATH = "/auth/oidc/callback"
FLOW_COOKIE = "sandbox_oidc_flow"
FLOW_PATH = "/auth/oidc"
FLOW_TTL_S = 600
_FLOW_LABEL = b"openova-sandbox oidc-flow v1"
ORG_MAX = 253

_PAGE = """<!doctype html><meta charset="utf-8"><title>{title}</title>
<body style="font-family:system-ui;max-width:38rem;margin:4rem auto;line-height:1.5">
<h1>{title}</h1><p>{reason}</p>{more}
<p><a href="/sandbox">Back to the console</a></p></body>"""

_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "frame-ancestors 'none'; form-action 'self'",
}


def _page(status: int, title: str, reason: str, more: str = "") -> HTMLResponse:
    body = _PAGE.format(title=html.escape(title), reason=html.escape(reason), more=more)
    response = HTMLResponse(body, status_code=status, headers=dict(_HEADERS))
    return response


def sessions_of(request: Request) -> OidcSessions | None:
    sessions: OidcSessions | None = getattr(request.app.state.deps, "oidc_sessions", None)
    return sessions


def _base(request: Request) -> str:
    public: str = request.app.state.deps.settings.public_url.strip()
    return (public or str(request.base_url)).rstrip("/")


def _secure(request: Request) -> bool:
    public = request.app.state.deps.settings.public_url.strip().lower()
    return request.url.scheme == "https" or public.startswith("https://")


def _fernet(request: Request) -> Any:
    from cryptography.fernet import Fernet

    secret: str = request.app.state.deps.cookie_secret
    return Fernet(base64.urlsafe_b64encode(derived_key(secret, _FLOW_LABEL)))


def _next(value: str | None) -> str:
    if not value:
        return DEFAULT_NEXT
    try:
        return check_next(value)
    except SandboxError:
        return DEFAULT_NEXT  # a bad next is ignored, as /login does


def _clean_org(value: str | None) -> str:
    org = (value or "").strip()
    if len(org) > ORG_MAX or any(ord(c) < 0x20 or ord(c) == 0x7F for c in org):
        return ""
    return org


@router.get(
    START_PATH,
    response_class=RedirectResponse,
    status_code=303,
    responses={
        303: {"description": "to the identity provider's sign-in"},
        400: {"description": "an org that cannot be one (HTML)"},
        409: {"description": "no OIDC client configured (HTML)"},
        503: {"description": "the identity provider cannot be reached (HTML)"},
    },
)
async def oidc_start(
    request: Request,
    next: Annotated[str | None, Query(max_length=1024)] = None,
    org: Annotated[str | None, Query(max_length=ORG_MAX)] = None,
) -> Response:
    """Sign in to the console with the configured identity provider: authorization code
    with PKCE. `next`: the console page to land on; `org`: the organization to use when
    the provider's token names several."""
    sessions = sessions_of(request)
    if sessions is None:
        return _page(
            409,
            "Single sign-on is not configured",
            "This server has no OIDC client (SANDBOX_OIDC_ISSUER and SANDBOX_OIDC_CLIENT_ID); "
            "sign in with a login link instead.",
        )
    chosen = _clean_org(org)
    if org and org.strip() and not chosen:
        return _page(
            400, "Sign-in did not start", "org holds control characters: not an organization"
        )
    flow = {
        "state": new_secret(),
        "nonce": new_secret(),
        "verifier": new_secret(),
        "next": _next(next),
        "org": chosen,
        "redirect_uri": _base(request) + CALLBACK_PATH,
    }
    try:
        url = await sessions.client.authorization_url(
            redirect_uri=flow["redirect_uri"],
            state=flow["state"],
            nonce=flow["nonce"],
            verifier=flow["verifier"],
        )
    except BackendUnavailable as exc:
        log.warning("auth.oidc.start_failed", reason=exc.detail)
        return _page(503, "The identity provider cannot be reached", exc.detail)
    response = RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})
    response.set_cookie(
        FLOW_COOKIE,
        _fernet(request).encrypt(json.dumps(flow).encode()).decode("ascii"),
        max_age=FLOW_TTL_S,
        path=FLOW_PATH,
        httponly=True,
        samesite="lax",  # it must come back on the issuer's (cross-site) redirect
        secure=_secure(request),
    )
    return response


def _read_flow(request: Request) -> dict[str, str] | None:
    from cryptography.fernet import InvalidToken

    raw = request.cookies.get(FLOW_COOKIE, "")
    if not raw:
        return None
    try:
        data = json.loads(_fernet(request).decrypt(raw.encode("ascii"), ttl=FLOW_TTL_S))
    except (InvalidToken, ValueError, UnicodeError):
        return None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        return None
    return data


def _refused(reason: str, *, status: int = 401, more: str = "") -> HTMLResponse:
    response = _page(status, "Sign-in did not work", reason, more)
    response.delete_cookie(FLOW_COOKIE, path=FLOW_PATH, httponly=True, samesite="lax")
    return response


@router.get(
    CALLBACK_PATH,
    response_class=RedirectResponse,
    status_code=303,
    responses={
        303: {"description": "signed in: session cookie set, on to the console"},
        400: {"description": "a callback without code/state (HTML)"},
        401: {"description": "state, ID token or claims refused (HTML)"},
        409: {"description": "no OIDC client configured (HTML)"},
        503: {"description": "the identity provider cannot be reached (HTML)"},
    },
)
async def oidc_callback(
    request: Request,
    code: Annotated[str | None, Query(max_length=4096)] = None,
    state: Annotated[str | None, Query(max_length=512)] = None,
    error: Annotated[str | None, Query(max_length=256)] = None,
    error_description: Annotated[str | None, Query(max_length=1024)] = None,
) -> Response:
    """Where the identity provider sends the browser back (the redirect URI to register
    there is `<public URL>/auth/oidc/callback`)."""
    sessions = sessions_of(request)
    if sessions is None:
        return _refused("This server has no OIDC client configured.", status=409)
    flow = _read_flow(request)
    if error:
        log.info("auth.oidc.provider_error", error=error)
        return _refused(f"The identity provider answered {error}: {error_description or ''}")
    if not code or not state:
        return _refused("The identity provider's answer has no code or state.", status=400)
    if flow is None:
        return _refused(
            "This browser did not start this sign-in, or it took longer than 10 minutes: "
            "start again from the console."
        )
    if not hmac.compare_digest(flow["state"].encode(), state.encode("utf-8", "replace")):
        log.info("auth.oidc.state_mismatch")
        return _refused("The sign-in's state does not match this browser's: start again.")
    id_claims: dict[str, Any] | None = None
    try:
        tokens = await sessions.client.exchange_code(
            code=code, redirect_uri=flow["redirect_uri"], verifier=flow["verifier"]
        )
        if not tokens.id_token:
            raise Unauthenticated("the identity provider gave no ID token (scope openid?)")
        id_claims = await sessions.client.id_token_claims(tokens.id_token, nonce=flow["nonce"])
        sid, principal = await sessions.sign_in(tokens, id_claims, requested_org=flow["org"])
    except UnusableClaim as exc:
        log.info("auth.oidc.claims_refused", reason=exc.detail)
        await _audit(request, None, refused="unusable-claim")
        return _refused(exc.detail, more=_org_choices(sessions, id_claims, flow))
    except BackendUnavailable as exc:
        return _refused(exc.detail, status=503)
    except Unauthenticated as exc:
        log.info("auth.oidc.sign_in_refused", reason=exc.detail)
        await _audit(request, None, refused="unauthenticated")
        return _refused(f"The sign-in could not be verified: {exc.detail}")
    response = RedirectResponse(
        flow["next"], status_code=303, headers={"Cache-Control": "no-store"}
    )
    response.set_cookie(
        COOKIE_NAME,
        session_cookie(sid, request.app.state.deps.cookie_secret),
        max_age=int(SESSION_TTL_S),
        path="/",
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    response.delete_cookie(FLOW_COOKIE, path=FLOW_PATH, httponly=True, samesite="lax")
    await _audit(request, principal)
    return response


async def _audit(request: Request, principal: Any, *, refused: str = "") -> None:
    """A sign-in in the audit log (a refused one without a principal: who it was is
    not established)."""
    audit = getattr(request.app.state.deps, "audit", None)
    if audit is None:
        return
    try:
        from ...domain import audit as kinds

        await audit.record(
            kinds.SIGN_IN,
            principal,
            outcome="denied" if refused else "success",
            detail={"via": "oidc", **({"error": refused} if refused else {})},
        )
    except Exception as exc:  # the audit's own failures are its to report
        log.warning("auth.oidc.audit_failed", error=type(exc).__name__)


def _org_choices(sessions: OidcSessions, claims: Any, flow: dict[str, str]) -> str:
    """Links to sign in again for each org the token names, when it names several."""
    if not isinstance(claims, dict):
        return ""
    try:
        offered = sessions.mapping.orgs_offered(claims)
    except SandboxError:
        return ""
    if not isinstance(offered, list) or not offered:
        return ""
    items = "".join(
        f'<li><a href="{START_PATH}?{html.escape(urlencode({"org": o, "next": flow["next"]}))}">'
        f"{html.escape(o)}</a></li>"
        for o in offered[:50]
    )
    return f"<p>Sign in to one of your organizations:</p><ul>{items}</ul>"


async def end_console_session(request: Request) -> str:
    """Ends this browser's OIDC session (``/logout``): forgotten here, its refresh token
    revoked when the issuer offers revocation; answers the issuer's end-session URL
    (RP-initiated logout) when discovery lists one, else ``""``."""
    sessions = sessions_of(request)
    deps = request.app.state.deps
    sid = session_id_of(request.cookies.get(COOKIE_NAME, ""), deps.cookie_secret)
    if sessions is None or sid is None:
        return ""
    if not origin_allowed(request, deps.settings.public_url):
        log.info("auth.cross_origin_refused", method="POST", path="/logout")
        return ""
    record = await sessions.end(sid)
    if record is None:
        return ""
    try:
        return await sessions.client.end_session_url(
            id_token_hint=record.id_token, post_logout_redirect_uri=_base(request) + DEFAULT_NEXT
        )
    except BackendUnavailable as exc:
        log.warning("auth.oidc.end_session_unavailable", reason=exc.detail)
        return ""
