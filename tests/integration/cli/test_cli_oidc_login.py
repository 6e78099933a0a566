"""`sandbox login` / `sandbox logout` against a real OIDC provider process and a real
server (issue 11): the device grant when the issuer offers it, else a loopback redirect
with PKCE; tokens kept 0600 in the config dir, refreshed when expired, revoked at logout."""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from openova_sandbox.api.app import create_app
from openova_sandbox.api.composition import build_embedded
from openova_sandbox.cli.attach import ws_headers, ws_url
from openova_sandbox.cli.client import ApiClient
from openova_sandbox.config import load_settings
from openova_sandbox.testing.server import serve_in_thread
from support.cli import SANDBOX
from support.cli import run_sandbox as run
from support.oidc_idp import OidcIdp

ALICE = {
    "email": "alice@acme.test",
    "organization": ["acme", "globex"],
    "realm_access": {"roles": ["org-admin"]},
}


@pytest.fixture(autouse=True)
def unisolated(monkeypatch: pytest.MonkeyPatch) -> None:
    # an external issuer means several users: this machine cannot isolate sandboxes
    # (no user namespaces), and these tests run none
    monkeypatch.setenv("SANDBOX_ISOLATION", "none")


@pytest.fixture
def config_home(tmp_path: Path) -> dict[str, str]:
    return {"XDG_CONFIG_HOME": str(tmp_path / "config"), "COLUMNS": "400", "NO_COLOR": "1"}


def creds(config_home: dict[str, str]) -> Path:
    return Path(config_home["XDG_CONFIG_HOME"]) / "openova-sandbox" / "credentials.json"


@pytest.fixture
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, OidcIdp]]:
    flags: tuple[str, ...] = getattr(request, "param", ())
    idp = OidcIdp("--revocation", "--id-token-on-refresh", "--access-ttl", "120", *flags)
    try:
        idp.set_user("alice", **ALICE)
        idp.set_user("bob", email="bob@acme.test", organization="acme")
        settings = load_settings(
            data_dir=tmp_path / "data",
            store="memory",
            oidc_issuer=idp.url,
            oidc_client_id="sandbox-console",
            oidc_client_secret="console-secret",
            oidc_cli_client_id="sandbox-cli",
            oidc_org_claim="organization",
        )
        with serve_in_thread(create_app(build_embedded(settings))) as http:
            yield http.url, idp
    finally:
        idp.stop()


def start_login(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [SANDBOX, "login", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )


def read_until(process: subprocess.Popen[str], pattern: str) -> re.Match[str]:
    assert process.stderr is not None
    seen = []
    for line in process.stderr:
        seen.append(line)
        match = re.search(pattern, line)
        if match:
            return match
    raise AssertionError(f"{pattern!r} never printed; stderr:\n{''.join(seen)}")


async def handshake(client: ApiClient) -> str:
    """How the server closes `sandbox attach`'s WebSocket to a sandbox that is not
    there: unauthenticated, or (let in) not found."""
    try:
        async with websockets.connect(
            ws_url(client.server, "nope", client.token), additional_headers=ws_headers(client)
        ) as ws:
            await ws.recv()
    except websockets.InvalidStatus as exc:
        return str(exc.response.status_code)
    except websockets.ConnectionClosed as exc:
        return f"{exc.rcvd.code if exc.rcvd else None} {exc.rcvd.reason if exc.rcvd else ''}"
    return "open"


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=60)
    return process.returncode, out, err


@pytest.mark.parametrize("server", [("--device",)], indirect=True)
def test_device_login_use_refresh_and_logout(server, config_home):
    url, idp = server
    login = start_login("--server", url, "--org", "globex", env=config_home)
    code = read_until(login, r"enter the code ([0-9A-F]{8})").group(1)
    idp.approve_device(code, "alice")
    status, out, err = finish(login)
    assert status == 0, err
    assert f"Signed in to {url} as alice@acme.test (organization globex)" in out
    assert idp.stats()["grants"]["urn:ietf:params:oauth:grant-type:device_code"] >= 1

    path = creds(config_home)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    entry: dict[str, Any] = json.loads(path.read_text())["servers"][url]
    assert entry["client_id"] == "sandbox-cli" and entry["org"] == "globex"
    assert entry["refresh_token"] and entry["id_token"].count(".") == 2

    listed = run("ls", "--server", url, env=config_home)
    assert listed.returncode == 0, listed.stderr
    # `sandbox attach`'s WebSocket handshake carries the org too
    bearer = ApiClient(url, entry["id_token"], org="globex")
    assert asyncio.run(handshake(bearer)) == "1008 sandbox not found"  # let in
    assert asyncio.run(handshake(ApiClient(url, entry["id_token"]))) == "1008 unauthenticated"

    # expired: refreshed (and saved) before the request
    entry["expires_at"] = time.time() - 5
    path.write_text(json.dumps({"servers": {url: entry}}))
    before = idp.stats()["grants"].get("refresh_token", 0)
    listed = run("ls", "--server", url, env=config_home)
    assert listed.returncode == 0, listed.stderr
    assert idp.stats()["grants"]["refresh_token"] == before + 1
    renewed = json.loads(path.read_text())["servers"][url]
    assert renewed["expires_at"] > time.time() + 60
    assert renewed["access_token"] != entry["access_token"]  # a new one from the issuer
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    revoked = idp.stats()["revoked"]
    out = run("logout", "--server", url, env=config_home)
    assert out.returncode == 0, out.stderr
    assert "revoked at the identity provider and deleted" in out.stdout
    assert idp.stats()["revoked"] == revoked + 2  # refresh and access token
    assert not path.exists()
    again = run("logout", "--server", url, env=config_home)
    assert again.returncode == 0 and "Not signed in" in again.stdout


def test_loopback_login_without_device_grant(server, config_home):
    url, idp = server
    login = start_login("--server", url, "--no-browser", env=config_home)
    authorize = read_until(login, r"(http://127\.0\.0\.1:\d+/oauth2/authorize\?\S+)").group(1)
    assert "code_challenge_method=S256" in authorize and "nonce=" in authorize
    back = idp.authorize(authorize, "bob")
    assert back.startswith("http://127.0.0.1:")
    page = httpx.get(back, timeout=10)
    assert page.status_code == 200 and "Signed in" in page.text
    status, out, err = finish(login)
    assert status == 0, err
    assert "as bob@acme.test (organization acme)" in out
    assert run("ls", "--server", url, env=config_home).returncode == 0
    out = run("logout", "--server", url, env=config_home)
    assert out.returncode == 0 and not creds(config_home).exists()


def test_loopback_refuses_another_state(server, config_home):
    url, idp = server
    login = start_login("--server", url, "--no-browser", env=config_home)
    authorize = read_until(login, r"(http://127\.0\.0\.1:\d+/oauth2/authorize\?\S+)").group(1)
    back = idp.authorize(authorize, "bob")
    forged = re.sub(r"state=[^&]+", "state=forged", back)
    httpx.get(forged, timeout=10)
    status, _, err = finish(login)
    assert status == 1
    assert "state does not match" in err
    assert not creds(config_home).exists()


@pytest.mark.parametrize("server", [("--device",)], indirect=True)
def test_an_org_list_without_org_is_refused_and_nothing_is_kept(server, config_home):
    url, idp = server
    login = start_login("--server", url, env=config_home)
    idp.approve_device(read_until(login, r"enter the code ([0-9A-F]{8})").group(1), "alice")
    status, _, err = finish(login)
    assert status == 1
    assert "refused it" in err and "say which one to use" in err
    assert not creds(config_home).exists()


def test_login_to_a_server_without_a_cli_client(tmp_path, config_home):
    idp = OidcIdp()
    try:
        settings = load_settings(
            data_dir=tmp_path / "data",
            store="memory",
            oidc_issuer=idp.url,
            oidc_client_id="sandbox-console",
            oidc_client_secret="console-secret",
        )
        with serve_in_thread(create_app(build_embedded(settings))) as http:
            out = run("login", "--server", http.url, env=config_home)
        assert out.returncode == 1
        assert "SANDBOX_OIDC_CLI_CLIENT_ID" in out.stderr
    finally:
        idp.stop()


def test_login_to_a_server_without_an_issuer(tmp_path, config_home):
    settings = load_settings(data_dir=tmp_path / "data", store="memory")
    with serve_in_thread(create_app(build_embedded(settings))) as http:
        out = run("login", "--server", http.url, env=config_home)
    assert out.returncode == 1
    assert "signs in with its own issuer" in out.stderr
