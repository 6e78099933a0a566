"""A real ``sandbox pty-server`` process, configured from the environment as the operator
configures a sandbox's pod (docs/kubernetes.md), on 127.0.0.1: for the tests that need
what runs in a pod (previews)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from openova_sandbox.testing.server import free_port
from support.pod import pty_server_process


@dataclass
class PtyServer:
    url: str
    pid: int
    workdir: Path

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")


@contextmanager
def running_pty_server(
    tmp_path: Path,
    *,
    probe_token: str,
    sandbox: str = "box",
    namespace: str = "acme",
    owner: str = "dev@acme.com",
    data_dir: Path | None = None,
    port: int = 0,
) -> Iterator[PtyServer]:
    """The server with its issuer's keys in ``data_dir`` (tokens minted there verify)."""
    agents = tmp_path / "pty-agents.json"
    agents.write_text(json.dumps([{"slug": "aider", "binary": "/bin/sh", "defaultArgs": ["-i"]}]))
    work = tmp_path / "pty-work"
    work.mkdir(exist_ok=True)
    port = port or free_port()
    env = {
        **os.environ,
        "SANDBOX_DATA_DIR": str(data_dir or tmp_path / "pty-data"),
        "SANDBOX_ID": sandbox,
        "SANDBOX_NAMESPACE": namespace,
        "SANDBOX_OWNER_EMAIL": owner,
        "SANDBOX_ORG_ID": namespace,
        "SANDBOX_DEFAULT_AGENT": "aider",
        "SANDBOX_WORKDIR": str(work),
        "SANDBOX_PROBE_TOKEN": probe_token,
        "OPENOVA_SANDBOX_AGENTS_PATH": str(agents),
    }
    with pty_server_process(env, port) as (url, pid):
        yield PtyServer(url=url, pid=pid, workdir=work)
