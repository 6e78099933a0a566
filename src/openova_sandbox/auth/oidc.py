"""The keys of a remote OIDC issuer: discovery, JWKS fetch, cache and refetch.

Decisions, each with its reason:

* **Where the JWKS is.** ``jwks_url`` when configured (no discovery round trip), else
  ``<issuer>/.well-known/openid-configuration`` → ``jwks_uri``. The discovered URI is
  remembered; it is looked up again only after a JWKS fetch has failed.
* **Cache.** A fetched key set is used for ``ttl_s`` (10 min) before it is refreshed, so
  a normal request costs no network round trip.
* **Key rotation.** A token whose ``kid`` is not in the cached set triggers an immediate
  refetch — the issuer has probably just rotated — but **at most one fetch per
  ``min_refetch_interval_s``** (10 s) whatever the reason, and concurrent requests share
  one fetch (a lock). A flood of tokens with made-up kids therefore costs the issuer one
  request per 10 s, not one per token.
* **Issuer down.** A failed fetch keeps the previous key set (stale but still the
  issuer's real keys) and is logged; tokens keep validating against it, and the next
  attempt is made after ``min_refetch_interval_s``. Rejecting every user because the
  issuer blipped would turn an issuer outage into ours, while a key the issuer has
  *revoked* can only be noticed once it answers again anyway. With no key set at all,
  the request is :class:`Unauthenticated` (a 401, logged with the reason).
* **Never logged:** tokens. Logs carry the URL, the kid asked for and the error.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

import structlog

from ..domain.errors import Unauthenticated
from .keys import PublicKey, has_kid, keys_from_jwks, select

if TYPE_CHECKING:  # httpx is imported at the first fetch (the pty-server's idle memory)
    import httpx

log = structlog.get_logger(__name__)

DISCOVERY_PATH = "/.well-known/openid-configuration"
MAX_DOCUMENT_BYTES = 1024 * 1024


def _httpx() -> ModuleType:
    """httpx, imported at the first fetch and without its command-line tool:
    ``httpx/__init__`` imports ``httpx._main`` (click, rich and pygments, ~3 MiB) only to
    offer ``httpx`` as a command, which a pty-server fetching its first JWKS never runs
    (httpx falls back to a stub ``main`` when that import fails)."""
    if "httpx" not in sys.modules and "httpx._main" not in sys.modules:
        sys.modules["httpx._main"] = None  # type: ignore[assignment]
        try:
            import httpx
        finally:
            del sys.modules["httpx._main"]
    import httpx

    return httpx


class FetchFailed(Exception):
    """A discovery or JWKS document could not be fetched or made no sense (internal)."""


def discovery_url(issuer: str) -> str:
    return issuer.rstrip("/") + DISCOVERY_PATH


class RemoteJwks:
    """A :class:`~openova_sandbox.auth.keys.KeySource` backed by an issuer's JWKS over HTTP.

    Give ``jwks_url`` or ``issuer`` (or both: the URL wins, the issuer is then only used
    by the validator). ``clock`` is monotonic seconds, injectable for tests.
    """

    def __init__(
        self,
        *,
        jwks_url: str = "",
        issuer: str = "",
        ttl_s: float = 600.0,
        min_refetch_interval_s: float = 10.0,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not jwks_url and not issuer:
            raise ValueError("RemoteJwks needs a jwks_url or an issuer")
        self._jwks_url = jwks_url
        self._issuer = issuer
        self._discovered: str = ""
        self._ttl = ttl_s
        self._min_interval = min_refetch_interval_s
        self._timeout = timeout_s
        self._clock = clock
        self._transport = transport
        self._keys: list[PublicKey] | None = None
        self._fetched_at = 0.0
        self._last_attempt: float | None = None
        self._lock = asyncio.Lock()

    @property
    def source(self) -> str:
        """What this source reads from, for logs and errors."""
        return self._jwks_url or discovery_url(self._issuer)

    async def keys_for(self, kid: str | None) -> list[PublicKey]:
        if self._keys is None or self._clock() - self._fetched_at >= self._ttl:
            await self._refresh(reason="initial" if self._keys is None else "expired")
        elif kid is not None and not has_kid(self._keys, kid):
            await self._refresh(reason="unknown-kid", kid=kid)
        if self._keys is None:
            raise Unauthenticated(
                f"no signing keys: the issuer's JWKS ({self.source}) is unavailable"
            )
        return select(self._keys, kid)

    async def _refresh(self, *, reason: str, kid: str | None = None) -> None:
        async with self._lock:
            now = self._clock()
            if self._last_attempt is not None and now - self._last_attempt < self._min_interval:
                return  # fetched (or tried) a moment ago, possibly by a concurrent request
            if (
                reason == "unknown-kid"
                and kid is not None
                and self._keys is not None
                and has_kid(self._keys, kid)
            ):
                return
            self._last_attempt = now
            try:
                keys = await self._fetch()
            except FetchFailed as exc:
                log.warning(
                    "auth.jwks.fetch_failed",
                    source=self.source,
                    reason=reason,
                    kid=kid,
                    error=str(exc),
                    using_stale_keys=self._keys is not None,
                )
                self._discovered = ""
                return
            self._keys = keys
            self._fetched_at = self._clock()
            log.info(
                "auth.jwks.fetched",
                source=self.source,
                reason=reason,
                kid=kid,
                kids=[k.kid for k in keys],
            )

    async def _fetch(self) -> list[PublicKey]:
        httpx = _httpx()
        async with httpx.AsyncClient(
            timeout=self._timeout, follow_redirects=True, transport=self._transport
        ) as client:
            url = self._jwks_url or await self._jwks_uri(client)
            document = await _get_json(client, url)
        try:
            keys = keys_from_jwks(document, origin=url)
        except ValueError as exc:
            raise FetchFailed(f"{url}: {exc}") from exc
        if not keys:
            raise FetchFailed(f"{url}: no usable RS256/ES256 key in the JWKS")
        return keys

    async def _jwks_uri(self, client: httpx.AsyncClient) -> str:
        if self._discovered:
            return self._discovered
        url = discovery_url(self._issuer)
        document = await _get_json(client, url)
        uri = document.get("jwks_uri")
        if not isinstance(uri, str) or not uri.startswith(("https://", "http://")):
            raise FetchFailed(f"{url}: no usable 'jwks_uri' in the discovery document")
        advertised = document.get("issuer")
        if isinstance(advertised, str) and advertised.rstrip("/") != self._issuer.rstrip("/"):
            # OIDC requires them to match; tokens are still checked against *our* setting.
            log.warning("auth.oidc.issuer_mismatch", configured=self._issuer, advertised=advertised)
        self._discovered = uri
        return uri


async def _get_json(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    httpx = _httpx()
    try:
        response = await client.get(url, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise FetchFailed(f"{url}: {type(exc).__name__}: {exc}") from exc
    if response.status_code != 200:
        raise FetchFailed(f"{url}: HTTP {response.status_code}")
    if len(response.content) > MAX_DOCUMENT_BYTES:
        raise FetchFailed(f"{url}: document larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        document = response.json()
    except ValueError as exc:
        raise FetchFailed(f"{url}: not JSON") from exc
    if not isinstance(document, dict):
        raise FetchFailed(f"{url}: not a JSON object")
    return document
