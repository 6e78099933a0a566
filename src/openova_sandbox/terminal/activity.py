"""What the agent in a terminal is doing: ``busy``, ``waiting`` for input, or ``idle``.

Sans-I/O: no asyncio, no clock of its own. The session passes every output chunk, every
input event and the monotonic time in, and calls :meth:`ActivityTracker.tick` when
:meth:`ActivityTracker.next_tick` says so (with a callable that renders the screen's text,
so the screen is read only when a prompt check is due).

Signals, in the order they win:

* **Agent notifications** — a terminal bell (BEL outside any OSC/DCS/APC/PM/SOS string,
  where BEL is a terminator, not a bell), ``OSC 9 ; message`` (iTerm2/ghostty; the ConEmu
  sub-commands ``OSC 9 ; <digits> ; …`` such as the 9;4 progress bar are *not*
  notifications), ``OSC 777 ; notify ; …`` (urxvt/ghostty/foot) and ``OSC 99`` (kitty;
  not its ``p=?`` capability query): ``waiting`` at once.
* **Quiet + prompt** — output quiet for ``quiet_seconds`` and one of the prompt patterns
  found in the screen's last non-empty lines: ``waiting``. Without prompt patterns a
  quiet terminal stays ``busy`` (only a notification says it waits) until it has been
  silent for ``idle_seconds``.
* **Work** — from ``waiting``/``idle``, output that is not a reaction (below) and goes on
  for ``burst_seconds`` without a quiet gap: ``busy``.
* **Nothing happening** — ``waiting`` (or a silent ``busy``) with no input and no output
  for ``idle_seconds``: ``idle``. Input in ``idle`` means somebody is back: ``waiting``.

Typing is not work. Output within ``echo_seconds`` of an input event (the echo of a key,
the TUI redrawing its input box) or of a notification (the frame drawn with the bell) is a
*reaction* and leaves ``waiting`` as it is. Later output — the spinner of an agent that
got a task, an answer streaming in — is ``busy`` once it has lasted ``burst_seconds``; a
one-off redraw (a status line changing while the agent waits) is not. After a submitted
line (input containing CR/LF) or unprompted output, once quiet for ``quiet_seconds``, the
prompt is checked again: gone means something works without talking (``sleep 100`` in a
shell): ``busy``.

Chunk boundaries may split escape sequences anywhere; the parser keeps a few bytes of
state, and all bytes of one call share one timestamp, so any chunking of the same bytes at
the same times yields the same states (a hypothesis property in the tests). Only the
final state of a call is reported.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from typing import Final

BUSY: Final = "busy"
WAITING: Final = "waiting"
IDLE: Final = "idle"
STATES: Final = (BUSY, WAITING, IDLE)

PROMPT_TAIL_LINES = 6  # prompt patterns are searched in this many last non-empty lines
ECHO_SECONDS = 0.5
BURST_SECONDS = 1.0

# Parser states.
_GROUND, _ESC, _OSC, _OSC_ESC, _STR, _STR_ESC = range(6)
_OSC_HEAD = 64  # bytes of an OSC payload kept to classify it (number and sub-command)

# Inside a string: its terminators (BEL ends an OSC only), ESC (ST or an abort), CAN/SUB.
_OSC_SCAN = re.compile(rb"[\x07\x1b\x18\x1a]")
_STR_SCAN = re.compile(rb"[\x1b\x18\x1a]")
_STRING_INTROS = frozenset(b"PX^_")  # after ESC: DCS, SOS, PM, APC
_CONEMU = re.compile(rb"9;\d+(?:;|$)")


def _is_notification(head: bytes) -> bool:
    if head.startswith(b"9;"):
        return _CONEMU.match(head) is None
    if head.startswith(b"99;"):  # kitty: ``p=?`` in the metadata is a capability query
        return b"p=?" not in head[3:].split(b";", 1)[0]
    return head.startswith(b"777;notify;")


class ActivityTracker:
    """Derives busy / waiting / idle from output, input, notifications and the screen."""

    __slots__ = (
        "_burst",
        "_burst_start",
        "_echo",
        "_idle",
        "_last_input",
        "_last_notify",
        "_last_output",
        "_next_check",
        "_osc_head",
        "_patterns",
        "_pstate",
        "_quiet",
        "_recheck",
        "_since",
        "state",
    )

    def __init__(
        self,
        *,
        prompt_patterns: Sequence[str] = (),
        quiet_seconds: float = 1.0,
        idle_seconds: float = 300.0,
        now: float,
        echo_seconds: float = ECHO_SECONDS,
        burst_seconds: float = BURST_SECONDS,
    ) -> None:
        self._patterns = compile_patterns(prompt_patterns)
        self._quiet = quiet_seconds
        self._idle = idle_seconds
        self._echo = echo_seconds
        self._burst = burst_seconds
        self._burst_start: float | None = None  # start of unprompted output while waiting
        self.state: str = BUSY
        self._since = now  # when the current state began
        self._last_output = now
        self._last_input = float("-inf")
        self._last_notify = float("-inf")
        self._next_check = now + quiet_seconds  # earliest next prompt check while busy
        self._recheck = False  # something happened while waiting: check the prompt once quiet
        self._pstate = _GROUND
        self._osc_head = b""

    # -- inputs ---------------------------------------------------------------------------

    def on_output(self, data: bytes, now: float) -> str | None:
        """Feed one chunk of output; returns the new state if it changed."""
        if not data:
            return None
        if self._pstate == _GROUND and data.find(b"\x07") < 0 and data.find(b"\x1b") < 0:
            # no BEL and no ESC (most of a flood of text, every plain echo): one run of
            # other output, as ``_scan`` would find it at once (memchr speed)
            state = self.state
            # (_output's two cases without a change, inline: busy, or a reaction)
            if state == BUSY:
                self._last_output = now
                self._next_check = now + self._quiet
                return None
            if now - self._last_input <= self._echo or now - self._last_notify <= self._echo:
                self._last_output = now
                self._burst_start = None  # an echo, or the frame drawn with a bell
                return None
            self._output(now)
            return self.state if self.state != state else None
        before = self.state
        for notify in self._scan(data):
            if notify:
                self._notified(now)
            else:
                self._output(now)
        return self.state if self.state != before else None

    def on_input(self, now: float, data: bytes = b"") -> str | None:
        """Somebody typed (``data``, when given, lets a submitted line be recognised)."""
        self._last_input = now
        # (find, not ``in``: ``bytes in bytes`` raises and clears a TypeError each time)
        if self.state != BUSY and (data.find(b"\r") >= 0 or data.find(b"\n") >= 0):
            self._recheck = True  # a submitted line
        if self.state == IDLE:
            return self._enter(WAITING, now)
        return None

    def tick(self, now: float, screen_text: Callable[[], str]) -> str | None:
        """Time-driven transitions; ``screen_text`` is called only when a check is due."""
        before = self.state
        if self.state == BUSY:
            quiet = now - self._last_output
            if self._patterns and quiet >= self._quiet and now >= self._next_check:
                if self.matches_prompt(screen_text()):
                    self._enter(WAITING, now)
                else:  # re-check with a doubling interval while the screen stays quiet
                    self._next_check = now + max(self._quiet, quiet)
            if self.state == BUSY and now - self._last_activity() >= self._idle:
                self._enter(IDLE, now)
        else:
            if self._recheck and now - max(self._last_input, self._last_output) >= self._quiet:
                self._recheck, self._burst_start = False, None
                if self._patterns and not self.matches_prompt(screen_text()):
                    self._enter(BUSY, now)  # the prompt is gone: something is at work
            if self.state == WAITING and now - self._last_activity() >= self._idle:
                self._enter(IDLE, now)
        return self.state if self.state != before else None

    def next_tick(self) -> float | None:
        """Monotonic time at which :meth:`tick` may change something (None: never)."""
        # (comparisons rather than max(): called twice per keystroke; same values)
        last = self._last_input
        if self._last_output > last:
            last = self._last_output
        latest = self._since if self._since > last else last
        idle_at = latest + self._idle
        if self.state == BUSY:
            if self._patterns:
                check_at = max(self._last_output + self._quiet, self._next_check)
                return min(check_at, idle_at)
            return idle_at
        recheck_at = last + self._quiet
        if self.state == WAITING:
            return min(recheck_at, idle_at) if self._recheck else idle_at
        return recheck_at if self._recheck else None

    # -- queries --------------------------------------------------------------------------

    @property
    def since(self) -> float:
        """Monotonic time the current state began."""
        return self._since

    def matches_prompt(self, screen: str) -> bool:
        """True when a prompt pattern is found in the screen's last non-empty lines."""
        tail = "\n".join(last_lines(screen, PROMPT_TAIL_LINES))
        return any(p.search(tail) for p in self._patterns)

    # -- internals ------------------------------------------------------------------------

    def _last_activity(self) -> float:
        return max(self._since, self._last_output, self._last_input)

    def _enter(self, state: str, now: float) -> str:
        self.state = state
        self._since = now
        self._burst_start = None
        if state == BUSY:
            self._next_check = now + self._quiet
            self._recheck = False
        return state

    def _output(self, now: float) -> None:
        gap = now - self._last_output
        self._last_output = now
        if self.state == BUSY:
            self._next_check = now + self._quiet
            return
        if now - max(self._last_input, self._last_notify) <= self._echo:
            self._burst_start = None  # a reaction: echo, or the frame drawn with a bell
            return
        self._recheck = True
        if self._burst_start is None or gap >= self._quiet:
            self._burst_start = now
        if now - self._burst_start >= self._burst:
            self._enter(BUSY, now)

    def _notified(self, now: float) -> None:
        self._last_notify = now
        if self.state != WAITING:
            self._enter(WAITING, now)
        else:
            self._since = now  # asked again: the idle clock restarts

    def _scan(self, data: bytes) -> Iterator[bool]:
        """Classify ``data``: yields True per notification, False per run of other output.

        Consecutive runs of other output collapse into one False; the bytes of a sequence
        still open at the chunk's end are classified when it ends. Everything is found
        with single-byte searches (memchr speed): BEL, ``]`` preceded by ESC, and the
        last ESC before a BEL or the chunk's end (an ESC ends any open string, so the
        last one tells whether a DCS/SOS/PM/APC string is open there).
        """
        pos, n = 0, len(data)
        pending = False  # other output seen since the last thing yielded
        bel = osc = -2  # cached next positions (-2: not searched yet, -1: none left)
        while pos < n:
            st = self._pstate
            if st == _GROUND:
                if bel != -1 and bel < pos:
                    bel = data.find(b"\x07", pos)
                if osc != -1 and osc < pos:
                    osc = _find_osc(data, pos)
                if bel >= 0 and (osc < 0 or bel < osc):
                    inside = _open_string(data, pos, bel)
                    if inside >= 0:  # the BEL is a byte of a DCS/APC/… string
                        pending, pos, self._pstate = True, inside, _STR
                        continue
                    if pending or bel > pos:
                        yield False
                        pending = False
                    pos = bel + 1
                    yield True
                elif osc >= 0:
                    pending = pending or osc > pos
                    start = osc + 2
                    m = _OSC_SCAN.search(data, start)
                    end = -1 if m is None else m.start()
                    if end >= 0 and (data[end] == 0x07 or data[end + 1 : end + 2] == b"\\"):
                        # the whole OSC is in this chunk: classify it here (titles,
                        # hyperlinks and colour queries are common in TUI output)
                        pos = end + (1 if data[end] == 0x07 else 2)
                        if _is_notification(data[start : min(end, start + _OSC_HEAD)]):
                            if pending:
                                yield False
                                pending = False
                            yield True
                        else:
                            pending = True
                    else:
                        pos, self._pstate, self._osc_head = start, _OSC, b""
                else:
                    if data[n - 1] == 0x1B:  # a lone ESC at the end: the next byte decides
                        pending = pending or n - 1 > pos
                        self._pstate = _ESC
                    else:
                        pending = True
                        if _open_string(data, pos, n) >= 0:
                            self._pstate = _STR
                    pos = n
            elif st == _ESC:
                b = data[pos]
                pos += 1
                if b == 0x5D:  # ]
                    self._pstate, self._osc_head = _OSC, b""
                elif b in _STRING_INTROS:
                    self._pstate, pending = _STR, True
                elif b == 0x1B:
                    pending = True  # ESC ESC: the first one was a lone escape
                else:
                    self._pstate, pending = _GROUND, True
                    if b == 0x07:  # ESC BEL: the BEL still rings
                        yield False
                        pending = False
                        yield True
            elif st in (_OSC, _STR):
                m = (_OSC_SCAN if st == _OSC else _STR_SCAN).search(data, pos)
                end = n if m is None else m.start()
                if st == _OSC and len(self._osc_head) < _OSC_HEAD:
                    self._osc_head += data[pos : min(end, pos + _OSC_HEAD - len(self._osc_head))]
                if m is None:
                    pos = n
                    break
                tok = data[end]
                pos = end + 1
                if tok == 0x1B:
                    self._pstate = _OSC_ESC if st == _OSC else _STR_ESC
                elif tok == 0x07:  # only searched for in an OSC: BEL terminates it
                    pending = yield from self._osc_done(pending)
                else:  # CAN / SUB abort the string
                    self._pstate, pending = _GROUND, True
            elif data[pos] == 0x5C:  # ESC \\ (ST) ends the string
                pos += 1
                if st == _OSC_ESC:
                    pending = yield from self._osc_done(pending)
                else:
                    self._pstate = _GROUND
            else:  # the string was aborted; this ESC starts a new sequence
                self._pstate, pending = _ESC, True
        if pending:  # an open sequence's own bytes are classified when it ends
            yield False

    def _osc_done(self, pending: bool) -> Generator[bool, None, bool]:
        """An OSC ended: yields the output before it and the notification, if it is one;
        returns whether output is pending afterwards (a non-notification OSC is output)."""
        self._pstate = _GROUND
        if _is_notification(self._osc_head):
            if pending:
                yield False
            yield True
            return False
        return True


def _find_osc(data: bytes, pos: int) -> int:
    """Index of the next ``ESC ]`` at or after ``pos``: single-byte searches leapfrog
    from an ESC to the next ``]`` and back (whichever is rarer bounds the steps); text
    with many of both falls back to the two-byte search."""
    e = data.find(b"\x1b", pos)
    for _ in range(16):
        if e < 0:
            return -1
        r = data.find(b"]", e + 1)
        if r < 0:
            return -1
        if r == e + 1:
            return e
        e = data.find(b"\x1b", r - 1)  # (no ESC before r - 1 is followed by a ``]``)
    return -1 if e < 0 else data.find(b"\x1b]", e)


def _open_string(data: bytes, lo: int, hi: int) -> int:
    """If a DCS/SOS/PM/APC string opened in ``data[lo:hi]`` is still open at ``hi``, the
    index just after its introducer, else -1 (an ESC, CAN or SUB ends a string)."""
    e = data.rfind(b"\x1b", lo, hi)
    if e < 0 or e + 1 >= hi or data[e + 1] not in _STRING_INTROS:
        return -1
    if data.find(b"\x18", e + 2, hi) >= 0 or data.find(b"\x1a", e + 2, hi) >= 0:
        return -1
    return e + 2


def compile_patterns(patterns: Iterable[str]) -> tuple[re.Pattern[str], ...]:
    """Compiles prompt patterns (multiline: ``^``/``$`` anchor at each screen line)."""
    return tuple(re.compile(p, re.MULTILINE) for p in patterns)


def last_lines(screen: str, count: int) -> list[str]:
    """The screen's last ``count`` non-empty lines, right-stripped, oldest first."""
    out: list[str] = []
    for line in reversed(screen.splitlines()):
        line = line.rstrip()
        if line:
            out.append(line)
            if len(out) == count:
                break
    out.reverse()
    return out


def excerpt(screen: str, *, lines: int = 5, limit: int = 500) -> str:
    """A short excerpt for notifications: the last non-empty lines, at most ``limit`` chars."""
    text = "\n".join(last_lines(screen, lines))
    return text if len(text) <= limit else "…" + text[len(text) - limit + 1 :]
