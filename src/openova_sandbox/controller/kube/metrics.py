"""Prometheus metrics of the operator, on a registry of their own.

A dedicated ``CollectorRegistry`` (not the process default): tests build many operators
in one process, and the operator's port shows only the operator's series. Labels are
bounded — a result, an error class or HTTP code, a failure reason from the spec's closed
list — never a sandbox name (unbounded cardinality; the names are in the logs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from ...domain.model import SandboxStatus
from ...domain.status import FAILED, SUSPENDED


@dataclass
class OperatorMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    port: int | None = None  # where ``serve`` listens

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

    def serve(self, port: int, *, addr: str = "0.0.0.0") -> WSGIServer:
        """Expose ``/metrics`` on ``port`` (0: any free port; see ``.port``) in a thread;
        the caller shuts the returned server down."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        self.port = int(server.server_port)
        return server


__all__ = ["OperatorMetrics"]
