"""Choose the Store backend from Settings (the one place that knows all of them).

Imports of the SQL backend are deferred to its branch, so a memory-only process never
loads SQLAlchemy.
"""

from __future__ import annotations

from ..config import Settings
from ..domain.errors import Invalid
from .base import Store
from .memory import MemoryStore


def make_store(settings: Settings) -> Store:
    if settings.store == "memory":
        return MemoryStore()
    if settings.store == "sql":
        from .sql import SqlStore

        return SqlStore(settings.effective_database_url)
    if settings.store == "kube":
        from .kube import KubeStore

        return KubeStore(create_namespaces=settings.kube_create_org_namespaces)
    raise Invalid(f"SANDBOX_STORE={settings.store} is not a known store", code="invalid-settings")
