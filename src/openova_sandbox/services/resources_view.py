"""The caller's view of the resource surface: which cluster, which objects, which page.

The informer holds everything; this module decides what one caller gets from it. The
visibility rule is the sessions list's, through ``SessionsService`` (never restated
here): by default the objects the caller *owns*; with ``scope=org`` an org admin gets
every object of their org namespace (a non-admin asking for ``org`` still gets only
their own, as on the sessions list).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..domain.errors import BackendUnavailable, Invalid, NotFound
from ..domain.model import Sandbox
from ..domain.principal import Principal
from .resources import SandboxInformer, Subscription
from .resources_query import (
    LabelSelector,
    check_limit,
    decode_continue,
    encode_continue,
    page,
    sorted_by_key,
)
from .sessions import SessionsService

LOCAL_CLUSTER = "local"
SYNC_WAIT_SECONDS = 5.0
NOT_SYNCED_RETRY_AFTER = 5
PING_SECONDS = 15.0


@dataclass(frozen=True)
class ListQuery:
    namespace: str | None = None
    selector: LabelSelector = field(default_factory=LabelSelector)
    limit: int | None = None
    continue_token: str | None = None
    org_scope: bool = False


@dataclass(frozen=True)
class ListResult:
    items: tuple[Sandbox, ...]
    continue_token: str | None
    age_seconds: float


def parse_scope(scope: str | None) -> bool:
    """``True`` for ``org``; the same values the sessions list accepts."""
    if scope not in (None, "", "org", "own"):
        raise Invalid(f'scope "{scope}" is not one of: org, own', code="invalid-scope")
    return scope == "org"


class ResourcesService:
    def __init__(
        self,
        *,
        informer: SandboxInformer,
        sessions: SessionsService,
        clusters: tuple[str, ...] = (LOCAL_CLUSTER,),
        ping_interval: float = PING_SECONDS,
    ) -> None:
        self._informer = informer
        # seconds between keep-alive comments on a stream (a public knob for tests)
        self.ping_interval = ping_interval
        self._sessions = sessions
        self._clusters = clusters

    @property
    def informer(self) -> SandboxInformer:
        return self._informer

    # lifecycle: the informer is the only background part
    async def start(self) -> None:
        await self._informer.start()

    async def stop(self) -> None:
        await self._informer.stop()

    def end_streams(self) -> None:
        """End every open stream now (thread-safe); see ``SandboxInformer.end_streams``."""
        self._informer.end_streams()

    def check_cluster(self, cluster: str) -> str:
        if cluster not in self._clusters:
            raise NotFound(
                f'cluster "{cluster}" not found; this server serves: {", ".join(self._clusters)}',
                code="cluster-not-found",
            )
        return cluster

    def visible(self, principal: Principal, *, org_scope: bool) -> Callable[[Sandbox], bool]:
        sessions = self._sessions
        if org_scope and principal.is_org_admin:
            return lambda s: sessions.can_see(principal, s)
        return lambda s: sessions.owns(principal, s)

    async def list(self, principal: Principal, query: ListQuery) -> ListResult:
        limit = check_limit(query.limit)
        after = decode_continue(query.continue_token) if query.continue_token else None
        if not self._informer.synced and not await self._informer.wait_synced(SYNC_WAIT_SECONDS):
            raise BackendUnavailable(
                "the resource cache has not completed its first list yet",
                code="cache-not-synced",
                retry_after=NOT_SYNCED_RETRY_AFTER,
            )
        age = self._informer.age_seconds()
        visible = self.visible(principal, org_scope=query.org_scope)
        # only the caller's namespace can hold what they may see (domain.access): its
        # index, or the caller's own objects in it, instead of every object cached
        namespace = self._sessions.namespace_of(principal)
        if query.org_scope and principal.is_org_admin:
            candidates = self._informer.in_namespace(namespace)
        else:
            candidates = self._informer.owned(namespace, sub=principal.sub, email=principal.email)
        chosen = sorted_by_key(
            (s.key, s)
            for s in candidates
            if (query.namespace is None or s.namespace == query.namespace)
            and query.selector.matches(s.metadata.labels)
            and visible(s)
        )
        found = page(chosen, after=after, limit=limit)
        token = encode_continue(found.next_key) if found.next_key else None
        return ListResult(found.items, token, age)

    def subscribe(
        self, principal: Principal, *, org_scope: bool, after: str | None = None
    ) -> Subscription:
        """The caller's stream of changes; ``after`` (a Last-Event-ID) resumes one, with
        the same who-sees-what rule for the replayed changes as for live ones."""
        return self._informer.subscribe(self.visible(principal, org_scope=org_scope), after=after)

    def unsubscribe(self, sub: Subscription) -> None:
        self._informer.unsubscribe(sub)
