"""A real OIDC provider process for tests: ``oidc-provider-mock`` (PyPI), run here with a
few abilities it lacks switched on by flags, so the console's and the CLI's sign-in are
tested against an issuer over HTTP, with real RS256 signatures:

* ``--device``: RFC 8628 device authorization (``/oauth2/device``, approved by POSTing
  ``user_code`` and ``sub`` to ``/device``) and the device-code grant at the token endpoint;
* ``--revocation``: RFC 7009 revocation (``/oauth2/revoke``);
* ``--no-end-session``: discovery without ``end_session_endpoint``;
* ``--access-ttl``: access (and ID) tokens' lifetime in seconds (refresh tests);
* ``--id-token-on-refresh``: a new ID token with each refresh, as Keycloak does.

Test-only endpoints: ``GET /test/stats`` (token-endpoint grants by type, revoked tokens,
live refresh tokens). Users and their claims are set with the mock's own
``PUT /users/<sub>``. Run as ``python -m tests.support.oidc_idp --port 0``: prints
``listening <port>`` once it accepts connections.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any


def build(args: argparse.Namespace) -> Any:
    import flask
    from authlib.jose import jwt  # the mock's own JOSE library and key type
    from oidc_provider_mock import _app
    from oidc_provider_mock._storage import AccessToken, RefreshToken, User

    # a public client (the CLI: PKCE, no secret) may use the code and refresh, as
    # Keycloak allows
    for grant in (_app.AuthorizationCodeGrant, _app.RefreshTokenGrant):
        grant.TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
    app = _app.app(
        require_nonce=True,
        access_token_max_age=timedelta(seconds=args.access_ttl),
    )
    grants: Counter[str] = Counter()
    revoked: list[str] = []
    devices: dict[str, dict[str, Any]] = {}

    @app.after_request
    def discovery(response: Any) -> Any:
        if flask.request.path != "/.well-known/openid-configuration":
            return response
        doc = response.get_json()
        base = flask.request.host_url.rstrip("/")
        if args.device:
            doc["device_authorization_endpoint"] = base + "/oauth2/device"
            doc["grant_types_supported"] = [
                *doc["grant_types_supported"],
                "urn:ietf:params:oauth:grant-type:device_code",
            ]
        if args.revocation:
            doc["revocation_endpoint"] = base + "/oauth2/revoke"
        if args.no_end_session:
            doc.pop("end_session_endpoint", None)
        doc["code_challenge_methods_supported"] = ["S256"]
        return flask.jsonify(doc)

    @app.before_request
    def token_grants() -> Any:
        request = flask.request
        if request.path != "/oauth2/token" or request.method != "POST":
            return None
        kind = request.form.get("grant_type", "")
        grants[kind] += 1
        if kind != "urn:ietf:params:oauth:grant-type:device_code" or not args.device:
            return None  # the mock's own grants
        device = devices.get(request.form.get("device_code", ""))
        if device is None or device["expires"] < time.time():
            return flask.jsonify({"error": "expired_token"}), 400
        if device["sub"] is None:
            return flask.jsonify({"error": "authorization_pending"}), 400
        del devices[request.form["device_code"]]
        storage = _app.storage
        user = storage.get_user(device["sub"]) or User(sub=device["sub"])
        access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        expires = datetime.now(UTC) + timedelta(seconds=args.access_ttl)
        storage.store_access_token(
            AccessToken(token=access, user_id=user.sub, scope=device["scope"], expires_at=expires)
        )
        storage.store_refresh_token(
            RefreshToken(
                token=refresh,
                access_token=access,
                user_id=user.sub,
                scope=device["scope"],
                expires_at=expires,
                client_id=device["client_id"],
            )
        )
        id_token = id_token_for(user, device["client_id"])
        return flask.jsonify(
            {
                "access_token": access,
                "token_type": "Bearer",
                "expires_in": args.access_ttl,
                "refresh_token": refresh,
                "id_token": id_token,
                "scope": device["scope"],
            }
        )

    def id_token_for(user: Any, client_id: str) -> str:
        now = int(time.time())
        claims = {
            **user.claims,
            "iss": flask.request.host_url.rstrip("/"),
            "sub": user.sub,
            "aud": client_id,
            "iat": now,
            "exp": now + args.access_ttl,
        }
        key = _app.storage.jwk
        kid = key.as_dict().get("kid")
        header = {"alg": "RS256", **({"kid": kid} if kid else {})}
        return str(jwt.encode(header, claims, key).decode("ascii"))

    @app.after_request
    def refreshed_id_token(response: Any) -> Any:
        """Keycloak's habit (OIDC Core 12.2 allows it): a new ID token on refresh."""
        request = flask.request
        if (
            not args.id_token_on_refresh
            or request.path != "/oauth2/token"
            or request.form.get("grant_type") != "refresh_token"
            or response.status_code != 200
        ):
            return response
        body = response.get_json()
        refresh = _app.storage.get_refresh_token(body.get("refresh_token", ""))
        user = _app.storage.get_user(refresh.user_id) if refresh else None
        if refresh is None or user is None:
            return response
        body["id_token"] = id_token_for(user, refresh.client_id)
        return flask.jsonify(body)

    @app.post("/oauth2/device")
    def device_authorization() -> Any:
        if not args.device:
            flask.abort(404)
        client_id = flask.request.form.get("client_id", "")
        if not client_id:
            return flask.jsonify({"error": "invalid_client"}), 401
        code = secrets.token_urlsafe(24)
        user_code = secrets.token_hex(4).upper()
        devices[code] = {
            "user_code": user_code,
            "client_id": client_id,
            "scope": flask.request.form.get("scope", "openid"),
            "sub": None,
            "expires": time.time() + 600,
        }
        base = flask.request.host_url.rstrip("/")
        return flask.jsonify(
            {
                "device_code": code,
                "user_code": user_code,
                "verification_uri": base + "/device",
                "verification_uri_complete": f"{base}/device?user_code={user_code}",
                "expires_in": 600,
                "interval": 1,
            }
        )

    @app.post("/device")
    def device_approve() -> Any:
        user_code = flask.request.form.get("user_code", "")
        for device in devices.values():
            if device["user_code"] == user_code:
                device["sub"] = flask.request.form["sub"]
                return "approved"
        return "unknown code", 404

    @app.post("/oauth2/revoke")
    def revoke() -> Any:
        if not args.revocation:
            flask.abort(404)
        token = flask.request.form.get("token", "")
        storage = _app.storage
        if storage.remove_refresh_token(token) or storage.remove_access_token(token):
            revoked.append(token[:6])
        return "", 200

    @app.get("/test/stats")
    def stats() -> Any:
        return flask.jsonify(
            {
                "grants": dict(grants),
                "revoked": len(revoked),
                "refreshTokens": len(list(_app.storage.refresh_tokens())),
            }
        )

    return app


class OidcIdp:
    """The provider above as a child process (``start``), with helpers for tests."""

    def __init__(self, *flags: str) -> None:
        import subprocess

        self.process = subprocess.Popen(
            [sys.executable, __file__, "--port", "0", *flags],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # blocks until it listens (or dies)
        if not line.startswith("listening "):
            self.stop()
            raise RuntimeError(f"the OIDC provider did not start: {line!r}")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"

    def set_user(self, sub: str, **claims: Any) -> None:
        import httpx

        httpx.put(f"{self.url}/users/{sub}", json=claims, timeout=10).raise_for_status()

    def stats(self) -> dict[str, Any]:
        import httpx

        answer: dict[str, Any] = httpx.get(f"{self.url}/test/stats", timeout=10).json()
        return answer

    def approve_device(self, user_code: str, sub: str) -> None:
        import httpx

        httpx.post(
            f"{self.url}/device", data={"user_code": user_code, "sub": sub}, timeout=10
        ).raise_for_status()

    def authorize(self, authorize_url: str, sub: str) -> str:
        """What a browser does at the provider's sign-in form: choose ``sub``, submit;
        answers where the provider redirects back to (the client's redirect URI)."""
        import httpx

        answer = httpx.post(authorize_url, data={"sub": sub}, timeout=10)
        assert answer.status_code == 302, answer.text[:500]
        return answer.headers["location"]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--device", action="store_true")
    parser.add_argument("--revocation", action="store_true")
    parser.add_argument("--no-end-session", action="store_true")
    parser.add_argument("--access-ttl", type=int, default=3600)
    parser.add_argument("--id-token-on-refresh", action="store_true")
    args = parser.parse_args()
    import werkzeug.serving

    server = werkzeug.serving.make_server("127.0.0.1", args.port, build(args), threaded=True)
    print(f"listening {server.server_port}", flush=True)
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
