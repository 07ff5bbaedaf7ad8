"""Log flooding: a full queue drops lines and counts them; tracebacks are rate-limited per key."""

import io
import json
import logging
import queue

from prometheus_client import CollectorRegistry, Counter

from serving.logs import DroppingQueueHandler, JsonFormatter, LineWriter, TracebackLimiter


def queued_logger(
    name: str, registry: CollectorRegistry | None = None
) -> tuple[logging.Logger, "queue.Queue[logging.LogRecord]"]:
    """A logger whose records go to a queue of 10, drops counted in `registry`."""
    dropped = Counter("modelyard_log_lines_dropped", "", registry=registry or CollectorRegistry())
    records: queue.Queue[logging.LogRecord] = queue.Queue(10)
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.addHandler(DroppingQueueHandler(records, dropped))
    return logger, records


def test_lines_beyond_the_queue_are_dropped_and_counted():
    registry = CollectorRegistry()
    logger, records = queued_logger("test-logs-flood", registry)
    for line in range(100):  # nothing writes them: the queue fills up
        logger.error("line %d", line)
    assert records.qsize() == 10
    assert registry.get_sample_value("modelyard_log_lines_dropped_total") == 90


def test_a_failure_is_written_with_its_message_and_its_traceback_apart():
    logger, records = queued_logger("test-logs-traceback")
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("model raised on valid input", extra={"version": "7"})
    logger.warning("after %d failure", 1)
    output = io.StringIO()

    LineWriter(records, JsonFormatter(), output).write_queued()

    failure, after = [json.loads(line) for line in output.getvalue().splitlines()]
    assert failure["message"] == "model raised on valid input"
    assert failure["version"] == "7"
    assert failure["exception"].startswith("Traceback")
    assert failure["exception"].endswith("ValueError: boom")
    assert after["message"] == "after 1 failure"
    assert "exception" not in after


def test_a_record_that_cannot_be_formatted_is_named_and_the_others_are_written():
    logger, records = queued_logger("test-logs-unformattable")
    logger.warning("before")
    logger.warning("rows: %d", "not a number")
    logger.warning("after")
    output = io.StringIO()

    LineWriter(records, JsonFormatter(), output).write_queued()

    before, bad, after = [json.loads(line) for line in output.getvalue().splitlines()]
    assert (before["message"], after["message"]) == ("before", "after")
    assert bad["level"] == "ERROR"
    assert "test-logs-unformattable" in bad["message"]
    assert bad["record_message"] == "rows: %d"
    assert "not a number" not in output.getvalue()


def test_tracebacks_are_limited_per_key_and_minute():
    now = [0.0]
    limiter = TracebackLimiter(per_minute=3, clock=lambda: now[0])
    assert [limiter.allow("iris/7") for _ in range(5)] == [True, True, True, False, False]
    assert limiter.allow("iris/8")  # another key has its own allowance
    now[0] = 59.0
    assert not limiter.allow("iris/7")
    now[0] = 60.0
    assert limiter.allow("iris/7")


def test_traceback_keys_are_bounded():
    now = [0.0]
    limiter = TracebackLimiter(per_minute=1, max_keys=2, clock=lambda: now[0])
    assert limiter.allow("a")
    assert limiter.allow("b")
    assert not limiter.allow("c")  # a third key within the minute gets no traceback
    now[0] = 61.0
    assert limiter.allow("c")  # the old keys' minute is over: they are forgotten
