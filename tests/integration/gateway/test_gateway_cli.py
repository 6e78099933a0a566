"""`sandbox gateway` as its own process (Kubernetes mode's Deployment), and how both
servers stop on a bad SANDBOX_LLM_CONFIG.

Proves: the standalone gateway serves /healthz, /readyz and /metrics, authenticates a
token issued by another process's ledger on the same SQL database (what the API does in
a cluster) and meters into that database; an unusable operator config stops `sandbox
gateway` and `sandbox serve` at start with the file and the field named.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml

from openova_sandbox.services.gateway_ledger import UsageQuery, UsageRow
from openova_sandbox.store.sql_ledger import SqlLedger
from openova_sandbox.testing.server import free_port

from .conftest import IDENTITY, OPENAI_KEY, llm_config
from .fake_upstream import FakeUpstream, running_upstream

SANDBOX = str(Path(sys.executable).parent / "sandbox")


def base_env(tmp_path: Path, config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SANDBOX_", "OPENAI_"))}
    env.update(
        SANDBOX_DATA_DIR=str(tmp_path / "data"),
        SANDBOX_LLM_CONFIG=str(config),
        SANDBOX_LOG_JSON="true",
        NO_PROXY="127.0.0.1,localhost",
    )
    return env


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with running_upstream() as fake:
        yield fake


def wait_http(url: str, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer")


def test_sandbox_gateway_serves_alone_on_the_shared_database(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    config = tmp_path / "llm.yaml"
    config.write_text(yaml.safe_dump(llm_config(upstream, tmp_path)))
    db = tmp_path / "shared.db"
    url = f"sqlite+aiosqlite:///{db}"
    env = {**base_env(tmp_path, config), "SANDBOX_DATABASE_URL": url, "SANDBOX_STORE": "sql"}

    async def issue() -> str:  # the API's side: another process, the same database
        ledger = SqlLedger(url)
        await ledger.start()
        try:
            return await ledger.issue_token(IDENTITY)
        finally:
            await ledger.close()

    token = asyncio.run(issue())
    port = free_port()
    proc = subprocess.Popen(
        [SANDBOX, "gateway", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/healthz", proc)
        assert httpx.get(base + "/readyz").json() == {"status": "ready"}
        body = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
        answer = httpx.post(
            base + "/llm/openai/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=20,
        )
        assert answer.status_code == 200, answer.text
        assert answer.content == upstream.sent[-1]
        assert upstream.completions()[-1].headers["authorization"] == f"Bearer {OPENAI_KEY}"
        refused = httpx.post(base + "/llm/openai/v1/chat/completions", json=body)
        assert refused.status_code == 401
        assert 'sandbox_llm_tokens_total{kind="output",model="gpt-test"} 20.0' in (
            httpx.get(base + "/metrics").text
        )
        assert httpx.get(base + "/api/v1/sandbox/sessions").status_code == 404  # gateway only
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)

    async def usage() -> list[UsageRow]:
        ledger = SqlLedger(url)
        await ledger.start()
        try:
            return list(
                await ledger.usage_rows(
                    UsageQuery(
                        namespace=IDENTITY.namespace,
                        since=datetime.now(UTC) - timedelta(days=1),
                        group_by="model",
                        by_day=False,
                    )
                )
            )
        finally:
            await ledger.close()

    rows = asyncio.run(usage())
    assert [(r.group, r.totals.requests) for r in rows] == [("gpt-test", 1)]
    # one line a request, and neither the key nor the token in any of them
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert [line["status"] for line in lines if line["event"] == "llm_request"] == [200, 401]
    assert OPENAI_KEY not in stderr and token not in stderr


BAD_CONFIG = {"providers": {"p": {"kind": "openai", "baseUrl": "ftp://nope"}}}


@pytest.mark.parametrize("command", [["gateway"], ["serve"]])
def test_a_bad_llm_config_stops_the_server_naming_file_and_field(
    tmp_path: Path, command: list[str]
) -> None:
    config = tmp_path / "llm.yaml"
    config.write_text(yaml.safe_dump(BAD_CONFIG))
    env = {**base_env(tmp_path, config), "SANDBOX_STORE": "memory"}
    done = subprocess.run(
        [SANDBOX, *command, "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert f"SANDBOX_LLM_CONFIG {config}: providers.p.baseUrl:" in done.stderr
    assert "is not an http(s) URL" in done.stderr
