"""`modelyard serve` (also `python -m serving`): uvicorn running the app factory."""

import ipaddress
import logging
import os
import re
import tempfile
import warnings
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError

from registry.client import bound_http_calls
from serving import logs
from serving.auth import read_keyring
from serving.settings import ServingSettings

if TYPE_CHECKING:
    from fastapi import FastAPI

logger = logging.getLogger(__name__)

APP = "serving.cli:worker_app"
"""uvicorn's app factory: called once in each worker process."""


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
) -> None:
    """Serve every registered model with a `production` alias (see MODELYARD_* settings)."""
    from serving.connections import ServerConfig
    from serving.shutdown import DrainingServer, supervise

    try:
        settings = ServingSettings()
        read_keyring(settings)  # a bad keys file stops here, named, before any worker starts
    except (ValidationError, ValueError, SettingsError) as exc:
        for line in settings_errors(exc):
            typer.echo(f"error: {line}", err=True)
        raise typer.Exit(2) from exc
    logs.configure(settings.log_level, settings.log_queue_lines)  # each worker: its own
    if settings.api_keys_file is None and not _is_loopback(host):
        logger.warning(
            "listening on %s with no MODELYARD_API_KEYS_FILE: predictions are open to all", host
        )
    # A model artifact is code: refuse pickled models unless the operator allows them.
    os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    # The watcher polls again soon: a registry call is never retried, only bounded.
    bound_http_calls(timeout_s=settings.registry_timeout_s, retries=0)
    if workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="modelyard-metrics-")
    config = ServerConfig(
        APP,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        log_config=None,
        # uvicorn counts open connections and running requests against it, each on its own
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=settings.keep_alive_s,
        timeout_graceful_shutdown=settings.shutdown_grace_s,
        max_header_bytes=settings.max_header_bytes,
        head_timeout_s=settings.body_timeout_s,
    )
    if workers == 1:
        DrainingServer(config).run()
        return
    supervise(config, [config.bind_socket()])


def worker_app() -> "FastAPI":
    """The app of one worker process, after configuring that process (logging, warnings).

    uvicorn spawns its workers as fresh interpreters, so what `serve` configured in its own
    process does not reach them: each worker configures itself here, once.
    """
    from serving.app import create_app

    settings = ServingSettings()
    logs.configure(settings.log_level, settings.log_queue_lines)
    # serving.model calls a fitted scikit-learn estimator on a float matrix whose columns it has
    # checked against the fitted names, so the warning that the matrix has no names is no news
    warnings.filterwarnings(
        "ignore", "X does not have valid feature names", UserWarning, module="sklearn"
    )
    return create_app(settings)


def _is_loopback(host: str) -> bool:
    """Whether `host` is a loopback address or `localhost`."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def settings_errors(exc: Exception) -> list[str]:
    """One line per bad setting, naming its variable."""
    if not isinstance(exc, ValidationError):
        field = re.search(r'field "(\w+)"', str(exc))
        return [f"setting MODELYARD_{field[1].upper()}: {exc}" if field else str(exc)]
    return [
        f"setting MODELYARD_{'_'.join(str(p) for p in e['loc']).upper() or '(file)'}: {e['msg']}"
        for e in exc.errors()
    ]


def main() -> None:
    """`python -m serving`."""
    typer.run(serve)
