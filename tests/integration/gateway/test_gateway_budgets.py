"""Budgets and usage end to end on the SQL store: the real app under uvicorn (SQLite
file), its gateway in front of the fake provider, a sandbox created through the API, its
token issued by a second ledger on the same database (as the process starting the agent
would), and a budget set by an org admin through the API.

20 concurrent streamed requests against a sandbox budget that fits 5 worst cases: the
five that fit are forwarded and held open by the provider while the other fifteen are
refused with 429 in Anthropic's error shape; after they finish, at most the budget is
spent, and the usage shows in GET /usage and on the session item.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from openova_sandbox.api.app import create_app
from openova_sandbox.api.composition import build_embedded
from openova_sandbox.auth.issuer import EmbeddedIssuer
from openova_sandbox.config import load_settings
from openova_sandbox.domain.ledger import format_usd
from openova_sandbox.gateway.config import worst_case_cost
from openova_sandbox.services.gateway import RESERVE_BYTES_PER_TOKEN
from openova_sandbox.services.gateway_ledger import GatewayIdentity
from openova_sandbox.store.sql_ledger import SqlLedger
from openova_sandbox.testing.server import serve_in_thread
from support.fake_agents import write_stand_ins

from .conftest import llm_config
from .fake_upstream import FakeUpstream, running_upstream

DEV = {"sub": "sub-dev-0001", "email": "dev@acme.com", "org": "acme"}
ADMIN = {"sub": "sub-admin-01", "email": "admin@acme.com", "org": "acme", "roles": ("org-admin",)}
BODY = json.dumps(
    {
        "model": "claude-hold",
        "max_tokens": 1000,
        "stream": True,
        "messages": [{"role": "user", "content": "write the tests"}],
    }
).encode()


class Server:
    def __init__(self, url: str, data_dir: Path, deps: Any, upstream: FakeUpstream) -> None:
        self.url = url
        self.deps = deps
        self.upstream = upstream
        self.issuer = EmbeddedIssuer.load(data_dir)
        self.http = httpx.Client(base_url=url, timeout=20)

    def auth(self, who: dict[str, Any]) -> dict[str, str]:
        token = self.issuer.mint(
            sub=who["sub"], email=who["email"], org=who["org"], roles=who.get("roles", ())
        )
        return {"Authorization": f"Bearer {token}"}

    def gateway_token(self, identity: GatewayIdentity) -> str:
        async def issue() -> str:
            ledger = SqlLedger(self.deps.settings.effective_database_url)
            await ledger.start()
            try:
                return await ledger.issue_token(identity)
            finally:
                await ledger.close()

        return asyncio.run(issue())


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with running_upstream() as upstream:
        config = tmp_path / "llm.yaml"
        config.write_text(yaml.safe_dump(llm_config(upstream, tmp_path)))
        settings = load_settings(
            data_dir=tmp_path / "data",
            agents_path=str(write_stand_ins(tmp_path / "agents.json")),
            store="sql",
            llm_config=str(config),
        )
        deps = build_embedded(settings)
        with serve_in_thread(create_app(deps)) as running:
            api = Server(running.url, tmp_path / "data", deps, upstream)
            try:
                yield api
            finally:
                api.http.close()


def test_twenty_concurrent_requests_against_a_budget_that_fits_five(server: Server) -> None:
    created = server.http.post(
        "/api/v1/sandbox/sessions", headers=server.auth(DEV), json={"agent": "aider", "name": "one"}
    )
    assert created.status_code == 201, created.text
    identity = GatewayIdentity("one", "acme", DEV["sub"], DEV["email"], "acme")
    token = server.gateway_token(identity)

    route = server.deps.gateway.route("anthropic", "claude-hold")
    worst = worst_case_cost(
        route,
        input_tokens=math.ceil(len(BODY) / RESERVE_BYTES_PER_TOKEN),
        output_tokens=1000,
    )
    budget = (worst * Decimal("5.5")).quantize(Decimal("0.000001"))
    put = server.http.put(
        "/api/v1/sandbox/budgets/sandbox/one",
        headers=server.auth(ADMIN),
        json={"monthlyUsd": str(budget)},
    )
    assert put.status_code == 200, put.text

    def request(_: int) -> tuple[int, bytes]:
        with (
            httpx.Client(base_url=server.url, timeout=30) as client,
            client.stream(
                "POST",
                "/llm/anthropic/v1/messages",
                headers={"x-api-key": token, "anthropic-version": "2023-06-01"},
                content=BODY,
            ) as response,
        ):
            return response.status_code, response.read()

    with ThreadPoolExecutor(max_workers=20) as pool:
        futures = [pool.submit(request, i) for i in range(20)]
        deadline = time.monotonic() + 20
        # the five that fit are held open by the provider; the rest are answered
        while sum(f.done() for f in futures) < 15 or len(server.upstream.completions()) < 5:
            assert time.monotonic() < deadline, (
                sum(f.done() for f in futures),
                len(server.upstream.completions()),
            )
            time.sleep(0.02)
        assert len(server.upstream.completions()) == 5
        server.upstream.release()
        outcomes = [f.result(timeout=20) for f in futures]

    served = [body for status, body in outcomes if status == 200]
    refused = [json.loads(body) for status, body in outcomes if status == 429]
    assert len(served) == 5 and len(refused) == 15
    assert all(b"message_stop" in body for body in served)
    for body in refused:
        assert body["type"] == "error"
        assert body["error"]["type"] == "rate_limit_error"
        assert body["error"]["message"].startswith(
            f"monthly budget of {format_usd(budget)} for sandbox one reached"
        )

    # settled: nothing reserved, at most the budget spent, and the usage is visible
    deadline = time.monotonic() + 10
    while True:
        state = server.http.get(
            "/api/v1/sandbox/budgets/sandbox/one", headers=server.auth(DEV)
        ).json()
        if state["reservedUsd"] == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert state["reservedUsd"] == 0
    assert 0 < state["spentUsd"] <= float(budget)
    usage = server.http.get(
        "/api/v1/sandbox/usage", headers=server.auth(DEV), params={"groupBy": "model"}
    ).json()
    assert usage["totals"]["requests"] == 5
    assert usage["totals"]["costUsd"] == pytest.approx(state["spentUsd"])
    assert [g["key"] for g in usage["groups"]] == ["claude-hold"]
    item = server.http.get("/api/v1/sandbox/sessions/one", headers=server.auth(DEV)).json()
    assert item["usage30d"]["costUsd"] == pytest.approx(state["spentUsd"])
    assert item["usage30d"]["inputTokens"] == usage["totals"]["inputTokens"] > 0
    assert item["spend30d"].startswith("USD ")
