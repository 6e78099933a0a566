"""Prometheus counters of the model gateway: requests, tokens and cost by model.

Labels stay bounded and anonymous: the model label is a configured alias, or the name a
pass-through upstream accepted (an answer below 400), else ``other``; no sandbox, user
or org label (per-user spend is the usage API's, not the metrics').
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from .usage import Usage

OTHER = "other"


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.requests = Counter(
            "sandbox_llm_requests_total",
            "Model gateway requests by model, API and status",
            ["model", "api", "status"],
            registry=registry,
        )
        self.tokens = Counter(
            "sandbox_llm_tokens_total",
            "Tokens through the model gateway by model and kind "
            "(input, output, cache_read, cache_write)",
            ["model", "kind"],
            registry=registry,
        )
        self.cost = Counter(
            "sandbox_llm_cost_usd_total",
            "Cost in USD of model gateway requests by model (operator prices)",
            ["model"],
            registry=registry,
        )
        self.upstream_latency = Histogram(
            "sandbox_llm_upstream_first_byte_seconds",
            "Time from the request to the upstream's status and headers, by model",
            ["model"],
            registry=registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
        )
        # the labelled children, looked up once (prometheus_client's labels() checks and
        # locks on every call); bounded like the labels themselves
        self._children: dict[tuple[str, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric._name, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def record(
        self,
        *,
        model: str,
        api: str,
        status: int,
        usage: Usage | None,
        cost: Decimal,
        first_byte_s: float | None = None,
    ) -> None:
        self._child(self.requests, model, api, str(status)).inc()
        if first_byte_s is not None:
            self._child(self.upstream_latency, model).observe(first_byte_s)
        if usage is not None:
            for kind, count in (
                ("input", usage.input_tokens),
                ("output", usage.output_tokens),
                ("cache_read", usage.cache_read_tokens),
                ("cache_write", usage.cache_write_tokens),
            ):
                if count:
                    self._child(self.tokens, model, kind).inc(count)
        if cost:
            self._child(self.cost, model).inc(float(cost))
