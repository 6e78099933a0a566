"""``preview.*`` (issue 14), the handlers called directly (test_mcp_preview_client.py
goes through the MCP client): a real embedded server (uvicorn on the test's loop, so the
tools' handlers and the server share one loop), a real sandbox made Ready by the
embedded controller, real preview processes (``python3 -m http.server``) started by the
tool in the sandbox's isolation, and the ``/preview/<sandbox>/<port>/`` proxy reached
with real HTTP requests: the owner's bearer and cookie sent into a capability path of
their own, which then opens the preview without any credential for that user, that
port and that run of the preview until it expires; another user's 404, nobody's 401.
(test_preview_browser_isolation.py: the same in Chromium.)
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from openova_sandbox.auth.cookie import COOKIE_NAME, derived_key, sign_cookie
from openova_sandbox.domain.errors import Conflict, Invalid, NotFound, QuotaExceeded
from openova_sandbox.domain.model import ANNOTATION_SUB
from openova_sandbox.domain.preview_grant import KEY_LABEL, PreviewGrant, mint_grant
from openova_sandbox.domain.principal import Principal
from openova_sandbox.mcp.capabilities import Grant
from openova_sandbox.mcp.tools import preview as preview_tools
from openova_sandbox.mcp.tools.base import McpCaller, McpServices, Tool, ToolContext
from openova_sandbox.services.previews import listeners, members
from openova_sandbox.testing.server import free_port
from support.mcp_world import SESSIONS, McpWorld, Person, mcp_world

PYTHON = "/usr/bin/python3"  # the system's: the sandbox's view shows /usr, not the server's HOME
OWNER = Person("sub-ada", "ada@acme.com", "acme")
OTHER = Person("sub-bob", "bob@acme.com", "acme")
TOOLS = {t.name: t for t in preview_tools.TOOLS}


class World:
    """The shared MCP test server (support/mcp_world.py), with this file's helpers."""

    def __init__(self, made: McpWorld) -> None:
        self.made = made
        self.deps = made.deps
        self.url = made.url
        self.http = made.http
        self.data_dir = Path(made.deps.settings.data_dir)

    def token(self, who: Person) -> str:
        return self.made.token(who)

    def auth(self, who: Person) -> dict[str, str]:
        return self.made.auth(who)

    async def sandbox(self, who: Person = OWNER) -> dict[str, Any]:
        made = await self.made.create(who, agent="aider")
        return await self.made.ready(who, made.name)

    async def context(self, name: str, who: Person = OWNER) -> ToolContext:
        principal = Principal(sub=who.sub, email=who.email, org=who.org)
        stored = await self.deps.sessions.get(principal, name)
        caller = McpCaller(
            namespace=stored.namespace,
            sandbox=stored.name,
            uid=stored.metadata.uid,
            owner_sub=stored.metadata.annotations.get(ANNOTATION_SUB, ""),
            owner_email=stored.spec.owner_email,
            org=stored.spec.org_slug,
            grant=Grant(("*",)),
        )
        services = McpServices(
            settings=self.deps.settings, sessions=self.deps.sessions, previews=self.deps.previews
        )
        return ToolContext(caller, services)


async def call(tool: str, ctx: ToolContext, **args: Any) -> Any:
    found: Tool = TOOLS[tool]
    result = await found.handler(ctx, args)
    json.dumps(result)  # what the server sends: JSON-able
    return result


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with mcp_world(tmp_path, store="memory") as made:
        yield World(made)


def server_command(port: int) -> str:
    return f"exec {PYTHON} -m http.server {port} --bind 127.0.0.1"


async def capability(world: World, link: str, who: Person = OWNER) -> str:
    """The capability path the link sends ``who`` (bearer) into, ending in ``/``."""
    sent = await world.http.get(link, headers=world.auth(who))
    assert sent.status_code == 307, sent.text
    assert sent.headers["cache-control"] == "no-store"
    location: str = sent.headers["location"]
    assert location.startswith(f"{link}~") and location.endswith("/"), location
    return location


async def test_a_preview_serves_its_workspace_to_its_owner_and_org_admins_only(
    world: World,
) -> None:
    name = (await world.sandbox())["id"]
    ctx = await world.context(name)
    workspace = world.data_dir / "workspaces"
    page = next(workspace.rglob(name))  # the sandbox's workspace folder
    (page / "index.html").write_text("<h1>hello from the preview</h1>")
    port = free_port()

    started = await call("preview.start", ctx, port=port, command=server_command(port))
    assert started["status"] == "listening", started
    assert started["url"] == f"{world.url}/preview/{name}/{port}/"
    assert started["path"] == f"/preview/{name}/{port}/"

    # the owner, with a bearer token: sent into a capability path, which serves the
    # workspace's file with no credential at all, sandboxed, readable by its own page
    cap = await capability(world, started["path"])
    got = await world.http.get(cap)
    assert got.status_code == 200, got.text
    assert got.text == "<h1>hello from the preview</h1>"
    assert got.headers["content-security-policy"].startswith(
        "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads;"
    )
    assert got.headers["access-control-allow-origin"] == "*"
    # with the console's cookie too (what a browser sends): the rest of the path and the
    # query (without access_token) go along
    cookie = sign_cookie(world.token(OWNER), world.deps.cookie_secret)
    sent = await world.http.get(
        f"{started['path']}index.html?a=1", headers={"cookie": f"{COOKIE_NAME}={cookie}"}
    )
    assert sent.status_code == 307, sent.text
    assert sent.headers["location"].endswith("/index.html?a=1")
    by_query = await world.http.get(f"{started['path']}?access_token={world.token(OWNER)}&b=2")
    assert by_query.status_code == 307 and by_query.headers["location"].endswith("/?b=2")
    got = await world.http.get(sent.headers["location"])
    assert got.status_code == 200 and "hello" in got.text
    # the capability without its slash: the same place with it
    bare = await world.http.get(cap.rstrip("/") + "?q=1")
    assert bare.status_code == 307 and bare.headers["location"] == f"{cap}?q=1"
    # no slash after the port: the same place with one (relative links resolve inside)
    bare = await world.http.get(f"/preview/{name}/{port}", headers=world.auth(OWNER))
    assert bare.status_code == 307 and bare.headers["location"] == f"/preview/{name}/{port}/"

    # nobody: 401; another user of the same org: the 404 an unknown sandbox gets
    assert (await world.http.get(started["path"])).status_code == 401
    other = await world.http.get(started["path"], headers=world.auth(OTHER))
    assert other.status_code == 404
    assert other.json()["error"] == "sandbox-not-found"
    # the org's admin may, as in the console; another org's admin may not
    for org, status in (("acme", 307), ("globex", 404)):
        admin = world.made.issuer.mint(
            sub=f"sub-admin-{org}", email=f"admin@{org}.com", org=org, roles=("org-admin",)
        )
        seen = await world.http.get(started["path"], headers={"Authorization": f"Bearer {admin}"})
        assert seen.status_code == status, (org, seen.text)
        if status == 307:
            assert (await world.http.get(seen.headers["location"])).status_code == 200
    # a port with no preview, and one that is not a port
    assert (
        await world.http.get(
            f"/preview/{name}/{port + 1 if port < 65535 else 1024}/", headers=world.auth(OWNER)
        )
    ).json()["error"] == "preview-not-found"
    bad = await world.http.get(f"/preview/{name}/80/", headers=world.auth(OWNER))
    assert bad.status_code == 400 and "1024-65535" in bad.json()["detail"]

    listed = await call("preview.list", ctx)
    assert [(p["port"], p["status"]) for p in listed["previews"]] == [(port, "listening")]

    stopped = await call("preview.stop", ctx, port=port)
    assert stopped["status"] == "exited"
    assert (await call("preview.list", ctx))["previews"] == []
    gone = await world.http.get(started["path"], headers=world.auth(OWNER))
    assert gone.status_code == 404
    revoked = await world.http.get(cap)  # the capability dies with the preview
    assert revoked.status_code == 401 and revoked.json()["error"] == "preview-grant-revoked"
    with pytest.raises(NotFound, match="no preview on port"):
        await call("preview.stop", ctx, port=port)


async def test_the_proxy_streams_and_keeps_credentials_from_the_preview(world: World) -> None:
    """A preview that echoes what it received: no Authorization, no session cookie, no
    access_token reaches it; its other cookies and the body do; a streamed answer comes
    through chunk by chunk; its Set-Cookie of the session's name never comes back."""
    name = (await world.sandbox())["id"]
    ctx = await world.context(name)
    script = next((world.data_dir / "workspaces").rglob(name)) / "echo.py"
    script.write_text(ECHO_SERVER)
    port = free_port()
    started = await call("preview.start", ctx, port=port, command=f"exec {PYTHON} echo.py {port}")
    assert started["status"] == "listening", started
    token = world.token(OWNER)
    cookie = sign_cookie(token, world.deps.cookie_secret)
    cap = await capability(world, started["path"])
    got = await world.http.post(
        f"{cap}echo/x?access_token={token}&keep=1",
        content=b"payload" * 1000,
        headers={"cookie": f"{COOKIE_NAME}={cookie}; theme=dark"},
    )
    assert got.status_code == 200, got.text
    seen = got.json()
    assert seen["path"] == "/echo/x?keep=1"
    assert seen["body"] == 7000
    assert "authorization" not in seen["headers"]
    assert seen["headers"].get("cookie") == "theme=dark"
    assert seen["headers"]["x-forwarded-prefix"] == cap.rstrip("/")
    assert COOKIE_NAME not in got.headers.get("set-cookie", "")
    # its other cookies: scoped to its own link and this host, never the console's
    assert got.headers.get_list("set-cookie") == [
        f"pref=1; HttpOnly; Path=/preview/{name}/{port}/",
        f"wide=2; SameSite=Lax; Path=/preview/{name}/{port}/",
    ]
    assert "service-worker-allowed" not in got.headers
    # the path as the client encoded it: %2F and %3F stay what they are
    odd = await world.http.post(f"{cap}echo/a%2Fb%3Fc%20d", content=b"")
    assert odd.json()["path"] == "/echo/a%2Fb%3Fc%20d"
    # a redirect to its own root lands inside the prefix
    moved = await world.http.get(f"{cap}moved")
    assert moved.status_code == 302
    assert moved.headers["location"] == f"{cap}landing"

    # streamed: the first chunk arrives while the preview still holds the rest back
    async with world.http.stream("GET", f"{cap}stream") as answer:
        chunks = answer.aiter_raw()
        first = await asyncio.wait_for(chunks.__anext__(), 5)
        assert first.startswith(b"first")
        rest = b"".join([chunk async for chunk in chunks])
        assert rest.endswith(b"last\n")


async def test_ports_are_checked_one_per_port_and_a_few_per_sandbox(world: World) -> None:
    name = (await world.sandbox())["id"]
    ctx = await world.context(name)
    for bad in (80, 0, 70000, "8080", True):
        with pytest.raises(Invalid):
            await call("preview.start", ctx, port=bad, command="true")
    with pytest.raises(Invalid, match="command"):
        await call("preview.start", ctx, port=free_port(), command="  ")
    with pytest.raises(Invalid, match="wait"):
        await call("preview.start", ctx, port=free_port(), command="true", wait="soon")
    # a sandbox being deleted (its processes are being ended) starts nothing more
    stored = await world.deps.sessions.get(Principal(OWNER.sub, OWNER.email, OWNER.org), name)
    deleting = stored.with_meta(deletion_timestamp=datetime.now(UTC))
    with pytest.raises(Conflict, match="being deleted"):
        await world.deps.previews.start_preview(deleting, free_port(), "true")
    # a port something else of this machine listens on
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(Conflict, match="already in use"):
            await call("preview.start", ctx, port=taken.getsockname()[1], command="true")
    # the server's own port
    own = int(world.url.rsplit(":", 1)[1])
    with pytest.raises(Conflict, match="already in use"):
        await call("preview.start", ctx, port=own, command="true")

    ports = [free_port() for _ in range(5)]
    sleepers = [
        await call("preview.start", ctx, port=p, command="exec sleep 60", wait=0) for p in ports[:4]
    ]
    assert {s["status"] for s in sleepers} == {"starting"}  # never listens
    with pytest.raises(Conflict, match="already has a preview"):
        await call("preview.start", ctx, port=ports[0], command="exec sleep 60", wait=0)
    with pytest.raises(QuotaExceeded, match="4 previews"):
        await call("preview.start", ctx, port=ports[4], command="exec sleep 60", wait=0)
    # the proxy says a starting preview is not there yet, with a retry hint
    starting = await world.http.get(f"/preview/{name}/{ports[0]}/", headers=world.auth(OWNER))
    assert starting.status_code == 503 and starting.headers["retry-after"] == "1"
    assert starting.json()["error"] == "preview-starting"


async def test_an_exited_preview_says_its_code_and_output(world: World) -> None:
    name = (await world.sandbox())["id"]
    ctx = await world.context(name)
    port = free_port()
    done = await call("preview.start", ctx, port=port, command="echo broken build; exit 3")
    assert done["status"] == "exited" and done["exitCode"] == 3
    assert "broken build" in done["output"]
    refused = await world.http.get(done["path"], headers=world.auth(OWNER))
    assert refused.status_code == 503 and refused.json()["error"] == "preview-exited"
    # an exited preview's port may be started again
    again = await call("preview.start", ctx, port=port, command=server_command(port))
    assert again["status"] == "listening"


async def test_a_listener_that_is_not_the_previews_is_never_proxied(world: World) -> None:
    """Every sandbox shares the machine's network: a preview whose port another process
    took after it started stays ``starting`` and the proxy does not reach that process."""
    name = (await world.sandbox())["id"]
    ctx = await world.context(name)
    port = free_port()
    started = await call("preview.start", ctx, port=port, command="exec sleep 60", wait=0)
    assert started["status"] == "starting"
    with socket.socket() as intruder:
        intruder.bind(("127.0.0.1", port))
        intruder.listen()
        listed = await call("preview.list", ctx)
        assert listed["previews"][0]["status"] == "starting"
        got = await world.http.get(started["path"], headers=world.auth(OWNER))
        assert got.status_code == 503 and got.json()["error"] == "preview-starting"


async def test_previews_end_with_their_sandbox(world: World) -> None:
    name = (await world.sandbox())["id"]
    ctx = await world.context(name)
    port = free_port()
    started = await call("preview.start", ctx, port=port, command=server_command(port))
    assert started["status"] == "listening"
    preview = world.deps.previews._previews[(ctx.caller.namespace, name)][port]
    pids = members(preview.process.pid)
    assert len(pids) >= 2  # the launcher and the server inside
    deleted = await world.http.delete(f"{SESSIONS}/{name}", headers=world.auth(OWNER))
    assert deleted.status_code in (200, 202, 204)
    async with asyncio.timeout(20):
        while any(_alive(pid) for pid in pids):
            await asyncio.sleep(0.05)
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # nothing listens there now


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap missing")
async def test_a_preview_runs_in_its_sandboxs_view(world: World) -> None:
    """As the terminals do: the server's data dir (keys, database, cookie secret) is not
    there, the workspace is, and the process is in a PID namespace of its own."""
    assert world.deps.isolation.policy is not None, world.deps.isolation
    name = (await world.sandbox())["id"]
    ctx = await world.context(name)
    secret = world.data_dir / "cookie-secret"
    assert secret.exists()
    port = free_port()
    command = f'test ! -e {secret} && test -w "$PWD" && {server_command(port)}'
    started = await call("preview.start", ctx, port=port, command=command)
    assert started["status"] == "listening", started
    preview = world.deps.previews._previews[(ctx.caller.namespace, name)][port]
    inner = members(preview.process.pid)[-1]
    nspid = next(
        line
        for line in Path(f"/proc/{inner}/status").read_text().splitlines()
        if line.startswith("NSpid:")
    )
    assert len(nspid.split()) == 3  # a process of a PID namespace of its own


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :][:1] not in (b"Z", b"X")


ECHO_SERVER = r"""
import json, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        size = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(size)
        out = json.dumps({
            "path": self.path,
            "body": len(body),
            "headers": {k.lower(): v for k, v in self.headers.items()},
        }).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.send_header("set-cookie", "catalyst_session=stolen; Path=/")
        self.send_header("set-cookie", "pref=1; Path=/; HttpOnly")
        self.send_header("set-cookie", "wide=2; Domain=127.0.0.1; SameSite=Lax; path=/auth/oidc")
        self.send_header("service-worker-allowed", "/")
        self.end_headers()
        self.wfile.write(out)

    def do_GET(self):
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("location", "/landing")
            self.send_header("content-length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for part, pause in ((b"first\n", 1.0), (b"last\n", 0)):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.flush()
            time.sleep(pause)
        self.wfile.write(b"0\r\n\r\n")

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Echo).serve_forever()
"""


async def test_previews_publish_their_events(world: World) -> None:
    """``preview.started|stopped|exited`` on the bus, scoped as every product event (the
    live resource openova://preview/{id}/{port} follows them)."""
    name = (await world.sandbox())["id"]
    ctx = await world.context(name)
    queue = world.deps.bus.subscribe()
    try:
        port = free_port()
        await call("preview.start", ctx, port=port, command=server_command(port))
        await call("preview.stop", ctx, port=port)
        await call("preview.start", ctx, port=port, command="exit 4")
        seen: list[tuple[str, Any]] = []
        async with asyncio.timeout(10):
            while len(seen) < 4:
                event = await queue.get()
                if event.type.startswith("preview."):
                    assert event.payload["namespace"] == ctx.caller.namespace
                    assert event.payload["sandbox"] == name
                    assert event.payload["owner_email"] == "ada@acme.com"
                    assert event.payload["port"] == port
                    seen.append((event.type, event.payload.get("code")))
        assert seen == [
            ("preview.started", None),
            ("preview.stopped", seen[1][1]),
            ("preview.started", None),
            ("preview.exited", 4),
        ]
    finally:
        world.deps.bus.unsubscribe(queue)


async def test_a_preview_on_ipv6_loopback_is_found_and_proxied(world: World) -> None:
    """A server bound to ``::1`` only: its socket is read from ``/proc/net/tcp6`` and the
    proxy reaches it there."""
    with socket.socket(socket.AF_INET6) as probe:
        try:
            probe.bind(("::1", 0))
        except OSError:
            pytest.skip("no IPv6 loopback on this machine")
    name = (await world.sandbox())["id"]
    ctx = await world.context(name)
    ws = next((world.data_dir / "workspaces").rglob(name))
    (ws / "index.html").write_text("over ipv6")
    port = free_port()
    command = f"exec {PYTHON} -m http.server {port} --bind ::1"
    started = await call("preview.start", ctx, port=port, command=command)
    assert started["status"] == "listening", started
    got = await world.http.get(started["path"], headers=world.auth(OWNER), follow_redirects=True)
    assert got.status_code == 200 and got.text == "over ipv6"


CLOSER = """
import os, socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()
while not os.path.exists("close"):
    time.sleep(0.02)
s.close()
time.sleep(60)
"""


async def test_a_port_the_preview_let_go_of_is_not_proxied_to_its_next_holder(
    world: World,
) -> None:
    """The preview's socket, once found, is trusted only while the preview still holds
    it: closed, and the port taken by another process, the preview is ``starting`` again
    and the proxy does not reach the newcomer."""
    name = (await world.sandbox())["id"]
    ctx = await world.context(name)
    ws = next((world.data_dir / "workspaces").rglob(name))
    (ws / "closer.py").write_text(CLOSER)
    port = free_port()
    started = await call("preview.start", ctx, port=port, command=f"exec {PYTHON} closer.py {port}")
    assert started["status"] == "listening", started
    cap = await capability(world, started["path"])
    (ws / "close").write_text("")
    async with asyncio.timeout(10):
        while (await call("preview.list", ctx))["previews"][0]["status"] != "starting":
            await asyncio.sleep(0.05)
    with socket.socket() as intruder:
        intruder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        intruder.bind(("127.0.0.1", port))
        intruder.listen()
        assert (await call("preview.list", ctx))["previews"][0]["status"] == "starting"
        got = await world.http.get(started["path"], headers=world.auth(OWNER))
        assert got.status_code == 503 and got.json()["error"] == "preview-starting"
        # under the capability path too, readable by the preview's own page
        got = await world.http.get(cap, headers={"origin": "null"})
        assert got.status_code == 503 and got.json()["error"] == "preview-starting"
        assert got.headers["access-control-allow-origin"] == "null"
        assert got.headers["retry-after"] == "1"


TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 101 1 0 100 0 0 10 0
   1: 0500007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 102 1 0 100 0 0 10 0
   2: 0100007F:1F40 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 103 1 0 100 0 0 10 0
   3: 0A00020F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 104 1 0 100 0 0 10 0
   4: 0100007F:1F41 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 105 1 0 100 0 0 10 0
"""
TCP6 = """  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F40 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 201 1 0 100 0 0 10 0
   1: 00000000000000000000000001000000:1F40 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 202 1 0 100 0 0 10 0
"""


def test_listeners_read_the_kernels_tables(tmp_path: Path) -> None:
    """``/proc/net/tcp{,6}`` as the kernel writes them (addresses in host byte order per
    32-bit word): listening sockets of the port only, each with the address to reach it
    on (loopback for a wildcard)."""
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "tcp").write_text(TCP)
    (tmp_path / "net" / "tcp6").write_text(TCP6)
    assert listeners(8000, proc=str(tmp_path)) == {
        101: "127.0.0.1",  # 0.0.0.0
        102: "127.0.0.5",
        104: "15.2.0.10",  # a specific address, reached there
        201: "::1",  # ::
        202: "::1",
    }  # 103 is a connection, not a listener; 105 another port
    assert listeners(8001, proc=str(tmp_path)) == {105: "127.0.0.1"}
    assert listeners(9000, proc=str(tmp_path / "missing")) == {}


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap missing")
async def test_an_offline_orgs_sandbox_has_no_preview(tmp_path: Path) -> None:
    """An offline org's sandboxes run without a network namespace to share: a preview of
    theirs could not be reached, so it is refused, saying why."""
    async with mcp_world(tmp_path, store="memory", isolation_offline_orgs=("acme",)) as made:
        world = World(made)
        name = (await world.sandbox())["id"]
        ctx = await world.context(name)
        with pytest.raises(Invalid, match="offline") as refused:
            await call("preview.start", ctx, port=free_port(), command="true")
        assert refused.value.code == "preview-offline"


async def test_a_capability_opens_one_run_of_one_preview_for_its_user_until_it_expires(
    world: World,
) -> None:
    """The grant in a capability path is bound to the sandbox, the port, the preview's
    run and the user, expires, and dies with the preview and the sandbox; a refused one
    says why (a page load is sent back to the link, which signs a new one)."""
    name = (await world.sandbox())["id"]
    ctx = await world.context(name)
    page = next((world.data_dir / "workspaces").rglob(name))
    (page / "index.html").write_text("run one")
    port, other_port = free_port(), free_port()
    started = await call("preview.start", ctx, port=port, command=server_command(port))
    assert started["status"] == "listening", started
    cap = await capability(world, started["path"])
    grant = cap.split("~", 1)[1].rstrip("/")
    assert (await world.http.get(cap)).text == "run one"

    def refused(answer: Any, code: str) -> None:
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"] == code, answer.text
        assert grant not in answer.text  # the detail never repeats the grant

    # another port or another sandbox's name: not what it was signed for
    refused(
        await world.http.get(f"/preview/{name}/{other_port}/~{grant}/"), "preview-grant-invalid"
    )
    refused(await world.http.get(f"/preview/shell-0/{port}/~{grant}/"), "preview-grant-invalid")
    # forged: a changed signature, a changed payload, garbage, too long
    payload, signature = grant.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    for forged in (f"{payload}.{flipped}", f"{payload[:-4]}AAAA.{signature}", "x", "a.b.c"):
        refused(await world.http.get(f"/preview/{name}/{port}/~{forged}/"), "preview-grant-invalid")
    refused(
        await world.http.get(f"/preview/{name}/{port}/~{'a' * 3000}.b/"), "preview-grant-invalid"
    )

    # signed with the server's key but for someone else: checked against the sandbox
    key = derived_key(world.deps.cookie_secret, KEY_LABEL)
    preview = world.deps.previews._previews[(ctx.caller.namespace, name)][port]
    now = int(datetime.now(UTC).timestamp())

    def signed(**changes: Any) -> str:
        fields: dict[str, Any] = {
            "namespace": ctx.caller.namespace,
            "sandbox": name,
            "port": port,
            "instance": preview.instance,
            "sub": OWNER.sub,
            "email": OWNER.email,
            "org": OWNER.org,
            "roles": (),
            "tier": "",
            "expires_at": now + 600,
            **changes,
        }
        return f"/preview/{name}/{port}/~{mint_grant(key, PreviewGrant(**fields))}/"

    assert (await world.http.get(signed())).status_code == 200  # the control: it opens
    refused(await world.http.get(signed(sub=OTHER.sub, email=OTHER.email)), "preview-grant-revoked")
    refused(
        await world.http.get(
            signed(sub="sub-x", email="x@globex.com", org="globex", roles=("org-admin",))
        ),
        "preview-grant-revoked",
    )
    refused(await world.http.get(signed(instance="another-run")), "preview-grant-revoked")
    expired = await world.http.get(signed(expires_at=now - 1))
    refused(expired, "preview-grant-expired")
    # a page load with a refused grant goes back to the link (Chromium sends this header
    # on every navigation), keeping the rest of the path and the query
    navigating = {"sec-fetch-mode": "navigate"}
    back = await world.http.get(signed(expires_at=now - 1) + "a/b?c=1", headers=navigating)
    assert back.status_code == 303, back.text
    assert back.headers["location"] == f"/preview/{name}/{port}/a/b?c=1"

    # minted from a token that ends soon: the grant ends with it
    short = world.made.issuer.mint(
        sub=OWNER.sub, email=OWNER.email, org=OWNER.org, ttl=timedelta(seconds=90)
    )
    sent = await world.http.get(started["path"], headers={"Authorization": f"Bearer {short}"})
    minted = sent.headers["location"].split("~", 1)[1].rstrip("/")
    claims = json.loads(base64.urlsafe_b64decode(minted.split(".")[0] + "=="))
    assert now + 80 <= claims["x"] <= now + 100
    assert (claims["u"], claims["s"], claims["p"], claims["i"]) == (
        OWNER.sub,
        name,
        port,
        preview.instance,
    )

    # a CORS preflight of the page (Origin null: its origin is opaque) is answered here
    asked = {
        "origin": "null",
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type",
    }
    pre = await world.http.options(f"{cap}api", headers=asked)
    assert pre.status_code == 204, (pre.text, pre.headers)
    assert pre.headers["access-control-allow-origin"] == "null"
    assert pre.headers["access-control-allow-headers"] == "content-type"
    assert "POST" in pre.headers["access-control-allow-methods"]
    refused(
        await world.http.options(f"/preview/{name}/{port}/~x.y/api", headers=asked),
        "preview-grant-invalid",
    )

    # started again on the same port: the old capability opens nothing, a new link does
    await call("preview.stop", ctx, port=port)
    refused(await world.http.get(cap), "preview-grant-revoked")
    (page / "index.html").write_text("run two")
    await call("preview.start", ctx, port=port, command=server_command(port))
    refused(await world.http.get(cap), "preview-grant-revoked")
    fresh = await capability(world, started["path"])
    assert (await world.http.get(fresh)).text == "run two"

    # the sandbox goes: its capabilities with it
    deleted = await world.http.delete(f"{SESSIONS}/{name}", headers=world.auth(OWNER))
    assert deleted.status_code in (200, 202, 204)
    async with asyncio.timeout(20):
        while (await world.http.get(fresh)).status_code == 200:
            await asyncio.sleep(0.05)
    refused(await world.http.get(fresh), "preview-grant-revoked")
