"""One live terminal session: the asyncio owner of a PTY process and its viewers.

The session wires the sans-I/O :class:`~.core.SessionCore` to real I/O:

* **Reading** happens in a ``loop.add_reader`` callback on the master fd. Each callback
  drains what the kernel has (until ``EAGAIN`` or 64 KiB) into a pending buffer. A little
  output (keystroke echo) is flushed at once; when 4000+ bytes arrived at once (bulk
  output) the flush waits up to ``COALESCE_DELAY`` for more, so frames approach 64 KiB —
  latency and throughput both win, which matters once ``TCP_NODELAY`` is on.
* **Flushing** feeds the core once per frame; the core returns the same ``bytes`` for every
  viewer, which lands in that viewer's own queue. Sending is done by each viewer's pump
  (:mod:`.ws`) outside the core. A viewer over its byte budget has its queue dropped and
  later receives the retained tail as one resync frame.
* **Never pausing the PTY**: memory is bounded by the ring plus one budget per viewer, so
  the process is never slowed by its audience (like a detached tmux).
* **The owner task** waits for the process to exit (pidfd), drains the last output,
  signals what is left of the process' session, marks the session exited and wakes every
  viewer so its socket closes with 1000.

Session states only move forward: running → exited (a transition table, not flags).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from ..domain.errors import Conflict, IllegalTransition
from .core import SessionCore
from .pty import PtyProcess, exit_status

log = structlog.get_logger(__name__)

FRAME_MAX = 64 * 1024
COALESCE_DELAY = 0.002
BULK_READ = 4000  # this much pending at once suggests more output is on its way
INPUT_BUFFER_MAX = 1024 * 1024
EXIT_POLL = 0.2

_TRANSITIONS = {"running": {"exited"}, "exited": set[str]()}


class SessionExited(Conflict):
    """The session's process has ended; a new viewer is turned away (close 1001)."""

    code = "session-exited"


@dataclass
class TerminalCounters:
    """Process-wide counters the metrics endpoint reads (plain ints: no framework here)."""

    output_bytes: int = 0
    input_bytes: int = 0
    viewer_resyncs: int = 0


class Viewer:
    """One attached client: its replay, then frames from its own queue."""

    def __init__(self, session: TerminalSession, viewer_id: str, replay: bytes) -> None:
        self.id = viewer_id
        self.replay = replay
        self._session = session
        self._frames: deque[bytes] = deque()
        self._wake = asyncio.Event()
        self._unacked = 0
        self._kicked = False
        self.resyncs = 0

    @property
    def close_code(self) -> int:
        """1000 when the session ended, 1001 when the server sent the viewer away."""
        return 1001 if self._kicked else 1000

    def _push(self, data: bytes) -> None:
        self._frames.append(data)
        self._wake.set()

    def _drop(self) -> None:
        self._frames.clear()
        self.resyncs += 1
        self._wake.set()

    def _end(self) -> None:
        self._wake.set()

    def _kick(self) -> None:
        self._kicked = True
        self._frames.clear()
        self._wake.set()

    async def next(self) -> bytes | None:
        """The next frame to send; ``None`` once the session has ended.

        Calling it again means the previous frame was sent (that is the byte accounting
        the slow-viewer budget is based on).
        """
        core = self._session.core
        if self._unacked:
            core.delivered(self.id, self._unacked)
            self._unacked = 0
        while True:
            if self._kicked:
                return None
            if self._frames:
                data = self._frames.popleft()
                self._unacked = len(data)
                return data
            resync = core.resync(self.id)
            if resync is not None:
                return resync.data
            if self._session.exited:
                return None
            self._wake.clear()
            await self._wake.wait()

    def close(self) -> None:
        self._session.detach(self)


class TerminalSession:
    """A PTY process plus the viewers watching it (create via the registry)."""

    def __init__(
        self,
        *,
        session_id: str,
        sandbox_id: str,
        agent: str,
        process: PtyProcess,
        rows: int,
        cols: int,
        ring_bytes: int,
        viewer_queue_bytes: int,
        counters: TerminalCounters,
        term_grace: float = 5.0,
    ) -> None:
        self.id = session_id
        self.sandbox_id = sandbox_id
        self.agent = agent
        self.process = process
        self.rows = rows
        self.cols = cols
        self.created_at = datetime.now(UTC)
        self.core = SessionCore(ring_bytes=ring_bytes, viewer_queue_bytes=viewer_queue_bytes)
        self.state = "running"
        self.exit_code: int | None = None
        self._counters = counters
        self._term_grace = term_grace
        self._viewers: dict[str, Viewer] = {}
        self._pending = bytearray()
        self._flush_handle: asyncio.TimerHandle | None = None
        self._input = bytearray()
        self._writer_on = False
        self._eof = False
        self._last_activity = time.time()
        self.last_output_ts = 0.0
        self._loop = asyncio.get_running_loop()
        self._exited_evt = asyncio.Event()
        self._loop.add_reader(process.master_fd, self._on_readable)
        self._owner = self._loop.create_task(self._own(), name=f"terminal-{session_id}")

    # ------------------------------------------------------------------ state
    def _move(self, target: str) -> None:
        if target not in _TRANSITIONS[self.state]:
            raise IllegalTransition(f"terminal session cannot go from {self.state} to {target}")
        self.state = target

    @property
    def exited(self) -> bool:
        return self.state == "exited"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def viewers(self) -> int:
        return len(self._viewers)

    @property
    def last_activity_at(self) -> datetime:
        return datetime.fromtimestamp(self._last_activity, UTC)

    @property
    def last_activity_ts(self) -> float:
        return self._last_activity

    def touch(self) -> None:
        self._last_activity = time.time()

    # ------------------------------------------------------------------ output
    def _on_readable(self) -> None:
        pending = self._pending
        while len(pending) < FRAME_MAX:
            chunk = self.process.read(FRAME_MAX - len(pending))
            if chunk is None:
                break
            if not chunk:
                self._eof = True
                self._loop.remove_reader(self.process.master_fd)
                break
            pending += chunk
        if not pending:
            return
        if self._eof or len(pending) >= FRAME_MAX:
            self._flush()
        elif len(pending) >= BULK_READ:
            if self._flush_handle is None:
                self._flush_handle = self._loop.call_later(COALESCE_DELAY, self._flush)
        elif self._flush_handle is None:
            self._flush()

    def _flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not self._pending:
            return
        data = bytes(self._pending)
        self._pending.clear()
        self._counters.output_bytes += len(data)
        self._last_activity = self.last_output_ts = time.time()
        result = self.core.feed(data)
        for frame in result.frames:
            self._viewers[frame.viewer_id]._push(frame.data)
        for viewer_id in result.resynced:
            self._counters.viewer_resyncs += 1
            self._viewers[viewer_id]._drop()
            log.info("terminal.viewer.resync", session=self.id, viewer=viewer_id)

    def announce(self, text: bytes) -> None:
        """Put a server message (e.g. a restart banner) into the stream, as output."""
        if not text or self.exited:
            return
        self._flush()
        self._pending += text
        self._flush()

    # ------------------------------------------------------------------ viewers
    def attach(self) -> Viewer:
        """Register a viewer: its replay and its live position are taken atomically."""
        if self.exited:
            raise SessionExited(f"terminal session {self.id} has exited")
        self._flush()  # bytes already read belong to the replay, not to a later frame
        viewer_id = secrets.token_hex(6)
        replay = self.core.attach(viewer_id)
        viewer = Viewer(self, viewer_id, replay.data)
        self._viewers[viewer_id] = viewer
        self.touch()
        return viewer

    def kick_viewers(self) -> None:
        """First stage of shutdown: every viewer's pump closes with 1001."""
        for viewer in self._viewers.values():
            viewer._kick()

    def detach(self, viewer: Viewer) -> None:
        if self._viewers.pop(viewer.id, None) is not None:
            self.core.detach(viewer.id)

    # ------------------------------------------------------------------ input
    def write(self, data: bytes) -> None:
        """Queue client input for the PTY (dropped past 1 MiB pending, or after exit)."""
        if self.exited or not data:
            return
        self._counters.input_bytes += len(data)
        self.touch()
        if len(self._input) + len(data) > INPUT_BUFFER_MAX:
            log.warning("terminal.input.dropped", session=self.id, nbytes=len(data))
            return
        self._input += data
        self._drain_input()

    def _drain_input(self) -> None:
        while self._input:
            try:
                with memoryview(self._input) as view:  # released before the buffer shrinks
                    written = self.process.write(view)
            except OSError:
                self._input.clear()
                break
            if written == 0:
                break
            del self._input[:written]
        want = bool(self._input)
        if want and not self._writer_on:
            self._loop.add_writer(self.process.master_fd, self._drain_input)
        elif not want and self._writer_on:
            self._loop.remove_writer(self.process.master_fd)
        self._writer_on = want

    def resize(self, rows: int, cols: int) -> None:
        """Last writer wins: the PTY has one size whoever is watching."""
        if self.exited:
            return
        self.rows, self.cols = rows, cols
        with contextlib.suppress(OSError):
            self.process.resize(rows, cols)

    def signal(self, sig: int) -> None:
        if not self.exited:
            self.process.signal(sig)
            self.touch()

    # ------------------------------------------------------------------ lifetime
    async def _wait_process(self) -> None:
        pidfd = self.process.pidfd
        if pidfd is None:
            while self.process.poll() is None:  # noqa: ASYNC110 - no pidfd: poll the child
                await asyncio.sleep(EXIT_POLL)
            return
        done = self._loop.create_future()

        def ready() -> None:
            if not done.done():
                done.set_result(None)

        self._loop.add_reader(pidfd, ready)
        try:
            await done
        finally:
            self._loop.remove_reader(pidfd)
        while self.process.poll() is None:  # noqa: ASYNC110 - pidfd readable: reap is instant
            await asyncio.sleep(0.001)

    async def _own(self) -> None:
        try:
            await self._wait_process()
            if not self._eof:
                self._on_readable()  # whatever the process wrote before it died
            self._flush()
            # Like a terminal closing: what the process left behind is hung up.
            await self.process.terminate(hup_grace=0.2, term_grace=1.0, kill_grace=1.0)
        finally:
            self._finish()

    def _finish(self) -> None:
        if self.exited:
            return
        with contextlib.suppress(Exception):
            self._flush()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        rc = self.process.returncode
        self.exit_code = exit_status(rc) if rc is not None else None
        self._move("exited")
        if not self._eof:
            self._loop.remove_reader(self.process.master_fd)
        if self._writer_on:
            self._loop.remove_writer(self.process.master_fd)
            self._writer_on = False
        self.process.close()
        self._exited_evt.set()
        for viewer in list(self._viewers.values()):
            viewer._end()
        log.info("terminal.exited", session=self.id, exit_code=self.exit_code)

    async def wait_exited(self) -> None:
        await self._exited_evt.wait()

    async def terminate(self) -> None:
        """End the process (HUP → TERM → KILL, bounded) and wait until the session is closed."""
        if not self.exited:
            await self.process.terminate(term_grace=self._term_grace)
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._owner), timeout=self._term_grace + 5)
        if not self.exited:
            self._owner.cancel()
            self._finish()

    def info(self) -> dict[str, object]:
        """The ``GET /sessions/{id}`` body."""
        body: dict[str, object] = {
            "id": self.id,
            "createdAt": rfc3339(self.created_at),
            "agent": self.agent,
            "pid": self.pid,
            "rows": self.rows,
            "cols": self.cols,
            "viewers": self.viewers,
            "exited": self.exited,
        }
        if self.exit_code is not None:
            body["exitCode"] = self.exit_code
        return body


def rfc3339(moment: datetime) -> str:
    """RFC 3339 with nanosecond digits (Go's RFC3339Nano shape, Z suffix)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"
