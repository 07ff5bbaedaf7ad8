"""The threads one loaded version predicts on, and how many of them abandoned calls still hold.

Daemon threads: a predict that never returns cannot hold up the process's exit. A caller that
stops waiting for a running call abandons it; its thread counts as stuck until the call
returns, so a version whose threads are all stuck can be kept from taking traffic.
"""

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


class PredictPool:
    """A fixed number of daemon threads running calls in order of submission."""

    def __init__(self, threads: int, name: str) -> None:
        self.threads = threads
        self.name = name
        self._work: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue()
        )
        self._running: set[Future[Any]] = set()
        """Calls running now."""
        self._abandoned: set[Future[Any]] = set()
        """Calls running now that their callers abandoned: each holds its thread."""
        self._lock = threading.Lock()
        self._closed = False
        self._started = 0

    @property
    def stuck(self) -> int:
        """Threads running a call its caller abandoned."""
        return len(self._abandoned)

    @property
    def exhausted(self) -> bool:
        """Every thread is held by an abandoned call: new calls would only wait."""
        return self.stuck >= self.threads

    def submit(self, call: Callable[[], Any]) -> "Future[Any]":
        """Run `call` on one of the threads; its result or exception arrives in the future."""
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"predict pool {self.name} is shut down")
            if self._started < self.threads:
                self._started += 1
                name = f"{self.name}-{self._started}"
                threading.Thread(target=self._serve, name=name, daemon=True).start()
            self._work.put((future, call))
        return future

    def abandon(self, future: "Future[Any]") -> None:
        """The caller stopped waiting: a queued call never runs; a running one counts its
        thread as stuck until it returns."""
        future.cancel()
        with self._lock:
            if future in self._running:
                self._abandoned.add(future)

    def shutdown(self) -> None:
        """Take no more calls, drop queued ones; idle threads end now, busy ones when their
        call returns. Never waits."""
        with self._lock:
            self._closed = True
            threads = self._started
        while True:
            try:
                item = self._work.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[0].cancel()
        for _ in range(threads):
            self._work.put(None)

    def _serve(self) -> None:
        while (item := self._work.get()) is not None:
            future, call = item
            del item
            with self._lock:  # running and listed at once: `abandon` sees it one way or the other
                running = future.set_running_or_notify_cancel()
                if running:
                    self._running.add(future)
            if running:
                self._run(future, call)
            del future, call  # an idle thread holds nothing of a released version

    def _run(self, future: "Future[Any]", call: Callable[[], Any]) -> None:
        try:
            result = call()
        except BaseException as exc:
            self._finished(future)
            future.set_exception(exc)
        else:
            self._finished(future)
            future.set_result(result)

    def _finished(self, future: "Future[Any]") -> None:
        """Forget a returned call; its thread is no longer stuck, if it was."""
        with self._lock:
            self._running.discard(future)
            self._abandoned.discard(future)
