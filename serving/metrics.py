"""Prometheus metrics with bounded labels (model, alias, version, status; never request ids).

With several workers, PROMETHEUS_MULTIPROC_DIR is set before they start and /metrics
aggregates every worker's values.
"""

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    """Every metric of one serving process, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "modelyard_requests",
            "Prediction requests answered.",
            ["model", "alias", "version", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "modelyard_request_duration_seconds",
            "Prediction latency, body read to response.",
            ["model", "alias", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "modelyard_requests_in_flight",
            "Prediction requests being handled.",
            ["model"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self._in_flight_children: dict[str, Gauge] = {}
        self.load_seconds = Gauge(
            "modelyard_model_load_seconds",
            "Seconds the serving version took to load and warm up.",
            ["model", "alias", "version"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.serving = Gauge(
            "modelyard_serving_version",
            "1 for the version each alias serves.",
            ["model", "alias", "version"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.swaps = Counter(
            "modelyard_swaps", "Versions swapped in.", ["model", "alias"], registry=r
        )
        self.load_failures = Counter(
            "modelyard_load_failures",
            "Versions that failed to load, warm up or match the output contract.",
            ["model", "alias"],
            registry=r,
        )
        self.extra_columns = Counter(
            "modelyard_extra_columns",
            "Requests carrying columns outside the signature.",
            ["model"],
            registry=r,
        )
        self.fallbacks = Counter(
            "modelyard_traffic_fallbacks",
            "Requests sent to the fallback alias because theirs was not loaded.",
            ["model", "alias"],
            registry=r,
        )

        shadow_labels = ["model", "production_version", "shadow_version"]
        self.shadow_rows = Counter(
            "modelyard_shadow_rows",
            "Rows scored by both production and the shadow alias.",
            shadow_labels,
            registry=r,
        )
        self.shadow_agreed = Counter(
            "modelyard_shadow_agreed_rows",
            "Shadow-scored rows where both answered the same.",
            shadow_labels,
            registry=r,
        )
        self.shadow_errors = Counter(
            "modelyard_shadow_errors", "Shadow predictions that raised.", shadow_labels, registry=r
        )

        self.shadow_skipped = Counter(
            "modelyard_shadow_skipped",
            "Sampled requests not shadow-scored because the shadow backlog was full.",
            shadow_labels,
            registry=r,
        )

    def version_served(
        self, model: str, alias: str, version: str, load_s: float, previous: str | None
    ) -> None:
        """Point the serving gauge at `version`; drop every series of the released version."""
        if previous is not None and previous != version:
            for metric in (self.serving, self.load_seconds, self.requests, self.latency):
                _forget(metric, (model, alias, previous))
        self.serving.labels(model, alias, version).set(1)
        self.load_seconds.labels(model, alias, version).set(load_s)

    def in_flight_of(self, model: str) -> Gauge:
        """The in-flight gauge of `model`, its child looked up once (it is set on every predict)."""
        child = self._in_flight_children.get(model)
        if child is None:
            child = self._in_flight_children[model] = self.in_flight.labels(model)
        return child

    def exposition(self) -> bytes:
        """The text exposition: this process, or every worker in multiprocess mode."""
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            merged = CollectorRegistry()
            MultiProcessCollector(merged)
            return generate_latest(merged)
        return generate_latest(self.registry)


def _forget(metric: Counter | Gauge | Histogram, prefix: tuple[str, ...]) -> None:
    """Remove every child series whose first label values are `prefix`."""
    for labels in list(metric._metrics):  # the client exposes no public listing of children
        if labels[: len(prefix)] == prefix:
            metric.remove(*labels)
