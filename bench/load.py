"""The benchmarks' load generators: wrk (its Lua script, its run, its report) and closed-loop
client threads that keep every answer (`ClientThreads`, which each benchmark's clients extend).

`ClosedLoop`'s threads record, for each request, when it was sent and answered
(time.monotonic(), the clock the swap benchmark records alias moves with), the status or socket
error, and the model headers, so every answer can be checked against the moves made while it
was in flight.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Self, TypeVar

import requests

# -- wrk -----------------------------------------------------------------------------------------


def require_wrk(cores: int = 2) -> None:
    """Exit saying what to install unless wrk, taskset and `cores` usable cores are here."""
    if shutil.which("wrk") is None:
        raise SystemExit(
            "error: wrk is not installed; install it with `apt-get install -y wrk` "
            "(Debian/Ubuntu) or from https://github.com/wg/wrk"
        )
    if shutil.which("taskset") is None:
        raise SystemExit("error: taskset (util-linux) is needed to pin servers and load to cores")
    if len(os.sched_getaffinity(0)) < cores:
        raise SystemExit(f"error: needs at least {cores} usable cores (servers on 0, wrk on 1)")


def post_script(body: bytes, path: Path) -> Path:
    """Write a wrk script to `path` that posts `body` as JSON on every request."""
    text = body.decode()
    if "]==]" in text:
        raise ValueError("body cannot be embedded in a Lua long string")
    path.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = [==[{text}]==]\n"
    )
    return path


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run measured (latencies in ms), and wrk's own report."""

    rps: float
    requests: int
    p50_ms: float
    p75_ms: float
    p90_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: dict[str, int]
    """connect, read, write and timeout errors."""
    output: str = field(default="", repr=False, compare=False)

    @property
    def errors(self) -> int:
        """Non-2xx answers plus socket errors of every kind."""
        return self.non_2xx + sum(self.socket_errors.values())

    def numbers(self) -> dict[str, Any]:
        """The measured numbers, without wrk's report."""
        return {
            "rps": self.rps,
            "requests": self.requests,
            "p50_ms": self.p50_ms,
            "p75_ms": self.p75_ms,
            "p90_ms": self.p90_ms,
            "p99_ms": self.p99_ms,
            "non_2xx": self.non_2xx,
            "socket_errors": dict(self.socket_errors),
        }


def run_wrk(
    url: str,
    script: Path,
    connections: int,
    duration_s: float,
    *,
    threads: int = 1,
    core: str | None = None,
) -> WrkResult:
    """One closed-loop wrk run on keep-alive connections, pinned to `core` when given."""
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration_s:g}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    if core is not None:
        command = ["taskset", "-c", core, *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + 60)
    if done.returncode != 0:
        raise SystemExit(f"error: wrk failed ({done.returncode}): {done.stderr.strip()}")
    return parse_wrk(done.stdout)


_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_SOCKET_ERRORS = ("connect", "read", "write", "timeout")


def parse_wrk(output: str) -> WrkResult:
    """The numbers of wrk's `--latency` report."""

    def ms(label: str) -> float:
        found = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.MULTILINE)
        if found is None:
            raise ValueError(f"no {label}% line in wrk's output:\n{output}")
        return float(found[1]) * _UNIT_MS[found[2]]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in ", output)
    if rps is None or total is None:
        raise ValueError(f"unreadable wrk output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    counts = map(int, sockets.groups()) if sockets else (0, 0, 0, 0)
    return WrkResult(
        rps=float(rps[1]),
        requests=int(total[1]),
        p50_ms=ms("50"),
        p75_ms=ms("75"),
        p90_ms=ms("90"),
        p99_ms=ms("99"),
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=dict(zip(_SOCKET_ERRORS, counts, strict=True)),
        output=output,
    )


# -- closed-loop client threads ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """One POST a client thread sends."""

    url: str
    body: bytes
    headers: Mapping[str, str]


R = TypeVar("R", bound=Request)


class ClientThreads(ABC, Generic[R]):
    """`threads` client threads, each posting the requests `plan(thread)` yields back to back
    on a keep-alive session of its own and handing every outcome to `record`. A request is
    never retried (requests' adapters have no retries); after a socket error a thread opens a
    new session and pauses `error_pause_s`. Threads run pinned to `core` when it is given."""

    def __init__(
        self,
        threads: int,
        *,
        name: str,
        timeout_s: float,
        error_pause_s: float,
        core: str | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.error_pause_s = error_pause_s
        self.core = core
        self.done = threading.Event()
        """Set to stop the threads."""
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True, name=f"{name}-{i}")
            for i in range(threads)
        ]

    @abstractmethod
    def plan(self, thread: int) -> Iterator[R]:
        """The requests thread `thread` sends, in order (drawn one at a time while it runs)."""

    @abstractmethod
    def record(
        self,
        request: R,
        start: float,
        end: float,
        response: requests.Response | None,
        error: requests.RequestException | None,
    ) -> None:
        """Keep one outcome: `response`, or `error` when no HTTP answer came (monotonic times)."""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start sending."""
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop sending; wait for the requests in flight."""
        self.done.set()
        for thread in self._threads:
            thread.join(self.timeout_s + 5)

    def _run(self, index: int) -> None:
        if self.core is not None:
            os.sched_setaffinity(0, {int(self.core)})  # this thread only
        session = requests.Session()
        planned = self.plan(index)
        while not self.done.is_set():
            request = next(planned)
            start = time.monotonic()
            try:
                response = session.post(
                    request.url, data=request.body, headers=request.headers, timeout=self.timeout_s
                )
            except requests.RequestException as exc:
                self.record(request, start, time.monotonic(), None, exc)
                session.close()
                session = requests.Session()
                self.done.wait(self.error_pause_s)
                continue
            self.record(request, start, time.monotonic(), response, None)
        session.close()


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


class ClosedLoop(ClientThreads[Request]):
    """One thread per URL, each posting `body` back to back on its own keep-alive session."""

    def __init__(
        self,
        urls: Sequence[str],
        body: bytes,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 30,
    ) -> None:
        super().__init__(len(urls), name="load", timeout_s=timeout_s, error_pause_s=0.01)
        self.urls = list(urls)
        self.body = body
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.samples: list[Sample] = []  # list.append is atomic: no lock needed

    def plan(self, thread: int) -> Iterator[Request]:
        return itertools.repeat(Request(self.urls[thread], self.body, self.headers))

    def record(
        self,
        request: Request,
        start: float,
        end: float,
        response: requests.Response | None,
        error: requests.RequestException | None,
    ) -> None:
        if response is None:
            text = f"{type(error).__name__}: {error}"[:200]
            self.samples.append(Sample(request.url, start, end, None, None, None, text))
            return
        headers = response.headers
        self.samples.append(
            Sample(
                request.url,
                start,
                end,
                response.status_code,
                headers.get("X-Model-Version"),
                headers.get("X-Model-Alias"),
                None if response.ok else response.text[:200],
            )
        )

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
