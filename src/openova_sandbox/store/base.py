"""The Store protocol: Kubernetes-apiserver semantics over any backend.

Rules every backend keeps (tests/contract runs the same suite against each):
- ``create`` assigns ``uid``, ``resourceVersion``, ``generation=1`` and
  ``creationTimestamp``; an existing (namespace, name) raises ``AlreadyExists``.
- ``resourceVersion`` is a decimal string from one global, strictly increasing counter.
- ``update`` replaces labels, annotations, finalizers and spec; ``update_status`` only
  status. Both require the caller's ``resourceVersion`` to match the stored one, else
  ``Conflict``. ``generation`` increases only when the spec changes.
- ``delete`` of an object with finalizers only sets ``deletionTimestamp`` (once) and
  returns the object; without finalizers it removes it and returns ``None``. Once
  marked, an ``update`` that leaves no finalizers removes the object.
- ``watch(since)`` yields every change after resourceVersion ``since`` in order:
  ``ADDED``, ``MODIFIED``, ``DELETED`` (with the last state). ``since=None`` starts
  with a synthetic ``ADDED`` per existing object, then follows live changes.
- Unreachable backends raise ``BackendUnavailable``; nothing else leaks out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from ..domain.model import Sandbox

EventType = Literal["ADDED", "MODIFIED", "DELETED"]


@dataclass(frozen=True)
class WatchEvent:
    type: EventType
    object: Sandbox
    resource_version: str


@runtime_checkable
class Store(Protocol):
    async def start(self) -> None:
        """Open connections, apply migrations. Idempotent."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise ``BackendUnavailable`` when the backend cannot serve requests."""

    async def create(self, sandbox: Sandbox) -> Sandbox: ...

    async def get(self, namespace: str, name: str) -> Sandbox:
        """Raise ``NotFound`` when absent."""

    async def list(
        self,
        namespace: str | None = None,
        *,
        labels: Mapping[str, str] | None = None,
    ) -> list[Sandbox]:
        """Objects matching every given label (equality), newest first."""

    async def update(self, sandbox: Sandbox) -> Sandbox | None:
        """Returns the stored object, or ``None`` when this update released the last
        finalizer of an object marked for deletion (it is gone)."""

    async def update_status(self, sandbox: Sandbox) -> Sandbox: ...

    async def delete(self, namespace: str, name: str) -> Sandbox | None:
        """Raise ``NotFound`` when absent."""

    def watch(self, since: str | None = None) -> AsyncIterator[WatchEvent]: ...
