"""Share links in Kubernetes mode: the control plane (``sandbox api`` composition) checks
the link and relays the viewer to the sandbox's real terminal server (``sandbox
pty-server``'s app, a real shell in a real PTY) with a share grant signed with that
sandbox's derived key (docs/shares.md, "Kubernetes mode").

What it proves, at the PTY: a read share's viewer cannot type or resize; a write
share's can; the owner's path is unchanged; revocation and expiry close the relayed
viewer 1008 as in embedded mode. And at the pod's door: a grant for sandbox A is
refused by sandbox B's terminal server, as are an expired grant, a forged one (other
key, ``alg: none``, edited claims, a user's token), a replayed one and one whose
share has expired."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import json
import struct
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import websockets
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from openova_sandbox.api.app import create_app
from openova_sandbox.api.composition import build_api
from openova_sandbox.api.terminal_edge.standalone import build_standalone_app
from openova_sandbox.auth.authenticator import build_authenticator
from openova_sandbox.auth.issuer import EmbeddedIssuer
from openova_sandbox.auth.share_grant import ISSUER, ShareGrantIssuer
from openova_sandbox.config import Settings, load_settings
from openova_sandbox.domain.catalogue import load_catalogue
from openova_sandbox.domain.errors import Conflict
from openova_sandbox.domain.model import format_time, utcnow
from openova_sandbox.domain.share import ANNOTATION_SHARES
from openova_sandbox.domain.share_grant import SHARE_GRANT_HEADER, audience, derive_key
from openova_sandbox.domain.terminal_wire import SUBPROTOCOL_V2, unpack_frame
from openova_sandbox.store.sql import SqlStore
from openova_sandbox.terminal.registry import TerminalRegistry
from openova_sandbox.testing.server import free_port, serve_in_thread

pytestmark = pytest.mark.timeout(90)
SESSIONS = "/api/v1/sandbox/sessions"
SECRET = "test-grant-secret-" + "x" * 40
V2 = Subprotocol(SUBPROTOCOL_V2)
MEMBER = {"sub": "member-sub-0001", "email": "member@acme.com"}
WORKSPACE = "sandbox-dev-at-acme-com"


@dataclass
class Pod:
    """One sandbox's terminal server, as its pod runs it."""

    url: str
    registry: TerminalRegistry

    def ws(self, sandbox: str) -> str:
        return self.url.replace("http://", "ws://") + f"/sessions/{sandbox}/attach"

    def session(self, sandbox: str) -> Any:
        (session,) = self.registry.list(sandbox)
        return session

    def size(self, sandbox: str) -> tuple[int, int]:
        fd = self.session(sandbox).process.master_fd
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
        return rows, cols

    def typed(self, sandbox: str) -> bytes:
        return bytes(self.session(sandbox).core.ring.snapshot()[0])


class Cluster:
    """A control plane with a grant secret, sandbox ``box``'s terminal server with the
    key the operator would give it, and sandbox ``other``'s with its own."""

    def __init__(self, tmp_path: Path) -> None:
        agents = tmp_path / "agents.json"
        agents.write_text(
            json.dumps([{"slug": "aider", "binary": "/bin/sh", "defaultArgs": ["-i"]}])
        )
        (tmp_path / "work").mkdir(exist_ok=True)
        self.tmp = tmp_path
        self.pty_port = free_port()
        self.settings = self.pod_settings(
            "box",
            kube_pty_url_template=f"http://127.0.0.1:{self.pty_port}",
            share_grant_secret=SECRET,
        )
        self.issuer = EmbeddedIssuer.load_or_create(tmp_path / "data")
        self.db = self.settings.effective_database_url
        self.grants = ShareGrantIssuer(SECRET)

    def pod_settings(self, sandbox: str, **more: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": self.tmp / "data",
            "agents_path": str(self.tmp / "agents.json"),
            "pty_sandbox_id": sandbox,
            "pty_namespace": "acme",
            "pty_owner_email": "dev@acme.com",
            "pty_org_id": "acme",
            "pty_default_agent": "aider",
            "pty_workdir": str(self.tmp / "work"),
            # what the operator writes into the pod's sandbox-share-grant Secret
            "share_grant_key": derive_key(SECRET, "acme", sandbox),
        }
        return load_settings(**{**values, **more})

    def pod_app(self, settings: Settings) -> tuple[Any, TerminalRegistry]:
        registry = TerminalRegistry(
            catalogue=load_catalogue(settings.agents_path),
            ring_bytes=settings.ring_buffer_bytes,
            scrollback_lines=settings.screen_scrollback_lines,
        )
        authenticate = build_authenticator(settings, issuer=self.issuer).authenticate
        app = build_standalone_app(settings, authenticate=authenticate, registry=registry)
        return app, registry

    def token(self, sub: str = "u-1", email: str = "dev@acme.com", org: str = "acme") -> str:
        return self.issuer.mint(sub=sub, email=email, org=org)

    def edit(self, change: Any) -> None:
        async def run() -> None:
            store = SqlStore(self.db)
            await store.start()
            try:
                while True:  # someone else may write the object too: retry a lost race
                    with contextlib.suppress(Conflict):
                        await change(store, await store.get("acme", "box"))
                        return
            finally:
                await store.close()

        asyncio.run(run())

    def ready(self) -> None:
        from dataclasses import replace

        async def change(store: SqlStore, current: Any) -> None:
            status = replace(current.status, phase="Ready", extra={"workspaceNamespace": WORKSPACE})
            await store.update_status(current.with_status(status))

        self.edit(change)

    def share(self, mode: str) -> dict[str, Any]:
        made = self.http.post(f"{SESSIONS}/box/shares", headers=self.owner_h, json={"mode": mode})
        assert made.status_code == 201, made.text
        return made.json()  # type: ignore[no-any-return]

    def via_share(self, link: dict[str, Any], who: dict[str, str] = MEMBER) -> str:
        member = self.token(**who)
        return f"{self.ws}{SESSIONS}/box/attach?access_token={member}&share={link['token']}"

    def mint(self, sandbox: str = "box", **over: Any) -> str:
        claims: dict[str, Any] = {
            "namespace": "acme",
            "sandbox": sandbox,
            "who": "member@acme.com",
            "mode": "write",
            "share_id": "s1",
            "share_expires_at": time.time() + 3600,
        }
        claims.update(over)
        return self.grants.mint(**claims)

    http: httpx.Client
    ws: str
    owner_h: dict[str, str]
    box: Pod
    other: Pod


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    box_app, box_registry = c.pod_app(c.settings)
    other_port = free_port()
    other_app, other_registry = c.pod_app(c.pod_settings("other"))
    with (
        serve_in_thread(box_app, port=c.pty_port) as box,
        serve_in_thread(other_app, port=other_port) as other,
        serve_in_thread(create_app(build_api(c.settings))) as api,
    ):
        c.box = Pod(box.url, box_registry)
        c.other = Pod(other.url, other_registry)
        c.ws = api.ws_url
        c.http = httpx.Client(base_url=api.url, timeout=10)
        c.owner_h = {"Authorization": f"Bearer {c.token()}"}
        made = c.http.post(SESSIONS, headers=c.owner_h, json={"agent": "aider", "name": "box"})
        assert made.status_code == 201, made.text
        c.ready()
        yield c
        c.http.close()


def owner_url(c: Cluster) -> str:
    return f"{c.ws}{SESSIONS}/box/attach?access_token={c.token()}"


async def raw_until(ws: Any, needle: bytes) -> bytes:
    seen = b""
    async with asyncio.timeout(15):
        while needle not in seen:
            frame = await ws.recv()
            seen += frame if isinstance(frame, bytes) else frame.encode()
    return seen


async def v2_until(ws: Any, needle: bytes, controls: list[dict[str, Any]] | None = None) -> bytes:
    seen = b""
    async with asyncio.timeout(15):
        while needle not in seen:
            message = await ws.recv()
            if isinstance(message, bytes):
                seen += unpack_frame(message)[1]
            elif controls is not None:
                controls.append(json.loads(message))
    return seen


async def closed(ws: Any) -> tuple[int | None, str]:
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(20):
            while True:
                await ws.recv()
    return ws.close_code, ws.close_reason


async def refused_by(url: str, headers: dict[str, str]) -> tuple[int | None, str]:
    async with websockets.connect(url, additional_headers=headers) as ws:
        return await closed(ws)


# ------------------------------------------------------------------ through the relay
def test_a_read_share_cannot_type_or_resize_and_revoking_closes_it(cluster: Cluster) -> None:
    c = cluster
    link = c.share("read")

    async def scenario() -> None:
        async with websockets.connect(owner_url(c)) as own:
            await own.send("echo owner-$((1+1))\n")
            await raw_until(own, b"owner-2")
            size_before = c.box.size("box")
            spectator = await websockets.connect(c.via_share(link), subprotocols=[V2])
            hello = json.loads(await spectator.recv())
            assert (hello["type"], hello["mode"]) == ("hello", "read")
            controls: list[dict[str, Any]] = []
            assert b"owner-2" in await v2_until(spectator, b"owner-2", controls)
            await spectator.send(b"echo typed-by-the-spectator\n")
            await spectator.send(json.dumps({"type": "resize", "rows": 11, "cols": 22}))
            await own.send("echo marker-$((2+3))\n")
            await raw_until(own, b"marker-5")
            seen = await v2_until(spectator, b"marker-5", controls)
            assert b"typed-by-the-spectator" not in c.box.typed("box")
            assert b"typed-by-the-spectator" not in seen
            assert c.box.size("box") == size_before  # never applied at the PTY
            viewers = [m for m in controls if m["type"] == "viewers"][-1]["viewers"]
            assert sorted((v["mode"], v["you"]) for v in viewers) == [
                ("read", True),
                ("write", False),
            ]
            # the owner revokes: the relayed spectator is closed at once, by the relay
            revoked = c.http.delete(f"{SESSIONS}/box/shares/{link['id']}", headers=c.owner_h)
            assert revoked.status_code == 204
            assert await closed(spectator) == (1008, "share-revoked")
            async with websockets.connect(c.via_share(link)) as again:
                assert await closed(again) == (1008, "share-revoked")
            await own.send("echo still-$((3*3))\n")
            await raw_until(own, b"still-9")  # the owner was never disturbed
        # the pod saw the spectator go: only the owner's viewer was ever left
        assert c.box.session("box").info().get("viewers", 0) in (0, 1)

    asyncio.run(scenario())


def test_a_write_share_types_and_resizes(cluster: Cluster) -> None:
    c = cluster
    link = c.share("write")

    async def scenario() -> None:
        async with websockets.connect(c.via_share(link), subprotocols=[V2]) as ws:
            hello = json.loads(await ws.recv())
            assert (hello["type"], hello["mode"]) == ("hello", "write")
            await ws.send(b"echo guest-$((6*7))\n")
            await v2_until(ws, b"guest-42")
            await ws.send(json.dumps({"type": "resize", "rows": 33, "cols": 77}))
            await ws.send(b"stty size\n")
            await v2_until(ws, b"33 77")
            assert c.box.size("box") == (33, 77)

    asyncio.run(scenario())


def test_the_owners_path_is_unchanged(cluster: Cluster) -> None:
    c = cluster

    async def scenario() -> None:
        async with websockets.connect(owner_url(c), subprotocols=[V2]) as ws:
            hello = json.loads(await ws.recv())
            assert (hello["type"], hello["mode"]) == ("hello", "write")
            await ws.send(b"echo mine-$((2*4))\n")
            await v2_until(ws, b"mine-8")
        resized = c.http.post(
            f"{SESSIONS}/box/resize", headers=c.owner_h, json={"rows": 30, "cols": 99}
        )
        assert resized.status_code == 204
        assert c.box.size("box") == (30, 99)
        # a member without a link is still nobody, at the control plane and at the pod
        member = c.token(**MEMBER)
        async with websockets.connect(f"{c.ws}{SESSIONS}/box/attach?access_token={member}") as ws:
            assert await closed(ws) == (1008, "sandbox not found")
        member_h = {"Authorization": f"Bearer {member}"}
        assert await refused_by(c.box.ws("box"), member_h) == (1008, "forbidden")

    asyncio.run(scenario())


def test_a_share_expiring_while_relayed_closes_1008_share_expired(cluster: Cluster) -> None:
    c = cluster
    link = c.share("read")

    async def expire_soon(store: SqlStore, sandbox: Any) -> None:
        entries = json.loads(sandbox.metadata.annotations[ANNOTATION_SHARES])
        entries[0]["expiresAt"] = format_time(utcnow() + timedelta(seconds=3))
        annotations = {**sandbox.metadata.annotations, ANNOTATION_SHARES: json.dumps(entries)}
        await store.update(sandbox.with_meta(annotations=annotations))

    c.edit(expire_soon)

    async def scenario() -> None:
        async with websockets.connect(c.via_share(link)) as ws:
            await ws.recv()  # attached: the replay
            assert await closed(ws) == (1008, "share-expired")

    asyncio.run(scenario())


# ------------------------------------------------------------------ at the pod's door
def test_a_grant_for_one_sandbox_is_refused_by_anothers_pod(cluster: Cluster) -> None:
    c = cluster

    async def scenario() -> None:
        for_box = {SHARE_GRANT_HEADER: c.mint("box")}
        assert await refused_by(c.other.ws("other"), for_box) == (1008, "share-grant-invalid")
        # even signed with the other pod's own key, a grant naming box is not for it
        other_key = derive_key(SECRET, "acme", "other")
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": audience("acme", "box"),
            "sub": "member@acme.com",
            "mode": "write",
            "share": "s1",
            "shx": now + 3600,
            "iat": now,
            "exp": now + 60,
            "jti": "j-aud",
        }
        crossed = jwt.encode(claims, other_key, algorithm="HS256", headers={"typ": "share-grant"})
        header = {SHARE_GRANT_HEADER: crossed}
        assert await refused_by(c.other.ws("other"), header) == (1008, "share-grant-invalid")
        # while the grant for box opens box's own pod
        async with websockets.connect(c.box.ws("box"), additional_headers=for_box) as ws:
            await ws.send("echo direct-$((4+4))\n")
            await raw_until(ws, b"direct-8")

    asyncio.run(scenario())


def test_expired_forged_replayed_and_user_tokens_are_refused(cluster: Cluster) -> None:
    c = cluster
    now = time.time()
    stale = ShareGrantIssuer(SECRET, clock=lambda: now - 300).mint(
        namespace="acme",
        sandbox="box",
        who="member@acme.com",
        mode="write",
        share_id="s1",
        share_expires_at=now + 3600,
    )
    wrong_key = ShareGrantIssuer("another-secret-" + "y" * 40).mint(
        namespace="acme",
        sandbox="box",
        who="member@acme.com",
        mode="write",
        share_id="s1",
        share_expires_at=now + 3600,
    )
    good = c.mint(mode="read")
    head, payload, signature = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["mode"] = "write"  # a read grant edited into a write one
    edited = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    unsigned = jwt.encode({**claims, "jti": "j-none"}, "", algorithm="none")
    share_over = c.mint(share_expires_at=now - 1)
    refused = {
        "expired grant": stale,
        "another secret's key": wrong_key,
        "edited claims": f"{head}.{edited}.{signature}",
        "alg none": unsigned,
        "a user's token": c.token(),
        "garbage": "not-a-jwt",
        "expired share": share_over,
    }

    async def scenario() -> None:
        for what, grant in refused.items():
            got = await refused_by(c.box.ws("box"), {SHARE_GRANT_HEADER: grant})
            assert got == (1008, "share-grant-invalid"), what
        once = c.mint()
        async with websockets.connect(
            c.box.ws("box"), additional_headers={SHARE_GRANT_HEADER: once}
        ) as ws:
            await ws.send("echo first-$((5+5))\n")
            await raw_until(ws, b"first-10")
        replayed = await refused_by(c.box.ws("box"), {SHARE_GRANT_HEADER: once})
        assert replayed == (1008, "share-grant-invalid")
        # a grant opens the attach route only, never the REST routes
        async with httpx.AsyncClient(base_url=c.box.url) as http:
            listed = await http.get("/sessions", headers={SHARE_GRANT_HEADER: c.mint()})
        assert listed.status_code == 401

    asyncio.run(scenario())


def test_the_pod_itself_closes_a_shares_viewer_at_the_shares_expiry(cluster: Cluster) -> None:
    c = cluster
    grant = c.mint(mode="read", share_expires_at=time.time() + 2)

    async def scenario() -> None:
        async with websockets.connect(
            c.box.ws("box"), additional_headers={SHARE_GRANT_HEADER: grant}
        ) as ws:
            await ws.recv()  # attached: the replay
            assert await closed(ws) == (1008, "share-expired")

    asyncio.run(scenario())


def test_a_pod_without_a_key_refuses_grants(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    settings = c.pod_settings("box", share_grant_key="")
    app, _ = c.pod_app(settings)
    port = free_port()
    with serve_in_thread(app, port=port) as pod:
        url = Pod(pod.url, TerminalRegistry(catalogue=load_catalogue(settings.agents_path))).ws(
            "box"
        )
        got = asyncio.run(refused_by(url, {SHARE_GRANT_HEADER: c.mint()}))
    assert got == (1008, "share-grant-invalid")
