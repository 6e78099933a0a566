"""A preview in Chromium (issue 14; docs/mcp.md, "Previews"): Debian's chromium driven by
Playwright against a real embedded server (``sandbox serve``'s app on the test's loop),
signed in through ``/login`` as a person does, with a small web app started through the
MCP client's ``preview.start`` in the sandbox's isolation.

The app works as a web app behind the proxy: its page, stylesheet, JS modules (one
importing another), image, its own fetch GET and JSON POST (a CORS preflight: the page's
origin is opaque), an XHR, and a dev server's WebSocket. Its scripts cannot act as the
signed-in user: the console's cookie and storage are out of their reach, and their
requests to the API, to the preview's own link and to a terminal's socket carry no
credentials and are refused. The preview's own ``Content-Security-Policy`` (which asks for
``allow-same-origin``) does not undo that. The link opens for the owner and an org
admin, and for nobody else; after the preview stops, or the sign-in it came from expires,
the page does not load.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from openova_sandbox.auth.cookie import COOKIE_NAME
from openova_sandbox.domain.terminal_wire import REASON_ORIGIN
from openova_sandbox.testing.server import free_port
from support.mcp_world import SESSIONS, McpWorld, Person, mcp_world

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
PYTHON = "/usr/bin/python3"  # the system's: the sandbox's view shows /usr
ADA = Person("sub-ada", "ada@acme.com", "acme")
BOB = Person("sub-bob", "bob@acme.com", "acme")
SANDBOX_POLICY = "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads"


def _require_browser() -> None:
    missing = None if CHROMIUM.exists() else f"{CHROMIUM} is missing"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        missing = "the playwright Python package is not installed"
    if missing and os.environ.get("SANDBOX_TEST_REQUIRE_ALL") == "1":
        pytest.fail(f"{missing} (SANDBOX_TEST_REQUIRE_ALL=1: browser tests are mandatory)")
    if missing:
        pytest.skip(missing)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[McpWorld]:
    _require_browser()
    async with mcp_world(tmp_path) as made:
        yield made


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    _require_browser()
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def signed_in(browser: Any, world: McpWorld, token: str) -> Any:
    """A browser context signed in with ``token`` through ``/login``'s confirmation page,
    as a person signs in (the real cookie: HttpOnly, SameSite=Strict)."""
    context = await browser.new_context(base_url=world.url)
    page = await context.new_page()
    await page.goto(f"/login?token={token}")
    await page.get_by_role("button").click()
    await page.wait_for_url("**/sandbox")  # the console
    cookies = {c["name"]: c for c in await context.cookies()}
    assert cookies[COOKIE_NAME]["sameSite"] == "Strict" and cookies[COOKIE_NAME]["httpOnly"]
    return context


async def start_app(world: McpWorld, who: Person = ADA) -> tuple[Any, int, dict[str, Any]]:
    sandbox = await world.create(who)
    await world.ready(who, sandbox.name)
    workspace = Path(world.deps.previews._context(sandbox).workdir)
    (workspace / "app_server.py").write_text(APP_SERVER)
    port = free_port()
    link = f"/preview/{sandbox.name}/{port}/"
    for name, text in FILES.items():
        (workspace / name).write_text(
            text.replace("@SANDBOX@", sandbox.name).replace("@LINK@", link)
        )
    (workspace / "label.txt").write_text("run one")
    async with world.client(world.mcp_token(sandbox)) as client:
        started = await client.call_tool(
            "preview.start", {"port": port, "command": f"exec {PYTHON} app_server.py {port}"}
        )
    assert not started.is_error, started.content
    view: dict[str, Any] = started.structured_content
    assert view["status"] == "listening", view
    assert view["url"] == f"{world.url}{link}"
    return sandbox, port, view


async def test_a_preview_works_as_a_web_app_and_its_scripts_cannot_act_as_the_user(
    world: McpWorld, browser: Any
) -> None:
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    _, _, view = await start_app(world)
    before = (await world.http.get(SESSIONS, headers=world.auth(ADA))).json()
    context = await signed_in(browser, world, world.token(ADA))
    # the console stays open in its tab, its origin keeping something in its storage
    await context.pages[0].evaluate("localStorage.setItem('console-secret', 's3cret')")
    page = await context.new_page()  # the preview's tab: its requests are recorded

    # what the preview's tab sent, as Chromium reports it (DevTools' network events: the
    # headers really sent, the cookies it withheld and why, the status that came back)
    cdp = await context.new_cdp_session(page)
    await cdp.send("Network.enable")
    asked: dict[str, tuple[str, str]] = {}
    sent: dict[str, dict[str, Any]] = {}
    answered: dict[str, int] = {}
    cdp.on(
        "Network.requestWillBeSent",
        lambda e: (
            e["type"] == "Document"  # the address typed in, and its redirects
            or asked.setdefault(e["requestId"], (e["request"]["method"], e["request"]["url"]))
        ),
    )
    sockets_opened: dict[str, str] = {}
    handshakes: dict[str, dict[str, Any]] = {}
    cdp.on(
        "Network.webSocketCreated", lambda e: sockets_opened.setdefault(e["requestId"], e["url"])
    )
    cdp.on(
        "Network.webSocketWillSendHandshakeRequest",
        lambda e: handshakes.setdefault(e["requestId"], e["request"]["headers"]),
    )
    cdp.on("Network.requestWillBeSentExtraInfo", lambda e: sent.setdefault(e["requestId"], e))
    cdp.on(
        "Network.responseReceivedExtraInfo",
        lambda e: answered.setdefault(e["requestId"], e["statusCode"]),
    )
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))

    opened = await page.goto(view["url"])  # typed into the address bar: the cookie goes
    assert opened is not None and opened.status == 200
    assert f"{view['path']}~" in page.url  # sent into the capability path
    assert (await opened.all_headers())["content-security-policy"].startswith(SANDBOX_POLICY)
    try:
        await page.wait_for_function("window.results !== undefined", timeout=30_000)
    except PlaywrightTimeout:
        pytest.fail(f"the page's script did not finish: {await page.evaluate('window.progress')}")
    results = await page.evaluate("window.results")
    print(json.dumps(results, indent=1))

    # a web app: its page, stylesheet, modules, image, fetch GET and JSON POST, XHR, socket
    assert await page.text_content("h1") == "run one"
    assert results["origin"] == "null"  # opaque, though the preview asked for same-origin
    assert results["module"] == "lib loaded"
    assert results["css"] == "rgb(1, 2, 3)"
    assert results["image"] == 1
    assert results["get"] == {"hello": "from the backend", "cookie": None}
    assert results["post"] == {"echo": {"n": 42}, "type": "application/json"}
    assert results["xhr"] == "200 from the backend"
    assert results["live"] == ["reload", "echo:hi"]
    assert any("/live" in url and "/~" in url for url in sockets), sockets

    # ...whose scripts cannot act as the user
    assert results["cookie"] == "SecurityError"
    assert results["storage"] == "SecurityError"
    for attempt in ("apiList", "apiCreate", "apiCreateJson", "console", "link", "linkHere"):
        assert results[attempt] == "refused", (attempt, results[attempt])
    # the terminals' rule: accepted, then closed at once for its origin, nothing sent
    assert results["terminal"] == {"code": 1008, "reason": REASON_ORIGIN, "messages": []}
    # the requests themselves: each of the page's to the API, the console and the link
    # went cross-site from an opaque origin, without the console's cookie (Chromium
    # withheld it: SameSite=Strict), and was answered as anybody's
    outside = {
        rid: (method, url.split("/", 3)[3])
        for rid, (method, url) in asked.items()
        if "/~" not in url
    }
    assert set(outside.values()) >= {
        ("GET", "api/v1/sandbox/sessions"),
        ("POST", "api/v1/sandbox/sessions"),
        ("OPTIONS", "api/v1/sandbox/sessions"),  # the JSON POST's preflight
        ("GET", "sandbox"),
        ("GET", view["path"].lstrip("/")),
        ("GET", f"{view['path'].lstrip('/')}api/hello"),
    }, outside
    async with asyncio.timeout(10):  # DevTools' reports of what left, and the answers
        while sum(rid not in sent for rid in outside) > 1 or not all(
            rid in answered for rid in outside if rid in sent
        ):
            await asyncio.sleep(0.05)
    for rid, where in outside.items():
        if rid not in sent:  # the JSON POST: its preflight was refused, it never left
            assert where == ("POST", "api/v1/sandbox/sessions"), where
            continue
        headers = {k.lower(): v for k, v in sent[rid]["headers"].items()}
        assert headers.get("sec-fetch-site") == "cross-site", (where, headers)
        assert COOKIE_NAME not in headers.get("cookie", ""), where
        if where[0] == "OPTIONS":
            continue  # a preflight never carries cookies
        withheld = [
            c["blockedReasons"]
            for c in sent[rid]["associatedCookies"]
            if c["cookie"]["name"] == COOKIE_NAME
        ]
        # Chromium's reason: SchemefulSameSiteStrict (an opaque origin is no site)
        assert withheld and any("SameSiteStrict" in r for r in withheld[0]), (where, withheld)
        if where[1] != "sandbox":
            assert answered[rid] == 401, (where, answered[rid])
    assert sum(1 for rid in outside if rid not in sent) == 1
    # the terminal's socket: its handshake went without the cookie either
    attach = [rid for rid, url in sockets_opened.items() if url.endswith("/attach")]
    assert len(attach) == 1 and attach[0] in handshakes, (sockets_opened, handshakes)
    shake = {k.lower(): v for k, v in handshakes[attach[0]].items()}
    assert shake["origin"] == "null" and COOKIE_NAME not in shake.get("cookie", ""), shake
    after = (await world.http.get(SESSIONS, headers=world.auth(ADA))).json()
    assert [s["id"] for s in after["sandboxes"]] == [s["id"] for s in before["sandboxes"]]
    await context.close()


async def test_the_link_opens_for_the_owner_and_admin_only_until_it_stops_or_expires(
    world: McpWorld, browser: Any
) -> None:
    sandbox, port, view = await start_app(world)
    workspace = Path(world.deps.previews._context(sandbox).workdir)

    async def visit(token: str | None, url: str | None = None) -> tuple[int, str, Any]:
        context = await (
            signed_in(browser, world, token) if token else browser.new_context(base_url=world.url)
        )
        page = context.pages[0] if context.pages else await context.new_page()
        answer = await page.goto(url or view["url"])
        assert answer is not None
        return answer.status, page.url, context

    status, url, owner = await visit(world.token(ADA))
    assert status == 200 and "/~" in url
    admin = world.issuer.mint(
        sub="sub-admin", email="admin@acme.com", org="acme", roles=("org-admin",)
    )
    status, url, context = await visit(admin)
    assert status == 200 and "/~" in url
    await context.close()
    foreign = world.issuer.mint(
        sub="sub-boss", email="boss@globex.com", org="globex", roles=("org-admin",)
    )
    for token, expected in ((world.token(BOB), 404), (foreign, 404), (None, 401)):
        status, url, context = await visit(token)
        assert (status, url) == (expected, view["url"]), token
        await context.close()

    # the owner's tab: reloaded once the preview stopped, it goes back to the link,
    # which says there is no preview; started again, the same tab loads the new run
    page = owner.pages[0]
    capability = page.url
    async with world.client(world.mcp_token(sandbox)) as client:
        await client.call_tool("preview.stop", {"port": port})
        stopped = await page.goto(capability)
        assert stopped is not None and stopped.status == 404
        assert page.url == view["url"] and "preview-not-found" in await page.content()
        (workspace / "label.txt").write_text("run two")
        again = await client.call_tool(
            "preview.start", {"port": port, "command": f"exec {PYTHON} app_server.py {port}"}
        )
        assert again.structured_content["status"] == "listening", again.content
    reloaded = await page.goto(capability)
    assert reloaded is not None and reloaded.status == 200
    assert page.url != capability and "/~" in page.url
    assert await page.text_content("h1") == "run two"
    await owner.close()

    # signed in with a token that ends soon: the page stops loading when it does
    short = world.issuer.mint(sub=ADA.sub, email=ADA.email, org=ADA.org, ttl=timedelta(seconds=4))
    status, url, context = await visit(short)
    assert status == 200 and "/~" in url
    async with asyncio.timeout(30):
        while (await world.http.get(url)).status_code != 401:
            await asyncio.sleep(0.1)
    page = context.pages[0]
    expired = await page.goto(url)
    assert expired is not None and expired.status == 401
    assert page.url == view["url"]
    await context.close()


APP_SERVER = r'''
import base64, hashlib, json, struct, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript", ".png": "image/png"}


class App(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, code, ctype, body, extra=()):
        self.send_response(code)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        for key, value in extra:
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/live":
            return self.live()
        if self.path == "/api/hello":
            body = {"hello": "from the backend", "cookie": self.headers.get("cookie")}
            return self.send(200, "application/json", json.dumps(body).encode())
        if self.path == "/logo.png":
            return self.send(200, "image/png", PNG)
        name = "index.html" if self.path == "/" else self.path.lstrip("/")
        try:
            body = open(name, "rb").read()
        except OSError:
            return self.send(404, "text/plain", b"no such file")
        if name == "index.html":
            body = body.replace(b"@LABEL@", open("label.txt", "rb").read())
        ctype = TYPES.get(name[name.rfind("."):], "application/octet-stream")
        # a preview asking for its console's origin: the proxy's policy still holds
        extra = [("content-security-policy", "sandbox allow-scripts allow-same-origin")]
        return self.send(200, ctype, body, extra if name == "index.html" else ())

    def do_POST(self):
        size = int(self.headers.get("content-length") or 0)
        sent = json.loads(self.rfile.read(size))
        body = {"echo": sent, "type": self.headers.get("content-type")}
        return self.send(200, "application/json", json.dumps(body).encode())

    def live(self):
        """A dev server's live-reload socket (RFC 6455 by hand: the system's Python has
        no WebSocket library): says "reload", echoes one message, closes."""
        key = self.headers["sec-websocket-key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
        accept = base64.b64encode(hashlib.sha1(key.encode()).digest()).decode()
        self.send_response(101)
        self.send_header("upgrade", "websocket")
        self.send_header("connection", "Upgrade")
        self.send_header("sec-websocket-accept", accept)
        self.end_headers()
        self.frame(b"reload")
        head = self.rfile.read(2)
        size = head[1] & 0x7F
        if size == 126:
            size = struct.unpack(">H", self.rfile.read(2))[0]
        mask = self.rfile.read(4)
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(size)))
        self.frame(b"echo:" + data)
        self.wfile.write(b"\x88\x02\x03\xe8")  # close, 1000
        self.wfile.flush()
        self.close_connection = True

    def frame(self, data):
        self.wfile.write(bytes([0x81, len(data)]) + data)
        self.wfile.flush()


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), App).serve_forever()
'''

INDEX = """<!doctype html>
<html><head><link rel="stylesheet" href="style.css"></head>
<body><h1>@LABEL@</h1><img id="logo" src="logo.png">
<script type="module" src="app.js"></script></body></html>
"""

APP = r"""
import { label } from './lib.js';

const out = { module: label, origin: self.origin };
window.progress = out;  // what is known so far, for a test that waited in vain
const step = async (name, fn) => {
  try { out[name] = await fn(); } catch (e) { out[name] = e.name || String(e); }
};
await step('cookie', () => document.cookie);
await step('storage', () => localStorage.getItem('console-secret'));
await step('css', () => getComputedStyle(document.body).color);
await step('image', async () => {
  const img = document.getElementById('logo');
  await img.decode();
  return img.naturalWidth;
});
await step('get', async () => (await fetch('api/hello')).json());
await step('post', async () => (await fetch('api/echo', {
  method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ n: 42 }),
})).json());
await step('xhr', () => new Promise((resolve) => {
  const x = new XMLHttpRequest();
  x.open('GET', 'api/hello');
  x.onload = () => resolve(x.status + ' ' + JSON.parse(x.responseText).hello);
  x.onerror = () => resolve('error');
  x.send();
}));
await step('live', () => new Promise((resolve) => {
  const ws = new WebSocket(new URL('live', location.href).href.replace(/^http/, 'ws'));
  const got = [];
  ws.onmessage = (e) => { got.push(e.data); if (got.length === 1) ws.send('hi'); else resolve(got); };
  ws.onerror = () => resolve('error after ' + JSON.stringify(got));
}));

// what a page written to act as its user would try
const attempt = async (url, init = {}) => {
  try {
    const r = await fetch(url, { credentials: 'include', ...init });
    return 'read ' + r.status + ' ' + (await r.text()).slice(0, 100);
  } catch (e) {
    return 'refused';
  }
};
const create = JSON.stringify({ agent: 'shell' });
await step('apiList', () => attempt('/api/v1/sandbox/sessions'));
await step('apiCreate', () => attempt('/api/v1/sandbox/sessions', {
  method: 'POST', headers: { 'content-type': 'text/plain' }, body: create,
}));
await step('apiCreateJson', () => attempt('/api/v1/sandbox/sessions', {
  method: 'POST', headers: { 'content-type': 'application/json' }, body: create,
}));
await step('console', () => attempt('/sandbox'));
await step('link', () => attempt('@LINK@'));
await step('linkHere', () => attempt('@LINK@api/hello'));
await step('terminal', () => new Promise((resolve) => {
  const url = new URL('/api/v1/sandbox/sessions/@SANDBOX@/attach', location.href);
  const ws = new WebSocket(url.href.replace(/^http/, 'ws'));
  const got = [];
  ws.onmessage = (e) => got.push(String(e.data));
  ws.onclose = (e) => resolve({ code: e.code, reason: e.reason, messages: got });
}));
window.results = out;
"""

FILES = {
    "index.html": INDEX,
    "style.css": "body { color: rgb(1, 2, 3); }\n",
    "lib.js": "export const label = 'lib loaded';\n",
    "app.js": APP,
}
