"""JSON log lines, written by a background thread so logging stays off the request path."""

import atexit
import logging
import logging.handlers
import queue
import sys
from typing import Any

import orjson

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "taskName",
    "color_message",  # uvicorn's terminal copy of the message
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update((k, v) for k, v in record.__dict__.items() if k not in _STANDARD)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure(level: str) -> None:
    """Route the root logger through a queue to a JSON handler on stderr (idempotent)."""
    root = logging.getLogger()
    root.setLevel(level)
    if any(isinstance(h, logging.handlers.QueueHandler) for h in root.handlers):
        return
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    output = logging.StreamHandler(sys.stderr)
    output.setFormatter(JsonFormatter())
    listener = logging.handlers.QueueListener(records, output)
    listener.start()
    atexit.register(listener.stop)
    root.handlers = [logging.handlers.QueueHandler(records)]
    for noisy in ("uvicorn.access",):
        logging.getLogger(noisy).setLevel(logging.WARNING)
