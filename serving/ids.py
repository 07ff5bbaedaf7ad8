"""Request ids: 32 random hex digits, drawn from a buffer refilled 256 ids at a time (one
`getrandom` call per refill, not one per request)."""

import os
import threading

_BATCH = 256


class _RandomIds:
    def __init__(self) -> None:
        self._buffer = b""
        self._next = 0
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            if self._next >= len(self._buffer):
                self._buffer, self._next = os.urandom(16 * _BATCH), 0
            start = self._next
            self._next += 16
            return self._buffer[start : start + 16].hex()


new_request_id = _RandomIds()
"""A fresh, unpredictable request id."""
