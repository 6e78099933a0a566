"""A sandbox whose agent cannot start says so: ``failed`` / ``AgentUnavailable`` with the
reason, never ``running``; it clears once the agent can start again (issue 8).

Real server (uvicorn, SQLite), real PTYs, real binaries that are removed, broken and
repaired on disk while the server runs. The controller sweeps every ``SWEEP`` s here
instead of every 3 s (what is under test is what a sweep does, not how often it runs),
so a negative check over several sweeps takes a second or two.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

import pytest
import websockets

from openova_sandbox.controller import runner as runner_module
from openova_sandbox.domain.principal import Principal
from openova_sandbox.services.sessions import CreateRequest

SESSIONS = "/api/v1/sandbox/sessions"
WORKS = "#!/bin/sh\nexec cat\n"
SWEEP = 0.5  # the controller's sweep interval in these tests (3 s in production)
# a negative check's window: several sweeps, and more than the agent check's 1 s memo
SWEEPS_WINDOW = 5 * SWEEP


@pytest.fixture(autouse=True)
def quick_sweeps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner_module, "SWEEP_SECONDS", SWEEP)


def agent_row(tmp_path: Path, content: str = WORKS) -> Path:
    """``aider`` runs ``<tmp>/bin/agent``, a script the test can break and repair."""
    binary = tmp_path / "bin" / "agent"
    binary.parent.mkdir(exist_ok=True)
    binary.write_text(content)
    binary.chmod(0o755)
    rows = [{"slug": "aider", "binary": str(binary), "requiredEnv": []}]
    (tmp_path / "agents.json").write_text(json.dumps(rows))
    return binary


def wait_item(api, h, sid, predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    item = None
    while time.monotonic() < deadline:
        item = api.http.get(f"{SESSIONS}/{sid}", headers=h).json()
        if predicate(item):
            return item
        time.sleep(0.05)
    raise AssertionError(f"{sid}: condition not met; last {item}")


def ready_reason(item) -> tuple[str, str]:
    ready = next(c for c in item["conditions"] if c["type"] == "Ready")
    return ready.get("reason", ""), ready.get("message", "")


def failed_unavailable(item) -> bool:
    return item["status"] == "failed" and ready_reason(item)[0] == "AgentUnavailable"


async def attach_outcome(url: str, send: bytes = b"") -> tuple[int | None, str, bytes]:
    """(close code, close reason, everything received) of one attach."""
    seen = b""
    async with websockets.connect(url) as ws:
        with contextlib.suppress(websockets.ConnectionClosed):
            async with asyncio.timeout(20):
                first = await ws.recv()
                seen += first if isinstance(first, bytes) else first.encode()
                if send:
                    await ws.send(send)
                async for frame in ws:
                    seen += frame if isinstance(frame, bytes) else frame.encode()
                    if send and send.strip() in seen:
                        break
        return ws.close_code, ws.close_reason or "", seen


def test_an_agent_removed_after_create_fails_the_sandbox_until_it_is_back(make_api, tmp_path):
    binary = agent_row(tmp_path)
    api = make_api(store="sql", isolation_paths=(str(binary.parent),))
    h = api.auth()
    assert api.http.post(SESSIONS, headers=h, json={"agent": "aider", "name": "box"}).is_success
    wait_item(api, h, "box", lambda i: i["status"] == "running")

    binary.unlink()  # uninstalled behind the server's back
    item = wait_item(api, h, "box", failed_unavailable)
    _, message = ready_reason(item)
    assert "not installed" in message and str(binary) in message
    pty = next(c for c in item["conditions"] if c["type"] == "PtyReady")
    assert (pty["status"], pty["reason"]) == ("False", "AgentUnavailable")

    url = f"{api.server.ws_url}{SESSIONS}/box/attach?access_token={api.token()}"
    code, why, text = asyncio.run(attach_outcome(url))
    assert code == 1011
    assert b"cannot start the agent" in text and b"not installed" in text
    assert why.startswith("cannot start the agent")

    agent_row(tmp_path)  # installed again
    wait_item(api, h, "box", lambda i: i["status"] == "running")
    code, _, text = asyncio.run(attach_outcome(url, b"back-again\r"))
    assert b"back-again" in text


def test_an_exec_error_fails_the_sandbox_and_a_repaired_binary_clears_it(make_api, tmp_path):
    # executable, so every check passes; only starting it shows the interpreter is gone
    binary = agent_row(tmp_path, "#!/nonexistent/interpreter\n")
    # the agent's folder is shown inside the sandboxes (docs/architecture.md, "Isolation")
    api = make_api(store="sql", isolation_paths=(str(binary.parent),))
    h = api.auth()
    assert api.http.post(SESSIONS, headers=h, json={"agent": "aider", "name": "box"}).is_success
    wait_item(api, h, "box", lambda i: i["status"] == "running")
    url = f"{api.server.ws_url}{SESSIONS}/box/attach?access_token={api.token()}"

    code, _, text = asyncio.run(attach_outcome(url))
    assert code == 1011 and b"cannot start the agent" in text
    item = wait_item(api, h, "box", failed_unavailable)
    assert "cannot start" in ready_reason(item)[1]
    # lasting: the next sweeps do not turn it back to running while nothing changed
    time.sleep(SWEEPS_WINDOW)  # several of the controller's sweeps, on purpose
    assert failed_unavailable(api.http.get(f"{SESSIONS}/box", headers=h).json())
    # attaching again tries again (and fails again, saying why)
    code, _, text = asyncio.run(attach_outcome(url))
    assert code == 1011 and b"cannot start the agent" in text

    binary.write_text(WORKS)  # repaired (reinstalled): the next look clears it
    wait_item(api, h, "box", lambda i: i["status"] == "running")
    code, _, text = asyncio.run(attach_outcome(url, b"repaired\r"))
    assert b"repaired" in text
    # a successful start keeps it running
    time.sleep(SWEEPS_WINDOW)
    assert api.http.get(f"{SESSIONS}/box", headers=h).json()["status"] == "running"


def test_a_sandbox_whose_agent_cannot_start_never_shows_running(make_api, tmp_path):
    """Written to the store by something else (create would refuse it): from its first
    status on, it is never ``running``."""
    binary = agent_row(tmp_path)
    api = make_api(store="sql", isolation_paths=(str(binary.parent),))
    h = api.auth()
    binary.unlink()
    caller = Principal(sub="user-sub-abcdef12", email="dev@acme.com", org="acme")
    sandbox = api.deps.sessions.build(caller, CreateRequest(agent="aider", name="ghost"))

    api.on_own_store(lambda store: store.create(sandbox))
    seen: list[str] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        item = api.http.get(f"{SESSIONS}/ghost", headers=h).json()
        listed = api.http.get(SESSIONS, headers=h).json()["sandboxes"]
        seen += [item["status"], *(i["status"] for i in listed)]
        if failed_unavailable(item):
            break
        time.sleep(0.02)
    assert "running" not in seen, seen
    assert failed_unavailable(item), item


def test_the_agent_exiting_closes_with_1000_and_its_code(make_api, tmp_path):
    rows = [{"slug": "aider", "binary": "/bin/sh", "defaultArgs": ["-i"], "requiredEnv": []}]
    (tmp_path / "agents.json").write_text(json.dumps(rows))
    api = make_api(store="memory")
    h = api.auth()
    api.http.post(SESSIONS, headers=h, json={"agent": "aider", "name": "box"})
    wait_item(api, h, "box", lambda i: i["status"] == "running")
    url = f"{api.server.ws_url}{SESSIONS}/box/attach?access_token={api.token()}"

    async def scenario():
        async with websockets.connect(url) as ws:
            await ws.recv()
            await ws.send("exit 7\n")
            with contextlib.suppress(websockets.ConnectionClosed):
                async with asyncio.timeout(15):
                    while True:
                        await ws.recv()
            return ws.close_code, ws.close_reason

    assert asyncio.run(scenario()) == (1000, "agent exited with code 7")
    # an agent that exits is not a failure
    assert api.http.get(f"{SESSIONS}/box", headers=h).json()["status"] == "running"
