"""Screen-true sessions driven directly (real PTYs and processes, no HTTP): snapshots after
a wrapped ring, resume by offset, spectators checked at the PTY, the PTY size following
the typist, control frames and activity transitions."""

from __future__ import annotations

import asyncio
import fcntl
import struct
import sys
import termios
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pyghostty import Terminal

from openova_sandbox.domain.catalogue import load_catalogue
from openova_sandbox.terminal.registry import SandboxContext, SessionRequest, TerminalRegistry
from openova_sandbox.terminal.session import Control, Output, TerminalSession, Viewer

pytestmark = pytest.mark.timeout(60)

# Echoes what it reads (as a repr) and reports every size change it is told about.
PROBE = textwrap.dedent(
    """
    import os, signal, sys, tty
    tty.setraw(0)
    def size(*_):
        r, c = os.get_terminal_size(0).lines, os.get_terminal_size(0).columns
        os.write(1, f"SIZE {r}x{c}\\r\\n".encode())
    signal.signal(signal.SIGWINCH, size)
    os.write(1, b"READY\\r\\n")
    while True:
        data = os.read(0, 4096)
        if data == b"q":
            break
        os.write(1, f"GOT {data!r}\\r\\n".encode())
    """
)

# A full-screen program: alternate screen, input modes, a box, a title, then a flood that
# keeps redrawing one line and scrolling a region (far more output than the ring holds).
TUI = textwrap.dedent(
    """
    import os, sys
    w = sys.stdout.write
    w("shell before the program\\r\\n")
    w("\\x1b[?1049h\\x1b[?2004h\\x1b[?1000h\\x1b[?1006h\\x1b[?1h\\x1b=\\x1b]2;tui\\x07")
    w("\\x1b[H\\x1b[2J\\x1b[44m" + " " * 60 + "\\x1b[0m\\r\\n")
    w("\\x1b[3;20r")
    n = int(sys.argv[1])
    for i in range(n):
        w(f"\\x1b[20;1H\\x1b[1;3{i % 7}mline {i:07d}\\x1b[0m " + "x" * (i % 50) + "\\r\\n")
        if i % 97 == 0:
            w(f"\\x1b[22;1H\\x1b[7m status {i} \\x1b[0m\\x1b[K")
    w("\\x1b[24;1H> prompt\\x1b[5 q")
    w("\\r\\nDONE\\x1b[1A\\x1b[9C")
    sys.stdout.flush()
    sys.stdin.readline()
    """
)


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[TerminalRegistry]:
    terminals = TerminalRegistry(catalogue=load_catalogue(None), term_grace=1.0)
    terminals.add_sandbox(
        SandboxContext(sandbox_id="s", workdir=str(tmp_path), default_agent="sovereign-shell")
    )
    yield terminals
    await terminals.close()


async def _outputs_until(
    viewer: Viewer, marker: bytes, sink: list[Output], controls: list[Control] | None = None
) -> None:
    seen = b"".join(o.data for o in sink)
    while marker not in seen:
        item = await asyncio.wait_for(viewer.next(), 15)
        assert item is not None, seen[-500:]
        if isinstance(item, Output):
            sink.append(item)
            seen += item.data
        elif controls is not None:
            controls.append(item)


async def _control(viewer: Viewer, kind: str) -> Control:
    while True:
        item = await asyncio.wait_for(viewer.next(), 15)
        assert item is not None
        if isinstance(item, Control) and item.body["type"] == kind:
            return item


def _winsize(session: TerminalSession) -> tuple[int, int]:
    raw = fcntl.ioctl(session.process.master_fd, termios.TIOCGWINSZ, b"\0" * 8)
    rows, cols, _, _ = struct.unpack("HHHH", raw)
    return rows, cols


def _render(data: bytes, rows: int = 24, cols: int = 80) -> Terminal:
    term = Terminal(cols, rows, scrollback=10_000)
    term.feed(data)
    return term


def _view(term: Terminal) -> dict[str, object]:
    cols, rows = term.size
    return {
        "text": term.text(),
        "cursor": term.cursor,
        "modes": {m: term.mode(m) for m in (1, 66, 1000, 1006, 1049, 2004)},
        "styles": [term.style(x, y) for y in range(rows) for x in range(cols)],
    }


async def test_a_fresh_viewer_after_the_ring_wrapped_gets_the_live_screen(
    registry: TerminalRegistry,
) -> None:
    ring = 64 * 1024
    session = registry.create(
        "s", SessionRequest(command=(sys.executable, "-c", TUI, "12000"), ring_bytes=ring)
    )
    stayed = session.attach()
    assert stayed.first.kind == "snapshot"
    got: list[Output] = [stayed.first]
    await _outputs_until(stayed, b"DONE", got)
    fresh = session.attach()
    assert session.core.end > 3 * ring, "the ring wrapped more than three times"
    assert (fresh.first.kind, fresh.first.reason) == ("snapshot", "attach")
    assert fresh.first.data.startswith(b"\x1bc")
    later: list[Output] = []  # the program's last bytes may still have been on their way
    while got[-1].end < session.core.end:
        item = await asyncio.wait_for(stayed.next(), 5)
        if isinstance(item, Output):
            got.append(item)
    while (later[-1].end if later else fresh.first.end) < session.core.end:
        item = await asyncio.wait_for(fresh.next(), 5)
        if isinstance(item, Output):
            later.append(item)
    live = _render(b"".join(o.data for o in got))
    replayed = _render(fresh.first.data + b"".join(o.data for o in later))
    assert _view(replayed) == _view(live)
    assert replayed.mode(1049) and replayed.mode(2004) and replayed.mode(1000)
    assert "line 0011999" in replayed.text()
    assert session.title == "tui"
    for term in (live, replayed):  # the program ends: the shell's screen is back
        term.feed(b"\x1b[?1049l")
    assert replayed.text() == live.text()
    assert "shell before the program" in replayed.text()
    # the raw protocol's replay is the same snapshot
    assert fresh.replay == fresh.first.data


async def test_resume_since_an_offset_gets_exactly_the_missed_bytes_or_a_marked_gap(
    registry: TerminalRegistry,
) -> None:
    session = registry.create(
        "s", SessionRequest(command=(sys.executable, "-c", PROBE), ring_bytes=4096)
    )
    watcher = session.attach()
    everything: list[Output] = [watcher.first]
    await _outputs_until(watcher, b"READY", everything)
    dropped = session.attach(window=1 << 20)
    offset = dropped.first.end
    dropped.close()  # the connection drops; output goes on
    watcher.write(b"one")
    await _outputs_until(watcher, b"GOT b'one'", everything)
    watcher.write(b"two")
    await _outputs_until(watcher, b"GOT b'two'", everything)
    resumed = session.attach(since=offset, window=1 << 20)
    assert resumed.first.kind == "resume"
    assert resumed.first.start == offset
    stream = b"".join(o.data for o in everything[1:])
    assert resumed.first.data == stream[offset - everything[1].start :]
    resumed.close()
    # once the ring no longer holds the offset: a snapshot, marked as such
    watcher.write(b"z" * 3000)
    watcher.write(b"y" * 3000)
    await _outputs_until(watcher, b"yyy'", everything)
    gap = session.attach(since=offset)
    assert (gap.first.kind, gap.first.reason) == ("snapshot", "gap")
    assert gap.first.start == gap.first.end == session.core.end


async def test_a_spectator_can_neither_type_nor_resize_at_the_pty(
    registry: TerminalRegistry,
) -> None:
    session = registry.create(
        "s", SessionRequest(command=(sys.executable, "-c", PROBE), rows=24, cols=80)
    )
    owner = session.attach(who="dev@acme.com", window=1 << 20)
    spectator = session.attach(mode="read", who="eve@acme.com", window=1 << 20)
    seen: list[Output] = []
    await _outputs_until(owner, b"READY", seen)
    spectator.write(b"rm -rf /")
    spectator.resize(10, 30)
    owner.write(b"hello")
    await _outputs_until(owner, b"GOT b'hello'", seen)
    text = b"".join(o.data for o in seen)
    assert b"rm -rf" not in text, "a spectator's input never reaches the process"
    assert b"SIZE" not in text
    assert _winsize(session) == (24, 80)
    assert session.viewers_info() == [
        {"id": owner.id, "who": "dev@acme.com", "mode": "write"},
        {"id": spectator.id, "who": "eve@acme.com", "mode": "read"},
    ]
    with pytest.raises(Exception, match="mode"):
        session.attach(mode="admin")


async def test_the_pty_size_follows_the_writer_who_typed_or_opened_last(
    registry: TerminalRegistry,
) -> None:
    session = registry.create(
        "s", SessionRequest(command=(sys.executable, "-c", PROBE), rows=24, cols=80)
    )
    laptop = session.attach(who="laptop", window=1 << 20)
    seen: list[Output] = []
    controls: list[Control] = []
    await _outputs_until(laptop, b"READY", seen, controls)
    laptop.resize(40, 120)  # its first size: applies at once
    assert _winsize(session) == (40, 120)
    await _outputs_until(laptop, b"SIZE 40x120", seen, controls)
    laptop.write(b"a")  # the laptop is the typist
    phone = session.attach(who="phone", window=1 << 20)
    phone.resize(20, 50)  # a device just opened: its first size takes the PTY
    assert _winsize(session) == (20, 50)
    await _outputs_until(laptop, b"SIZE 20x50", seen, controls)
    laptop.resize(30, 100)  # not the last to type or open: remembered, not applied
    assert _winsize(session) == (20, 50)
    laptop.write(b"b")  # typing brings the laptop's size along
    assert _winsize(session) == (30, 100)
    await _outputs_until(laptop, b"SIZE 30x100", seen, controls)
    phone.resize(25, 60)  # the phone's later resizes wait for its typing
    assert _winsize(session) == (30, 100)
    laptop.close()  # the typist left: the next writer's resize applies
    phone.resize(26, 61)
    assert _winsize(session) == (26, 61)
    assert (session.rows, session.cols) == (26, 61)
    assert (session.screen.rows, session.screen.cols) == (26, 61)
    sizes = [(c.body["rows"], c.body["cols"]) for c in controls if c.body["type"] == "size"]
    assert sizes == [(40, 120), (20, 50), (30, 100)]


async def test_acknowledging_viewers_get_controls_and_a_snapshot_after_a_resize(
    registry: TerminalRegistry,
) -> None:
    script = "import sys;sys.stdout.write('\\x1b]0;hello title\\x07ready\\r\\n');sys.stdin.read()"
    session = registry.create("s", SessionRequest(command=(sys.executable, "-c", script)))
    v2 = session.attach(who="a", window=1 << 20)
    raw = session.attach(who="b")
    viewers = await _control(v2, "viewers")
    assert [v["who"] for v in viewers.body["viewers"]] == ["a"]  # type: ignore[union-attr]
    viewers = await _control(v2, "viewers")
    assert [v["who"] for v in viewers.body["viewers"]] == ["a", "b"]  # type: ignore[union-attr]
    title = await _control(v2, "title")
    assert title.body == {"type": "title", "title": "hello title"}
    session.resize(30, 100)
    assert (await _control(v2, "size")).body == {"type": "size", "rows": 30, "cols": 100}
    while True:
        item = await asyncio.wait_for(v2.next(), 5)
        if isinstance(item, Output) and item.kind == "snapshot":
            break
    assert item.reason == "resize"
    assert item.start == item.end == session.core.end
    assert "ready" in _render(item.data, 30, 100).text()
    raw.close()
    viewers = await _control(v2, "viewers")
    assert [v["who"] for v in viewers.body["viewers"]] == ["a"]  # type: ignore[union-attr]
    # a raw viewer never sees a control
    raw2 = session.attach()
    session.write(b"x")
    assert isinstance(await asyncio.wait_for(raw2.next(), 5), Output)


async def test_a_bell_turns_the_terminal_waiting_and_the_listeners_hear_it(
    registry: TerminalRegistry,
) -> None:
    heard: list[tuple[str, str, str, str]] = []
    registry.activity_listeners.append(
        lambda sandbox, session, old, new: heard.append((sandbox, session.id, old, new))
    )
    script = "import sys;sys.stdout.write('working\\r\\n');sys.stdout.flush();sys.stdin.readline()"
    script += ";sys.stdout.write('question?\\x07');sys.stdout.flush();sys.stdin.read()"
    session = registry.create("s", SessionRequest(command=(sys.executable, "-c", script)))
    viewer = session.attach(window=1 << 20)
    assert session.activity == "busy"
    session.write(b"go\r")
    state = await _control(viewer, "activity")
    assert state.body == {"type": "activity", "state": "waiting"}
    assert session.activity == "waiting"
    assert heard == [("s", session.id, "busy", "waiting")]


async def test_a_viewer_past_its_window_gets_one_snapshot_once_it_acked_what_it_got(
    registry: TerminalRegistry,
) -> None:
    flood = (
        "import sys;sys.stdout.write('start\\r\\n');sys.stdout.flush();sys.stdin.readline()"
        ";sys.stdout.write('x' * 400000 + '\\r\\nflood done\\r\\n');sys.stdout.flush()"
        ";sys.stdin.read()"
    )
    session = registry.create("s", SessionRequest(command=(sys.executable, "-c", flood)))
    slow = session.attach(window=64 * 1024)
    fast = session.attach()
    got: list[Output] = []
    await _outputs_until(slow, b"start", got)
    slow.ack(got[-1].end)  # acked before the pump asks for the next frame
    session.write(b"go\r")
    await _outputs_until(fast, b"flood done", [])
    # the slow phone rendered nothing more: everything past its window was dropped
    item = await asyncio.wait_for(slow.next(), 5)
    while not (isinstance(item, Output) and item.kind == "snapshot"):
        assert item is not None
        if isinstance(item, Output):  # taken before the drop: rendered and acknowledged
            slow.ack(item.end)
        item = await asyncio.wait_for(slow.next(), 5)
    assert (item.kind, item.reason) == ("snapshot", "resync")
    assert item.end == session.core.end
    assert "flood done" in _render(item.data).text()
    assert slow.resyncs == 1
    assert session.core.queued_bytes(slow.id) == 0
