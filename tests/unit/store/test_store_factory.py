"""``make_store`` picks the backend named by SANDBOX_STORE."""

from __future__ import annotations

from pathlib import Path

from openova_sandbox.config import Settings
from openova_sandbox.store.base import Store
from openova_sandbox.store.factory import make_store
from openova_sandbox.store.memory import MemoryStore
from openova_sandbox.store.sql import SqlStore


def test_memory() -> None:
    store = make_store(Settings(store="memory"))
    assert isinstance(store, MemoryStore)
    assert isinstance(store, Store)


def test_sql_defaults_to_a_sqlite_file_in_the_data_dir(tmp_path: Path) -> None:
    store = make_store(Settings(store="sql", data_dir=tmp_path, database_url=""))
    assert isinstance(store, SqlStore)
    assert isinstance(store, Store)
    assert store.url == f"sqlite+aiosqlite:///{tmp_path.resolve() / 'sandbox.db'}"


def test_sql_uses_the_database_url_and_hides_its_password() -> None:
    settings = Settings(store="sql", database_url="postgresql://app:s3cret@db.example:5432/sbx")
    store = make_store(settings)
    assert isinstance(store, SqlStore)
    assert store.url == "postgresql+asyncpg://app:***@db.example:5432/sbx"


def test_kube_selects_the_crd_store() -> None:
    from openova_sandbox.store.kube import KubeStore

    assert isinstance(make_store(Settings(store="kube")), KubeStore)
