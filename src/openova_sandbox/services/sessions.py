"""The sessions use cases: list, create, get and delete Sandboxes for a caller.

Validation order, names, labels and error texts follow sessions-api.md exactly; the
HTTP layer only parses the body and maps errors. Ownership: a caller sees their own
sandboxes; an org admin may see (and delete) every sandbox of their org. Someone
else's sandbox is reported as not found, so existence never leaks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from ..domain import naming
from ..domain.catalogue import Catalogue
from ..domain.errors import AlreadyExists, Invalid, NotFound
from ..domain.model import (
    ANNOTATION_DISPLAY_NAME,
    ANNOTATION_SUB,
    LABEL_AGENT,
    LABEL_ORG,
    LABEL_OWNER,
    ObjectMeta,
    Quota,
    Sandbox,
    SandboxSpec,
    format_time,
    utcnow,
)
from ..domain.principal import Principal
from ..events.bus import SANDBOX_REQUESTED, Event, EventBus, spec_hash
from ..store.base import Store

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class CreateRequest:
    agent: str
    name: str | None = None
    repo: str | None = None


@dataclass(frozen=True)
class SessionsPolicy:
    """Values from Settings that shape new sandboxes."""

    default_namespace: str
    quota: Quota


class SessionsService:
    def __init__(
        self,
        *,
        store: Store,
        catalogue: Catalogue,
        policy: SessionsPolicy,
        bus: EventBus,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._catalogue = catalogue
        self._policy = policy
        self._bus = bus
        self._clock = clock

    @property
    def catalogue(self) -> Catalogue:
        return self._catalogue

    def namespace_of(self, principal: Principal) -> str:
        return naming.namespace_for(principal.org, self._policy.default_namespace)

    def owns(self, principal: Principal, sandbox: Sandbox) -> bool:
        """Same namespace and the same subject (else, for foreign objects, the same email)."""
        if sandbox.namespace != self.namespace_of(principal):
            return False
        owner_sub = sandbox.metadata.annotations.get(ANNOTATION_SUB)
        if owner_sub:
            return owner_sub == principal.sub
        email = principal.email.strip().lower()
        return bool(email) and sandbox.spec.owner_email.strip().lower() == email

    def can_see(self, principal: Principal, sandbox: Sandbox) -> bool:
        """The owner, or an org admin of the sandbox's namespace."""
        if sandbox.namespace != self.namespace_of(principal):
            return False
        return principal.is_org_admin or self.owns(principal, sandbox)

    async def list(self, principal: Principal, *, org_scope: bool = False) -> list[Sandbox]:
        namespace = self.namespace_of(principal)
        items = await self._store.list(namespace)
        if org_scope and principal.is_org_admin:
            return items
        return [s for s in items if self.owns(principal, s)]

    async def get(self, principal: Principal, sandbox_id: str) -> Sandbox:
        namespace = self.namespace_of(principal)
        try:
            sandbox = await self._store.get(namespace, sandbox_id)
        except NotFound:
            sandbox = None
        if sandbox is None or not self.can_see(principal, sandbox):
            raise NotFound(
                f'sandbox "{sandbox_id}" not found in namespace "{namespace}"',
                code="sandbox-not-found",
            )
        return sandbox

    async def delete(self, principal: Principal, sandbox_id: str) -> None:
        """Idempotent: a sandbox that is already gone is not an error."""
        namespace = self.namespace_of(principal)
        try:
            sandbox = await self._store.get(namespace, sandbox_id)
        except NotFound:
            return
        if not self.can_see(principal, sandbox):
            raise NotFound(
                f'sandbox "{sandbox_id}" not found in namespace "{namespace}"',
                code="sandbox-not-found",
            )
        try:
            await self._store.delete(namespace, sandbox_id)
        except NotFound:
            return
        log.info("sandbox delete requested", sandbox=sandbox_id, namespace=namespace)

    def validate(self, principal: Principal, request: CreateRequest) -> None:
        """Rules 4 to 6 of the create route, in order."""
        agent = request.agent
        if not agent.strip():
            raise Invalid("agent is required", code="missing-agent")
        slugs = self._catalogue.api_slugs
        if agent not in slugs:
            raise Invalid(
                f'agent "{agent}" not in catalogue {{{", ".join(slugs)}}}', code="invalid-agent"
            )
        if request.repo and not naming.is_valid_repo(request.repo):
            raise Invalid(
                f'repo "{request.repo}" is not of the form org/repo '
                "(lowercase org; letters, digits, '.', '_' and '-')",
                code="invalid-repo",
            )
        if not principal.email:
            raise Invalid(
                "your token has no email claim; the sandbox owner is identified by email",
                code="owner-email-missing",
            )

    def build(self, principal: Principal, request: CreateRequest) -> Sandbox:
        namespace = self.namespace_of(principal)
        sandbox_id = naming.object_name(agent=request.agent, sub=principal.sub, name=request.name)
        display = naming.display_name(request.name)
        slug = naming.org_slug(principal.org)
        annotations = {ANNOTATION_SUB: principal.sub}
        if display and display != sandbox_id:
            annotations[ANNOTATION_DISPLAY_NAME] = display
        return Sandbox(
            metadata=ObjectMeta(
                name=sandbox_id,
                namespace=namespace,
                labels={
                    LABEL_AGENT: request.agent,
                    LABEL_ORG: slug,
                    LABEL_OWNER: naming.label_value(naming.owner_uid(principal.email)),
                },
                annotations=annotations,
            ),
            spec=SandboxSpec(
                owner_email=principal.email,
                org_slug=slug,
                quota=self._policy.quota,
                agent_catalogue=(request.agent,),
                repos=(request.repo,) if request.repo else (),
            ),
        )

    async def create(self, principal: Principal, request: CreateRequest) -> Sandbox:
        self.validate(principal, request)
        sandbox = self.build(principal, request)
        try:
            stored = await self._store.create(sandbox)
        except AlreadyExists as exc:
            raise AlreadyExists(
                f'sandbox "{sandbox.name}" already exists in namespace "{sandbox.namespace}"',
                code="sandbox-already-exists",
            ) from exc
        log.info("sandbox created", sandbox=stored.name, namespace=stored.namespace)
        await self._publish_requested(principal, stored)
        return stored

    async def _publish_requested(self, principal: Principal, sandbox: Sandbox) -> None:
        payload: dict[str, Any] = {
            "tenant_id": sandbox.namespace,
            "sandbox_id": sandbox.name,
            "requested_by": principal.email or principal.sub,
            "timestamp": format_time(self._clock()),
            "spec_hash": spec_hash(sandbox.spec.to_dict()),
        }
        try:
            await self._bus.publish(Event(SANDBOX_REQUESTED, payload))
        except Exception:  # best effort by contract: never fail a stored create
            log.exception("sandbox_requested event not published", sandbox=sandbox.name)
