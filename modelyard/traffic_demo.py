"""`modelyard demo traffic`: holdout rows through the running server, then their true labels
as feedback, so that the experiment report has an A/B test to judge."""

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests

from registry.client import Client
from training.datasets import load_split

TRAFFIC_TAG = "modelyard.traffic"
FEEDBACK_CHUNK = 1_000
"""Labels per feedback request."""
SPLIT_WAIT_S = 30.0
"""How long the server may take to follow a split set here."""


class DemoError(Exception):
    """The demo cannot run; the message says why and what to do."""


@dataclass
class Traffic:
    """What the demo sent and what came back."""

    statuses: Counter[int] = field(default_factory=Counter)
    aliases: Counter[str] = field(default_factory=Counter)
    labels: list[dict[str, Any]] = field(default_factory=list)
    """One label per answered row: request_id, row, target."""


def ensure_split(
    client: Client, url: str, model: str, staging_share: float, say: Callable[[str], None]
) -> None:
    """Give `model` a `production`/`staging` split of `staging_share` percent unless it has
    one, and wait until the server follows it."""
    if model not in _get(f"{url}/models")["models"]:
        raise DemoError(f"the server at {url} does not serve {model}")
    tags = client.get_registered_model(model).tags
    if TRAFFIC_TAG in tags:
        say(f"keeping {model}'s split: {tags[TRAFFIC_TAG]}")
        return
    weights = {"production": 100 - staging_share, "staging": staging_share}
    split = weights | {"salt": f"demo-{time.strftime('%Y%m%d-%H%M%S')}"}
    client.set_registered_model_tag(model, TRAFFIC_TAG, json.dumps(split))
    say(f"set {TRAFFIC_TAG} of {model} to {json.dumps(split)}")
    deadline = time.monotonic() + SPLIT_WAIT_S
    while time.monotonic() < deadline:
        served = _get(f"{url}/models")["models"].get(model, {})
        if served.get("traffic", {}).get("weights") == weights:
            return
        time.sleep(0.5)
    raise DemoError(f"the server at {url} did not follow the new split within {SPLIT_WAIT_S} s")


def send(url: str, model: str, count: int, concurrency: int, say: Callable[[str], None]) -> Traffic:
    """`count` one-row requests of holdout rows, each with its own routing key."""
    split = load_split("breast-cancer")
    rows, targets = split.x_holdout, split.y_holdout.tolist()
    columns = list(rows.columns)
    values = rows.to_numpy().tolist()
    run = uuid.uuid4().hex[:8]
    traffic = Traffic()
    session = requests.Session()

    def one(i: int) -> None:
        position = i % len(values)
        request_id = f"demo-{run}-{i}"
        response = session.post(
            f"{url}/models/{model}/invocations",
            json={"dataframe_split": {"columns": columns, "data": [values[position]]}},
            headers={"X-Routing-Key": f"user-{i}", "X-Request-ID": request_id},
            timeout=30,
        )
        traffic.statuses[response.status_code] += 1
        if response.status_code == 200:
            traffic.aliases[response.headers.get("X-Model-Alias", "?")] += 1
            traffic.labels.append({"request_id": request_id, "row": 0, "target": targets[position]})

    step = max(1, count // 10)
    with ThreadPoolExecutor(concurrency) as pool:
        for done, _ in enumerate(pool.map(one, range(count)), start=1):
            if done % step == 0 or done == count:
                say(f"  {done}/{count} requests  ({_shares(traffic.aliases)})")
    return traffic


def post_labels(url: str, model: str, labels: list[dict[str, Any]]) -> int:
    """Post the labels as feedback; how many the server accepted."""
    accepted = 0
    for start in range(0, len(labels), FEEDBACK_CHUNK):
        chunk = labels[start : start + FEEDBACK_CHUNK]
        response = requests.post(
            f"{url}/models/{model}/feedback", json={"feedback": chunk}, timeout=30
        )
        if response.status_code != 202:
            raise DemoError(f"feedback refused: {response.status_code} {response.text[:300]}")
        accepted += int(response.json()["accepted"])
    return accepted


def _shares(aliases: Counter[str]) -> str:
    total = sum(aliases.values()) or 1
    return ", ".join(f"{alias} {n / total:.0%}" for alias, n in sorted(aliases.items()))


def _get(url: str) -> dict[str, Any]:
    try:
        response = requests.get(url, timeout=5)
        response.raise_for_status()
        document: dict[str, Any] = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise DemoError(f"no serving layer answered at {url}: {type(exc).__name__}") from exc
    return document
