from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from openova_sandbox.testing.kubeapi import FakeKube, run_fake_kube

CRD_PATH = Path(__file__).parents[2] / "deploy" / "crds" / "sandboxes.sandbox.openova.io.yaml"


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    """A fresh fake API server with the Sandbox CRD installed and namespace ``acme``."""
    with run_fake_kube(crds=[CRD_PATH], namespaces=("default", "acme")) as server:
        yield server


@pytest.fixture
def bare_kube() -> Iterator[FakeKube]:
    """A fake API server without the Sandbox CRD."""
    with run_fake_kube(namespaces=("default", "acme")) as server:
        yield server
