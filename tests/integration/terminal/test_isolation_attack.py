"""Embedded isolation (issue 12), tried as an attacker would: from inside a sandbox's
terminal of a real ``sandbox serve`` (bubblewrap required), typing into a real shell over
the attach WebSocket.

Two users, two sandboxes: ``alpha`` (alice's) attacks; ``beta`` (bob's) is the neighbour.
The server runs with a canary in its environment, a 256Mi / 500m quota and a limit of 64
processes per sandbox.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from openova_sandbox.testing.server import free_port
from support.cli import SANDBOX, run_sandbox
from support.fake_agents import write_stand_ins

SESSIONS = "/api/v1/sandbox/sessions"
CANARY = "canary-7f3e9a1c"
DONE = re.compile(rb"@@END(\d+)")
PROCESSES = 64

pytestmark = pytest.mark.skipif(
    shutil.which("bwrap") is None and os.environ.get("SANDBOX_TEST_REQUIRE_ALL") != "1",
    reason="bubblewrap is not installed (CI installs it)",
)


@dataclass
class Server:
    process: subprocess.Popen[str]
    url: str
    data: Path
    lines: list[str]

    def token(self, user: str) -> str:
        out = run_sandbox(
            "token", "--sub", f"sub-{user}", "--email", f"{user}@acme.com", "--org", "acme",
            "--data-dir", str(self.data),
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("isolation")
    agents = write_stand_ins(tmp / "agents.json", "/bin/bash", ("--norc", "--noprofile", "-i"))
    data = tmp / "data"
    port = free_port()
    env = {
        **os.environ,
        "OPENOVA_SANDBOX_AGENTS_PATH": str(agents),
        "SANDBOX_ISOLATION": "bwrap",  # required: the server must not start without it
        "SANDBOX_ISOLATION_PROCESSES": str(PROCESSES),
        "SANDBOX_DEFAULT_QUOTA_CPU": "500m",
        "SANDBOX_DEFAULT_QUOTA_MEMORY": "256Mi",
        "SANDBOX_TEST_CANARY": CANARY,
    }
    process = subprocess.Popen(
        [SANDBOX, "serve", "--port", str(port), "--data-dir", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: list[str] = []
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    while not any("/login?token=" in line for line in lines):
        line = process.stdout.readline()
        assert line, "serve exited:\n" + "".join(lines)
        lines.append(line)
        assert time.monotonic() < deadline
    threading.Thread(
        target=lambda: [lines.append(x) for x in process.stdout or []], daemon=True
    ).start()
    yield Server(process, f"http://127.0.0.1:{port}", data, lines)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)


class Terminal:
    """A shell in a sandbox, typed into over the raw attach protocol."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.seen = b""

    def read_until(self, pattern: re.Pattern[bytes], timeout: float = 20) -> re.Match[bytes]:
        deadline = time.monotonic() + timeout
        while True:
            found = pattern.search(self.seen)
            if found:
                return found
            left = deadline - time.monotonic()
            assert left > 0, (
                f"no {pattern.pattern!r} in:\n{self.seen[-3000:].decode(errors='replace')}"
            )
            try:
                self.seen += self.ws.recv(timeout=left)  # type: ignore[operator]
            except TimeoutError:
                continue

    def run(self, command: str, timeout: float = 20) -> tuple[int, str]:
        """Run ``command``; its exit code and output (the quotes keep the typed echo
        of the end marker from matching)."""
        self.seen = b""
        self.ws.send(f'{command}; echo "@@E""ND$?"\r'.encode())
        found = self.read_until(DONE, timeout)
        return int(found[1]), self.seen[: found.start()].decode(errors="replace")

    def type(self, data: bytes) -> None:
        self.ws.send(data)


@dataclass
class Sandbox:
    name: str
    headers: dict[str, str]
    server: Server

    @property
    def workspace(self) -> Path:
        return self.server.data / "workspaces" / "acme" / self.name

    @property
    def home(self) -> Path:
        return self.server.data / "homes" / "acme" / self.name

    def attach(self, tid: str | None = None) -> Terminal:
        token = self.headers["Authorization"].split()[1]
        path = f"{SESSIONS}/{self.name}" + (f"/terminals/{tid}" if tid else "")
        url = self.server.url.replace("http", "ws") + f"{path}/attach?access_token={token}"
        term = Terminal(connect(url, max_size=None, open_timeout=30, legacy=True))
        term.read_until(re.compile(rb"[#$]"))  # the prompt (a snapshot drops its space)
        return term


def _create(server: Server, user: str, name: str) -> Sandbox:
    headers = {"Authorization": f"Bearer {server.token(user)}"}
    with httpx.Client(base_url=server.url, timeout=30) as http:
        made = http.post(SESSIONS, headers=headers, json={"agent": "aider", "name": name})
        assert made.status_code == 201, made.text
        deadline = time.monotonic() + 30
        while http.get(f"{SESSIONS}/{name}", headers=headers).json().get("phase") != "Ready":
            assert time.monotonic() < deadline, "sandbox not ready"
            time.sleep(0.05)
    return Sandbox(name, headers, server)


@pytest.fixture(scope="module")
def alpha(server: Server) -> Sandbox:
    return _create(server, "alice", "alpha")


@pytest.fixture(scope="module")
def beta(server: Server) -> Sandbox:
    box = _create(server, "bob", "beta")
    (box.workspace / "bob-secret.txt").write_text("bob-workspace-secret")
    (box.home / ".bob-token").write_text("bob-home-secret")
    return box


@pytest.fixture(scope="module")
def shell(alpha: Sandbox) -> Iterator[Terminal]:
    term = alpha.attach()
    yield term
    term.ws.close()


_clients: dict[str, httpx.Client] = {}


def _healthz_ms(url: str) -> float:
    """One ``/healthz`` on a kept-alive connection (a new one would time the connect)."""
    client = _clients.setdefault(url, httpx.Client(base_url=url, timeout=5))
    started = time.monotonic()
    answer = client.get("/healthz")
    assert answer.status_code == 200
    return (time.monotonic() - started) * 1000


def _healthz_worst(url: str, seconds: float) -> float:
    worst, deadline = 0.0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        worst = max(worst, _healthz_ms(url))
        time.sleep(0.02)
    return worst


# ------------------------------------------------------------------ what is out of reach
def test_the_server_files_are_not_there(server, shell, beta):
    """Every file of the data dir outside the sandbox's own folders (issuer key, cookie
    secret, database, vault, login state...) and the other sandbox's folders."""
    own = ("workspaces/acme/alpha", "homes/acme/alpha", "agents")
    secrets = [
        p
        for p in server.data.rglob("*")
        if p.is_file() and not any(str(p.relative_to(server.data)).startswith(o) for o in own)
    ]
    names = {p.name for p in secrets}
    assert "sandbox.db" in names and "bob-secret.txt" in names and ".bob-token" in names
    assert len(secrets) >= 5, names
    for path in secrets:
        code, out = shell.run(f"cat '{path}'")
        assert code != 0, f"read {path}: {out}"
        assert "No such file or directory" in out
    code, out = shell.run(f"ls -A '{server.data}'; ls -A '{server.data}/workspaces/acme'")
    assert code == 0 and "sandbox.db" not in out and "beta" not in out
    code, out = shell.run(f"ls -A '{Path.home()}' | wc -l; cat ~/.bash_history; id -u")
    assert ".ssh" not in out


def test_the_server_environment_and_processes_are_not_there(server, shell):
    pid = server.process.pid
    code, out = shell.run(f"cat /proc/{pid}/environ; grep -l {CANARY[:6]} /proc/*/environ")
    assert CANARY not in out.replace(CANARY[:6] + " ", "")  # the typed command aside
    code, out = shell.run(f"kill -9 {pid}")
    assert code != 0
    code, out = shell.run("ps -e -o pid=,comm= | wc -l; ps -e -o comm=")
    assert "sandbox" not in out.split("\n", 1)[1] and "python" not in out
    assert server.process.poll() is None
    assert _healthz_ms(server.url) < 1000


def _pgrep(pattern: str) -> list[str]:
    """The pids of every process on the machine whose command line matches."""
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return found.stdout.split()


def test_another_sandbox_processes_cannot_be_signalled(server, shell, beta):
    bob = beta.attach()
    # a duration no other test uses: pgrep sees the whole machine (other tests, xdist workers)
    bob.run("sleep 600.75 & echo $!")
    # the shell printed the pid once it forked: the child may not have exec'd sleep yet
    deadline = time.monotonic() + 10
    while not (outside := _pgrep("^sleep 600[.]75$")):
        assert time.monotonic() < deadline, "bob's sleep is not running"
        time.sleep(0.05)
    for pid in outside:
        code, _ = shell.run(f"kill -9 {pid}")
        assert code != 0 or int(pid) < 100  # a small pid inside may be alice's own
    assert _pgrep("^sleep 600[.]75$")
    bob.run("kill %1")
    bob.ws.close()


def test_writing_outside_the_workspace_home_and_tmp_fails(server, shell, alpha):
    for target in ("/etc/x", "/usr/x", "/x", "/opt/x", "/proc/x", "/dev/x"):
        code, out = shell.run(f"touch {target}")
        assert code != 0, f"wrote {target}"
    # the data dir of this test is below /tmp, which is the sandbox's own: a write there
    # lands in that tmpfs, never in the server's folder
    shell.run(f"mkdir -p {server.data}/agents/x; touch {server.data}/x {server.data}/agents/y")
    assert not (server.data / "x").exists() and not (server.data / "agents" / "y").exists()
    code, out = shell.run("touch ~/in-home $PWD/in-workspace /tmp/in-tmp /dev/shm/in-shm")
    assert code == 0, out
    assert (alpha.home / "in-home").exists() and (alpha.workspace / "in-workspace").exists()
    assert not Path("/tmp/in-tmp").exists()  # its own /tmp, not the server's


# ------------------------------------------------------------------ the terminal works
def test_ctrl_c_job_control_and_resize(server, shell, alpha):
    shell.seen = b""
    shell.type(b"sleep 300\r")
    time.sleep(0.2)  # let the shell start it (a ^C before the exec reaches the shell)
    shell.type(b"\x03")
    shell.read_until(re.compile(rb"\^C"))
    code, _ = shell.run("true")
    assert code == 0
    shell.seen = b""
    shell.type(b"sleep 301\r")
    time.sleep(0.2)
    shell.type(b"\x1a")  # ^Z
    shell.read_until(re.compile(rb"Stopped\s+sleep 301"))
    code, out = shell.run("jobs -l")
    assert "sleep 301" in out
    shell.seen = b""
    shell.type(b"fg\r")
    shell.read_until(re.compile(rb"sleep 301\r?\n"))
    time.sleep(0.2)
    shell.type(b"\x03")
    code, out = shell.run("echo after")
    assert "after" in out
    resized = httpx.post(
        f"{server.url}{SESSIONS}/alpha/resize",
        headers=alpha.headers,
        json={"rows": 41, "cols": 123},
        timeout=10,
    )
    assert resized.status_code == 204, resized.text
    code, out = shell.run("stty size")
    assert "41 123" in out


def test_a_git_clone_over_the_network(server, shell, alpha, tmp_path):
    repo = tmp_path / "served" / "project.git"
    work = tmp_path / "work"
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    (work / "README").write_text("hello from the server\n")
    git = ["git", "-C", str(work), "-c", "user.email=t@e", "-c", "user.name=t"]
    subprocess.run([*git, "add", "README"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "update-server-info"], check=True)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(repo.parent))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        port = httpd.server_address[1]
        code, out = shell.run(f"git clone -q http://127.0.0.1:{port}/project.git cloned", 60)
        assert code == 0, out
        assert (alpha.workspace / "cloned" / "README").read_text() == "hello from the server\n"
    finally:
        httpd.shutdown()


def test_whoami_reports_the_isolation(server, alpha):
    body = httpx.get(f"{server.url}/api/v1/sandbox/whoami", headers=alpha.headers).json()
    assert body["isolation"]["mode"] == "bwrap"
    assert body["isolation"]["network"] is True
    assert any("kernel" in item for item in body["isolation"]["notIsolated"])
    assert any("Isolation: each sandbox" in line for line in server.lines)


# ------------------------------------------------------------------ limits
def test_a_memory_hog_hits_its_limit_and_the_server_answers(server, shell):
    hog = "python3 -c 'l=[]\nwhile True: l.append(bytearray(8 << 20))'"
    shell.seen = b""
    shell.type(f'{hog}; echo "@@E""ND$?"\r'.encode())
    worst = 0.0
    while not DONE.search(shell.seen):
        worst = max(worst, _healthz_ms(server.url))
        with contextlib.suppress(TimeoutError):
            shell.seen += shell.ws.recv(timeout=0.05)  # type: ignore[operator]
    found = DONE.search(shell.seen)
    assert found and int(found[1]) != 0
    assert b"MemoryError" in shell.seen or int(found[1]) == 137, shell.seen[-500:]
    quiet = _healthz_worst(server.url, 2)
    print(f"/healthz worst: {worst:.1f} ms during the hog, {quiet:.1f} ms after it")
    assert worst < 100, f"/healthz took {worst:.0f} ms during the hog ({quiet:.0f} after)"
    _, out = shell.run("echo still here")
    assert "still here" in out


def _pids(server: Server, name: str, file: str = "pids.current") -> int | None:
    """The processes in the sandbox's pids cgroup (``pids.events``: the forks refused at
    its limit; ``None``: no pids cgroup here)."""
    pid = server.process.pid
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, names, own = line.split(":", 2)
        if "pids" in names.split(","):
            base = Path("/sys/fs/cgroup/pids") / own.lstrip("/")
            current = base / f"openova-sandbox-{pid}" / "acme" / name / file
            return int(current.read_text().split()[-1]) if current.is_file() else None
    return None


def test_a_fork_bomb_hits_its_limit_and_others_are_not_harmed(server, alpha, beta):
    if os.geteuid() == 0 and not Path("/sys/fs/cgroup/pids").is_dir():
        pytest.skip("root is exempt from RLIMIT_NPROC and no pids cgroup is writable")
    counted = _pids(server, "alpha")
    with httpx.Client(base_url=server.url, headers=alpha.headers, timeout=30) as http:
        made = http.post(f"{SESSIONS}/alpha/terminals", json={"agent": "shell"})
        assert made.status_code == 201, made.text
        tid = made.json()["id"]
        bomb = alpha.attach(tid)
        bomb.type(b"b(){ b | b & }; b\r")
        deadline = time.monotonic() + 4
        worst = 0.0
        while time.monotonic() < deadline:
            worst = max(worst, _healthz_ms(server.url))
            time.sleep(0.05)
        if counted is not None:  # the bomb is at the limit: forks were refused there
            assert (_pids(server, "alpha") or 0) <= PROCESSES
            assert _pids(server, "alpha", "pids.events") > 0
        bob = beta.attach()
        code, out = bob.run("echo bob is fine")
        assert code == 0 and "bob is fine" in out
        print(f"/healthz worst: {worst:.1f} ms during the fork bomb")
        assert worst < 100, f"/healthz took {worst:.0f} ms during the fork bomb"
        bomb.ws.close()
        gone = http.delete(f"{SESSIONS}/alpha/terminals/{tid}")
        assert gone.status_code == 204, gone.text
        # nothing of the bomb is left: the sandbox has what it had before
        if counted is not None:  # (a process of the agent's shell may come and go)
            deadline = time.monotonic() + 5
            while (now := _pids(server, "alpha")) is not None and now > counted:
                assert time.monotonic() < deadline, f"{now} processes left, {counted} before"
                time.sleep(0.05)
    code, out = bob.run("echo ok")
    assert "ok" in out
    bob.ws.close()


def test_a_process_ignoring_hup_and_term_is_gone_after_delete(server):
    box = _create(server, "carol", "gamma")
    term = box.attach()
    code, _ = term.run("(trap '' HUP TERM; exec sleep 777.5) & disown; sleep 0.2")
    assert code == 0
    before = subprocess.run(["pgrep", "-f", "^sleep 777.5$"], capture_output=True, text=True)
    assert before.stdout.strip(), "the stubborn process is not running"
    term.ws.close()
    with httpx.Client(base_url=server.url, headers=box.headers, timeout=30) as http:
        assert http.delete(f"{SESSIONS}/gamma").status_code in (202, 204)
        deadline = time.monotonic() + 30
        while http.get(f"{SESSIONS}/gamma").status_code != 404:
            assert time.monotonic() < deadline, "sandbox not deleted"
            time.sleep(0.1)
    after = subprocess.run(["pgrep", "-f", "^sleep 777.5$"], capture_output=True, text=True)
    assert after.stdout.strip() == "", "the stubborn process outlived its sandbox"
