"""A real agent through the console, in a real browser, against a real `sandbox serve`.

qwen-code is installed with `sandbox agents install` (the session's agent cache,
support/agents_cache.py) into the server's data dir; the server's model is the fake
OpenAI-compatible server of the tests (support/fake_llm.py). As a user would: start the
agent from its card on the landing page, type a prompt into its terminal, see the
answer; reload twice and see the screen come back.

And the reloads type nothing into the agent (qwen-code asks its terminal for its
attributes and background colour at start: a console that answered a replay's queries
typed `[?1;2c11;rgb:…` into its input): nothing but control messages and the focus-in
report a terminal sends when the reloaded page takes focus is sent, and the bytes
written to terminal processes (`pty_server_input_bytes_total` on /metrics) grow by
those focus reports alone (an agent that asked for focus reports gets told, as from
any terminal; it is not typing).

One agent here: the console's card, terminal and reload path are the same for every
agent. opencode is covered where it is cheaper: the same turn over the attach
WebSocket of the whole server (integration/gateway/test_gateway_agents.py) and its
full-screen UI surviving reloads cell for cell in the console's xterm.js
(integration/agents/test_screen_true.py).

The built-in catalogue is used, and the server's PATH is the system's `/usr/bin:/bin`:
the agent that runs is the one the server installed.
"""

from __future__ import annotations

import json
import re
import secrets
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.agents_cache import AgentsCache
from support.fake_llm import FakeLLM

from .serve_process import ServeProcess, start_serve
from .test_console_day_one_e2e import sign_in
from .test_console_e2e import READY_TIMEOUT_MS, start_from_card, visible_rows

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]

MODEL = "fake-coder"
ANSWER_TIMEOUT_MS = 60_000
SLUG = "qwen-code"
READY = {SLUG: "Type your message"}
INPUT_BYTES = re.compile(r"^pty_server_input_bytes_total (\S+)$", re.M)
FOCUS_REPORTS = {"\x1b[I", "\x1b[O"}


def typed_frames(frames: list[str | bytes]) -> tuple[list[str], int]:
    """What of the frames the page sent is input (not a sandbox.v2 control message), and
    how many of those bytes are focus reports."""
    typed, focus = [], 0
    for frame in frames:
        text = frame.decode(errors="replace") if isinstance(frame, bytes) else frame
        if isinstance(frame, str) and text.startswith("{"):
            try:
                if isinstance(json.loads(text), dict):
                    continue  # resize, ack, ping: not written to the agent
            except ValueError:
                pass
        if text in FOCUS_REPORTS:
            focus += len(frame)
        else:
            typed.append(text)
    return typed, focus


@pytest.fixture(scope="module")
def fake_llm() -> Iterator[FakeLLM]:
    with FakeLLM() as llm:
        yield llm


@pytest.fixture(scope="module")
def agents_server(
    chromium_available: None,
    tmp_path_factory: pytest.TempPathFactory,
    agents_cache: AgentsCache,
    fake_llm: FakeLLM,
) -> Iterator[tuple[ServeProcess, str]]:
    tmp = tmp_path_factory.mktemp("real-agents")
    agents_cache.place(tmp / "data", *READY, share=True)
    catalogue = tmp / "catalogue.json"
    catalogue.write_text("[]")
    key = "sk-e2e-" + secrets.token_hex(6)
    server = start_serve(
        tmp,
        extra_env={
            "OPENOVA_SANDBOX_AGENTS_PATH": str(catalogue),
            "PATH": "/usr/bin:/bin",
            "OPENAI_BASE_URL": fake_llm.base_url,
            "OPENAI_API_KEY": key,
            "SANDBOX_AGENT_MODEL": MODEL,
        },
    )
    try:
        yield server, key
    finally:
        server.stop()


@pytest.fixture(scope="module")
def agents_state(agents_server: tuple[ServeProcess, str], browser: Any) -> dict[str, Any]:
    """Signed in through the printed one-time link; each test's context reuses it."""
    server, _ = agents_server
    return sign_in(browser, server)


def new_page(browser: Any, server: ServeProcess, state: dict[str, Any]) -> Any:
    context = browser.new_context(
        base_url=server.base_url, storage_state=state, viewport={"width": 1280, "height": 800}
    )
    return context.new_page()


def input_bytes(server: ServeProcess) -> float:
    """Bytes written to every terminal process so far (the server's own counter)."""
    with urllib.request.urlopen(server.base_url + "/metrics", timeout=10) as answer:
        text = answer.read().decode()
    match = INPUT_BYTES.search(text)
    assert match, "pty_server_input_bytes_total is not on /metrics"
    return float(match.group(1))


def pane(page: Any) -> Any:
    return page.locator(".terminal-panel:not([hidden]) .terminal-pane")


def start_agent(page: Any, slug: str, name: str) -> None:
    """From the landing page's card to the agent waiting for a prompt."""
    from playwright.sync_api import expect

    page.goto("/sandbox")
    start_from_card(page, slug, name)
    page.wait_for_url(f"**/sandbox/{name}")
    expect(pane(page)).to_have_attribute("data-connection", "open", timeout=READY_TIMEOUT_MS)
    expect(visible_rows(page)).to_contain_text(READY[slug], timeout=ANSWER_TIMEOUT_MS)
    # the PTY has the page's size: the agent will not redraw over what is typed next
    expect(pane(page)).to_have_attribute("data-sized", "true", timeout=ANSWER_TIMEOUT_MS)


def reload_twice(page: Any, expected: str) -> None:
    from playwright.sync_api import expect

    for _ in range(2):
        page.reload()
        expect(pane(page)).to_have_attribute("data-connection", "open", timeout=READY_TIMEOUT_MS)
        expect(visible_rows(page)).to_contain_text(expected, timeout=ANSWER_TIMEOUT_MS)


def test_a_real_agent_answers_in_the_console_and_reloads_type_nothing(
    agents_server: tuple[ServeProcess, str],
    agents_state: dict[str, Any],
    browser: Any,
    fake_llm: FakeLLM,
    artifacts: Path,
) -> None:
    from playwright.sync_api import expect

    server, key = agents_server
    page = new_page(browser, server, agents_state)
    sent: list[str | bytes] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda frame: sent.append(frame)))
    listed = {a["id"]: a for a in page.request.get("/api/v1/sandbox/agents").json()["agents"]}
    assert listed[SLUG]["installed"] and listed[SLUG]["source"] == "managed", listed[SLUG]

    name = f"e2e-{SLUG}"
    start_agent(page, SLUG, name)
    word = secrets.token_hex(4)
    prompt = f"say ping-{word}"
    page.locator(".terminal-panel:not([hidden]) [data-testid=sandbox-terminal]").click()
    page.keyboard.type(prompt)
    expect(visible_rows(page)).to_contain_text(prompt, timeout=ANSWER_TIMEOUT_MS)
    page.keyboard.press("Enter")
    expect(visible_rows(page)).to_contain_text(f"PONG-{word}", timeout=ANSWER_TIMEOUT_MS)
    asked = fake_llm.wait_for(word)
    assert asked.authorization == f"Bearer {key}"
    assert asked.body["model"] == MODEL
    page.screenshot(path=str(artifacts / f"real-agent-{SLUG}.png"))

    # the replay of each reload holds the agent's start-up queries (or, with a screen
    # model on the server, none): nothing must be answered into the agent
    before, mark = input_bytes(server), len(sent)
    reload_twice(page, f"PONG-{word}")
    typed, focus = typed_frames(sent[mark:])
    assert typed == [], f"the reloads sent {typed!r} into the agent"
    assert input_bytes(server) - before == focus, "the agent got bytes the page did not send"
    item = page.request.get(f"/api/v1/sandbox/sessions/{name}").json()
    assert item["status"] == "running", item
    page.context.close()
