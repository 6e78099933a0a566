"""A fake OAuth provider for the BYOS tests: authorize + token endpoints on loopback.

The token endpoint checks the PKCE verifier against the challenge the authorize endpoint
saw, the way a real authorization server does, so a wrong S256 computation fails the flow.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

CLIENT_ID = "sandbox-test-client"
CALLBACK = "/api/v1/sandbox/byos/claude-code/callback"
BYOS = "/api/v1/sandbox/byos/claude-code"


def s256(verifier: str) -> str:
    return (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )


class FakeProvider:
    """State shared between the test thread and the provider's server thread."""

    def __init__(self) -> None:
        self.url = ""
        self.codes: dict[str, dict[str, str]] = {}
        self.token_requests: list[dict[str, Any]] = []
        self.mode = "ok"  # ok | status500 | not-json | no-access-token
        self.deny = False
        self.email_in: str | None = "account"  # account | top | None
        self.expires_in: int | None = 3600
        self.issued_tokens: list[str] = []
        self.issued_refresh: list[str] = []
        self.revocations: list[dict[str, str]] = []
        self.revoke_status = 200
        self.refresh_mode = "rotate"  # rotate | keep | invalid_grant | status500
        self.live_refresh: set[str] = set()  # refresh tokens still accepted

    # --- endpoints --------------------------------------------------------------------
    async def authorize(self, request: Request) -> Response:
        q = request.query_params
        state = q.get("state", "")
        if self.deny:
            return RedirectResponse(
                q["redirect_uri"] + "?" + urlencode({"error": "access_denied", "state": state})
            )
        if q.get("response_type") != "code" or q.get("client_id") != CLIENT_ID:
            return PlainTextResponse("bad authorize request", status_code=400)
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return PlainTextResponse("PKCE S256 required", status_code=400)
        code = secrets.token_urlsafe(16)
        self.codes[code] = {
            "challenge": q["code_challenge"],
            "redirect_uri": q["redirect_uri"],
            "client_id": q["client_id"],
        }
        return RedirectResponse(
            q["redirect_uri"] + "?" + urlencode({"code": code, "state": state}), status_code=302
        )

    async def token(self, request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        record: dict[str, Any] = {"form": form, "content_type": request.headers.get("content-type")}
        self.token_requests.append(record)
        if self.mode == "status500":
            return PlainTextResponse("upstream exploded", status_code=500)
        if self.mode == "not-json":
            return PlainTextResponse("<html>hello</html>", status_code=200)
        if form.get("grant_type") == "refresh_token":
            return self.refresh(form)
        issued = self.codes.pop(str(form.get("code", "")), None)
        if issued is None:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        record["pkce_ok"] = s256(str(form.get("code_verifier", ""))) == issued["challenge"]
        if (
            form.get("grant_type") != "authorization_code"
            or form.get("client_id") != issued["client_id"]
            or form.get("redirect_uri") != issued["redirect_uri"]
            or not record["pkce_ok"]
        ):
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        if self.mode == "no-access-token":
            return JSONResponse({"token_type": "Bearer"})
        access = "sk-ant-oat01-" + secrets.token_urlsafe(24)
        refresh = "sk-ant-ort01-" + secrets.token_urlsafe(24)
        self.issued_tokens.append(access)
        self.issued_refresh.append(refresh)
        self.live_refresh.add(refresh)
        body: dict[str, Any] = {
            "access_token": access,
            "refresh_token": refresh,
            "token_type": "Bearer",
            "scope": "read:user write:claude-code",
        }
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        if self.email_in == "account":
            body["account"] = {"uuid": "acc-1", "email_address": "max@claude.example"}
        elif self.email_in == "top":
            body["email"] = "top@claude.example"
        return JSONResponse(body)

    def refresh(self, form: dict[str, str]) -> Response:
        """A refresh grant; ``rotate`` issues a new refresh token and retires the old one
        (a second use of it is ``invalid_grant``), ``keep`` answers without one."""
        if self.refresh_mode == "status500":
            return PlainTextResponse("upstream exploded", status_code=500)
        token = form.get("refresh_token", "")
        if (
            self.refresh_mode == "invalid_grant"
            or token not in self.live_refresh
            or form.get("client_id") != CLIENT_ID
        ):
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        access = "sk-ant-oat01-" + secrets.token_urlsafe(24)
        self.issued_tokens.append(access)
        body: dict[str, Any] = {"access_token": access, "token_type": "Bearer", "expires_in": 3600}
        if self.refresh_mode == "rotate":
            self.live_refresh.discard(token)
            fresh = "sk-ant-ort01-" + secrets.token_urlsafe(24)
            self.issued_refresh.append(fresh)
            self.live_refresh.add(fresh)
            body["refresh_token"] = fresh
        return JSONResponse(body)

    async def revoke(self, request: Request) -> Response:
        """RFC 7009: a form with ``token`` and an optional ``token_type_hint``."""
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        self.revocations.append(form)
        if self.revoke_status != 200:
            return JSONResponse({"error": "server_error"}, status_code=self.revoke_status)
        return PlainTextResponse("")

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/authorize", self.authorize),
                Route("/token", self.token, methods=["POST"]),
                Route("/revoke", self.revoke, methods=["POST"]),
            ]
        )

    # --- the browser's part -------------------------------------------------------------
    def callback_of(self, http: Any, authorize_url: str) -> str:
        """Visit the authorize URL like a browser; return the callback path+query."""
        answer = http.get(authorize_url, follow_redirects=False)
        assert answer.status_code in (302, 307), answer.text
        loc = urlsplit(answer.headers["location"])
        return f"{loc.path}?{loc.query}"


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
