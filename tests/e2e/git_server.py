"""A slow, real git server for the provisioning tests: plain files over HTTP (git's
"dumb" protocol), with every first request of a clone held for a few seconds so the
console's provisioning view is on screen long enough to be seen and photographed."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HOLD_SECONDS = 5.0  # more than two 2-second polls of the provisioning view


class _SlowFiles(SimpleHTTPRequestHandler):
    def do_GET(self) -> None:
        if "/info/refs" in self.path:
            time.sleep(HOLD_SECONDS)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


class GitServer:
    def __init__(self, root: Path) -> None:
        self.root = root
        handler = partial(_SlowFiles, directory=str(root))
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def start(self) -> GitServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def publish(self, repo: str, *, readme: str) -> None:
        """Create `<root>/<repo>.git`, a bare repository with one commit holding README."""
        git = shutil.which("git")
        assert git is not None
        work = self.root / ".work" / repo
        work.mkdir(parents=True)
        (work / "README").write_text(readme + "\n")
        env_args = ["-c", "user.name=e2e", "-c", "user.email=e2e@example.com"]

        def run(*args: str, cwd: Path) -> None:
            subprocess.run([git, *env_args, *args], cwd=cwd, check=True, capture_output=True)

        run("init", "--quiet", "--initial-branch=main", ".", cwd=work)
        run("add", "README", cwd=work)
        run("commit", "--quiet", "-m", "first", cwd=work)
        bare = self.root / f"{repo}.git"
        bare.parent.mkdir(parents=True, exist_ok=True)
        run("clone", "--quiet", "--bare", str(work), str(bare), cwd=self.root)
        run("update-server-info", cwd=bare)
