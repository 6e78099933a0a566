"""One live terminal session: the asyncio owner of a PTY process and its viewers.

The session wires the sans-I/O :class:`~.core.SessionCore` to real I/O:

* **Reading** happens in a ``loop.add_reader`` callback on the master fd. Each callback
  drains what the kernel has (until ``EAGAIN`` or 64 KiB), read in place into the
  thread's buffer (``os.readv``: the frame's ``bytes`` is its one copy unless it was held
  over several callbacks), and flushes it at once — unless every viewer still has output
  queued (its socket is backed up): then the bytes wait for the first viewer to ask for
  more (or 64 KiB, or ``COALESCE_DELAY`` at most), so frames grow only when a viewer
  could not take them anyway. Keystroke echo is never held, and no timer runs per burst.
* **Flushing** feeds the core once per frame (ring + screen model); the core returns the
  same ``bytes`` for every viewer, which lands in that viewer's own queue. Sending is done
  by each viewer's pump (the API layer's attach edge) outside the core — except for a
  viewer whose pump waits with nothing queued: its socket's synchronous send takes the
  frame at once, on the reading callback (the core's ``take``; no objects made). A viewer over its
  budget (raw) or window (``sandbox.v2``) has its queue dropped and later receives a
  snapshot of the screen (:mod:`.screen`), never the raw tail.
* **Viewers** attach with a mode (``write``, or ``read`` for spectators: input dropped,
  resize ignored), a name (``who``) and, for ``sandbox.v2``, an acknowledgement window.
  The PTY size follows the writer who typed last; acknowledging viewers also get
  :class:`Control` messages (viewers, title, activity, size) in order with the output,
  and a snapshot at the new size once a size change settled (``RESIZE_SETTLE``).
* **Activity** (:mod:`.activity`): every output chunk and input event goes to the
  tracker; its timer is one loop handle at a time; transitions go to the viewers and to
  the registry's listeners.
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
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

import structlog

from ..domain.errors import Conflict, IllegalTransition, Invalid
from .activity import ActivityTracker
from .core import LIVE, Frame, SessionCore
from .pty import PtyProcess, exit_status
from .screen import DEFAULT_SCROLLBACK_LINES, ScreenModel

log = structlog.get_logger(__name__)

FRAME_MAX = 64 * 1024
COALESCE_DELAY = 0.002  # the longest output is held for viewers that are all backed up
SHORT_READ = 4000  # a PTY read returns at most ~4 KiB (n_tty); less means it was drained
INPUT_BUFFER_MAX = 1024 * 1024
EXIT_POLL = 0.2
RESIZE_SETTLE = 0.15  # after a PTY size change, acknowledging viewers get the new screen
WRITE, READ = "write", "read"
TICK_FLOOR = 0.01
_NEVER = float("inf")

_TRANSITIONS = {"running": {"exited"}, "exited": set[str]()}

# One read buffer per thread, shared by its sessions (a loop runs one callback at a
# time, and what a callback read leaves it as ``bytes``): reads land in place, and an
# idle terminal holds no buffer of its own.
_SCRATCH = threading.local()


def _scratch() -> memoryview:
    view: memoryview | None = getattr(_SCRATCH, "view", None)
    if view is None:
        view = _SCRATCH.view = memoryview(bytearray(FRAME_MAX))
    return view


ActivityListener = Callable[["TerminalSession", str, str], None]


class SessionExited(Conflict):
    """The session's process has ended; a new viewer is turned away (close 1001)."""

    code = "session-exited"


@dataclass
class TerminalCounters:
    """Process-wide counters the metrics endpoint reads (plain ints: no framework here)."""

    output_bytes: int = 0
    input_bytes: int = 0
    viewer_resyncs: int = 0


class Output(NamedTuple):
    """Stream bytes for one viewer (``kind``: live, resume or snapshot; see :class:`Frame`;
    a named tuple for the same reason).

    A snapshot has ``start == end``: the screen as of that offset; ``reason`` says why
    (``attach``, ``resync``, ``resize``, ``gap``).
    """

    data: bytes
    start: int
    end: int
    kind: str = LIVE
    reason: str = ""


@dataclass(frozen=True)
class Control:
    """A JSON-able control message: ``{"type": "title"|"viewers"|"activity"|"size", ...}``."""

    body: dict[str, object]


def _output(frame: Frame) -> Output:
    return Output(frame.data, frame.start, frame.end, frame.kind, frame.reason)


class Viewer:
    """One attached client: its first frame, then frames and controls from its own queue.

    ``mode`` is ``write`` or ``read`` (a spectator: input dropped, resizes ignored).
    ``window`` is ``None`` for raw viewers (budget of bytes handed to the socket; no
    controls) or the ``sandbox.v2`` acknowledgement window (controls are queued too).
    """

    def __init__(
        self,
        session: TerminalSession,
        viewer_id: str,
        first: Output,
        *,
        mode: str,
        who: str,
        window: int | None,
    ) -> None:
        self.id = viewer_id
        self.first = first
        self.mode = mode
        self.who = who
        self.window = window
        self.size: tuple[int, int] | None = None  # the size this viewer asked for last
        self._session = session
        self._items: deque[Output | Control] = deque()
        self._wake = asyncio.Event()
        self._unsent = 0
        self._kicked = False
        self._parked = False  # the pump waits in next() with nothing in flight
        self._direct: Callable[[bytes, int], bool] | None = None
        self.resyncs = 0

    @property
    def replay(self) -> bytes:
        """The first frame's bytes (the raw protocol sends them as one binary frame)."""
        return self.first.data

    @property
    def wants_controls(self) -> bool:
        return self.window is not None

    @property
    def close_code(self) -> int:
        """1000 when the session ended, 1001 when the server sent the viewer away."""
        return 1001 if self._kicked else 1000

    def send_directly(self, direct: Callable[[bytes, int], bool] | None) -> None:
        """While the pump waits for output, live output goes to ``direct(data, start)``
        at once (on the reading callback, no task switch), counted as handed and sent;
        ``direct`` returns ``False`` when it cannot take it now (a backed-up socket), and
        the output is queued for the pump instead (the core's ``take``)."""
        self._direct = direct
        if self._parked:
            self._offer()

    def _offer(self) -> None:
        """The pump waits with nothing queued: live output may go to ``direct`` (the
        session's ``_live``, the core's ``take``) until it wakes or output is queued."""
        if self._direct is not None:
            self._session._live[self.id] = self._direct
        else:
            self._session._live.pop(self.id, None)

    def _push(self, item: Output | Control) -> None:
        # (live output the socket took at once never gets here: the core's ``take``)
        self._items.append(item)
        self._session._live.pop(self.id, None)  # queued: the rest follows it, in order
        self._wake.set()

    def _drop(self) -> None:
        """Queued output is superseded by a snapshot (controls stay, in order)."""
        if any(isinstance(i, Output) for i in self._items):
            self._items = deque(i for i in self._items if isinstance(i, Control))
        self._wake.set()

    def _end(self) -> None:
        self._wake.set()

    def _kick(self) -> None:
        self._kicked = True
        self._items.clear()
        self._wake.set()

    async def next(self) -> Output | Control | None:
        """The next frame to send; ``None`` once the session has ended (or the viewer was
        sent away: see :attr:`close_code`).

        Calling it again means the previous frame was sent (that is the byte accounting
        the raw budget is based on).
        """
        core = self._session.core
        if self._unsent:
            core.delivered(self.id, self._unsent)
            self._unsent = 0
        while True:
            if self._kicked:
                return None
            if self._items:
                item = self._items.popleft()
                if isinstance(item, Output):
                    self._unsent = len(item.data)
                    core.handed(self.id, item.end)  # before the client can ack it
                return item
            resync = core.resync(self.id)
            if resync is not None:
                self.resyncs += 1
                return _output(resync)
            if self._session.exited:
                return None
            self._session._wants_more()  # output held while every viewer was busy
            if self._items:
                continue
            self._wake.clear()
            self._parked = True
            self._offer()
            try:
                await self._wake.wait()
            finally:
                self._parked = False
                self._session._live.pop(self.id, None)

    async def next_bytes(self) -> bytes | None:
        """For the raw pump: the next output's bytes (controls skipped), ``None`` at the end."""
        while True:
            item = await self.next()
            if item is None or isinstance(item, Output):
                return None if item is None else item.data

    def ack(self, offset: int) -> None:
        """The client rendered the stream up to ``offset`` (``sandbox.v2``)."""
        if self._session.core.ack(self.id, offset):
            self._wake.set()

    def write(self, data: bytes) -> None:
        """Input from this viewer; dropped for a spectator."""
        if self.mode != WRITE or not data:
            return
        session = self._session
        if session._typist != self.id:
            session._typed_by(self)
        session.write(data)

    def input_frame(self, frame: bytes | str) -> bool:
        """:meth:`write` as a WebSocket's frame sink (a text frame is its UTF-8); always
        takes the frame."""
        if self.mode == WRITE and frame:
            session = self._session
            if session._typist != self.id:
                session._typed_by(self)
            session.write(frame if isinstance(frame, bytes) else frame.encode())
        return True

    def input_binary(self, frame: bytes | str) -> bool:
        """:meth:`input_frame` for binary frames only (``sandbox.v2``: a text frame is a
        control, left to the input task)."""
        if type(frame) is not bytes:
            return False
        if self.mode == WRITE and frame:
            session = self._session
            if session._typist != self.id:
                session._typed_by(self)
            session.write(frame)
        return True

    def resize(self, rows: int, cols: int) -> None:
        """This viewer's terminal size; ignored for a spectator. The PTY follows the
        writer who typed last; a writer's first size (the device just opened) counts as
        activity too, so the screen someone opens is drawn at their size."""
        if self.mode != WRITE:
            return
        first = self.size is None
        self.size = (rows, cols)
        self._session._viewer_resized(self, opened=first)

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
        scrollback_lines: int = DEFAULT_SCROLLBACK_LINES,
        prompt_patterns: Sequence[str] = (),
        on_activity: ActivityListener | None = None,
    ) -> None:
        self.id = session_id
        self.sandbox_id = sandbox_id
        self.agent = agent
        self.process = process
        self.rows = rows
        self.cols = cols
        self.created_at = datetime.now(UTC)
        self.screen = ScreenModel(
            rows, cols, scrollback_lines=scrollback_lines, on_title=self._title_from_feeder
        )
        self.core = SessionCore(
            ring_bytes=ring_bytes, viewer_queue_bytes=viewer_queue_bytes, screen=self.screen
        )
        self.state = "running"
        self.exited = False  # (an attribute: read on every keystroke and output)
        self.exit_code: int | None = None
        self._counters = counters
        self._term_grace = term_grace
        self._viewers: dict[str, Viewer] = {}
        # viewers whose pump waits with nothing queued, and their socket's synchronous
        # send: live output is written at once, on the reading callback (the core's take)
        self._live: dict[str, Callable[[bytes, int], bool]] = {}
        self._held: list[bytes] = []  # output read and not flushed yet (one per callback)
        self._held_size = 0
        self._room = _scratch()
        self._flush_handle: asyncio.TimerHandle | None = None
        self._input = bytearray()
        self._writer_on = False
        self._eof = False
        self._last_activity = time.time()
        self.last_output_ts = 0.0
        self._loop = asyncio.get_running_loop()
        self._exited_evt = asyncio.Event()
        self._typist: str | None = None  # the writer who typed last: the PTY has its size
        self._refresh_handle: asyncio.TimerHandle | None = None
        self._activity = ActivityTracker(prompt_patterns=prompt_patterns, now=self._loop.time())
        self._activity_state = self._activity.state
        self._on_activity = on_activity
        self._tick_handle: asyncio.TimerHandle | None = None
        self._tick_at = _NEVER  # the pending tick's ``when()`` (read per keystroke)
        self._schedule_tick()
        self._fd = process.master_fd  # (the PTY's calls on the hot path use it directly)
        self._loop.add_reader(process.master_fd, self._read)
        self._owner = self._loop.create_task(self._own(), name=f"terminal-{session_id}")

    # ------------------------------------------------------------------ state
    def _move(self, target: str) -> None:
        if target not in _TRANSITIONS[self.state]:
            raise IllegalTransition(f"terminal session cannot go from {self.state} to {target}")
        self.state = target
        self.exited = target == "exited"

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

    @property
    def title(self) -> str:
        """The title the program set (OSC 0 / 2), as far as the screen has parsed."""
        return self.screen.title

    @property
    def activity(self) -> str:
        """``busy``, ``waiting`` (for input) or ``idle`` (see :mod:`.activity`)."""
        return self._activity.state

    def viewers_info(self) -> list[dict[str, str]]:
        """Who is watching: ``[{"id", "who", "mode"}]`` in attach order."""
        return [{"id": v.id, "who": v.who, "mode": v.mode} for v in self._viewers.values()]

    # ------------------------------------------------------------------ output
    def _read(self, drain: bool = False) -> None:
        """Read into the pending buffer and flush it (or hold it, see the module's doc).
        Without ``drain`` a short read ends the callback: the loop calls again when
        there is more, and no read is spent on ``EAGAIN`` (on Linux that read also
        waits for the tty's buffer work)."""
        room = self._room
        size = self._held_size
        read = 0
        read_into = self.process.read_into
        if not size and not drain:
            # the common case (an echo, a line): nothing held, one short read, flushed at
            # once unless every viewer is backed up — the loop below, unrolled
            try:  # (PtyProcess.read_into, inline: per keystroke)
                count: int | None = os.readv(self._fd, (room,))
            except BlockingIOError:
                return
            except OSError:  # EIO: every slave fd is closed
                count = 0
            if count and count < SHORT_READ:
                for viewer in self._viewers.values():
                    if not viewer._items:
                        break
                else:
                    if self._viewers:  # all backed up: held as below
                        self._held.append(bytes(room[:count]))
                        self._held_size = count
                        if self._flush_handle is None:
                            self._flush_handle = self._loop.call_later(COALESCE_DELAY, self._flush)
                        return
                self._send_out(bytes(room[:count]))  # (what _flush does with one read)
                return
            if not count:
                self._eof = True
                self._loop.remove_reader(self.process.master_fd)
                return
            read = count
        while size + read < FRAME_MAX:
            count = read_into(room[read : FRAME_MAX - size])
            if count is None:
                break
            if not count:
                self._eof = True
                self._loop.remove_reader(self.process.master_fd)
                break
            read += count
            if count < SHORT_READ and not drain:
                break
        if read:
            self._held.append(bytes(room[:read]))  # (the buffer is the thread's)
            self._held_size = size = size + read
        if not size:
            return
        if self._eof or size >= FRAME_MAX or not self._backed_up():
            self._flush()
        elif self._flush_handle is None:  # held for a backed-up audience, not for long
            self._flush_handle = self._loop.call_later(COALESCE_DELAY, self._flush)

    def _backed_up(self) -> bool:
        """Every viewer still has output queued: none would send new bytes now."""
        viewers = self._viewers
        if not viewers:
            return False
        for viewer in viewers.values():  # noqa: SIM110 - no generator: called per read
            if not viewer._items:
                return False
        return True

    def _wants_more(self) -> None:
        """A viewer's queue ran dry: what was held for it goes out now."""
        if self._held_size:
            self._flush()

    def _flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        held = self._held
        if not held:
            return
        data = held[0] if len(held) == 1 else b"".join(held)
        self._held = []
        self._held_size = 0
        self._send_out(data)

    def _send_out(self, data: bytes) -> None:
        # the frames go out first (a keystroke's echo is on its way while the screen,
        # counters and activity are brought up to date: nothing can attach in between)
        # (a viewer whose pump waits with nothing queued takes it at once: _live)
        result = self.core.feed(data, to_screen=False, take=self._live)
        if result.frames:
            first = result.frames[0]
            output = Output(data, first.start, first.end)  # one object for every viewer
            viewers = self._viewers
            for frame in result.frames:
                viewers[frame.viewer_id]._push(output)
        self.screen.feed(data)
        self._counters.output_bytes += len(data)
        self._last_activity = self.last_output_ts = time.time()
        for viewer_id in result.resynced:
            self._counters.viewer_resyncs += 1
            self._viewers[viewer_id]._drop()
            log.info("terminal.viewer.resync", session=self.id, viewer=viewer_id)
        changed = self._activity.on_output(data, self._loop.time())
        if changed is not None:
            self._activity_moved(changed)
        at = self._activity.next_tick()  # (_retime_tick, inline: called per output)
        if at is not None and at < self._tick_at and not self.exited:
            self._retime_tick()

    def announce(self, text: bytes) -> None:
        """Put a server message (e.g. a restart banner) into the stream, as output."""
        if not text or self.exited:
            return
        self._flush()
        self._send_out(text)

    # ------------------------------------------------------------------ viewers
    def attach(
        self,
        *,
        since: int | None = None,
        mode: str = WRITE,
        who: str = "",
        window: int | None = None,
    ) -> Viewer:
        """Register a viewer: its first frame and its live position are taken atomically.

        ``viewer.first`` is a snapshot of the screen (reason ``attach``), or with
        ``since`` the exact bytes from there when the ring still holds them (``resume``),
        else a snapshot with reason ``gap``.
        """
        if mode not in (WRITE, READ):
            raise Invalid(f"viewer mode must be {WRITE!r} or {READ!r}", code="invalid-mode")
        if self.exited:
            raise SessionExited(f"terminal session {self.id} has exited")
        self._flush()  # bytes already read belong to the first frame, not to a later one
        viewer_id = os.urandom(6).hex()
        first = self.core.attach(viewer_id, since=since, window=window)
        viewer = Viewer(self, viewer_id, _output(first), mode=mode, who=who, window=window)
        self._viewers[viewer_id] = viewer
        self.touch()
        self._broadcast_viewers()
        log.info(
            "terminal.viewer.attached",
            session=self.id,
            viewer=viewer_id,
            who=who,
            mode=mode,
            first=first.kind,
            reason=first.reason,
            nbytes=len(first.data),
        )
        return viewer

    def kick_viewers(self) -> None:
        """First stage of shutdown: every viewer's pump closes with 1001."""
        for viewer in self._viewers.values():
            viewer._kick()

    def detach(self, viewer: Viewer) -> None:
        if self._viewers.pop(viewer.id, None) is not None:
            self._live.pop(viewer.id, None)
            self.core.detach(viewer.id)
            if self._typist == viewer.id:
                self._typist = None
            self._broadcast_viewers()

    # ------------------------------------------------------------------ controls
    def _broadcast(self, body: dict[str, object]) -> None:
        control = Control(body)
        for viewer in self._viewers.values():
            if viewer.wants_controls:
                viewer._push(control)

    def _broadcast_viewers(self) -> None:
        if any(v.wants_controls for v in self._viewers.values()):
            self._broadcast({"type": "viewers", "viewers": self.viewers_info()})

    def _title_from_feeder(self, title: str) -> None:
        """Called on the screen's feeder thread: hand the new title to the loop."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to tell
            self._loop.call_soon_threadsafe(self._title_changed, title)

    def _title_changed(self, title: str) -> None:
        if not self.exited:
            self._broadcast({"type": "title", "title": title})

    def _activity_moved(self, new: str) -> None:
        old = self._activity_state
        if new == old:
            return
        self._activity_state = new
        self._broadcast({"type": "activity", "state": new})
        log.info("terminal.activity", session=self.id, old=old, new=new)
        if self._on_activity is not None:
            try:
                self._on_activity(self, old, new)
            except Exception:  # a listener's failure never breaks the terminal
                log.exception("terminal.activity.listener_failed", session=self.id)

    def _schedule_tick(self) -> None:
        if self.exited:
            return
        at = self._activity.next_tick()
        if at is not None:  # (a floor: a tracker that asks for the past never spins)
            at = max(at, self._loop.time() + TICK_FLOOR)
            self._tick_handle = handle = self._loop.call_at(at, self._tick)
            self._tick_at = handle.when()

    def _retime_tick(self) -> None:
        """Schedule the activity tick, or move it earlier when the tracker needs it sooner
        than the pending one (waiting → busy brings the quiet check before the idle
        deadline the pending tick was set for). Later is fine: an early tick reschedules."""
        handle = self._tick_handle
        at = self._activity.next_tick()
        if at is None or self.exited or (handle is not None and self._tick_at <= at):
            return
        if handle is not None:
            handle.cancel()
        self._tick_handle = handle = self._loop.call_at(at, self._tick)
        self._tick_at = handle.when()

    def _tick(self) -> None:
        self._tick_handle = None
        self._tick_at = _NEVER
        if self.exited:
            return
        changed = self._activity.tick(self._loop.time(), self.screen.text)
        if changed is not None:
            self._activity_moved(changed)
        self._schedule_tick()

    # ------------------------------------------------------------------ input
    def write(self, data: bytes) -> None:
        """Queue client input for the PTY (dropped past 1 MiB pending, or after exit)."""
        if self.exited or not data:
            return
        if not self._input:  # nothing queued: to the PTY first, the bookkeeping after
            try:  # (PtyProcess.write, inline: per keystroke)
                written = os.write(self._fd, data)
            except BlockingIOError:
                written = 0  # the PTY is full: queued below
            except OSError:
                written = len(data)  # the process is going away: dropped, as queued input
            if written < len(data):
                self._input += data[written:]
                self._drain_input()
        elif len(self._input) + len(data) > INPUT_BUFFER_MAX:
            log.warning("terminal.input.dropped", session=self.id, nbytes=len(data))
            return
        else:
            self._input += data
            self._drain_input()
        self._counters.input_bytes += len(data)
        self._last_activity = time.time()
        changed = self._activity.on_input(self._loop.time(), data)
        if changed is not None:
            self._activity_moved(changed)
        at = self._activity.next_tick()  # (_retime_tick, inline: called per keystroke)
        if at is not None and at < self._tick_at and not self.exited:
            self._retime_tick()

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
        """Set the PTY's size now (the owner's REST resize)."""
        self._apply_size(rows, cols)

    def _typed_by(self, viewer: Viewer) -> None:
        """The PTY follows the writer who typed last: typing brings its size along."""
        if self._typist != viewer.id:
            self._typist = viewer.id
            if viewer.size is not None:
                self._apply_size(*viewer.size)

    def _viewer_resized(self, viewer: Viewer, *, opened: bool = False) -> None:
        """A writer's size: applied when it typed last or nobody did (or it was just
        opened: a device's first size counts as activity and makes it the typist)."""
        if opened:
            self._typist = viewer.id
        if self._typist is None or self._typist == viewer.id:
            assert viewer.size is not None
            self._apply_size(*viewer.size)

    def _apply_size(self, rows: int, cols: int) -> None:
        if self.exited or (rows, cols) == (self.rows, self.cols):
            return
        if not (1 <= rows <= 1000 and 1 <= cols <= 1000):
            return
        self._flush()  # output read so far was drawn for the old size
        self.rows, self.cols = rows, cols
        with contextlib.suppress(OSError):
            self.process.resize(rows, cols)
        self.screen.resize(rows, cols)
        self._broadcast({"type": "size", "rows": rows, "cols": cols})
        if any(v.wants_controls for v in self._viewers.values()):
            if self._refresh_handle is not None:
                self._refresh_handle.cancel()
            self._refresh_handle = self._loop.call_later(RESIZE_SETTLE, self._refresh_viewers)

    def _refresh_viewers(self) -> None:
        """After a size change settled: acknowledging viewers get the screen re-serialised
        at the new size (the program's redraw so far is superseded by it)."""
        self._refresh_handle = None
        if self.exited:
            return
        self._flush()
        for viewer in self._viewers.values():
            if viewer.wants_controls and self.core.refresh(viewer.id, "resize"):
                viewer._drop()

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
                self._read(drain=True)  # whatever the process wrote before it died
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
        for handle in (self._flush_handle, self._tick_handle, self._refresh_handle):
            if handle is not None:
                handle.cancel()
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
