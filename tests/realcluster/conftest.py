"""Fixtures of the opt-in real-cluster suite (``pytest -m realcluster``).

Every test here is marked ``realcluster``: skipped unless ``-m realcluster`` asks for it
(``tests/conftest.py``), and then skipped, with the reason shown by ``-ra``, when
``$KUBECONFIG`` is unset or the cluster does not answer.
The suite installs the Sandbox CRD itself (create or replace, no server-side apply) and
works in namespaces it creates with a random suffix, deleted at the end.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube import Client, KubeConfig
from lightkube.core.exceptions import ApiError
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.core_v1 import Namespace

ROOT = Path(__file__).parents[2]
CRD_PATH = ROOT / "deploy" / "crds" / "sandboxes.sandbox.openova.io.yaml"
CRD_NAME = "sandboxes.sandbox.openova.io"


def wait_until(check: Any, *, timeout: float, what: str, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout:.0f}s (last: {last!r})")


@pytest.fixture(scope="session")
def kubeconfig_path() -> Path:
    value = os.environ.get("KUBECONFIG", "")
    if not value:
        pytest.skip("KUBECONFIG is not set: the real-cluster suite needs a cluster (docs/kind.md)")
    path = Path(value.split(os.pathsep)[0]).expanduser()
    if not path.is_file():
        pytest.skip(f"KUBECONFIG points at {path}, which does not exist")
    return path


@pytest.fixture(scope="session")
def cluster(kubeconfig_path: Path) -> Iterator[Client]:
    """A client on the cluster, skipping when it does not answer within 10 s."""
    client = Client(config=KubeConfig.from_file(kubeconfig_path), timeout=10, trust_env=False)
    try:
        client.get(Namespace, "default")
    except Exception as exc:
        pytest.skip(f"the cluster in {kubeconfig_path} is unreachable: {exc}")
    yield client
    client.close()


@pytest.fixture(scope="session")
def crd(cluster: Client) -> dict[str, Any]:
    """The Sandbox CRD from deploy/crds, created or replaced, and Established."""
    wanted = yaml.safe_load(CRD_PATH.read_text())
    try:
        current = cluster.get(CustomResourceDefinition, CRD_NAME)
    except ApiError as exc:
        if exc.status.code != 404:
            raise
        cluster.create(CustomResourceDefinition.from_dict(wanted))
    else:
        assert current.metadata is not None
        wanted["metadata"]["resourceVersion"] = current.metadata.resourceVersion
        cluster.replace(CustomResourceDefinition.from_dict(wanted))

    def established() -> bool:
        got = cluster.get(CustomResourceDefinition, CRD_NAME)
        conditions = (got.status.conditions if got.status else None) or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    wait_until(established, timeout=60, what="the Sandbox CRD to be Established")
    return dict(wanted)


def make_namespace(cluster: Client, prefix: str) -> str:
    name = f"{prefix}-{secrets.token_hex(3)}"
    cluster.create(Namespace.from_dict({"metadata": {"name": name, "labels": {"test": "rc"}}}))
    return name


def drop_namespace(cluster: Client, name: str) -> None:
    try:
        cluster.delete(Namespace, name)
    except ApiError as exc:
        if exc.status.code != 404:
            raise


@pytest.fixture
def test_namespace(cluster: Client, crd: dict[str, Any]) -> Iterator[str]:
    name = make_namespace(cluster, "sbx-rc")
    yield name
    drop_namespace(cluster, name)
