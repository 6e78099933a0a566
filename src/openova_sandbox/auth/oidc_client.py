"""The OAuth 2.0 / OpenID Connect client side: discovery, the authorization request
(code + PKCE S256, state, nonce), the token endpoint (code, refresh, device code),
device authorization (RFC 8628), revocation (RFC 7009) and RP-initiated logout.

Used by the console's sign-in routes (``api/routes/oidc.py``) and by ``sandbox login``.
Everything the issuer does is read from its discovery document; an endpoint it does
not list is an ability it lacks (no revocation: logout forgets locally; no
``end_session_endpoint``: logout ends only our session; no
``device_authorization_endpoint``: the CLI uses a loopback redirect).

Tokens are never logged; errors carry the endpoint and the issuer's ``error`` code.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from ..domain.errors import BackendUnavailable, Unauthenticated
from .oidc import FetchFailed, RemoteJwks, _get_json, _httpx, discovery_url
from .validator import TokenValidator

if TYPE_CHECKING:
    import httpx

DISCOVERY_TTL_S = 600.0
TIMEOUT_S = 10.0


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def new_secret() -> str:
    """32 random bytes, base64url: states, nonces, PKCE verifiers, session ids."""
    return b64url(secrets.token_bytes(32))


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 S256: base64url(SHA-256(verifier)), no padding."""
    return b64url(hashlib.sha256(verifier.encode("ascii")).digest())


class TokenError(Unauthenticated):
    """The issuer refused a grant (``error`` is its code: ``invalid_grant``, …)."""

    def __init__(self, detail: str, *, error: str = "") -> None:
        super().__init__(detail)
        self.error = error


@dataclass(frozen=True)
class Provider:
    """What discovery says about the issuer (only the fields we use)."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str = ""
    userinfo_endpoint: str = ""
    end_session_endpoint: str = ""
    revocation_endpoint: str = ""
    device_authorization_endpoint: str = ""
    code_challenge_methods: tuple[str, ...] = ()

    @classmethod
    def from_document(cls, document: Mapping[str, Any], *, where: str) -> Provider:
        def url(name: str, *, required: bool = False) -> str:
            value = document.get(name)
            if isinstance(value, str) and value.startswith(("https://", "http://")):
                return value
            if required:
                raise FetchFailed(f"{where}: no usable {name!r} in the discovery document")
            return ""

        methods = document.get("code_challenge_methods_supported")
        return cls(
            issuer=str(document.get("issuer") or ""),
            authorization_endpoint=url("authorization_endpoint", required=True),
            token_endpoint=url("token_endpoint", required=True),
            jwks_uri=url("jwks_uri"),
            userinfo_endpoint=url("userinfo_endpoint"),
            end_session_endpoint=url("end_session_endpoint"),
            revocation_endpoint=url("revocation_endpoint"),
            device_authorization_endpoint=url("device_authorization_endpoint"),
            code_challenge_methods=tuple(m for m in methods if isinstance(m, str))
            if isinstance(methods, list)
            else (),
        )


@dataclass(frozen=True)
class TokenSet:
    """A token endpoint's answer. Secrets stay out of ``repr`` (and so out of logs)."""

    access_token: str = field(repr=False)
    expires_at: float | None
    refresh_token: str = field(default="", repr=False)
    id_token: str = field(default="", repr=False)
    scope: str = ""

    @classmethod
    def from_response(cls, body: Mapping[str, Any], *, now: float) -> TokenSet:
        access = body.get("access_token")
        if not isinstance(access, str) or not access:
            raise TokenError("the token endpoint answered no access_token")
        expires_in = body.get("expires_in")
        expires_at = (
            now + float(expires_in)
            if isinstance(expires_in, int | float) and not isinstance(expires_in, bool)
            else None
        )

        def text(key: str) -> str:
            value = body.get(key)
            return value if isinstance(value, str) else ""

        return cls(
            access_token=access,
            expires_at=expires_at,
            refresh_token=text("refresh_token"),
            id_token=text("id_token"),
            scope=text("scope"),
        )

    def bearer(self) -> str:
        """The token to present to this server: the access token when it is a JWT (the
        issuer's API token, e.g. Keycloak's), else the ID token (issuers whose access
        tokens are opaque: only the ID token can be checked here)."""
        if self.access_token.count(".") == 2 or not self.id_token:
            return self.access_token
        return self.id_token


@dataclass(frozen=True)
class DeviceAuthorization:
    device_code: str = field(repr=False)
    user_code: str
    verification_uri: str
    verification_uri_complete: str
    expires_at: float
    interval: float


class OidcClient:
    """One client registration at one issuer. ``transport`` and ``clock`` for tests."""

    def __init__(
        self,
        *,
        issuer: str,
        client_id: str,
        client_secret: str = "",
        scopes: str = "openid email profile",
        keys: RemoteJwks | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self._issuer_setting = issuer
        self.client_id = client_id
        self._secret = client_secret
        self.scopes = " ".join(scopes.split()) or "openid"
        self._transport = transport
        self._clock = clock
        self._provider: Provider | None = None
        self._provider_at = 0.0
        # the ID token's signature: the issuer's JWKS (shared with the API's validator)
        self._keys = keys or RemoteJwks(issuer=issuer, transport=transport)
        self._id_tokens = TokenValidator(self._keys, issuer=issuer, audience=client_id)

    def _client(self) -> httpx.AsyncClient:
        client: httpx.AsyncClient = _httpx().AsyncClient(
            timeout=TIMEOUT_S, follow_redirects=False, transport=self._transport
        )
        return client

    async def provider(self) -> Provider:
        """The discovery document (cached 10 min); ``BackendUnavailable`` when the
        issuer cannot be asked."""
        now = time.monotonic()
        if self._provider is not None and now - self._provider_at < DISCOVERY_TTL_S:
            return self._provider
        url = discovery_url(self._issuer_setting)
        try:
            async with self._client() as client:
                document = await _get_json(client, url)
            provider = Provider.from_document(document, where=url)
        except FetchFailed as exc:
            if self._provider is not None:
                return self._provider  # the issuer blipped: what it said a moment ago
            raise BackendUnavailable(
                f"the identity provider cannot be reached: {exc}", code="issuer-unavailable"
            ) from exc
        self._provider, self._provider_at = provider, now
        return provider

    # --- the authorization request ------------------------------------------------
    async def authorization_url(
        self,
        *,
        redirect_uri: str,
        state: str,
        nonce: str,
        verifier: str,
        extra: Mapping[str, str] | None = None,
    ) -> str:
        provider = await self.provider()
        params = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": redirect_uri,
            "scope": self.scopes,
            "state": state,
            "nonce": nonce,
            "code_challenge": pkce_challenge(verifier),
            "code_challenge_method": "S256",
            **(extra or {}),
        }
        sep = "&" if "?" in provider.authorization_endpoint else "?"
        return provider.authorization_endpoint + sep + urlencode(params)

    # --- the token endpoint ------------------------------------------------------
    async def exchange_code(self, *, code: str, redirect_uri: str, verifier: str) -> TokenSet:
        return await self._token(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": verifier,
            }
        )

    async def refresh(self, refresh_token: str) -> TokenSet:
        return await self._token(
            {"grant_type": "refresh_token", "refresh_token": refresh_token, "scope": self.scopes}
        )

    async def _token(self, form: dict[str, str]) -> TokenSet:
        provider = await self.provider()
        body = await self._post(provider.token_endpoint, form)
        return TokenSet.from_response(body, now=self._clock())

    def _auth(self, form: dict[str, str]) -> tuple[dict[str, str], Any]:
        """client_secret_basic for a confidential client; a public one names itself."""
        if self._secret:
            return form, (self.client_id, self._secret)
        return {**form, "client_id": self.client_id}, None

    async def _post(
        self, url: str, form: dict[str, str], *, expect_json: bool = True
    ) -> dict[str, Any]:
        httpx = _httpx()
        data, auth = self._auth(form)
        try:
            async with self._client() as client:
                response = await client.post(
                    url, data=data, auth=auth, headers={"Accept": "application/json"}
                )
        except httpx.HTTPError as exc:
            raise BackendUnavailable(
                f"the identity provider cannot be reached ({url}: {type(exc).__name__})",
                code="issuer-unavailable",
            ) from exc
        try:
            body: Any = response.json() if response.content else {}
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        result: dict[str, Any] = body
        if response.status_code >= 500:
            raise BackendUnavailable(
                f"the identity provider answered HTTP {response.status_code} ({url})",
                code="issuer-unavailable",
            )
        if response.status_code >= 400:
            error = str(body.get("error") or "")
            description = str(body.get("error_description") or "")
            raise TokenError(
                f"{url} refused: HTTP {response.status_code} {error} {description}".strip(),
                error=error,
            )
        return result

    # --- the ID token -------------------------------------------------------------
    async def id_token_claims(self, id_token: str, *, nonce: str | None) -> dict[str, Any]:
        """The ID token's claims once its signature, ``iss``, ``aud`` (our client id),
        time and — at sign-in — ``nonce`` are checked (OIDC Core 3.1.3.7)."""
        claims = await self._id_tokens.validate(id_token)
        if nonce is not None and claims.get("nonce") != nonce:
            raise Unauthenticated("the ID token's nonce is not the one this sign-in sent")
        aud = claims.get("aud")
        if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != self.client_id:
            raise Unauthenticated("the ID token names several audiences and another azp")
        return claims

    # --- device authorization (RFC 8628) -------------------------------------------
    async def start_device(self) -> DeviceAuthorization:
        provider = await self.provider()
        if not provider.device_authorization_endpoint:
            raise TokenError("the issuer offers no device authorization")
        body = await self._post(provider.device_authorization_endpoint, {"scope": self.scopes})
        device_code, user_code = body.get("device_code"), body.get("user_code")
        uri = body.get("verification_uri") or body.get("verification_url")
        if not all(isinstance(v, str) and v for v in (device_code, user_code, uri)):
            raise TokenError("the device authorization answer lacks device_code/user_code/uri")
        complete = body.get("verification_uri_complete")
        expires_in = body.get("expires_in")
        interval = body.get("interval")
        now = self._clock()
        return DeviceAuthorization(
            device_code=str(device_code),
            user_code=str(user_code),
            verification_uri=str(uri),
            verification_uri_complete=complete if isinstance(complete, str) else "",
            expires_at=now + (float(expires_in) if isinstance(expires_in, int | float) else 600),
            interval=float(interval) if isinstance(interval, int | float) and interval > 0 else 5,
        )

    async def poll_device(self, device: DeviceAuthorization) -> TokenSet | float:
        """The tokens once the user approved; else the seconds to wait before asking
        again (``authorization_pending``, ``slow_down`` adds 5 s as RFC 8628 says).
        ``TokenError`` when denied or expired."""
        try:
            return await self._token(
                {
                    "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                    "device_code": device.device_code,
                }
            )
        except TokenError as exc:
            if exc.error == "authorization_pending":
                return device.interval
            if exc.error == "slow_down":
                return device.interval + 5
            raise

    # --- revocation and logout ----------------------------------------------------
    async def revoke(self, token: str, *, hint: str = "refresh_token") -> bool:
        """RFC 7009; ``False`` when the issuer offers no revocation endpoint."""
        provider = await self.provider()
        if not provider.revocation_endpoint:
            return False
        await self._post(provider.revocation_endpoint, {"token": token, "token_type_hint": hint})
        return True

    async def end_session_url(
        self, *, id_token_hint: str, post_logout_redirect_uri: str, state: str = ""
    ) -> str:
        """RP-initiated logout (OIDC RP-Initiated Logout 1.0); ``""`` when the issuer
        lists no ``end_session_endpoint``."""
        provider = await self.provider()
        if not provider.end_session_endpoint:
            return ""
        params = {"client_id": self.client_id, "post_logout_redirect_uri": post_logout_redirect_uri}
        if id_token_hint:
            params["id_token_hint"] = id_token_hint
        if state:
            params["state"] = state
        sep = "&" if "?" in provider.end_session_endpoint else "?"
        return provider.end_session_endpoint + sep + urlencode(params)
