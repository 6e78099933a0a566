"""The operator's /healthz: served beside /metrics, failing once the loop stops beating."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from openova_sandbox.controller.kube.metrics import STALE_SECONDS, OperatorMetrics


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def served() -> Iterator[tuple[OperatorMetrics, Clock, str]]:
    clock = Clock()
    metrics = OperatorMetrics(clock=clock)
    server = metrics.serve(0, addr="127.0.0.1")
    try:
        yield metrics, clock, f"http://127.0.0.1:{metrics.port}"
    finally:
        server.shutdown()
        server.server_close()


def test_healthy_while_starting_and_while_the_loop_beats(served) -> None:
    metrics, clock, url = served
    answer = httpx.get(f"{url}/healthz", timeout=5)
    assert (answer.status_code, answer.text) == (200, "starting\n")
    metrics.beat()
    clock.now += STALE_SECONDS - 1
    answer = httpx.get(f"{url}/healthz", timeout=5)
    assert (answer.status_code, answer.text) == (200, "ok\n")


def test_a_silent_loop_fails_the_probe_and_a_beat_heals_it(served) -> None:
    metrics, clock, url = served
    metrics.beat()
    clock.now += STALE_SECONDS + 12
    answer = httpx.get(f"{url}/healthz", timeout=5)
    assert answer.status_code == 503
    assert answer.text == f"event loop silent for {STALE_SECONDS + 12:.0f}s\n"
    metrics.beat()
    assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200


def test_metrics_are_still_served_on_the_same_port(served) -> None:
    metrics, _clock, url = served
    metrics.suspends.inc()
    text = httpx.get(f"{url}/metrics", timeout=5).text
    assert "sandbox_operator_suspends_total 1.0" in text
