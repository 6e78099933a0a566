"""The server-side screen of a terminal: libghostty-vt fed with every output byte.

Why: a viewer that attaches late (or fell behind) must get *the screen*, not the tail of
the byte stream — a wrapped ring starts inside an escape sequence, misses the switch to
the alternate screen and the input modes, and replays the program's queries (which the
viewer then answers as typed input). The model is a headless Ghostty terminal
(libghostty-vt, the library ``pyghostty`` ships, reached through :mod:`._ghostty`);
:meth:`ScreenModel.snapshot` serialises it as VT that rebuilds the same screen on a
fresh or reset terminal.

Threading: ``feed`` is called on the event loop for every output frame and queues the
bytes; one process-wide daemon thread (the *feeder*) drains the queues. An echo's few
bytes (``INLINE_MAX``) with nothing queued and nobody parsing are parsed by the caller
instead, after the frame was sent: waking the feeder for them (a futex wake, a thread
switch, the feeder's sleep and the GIL handed over twice) cost a typed key far more
than the parse (~1.5 µs). cffi releases the GIL during the native call, so the
feeder's parsing runs beside the loop instead of inside the keystroke path.
:meth:`snapshot` (and :meth:`text`) drain what is still queued under the model's lock
first, so a snapshot always covers every byte fed so far. Resizes are queued in order
with the bytes (output read before a resize was drawn for the old size).

What a snapshot holds, in order: a full reset (``ESC c``: a resync over a live viewer
starts clean), the primary screen with its scrollback when the alternate screen is active
(so leaving it later shows the right content), then libghostty's VT formatter output for
the active screen — input modes (application cursor/keypad, bracketed paste, mouse
tracking and encoding, focus, synchronized output, …), kitty keyboard flags, tab stops,
scrollback and screen with attributes and hyperlinks, scrolling region, cursor position
and pen, charsets — then what the formatter does not carry: cursor shape (DECSCUSR) and
the title (OSC 2); last, the bytes of an escape sequence the stream is in the middle of,
so the live bytes that follow complete it instead of printing its tail. Never a query;
no palette (the viewer keeps its theme). The model never answers queries itself (no
write-PTY callback): the program's queries are answered by the viewers' terminals.
"""

from __future__ import annotations

import contextlib
import queue
import re
import threading
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

import structlog

from . import _ghostty as g
from ._ghostty import ffi, lib

if TYPE_CHECKING:
    from collections.abc import Callable

log = structlog.get_logger(__name__)

DEFAULT_SCROLLBACK_LINES = 1000
RESET = b"\x1bc"
FEED_DELAY = 0.005  # the feeder parses at most this late (snapshots drain at once)
FLOOD_FEED_DELAY = 0.02  # after a batch of 2 * SKIP_MIN or more (a flood is going on)
INLINE_MAX = 512  # a batch this small, with nothing queued, is parsed by the caller
PENDING_MAX = 8 * 1024 * 1024  # queued beyond this, the caller parses (the feeder lags)
TAIL_MAX = 64 * 1024
# Plain-text floods (``ScreenModel._write_skipping``): a batch of at least twice SKIP_MIN
# bytes with a plain stretch of at least SKIP_MIN may have plain lines left out that no
# snapshot could show; the tail parsed holds SKIP_MARGIN_LINES line feeds more than the
# snapshot's lines plus the screen's rows.
SKIP_MIN = 64 * 1024
assert INLINE_MAX < 2 * SKIP_MIN  # (feed's inline parse never skips)
SKIP_MARGIN_LINES = 16
_NOT_PLAIN = (b"\x1b", b"\x0e", b"\x0f")  # ESC, SO, SI: the only ASCII with lasting effect
# libghostty keeps scrollback in pages of a fixed size and drops the oldest page whole;
# measured with 0.1.3: a page is ~400 KiB and holds ~45,700 cells' worth of rows (see
# ``ScreenModel._set_scrollback``). Bounds on the safe side of both:
PAGE_BYTES = 460 * 1024
PAGE_CELLS = 42_000
# Cells a snapshot reads at most to find never-written ones in styled runs (~0.5 µs
# each): rows are checked from the screen upwards, older scrollback past the budget is
# left as the formatter wrote it (see ``ScreenModel._unbleed``)
UNBLEED_BUDGET = 8_000
SCRATCH_MIN = 64 * 1024  # per-thread formatting buffer (one format pass when it fits)
SCRATCH_MAX = 4 * 1024 * 1024
_SCRATCH = threading.local()  # an unfinished sequence longer than this is not carried over
_ALT_MODES = (1049, 1047, 47)

# DECSCUSR parameter for (visual style, blinking); libghostty's steady block is the
# default after a reset, so it is not emitted (the viewer's own cursor setting applies).
_DECSCUSR = {
    (g.STYLE_BLOCK, True): 1,
    (g.STYLE_UNDERLINE, True): 3,
    (g.STYLE_UNDERLINE, False): 4,
    (g.STYLE_BAR, True): 5,
    (g.STYLE_BAR, False): 6,
    (g.STYLE_BLOCK_HOLLOW, True): 1,
    (g.STYLE_BLOCK_HOLLOW, False): 2,
}


# Title changes: one C callback for every terminal, which only flags the terminal (it
# runs inside the parse, on the thread that parses); the model reads the title after.
_TITLED: dict[int, bool] = {}


@ffi.callback("GhosttyTerminalTitleChangedFn")  # type: ignore[untyped-decorator]
def _on_title(terminal: Any, userdata: Any) -> None:
    _TITLED[int(ffi.cast("uintptr_t", terminal))] = True


def _free(handle: Any, key: int) -> None:
    _TITLED.pop(key, None)
    lib.ghostty_terminal_free(handle)


class ScreenError(RuntimeError):
    """libghostty refused a call (out of memory, invalid size)."""


def _check(result: int, what: str) -> None:
    if result:
        raise ScreenError(f"libghostty: {what} failed ({result})")


class _Feeder:
    """One daemon thread that drains the queued output of every screen model."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[weakref.ref[ScreenModel]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def submit(self, model: ScreenModel) -> None:
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    thread = threading.Thread(target=self._run, name="screen-feeder", daemon=True)
                    thread.start()
                    self._thread = thread
        self._queue.put(weakref.ref(model))

    def _run(self) -> None:
        delay = FEED_DELAY
        while True:
            refs = [self._queue.get()]
            # Wait a moment before parsing: a keystroke's echo is sent by then (the feeder
            # never competes with it for the GIL), and bursts of small frames, of any
            # number of terminals, are parsed in one native call each. While a flood
            # goes on, longer: larger batches leave out more of its plain lines.
            time.sleep(delay)
            with contextlib.suppress(queue.Empty):
                while True:
                    refs.append(self._queue.get_nowait())
            largest = 0
            for ref in refs:
                model = ref()
                if model is None:
                    continue
                try:
                    largest = max(largest, model._drain_scheduled())
                except Exception:  # one terminal's failure never stops the others' screens
                    log.exception("terminal.screen.feed_failed")
            delay = FLOOD_FEED_DELAY if largest >= 2 * SKIP_MIN else FEED_DELAY


_FEEDER = _Feeder()


def _options(*, modes: bool, emit: int = g.FORMAT_VT) -> Any:
    opts = ffi.new("GhosttyFormatterTerminalOptions*")
    opts.size = ffi.sizeof("GhosttyFormatterTerminalOptions")
    opts.extra.size = ffi.sizeof("GhosttyFormatterTerminalExtra")
    opts.extra.screen.size = ffi.sizeof("GhosttyFormatterScreenExtra")
    opts.emit = emit
    opts.unwrap = False
    opts.trim = False
    extra = opts.extra
    extra.palette = False  # the viewer keeps its theme
    extra.pwd = False
    extra.modes = modes
    extra.scrolling_region = modes
    extra.tabstops = modes
    extra.keyboard = modes
    screen = extra.screen
    screen.cursor = True
    screen.style = True
    screen.hyperlink = True
    screen.protection = True
    screen.kitty_keyboard = modes
    screen.charsets = True
    opts.selection = ffi.NULL
    return opts


_FULL = _options(modes=True)
_CONTENT = _options(modes=False)
_PLAIN = _options(modes=False, emit=g.FORMAT_PLAIN)
_C0 = bytes(b for b in range(0x20) if b != 0x1B)
_REGION = re.compile(rb"\x1b\[\d+;\d+r")
_MARGINS = re.compile(rb"\x1b\[\d+;\d+s")
_SGR_RESET = b"\x1b[0m"
_SGR = re.compile(rb"\x1b\[[0-9;:]*m")
# Text after an SGR with a space after its first character: where a pen's run may hold
# never-written cells (the run's first character is a written cell: the pen was opened for
# it). Searched first because it is cheap; the pen is checked after (``_pen_runs``). The
# lookbehinds, tried only once the text matched, drop inside the search what the pen check
# would drop too — a letter m in text (a pen's last SGR has parameters), and the runs of
# the commonest pens that cannot show on a blank cell: one single-digit attribute (bold,
# faint, italic, blink, invisible) or a palette foreground, right after a reset. The search
# still stops at every m (an SGR's last byte): on a screen of coloured words it is about
# half of a snapshot's time.
_SPACED_TEXT = re.compile(
    rb"m[^\x1b\r](?=[^\x1b\r ]*+ )"
    rb"(?<=[0-9;:]m.)"
    rb"(?<!\x1b\[0m\x1b\[[123568]m.)"
    rb"(?<!\x1b\[0m\x1b\[38;5;[0-9]m.)"
    rb"(?<!\x1b\[0m\x1b\[38;5;[0-9][0-9]m.)"
    rb"(?<!\x1b\[0m\x1b\[38;5;[0-9][0-9][0-9]m.)",
    re.DOTALL,
)
_PENS = re.compile(rb"(?:\x1b\[[0-9;:]+m)+")
# what shows on a blank cell: background, inverse, underline, strikethrough, overline (the
# formatter writes each attribute as its own SGR); other attributes look the same there
_SHOWS_ON_BLANK = re.compile(rb"\x1b\[(?:48;[0-9;:]*|7|9|53|4(?::[0-9])?)m")
_PEN_MAX = 256  # a pen's SGR sequences are shorter
# pen bytes -> whether the pen shows on a blank cell (the same pens recur on every row)
_PEN_SHOWS: dict[bytes, bool] = {}
_PEN_SHOWS_MAX = 4096
# an escape sequence as the formatter writes them: CSI, OSC/DCS-like strings, ESC x
_ESCAPE = re.compile(
    rb"\x1b(?:\[[0-?]*[ -/]*[@-~]|[\]P_^X][^\x07\x1b]*(?:\x07|\x1b\\)|[ -/]*[0-~])"
)


class ScreenModel:
    """A terminal screen kept on the server, fed with every byte of output."""

    def __init__(
        self,
        rows: int,
        cols: int,
        *,
        scrollback_lines: int = DEFAULT_SCROLLBACK_LINES,
        on_title: Callable[[str], None] | None = None,
        background: bool = True,
    ) -> None:
        handle = ffi.new("GhosttyTerminal*")
        _check(lib.ghostty_terminal_new(ffi.NULL, handle, cols, rows), "terminal")
        self._handle = handle[0]
        key = int(ffi.cast("uintptr_t", self._handle))
        _TITLED[key] = False
        self._key = key
        self._free = weakref.finalize(self, _free, self._handle, key)
        _check(lib.ghostty_terminal_set(self._handle, g.OPT_TITLE_CHANGED, _on_title), "set")
        self._keep_lines = max(0, scrollback_lines)
        self._set_scrollback(rows, cols)
        self._rows, self._cols = rows, cols
        self._lock = threading.Lock()
        self._pending: deque[bytes | tuple[int, int]] = deque()
        self._enqueued = 0  # bytes queued so far (written on the loop thread only)
        self._scheduled = False
        self._background = background
        self._tail: list[bytes] = []  # the unfinished escape sequence at the stream's end
        self._tail_len = 0
        self._grounded = True  # the parser was in ground state after the last batch
        self._title = ""
        self._closed = False
        self.on_title = on_title
        self.fed_bytes = 0  # bytes parsed so far (the feeder's progress)
        self.skipped_bytes = 0  # of which left out as plain text no snapshot shows

    # ------------------------------------------------------------------ loop side
    @property
    def rows(self) -> int:
        return self._rows

    @property
    def cols(self) -> int:
        return self._cols

    def feed(self, data: bytes) -> None:
        """Queue output for the model (cheap: parsing happens on the feeder thread), or
        parse it at once when it is an echo's few bytes."""
        if (
            len(data) <= INLINE_MAX
            and data
            and not self._pending
            and self._lock.acquire(blocking=False)
        ):
            # an echo with nothing queued and nobody parsing: parsed here and now, in
            # order (waking the feeder would cost the process far more than the parse)
            try:
                size = len(data)
                self._enqueued += size
                if not self._closed:
                    # (_parse, inline: a batch this small is never a skipping one)
                    lib.ghostty_terminal_vt_write(self._handle, data, size)
                    self.fed_bytes += size
                    if not (self._grounded and data.isascii() and data.find(b"\x1b") < 0):
                        self._track_tail(data)
                    if _TITLED.get(self._key):
                        self._check_title()
            finally:
                self._lock.release()
        elif data:
            self._enqueue(data)

    def resize(self, rows: int, cols: int) -> None:
        """Queue a size change, in order with the output around it."""
        if (rows, cols) != (self._rows, self._cols):
            self._rows, self._cols = rows, cols
            self._enqueue((rows, cols))

    def _enqueue(self, item: bytes | tuple[int, int]) -> None:
        self._pending.append(item)
        if isinstance(item, bytes):
            self._enqueued += len(item)
        # (each counter has one writer: the loop queues, the lock holder parses)
        if not self._background or self._enqueued - self.fed_bytes > PENDING_MAX:
            with self._lock:
                self._drain_locked()
        elif not self._scheduled:
            self._scheduled = True
            _FEEDER.submit(self)

    def flush(self) -> None:
        """Parse everything queued so far (on the calling thread)."""
        with self._lock:
            self._drain_locked()

    @property
    def title(self) -> str:
        """The window title the program set (OSC 0 / OSC 2) as of the last parsed byte."""
        return self._title

    def text(self) -> str:
        """The visible screen as text (rows as displayed, trailing blanks trimmed)."""
        with self._lock:
            self._drain_locked()
            return self._visible_text()

    def snapshot(self) -> bytes:
        """VT that rebuilds this screen on a fresh or reset terminal (see the module doc)."""
        with self._lock:
            self._drain_locked()
            parts: list[bytes | memoryview] = [RESET]
            selection, covered, first = self._selection(scrollback_lines=self._keep_lines)
            active = self._unbleed(self._format(_FULL, selection), first)
            # (in pieces, joined once below: each copy of a large screen costs ~0.2 ms)
            pieces = self._with_blank_parts(active, selection, covered)
            if self._mode(6):
                pieces = [self._origin_relative(b"".join(pieces))]
            if self._active_screen() == g.SCREEN_ALTERNATE:
                active = b"".join(pieces)
                parts.append(self._primary_under_alt_at_ground(active))
                pieces = [active]
            parts.extend(pieces)
            parts.append(self._cursor_shape())
            if self._title:
                parts.append(b"\x1b]2;" + _osc_safe(self._title) + b"\x1b\\")
            parts.extend(self._tail)
            return b"".join(parts)

    def close(self) -> None:
        with self._lock:
            self._pending.clear()
            self._closed = True
            self._free()

    # ------------------------------------------------------------------ feeder side
    def _drain_scheduled(self) -> int:
        with self._lock:
            self._scheduled = False  # a feed from now on schedules another drain
            return self._drain_locked()

    def _drain_locked(self) -> int:
        """Parse what is queued *now* (bounded: the feeder never holds the lock through a
        flood that keeps arriving; a feed after ``_scheduled`` was cleared resubmits);
        the size of the largest batch parsed."""
        largest = 0
        if self._closed:
            self._pending.clear()
            return largest
        pending = self._pending
        left = len(pending)
        while left:
            item = pending.popleft()
            left -= 1
            if isinstance(item, tuple):
                rows, cols = item
                _check(lib.ghostty_terminal_resize(self._handle, cols, rows, 8, 16), "resize")
                self._set_scrollback(rows, cols)
                continue
            chunks = [item]
            while left and not isinstance(pending[0], tuple):
                chunks.append(pending.popleft())  # type: ignore[arg-type]
                left -= 1
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            largest = max(largest, len(data))
            self._parse(data)
        self._check_title()
        return largest

    def _parse(self, data: bytes) -> None:
        if len(data) < 2 * SKIP_MIN or not self._write_skipping(data):
            lib.ghostty_terminal_vt_write(self._handle, data, len(data))
        self.fed_bytes += len(data)
        # from ground, ASCII without ESC stays in ground (and sets no title); (find, not
        # ``in``: ``bytes in bytes`` raises and clears a TypeError each time)
        if len(data) <= INLINE_MAX and self._grounded and data.isascii() and data.find(b"\x1b") < 0:
            return
        self._track_tail(data)

    def _check_title(self) -> None:
        if _TITLED.get(self._key):  # libghostty said so while parsing (OSC 0 / 2)
            _TITLED[self._key] = False
            self._refresh_title()

    def _write_skipping(self, data: bytes) -> bool:
        """Parse a large batch, leaving out plain-text lines that cannot reach the screen
        or the scrollback a snapshot sends; ``False`` (nothing parsed) when it does not
        apply. Why the screen is then the same, byte for byte, as after parsing all of
        it: "Plain-text floods" in docs/terminal.md.

        The batch is cut in four: a head (parsed), two check lines (parsed), a middle
        (left out) and a tail (parsed). Every byte from the check lines to well into
        the tail is plain ASCII (below 0x80, no ESC, SO or SI), the middle starts and
        ends right after a CR LF, the tail starts with a printable character and has at
        least the snapshot's lines plus the screen's rows of plain lines before anything
        else. The middle is left out only when parsing the check lines proved that a
        line feed there scrolls a row into the scrollback with the cursor staying on its
        region's bottom row: the middle would then leave the state it found (column 0,
        same row, pen, modes, charsets and tab stops, parser in ground state), and every
        row it would draw is pushed out of what is kept by the tail's plain lines.
        """
        rows = self._rows
        keep = self._keep_lines + rows + SKIP_MARGIN_LINES
        check = 0  # the head: the cursor reaches the bottom within rows + 1 line feeds
        for _ in range(rows + 1):
            check = data.find(b"\n", check) + 1
            if not check:
                return False
        middle = check
        for _ in range(2):  # two check lines
            middle = data.find(b"\r\n", middle) + 2
            if middle < 2:
                return False
        stop = min((i for i in (data.find(c, check) for c in _NOT_PLAIN) if i >= 0), default=-1)
        stop = len(data) if stop < 0 else stop
        if stop - middle < SKIP_MIN or not (data.isascii() or data[check:stop].isascii()):
            return False
        sample = data[max(middle, stop - 65536) : stop]
        per_line = len(sample) / max(1, sample.count(b"\n"))
        end = data.find(b"\r\n", max(middle, stop - int(keep * per_line * 1.25) - 256))
        while 0 <= end < stop - 2 and not 0x20 <= data[end + 2] < 0x7F:
            end = data.find(b"\r\n", end + 2)
        end += 2
        if end < 2 or end - middle < SKIP_MIN // 2 or data.count(b"\n", end, stop) < keep:
            return False
        write = lib.ghostty_terminal_vt_write
        handle = self._handle
        write(handle, data, check)
        scrollback = self._get(g.DATA_SCROLLBACK_ROWS, "size_t")
        row = self._get(g.DATA_CURSOR_Y, "uint16_t")
        write(handle, data[check:middle], middle - check)
        if (
            self._get(g.DATA_SCROLLBACK_ROWS, "size_t") - scrollback >= 2
            and self._get(g.DATA_CURSOR_Y, "uint16_t") == row
            and self._ground()
        ):
            self.skipped_bytes += end - middle
        else:
            write(handle, data[middle:end], end - middle)
        tail = data[end:]
        write(handle, tail, len(tail))
        return True

    def _track_tail(self, data: bytes) -> None:
        """Keep the bytes of an escape sequence (or UTF-8 character) left unfinished."""
        self._grounded = self._ground()
        if self._grounded:
            if self._tail:
                self._tail, self._tail_len = [], 0
            return
        joined = b"".join((*self._tail, data)) if self._tail else data
        start = _sequence_start(joined)
        # C0 controls inside a sequence were executed already (their effect is in the
        # screen); carried over they would run twice on the viewer
        kept = (joined[start:] if start >= 0 else joined).translate(None, _C0)
        self._tail, self._tail_len = [kept], len(kept)
        if self._tail_len > TAIL_MAX:  # an image or a runaway string: not carried over
            self._tail, self._tail_len = [], 0

    def _refresh_title(self) -> None:
        out = ffi.new("GhosttyString*")
        if lib.ghostty_terminal_get(self._handle, g.DATA_TITLE, out):
            return
        title = ffi.buffer(out.ptr, out.len)[:].decode(errors="replace") if out.len else ""
        if title != self._title:
            self._title = title
            callback = self.on_title
            if callback is not None:
                with contextlib.suppress(Exception):
                    callback(title)

    def _set_scrollback(self, rows: int, cols: int) -> None:
        """Room for the configured lines of scrollback, as libghostty counts it: in pages.

        Its scrollback limits are a byte size and a line count; past either it drops the
        oldest *page* (hundreds of rows), so a limit of N lines keeps between N minus a
        page and N. A line limit also frees and maps a page each time the scrollback
        rotates (feeding ran at a quarter of the speed, measured), while the byte limit
        reuses the oldest page. So the byte limit alone bounds it, at one page more than
        the lines asked plus the screen take: the scrollback never holds fewer than the
        lines asked once that much output went by (a snapshot then carries exactly
        those). The pages are mapped as output arrives: an idle model stays small.
        """
        limits: list[tuple[int, int]] = [(g.OPT_SCROLLBACK_MAX_LINES, 0)]
        if self._keep_lines:
            page_rows = max(1, PAGE_CELLS // max(1, cols))
            pages = -(-(self._keep_lines + rows) // page_rows) + 1
            limits = [
                (g.OPT_SCROLLBACK_MAX_BYTES, pages * PAGE_BYTES),
                (g.OPT_SCROLLBACK_MAX_LINES, 1 << 40),
            ]
        for option, value in limits:
            _check(lib.ghostty_terminal_set(self._handle, option, ffi.new("size_t*", value)), "set")

    # ------------------------------------------------------------------ formatting
    def _get_bool(self, data: int) -> bool:
        out = ffi.new("bool*")
        _check(lib.ghostty_terminal_get(self._handle, data, out), "get")
        return bool(out[0])

    def _get(self, data: int, ctype: str) -> int:
        out = ffi.new(ctype + "*")
        _check(lib.ghostty_terminal_get(self._handle, data, out), "get")
        return int(out[0])

    def _ground(self) -> bool:
        return self._get_bool(g.DATA_VT_GROUND)

    def _active_screen(self) -> int:
        return self._get(g.DATA_ACTIVE_SCREEN, "int")

    def _mode(self, mode: int, *, ansi: bool = False) -> bool:
        config = ffi.new("GhosttyTerminalModeConfig*")
        config.mode = (mode & 0x7FFF) | (0x8000 if ansi else 0)  # (ANSI modes set bit 15)
        _check(lib.ghostty_terminal_get(self._handle, g.DATA_MODE, config), "mode")
        return bool(config.value)

    def _cursor(self) -> tuple[int, int]:
        return self._get(g.DATA_CURSOR_X, "uint16_t"), self._get(g.DATA_CURSOR_Y, "uint16_t")

    def _selection(self, *, scrollback_lines: int) -> tuple[Any, int, int]:
        """A selection of the last ``scrollback_lines`` of scrollback plus the screen, the
        rows it covers and its first row; ``None`` (everything) when the scrollback is no
        longer."""
        height = self._get(g.DATA_ROWS, "uint16_t")
        scrollback = self._get(g.DATA_SCROLLBACK_ROWS, "size_t")
        if scrollback <= scrollback_lines:
            return None, scrollback + height, 0
        first = scrollback - scrollback_lines
        selection = ffi.new("GhosttySelection*")
        selection.size = ffi.sizeof("GhosttySelection")
        last_col = self._get(g.DATA_COLS, "uint16_t") - 1
        for ref, x, y in (
            (selection.start, 0, first),
            (selection.end, last_col, scrollback + height - 1),
        ):
            point = ffi.new("GhosttyPointS*")
            point.tag = g.POINT_TAG_SCREEN
            point.value.x, point.value.y = x, y
            ref.size = ffi.sizeof("GhosttyGridRef")
            _check(lib.ghostty_terminal_grid_ref(self._handle, point[0], ffi.addressof(ref)), "ref")
        return selection, scrollback_lines + height, first

    def _printed_rows(self, selection: Any) -> list[bytes]:
        """The rows the formatter prints (plain text; blank rows at the bottom left out)."""
        plain = self._format(_PLAIN, selection)
        return plain.split(b"\n") if plain else []

    def _printed_count(self, selection: Any, covered: int, height: int) -> int:
        """How many rows the formatter prints for ``selection`` (``covered`` rows, the
        screen's ``height`` last): the rows it leaves out are blank ones at the bottom, so
        when the screen prints a row, every row above it is printed too and only the
        screen's rows need a plain-text pass (~40 rows instead of the scrollback's
        thousand). A blank screen takes the whole pass."""
        on_screen = len(self._printed_rows(self._selection(scrollback_lines=0)[0]))
        if on_screen:
            return covered - height + on_screen
        return len(self._printed_rows(selection))

    def _visible_text(self) -> str:
        selection, _, _ = self._selection(scrollback_lines=0)
        lines = self._printed_rows(selection)
        if selection is None:  # no scrollback: the rows printed are the screen's
            lines = lines[-self._get(g.DATA_ROWS, "uint16_t") :]
        text = b"\n".join(line.rstrip(b" ") for line in lines)
        return text.decode(errors="replace").rstrip("\n")

    def _format(self, template: Any, selection: Any = None) -> bytes:
        options = ffi.new("GhosttyFormatterTerminalOptions*", template[0])
        options.selection = ffi.NULL if selection is None else selection
        fmt = ffi.new("GhosttyFormatter*")
        made = lib.ghostty_formatter_terminal_new(ffi.NULL, fmt, self._handle, options[0])
        _check(made, "formatter")
        try:
            size = ffi.new("size_t*")
            buf = getattr(_SCRATCH, "buf", None)
            if buf is None:
                buf = _SCRATCH.buf = ffi.new("uint8_t[]", SCRATCH_MIN)
            result = lib.ghostty_formatter_format_buf(fmt[0], buf, len(buf), size)
            if result == g.OUT_OF_SPACE:  # size holds what it needs: grow and format again
                buf = ffi.new("uint8_t[]", size[0] + size[0] // 4)
                if len(buf) <= SCRATCH_MAX:
                    _SCRATCH.buf = buf
                result = lib.ghostty_formatter_format_buf(fmt[0], buf, len(buf), size)
            _check(result, "format")
            return bytes(ffi.buffer(buf, size[0]))
        finally:
            lib.ghostty_formatter_free(fmt[0])

    def _unbleed(self, formatted: bytes, first_row: int) -> bytes:
        """The formatter's output with never-written cells back in the default pen.

        libghostty's formatter holds back a row's never-written cells and prints them as
        spaces just before the next written cell, but *before* it switches to that cell's
        pen: they come out in the pen of the run before them (a coloured run, a gap left
        by a cursor move, then text: the gap is coloured on the viewer). So the spaces of
        a pen's run (the formatter opens every pen with a reset and closes it before a
        row break; a run's first character is a written cell) are checked against the
        row's cells, and the never-written ones get a reset before them and the run's pen
        again after them. Columns are counted in Python while the row is ASCII (one cell
        read a space); other rows are walked cell by cell. Only pens that show on a blank
        cell are looked at, and at most ``UNBLEED_BUDGET`` cells are read, the screen's
        rows first: a scrollback full of coloured bars keeps its oldest gaps coloured
        rather than make a snapshot slow.
        """
        rows = _pen_runs(formatted)
        if not rows:
            return formatted
        found = []
        row, counted = first_row, 0
        for start, runs in rows.items():  # (in order: runs were found in order)
            row += formatted.count(b"\r\n", counted, start)
            counted = start
            end = formatted.find(b"\r\n", start)
            found.append((start, len(formatted) if end < 0 else end, row, runs))
        reader = _CellReader(self._handle, UNBLEED_BUDGET)
        fixes: list[tuple[int, int, bytes]] = []
        for start, end, row, runs in reversed(found):  # the screen first, then upwards
            if reader.budget <= 0:
                break
            segment = formatted[start:end]
            fixed = _unbleed_ascii(segment, start, runs, reader, row)
            if fixed is None:
                reader.budget -= self._cols
                fixed = _unbleed_row(segment, self._row_cells(row))
            fixes.append((start, end, fixed))
        parts: list[bytes] = []
        done = 0
        for start, end, fixed in reversed(fixes):
            parts.append(formatted[done:start])
            parts.append(fixed)
            done = end
        parts.append(formatted[done:])
        return b"".join(parts)

    def _grid_ref(self, x: int, y: int) -> Any:
        """A grid reference to (x, y) of scrollback + screen (``None``: out of range)."""
        point = ffi.new("GhosttyPointS*")
        point.tag = g.POINT_TAG_SCREEN
        point.value.x, point.value.y = x, y
        ref = ffi.new("GhosttyGridRef*")
        ref.size = ffi.sizeof("GhosttyGridRef")
        if lib.ghostty_terminal_grid_ref(self._handle, point[0], ref):
            return None
        return ref

    def _row_cells(self, y: int) -> list[tuple[bool, int]]:
        """The formatter's units of row ``y`` (wide characters' spacers have none): for
        each, whether it is a never-written cell and how many code points it prints."""
        ref = self._grid_ref(0, y)
        if ref is None:
            return []
        cell = ffi.new("GhosttyCell*")
        size = ffi.new("size_t*")
        units: list[tuple[bool, int]] = []
        get_cell = lib.ghostty_grid_ref_cell
        for x in range(self._get(g.DATA_COLS, "uint16_t")):
            ref.x = x
            if get_cell(ref, cell):
                break
            raw = int(cell[0])
            if (raw >> g.CELL_WIDE_SHIFT) & 3 >= g.WIDE_SPACER_TAIL:
                continue
            count = 1
            if raw & 3 == g.CONTENT_GRAPHEME:
                lib.ghostty_grid_ref_graphemes(ref, ffi.NULL, 0, size)
                count = max(1, int(size[0]))
            units.append((raw & g.CELL_BLANK_MASK == 0, count))
        return units

    def _primary_under_alt_at_ground(self, alt_pass: bytes) -> bytes:
        """:meth:`_primary_under_alt`, also when the stream ends inside an escape sequence:
        CAN aborts it, and its bytes are fed again afterwards (same parser state). Not
        inside a UTF-8 character (CAN would print a replacement character there)."""
        if self._ground():
            return self._primary_under_alt(alt_pass)
        tail = b"".join(self._tail)
        if not tail.startswith(b"\x1b"):
            return b""
        self._write(b"\x18")
        try:
            return self._primary_under_alt(alt_pass)
        finally:
            self._write(tail)

    def _primary_under_alt(self, alt_pass: bytes) -> bytes:
        """The primary screen (with scrollback) while the alternate one is shown, with the
        cursor the primary screen saved (where leaving the alternate screen puts it).

        Mode 47 switches screens without clearing or saving; the model goes to the
        primary screen, restores its saved cursor (DECRC), is formatted (content only:
        the modes come with the main pass), saves the cursor back (DECSC), returns, and
        gets its own cursor back from the main pass' cursor sequences (switching copies
        the cursor). The mode 47 flag is put back as it was. In origin mode the cursor
        could not be put back exactly: the primary screen is then formatted with the
        current cursor instead of the saved one.
        """
        x, y = self._cursor()
        cup = b"\x1b[%d;%dH" % (y + 1, x + 1)  # (a pending wrap follows it as a reprint)
        at = alt_pass.rfind(cup)
        exact = at >= 0 and not self._mode(6)
        was_47 = self._mode(47)
        self._write(b"\x1b[?47l\x1b8" if exact else b"\x1b[?47l")
        try:
            selection, covered, first = self._selection(scrollback_lines=self._keep_lines)
            primary = self._unbleed(self._format(_CONTENT, selection), first)
            return self._with_blank_rows(primary, selection, covered)
        finally:
            if exact:
                self._write(b"\x1b7\x1b[?47h")
                self._write(alt_pass[at:])
                if self._mode(6):  # DECRC brought the primary's origin mode along
                    self._set_mode(6, False)
            else:
                self._write(b"\x1b[?47h")
            if not was_47:
                self._set_mode(47, False)

    def _with_blank_rows(self, formatted: bytes, selection: Any, covered: int) -> bytes:
        """:meth:`_with_blank_parts`, joined."""
        return b"".join(self._with_blank_parts(formatted, selection, covered))

    def _with_blank_parts(
        self, formatted: bytes, selection: Any, covered: int
    ) -> list[bytes | memoryview]:
        """The formatter's output with the blank rows at the bottom it leaves out (in
        pieces to be joined).

        The formatter stops at the last row with content, so on the viewer the screen
        sits that many rows too low (the cursor's empty line after a newline, a cleared
        screen). Printed rows are counted in a plain-text pass; the viewer then scrolls
        by the difference with a full-screen region (and no pen: xterm.js fills scrolled
        in rows with the pen's background), *before* the formatter's cursor sequences
        (position, a pending wrap's reprint, pen), which then land on the right row.
        Not DECSC/DECRC around the scroll: xterm.js saves the cursor's row in its buffer,
        not on the screen, so DECRC put the cursor a row higher per line scrolled out.
        """
        height = self._get(g.DATA_ROWS, "uint16_t")
        printed = self._printed_count(selection, covered, height)
        shift = (covered - height) - max(0, printed - height)
        if shift <= 0:
            return [formatted]
        regions = _REGION.findall(formatted, max(0, len(formatted) - 1024))  # it ends there
        region = regions[-1] if regions else b""
        x, y = self._cursor()
        at = formatted.rfind(b"\x1b[%d;%dH" % (y + 1, x + 1))
        scroll = b"\x1b[r\x1b[%d;1H%s%s" % (height, b"\n" * shift, region)
        if at < 0:  # (not expected) keep the cursor the formatter left
            return [formatted, b"\x1b7" + scroll + b"\x1b8"]
        tail = formatted[at:]
        if _SGR.search(tail):  # the pen is set again after
            scroll = _SGR_RESET + scroll
        return [memoryview(formatted)[:at], scroll, tail]

    def _origin_relative(self, formatted: bytes) -> bytes:
        """In origin mode (the caller checks), the formatter's cursor position made
        relative to the margins.

        The formatter writes the cursor's screen position (CUP) after the scrolling
        region, with origin mode already on; the viewer reads it from the region's top
        (and left margin), so the cursor landed that many rows lower.
        """
        x, y = self._cursor()
        cup = b"\x1b[%d;%dH" % (y + 1, x + 1)
        at = formatted.rfind(cup)
        if at < 0:
            return formatted
        regions = _REGION.findall(formatted, max(0, len(formatted) - 1024), at)
        top = int(regions[-1][2:].split(b";")[0]) if regions else 1
        margins = _MARGINS.findall(formatted, max(0, len(formatted) - 1024), at)
        left = int(margins[-1][2:].split(b";")[0]) if margins else 1
        relative = b"\x1b[%d;%dH" % (max(1, y + 2 - top), max(1, x + 2 - left))
        return formatted[:at] + relative + formatted[at + len(cup) :]

    def _set_mode(self, mode: int, value: bool) -> None:
        config = ffi.new("GhosttyTerminalModeConfig*")
        config.mode = mode
        config.value = value
        lib.ghostty_terminal_set(self._handle, g.OPT_MODE, config)

    def _write(self, data: bytes) -> None:
        lib.ghostty_terminal_vt_write(self._handle, data, len(data))

    def _cursor_shape(self) -> bytes:
        state = ffi.new("GhosttyRenderState*")
        if lib.ghostty_render_state_new(ffi.NULL, state):
            return b""
        try:
            if lib.ghostty_render_state_update(state[0], self._handle):
                return b""
            style = ffi.new("int*")
            blink = ffi.new("bool*")
            lib.ghostty_render_state_get(state[0], g.RS_CURSOR_VISUAL_STYLE, style)
            lib.ghostty_render_state_get(state[0], g.RS_CURSOR_BLINKING, blink)
            param = _DECSCUSR.get((int(style[0]), bool(blink[0])))
            return b"" if param is None else b"\x1b[%d q" % param
        finally:
            lib.ghostty_render_state_free(state[0])


class _CellReader:
    """Reads packed cells of one row at a time (one native call a cell)."""

    def __init__(self, handle: Any, budget: int) -> None:
        self._handle = handle
        self.budget = budget  # cells left to read
        self._point = ffi.new("GhosttyPointS*")
        self._point.tag = g.POINT_TAG_SCREEN
        self._ref = ffi.new("GhosttyGridRef*")
        self._ref.size = ffi.sizeof("GhosttyGridRef")
        self._cell = ffi.new("GhosttyCell*")
        self._ok = False

    def row(self, y: int) -> bool:
        self._point.value.x, self._point.value.y = 0, y
        self._ok = not lib.ghostty_terminal_grid_ref(self._handle, self._point[0], self._ref)
        return self._ok

    def blanks(self, column: int, text: bytes) -> list[int]:
        """Which spaces of ASCII ``text`` (from cell ``column`` of the row on, the first
        character left out) are never-written cells (no text, no pen)."""
        if not self._ok:
            return []
        ref, cell, read, mask = self._ref, self._cell, lib.ghostty_grid_ref_cell, g.CELL_BLANK_MASK
        found = []
        space = text.find(b" ", 1)
        while space >= 0:
            ref.x = column + space
            if not read(ref, cell) and not cell[0] & mask:
                found.append(space)
            space = text.find(b" ", space + 1)
        self.budget -= len(text) - 1
        return found


def _pen_runs(formatted: bytes) -> dict[int, list[tuple[int, int, bytes]]]:
    """The runs ``ScreenModel._unbleed`` checks, by the start of their row: each run's
    start and end and its pen, for every run of text with a space after its first
    character whose pen (the SGR sequences since the last reset) shows on a blank cell."""
    rows: dict[int, list[tuple[int, int, bytes]]] = {}  # row start -> its runs
    shows = _PEN_SHOWS
    rfind = formatted.rfind
    for hit in _SPACED_TEXT.finditer(formatted):
        at = hit.start() + 1
        reset = rfind(_SGR_RESET, at - _PEN_MAX if at > _PEN_MAX else 0, at)
        if reset < 0:
            continue
        pen = formatted[reset + 4 : at]  # (4: the reset's length)
        show = shows.get(pen)
        if show is None:
            if not (pen and _PENS.fullmatch(pen)):  # (text since the reset: not a pen)
                continue
            show = _SHOWS_ON_BLANK.search(pen) is not None
            if len(shows) < _PEN_SHOWS_MAX:
                shows[pen] = show
        if not show:
            continue
        end = formatted.find(b"\x1b", at)
        start = rfind(b"\r\n", 0, at)
        run = (at, len(formatted) if end < 0 else end, pen)
        rows.setdefault(0 if start < 0 else start + 2, []).append(run)
    return rows


def _unbleed_ascii(
    segment: bytes, offset: int, runs: list[tuple[int, int, bytes]], reader: _CellReader, y: int
) -> bytes | None:
    """``ScreenModel._unbleed`` for one row whose text up to its runs is ASCII (a cell a
    byte); ``None`` when it is not."""
    if not reader.row(y):
        return segment
    parts: list[bytes] = []
    done = 0
    for run_start, run_end, pen in runs:
        at = run_start - offset
        text = segment[at : run_end - offset]
        before = _ESCAPE.sub(b"", segment[:at])
        if not (before.isascii() and text.isascii()):
            return None
        column = len(before)
        blanks = reader.blanks(column, text)
        if not blanks:
            continue
        fixed = bytearray()
        kept = 0
        for i, blank in enumerate(blanks):
            if i == 0 or blanks[i - 1] != blank - 1:  # a gap starts
                fixed += text[kept:blank] + _SGR_RESET
                kept = blank
            if i + 1 == len(blanks) or blanks[i + 1] != blank + 1:  # it ends
                fixed += text[kept : blank + 1]
                kept = blank + 1
                if kept < len(text):  # (at the run's end the formatter resets)
                    fixed += pen
        fixed += text[kept:]
        parts.append(segment[done:at])
        parts.append(bytes(fixed))
        done = at + len(text)
    parts.append(segment[done:])
    return b"".join(parts)


def _unbleed_row(row: bytes, units: list[tuple[bool, int]]) -> bytes:
    """One formatted row with its never-written cells out of the pen (see ``_unbleed``)."""
    out = bytearray()
    pen = b""  # the SGR sequences of the open pen ("" = default)
    gap = False  # inside never-written cells, after a reset of ours
    unit, left, blank = 0, 0, False
    i, n = 0, len(row)
    while i < n:
        byte = row[i]
        if byte == 0x1B:
            match = _ESCAPE.match(row, i)
            end = match.end() if match else i + 1
            seq = row[i:end]
            if seq == _SGR_RESET:
                pen, gap = b"", False
            elif _SGR.fullmatch(seq):
                pen += seq
            out += seq
            i = end
            continue
        step = 1 if byte < 0xC0 else 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
        if left == 0:
            if unit >= len(units):  # (not expected: the row has no more cells)
                out += row[i:]
                break
            blank, left = units[unit]
            unit += 1
        if blank and pen and not gap:
            out += _SGR_RESET
            gap = True
        elif gap and not blank:
            out += pen
            gap = False
        out += row[i : i + step]
        left -= 1
        i += step
    return bytes(out)


def _sequence_start(data: bytes) -> int:
    """Where the sequence left open at the end of ``data`` begins (-1: not found).

    The last ESC when the sequence it starts is unfinished, else an incomplete UTF-8
    character within the last three bytes, else the last ESC. An ESC inside an
    unfinished OSC/DCS string (the first byte of its ST) is taken for the start: the
    string's content is lost, never printed.
    """
    esc = data.rfind(b"\x1b")
    if esc >= 0 and not _finished(data, esc):
        return esc
    n = len(data)
    for back in range(1, min(3, n) + 1):
        byte = data[n - back]
        if byte >= 0xC0:  # a lead byte: incomplete when it wants more than it has
            want = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            if want > back:
                return n - back
            break
        if byte < 0x80:
            break
    return esc


def _finished(data: bytes, esc: int) -> bool:
    """Whether the escape sequence at ``esc`` ends within ``data``."""
    kind = data[esc + 1 : esc + 2]
    if not kind:
        return False
    rest = data[esc + 2 :]
    if kind == b"[":
        return any(0x40 <= b <= 0x7E for b in rest)
    if kind in (b"]", b"P", b"_", b"^", b"X"):
        return b"\x07" in rest  # (an ST would be a later ESC)
    return 0x30 <= kind[0] <= 0x7E or any(0x30 <= b <= 0x7E for b in rest)


def _osc_safe(title: str) -> bytes:
    return "".join(c for c in title if c >= " " and c != "\x7f").encode()
