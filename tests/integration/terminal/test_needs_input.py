"""Needs-input: a real PTY agent that prints a prompt and waits is ``waiting`` within 2 s;
a bell says so at once; the webhook (a real HTTP receiver on 127.0.0.1) gets exactly one
POST per transition, and a 4xx is never retried while a 5xx is."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import structlog
import structlog.testing

from openova_sandbox.domain.catalogue import AgentSpec, Catalogue
from openova_sandbox.services.notify import ActivityWebhook, attach_webhook
from openova_sandbox.terminal.activity import BUSY, IDLE, WAITING
from openova_sandbox.terminal.registry import SandboxContext, SessionRequest, TerminalRegistry
from openova_sandbox.terminal.session import Control, Output, TerminalSession

pytestmark = pytest.mark.timeout(60)

SANDBOX = "team-a/demo"

# A fake agent: a banner, then "agent> " and a wait for a line. "work" animates a spinner
# for 3 s before the next prompt; "ask" rings the bell with a question and waits.
AGENT = textwrap.dedent(
    """
    import sys, time
    out = sys.stdout
    out.write("fake agent 1.0\\r\\n"); out.flush()
    while True:
        out.write("agent> "); out.flush()
        line = sys.stdin.readline()
        if not line:
            break
        if line.strip() == "work":
            end = time.monotonic() + 3.0
            while time.monotonic() < end:
                out.write("\\r" + "|/-\\\\"[int(time.monotonic() * 20) % 4] + " working"); out.flush()
                time.sleep(0.05)
            out.write("\\r\\ndone\\r\\n"); out.flush()
        elif line.strip() == "ask":
            out.write("Overwrite main.py? [y/n] \\a"); out.flush()
            sys.stdin.readline()
    """
)


@dataclass
class Receiver:
    """A webhook receiver: records every POST; answers ``statuses`` in turn (then 204)."""

    statuses: list[int] = field(default_factory=list)
    posts: list[dict[str, Any]] = field(default_factory=list)
    auth: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    def url(self, userinfo: str = "") -> str:
        return f"http://{userinfo}127.0.0.1:{self.port}/hook?token=s3cret"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return None

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with rec.lock:
                rec.posts.append(body)
                rec.auth.append(self.headers.get("Authorization", ""))
                status = rec.statuses.pop(0) if rec.statuses else 204
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    rec.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield rec
    server.shutdown()
    server.server_close()


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[TerminalRegistry]:
    script = tmp_path / "agent.py"
    script.write_text(AGENT, encoding="utf-8")
    rows = {
        "fake": AgentSpec(
            slug="fake", binary=sys.executable, default_args=(str(script),),
            prompt_patterns=(r"^agent>",),  # with or without a draft typed after it
        ),
        # no prompt patterns: only the bell can say it waits
        "bell": AgentSpec(slug="bell", binary=sys.executable, default_args=(str(script),)),
    }  # fmt: skip
    reg = TerminalRegistry(catalogue=Catalogue(agents=rows), path="/usr/bin:/bin")
    reg.add_sandbox(
        SandboxContext(sandbox_id=SANDBOX, namespace="team-a", owner="dev@acme.com", workdir=str(tmp_path))
    )  # fmt: skip
    yield reg
    await reg.close()


@dataclass
class Seen:
    """Transitions as the registry's listeners see them, with the loop's time."""

    moves: list[tuple[str, str, float]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self, sandbox_id: str, session: TerminalSession, old: str, new: str) -> None:
        self.moves.append((old, new, time.monotonic()))
        self.changed.set()

    async def until(self, state: str, count: int = 1, timeout: float = 10.0) -> float:
        """Wait for the ``count``-th move into ``state``; its time."""
        async with asyncio.timeout(timeout):
            while True:
                hits = [t for _, new, t in self.moves if new == state]
                if len(hits) >= count:
                    return hits[count - 1]
                self.changed.clear()
                await self.changed.wait()


async def _screen_shows(session: TerminalSession, text: bytes, timeout: float = 10.0) -> float:
    """Follow the session as a viewer until ``text`` was output; when it arrived."""
    viewer = session.attach(who="test")
    seen = bytearray(viewer.first.data)
    try:
        async with asyncio.timeout(timeout):
            while text not in seen:
                item = await viewer.next()
                assert item is not None, f"the agent ended before {text!r}: {bytes(seen)!r}"
                if isinstance(item, Output):
                    seen += item.data
        return time.monotonic()
    finally:
        viewer.close()


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def test_a_prompt_that_waits_is_waiting_within_2s_and_posted_once_per_move(
    registry: TerminalRegistry, receiver: Receiver
) -> None:
    seen = Seen()
    registry.activity_listeners.append(seen)
    hook = attach_webhook(registry, receiver.url(userinfo="hooks:pa55@"))
    assert hook is not None
    session = registry.create(SANDBOX, SessionRequest(agent="fake"))
    assert session.activity == BUSY
    assert registry.idle(SANDBOX).agent_busy  # starting up counts as work
    prompt_at = await _screen_shows(session, b"agent> ")
    waiting_at = await seen.until(WAITING)
    assert waiting_at - prompt_at < 2.0
    assert session.activity == WAITING
    idle = registry.idle(SANDBOX)  # what /idle reports: a waiting agent may be suspended
    assert not idle.agent_busy and idle.activity == {session.id: WAITING}

    # typing is not work: the echo of each key leaves it waiting
    for ch in b"work":
        session.write(bytes([ch]))
        await asyncio.sleep(0.05)
    session.write(b"\r")  # submitted: the spinner makes it busy, the prompt waiting again
    await seen.until(BUSY)
    assert registry.idle(SANDBOX).agent_busy  # a working agent is never suspended
    await seen.until(WAITING, count=2)
    moves = [(old, new) for old, new, _ in seen.moves]
    assert moves == [(BUSY, WAITING), (WAITING, BUSY), (BUSY, WAITING)]

    await _until(lambda: hook.sent == len(moves))
    await hook.aclose()
    assert [(p["previous"], p["state"]) for p in receiver.posts] == moves
    first = receiver.posts[0]
    assert first["sandbox"] == "demo" and first["namespace"] == "team-a"
    assert first["owner"] == "dev@acme.com" and first["terminal"] == session.id
    assert first["agent"] == "fake" and first["at"].endswith("Z")
    assert first["excerpt"].splitlines()[-1] == "agent>"
    assert "done" in receiver.posts[2]["excerpt"]
    assert all(a.startswith("Basic ") for a in receiver.auth)  # userinfo sent as auth


async def test_a_control_frame_tells_v2_viewers(registry: TerminalRegistry) -> None:
    session = registry.create(SANDBOX, SessionRequest(agent="fake"))
    viewer = session.attach(who="v2", window=1 << 20)
    try:
        async with asyncio.timeout(10):
            while True:
                item = await viewer.next()
                assert item is not None
                if isinstance(item, Control) and item.body.get("type") == "activity":
                    assert item.body["state"] == WAITING
                    break
    finally:
        viewer.close()


async def test_a_bell_means_waiting_without_any_prompt_pattern(
    registry: TerminalRegistry,
) -> None:
    seen = Seen()
    registry.activity_listeners.append(seen)
    session = registry.create(SANDBOX, SessionRequest(agent="bell"))
    await _screen_shows(session, b"agent> ")
    await asyncio.sleep(1.5)  # quiet, prompt on screen, but the row has no patterns
    assert session.activity == BUSY and seen.moves == []
    session.write(b"ask\r")
    asked_at = await _screen_shows(session, b"[y/n]")
    waiting_at = await seen.until(WAITING)
    assert waiting_at - asked_at < 0.5  # at once, not after a quiet second


async def test_a_4xx_is_not_retried(registry: TerminalRegistry, receiver: Receiver) -> None:
    receiver.statuses = [400, 400, 400]
    hook = ActivityWebhook(receiver.url(), registry=registry, backoff=0.01)
    registry.activity_listeners.append(hook)
    registry.create(SANDBOX, SessionRequest(agent="fake"))
    await _until(lambda: hook.failed == 1)
    await hook.aclose()
    assert len(receiver.posts) == 1


async def test_a_5xx_is_retried_with_backoff(
    registry: TerminalRegistry, receiver: Receiver
) -> None:
    receiver.statuses = [503, 502]
    hook = ActivityWebhook(receiver.url(), registry=registry, backoff=0.01)
    registry.activity_listeners.append(hook)
    registry.create(SANDBOX, SessionRequest(agent="fake"))
    await _until(lambda: hook.sent == 1)
    await hook.aclose()
    assert len(receiver.posts) == 3 and hook.failed == 0
    assert receiver.posts[0] == receiver.posts[2]  # the same transition, resent


async def test_a_dead_receiver_costs_nothing_and_is_given_up(
    registry: TerminalRegistry, receiver: Receiver
) -> None:
    url = receiver.url()
    hook = ActivityWebhook(
        url.replace(str(receiver.port), "9"), registry=registry, backoff=0.01, attempts=2
    )
    registry.activity_listeners.append(hook)
    session = registry.create(SANDBOX, SessionRequest(agent="fake"))
    await _screen_shows(session, b"agent> ")
    await _until(lambda: hook.failed == 1)
    assert session.activity == WAITING
    await hook.aclose()


async def test_a_full_queue_drops_the_oldest_and_logs_no_secret(
    registry: TerminalRegistry, receiver: Receiver
) -> None:
    session = registry.create(SANDBOX, SessionRequest(agent="fake"))
    await _screen_shows(session, b"agent> ")
    hook = ActivityWebhook(receiver.url("hooks:pa55@"), registry=registry, queue_max=2)
    with structlog.testing.capture_logs() as logs:
        for old, new in ((BUSY, WAITING), (WAITING, BUSY), (BUSY, IDLE)):
            hook(SANDBOX, session, old, new)  # faster than any sender: one is pushed out
        await _until(lambda: hook.sent == 2)
        await hook.aclose()
    assert hook.dropped == 1
    assert [(p["previous"], p["state"]) for p in receiver.posts] == [(WAITING, BUSY), (BUSY, IDLE)]
    dropped = [e for e in logs if e["event"] == "notify.webhook.dropped"]
    assert dropped and dropped[0]["url"] == f"http://127.0.0.1:{receiver.port}/hook"
    assert "pa55" not in repr(logs) and "s3cret" not in repr(logs)
