"""Building an MLflow client whose calls are bounded in time."""

import math
import os

import requests
from mlflow.tracking import MlflowClient

from registry.errors import RegistryUnavailable


def connect(
    tracking_uri: str | None = None, *, timeout_s: float = 10, retries: int = 2
) -> MlflowClient:
    """An MlflowClient for `tracking_uri` (default: MLFLOW_TRACKING_URI), checked reachable.

    MLflow reads its HTTP timeout and retry count from the environment on every call; unless
    the user set them, bound them here so a hanging server cannot stall a caller for minutes.
    """
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, math.ceil(timeout_s))))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(retries))
    client = MlflowClient(tracking_uri)
    check_reachable(client.tracking_uri, timeout_s=timeout_s)
    return client


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
