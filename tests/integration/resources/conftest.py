"""The real embedded app under uvicorn for the resource surface, with an SSE reader.

``SseReader`` reads a stream on its own thread and hands parsed frames to the test
through a queue, so every wait in a test is bounded by a timeout.
"""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from openova_sandbox.api.app import create_app
from openova_sandbox.api.composition import build_embedded
from openova_sandbox.api.deps import AppDeps
from openova_sandbox.auth.issuer import EmbeddedIssuer
from openova_sandbox.config import load_settings
from openova_sandbox.services.resources import SandboxInformer
from openova_sandbox.services.resources_view import ResourcesService
from openova_sandbox.testing.server import RunningServer, serve_in_thread
from support.fake_agents import write_stand_ins

BASE = "/api/v1/sovereigns"
SESSIONS = "/api/v1/sandbox/sessions"


@dataclass(frozen=True)
class Frame:
    event: str  # "message" for plain data frames, "comment" for ": ..." lines
    data: Any
    id: str | None = None  # the frame's own `id:` line, if it had one


class SseReader:
    def __init__(self, client: httpx.Client, url: str, **kw: Any) -> None:
        self.frames: queue.Queue[Frame | None] = queue.Queue()
        self.retry: int | None = None  # the `retry:` the server asked for
        self._ctx = client.stream("GET", url, **kw)
        self.response = self._ctx.__enter__()
        self._thread = threading.Thread(target=self._read, daemon=True)
        if self.response.status_code == 200:
            self._thread.start()

    def _read(self) -> None:
        event, data, ident = "message", [], None
        try:
            for line in self.response.iter_lines():
                if line.startswith(":"):
                    self.frames.put(Frame("comment", line[1:].strip()))
                elif line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif line.startswith("id:"):
                    ident = line[3:].strip()
                elif line.startswith("retry:"):
                    self.retry = int(line[6:].strip())
                elif line == "":
                    if data:
                        self.frames.put(Frame(event, json.loads("\n".join(data)), ident))
                    event, data, ident = "message", [], None
        except Exception:  # the test closed the stream under the reader
            pass
        finally:
            self.frames.put(None)

    def next(self, timeout: float = 10.0) -> Frame | None:
        """The next frame; ``None`` when the stream ended. Fails the test on timeout."""
        try:
            return self.frames.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no SSE frame within {timeout} s") from None

    def next_event(
        self, where: Callable[[Frame], bool] = lambda f: f.event == "message", timeout: float = 10
    ) -> Frame:
        """Skip frames until one matches (pings and others are passed over)."""
        while True:
            frame = self.next(timeout)
            assert frame is not None, "stream ended"
            if where(frame):
                return frame

    def close(self) -> None:
        # Closing a socket another thread is blocked reading does not send FIN on
        # Linux; shutting it down does, so the server sees the disconnect at once.
        stream = self.response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._ctx.__exit__(None, None, None)
        if self._thread.is_alive():
            self._thread.join(timeout=10)


class Api:
    def __init__(self, server: RunningServer, data_dir: Path, deps: AppDeps) -> None:
        self.url = server.url
        self.deps = deps
        self.issuer = EmbeddedIssuer.load(data_dir)
        self.http = httpx.Client(base_url=server.url, timeout=10)
        self.readers: list[SseReader] = []

    def token(
        self,
        sub: str = "user-sub-abcdef12",
        email: str = "dev@acme.com",
        org: str = "acme",
        roles: tuple[str, ...] = (),
    ) -> str:
        return self.issuer.mint(
            sub=sub, email=email, org=org, roles=roles, ttl=timedelta(minutes=5), extra={}
        )

    def auth(self, **kw: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(**kw)}"}

    def create(self, headers: dict[str, str], name: str, agent: str = "claude-code") -> str:
        response = self.http.post(SESSIONS, headers=headers, json={"agent": agent, "name": name})
        assert response.status_code == 201, response.text
        sandbox_id: str = response.json()["id"]
        self.settle(headers, sandbox_id)
        return sandbox_id

    def settle(self, headers: dict[str, str], sandbox_id: str) -> None:
        """Lists come from the informer's copy, which follows writes shortly after:
        wait until the creator's list shows the new object."""
        deadline = time.monotonic() + 10
        while True:
            listed = self.http.get(f"{BASE}/local/k8s/sandboxes", headers=headers).json()
            if any(i["metadata"]["name"] == sandbox_id for i in listed["items"]):
                return
            assert time.monotonic() < deadline, f"{sandbox_id} never reached the cache"
            time.sleep(0.01)

    def stream(self, path: str, **kw: Any) -> SseReader:
        reader = SseReader(self.http, path, timeout=httpx.Timeout(10, read=None), **kw)
        self.readers.append(reader)
        return reader


@contextlib.contextmanager
def serve_api(tmp_path: Path, store: str, **informer: Any) -> Iterator[Api]:
    """The embedded app on ``store``; ``informer`` keywords (history_size,
    subscriber_capacity) replace its resource informer with one built with them."""
    agents = write_stand_ins(tmp_path / "agents.json")  # agents runnable, not installed
    settings = load_settings(data_dir=tmp_path / "data", agents_path=str(agents), store=store)
    deps = build_embedded(settings)
    if informer:
        custom = ResourcesService(
            informer=SandboxInformer(deps.store, **informer), sessions=deps.sessions
        )
        deps.background = [custom if p is deps.resources else p for p in deps.background]
        deps.resources = custom
    with serve_in_thread(create_app(deps)) as server:
        client = Api(server, tmp_path / "data", deps)
        try:
            yield client
        finally:
            for reader in client.readers:
                reader.close()
            client.http.close()


@pytest.fixture(params=["memory", "sql"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """The memory store and SQLite (whose watch polls its event table)."""
    kind: str = request.param
    return kind


@pytest.fixture
def api(tmp_path: Path, store_kind: str) -> Iterator[Api]:
    """The app on the memory store and on SQLite."""
    with serve_api(tmp_path, store_kind) as client:
        yield client


@pytest.fixture
def api_with(tmp_path: Path, store_kind: str) -> Iterator[Callable[..., Api]]:
    """``api_with(history_size=…, subscriber_capacity=…)``: the app with an informer
    built with those settings (one app per test)."""
    with contextlib.ExitStack() as stack:
        yield lambda **informer: stack.enter_context(serve_api(tmp_path, store_kind, **informer))
