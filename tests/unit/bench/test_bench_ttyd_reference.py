"""bench/terminal.py's reference: ttyd serving an agent, driven by the bench's minimal
client in ttyd's own protocol (subprotocol ``tty``, a JSON hello that starts the agent,
``0``-prefixed input and output). Against the real ttyd when it is built
(``bench/reference/ttyd.sh``) or installed; skipped, with the reason, when it is not."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from support import bench_modules

terminal = bench_modules.terminal()


def _ttyd() -> str | None:
    return os.environ.get("SANDBOX_BENCH_TTYD") or (
        str(terminal.TTYD_BUILT) if terminal.TTYD_BUILT.is_file() else shutil.which("ttyd")
    )


needs_ttyd = pytest.mark.skipif(
    _ttyd() is None, reason="ttyd is not built (bench/reference/ttyd.sh) nor installed"
)


def test_without_ttyd_the_reference_is_a_reason_not_a_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("SANDBOX_BENCH_TTYD", raising=False)
    monkeypatch.setattr(terminal, "TTYD_BUILT", tmp_path / "absent")
    monkeypatch.setenv("PATH", str(tmp_path))
    found = terminal.Ttyd.start(["/bin/cat"])
    assert isinstance(found, str) and "ttyd" in found


@needs_ttyd
def test_the_hello_starts_the_agent_and_input_reaches_it() -> None:
    ttyd = terminal.Ttyd.start(["/bin/sh", "-c", "printf READY; exec cat"])
    assert not isinstance(ttyd, str)
    try:
        assert ttyd.version.count(".") == 2  # "1.7.7" from "ttyd version 1.7.7-..."
        viewer = ttyd.attach()
        try:
            viewer.wait_for(b"READY")  # only once the hello started it
            viewer.send(b"typed\r")  # sent as ttyd's input message: b"0typed\r"
            seen = b""
            while b"typed" not in seen:
                frame = viewer.recv()
                assert frame[:1] in (b"0", b"1", b"2")  # output, title, preferences
                if frame[:1] == b"0":
                    seen += frame[1:]
        finally:
            viewer.close()
    finally:
        ttyd.close()
    assert ttyd.proc.poll() is not None
