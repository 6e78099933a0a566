"""Each sandbox has its own temporary folder: agents unpack into $TMPDIR at every start
and never clean up (opencode: ~13 MB of .so a start). Without isolation it is
``<data dir>/tmp/<org>/<name>``, counted in the sandbox's storage and removed with it;
in a bubblewrap view it is the view's own /tmp (a tmpfs gone with the terminal). A real
shell writes there through a real terminal; the folder is gone after DELETE."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import websockets

if TYPE_CHECKING:
    from conftest import Api

SESSIONS = "/api/v1/sandbox/sessions"
DEV = {"sub": "sub-dev-0001", "email": "dev@acme.com", "org": "acme"}


def wait_ready(api: Api, name: str) -> None:
    deadline = time.monotonic() + 30
    while api.http.get(f"{SESSIONS}/{name}", headers=api.auth(**DEV)).json().get("phase") != (
        "Ready"
    ):
        assert time.monotonic() < deadline, f"{name} not ready"
        time.sleep(0.05)


async def type_and_read(url: str, line: bytes, marker: bytes) -> bytes:
    """Type ``line`` into the terminal; its output up to the line after ``marker``."""
    out = b""
    async with asyncio.timeout(30), websockets.connect(url) as ws:
        await ws.send(line)
        while marker not in out or not out.split(marker, 1)[1].count(b"\n"):
            frame = await ws.recv()
            out += frame if isinstance(frame, bytes) else frame.encode()
    return out


@pytest.mark.parametrize("isolation", ["none", "bwrap"])
def test_the_sandbox_has_its_own_tmpdir_which_goes_with_it(make_api: Any, isolation: str) -> None:
    if isolation == "bwrap" and shutil.which("bwrap") is None:
        pytest.skip("bubblewrap missing")
    api: Api = make_api(store="memory", isolation=isolation)
    made = api.http.post(SESSIONS, headers=api.auth(**DEV), json={"agent": "shell", "name": "box"})
    assert made.status_code == 201, made.text
    wait_ready(api, "box")
    folder = Path(api.deps.settings.data_dir) / "tmp" / "acme" / "box"
    assert folder.is_dir() and (folder.stat().st_mode & 0o777) == 0o700
    url = f"{api.server.ws_url}{SESSIONS}/box/attach?access_token={api.token(**DEV)}"
    # (the marker is printed with a quote inside, so the echo of the command is not it)
    line = (
        b'head -c 200000 /dev/zero > "$TMPDIR/agent-unpacked.so" && '
        b'echo "TMP""=$TMPDIR:$TMP:$TEMP:$TEMPDIR"; ls "$TMPDIR"\r'
    )
    out = asyncio.run(type_and_read(url, line, b"TMP="))
    seen = out.split(b"TMP=", 1)[1].split(b"\r\n", 1)[0].decode()
    if isolation == "none":
        assert seen == ":".join([str(folder)] * 4), out
        written = folder / "agent-unpacked.so"
        assert written.stat().st_size == 200000
    else:  # the data dir is not in the view: the view's own /tmp
        assert seen == "/tmp:/tmp:/tmp:/tmp", out
        assert not (folder / "agent-unpacked.so").exists()
    assert b"agent-unpacked.so" in out
    gone = api.http.delete(f"{SESSIONS}/box", headers=api.auth(**DEV))
    assert gone.status_code == 204
    deadline = time.monotonic() + 30
    while api.http.get(f"{SESSIONS}/box", headers=api.auth(**DEV)).status_code != 404:
        assert time.monotonic() < deadline, "sandbox never deleted"
        time.sleep(0.05)
    assert not folder.exists()
    assert not folder.parent.exists()  # acme's last sandbox: its folder goes too


def test_the_tmpdir_counts_in_the_sandboxs_storage(tmp_path: Any) -> None:
    from openova_sandbox.controller.local import LocalRuntime
    from openova_sandbox.controller.local import tmp_path as sandbox_tmp

    class NoTerminals:  # the runtime's terminal port is not used by a measurement
        pass

    data = tmp_path / "data"

    async def scenario() -> tuple[int, int]:
        runtime = LocalRuntime(NoTerminals(), data_dir=data, git_base_url="", storage_interval=0)  # type: ignore[arg-type]
        runtime._make_workspace("acme", "box")
        ws = str(runtime.workspace("acme", "box"))
        await runtime._measure(("acme", "box"), ws)
        before = runtime._usage[("acme", "box")][1]
        (sandbox_tmp(data, "acme", "box") / "big.so").write_bytes(b"x" * 1_000_000)
        await runtime._measure(("acme", "box"), ws)
        return before, runtime._usage[("acme", "box")][1]

    before, after = asyncio.run(scenario())
    assert after - before >= 1_000_000


def test_sandboxes_made_before_there_were_tmp_folders_get_one_at_start(tmp_path: Any) -> None:
    from openova_sandbox.controller.local import LocalRuntime

    data = tmp_path / "data"
    (data / "workspaces" / "acme" / "old").mkdir(parents=True)

    async def start() -> None:
        LocalRuntime(object(), data_dir=data, git_base_url="")  # type: ignore[arg-type]

    asyncio.run(start())
    assert (data / "tmp" / "acme" / "old").is_dir()
