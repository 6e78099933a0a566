"""``sandbox gateway`` (its own process in Kubernetes mode) publishes ``usage.recorded``
to the deployment's JetStream stream: a real request through its app to a fake provider,
settled in the shared ledger, is read by an API replica's bus with the sandbox's scope."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from openova_sandbox.api.composition import build_gateway_app
from openova_sandbox.config import load_settings
from openova_sandbox.domain.ledger import GatewayIdentity
from openova_sandbox.events.nats_bus import NatsBus
from openova_sandbox.events.product import USAGE_RECORDED
from openova_sandbox.services.gateway_ledger import make_ledger
from openova_sandbox.serving import UVICORN_OPTIONS, Server
from openova_sandbox.testing.server import free_port
from support.fake_llm import MODEL, FakeLLM
from support.nats_server import NatsServer, running_nats

IDENTITY = GatewayIdentity(
    sandbox="sb-one", namespace="acme", owner_sub="sub-ada", owner_email="ada@acme.com", org="acme"
)


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    with running_nats() as server:
        yield server


async def test_the_standalone_gateway_publishes_usage_for_the_api_replicas(
    tmp_path: Path, nats_server: NatsServer
):
    replica = NatsBus(nats_server.url, replica="api-a")
    await replica.start()
    assert await replica.wait_ready(10)
    queue = replica.subscribe()
    with FakeLLM() as llm:
        settings = load_settings(
            data_dir=tmp_path / "data",
            openai_base_url=llm.base_url,
            openai_api_key="sk-provider",
            events_url=nats_server.url,
            events_replica="gateway-0",
        )
        # the API's side: the sandbox's token in the shared ledger
        ledger = make_ledger(settings)
        await ledger.start()
        token = await ledger.issue_token(IDENTITY)
        await ledger.close()
        config = uvicorn.Config(
            build_gateway_app(settings),
            host="127.0.0.1",
            port=free_port(),
            lifespan="on",
            **UVICORN_OPTIONS,
        )
        server = Server(config)
        task = asyncio.create_task(server.serve())
        try:
            async with asyncio.timeout(20):
                while not server.started:
                    assert not task.done(), "the gateway did not start"
                    await asyncio.sleep(0.01)
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{config.port}", timeout=20
            ) as http:
                answer = await http.post(
                    "/llm/openai/v1/chat/completions",
                    headers={"Authorization": f"Bearer {token}"},
                    json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
                )
                assert answer.status_code == 200, answer.text
            async with asyncio.timeout(10):
                event = await queue.get()
                while event.type != USAGE_RECORDED:
                    event = await queue.get()
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 30)
            await replica.stop()
    payload = dict(event.payload)
    assert {k: payload[k] for k in ("namespace", "sandbox", "org", "owner_sub")} == {
        "namespace": "acme",
        "sandbox": "sb-one",
        "org": "acme",
        "owner_sub": "sub-ada",
    }
    assert payload["status"] == 200 and payload["model"]
    assert "sk-provider" not in str(payload) and token not in str(payload)
