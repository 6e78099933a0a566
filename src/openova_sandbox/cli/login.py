"""`sandbox login` / `sandbox logout`: the CLI signed in with the server's OIDC issuer.

* **Which issuer and client:** the server says (``GET /api/v1/sandbox/auth/config``:
  ``issuer``, ``cliClientId``, ``scopes``); the client is a public one (PKCE, no secret:
  a secret cannot be kept on a laptop).
* **How:** the device authorization grant (RFC 8628) when the issuer's discovery lists a
  ``device_authorization_endpoint`` — it works over SSH and on machines without a
  browser — else the authorization code flow with PKCE through a loopback redirect
  (RFC 8252: ``http://127.0.0.1:<free port>/callback``, state and nonce checked).
  ``--loopback`` forces the latter.
* **What is kept:** per server, the issuer's tokens (access, refresh, ID) and the org
  asked for, in ``$XDG_CONFIG_HOME/openova-sandbox/credentials.json`` (default
  ``~/.config``), file 0600 in a 0700 directory, written atomically.
* **Use:** the other commands take the token from there when ``SANDBOX_TOKEN`` is not
  set, refreshing it first when it has expired or is about to (and saving the new one).
  The token presented is the access token when it is a JWT, else the ID token.
* **Logout** revokes the refresh token (and the access token) when the issuer offers
  revocation, then deletes the server's entry (the file when it was the last).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import html
import json
import os
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qs, urlsplit

import typer

from ..domain.errors import SandboxError
from .client import ApiClient, ApiError

if TYPE_CHECKING:  # imported when signing in or refreshing, not at every CLI start
    from ..auth.oidc_client import OidcClient, TokenSet

CREDENTIALS = "credentials.json"
APP_DIR = "openova-sandbox"
REFRESH_BEFORE_S = 30.0
LOOPBACK_WAIT_S = 300.0


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME", "").strip()
    root = Path(base) if base else Path.home() / ".config"
    return root / APP_DIR


def credentials_path() -> Path:
    return config_dir() / CREDENTIALS


@dataclass
class Stored:
    """One server's sign-in. Tokens stay out of ``repr``."""

    issuer: str
    client_id: str
    scopes: str
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    id_token: str = field(repr=False)
    expires_at: float | None
    org: str = ""

    @classmethod
    def of(cls, tokens: TokenSet, *, issuer: str, client_id: str, scopes: str, org: str) -> Stored:
        return cls(
            issuer=issuer,
            client_id=client_id,
            scopes=scopes,
            access_token=tokens.access_token,
            refresh_token=tokens.refresh_token,
            id_token=tokens.id_token,
            expires_at=_bearer_expiry(tokens),
            org=org,
        )

    def bearer(self) -> str:
        from ..auth.oidc_client import TokenSet

        return TokenSet(
            access_token=self.access_token, expires_at=None, id_token=self.id_token
        ).bearer()


def _bearer_expiry(tokens: TokenSet) -> float | None:
    """When the token presented expires: a JWT's ``exp`` (read, not verified: the server
    verifies), else the token endpoint's ``expires_in``."""
    exp = _jwt_exp(tokens.bearer())
    return exp if exp is not None else tokens.expires_at


def _jwt_exp(token: str) -> float | None:
    if token.count(".") != 2:
        return None
    payload = token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


# --- the file ------------------------------------------------------------------------
def _key(server: str) -> str:
    return server.rstrip("/")


def load_all() -> dict[str, Any]:
    path = credentials_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}
    servers = data.get("servers") if isinstance(data, dict) else None
    return servers if isinstance(servers, dict) else {}


def load(server: str) -> Stored | None:
    entry = load_all().get(_key(server))
    if not isinstance(entry, dict):
        return None
    try:
        return Stored(**entry)
    except TypeError:
        return None


def _write_all(servers: dict[str, Any]) -> None:
    path = credentials_path()
    if not servers:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        path.parent.chmod(0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump({"servers": servers}, out, indent=2)
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def save(server: str, stored: Stored) -> None:
    servers = load_all()
    servers[_key(server)] = asdict(stored)
    _write_all(servers)


def forget(server: str) -> bool:
    servers = load_all()
    if servers.pop(_key(server), None) is None:
        return False
    _write_all(servers)
    return True


def _client(stored: Stored) -> OidcClient:
    from ..auth.oidc_client import OidcClient

    return OidcClient(issuer=stored.issuer, client_id=stored.client_id, scopes=stored.scopes)


def fresh(server: str, stored: Stored, *, now: float | None = None) -> Stored:
    """``stored`` with its token refreshed (and saved) when it has expired or expires
    within 30 s; unchanged otherwise. ``SandboxError`` when the issuer refuses."""
    now = time.time() if now is None else now
    if stored.expires_at is None or stored.expires_at - now > REFRESH_BEFORE_S:
        return stored
    if not stored.refresh_token:
        raise SandboxError("the sign-in has expired and has no refresh token: run `sandbox login`")
    from ..auth.oidc_client import TokenSet

    tokens = asyncio.run(_client(stored).refresh(stored.refresh_token))
    renewed = Stored.of(
        TokenSet(
            access_token=tokens.access_token,
            expires_at=tokens.expires_at,
            refresh_token=tokens.refresh_token or stored.refresh_token,
            id_token=tokens.id_token or stored.id_token,
        ),
        issuer=stored.issuer,
        client_id=stored.client_id,
        scopes=stored.scopes,
        org=stored.org,
    )
    save(server, renewed)
    return renewed


def stored_client(server: str) -> ApiClient | None:
    """An API client with the token `sandbox login` stored for ``server`` (refreshed
    when due), or ``None`` when there is none."""
    stored = load(server)
    if stored is None:
        return None
    from .main import fail

    try:
        stored = fresh(server, stored)
    except SandboxError as exc:
        fail(
            f"the sign-in of `sandbox login` to {server} cannot be renewed "
            f"({exc.detail or exc.code}): run `sandbox login` again"
        )
    return ApiClient(server, stored.bearer(), token_from="sandbox login", org=stored.org)


# --- signing in --------------------------------------------------------------------
async def device_sign_in(client: OidcClient, say: Any) -> TokenSet:
    from ..auth.oidc_client import TokenSet

    device = await client.start_device()
    where = device.verification_uri_complete or device.verification_uri
    say(f"To sign in, open {where}")
    say(f"and enter the code {device.user_code} (it expires in {_minutes(device.expires_at)}).")
    delay = device.interval
    while True:
        if time.time() >= device.expires_at:
            raise SandboxError("the sign-in code expired before it was approved: run it again")
        await asyncio.sleep(delay)  # RFC 8628: the issuer sets the polling interval
        answer = await client.poll_device(device)
        if isinstance(answer, TokenSet):
            return answer
        delay = answer


def _minutes(at: float) -> str:
    return f"{max(1, round((at - time.time()) / 60))} min"


class _Callback(BaseHTTPRequestHandler):
    result: dict[str, str] | None = None
    done: threading.Event

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path != "/callback":
            self.send_error(404)
            return
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        type(self).result = query
        ok = "code" in query and "error" not in query
        text = (
            "Signed in: you can close this tab and go back to the terminal."
            if ok
            else f"Sign-in failed: {query.get('error', 'no code')}"
        )
        body = f"<!doctype html><meta charset=utf-8><p>{html.escape(text)}</p>".encode()
        self.send_response(200 if ok else 400)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        type(self).done.set()

    def log_message(self, format: str, *args: Any) -> None:  # the code is in the URL
        return


async def loopback_sign_in(
    client: OidcClient, say: Any, *, open_browser: bool
) -> tuple[TokenSet, dict[str, Any]]:
    from ..auth.oidc_client import new_secret

    class Callback(_Callback):  # this sign-in's own result and event
        done = threading.Event()
        result = None

    handler = Callback
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        redirect_uri = f"http://127.0.0.1:{server.server_port}/callback"
        state, nonce, verifier = new_secret(), new_secret(), new_secret()
        url = await client.authorization_url(
            redirect_uri=redirect_uri, state=state, nonce=nonce, verifier=verifier
        )
        say("To sign in, open this address in a browser on this machine:")
        say(url)
        if open_browser:
            import webbrowser

            with contextlib.suppress(Exception):
                webbrowser.open(url)
        got = await asyncio.to_thread(handler.done.wait, LOOPBACK_WAIT_S)
        result = handler.result
        if not got or result is None:
            raise SandboxError("no sign-in came back within 5 minutes: run it again")
        if "error" in result:
            raise SandboxError(
                f"the identity provider answered {result['error']}: "
                f"{result.get('error_description', '')}".strip()
            )
        if not secrets.compare_digest(result.get("state", ""), state):
            raise SandboxError("the sign-in's state does not match: run it again")
        tokens = await client.exchange_code(
            code=result.get("code", ""), redirect_uri=redirect_uri, verifier=verifier
        )
        claims: dict[str, Any] = {}
        if tokens.id_token:
            claims = await client.id_token_claims(tokens.id_token, nonce=nonce)
        return tokens, claims
    finally:
        server.shutdown()
        server.server_close()


def login_cmd(
    org: Annotated[
        str | None,
        typer.Option("--org", help="The organization to use when your account belongs to several"),
    ] = None,
    loopback: Annotated[
        bool,
        typer.Option(
            "--loopback",
            help="Sign in through a browser on this machine even when the "
            "issuer offers device codes",
        ),
    ] = False,
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="Print the address; do not open a browser")
    ] = False,
    server: Annotated[
        str | None, typer.Option("--server", help="The server's URL", show_default=False)
    ] = None,
) -> None:
    """Sign in with the server's identity provider (OIDC); the token is kept in your
    config dir (0600) and refreshed when it expires."""
    from ..auth.oidc_client import OidcClient
    from .main import call, err, fail, out, server_url

    url = server_url(server)
    config = call(ApiClient(url, ""), "GET", "/api/v1/sandbox/auth/config")
    issuer = str(config.get("issuer") or "") if isinstance(config, dict) else ""
    client_id = str(config.get("cliClientId") or "") if isinstance(config, dict) else ""
    if not issuer:
        fail(
            f"the server at {url} signs in with its own issuer, not an identity provider: "
            "the CLI uses its data dir (--data-dir) or SANDBOX_TOKEN there"
        )
    if not client_id:
        fail(
            f"the server at {url} names no client for the CLI at {issuer}: its operator "
            "sets SANDBOX_OIDC_CLI_CLIENT_ID (a public client), or use SANDBOX_TOKEN"
        )
    scopes = str(config.get("scopes") or "openid email profile")
    client = OidcClient(issuer=issuer, client_id=client_id, scopes=scopes)

    def say(line: str) -> None:
        err.print(line, highlight=False, markup=False, soft_wrap=True)

    async def run() -> TokenSet:
        provider = await client.provider()
        if provider.device_authorization_endpoint and not loopback:
            tokens = await device_sign_in(client, say)
            if tokens.id_token:  # no nonce in a device grant; the rest is checked
                await client.id_token_claims(tokens.id_token, nonce=None)
            return tokens
        tokens, _ = await loopback_sign_in(client, say, open_browser=not no_browser)
        return tokens

    try:
        tokens = asyncio.run(run())
    except SandboxError as exc:
        fail(exc.detail or exc.code)
    stored = Stored.of(tokens, issuer=issuer, client_id=client_id, scopes=scopes, org=org or "")
    try:
        answer = ApiClient(url, stored.bearer(), org=stored.org).request(
            "GET", "/api/v1/sandbox/whoami"
        )
        who = answer.json()
    except (ApiError, ValueError) as exc:
        fail(f"signed in at the identity provider, but the server at {url} refused it: {exc}")
    save(url, stored)
    name = (who.get("email") or who.get("sub")) if isinstance(who, dict) else "?"
    org_name = who.get("org") if isinstance(who, dict) else ""
    out.print(
        f"Signed in to {url} as {name}" + (f" (organization {org_name})" if org_name else ""),
        highlight=False,
        markup=False,
    )


def logout_cmd(
    server: Annotated[
        str | None, typer.Option("--server", help="The server's URL", show_default=False)
    ] = None,
) -> None:
    """Sign out: revoke the stored tokens at the identity provider when it offers
    revocation, and delete them here."""
    from .main import err, out, server_url

    url = server_url(server)
    stored = load(url)
    if stored is None:
        out.print(f"Not signed in to {url}.", highlight=False, markup=False)
        return
    revoked = False
    try:
        client = _client(stored)

        async def revoke() -> bool:
            done = False
            if stored.refresh_token:
                done = await client.revoke(stored.refresh_token, hint="refresh_token")
            if stored.access_token:
                done = await client.revoke(stored.access_token, hint="access_token") or done
            return done

        revoked = asyncio.run(revoke())
    except SandboxError as exc:
        err.print(
            f"warning: the identity provider did not revoke the tokens: {exc.detail}",
            highlight=False,
            markup=False,
        )
    forget(url)
    how = "revoked at the identity provider and deleted" if revoked else "deleted"
    out.print(f"Signed out of {url}: tokens {how}.", highlight=False, markup=False)
