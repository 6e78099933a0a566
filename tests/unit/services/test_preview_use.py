"""The in-memory record of preview use (services/preview_use.py) on a clock the test
moves, and embedded mode's ``PreviewHost.last_activity``: the later of the terminals'
activity and the previews' use, "now" while a preview WebSocket is open."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from openova_sandbox.services.preview_use import PreviewUse, latest
from openova_sandbox.services.previews import PreviewHost, PreviewsService


class Clock:
    def __init__(self, at: float = 1_000_000.0) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


def when(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def test_a_request_is_use_of_its_sandbox_only() -> None:
    clock = Clock()
    use = PreviewUse(clock)
    assert use.last("acme", "dev") is None
    use.used("acme", "dev")
    clock.at += 90
    assert use.last("acme", "dev") == when(1_000_000.0)
    assert use.last("acme", "other") is None and use.last("globex", "dev") is None
    use.used("acme", "dev")
    assert use.last("acme", "dev") == when(1_000_090.0)
    use.forget("acme", "dev")
    assert use.last("acme", "dev") is None


def test_an_open_websocket_is_use_until_it_closes() -> None:
    clock = Clock()
    use = PreviewUse(clock)
    with use.holding("acme", "dev"):
        clock.at += 600
        assert use.last("acme", "dev") == when(clock.at)  # now, however long it is open
        with use.holding("acme", "dev"):  # a second one, closed first
            clock.at += 5
        clock.at += 60
        assert use.held() == [("acme", "dev")]
        assert use.last("acme", "dev") == when(clock.at)
    closed = clock.at
    clock.at += 300
    assert use.held() == []
    assert use.last("acme", "dev") == when(closed)  # its last use: when it closed


def test_a_socket_ended_by_an_error_is_not_left_open() -> None:
    clock = Clock()
    use = PreviewUse(clock)
    with pytest.raises(RuntimeError), use.holding("acme", "dev"):
        raise RuntimeError("relay failed")
    assert use.held() == []
    clock.at += 10
    assert use.last("acme", "dev") == when(clock.at - 10)


def test_latest_of_two_unknowns() -> None:
    a, b = when(1.0), when(2.0)
    assert latest(None, None) is None
    assert latest(a, None) == a and latest(None, b) == b
    assert latest(a, b) == b and latest(b, a) == b


class Terminals:
    """The controller's TerminalHost, as far as last_activity goes."""

    def __init__(self) -> None:
        self.activity: dict[tuple[str, str], datetime] = {}

    def last_activity(self, namespace: str, name: str) -> datetime | None:
        return self.activity.get((namespace, name))


def test_preview_host_answers_the_later_of_terminals_and_previews(tmp_path: Path) -> None:
    registry: Any = object()  # not reached: no preview is started here
    previews = PreviewsService(registry, data_dir=tmp_path)
    clock = Clock()
    previews.use = PreviewUse(clock)
    terminals = Terminals()
    host = PreviewHost(terminals, previews)  # type: ignore[arg-type]
    assert host.last_activity("acme", "dev") is None  # nothing ever: unknown, not idle
    terminals.activity[("acme", "dev")] = when(clock.at - 100)
    assert host.last_activity("acme", "dev") == when(clock.at - 100)
    previews.used("acme", "dev")
    assert host.last_activity("acme", "dev") == when(clock.at)  # a preview used since
    clock.at += 50
    terminals.activity[("acme", "dev")] = when(clock.at)
    assert host.last_activity("acme", "dev") == when(clock.at)  # then the terminal
    with previews.holding("acme", "dev"):
        clock.at += 3600
        assert host.last_activity("acme", "dev") == when(clock.at)
    assert host.last_activity("acme", "other") is None
