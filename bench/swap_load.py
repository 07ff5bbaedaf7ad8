"""Load for the swap benchmark: closed-loop client threads that keep every answer, and wrk.

The threads record, for each request, when it was sent and answered (time.monotonic(), the
clock the benchmark records alias moves with), the status or socket error, and the model
headers, so every answer can be checked against the moves made while it was in flight.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import requests


@dataclass(frozen=True, slots=True)
class Sample:
    """One request: where it went, when, and what came back."""

    url: str
    start: float
    end: float
    status: int | None
    """None when the request failed at the socket (no HTTP answer)."""
    version: str | None
    alias: str | None
    error: str | None = None


class ClosedLoop:
    """One thread per URL, each posting `body` back to back on its own keep-alive session."""

    def __init__(
        self,
        urls: Sequence[str],
        body: bytes,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 30,
    ) -> None:
        self.urls = list(urls)
        self.body = body
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.timeout_s = timeout_s
        self.samples: list[Sample] = []  # list.append is atomic: no lock needed
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(url,), daemon=True, name=f"load-{i}")
            for i, url in enumerate(self.urls)
        ]

    def __enter__(self) -> ClosedLoop:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop sending; wait for the requests in flight."""
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout_s + 5)

    def _run(self, url: str) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            start = time.monotonic()
            try:
                response = session.post(
                    url, data=self.body, headers=self.headers, timeout=self.timeout_s
                )
                end = time.monotonic()
                headers = response.headers
                self.samples.append(
                    Sample(
                        url, start, end, response.status_code,
                        headers.get("X-Model-Version"), headers.get("X-Model-Alias"),
                        None if response.ok else response.text[:200],
                    )
                )  # fmt: skip
            except requests.RequestException as exc:
                end = time.monotonic()
                self.samples.append(
                    Sample(url, start, end, None, None, None, f"{type(exc).__name__}: {exc}"[:200])
                )
                session.close()
                session = requests.Session()
                time.sleep(0.01)
        session.close()

    def first(self, version: str, after: float, timeout_s: float) -> Sample | None:
        """The first answer from `version` to a request sent at or after `after`, waiting."""
        deadline = time.monotonic() + timeout_s
        index = 0
        while True:
            samples = self.samples
            while index < len(samples):
                sample = samples[index]
                index += 1
                if sample.version == version and sample.start >= after and sample.status == 200:
                    return sample
            if time.monotonic() > deadline:
                return None
            time.sleep(0.005)


# -- wrk -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run measured."""

    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int


def wrk_script(body: bytes, path: Path) -> Path:
    """A wrk script posting `body` as JSON on every request."""
    text = body.decode()
    if "]==]" in text:
        raise ValueError("body cannot be embedded in a Lua long string")
    path.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = [==[{text}]==]\n"
    )
    return path


def run_wrk(
    url: str, script: Path, connections: int, duration_s: float, core: str | None
) -> WrkResult:
    """Closed-loop load from wrk (`connections` connections, 2 threads) for `duration_s`."""
    command = [
        "wrk", "-t", str(min(2, connections)), "-c", str(connections),
        "-d", f"{duration_s:g}s", "--latency", "--timeout", "10s", "-s", str(script), url,
    ]  # fmt: skip
    if core is not None:
        command = ["taskset", "-c", core, *command]
    output = subprocess.run(
        command, capture_output=True, text=True, check=True, timeout=duration_s + 60
    ).stdout
    return parse_wrk(output)


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def parse_wrk(output: str) -> WrkResult:
    """The numbers of wrk's `--latency` report."""

    def percentile(label: str) -> float:
        found = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.M)
        if not found:
            raise ValueError(f"no {label}% line in wrk's output:\n{output}")
        return float(found[1]) * _UNITS_MS[found[2]]

    total = re.search(r"(\d+) requests in", output)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if not (total and rps):
        raise ValueError(f"unexpected wrk output:\n{output}")
    return WrkResult(
        requests=int(total[1]),
        rps=float(rps[1]),
        p50_ms=percentile("50"),
        p90_ms=percentile("90"),
        p99_ms=percentile("99"),
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
    )
