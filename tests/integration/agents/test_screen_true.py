"""A fresh viewer sees exactly what a viewer that stayed attached sees (issue 10).

A real opencode (installed with ``sandbox agents install``; offline against the fake
model server, support/fake_llm.py) runs as a sandbox's primary terminal in the whole
embedded server (``sandbox serve``'s app under uvicorn), with a 16 KiB replay ring. A
*live* viewer attaches right after the start over ``sandbox.v2`` (as the console does)
and stays; it records every frame in order, every PTY size change and every snapshot
(after a resize the server re-serialises the screen for it). At quiet moments a *fresh*
viewer attaches over the raw protocol (its one replay frame is the screen); both streams are rendered by the console's own xterm.js
(support/xterm_render: @xterm/headless 6) and compared: every cell (characters,
colours, attributes), the cursor, the active buffer and the input modes must be equal —

(a) after the agent's answers wrapped the ring several times,
(b) after resizes,
(c) for a slow viewer that stopped reading during a flood, was resynchronised, and
    then read on (a viewer inside the server: the raw protocol's budget counts bytes
    handed to a socket, which the kernel's buffers would absorb for megabytes).

And: reloading (attach, render what xterm.js would, send back whatever xterm.js
answered, as a console that does not gate its replies would, detach) 10 times writes
zero bytes to the agent (the server's own input counter), while the agent's start-up
queries are still in the ring; and a multi-line paste made after a reload reaches the
agent bracketed: it is sent as one prompt, not submitted at its first line.

The tests share one agent session and run in this file's order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
import websockets

from openova_sandbox.api.app import create_app
from openova_sandbox.api.composition import build_embedded
from openova_sandbox.auth.issuer import EmbeddedIssuer
from openova_sandbox.config import load_settings
from openova_sandbox.testing.server import serve_in_thread
from support import xterm_render
from support.agents_cache import AgentsCache
from support.fake_llm import FakeLLM, last_user_text
from support.xterm_render import RESET, Chunk, Screen, differences, render, side_by_side

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.asyncio(loop_scope="module"),  # one agent session for the whole file
]

SESSIONS = "/api/v1/sandbox/sessions"
MODEL = "fake-coder"
AGENT = "opencode"
READY = "Ask anything"
RING = 16 * 1024  # small: a few answers wrap it several times
SLOW_BUDGET = 8 * 1024  # a raw viewer this far behind is resynchronised
START = (80, 24)  # a PTY's size until someone resizes it (cols, rows)
QUIET = 1.0  # seconds without output: the agent has drawn everything
_LONG = re.compile(r"long-([a-z0-9]+)-(\d+)")
INPUT_BYTES = re.compile(r"^pty_server_input_bytes_total (\S+)$", re.M)
OUTPUT_BYTES = re.compile(r"^pty_server_output_bytes_total (\S+)$", re.M)
RESYNCS = re.compile(r"^pty_server_viewer_resyncs_total (\S+)$", re.M)


class LongLLM(FakeLLM):
    """``long-<word>-<n>`` gets an answer of ``n`` numbered lines ending ``END-<word>``."""

    def answer_for(self, body: Any, count: int) -> str:
        match = _LONG.search(last_user_text(body))
        if not match:
            return super().answer_for(body, count)
        word, n = match.group(1), int(match.group(2))
        # a code block: highlighted, so many colour changes per line
        lines = [
            f"def f{i:04d}(x: int) -> str:  # {word}\n    return 'fox' * {i}" for i in range(n)
        ]
        return "\n".join(["Here it is:", "```python", *lines, "```", f"END-{word}"])


@dataclass
class Server:
    url: str
    ws_url: str
    issuer: EmbeddedIssuer
    http: httpx.Client
    registry: Any
    size: tuple[int, int] = START
    viewers: list[Recorder] = field(default_factory=list)

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}"}

    def token(self) -> str:
        return self.issuer.mint(
            sub="user-sub-abcdef12",
            email="dev@acme.com",
            org="acme",
            roles=(),
            ttl=timedelta(minutes=30),
            extra={},
        )

    @property
    def attach_url(self) -> str:
        return f"{self.ws_url}{SESSIONS}/box/attach?access_token={self.token()}"

    def metric(self, pattern: re.Pattern[str]) -> float:
        text = self.http.get("/metrics").text
        match = pattern.search(text)
        assert match, f"{pattern.pattern} is not on /metrics"
        return float(match.group(1))

    def resize(self, cols: int, rows: int) -> None:
        """Resize the PTY; every recording viewer notes it at this point of its stream."""
        answer = self.http.post(
            f"{SESSIONS}/box/resize", headers=self.auth(), json={"rows": rows, "cols": cols}
        )
        assert answer.status_code == 204, answer.text
        self.size = (cols, rows)
        for viewer in self.viewers:
            if not getattr(viewer, "v2", False):  # a v2 viewer is told in band
                viewer.chunks.append((cols, rows))


class Recorder:
    """A viewer that records every frame, in order, from its first (the replay).

    Raw attach (default): the PTY size changes the test makes are noted at the point of
    the stream they were made. ``sandbox.v2`` (``v2=True``, as the console speaks): the
    size comes in band (``size`` controls), a snapshot resets the terminal first, output
    is acknowledged as it is recorded; after a resize the server re-serialises the
    screen for such a viewer."""

    def __init__(self, server: Server, *, slow: bool = False, v2: bool = False) -> None:
        self.server = server
        self.size = server.size  # the PTY's size when it attached: its xterm's size
        self.chunks: list[Chunk] = []
        self.frames = 0
        self.last_frame = time.monotonic()
        self.slow = slow
        self.v2 = v2
        self.reading = asyncio.Event()
        if not slow:
            self.reading.set()
        self._ws: Any = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Recorder:
        options: dict[str, Any] = {"max_size": None}
        if self.slow:
            # a small receive window set before connecting, one queued frame and no
            # compression: the kernel and the client library cannot absorb the lag
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            host, port = self.server.url.removeprefix("http://").split(":")
            sock.connect((host, int(port)))
            options.update(sock=sock, max_queue=1, compression=None, ping_interval=None)
        if self.v2:
            options["subprotocols"] = ["sandbox.v2"]
        self._ws = await websockets.connect(self.server.attach_url, **options)
        self.server.viewers.append(self)
        self._task = asyncio.create_task(self._pump())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.viewers.remove(self)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._ws.close()

    async def _pump(self) -> None:
        await self.reading.wait()
        async for frame in self._ws:
            if self.v2 and isinstance(frame, str):
                control = json.loads(frame)
                if control["type"] == "hello":
                    self.size = (control["cols"], control["rows"])
                elif control["type"] == "snapshot":
                    self.chunks.append(RESET)
                elif control["type"] == "size":
                    self.chunks.append((control["cols"], control["rows"]))
                continue
            if self.v2:
                start = int.from_bytes(frame[:8], "big")
                frame = frame[8:]
                await self._ws.send(json.dumps({"type": "ack", "seq": start + len(frame)}))
            self.chunks.append(frame if isinstance(frame, bytes) else frame.encode())
            self.frames += 1
            self.last_frame = time.monotonic()

    async def send(self, data: bytes) -> None:
        await self._ws.send(data)

    async def first_frame(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.frames:
            assert time.monotonic() < deadline, "no replay frame"
            await asyncio.sleep(0.02)

    def render(self) -> Screen:
        return render(*self.size, self.chunks)


async def quiet(*viewers: Any, seconds: float = QUIET, timeout: float = 60.0) -> None:
    """Until none of ``viewers`` got a frame for ``seconds``."""
    deadline = time.monotonic() + timeout
    while True:
        now = time.monotonic()
        if all(v.frames and now - v.last_frame >= seconds for v in viewers):
            return
        assert now < deadline, "the agent never went quiet"
        await asyncio.sleep(0.1)


async def wait_text(
    viewer: Recorder, pattern: str | re.Pattern[str], timeout: float = 90.0
) -> Screen:
    """Until ``pattern`` is on the viewer's xterm.js screen (rendered at quiet moments)."""
    regex = re.compile(re.escape(pattern)) if isinstance(pattern, str) else pattern
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(AssertionError):
            await quiet(viewer, seconds=0.5, timeout=5)
        screen = await asyncio.to_thread(viewer.render)
        if regex.search(screen.text):
            return screen
        assert time.monotonic() < deadline, f"{pattern!r} not on screen:\n{screen.text}"


class InnerViewer:
    """A viewer attached inside the server (the session's own API) that reads nothing
    until told to: the slow viewer. Records what a raw pump would send, in order."""

    def __init__(self, server: Server, session: Any) -> None:
        self.server = server
        self.size = server.size
        self.viewer = session.attach()
        self.chunks: list[Chunk] = [self.viewer.first.data]  # the screen, as raw sends it
        self.frames = 1
        self.last_frame = time.monotonic()
        self.reading = asyncio.Event()
        server.viewers.append(self)  # type: ignore[arg-type]
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        await self.reading.wait()
        while (data := await self.viewer.next_bytes()) is not None:
            self.chunks.append(data)
            self.frames += 1
            self.last_frame = time.monotonic()

    async def close(self) -> None:
        self.server.viewers.remove(self)  # type: ignore[arg-type]
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self.viewer.close()

    def render(self) -> Screen:
        return render(*self.size, self.chunks)


async def equal_screens(server: Server, live: Recorder, what: str) -> Screen:
    """A fresh viewer's screen equals the live one's, now (both quiet)."""
    await quiet(live)
    async with Recorder(server) as fresh:
        await fresh.first_frame()
        await quiet(live, fresh)
        want, got = await asyncio.gather(
            asyncio.to_thread(live.render), asyncio.to_thread(fresh.render)
        )
    diff = differences(want, got)
    assert not diff, (
        f"{what}: the fresh viewer differs:\n" + "\n".join(diff) + "\n" + (side_by_side(want, got))
    )
    return got


async def ask(live: Recorder, prompt: str, expect: str) -> None:
    """Type a prompt like a user (text, then Enter apart) and wait for ``expect``."""
    await live.send(prompt.encode())
    await wait_text(live, prompt)
    await live.send(b"\r")
    await wait_text(live, expect)


@pytest.fixture(scope="module")
def fake_llm() -> Iterator[LongLLM]:
    with LongLLM() as llm:
        yield llm


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, agents_cache: AgentsCache, fake_llm: LongLLM
) -> Iterator[Server]:
    xterm_render.available()
    tmp = tmp_path_factory.mktemp("screen-true")
    data = agents_cache.place(tmp / "data", AGENT, share=True)
    agents = tmp / "agents.json"
    agents.write_text("[]")  # the built-in rows, as shipped
    settings = load_settings(
        data_dir=data,
        store="sql",
        agents_path=str(agents),
        openai_base_url=fake_llm.base_url,
        openai_api_key="sk-provider-" + secrets.token_hex(6),
        agent_model=MODEL,
        ring_buffer_bytes=RING,
    )
    deps = build_embedded(settings)
    registry = deps.terminals.registry
    if hasattr(registry, "viewer_queue_bytes"):  # the raw protocol's slow-viewer budget
        registry.viewer_queue_bytes = SLOW_BUDGET
    with (
        serve_in_thread(create_app(deps)) as running,
        httpx.Client(base_url=running.url, timeout=20) as http,
    ):
        server = Server(running.url, running.ws_url, EmbeddedIssuer.load(data), http, registry)
        created = http.post(SESSIONS, headers=server.auth(), json={"agent": AGENT, "name": "box"})
        assert created.status_code == 201, created.text
        deadline = time.monotonic() + 60
        while http.get(f"{SESSIONS}/box", headers=server.auth()).json()["status"] != "running":
            assert time.monotonic() < deadline, "the sandbox never ran"
            time.sleep(0.1)
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def live(server: Server) -> AsyncIterator[Recorder]:
    """The viewer attached since the start (before the agent drew its first screen),
    speaking sandbox.v2 as the console does."""
    async with Recorder(server, v2=True) as viewer:
        await viewer.first_frame()
        await wait_text(viewer, READY)
        server.resize(100, 30)
        await wait_text(viewer, READY)
        yield viewer


async def test_reloads_type_nothing_into_the_agent(server: Server, live: Recorder) -> None:
    """The agent's start-up queries are still in the ring here: a raw replay would make
    xterm.js answer them again on every reload."""
    await quiet(live)
    before = server.metric(INPUT_BYTES)
    typed = []
    for _ in range(10):
        async with Recorder(server) as page:
            await page.first_frame()
            screen = await asyncio.to_thread(page.render)
            if screen.replies:  # what xterm.js answered to the replay, sent back
                typed.append(screen.replies)
                await page.send(screen.replies)
    await quiet(live)
    assert typed == [], f"xterm.js answered queries in the replay: {typed!r}"
    assert server.metric(INPUT_BYTES) == before, "the agent got input nobody typed"


async def test_a_fresh_viewer_sees_the_live_screen_after_the_ring_wrapped(
    server: Server, live: Recorder
) -> None:
    start = server.metric(OUTPUT_BYTES)
    rounds = 0
    while server.metric(OUTPUT_BYTES) - start < 4 * RING:  # the ring wraps 4 times at least
        word = secrets.token_hex(3)
        await ask(live, f"long-{word}-400", f"END-{word}")
        rounds += 1
        assert rounds <= 6, "the answers did not produce enough output"
    screen = await equal_screens(server, live, "after the ring wrapped")
    assert screen.buffer == "alternate"  # opencode's full-screen UI, kept
    assert screen.modes["mouseTrackingMode"] != "none"
    assert screen.modes["bracketedPasteMode"]


async def test_a_fresh_viewer_sees_the_live_screen_after_resizes(
    server: Server, live: Recorder
) -> None:
    for cols, rows in ((90, 28), (120, 36), (100, 30)):
        server.resize(cols, rows)
        await quiet(live)
    await equal_screens(server, live, "after resizes")


async def test_a_resynced_slow_viewer_sees_the_live_screen(server: Server, live: Recorder) -> None:
    resyncs = server.metric(RESYNCS)
    slow = InnerViewer(server, server.registry.get("acme/box", "box"))
    try:
        word = secrets.token_hex(3)
        await ask(live, f"long-{word}-200", f"END-{word}")  # > its budget, unread
        assert server.metric(RESYNCS) > resyncs, "the slow viewer was never resynchronised"
        slow.reading.set()  # it reads again: what it gets must rebuild the screen
        await quiet(live, slow)
        want, got = await asyncio.gather(
            asyncio.to_thread(live.render), asyncio.to_thread(slow.render)
        )
    finally:
        await slow.close()
    diff = differences(want, got)
    assert not diff, (
        "the resynced viewer differs:\n" + "\n".join(diff) + "\n" + (side_by_side(want, got))
    )


async def test_a_paste_after_a_reload_arrives_bracketed(
    server: Server, live: Recorder, fake_llm: LongLLM
) -> None:
    """A multi-line paste from a reloaded page is one prompt, not three."""
    await quiet(live)
    word = secrets.token_hex(3)
    asked = len(fake_llm.completions())
    async with Recorder(server) as page:
        await page.first_frame()
        screen = await asyncio.to_thread(page.render)
        assert screen.modes["bracketedPasteMode"], "bracketed paste lost on reload"
        await page.send(screen.paste(f"ping-{word} first\nsecond-{word}\nthird-{word}"))
        # (shown as such or folded: opencode may show "[Pasted ~3 lines]")
        await wait_text(live, re.compile(rf"third-{word}|Pasted"))
        await page.send(b"\r")
        await wait_text(live, f"PONG-{word}")
    prompts = [last_user_text(r.body) for r in fake_llm.completions()[asked:]]
    mine = [p for p in prompts if f"ping-{word}" in p]
    assert mine, f"the paste never reached the model: {prompts}"
    assert all(f"second-{word}" in p and f"third-{word}" in p for p in mine), (
        f"the paste was not one prompt: {mine}"
    )
