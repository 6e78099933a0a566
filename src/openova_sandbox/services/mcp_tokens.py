"""Each sandbox's MCP token: what its agents present to the MCP server (issue 14,
docs/mcp.md, "Server and tokens").

**What it is.** An ES256 JWT signed by this server's own issuer key (``auth.issuer``;
in Kubernetes mode the key every replica shares, Secret ``sandbox-issuer-key``), whatever
issuer the *users* sign in with. It names one sandbox (namespace, name, uid), its owner
(subject and email), its org and the sandbox's ``spec.capabilities`` at issue time, with
``purpose: mcp`` and the audience :data:`MCP_AUDIENCE`. It lives :data:`TOKEN_TTL` and is
issued again at each agent spawn (the agents' MCP config is written then).

**Never a user's token, and the other way round.** The API's authenticator refuses any
token whose ``purpose`` is ``mcp`` (``auth.authenticator``), and :meth:`McpTokens.verify`
requires both the audience and the purpose, which no user token, login link or personal
access token carries. An MCP token therefore opens ``/mcp`` and nothing else, and a
user's own token does not open ``/mcp``.

**Revoked with the sandbox, without a token table.** :meth:`McpTokens.verify` also asks
for the live sandbox (the informer's copy, else the store): it must still exist with the
token's ``uid`` and must not be being deleted. A deleted sandbox (even one re-created
under the same name: a new uid) ends every token issued for it, on every replica, since
each reads the same store. That is why the token is signed rather than stored: nothing
has to be written at spawn nor cleaned up at delete, and verification is one signature
check (remembered for 60 s by ``auth.validator``) plus one cache lookup.

**The URL agents use.** Embedded: this server's loopback address + ``/mcp``, learnt
when it is listening (:meth:`McpTokens.listening`, the same rule as the gateway's
``services.sandbox_tokens``). Kubernetes: ``SANDBOX_KUBE_MCP_URL`` (the MCP Service).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from ..config import Settings
from ..domain.errors import Invalid, NotFound, Unauthenticated
from ..domain.model import ANNOTATION_SUB, Sandbox
from ..domain.model_access import loopback_url
from ..domain.principal import MCP_PURPOSE

if TYPE_CHECKING:
    from ..auth.issuer import EmbeddedIssuer
    from ..auth.validator import TokenValidator

log = structlog.get_logger(__name__)

MCP_AUDIENCE = "urn:openova-sandbox:mcp"
MCP_PATH = "/mcp"
TOKEN_TTL = timedelta(days=30)
SANDBOX_CLAIM = "sandbox"  # {"namespace", "name", "uid"}
OWNER_CLAIM = "owner"  # {"sub", "email"}
CAPABILITIES_CLAIM = "capabilities"


@dataclass(frozen=True)
class McpClaims:
    """What a verified MCP token says: the sandbox, its owner and org, and the
    sandbox's capabilities when the token was issued (empty: the plan alone)."""

    namespace: str
    sandbox: str
    uid: str
    owner_sub: str
    owner_email: str
    org: str
    capabilities: tuple[str, ...] = ()
    expires_at: float | None = None


@dataclass(frozen=True)
class McpAccess:
    """What an agent's MCP client config needs: the server's URL and the token."""

    url: str
    token: str = field(repr=False)


class SandboxLookup(Protocol):
    """The live sandbox a token names (``None``: gone)."""

    async def current(
        self, namespace: str, name: str, *, sub: str, email: str
    ) -> Sandbox | None: ...


class InformerLookup:
    """The informer's copy when it is live (an index lookup), else the store. A name
    the copy does not hold is read from the store too (a sandbox created a moment ago
    may not be in the copy yet)."""

    def __init__(self, store: Any, informer: Any = None) -> None:
        self._store = store
        self._informer = informer

    async def current(self, namespace: str, name: str, *, sub: str, email: str) -> Sandbox | None:
        informer = self._informer
        if informer is not None and informer.live:
            for sandbox in informer.owned(namespace, sub=sub, email=email):
                if sandbox.name == name:
                    return sandbox  # type: ignore[no-any-return]
        try:
            found: Sandbox | None = await self._store.get(namespace, name)
        except NotFound:
            return None
        return found


def capabilities_of(sandbox: Sandbox) -> tuple[str, ...]:
    """The sandbox's ``spec.capabilities`` (strings only; anything else is ignored)."""
    raw = sandbox.spec.extra.get("capabilities")
    if not isinstance(raw, list | tuple):
        return ()
    return tuple(c.strip() for c in raw if isinstance(c, str) and c.strip())


class McpTokens:
    """Issues and verifies the sandboxes' MCP tokens (see the module docstring).

    Stable API (the spawn path and the MCP server use it):

    - ``issue(sandbox) -> str``: a fresh token for the sandbox (sync, no I/O);
    - ``await verify(token) -> McpClaims``: ``Unauthenticated`` with a detail saying why
      (never the token) when it is not a live MCP token;
    - ``url`` / ``access(sandbox) -> McpAccess | None``: where agents reach the server
      (``None`` while unknown: embedded before the server listens, Kubernetes without
      ``SANDBOX_KUBE_MCP_URL``);
    - ``listening(host, port)``: hook for ``AppDeps.on_bound``.
    """

    def __init__(
        self,
        issuer: EmbeddedIssuer,
        lookup: SandboxLookup | None,
        *,
        url: str = "",
        ttl: timedelta = TOKEN_TTL,
    ) -> None:
        self._issuer = issuer
        self._lookup = lookup
        self._ttl = ttl
        self.url = url
        self._validator: TokenValidator | None = None

    # --- where agents reach the server -------------------------------------------------

    def listening(self, host: str, port: int) -> None:
        """The server is listening on ``host:port``: agents reach ``/mcp`` there."""
        self.url = loopback_url(host, port) + MCP_PATH
        log.info("mcp.agents_url", url=self.url)

    def access(self, sandbox: Sandbox) -> McpAccess | None:
        """The URL and a fresh token for ``sandbox``'s agents; ``None`` while the URL is
        unknown."""
        if not self.url:
            return None
        return McpAccess(url=self.url, token=self.issue(sandbox))

    # --- tokens -------------------------------------------------------------------------

    def issue(self, sandbox: Sandbox) -> str:
        """A token for ``sandbox``'s agents. ``Invalid`` when the sandbox has no uid
        (not stored yet) or no owner."""
        meta = sandbox.metadata
        if not meta.uid:
            raise Invalid(
                f'sandbox "{sandbox.name}" has no uid yet: store it before issuing its MCP token',
                code="invalid-sandbox",
            )
        owner_sub = meta.annotations.get(ANNOTATION_SUB, "")
        owner_email = sandbox.spec.owner_email
        if not (owner_sub or owner_email):
            raise Invalid(f'sandbox "{sandbox.name}" has no owner', code="invalid-sandbox")
        extra: dict[str, Any] = {
            "purpose": MCP_PURPOSE,
            SANDBOX_CLAIM: {"namespace": sandbox.namespace, "name": sandbox.name, "uid": meta.uid},
            OWNER_CLAIM: {"sub": owner_sub, "email": owner_email},
            CAPABILITIES_CLAIM: list(capabilities_of(sandbox)),
        }
        return self._issuer.mint(
            sub=owner_sub or owner_email,
            email=owner_email,
            # the org as the owner's own token named it: the sandbox's namespace is that
            # org verbatim (domain.naming.namespace_for), so the owner's rights resolve
            # to the same namespace
            org=sandbox.namespace,
            ttl=self._ttl,
            extra=extra,
            audience=MCP_AUDIENCE,
        )

    @property
    def issuer_id(self) -> str:
        """The ``iss`` of the tokens issued here."""
        return self._issuer.issuer

    @property
    def validator(self) -> TokenValidator:
        if self._validator is None:
            from ..auth.keys import StaticKeySource
            from ..auth.validator import TokenValidator

            self._validator = TokenValidator(
                StaticKeySource(self._issuer.jwks()),
                issuer=self._issuer.issuer,
                audience=MCP_AUDIENCE,
            )
        return self._validator

    async def verify(self, token: str) -> McpClaims:
        """The claims of a live sandbox's MCP token; ``Unauthenticated`` otherwise."""
        try:
            raw = await self.validator.validate(token)
        except Unauthenticated as exc:
            raise Unauthenticated(_why_not(token, exc.detail)) from exc
        claims = _claims(raw)
        if self._lookup is not None:
            live = await self._lookup.current(
                claims.namespace, claims.sandbox, sub=claims.owner_sub, email=claims.owner_email
            )
            if live is None or live.metadata.uid != claims.uid:
                raise Unauthenticated(
                    f'sandbox "{claims.sandbox}" of this MCP token no longer exists: '
                    "its token was revoked with it"
                )
            if live.deleting:
                raise Unauthenticated(
                    f'sandbox "{claims.sandbox}" of this MCP token is being deleted: '
                    "its token was revoked with it"
                )
        return claims


def _why_not(token: str, detail: str) -> str:
    """Why a token is refused, saying plainly when it is someone's own sign-in token or
    access token (its unverified payload only shapes the message, never the decision)."""
    if token.count(".") != 2:
        return (
            "not an MCP token of this server: a personal access token or other opaque "
            "token is not accepted here; agents use their sandbox's MCP token"
        )
    try:
        import jwt

        unverified = jwt.decode(token, options={"verify_signature": False})
    except Exception:  # any failure: the validator's reason stands
        unverified = None
    if isinstance(unverified, dict) and unverified.get("purpose") != MCP_PURPOSE:
        return (
            "not an MCP token of this server: a user's sign-in token is not accepted here; "
            f"agents use their sandbox's MCP token ({detail})"
        )
    return f"not an MCP token of this server: {detail}"


def _claims(raw: Mapping[str, Any]) -> McpClaims:
    if raw.get("purpose") != MCP_PURPOSE:
        raise Unauthenticated("not an MCP token (its purpose is not mcp)")
    box = raw.get(SANDBOX_CLAIM)
    owner = raw.get(OWNER_CLAIM)
    if not isinstance(box, Mapping) or not isinstance(owner, Mapping):
        raise Unauthenticated("MCP token without its sandbox or owner claim")
    namespace, name, uid = (_text(box, k) for k in ("namespace", "name", "uid"))
    sub, email = _text(owner, "sub"), _text(owner, "email")
    if not (namespace and name and uid and (sub or email)):
        raise Unauthenticated("MCP token with an incomplete sandbox or owner claim")
    caps = raw.get(CAPABILITIES_CLAIM) or []
    if not isinstance(caps, Sequence) or isinstance(caps, str):
        raise Unauthenticated("MCP token whose capabilities are not a list")
    org = raw.get("org_id")
    exp = raw.get("exp")
    return McpClaims(
        namespace=namespace,
        sandbox=name,
        uid=uid,
        owner_sub=sub,
        owner_email=email,
        org=org if isinstance(org, str) else "",
        capabilities=tuple(c for c in caps if isinstance(c, str)),
        expires_at=float(exp) if isinstance(exp, int | float) else None,
    )


def _text(source: Mapping[str, Any], key: str) -> str:
    value = source.get(key)
    return value if isinstance(value, str) else ""


RENEW_BEFORE = timedelta(days=7)  # a pod's token is replaced this long before it expires


class PodMcpTokens:
    """The Kubernetes operator's MCP tokens for sandbox pods
    (``controller.ports.McpTokenSource``; ``controller/kube/mcp_token.py`` keeps each in
    the sandbox's ``sandbox-mcp-token`` Secret). A token the pod holds is still good when
    it is signed by this issuer for this very sandbox (uid included) with its current
    capabilities, and is not within ``renew_before`` of its expiry; otherwise the
    operator writes a new one (and the pod starts again with it)."""

    def __init__(
        self,
        tokens: McpTokens,
        *,
        renew_before: timedelta = RENEW_BEFORE,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._tokens = tokens
        self._renew_before = renew_before.total_seconds()
        self._clock = clock or time.time

    def issue(self, sandbox: Sandbox) -> str:
        return self._tokens.issue(sandbox)

    async def current(self, token: str, sandbox: Sandbox) -> bool:
        try:
            claims = await self._tokens.verify(token)
        except Unauthenticated:
            return False
        if (claims.namespace, claims.sandbox, claims.uid) != (
            sandbox.namespace,
            sandbox.name,
            sandbox.metadata.uid,
        ):
            return False
        if claims.capabilities != capabilities_of(sandbox):
            return False
        expires = claims.expires_at
        return expires is None or expires - self._clock() > self._renew_before


def pod_mcp_tokens(settings: Settings) -> PodMcpTokens | None:
    """The operator's MCP tokens from Settings: the control plane's issuer key
    (``SANDBOX_ISSUER_KEY``) and the MCP server the pods' agents reach
    (``SANDBOX_KUBE_MCP_URL``); ``None`` without either (no MCP for pods' agents)."""
    if not (settings.issuer_key and settings.kube_mcp_url):
        return None
    from ..auth.issuer import EmbeddedIssuer

    issuer = EmbeddedIssuer.from_pem(settings.issuer_key, issuer_url=settings.public_url)
    return PodMcpTokens(McpTokens(issuer, None, url=settings.kube_mcp_url))
