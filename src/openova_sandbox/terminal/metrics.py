"""Prometheus metrics of a terminal server, in a registry of its own.

Each app gets a dedicated ``CollectorRegistry`` (so two apps in one test process never
collide) whose collector reads the live numbers when scraped: session counts from the
registry, byte and resync counters from :class:`~.session.TerminalCounters`, plus the
standard process and platform collectors. Nothing here is on the output hot path.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from .registry import TerminalRegistry

__all__ = ["CONTENT_TYPE_LATEST", "TerminalMetrics"]


class TerminalMetrics(Collector):
    """Gauges and counters of one terminal server (one sandbox, or every sandbox)."""

    def __init__(self, registry: TerminalRegistry, *, sandbox_id: str | None = None) -> None:
        self._terminals = registry
        self._sandbox_id = sandbox_id
        self.websocket_connections = 0
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)

    def connection_opened(self) -> None:
        self.websocket_connections += 1

    def connection_closed(self) -> None:
        self.websocket_connections -= 1

    def collect(self) -> Iterator[Metric]:
        if self._sandbox_id is None:
            live = self._terminals.total_live()
        else:
            live = self._terminals.live_count(self._sandbox_id)
        counters = self._terminals.counters
        yield GaugeMetricFamily(
            "pty_server_websocket_connections",
            "Attached WebSocket viewers.",
            value=self.websocket_connections,
        )
        yield GaugeMetricFamily("pty_server_sessions", "Live terminal sessions.", value=live)
        yield CounterMetricFamily(
            "pty_server_output_bytes", "Bytes read from terminal processes.", counters.output_bytes
        )
        yield CounterMetricFamily(
            "pty_server_input_bytes", "Bytes written to terminal processes.", counters.input_bytes
        )
        yield CounterMetricFamily(
            "pty_server_viewer_resyncs",
            "Viewers that fell behind and were sent a fresh snapshot.",
            counters.viewer_resyncs,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
