"""``ActivityTracker.on_output``'s inline cases (a chunk without BEL or ESC from ground
state, while busy or as a reaction to input: an echo) against the general scan: any
sequence of input, output and ticks at any pace leaves both trackers in the same state,
field by field, with the same transitions reported."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from openova_sandbox.terminal.activity import ActivityTracker

_chunk = st.lists(
    st.sampled_from([b"a", b"$ ", b"\r\n", b"\x07", b"\x1b", b"]", b"0;t", b"\x1b]9;hi\x07", b"["]),
    max_size=6,
).map(b"".join)
_ops = st.lists(
    st.tuples(
        st.sampled_from(["in", "out", "tick"]),
        st.sampled_from([0.0, 0.001, 0.2, 0.6, 1.1, 3.0, 400.0]),
        _chunk,
    ),
    max_size=60,
)


def _general_on_output(tracker: ActivityTracker, data: bytes, now: float) -> str | None:
    """``on_output`` without its inline cases: every chunk through ``_scan``."""
    if not data:
        return None
    before = tracker.state
    for notify in tracker._scan(data):
        if notify:
            tracker._notified(now)
        else:
            tracker._output(now)
    return tracker.state if tracker.state != before else None


def _fields(tracker: ActivityTracker) -> dict[str, object]:
    return {name: getattr(tracker, name) for name in ActivityTracker.__slots__}


@settings(max_examples=400, deadline=None)
@given(ops=_ops, prompt=st.booleans(), screen=st.sampled_from(["", "ready\n$ "]))
def test_the_inline_output_cases_match_the_general_scan(
    ops: list[tuple[str, float, bytes]], prompt: bool, screen: str
) -> None:
    patterns = [r"\$ $"] if prompt else []
    fast = ActivityTracker(prompt_patterns=patterns, now=0.0)
    general = ActivityTracker(prompt_patterns=patterns, now=0.0)
    now = 0.0
    for op, step, data in ops:
        now += step
        if op == "in":
            assert fast.on_input(now, data) == general.on_input(now, data)
        elif op == "out":
            assert fast.on_output(data, now) == _general_on_output(general, data, now)
        else:
            assert fast.tick(now, lambda: screen) == general.tick(now, lambda: screen)
        assert _fields(fast) == _fields(general)
        assert fast.next_tick() == general.next_tick()
