"""Prometheus metrics with bounded labels (model, alias, version, status; never request ids).

With several workers, PROMETHEUS_MULTIPROC_DIR is set before they start and /metrics
aggregates every worker's values. There a series cannot be removed (each worker's values live
in its files), so a released version's gauge is set to 0 and the exposition leaves out the
series of every version no live worker serves; a worker's live gauges go when it exits.
"""

import os
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from serving import logs

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_ROWS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
QUEUE_WAIT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 1)


class Metrics:
    """Every metric of one serving process, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        versioned = ["model", "alias", "version"]
        if (dropped := logs.dropped_lines()) is not None:
            r.register(dropped)
        self.requests = Counter(
            "modelyard_requests",
            "Prediction requests answered.",
            ["model", "alias", "version", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "modelyard_request_duration_seconds",
            "Prediction latency, body read to response.",
            versioned,
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
            versioned,
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
        self.requests_by_key = Counter(
            "modelyard_requests_by_key",
            "Prediction requests by API key name ('-': no valid key), when keys are on.",
            ["key", "status"],
            registry=r,
        )
        self.fallbacks = Counter(
            "modelyard_traffic_fallbacks",
            "Requests sent to the fallback alias because theirs was not loaded.",
            ["model", "alias"],
            registry=r,
        )
        self.threads_stuck = Gauge(
            "modelyard_predict_threads_stuck",
            "Predict threads still running a predict that timed out.",
            ["model", "version"],
            multiprocess_mode="livesum",
            registry=r,
        )

        self.batch_rows = Histogram(
            "modelyard_batch_rows",
            "Rows per predict made by the batcher (merged concurrent requests).",
            versioned,
            buckets=BATCH_ROWS_BUCKETS,
            registry=r,
        )
        self.batch_queue_wait = Histogram(
            "modelyard_batch_queue_wait_seconds",
            "Time a request waited in its version's batcher before its predict started.",
            versioned,
            buckets=QUEUE_WAIT_BUCKETS,
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
        self.watcher_errors = Counter(
            "modelyard_watcher_errors",
            "Failures the registry watcher survived (a model's handling, or a whole poll).",
            registry=r,
        )
        self.poll_age = Gauge(
            "modelyard_registry_poll_age_seconds",
            "Seconds since the last successful registry poll (since start, before the first).",
            multiprocess_mode="livemax",
            registry=r,
        )
        self.serving_stale = Gauge(
            "modelyard_serving_stale",
            "1 while serving the saved state of a registry not read since start.",
            multiprocess_mode="livemax",
            registry=r,
        )

        self.log_rows = Counter(
            "modelyard_prediction_log_rows",
            "Prediction records written to the spool of the prediction log.",
            ["model"],
            registry=r,
        )
        self.log_shipped = Counter(
            "modelyard_prediction_log_shipped_rows",
            "Prediction records shipped to the log's root.",
            ["model"],
            registry=r,
        )
        self.log_dropped = Counter(
            "modelyard_prediction_log_dropped_rows",
            "Prediction records dropped: queue_full, spool_full (the store was down too long) "
            "or spool_failed (the spool could not be written).",
            ["model", "reason"],
            registry=r,
        )
        self.log_ship_failures = Counter(
            "modelyard_prediction_log_ship_failures",
            "Attempts to ship a spooled file to the log's root that failed.",
            registry=r,
        )
        self.log_spool_bytes = Gauge(
            "modelyard_prediction_log_spool_bytes",
            "Bytes of the prediction log waiting in the spool to be shipped.",
            multiprocess_mode="livesum",
            registry=r,
        )

    def version_served(
        self, model: str, alias: str, version: str, load_s: float, previous: str | None
    ) -> None:
        """Point the serving gauge at `version`; drop every series of the released version."""
        if previous is not None and previous != version:
            self.version_released(model, alias, previous)
        self.serving.labels(model, alias, version).set(1)
        self.load_seconds.labels(model, alias, version).set(load_s)

    def version_released(self, model: str, alias: str, version: str) -> None:
        """Drop every series of a version no longer served (its model unloaded)."""
        self.serving.labels(model, alias, version).set(0)
        for metric in (
            self.serving,
            self.load_seconds,
            self.requests,
            self.latency,
            self.batch_rows,
            self.batch_queue_wait,
        ):
            _forget(metric, (model, alias, version))

    def in_flight_of(self, model: str) -> Gauge:
        """The in-flight gauge of `model`, its child looked up once (it is set on every predict)."""
        child = self._in_flight_children.get(model)
        if child is None:
            child = self._in_flight_children[model] = self.in_flight.labels(model)
        return child

    def exposition(self) -> bytes:
        """The text exposition: this process, or every worker in multiprocess mode."""
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            merged = CollectorRegistry(auto_describe=False)
            merged.register(_ServedOnly(MultiProcessCollector(None)))
            return generate_latest(merged)
        return generate_latest(self.registry)


def process_exited() -> None:
    """In multiprocess mode, drop this process's live gauges (call as the process ends)."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        mark_process_dead(os.getpid())


VERSIONED = {
    "modelyard_serving_version",
    "modelyard_model_load_seconds",
    "modelyard_requests",
    "modelyard_request_duration_seconds",
    "modelyard_batch_rows",
    "modelyard_batch_queue_wait_seconds",
}
"""Metrics labelled model, alias, version: shown only for versions some worker serves."""


class _ServedOnly:
    """Every worker's metrics, without the series of versions no live worker serves."""

    def __init__(self, source: MultiProcessCollector) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        """The source's metrics, versioned ones filtered."""
        families = list(self.source.collect())
        served = {
            _version(sample.labels)
            for family in families
            if family.name == "modelyard_serving_version"
            for sample in family.samples
            if sample.value >= 1
        }
        for family in families:
            if family.name in VERSIONED:
                family.samples = [s for s in family.samples if _version(s.labels) in served]
            yield family


def _version(labels: dict[str, str]) -> tuple[str | None, ...]:
    return (labels.get("model"), labels.get("alias"), labels.get("version"))


def _forget(metric: Counter | Gauge | Histogram, prefix: tuple[str, ...]) -> None:
    """Remove every child series whose first label values are `prefix` (this process's only:
    in multiprocess mode the exposition filters them instead)."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        return
    for labels in list(metric._metrics):  # the client exposes no public listing of children
        if labels[: len(prefix)] == prefix:
            metric.remove(*labels)
