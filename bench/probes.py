"""Background probes of a serving process during an attack: its RSS, and `/health/live`.

Both are threads started and stopped around one case; each keeps every sample, so a case's
record says how high memory went and how slowly liveness answered while it ran.
"""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path
from typing import Any, Self

import requests


def rss_kib(pid: int) -> int | None:
    """VmRSS of `pid` in KiB, or None once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class Probe(threading.Thread):
    """A daemon thread calling `sample` every `interval_s` until stopped."""

    def __init__(self, interval_s: float) -> None:
        super().__init__(daemon=True)
        self.interval_s = interval_s
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            started = time.monotonic()
            self.sample()
            self._halt.wait(max(0.0, self.interval_s - (time.monotonic() - started)))

    def sample(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._halt.set()
        self.join(5)


class RssProbe(Probe):
    """VmRSS of one process every `interval_s` (20 ms by default)."""

    def __init__(self, pid: int, interval_s: float = 0.02) -> None:
        super().__init__(interval_s)
        self.pid = pid
        self.samples: list[int] = []

    def sample(self) -> None:
        if (kib := rss_kib(self.pid)) is not None:
            self.samples.append(kib)

    def peak_kib(self) -> int | None:
        return max(self.samples) if self.samples else None


class LiveProbe(Probe):
    """GET `/health/live` every `interval_s` (10 ms by default) on one keep-alive session.

    A failed or timed-out call counts as an error and as a latency of `timeout_s`.
    """

    def __init__(self, base_url: str, interval_s: float = 0.01, timeout_s: float = 1.0) -> None:
        super().__init__(interval_s)
        self.url = base_url + "/health/live"
        self.timeout_s = timeout_s
        self.latencies_ms: list[float] = []
        self.errors = 0
        self._session = requests.Session()

    def sample(self) -> None:
        started = time.perf_counter()
        try:
            ok = self._session.get(self.url, timeout=self.timeout_s).status_code == 200
        except requests.RequestException:
            ok = False
            self._session.close()
            self._session = requests.Session()
        elapsed = (time.perf_counter() - started) * 1000
        if not ok:
            self.errors += 1
            elapsed = max(elapsed, self.timeout_s * 1000)
        self.latencies_ms.append(elapsed)

    def summary(self) -> dict[str, Any]:
        """Count, errors, p50, p99 and max in ms."""
        return latency_summary(self.latencies_ms) | {"errors": self.errors}


def percentile(values: list[float], q: float) -> float | None:
    """The `q`-th percentile (nearest rank), or None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def latency_summary(values: list[float]) -> dict[str, Any]:
    """n, p50, p99 and max of latencies in ms."""
    return {
        "n": len(values),
        "p50_ms": statistics.median(values) if values else None,
        "p99_ms": percentile(values, 99),
        "max_ms": max(values) if values else None,
    }
