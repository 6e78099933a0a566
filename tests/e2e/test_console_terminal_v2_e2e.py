"""The console over ``sandbox.v2`` in a real browser against a real ``sandbox serve``.

- Reloading the session page ten times types nothing into the agent: the stand-in agent
  asks the terminal questions at start (DA1, OSC 11 background colour, cursor position),
  as qwen-code and opencode do, and records every byte of its input; a fresh viewer is
  sent the screen, never the questions, and the console drops whatever xterm.js answers
  while it writes a replay (issue 10: "Replayed queries become typed input").
- A share link opens a read-only spectator page: a "view only" badge, nothing typed there
  reaches the agent, the owner sees the spectator among the viewers, and revoking the
  link closes the spectator's terminal with a clear message and no retry.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .serve_process import ServeProcess, start_serve
from .test_console_day_one_e2e import sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(120)]

RELOADS = 10
OPEN_TIMEOUT_MS = 30_000
READY = "READY>"
AGENT = "recorder"

# The agent asks the terminal what real agent TUIs ask at start, then records its input.
RECORDER = r"""#!/bin/sh
stty raw -echo
printf '\033[c\033]11;?\007\033[6n%s ' '{ready}'
exec cat >> '{record}'
"""


@pytest.fixture(scope="module")
def recorder(
    chromium_available: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServeProcess, Path]]:
    tmp = tmp_path_factory.mktemp("v2")
    record = tmp / "stdin.bin"
    record.write_bytes(b"")
    script = tmp / "recorder.sh"
    script.write_text(RECORDER.format(ready=READY, record=record))
    script.chmod(0o755)
    agents = tmp / "catalogue.json"
    agents.write_text(
        json.dumps(
            [{"slug": AGENT, "binary": str(script), "label": "Recorder", "blurb": "records"}]
        )
    )
    # the recorder writes what it reads to a file of this test's, outside any sandbox:
    # this server runs its terminals unisolated (the protocol is the subject here;
    # isolation has tests/integration/terminal/test_isolation_attack.py)
    env = {"OPENOVA_SANDBOX_AGENTS_PATH": str(agents), "SANDBOX_ISOLATION": "none"}
    server = start_serve(tmp, extra_env=env)
    try:
        yield server, record
    finally:
        server.stop()


def pane(page: Any) -> Any:
    return page.locator(".terminal-panel:not([hidden]) .terminal-pane")


def rows(page: Any) -> Any:
    return page.locator(".terminal-panel:not([hidden]) .xterm-rows")


def wait_open(page: Any) -> None:
    from playwright.sync_api import expect

    expect(pane(page)).to_have_attribute("data-connection", "open", timeout=OPEN_TIMEOUT_MS)
    expect(rows(page)).to_contain_text(READY, timeout=OPEN_TIMEOUT_MS)


def type_into(page: Any, text: str) -> None:
    page.locator(".terminal-panel:not([hidden]) [data-testid=sandbox-terminal]").click()
    page.keyboard.type(text)


def wait_recorded(record: Path, marker: bytes, page: Any) -> bytes:
    """The agent's input once ``marker`` is in it (typed after everything else, so any
    earlier byte has arrived by then)."""
    for _ in range(200):
        data = record.read_bytes()
        if marker in data:
            return data
        page.wait_for_timeout(100)
    raise AssertionError(f"{marker!r} never reached the agent; it got {record.read_bytes()!r}")


def test_reloads_type_nothing_and_a_spectator_only_watches(
    recorder: tuple[ServeProcess, Path], browser: Any, artifacts: Path
) -> None:
    from playwright.sync_api import expect

    server, record = recorder
    state = sign_in(browser, server)
    owner = browser.new_context(base_url=server.base_url, storage_state=state).new_page()
    sockets: list[str] = []
    owner.on("websocket", lambda ws: sockets.append(ws.url))
    created = owner.request.post(
        "/api/v1/sandbox/sessions", data={"agent": AGENT, "name": "recorded"}
    )
    assert created.status == 201, created.text()
    sid = created.json()["id"]
    owner.goto(f"/sandbox/{sid}")
    wait_open(owner)
    # what the first viewer answered live, if the questions came after it attached
    type_into(owner, "M0")
    baseline = wait_recorded(record, b"M0", owner)

    for n in range(RELOADS):
        owner.reload()
        wait_open(owner)
        if n == RELOADS - 1:
            owner.screenshot(path=str(artifacts / "v2-after-reloads.png"))
    type_into(owner, "M1")
    after = wait_recorded(record, b"M1", owner)
    assert after == baseline + b"M1", f"reloads typed into the agent: {after[len(baseline) :]!r}"
    # each reload really attached anew
    assert len([u for u in sockets if "/attach" in u]) >= RELOADS + 1, sockets

    # A view-only share link, made in the Share dialog: the spectator sees the screen
    # and types nothing.
    owner.get_by_role("button", name="Share", exact=True).click()
    dialog = owner.get_by_role("dialog", name="Share this session")
    expect(dialog.get_by_label("View only")).to_be_checked()
    dialog.get_by_role("button", name="Create link").click()
    url = dialog.locator("#share-url")
    expect(url).to_have_value(re.compile(rf"/sandbox/{sid}\?share=\S+$"))
    token = str(url.input_value()).split("?share=", 1)[1]
    expect(dialog.get_by_role("list", name="Active links")).to_contain_text("View only")
    owner.screenshot(path=str(artifacts / "v2-share-dialog.png"))
    dialog.get_by_role("button", name="Done").click()
    spectator = browser.new_context(base_url=server.base_url, storage_state=state).new_page()
    watched: list[str] = []
    spectator.on("websocket", lambda ws: watched.append(ws.url))
    spectator.goto(f"/sandbox/{sid}?share={token}")
    expect(spectator.get_by_test_id("view-only")).to_have_text("view only")
    wait_open(spectator)
    expect(pane(spectator)).to_have_attribute("data-readonly", "true")
    type_into(spectator, "SPECTATOR")
    # the owner sees a view-only viewer join
    expect(owner.get_by_label(re.compile(r", view only$"))).to_have_count(1, timeout=10_000)
    spectator.screenshot(path=str(artifacts / "v2-spectator.png"))
    type_into(owner, "M2")
    typed = wait_recorded(record, b"M2", owner)
    assert typed == after + b"M2", f"the spectator's page sent input: {typed[len(after) :]!r}"

    # Revoked in the dialog: the spectator's terminal says so and does not try again.
    attaches = len(watched)
    assert attaches >= 1 and all(f"share={token}" in u for u in watched), watched
    owner.get_by_role("button", name="Share", exact=True).click()
    dialog.get_by_role("button", name=re.compile("^Revoke")).click()
    expect(dialog).to_contain_text("No active links.")
    expect(pane(spectator)).to_have_attribute("data-connection", "refused", timeout=10_000)
    expect(pane(spectator).get_by_role("status")).to_contain_text("share link was revoked")
    expect(spectator.get_by_role("button", name="Try again")).to_have_count(0)
    spectator.wait_for_timeout(1500)  # a retry would come after the 1 s back-off
    assert len(watched) == attaches, watched
