"""Building an MLflow client whose calls are bounded in time."""

import math
import os
from typing import TypeAlias

import requests
from mlflow.tracking import MlflowClient

from registry.errors import RegistryUnavailable

Client: TypeAlias = MlflowClient
"""The registry client callers pass around, built by `connect`."""


def connect(tracking_uri: str | None = None, *, check_timeout_s: float = 10) -> MlflowClient:
    """An MlflowClient for `tracking_uri` (default: MLFLOW_TRACKING_URI), checked reachable.

    How long each of its calls may take is MLflow's own process-wide setting, which entry
    points set once with `bound_http_calls`.
    """
    client = MlflowClient(tracking_uri)
    check_reachable(client.tracking_uri, timeout_s=check_timeout_s)
    return client


def bound_http_calls(timeout_s: float, retries: int) -> None:
    """For entry points, once at start: bound every MLflow HTTP call of this process.

    MLflow reads its timeout and retry count from the environment on every call and has no
    per-client setting; without a bound a hanging server stalls a caller for minutes. A value
    the user set in MLFLOW_HTTP_REQUEST_TIMEOUT or MLFLOW_HTTP_REQUEST_MAX_RETRIES wins.
    """
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, math.ceil(timeout_s))))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(retries))


def check_reachable(tracking_uri: str, *, timeout_s: float = 5) -> None:
    """Raise RegistryUnavailable unless an http(s) tracking server answers its health check."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    try:
        response = requests.get(f"{tracking_uri.rstrip('/')}/health", timeout=timeout_s)
    except requests.RequestException as exc:
        raise RegistryUnavailable(tracking_uri, type(exc).__name__) from exc
    if response.status_code != 200:
        raise RegistryUnavailable(tracking_uri, f"health check answered {response.status_code}")
