"""The `sandbox` command as a user runs it: a real `sandbox serve` process and the
client commands against it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from openova_sandbox.testing.server import free_port
from support.cli import SANDBOX
from support.cli import run_sandbox as run
from support.fake_agents import write_stand_ins


def mint(data_dir: Path, *, org: str = "acme") -> str:
    """A token from `sandbox token`, as a script would get one."""
    out = run(
        "token",
        "--sub",
        "u-1",
        "--email",
        "dev@acme.com",
        "--org",
        org,
        "--data-dir",
        str(data_dir),
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


class Serve:
    def __init__(
        self,
        data_dir: Path,
        port: int,
        env: dict[str, str] | None = None,
        *,
        ready: str = "/login?token=",
    ) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [SANDBOX, "serve", "--port", str(port), "--data-dir", str(data_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "SANDBOX_LOG_JSON": "true", **(env or {})},
        )
        self.lines: list[str] = []
        deadline = time.monotonic() + 30
        while not any(ready in line for line in self.lines):
            line = self.process.stdout.readline()
            if not line:
                raise AssertionError("serve exited: " + self.process.stderr.read())
            self.lines.append(line)
            assert time.monotonic() < deadline

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)


@pytest.fixture
def serve(tmp_path):
    started: list[Serve] = []

    # every agent runnable without installing it (create refuses uninstalled ones)
    agents = write_stand_ins(tmp_path / "agents.json")

    def start(**env: str) -> Serve:
        s = Serve(
            tmp_path / "data", free_port(), {"OPENOVA_SANDBOX_AGENTS_PATH": str(agents), **env}
        )
        started.append(s)
        return s

    yield start
    for s in started:
        if s.process.poll() is None:
            s.stop()


def test_version():
    out = run("--version")
    assert out.returncode == 0
    assert re.fullmatch(r"sandbox \d+\.\d+\.\d+\n", out.stdout)


def test_token_refuses_without_an_issuer_key(tmp_path):
    out = run("token", "--sub", "u", "--email", "u@x.io", "--org", "x", "--data-dir", str(tmp_path))
    assert out.returncode == 1
    assert "no issuer key" in out.stderr


def test_invalid_settings_name_the_variable(tmp_path):
    out = run("serve", "--data-dir", str(tmp_path), env={"SANDBOX_DEFAULT_QUOTA_MEMORY": "lots"})
    assert out.returncode == 1
    assert "SANDBOX_DEFAULT_QUOTA_MEMORY" in out.stderr


def test_serve_then_client_commands(serve, tmp_path):
    s = serve()
    assert any(line.startswith("Console:") and "/sandbox" in line for line in s.lines)
    assert httpx.get(f"{s.url}/healthz").text == "ok"
    data = ["--server", s.url, "--data-dir", str(tmp_path / "data")]

    token = run(
        "token",
        "--sub",
        "u-1",
        "--email",
        "dev@acme.com",
        "--org",
        "acme",
        "--role",
        "org-admin",
        "--ttl",
        "10m",
        "--data-dir",
        str(tmp_path / "data"),
    )
    assert token.returncode == 0, token.stderr
    jwt = token.stdout.strip()
    assert jwt.count(".") == 2
    resp = httpx.get(f"{s.url}/api/v1/sandbox/sessions", headers={"Authorization": f"Bearer {jwt}"})
    assert resp.json() == {"sandboxes": []}
    assert (
        run(
            "token",
            "--sub",
            "u",
            "--email",
            "e@x.io",
            "--org",
            "x",
            "--ttl",
            "soon",
            "--data-dir",
            str(tmp_path / "data"),
        ).returncode
        != 0
    )

    empty = run("ls", *data)
    assert empty.returncode == 0
    assert "No sandboxes yet" in empty.stdout
    created = run("create", "--agent", "aider", "--name", "cli-box", "--json", *data)
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["id"] == "cli-box"
    dup = run("create", "--agent", "aider", "--name", "cli-box", *data)
    assert dup.returncode == 1
    assert "already exists" in dup.stderr
    listed = run("ls", "--json", *data)
    assert [i["id"] for i in json.loads(listed.stdout)["sandboxes"]] == ["cli-box"]
    table = run("ls", *data)
    assert "cli-box" in table.stdout
    got = run("get", "cli-box", *data)
    assert got.returncode == 0
    assert "cli-box" in got.stdout
    assert run("get", "nope", *data).returncode == 1
    bad_agent = run("create", "--agent", "vim", *data)
    assert bad_agent.returncode == 1
    assert "not in catalogue" in bad_agent.stderr

    # env token wins over the data dir; a bad one is a clear 401
    denied = run("ls", *data, env={"SANDBOX_TOKEN": "garbage"})
    assert denied.returncode == 1
    assert "HTTP 401" in denied.stderr

    # restart: the sandbox is still there
    s.stop()
    s2 = serve()
    data2 = ["--server", s2.url, "--data-dir", str(tmp_path / "data")]
    again = run("ls", "--json", *data2)
    assert [i["id"] for i in json.loads(again.stdout)["sandboxes"]] == ["cli-box"]
    assert run("rm", "cli-box", *data2).returncode == 0


def test_unreachable_server_is_a_clear_error(tmp_path):
    out = run("ls", "--server", f"http://127.0.0.1:{free_port()}", env={"SANDBOX_TOKEN": "x"})
    assert out.returncode == 1
    assert "no server answers at" in out.stderr and "sandbox serve" in out.stderr
    assert "HTTP 0" not in out.stderr


def test_logs_never_contain_tokens(serve, tmp_path):
    s = serve()
    jwt = mint(tmp_path / "data")
    httpx.get(f"{s.url}/api/v1/sandbox/sessions", params={"access_token": jwt})
    httpx.get(f"{s.url}/api/v1/sandbox/sessions", headers={"Authorization": f"Bearer {jwt}"})
    httpx.get(f"{s.url}/api/v1/sandbox/sessions", params={"access_token": "eyJhbGciOi.bad.sig"})
    s.stop()
    logs = s.process.stderr.read()
    assert '"route": "/api/v1/sandbox/sessions"' in logs
    assert jwt not in logs
    assert jwt.split(".")[2] not in logs
    assert "access_token=ey" not in logs


def test_shutdown_ends_open_event_streams_at_once(serve, tmp_path):
    s = serve()
    jwt = mint(tmp_path / "data")
    lines: list[str] = []
    with httpx.stream(
        "GET",
        f"{s.url}/api/v1/sovereigns/local/k8s/stream",
        params={"kinds": "sandbox", "access_token": jwt},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        stream = response.iter_lines()
        while "event: ready" not in lines:
            lines.append(next(stream))
        started = time.monotonic()
        s.process.terminate()
        lines.extend(stream)  # ends when the server ends the stream
        # well before uvicorn's 10 s graceful timeout would have cut it (a loaded
        # machine may take a few seconds to shut the process down)
        assert time.monotonic() - started < 8
    assert "event: end" in lines
    # uvicorn re-raises the signal once it has shut down cleanly
    assert s.process.wait(timeout=10) in (0, -15)


def test_with_an_external_issuer_no_login_link_is_printed(tmp_path):
    """A link signed by the embedded issuer would not validate against the OIDC issuer."""
    s = Serve(
        tmp_path / "data",
        free_port(),
        {"SANDBOX_JWKS_URL": "http://127.0.0.1:9/jwks.json"},
        ready="Sign-in:",
    )
    try:
        assert not any("/login?token=ey" in line for line in s.lines)
        assert any("http://127.0.0.1:9/jwks.json" in line for line in s.lines)
        assert httpx.get(f"{s.url}/.well-known/jwks.json").status_code == 404
    finally:
        s.stop()


@pytest.mark.parametrize("ttl", ["99999999999d", "1000000000d", "3651d"])
def test_a_huge_ttl_is_a_clear_error(tmp_path, ttl):
    data = tmp_path / "data"
    out = run(
        "token",
        "--sub",
        "u",
        "--email",
        "u@x.io",
        "--org",
        "x",
        "--ttl",
        ttl,
        "--data-dir",
        str(data),
    )
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert "--ttl" in out.stderr


def test_ids_are_one_path_segment_and_an_empty_one_is_refused(serve, tmp_path):
    s = serve()
    data = ["--server", s.url, "--data-dir", str(tmp_path / "data")]
    assert run("create", "--agent", "aider", "--name", "victim", *data).returncode == 0
    for odd in ("victim?oops", "victim#frag", "../sessions/victim"):
        gone = run("get", odd, *data)
        assert gone.returncode == 1 and "HTTP 404" in gone.stderr, gone.stderr
        run("rm", odd, *data)
    # none of those reached the real "victim"
    assert run("get", "victim", *data).returncode == 0
    for cmd in ("get", "rm", "attach"):
        empty = run(cmd, "", *data)
        assert empty.returncode == 1 and "ID is empty" in empty.stderr, (cmd, empty.stderr)


def test_a_server_that_is_not_the_api_is_a_clear_error(serve, tmp_path):
    s = serve()
    console = ["--server", f"{s.url}/sandbox", "--data-dir", str(tmp_path / "data")]
    for args in (["ls"], ["get", "x"]):
        out = run(*args, *console)
        assert out.returncode == 1
        assert "Traceback" not in out.stderr
        assert "--server" in out.stderr, out.stderr


def test_a_token_that_is_not_ascii_is_a_clear_error(tmp_path):
    out = run("ls", "--server", "http://127.0.0.1:9", env={"SANDBOX_TOKEN": "tökén"})
    assert out.returncode == 1
    assert "Traceback" not in out.stderr and "SANDBOX_TOKEN" in out.stderr


def test_serve_on_a_taken_port_prints_no_urls_and_fails(serve, tmp_path):
    s = serve()
    port = s.url.rsplit(":", 1)[1]
    other = run("serve", "--port", port, "--data-dir", str(tmp_path / "data2"), timeout=60)
    assert other.returncode == 1
    assert "/login?token=" not in other.stdout and "Console" not in other.stdout
    assert f"could not start on 127.0.0.1:{port}" in other.stderr


def test_serve_with_a_file_as_data_dir_is_a_clear_error(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    out = run("serve", "--port", str(free_port()), "--data-dir", str(afile))
    assert out.returncode == 1
    assert "Traceback" not in out.stderr and "data dir" in out.stderr, out.stderr
