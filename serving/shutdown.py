"""SIGTERM: readiness drops at once, requests in flight get the grace period, the process exits.

uvicorn closes its listener as soon as it is told to exit. `DrainingServer` first makes the
app's Service drain (`/health/ready` answers 503) and keeps answering until no request is in
flight or the grace period (uvicorn's `timeout_graceful_shutdown`) has passed; then uvicorn's
own shutdown gets what is left of it. A predict that hangs holds a thread nothing can stop, so
a watchdog ends the process EXIT_MARGIN_S after the grace period whatever still runs.
"""

import contextlib
import logging
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn
from starlette.applications import Starlette
from uvicorn.supervisors import multiprocess

from serving import logs, metrics

if TYPE_CHECKING:  # uvicorn's workers unpickle this module first: it stays light to import
    from serving.service import Service

logger = logging.getLogger(__name__)

EXIT_MARGIN_S = 3.0
"""Time after the grace period for the app's shutdown before the watchdog ends the process."""


class DrainingServer(uvicorn.Server):
    """uvicorn's Server, draining on the first SIGTERM or SIGINT (see the module's docstring)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.grace_s = float(config.timeout_graceful_shutdown or 0)
        self.drain_deadline: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """The first signal drains; uvicorn's handling (a second SIGINT forces) otherwise."""
        first = self.drain_deadline is None
        super().handle_exit(sig, frame)
        if not first:
            return
        self.drain_deadline = time.monotonic() + self.grace_s
        watchdog = threading.Timer(self.grace_s + EXIT_MARGIN_S, _abandon)
        watchdog.daemon = True
        watchdog.start()
        service = _service(self.config.loaded_app) if self.started else None
        if service is not None:
            logger.info("draining: %s s for requests in flight", f"{self.grace_s:g}")
            service.drain()
            self.should_exit = False  # on_tick says when

    async def on_tick(self, counter: int) -> bool:
        """uvicorn's tick; while draining, exit once nothing is in flight or the grace is over."""
        deadline = self.drain_deadline
        if deadline is not None and not self.should_exit:
            left = deadline - time.monotonic()
            if not self.server_state.tasks or left <= 0:
                self.config.timeout_graceful_shutdown = max(0, math.ceil(left))
                self.should_exit = True
        return await super().on_tick(counter)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's, which re-raises the signal at the end: finish this process's logs and
        metrics first, since a process ended by SIGTERM runs no atexit hook."""
        with super().capture_signals():
            try:
                yield
            finally:
                _finish()


class DrainingWorker(multiprocess.Process):
    """A worker process of uvicorn's supervisor, running a DrainingServer."""

    @property
    def server(self) -> uvicorn.Server:
        """The worker's server (built in the worker process)."""
        if self._server is None:
            self._server = DrainingServer(self.config)
        return self._server


def supervise(config: uvicorn.Config, sockets: list[socket.socket]) -> None:
    """Run uvicorn's multi-worker supervisor, its workers DrainingWorkers."""
    stock = multiprocess.Process
    multiprocess.Process = DrainingWorker  # type: ignore[misc]  # the name it starts workers by
    try:
        multiprocess.Multiprocess(config, sockets=sockets).run()
    finally:
        multiprocess.Process = stock  # type: ignore[misc]


def _service(app: object) -> "Service | None":
    """The Service of the app under uvicorn's middleware wrappers, or None before it starts."""
    while app is not None and not isinstance(app, Starlette):
        app = getattr(app, "app", None)
    return getattr(app.state, "service", None) if app is not None else None


def _abandon() -> None:
    """Watchdog: end the process now, with what is still running."""
    logger.error(
        "shutdown ran %s s past the grace period: exiting, abandoning threads %s",
        f"{EXIT_MARGIN_S:g}",
        [t.name for t in threading.enumerate() if t is not threading.current_thread()],
    )
    _finish()
    os._exit(128 + signal.SIGTERM)


def _finish() -> None:
    metrics.process_exited()
    logs.flush()
