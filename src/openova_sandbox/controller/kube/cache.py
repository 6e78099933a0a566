"""The operator's informer cache: what kopf's watch streams said, read without asking.

kopf already watches every kind the operator makes (by our label, filtered by the API
server) and the Sandboxes. Its in-memory indices (``@kopf.index``) keep the latest copy
of each object those streams delivered, and kopf holds every handler back until each
indexed kind has been listed once, so a pass never sees a half-filled cache. This module
names those indices and reads them the way a pass needs: a Sandbox by key, a workspace
namespace by name, a namespace's children by kind and name.

A cache lags the API server by one watch event. Reads are therefore taken from it only
for a sandbox whose cache is known to agree with the API server (:class:`Freshness`):
a pass that wrote anything marks its sandbox, and the next passes read the API server
directly until what they read there equals what the cache holds (same objects, same
resourceVersions). A settled sandbox thus costs no read at all; one being provisioned
reads as before, so it never acts on its own stale echo (a create repeated, a status
written on an old resourceVersion).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

JSON = dict[str, Any]
Key = tuple[str, str]  # (namespace, name) of a Sandbox

SANDBOX_INDEX = "cache_sandboxes"
NAMESPACE_INDEX = "cache_namespaces"


def child_index(plural: str) -> str:
    """The kopf index (and handler kwarg) of one child kind."""
    return f"cache_{plural}"


def _rv(obj: Mapping[str, Any] | None) -> str:
    return str(((obj or {}).get("metadata") or {}).get("resourceVersion") or "")


def _only(values: Iterable[Any]) -> JSON | None:
    for value in values:
        return dict(value)
    return None


class InformerCache:
    """Read access to kopf's indices of the Sandboxes, our namespaces and our children.

    ``bind`` is given the indices (kopf hands them to every handler as keyword
    arguments); before that the cache is not ready and every pass reads the API server.
    """

    def __init__(self, child_kinds: Mapping[str, str]) -> None:
        # kind -> plural of each cached child kind
        self.child_kinds = dict(child_kinds)
        self._indices: Mapping[str, Any] | None = None

    def bind(self, indices: Mapping[str, Any]) -> None:
        wanted = [SANDBOX_INDEX, NAMESPACE_INDEX, *map(child_index, self.child_kinds.values())]
        self._indices = {name: indices[name] for name in wanted if name in indices}
        if len(self._indices) != len(wanted):
            self._indices = None

    def unbind(self) -> None:
        self._indices = None

    @property
    def ready(self) -> bool:
        return self._indices is not None

    def _index(self, name: str) -> Any:
        if self._indices is None:
            raise RuntimeError("the informer cache is not bound to kopf's indices")
        return self._indices[name]

    def sandbox(self, key: Key) -> JSON | None:
        index = self._index(SANDBOX_INDEX)
        return _only(index[key]) if key in index else None

    def namespace(self, name: str) -> JSON | None:
        index = self._index(NAMESPACE_INDEX)
        return _only(index[name]) if name in index else None

    def children(self, namespace: str, labels: Mapping[str, str]) -> dict[tuple[str, str], JSON]:
        """The cached objects in ``namespace`` carrying every one of ``labels``, by
        (kind, name)."""
        out: dict[tuple[str, str], JSON] = {}
        for kind, plural in self.child_kinds.items():
            index = self._index(child_index(plural))
            if namespace not in index:
                continue
            for obj in index[namespace]:
                have = (obj.get("metadata") or {}).get("labels") or {}
                if all(have.get(k) == v for k, v in labels.items()):
                    out[(kind, obj["metadata"]["name"])] = dict(obj)
        return out


def versions(objects: Mapping[Any, Mapping[str, Any]]) -> dict[Any, str]:
    """Key -> resourceVersion: what two reads must share to be the same state."""
    return {key: _rv(obj) for key, obj in objects.items()}


class Freshness:
    """Which sandboxes must be read from the API server rather than the cache."""

    def __init__(self) -> None:
        self._stale: set[Key] = set()

    def stale(self, key: Key) -> bool:
        return key in self._stale

    def wrote(self, key: Key) -> None:
        """This pass changed something the cache has not seen yet."""
        self._stale.add(key)

    def agreed(self, key: Key) -> None:
        """A direct read found exactly what the cache holds."""
        self._stale.discard(key)

    def forget(self, key: Key) -> None:
        self._stale.discard(key)


def same_version(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    return a is not None and b is not None and _rv(a) == _rv(b)
