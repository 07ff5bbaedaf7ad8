"""The body of `POST /models/{name}/feedback`: labels for logged predictions, checked."""

from typing import Any

import orjson
import pandas as pd
import pyarrow as pa

from registry.predictionlog import BadFeedback, PredictionLogError, feedback_table
from serving.errors import BadRequest, RequestTooLarge

MAX_ITEMS = 10_000
"""Labels one request may carry."""
FIELDS = ("request_id", "row", "target")


def labels(body: bytes) -> pa.Table:
    """`{"feedback": [{"request_id": "...", "row": 0, "target": 1}, ...]}` as a table for the
    log; BadRequest naming the bad items (0-based), RequestTooLarge past MAX_ITEMS."""
    try:
        document: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    items = document.get("feedback") if isinstance(document, dict) else None
    if not isinstance(items, list) or not items:
        raise BadRequest('the body must be {"feedback": [{"request_id", "row", "target"}, ...]}')
    if len(items) > MAX_ITEMS:
        raise RequestTooLarge("labels", len(items), MAX_ITEMS, "one feedback request")
    problems = [(i, why) for i, item in enumerate(items) if (why := _problem(item)) is not None]
    if problems:
        raise BadRequest(str(BadFeedback(problems, len(items))))
    frame = pd.DataFrame(
        {name: pd.Series([item[name] for item in items], dtype=object) for name in FIELDS}
    )
    try:
        return feedback_table(frame)
    except PredictionLogError as problem:
        raise BadRequest(str(problem)) from None


def _problem(item: Any) -> str | None:
    """Why an item cannot be a label before its values are checked; None when it can."""
    if not isinstance(item, dict):
        return "must be an object with request_id, row and target"
    missing = [name for name in FIELDS if name not in item]
    if missing:
        return f"missing {', '.join(missing)}"
    extra = sorted(set(item) - set(FIELDS))
    if extra:
        return f"unexpected field {extra[0][:50]!r}"
    if not isinstance(item["request_id"], str):
        return "request_id must be a string"
    for name in ("row", "target"):
        if isinstance(item[name], bool) or not isinstance(item[name], (int, float)):
            return f"{name} must be a number"
    return None
