"""Prometheus metrics of the operator, on a registry of their own.

A dedicated ``CollectorRegistry`` (not the process default): tests build many operators
in one process, and the operator's port shows only the operator's series. Labels are
bounded — a result, an error class or HTTP code, a failure reason from the spec's closed
list — never a sandbox name (unbounded cardinality; the names are in the logs).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, make_wsgi_app

from ...domain.model import SandboxStatus
from ...domain.status import FAILED, SUSPENDED

# The loop beats every HEARTBEAT_SECONDS; /healthz fails once a beat is STALE_SECONDS old,
# so a wedged event loop (a blocking call, a deadlock) gets the pod restarted.
HEARTBEAT_SECONDS = 5.0
STALE_SECONDS = 30.0


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes and scrapes every few seconds are not worth a log line."""


@dataclass
class OperatorMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    port: int | None = None  # where ``serve`` listens
    clock: Callable[[], float] = time.monotonic
    stale_after: float = STALE_SECONDS
    # the event loop's last beat (``beat``); None until the loop has started beating
    last_beat: float | None = None

    def __post_init__(self) -> None:
        r = self.registry
        self.reconciles = Counter(
            "sandbox_operator_reconciles_total",
            "Reconcile passes by result (changed, unchanged, conflict, error)",
            ["result"],
            registry=r,
        )
        self.failures = Counter(
            "sandbox_operator_reconcile_failures_total",
            "Reconcile passes that raised, by error (HTTP status or exception class)",
            ["error"],
            registry=r,
        )
        self.sandboxes_failed = Counter(
            "sandbox_operator_sandboxes_failed_total",
            "Sandboxes moved to phase Failed, by reason",
            ["reason"],
            registry=r,
        )
        self.suspends = Counter(
            "sandbox_operator_suspends_total",
            "Sandboxes scaled to zero for idleness",
            registry=r,
        )
        self.wakes = Counter(
            "sandbox_operator_wakes_total",
            "Suspended sandboxes scaled back up",
            registry=r,
        )
        self.leader = Gauge(
            "sandbox_operator_leader",
            "1 while this replica holds the leader lease",
            registry=r,
        )

    def transition(self, old: SandboxStatus, new: SandboxStatus) -> None:
        """Count what a written status change means."""
        if new.phase == SUSPENDED and old.phase != SUSPENDED:
            self.suspends.inc()
        elif old.phase == SUSPENDED and new.phase not in (SUSPENDED, FAILED):
            self.wakes.inc()
        if new.phase == FAILED and old.phase != FAILED:
            ready = new.condition("Ready")
            self.sandboxes_failed.labels(reason=ready.reason if ready else "Unknown").inc()

    def beat(self) -> None:
        """Called from the operator's event loop: it is turning."""
        self.last_beat = self.clock()

    def healthy(self) -> tuple[bool, str]:
        if self.last_beat is None:
            return True, "starting"
        age = self.clock() - self.last_beat
        if age > self.stale_after:
            return False, f"event loop silent for {age:.0f}s"
        return True, "ok"

    def serve(self, port: int, *, addr: str = "0.0.0.0") -> WSGIServer:
        """Serve ``/metrics`` and ``/healthz`` on ``port`` (0: any free port; see
        ``.port``) from a thread of its own, so a stuck event loop cannot stop the probe
        from reporting it; the caller shuts the returned server down."""
        metrics_app = make_wsgi_app(self.registry)

        def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            if environ.get("PATH_INFO") == "/healthz":
                ok, detail = self.healthy()
                status = "200 OK" if ok else "503 Service Unavailable"
                start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
                return [detail.encode() + b"\n"]
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]

        server = make_server(addr, port, app, _ThreadingServer, handler_class=_QuietHandler)
        threading.Thread(target=server.serve_forever, name="operator-metrics", daemon=True).start()
        self.port = int(server.server_port)
        return server


__all__ = ["OperatorMetrics"]
