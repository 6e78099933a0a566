"""The sessions use cases: list, create, get and delete Sandboxes for a caller.

Validation order, names, labels and error texts follow sessions-api.md exactly; the
HTTP layer only parses the body and maps errors. Ownership: a caller sees their own
sandboxes; an org admin may see (and delete) every sandbox of their org. Someone
else's sandbox is reported as not found, so existence never leaks.

After the spec's checks, create refuses what could not run (issue 8), in this order and
before anything is stored: ``agent-not-installed`` (the binary is not on the agent search
path, or in Kubernetes mode the sandbox image does not carry the agent),
``agent-not-configured`` (a required variable is missing from the environment the agent
would get), ``repo-unavailable`` (a repo but no git server configured) and
``cross-org-repo`` (a repo of another org; the controller keeps ``CrossOrgRepo`` for
objects created elsewhere).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import structlog

from ..domain import access, naming
from ..domain.catalogue import SHELL, AgentSpec, Catalogue
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
from ..events.product import Emitter, sandbox_created, sandbox_deleted
from ..store.base import Store
from .quotas import QuotasService

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class CreateRequest:
    agent: str
    name: str | None = None
    repo: str | None = None


@dataclass(frozen=True)
class SessionsPolicy:
    """Values from Settings that shape new sandboxes, and what create checks.

    The defaults check nothing beyond the spec (what a bare service in a unit test
    wants); the composition root fills them for the server it builds.
    """

    default_namespace: str
    quota: Quota
    # embedded mode: where "is the agent installed?" looks (the agent search path, the
    # same string the terminal registry spawns with); None: installation is not checked
    agent_path: str | None = None
    # Kubernetes mode: the agents the sandbox image carries (SANDBOX_IMAGE_AGENTS); when
    # set (non-empty) it is checked instead of agent_path
    image_agents: tuple[str, ...] = ()
    # the environment an agent would get (model-gateway variables); None: not checked
    agent_env: Mapping[str, str] | None = field(default=None, repr=False)
    # whether a git server is configured (SANDBOX_GIT_BASE_URL) to clone repos from
    repos_available: bool = True


class Subscriptions(Protocol):
    """What create asks of BYOS: whether the caller connected a subscription."""

    def connected(self, sub: str) -> bool: ...


class SandboxCache(Protocol):
    """The informer's copy of every Sandbox, as the list reads it
    (``services.resources.SandboxInformer``)."""

    def in_namespace(self, namespace: str) -> list[Sandbox]: ...

    def owned(self, namespace: str, *, sub: str, email: str) -> list[Sandbox]: ...

    async def wait_for_version(self, version: int, timeout: float) -> bool: ...


# how long a list waits for the copy to hold this service's last write before reading
# the store instead (the copy is normally there within a loop iteration of the commit)
CACHE_WAIT = 1.0

BYOS_AGENT = "claude-code"
BYOS_TOKEN_ENV = "CLAUDE_CODE_OAUTH_TOKEN"  # what a connected subscription gives it


class SessionsService:
    def __init__(
        self,
        *,
        store: Store,
        catalogue: Catalogue,
        policy: SessionsPolicy,
        bus: EventBus,
        clock: Callable[[], datetime] = utcnow,
        credentials: Subscriptions | None = None,
    ) -> None:
        self._store = store
        self._catalogue = catalogue
        self._policy = policy
        self._bus = bus
        # the product's events (events.product), published without making a create or
        # a delete wait for the bus (a JetStream that is away would hold them seconds)
        self._events = Emitter(bus)
        self._clock = clock
        self._credentials = credentials
        # quotas per user and org (issue 11; services.quotas): None checks none
        self.quotas: QuotasService | None = None
        # the informer's copy lists are answered from (None: from the store), and the
        # newest resourceVersion this service wrote per namespace and per caller (the
        # copy must hold it first: a caller waits for their own writes only, never for
        # a neighbour's burst)
        self.cache: SandboxCache | None = None
        self._written: dict[str, int] = {}
        self._written_by: dict[tuple[str, str], int] = {}

    def _wrote(self, principal: Principal, sandbox: Sandbox) -> None:
        text = sandbox.metadata.resource_version
        if not text.isdigit():
            return
        version, namespace = int(text), sandbox.namespace
        self._written[namespace] = max(self._written.get(namespace, 0), version)
        mine = (namespace, principal.sub)
        self._written_by[mine] = max(self._written_by.get(mine, 0), version)

    def _sandbox_slot(
        self, principal: Principal, sandbox: Sandbox, taken: Callable[[], AlreadyExists]
    ) -> AbstractAsyncContextManager[None]:
        """Held while one more sandbox is stored: the caller's ``sandboxes`` quota."""
        if self.quotas is None:
            return nullcontext()
        return self.quotas.sandbox_slot(
            principal,
            sandbox.namespace,
            lambda: self._namespace_items(sandbox.namespace),
            lambda s: self.owns(principal, s),
            sandbox.name,
            taken,
        )

    @property
    def policy(self) -> SessionsPolicy:
        return self._policy

    @property
    def catalogue(self) -> Catalogue:
        return self._catalogue

    def namespace_of(self, principal: Principal) -> str:
        return naming.namespace_for(principal.org, self._policy.default_namespace)

    def owns(self, principal: Principal, sandbox: Sandbox) -> bool:
        """Same namespace and the same subject (else, for foreign objects, the same email)."""
        return self.access_of(principal, sandbox) == access.OWNER

    def can_see(self, principal: Principal, sandbox: Sandbox) -> bool:
        """The owner, or an org admin of the sandbox's namespace."""
        return self.access_of(principal, sandbox) is not None

    def access_of(self, principal: Principal, sandbox: Sandbox) -> str | None:
        """``"owner"``, ``"admin"`` or ``None``: the rule of ``domain.access``, the one the
        terminal server applies too."""
        owner = access.SandboxOwner(
            namespace=sandbox.namespace,
            email=sandbox.spec.owner_email,
            sub=sandbox.metadata.annotations.get(ANNOTATION_SUB, ""),
        )
        return owner.admits(principal, self._policy.default_namespace)

    async def _namespace_items(self, namespace: str) -> list[Sandbox]:
        """Every sandbox of ``namespace``: from the informer's copy once it holds this
        service's own writes (the quota count under the create lock: a store read of
        the whole namespace per create made a burst of creates quadratic), else from
        the store."""
        cache = self.cache
        written = self._written.get(namespace, 0)
        if cache is not None and await cache.wait_for_version(written, CACHE_WAIT):
            return cache.in_namespace(namespace)
        return await self._store.list(namespace)

    async def list(self, principal: Principal, *, org_scope: bool = False) -> list[Sandbox]:
        namespace = self.namespace_of(principal)
        cache = self.cache
        org = org_scope and principal.is_org_admin
        written = (
            self._written.get(namespace, 0)
            if org
            else self._written_by.get((namespace, principal.sub), 0)
        )
        if cache is not None and await cache.wait_for_version(written, CACHE_WAIT):
            # issue 11: from the informer's indexes (services.resources), not a read of
            # every object of the namespace per request; once it holds the caller's own
            # writes (an org admin's list: the namespace's), so a caller sees what they
            # just created or deleted without waiting for anyone else's
            if org:
                return cache.in_namespace(namespace)
            mine = cache.owned(namespace, sub=principal.sub, email=principal.email)
            return [s for s in mine if self.owns(principal, s)]
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
            marked = await self._store.delete(namespace, sandbox_id)
        except NotFound:
            return
        if marked is not None:
            self._wrote(principal, marked)
        log.info("sandbox delete requested", sandbox=sandbox_id, namespace=namespace)
        self._events.emit(sandbox_deleted(sandbox))

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
        problem = naming.repo_problem(request.repo) if request.repo else ""
        if problem:
            raise Invalid(f"repo {request.repo!r} {problem}", code="invalid-repo")
        if not principal.email:
            raise Invalid(
                "your token has no email claim; the sandbox owner is identified by email",
                code="owner-email-missing",
            )
        if request.name is not None and request.name.strip():
            taken = naming.object_name(agent=agent, sub=principal.sub, name=request.name)
            reserved = naming.reserved_name_problem(taken, sub=principal.sub, agents=slugs)
            if reserved:
                raise Invalid(reserved, code="reserved-name")

    def check_runnable(self, principal: Principal, request: CreateRequest) -> None:
        """The issue-8 checks after the spec's, in order: installed, configured, repo
        server, repo org. Raises ``Invalid`` (400) with the named code."""
        agent = self._catalogue.get(request.agent)
        assert agent is not None  # validate() ran first
        missing_binary = self.not_installed(agent)
        if missing_binary:
            raise Invalid(missing_binary, code="agent-not-installed")
        missing_env = self.missing_env(agent, principal)
        if missing_env:
            raise Invalid(
                f'agent "{agent.slug}" is not configured on this server: it needs '
                f"{', '.join(missing_env)} set in the server's environment"
                + (
                    " (or connect your Claude subscription in the console)"
                    if agent.slug == BYOS_AGENT and self._credentials is not None
                    else ""
                ),
                code="agent-not-configured",
            )
        if request.repo and not self._policy.repos_available:
            raise Invalid(
                f'repo "{request.repo}" cannot be cloned: this server has no git server '
                "configured (SANDBOX_GIT_BASE_URL); create the sandbox without a repo",
                code="repo-unavailable",
            )
        refused = naming.repo_access_problem(request.repo, principal.org) if request.repo else ""
        if refused:
            raise Invalid(refused, code="cross-org-repo")

    def not_installed(self, agent: AgentSpec) -> str:
        """Why ``agent`` cannot be found where it would run ("" when it can)."""
        policy = self._policy
        if policy.image_agents:
            if agent.slug in policy.image_agents or agent.slug == SHELL:
                return ""  # every image has a shell
            return (
                f'agent "{agent.slug}" is not in this server\'s sandbox image '
                f"(SANDBOX_IMAGE_AGENTS: {', '.join(policy.image_agents)})"
            )
        if policy.agent_path is None:
            return ""
        if agent.resolve_binary(agent.env_map.get("PATH") or policy.agent_path) is not None:
            return ""
        if agent.package is not None:
            how = f"install it with: {agent.install_hint or 'sandbox agents install ' + agent.slug}"
        else:
            how = agent.manual_install or agent.install_hint
            how = how or f"put {agent.binary!r} on the server's PATH"
        return (
            f'agent "{agent.slug}" is not installed on this server ({agent.binary!r} not '
            f"found); {how}"
        )

    def missing_env(self, agent: AgentSpec, principal: Principal) -> Sequence[str]:
        """Required variables the agent would not get: the server's gateway variables,
        the row's own ``env`` and, for claude-code, the caller's connected subscription."""
        if self._policy.agent_env is None:
            return []
        env = {**self._policy.agent_env, **agent.env_map}
        byos = self._credentials
        if agent.slug == BYOS_AGENT and byos is not None and byos.connected(principal.sub):
            env[BYOS_TOKEN_ENV] = "connected"
        return agent.missing_env(env)

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
        self.check_runnable(principal, request)
        sandbox = self.build(principal, request)

        def taken() -> AlreadyExists:
            return AlreadyExists(
                f'sandbox "{sandbox.name}" already exists in namespace "{sandbox.namespace}"',
                code="sandbox-already-exists",
            )

        try:
            async with self._sandbox_slot(principal, sandbox, taken):
                stored = await self._store.create(sandbox)
                self._wrote(principal, stored)  # before the next create counts (the lock)
        except AlreadyExists as exc:
            raise taken() from exc
        log.info("sandbox created", sandbox=stored.name, namespace=stored.namespace)
        self._publish_requested(principal, stored)
        self._events.emit(sandbox_created(stored))
        return stored

    def _publish_requested(self, principal: Principal, sandbox: Sandbox) -> None:
        payload: dict[str, Any] = {
            "tenant_id": sandbox.namespace,
            "sandbox_id": sandbox.name,
            "requested_by": principal.email or principal.sub,
            "timestamp": format_time(self._clock()),
            "spec_hash": spec_hash(sandbox.spec.to_dict()),
        }
        # best effort by contract (sessions-api.md): published in the background like the
        # product events, so a bus that is down (NATS restarting) never holds a create
        self._events.emit(Event(SANDBOX_REQUESTED, payload))
