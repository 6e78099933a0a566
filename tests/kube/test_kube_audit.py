"""The audit log in Kubernetes mode (`sandbox api` over the kube store): the records go
to the SQL database of SANDBOX_DATABASE_URL, as the gateway ledger's do, so two API
replicas on one PostgreSQL keep one chain per org; a create on one replica and a delete
on the other read back in order from either, and the chain verifies."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from openova_sandbox.api.app import create_app
from openova_sandbox.api.composition import build_api
from openova_sandbox.auth.issuer import EmbeddedIssuer
from openova_sandbox.config import load_settings
from openova_sandbox.domain.audit import AuditRecord, verify
from openova_sandbox.store.kube import KubeStore
from openova_sandbox.testing.kubeapi import FakeKube
from openova_sandbox.testing.server import serve_in_thread
from support.postgres import fresh_database

pytestmark = pytest.mark.postgres
SESSIONS = "/api/v1/sandbox/sessions"
AUDIT = "/api/v1/sandbox/audit"


@contextlib.contextmanager
def replica(kube: FakeKube, data_dir: Path, database_url: str) -> Iterator[httpx.Client]:
    settings = load_settings(data_dir=data_dir, store="kube", database_url=database_url)
    deps = build_api(settings, store=KubeStore(kubeconfig_path=str(kube.kubeconfig_path)))
    with (
        serve_in_thread(create_app(deps)) as server,
        httpx.Client(base_url=server.url, timeout=10) as http,
    ):
        yield http


async def test_two_replicas_keep_one_chain_in_the_shared_database(
    kube: FakeKube, tmp_path: Path, postgres_url: str
) -> None:
    url = await fresh_database(postgres_url)
    data = tmp_path / "data"
    # both replicas trust one issuer (the operator gives them the same keys)
    EmbeddedIssuer.load_or_create(data, issuer_url="")
    issuer = EmbeddedIssuer.load(data)
    dev = {"Authorization": f"Bearer {issuer.mint(sub='u-1', email='dev@acme.com', org='acme')}"}
    admin_token = issuer.mint(sub="u-2", email="boss@acme.com", org="acme", roles=["org-admin"])
    admin = {"Authorization": f"Bearer {admin_token}"}

    def audit(http: httpx.Client, **query: Any) -> list[dict[str, Any]]:
        got = http.get(AUDIT, headers=admin, params=query)
        assert got.status_code == 200, got.text
        return got.json()["items"]  # type: ignore[no-any-return]

    with replica(kube, data, url) as one, replica(kube, data, url) as two:
        made = one.post(SESSIONS, headers=dev, json={"agent": "aider", "name": "box"})
        assert made.status_code == 201, made.text
        assert two.delete(f"{SESSIONS}/box", headers=dev).status_code == 204
        seen_one, seen_two = audit(one), audit(two)
        assert seen_one == seen_two
        assert [(r["seq"], r["action"]) for r in seen_one] == [
            (2, "sandbox.delete"),
            (1, "sandbox.create"),
        ]
        lines = two.get(AUDIT, headers=admin, params={"format": "jsonl"}).text.splitlines()
    report = verify("acme", [AuditRecord.from_dict(json.loads(line)) for line in lines])
    assert report.ok and report.head_seq == 2
