"""Recording runs through a client (never MLflow's process-wide state): experiment, tags,
params, metrics, artifacts, and the model a run logs."""

import math
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.tracking import MlflowClient


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A run being recorded: its id and, on a tracking server, its address in the UI."""

    run_id: str
    url: str | None


def start(
    client: MlflowClient,
    experiment: str,
    name: str | None,
    *,
    tags: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
    metrics: Mapping[str, float] | None = None,
) -> RunRecord:
    """Open a run in `experiment` (created if missing) with its tags, params and metrics."""
    experiment_id = _experiment(client, experiment)
    run_id = client.create_run(experiment_id, run_name=name, tags=dict(tags or {})).info.run_id
    if params:
        client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
    log_metrics(client, run_id, metrics or {})
    uri = client.tracking_uri
    url = (
        f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
        if uri.startswith(("http://", "https://"))
        else None
    )
    return RunRecord(run_id, url)


def log_metrics(client: MlflowClient, run_id: str, metrics: Mapping[str, float]) -> None:
    """Log the finite metrics (an undefined one, NaN, is left out rather than stored)."""
    now = int(time.time() * 1000)
    finite = [Metric(k, v, now, 0) for k, v in metrics.items() if math.isfinite(v)]
    if finite:
        client.log_batch(run_id, metrics=finite)


def log_model(
    client: MlflowClient, run_id: str, save: Callable[[Path, Model], None], name: str = "model"
) -> str:
    """Log the model `save(directory, metadata)` writes as the run's logged model; its id.

    What `mlflow.<flavour>.log_model` does, but through `client`: a logged model linked to the
    run as its output, the flavour's files uploaded to its artifact location, marked READY.
    """
    run = client.get_run(run_id)
    logged = client.create_logged_model(
        run.info.experiment_id, name=name, source_run_id=run_id, params=run.data.params
    )
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
    metadata = Model(
        artifact_path=logged.artifact_location,
        model_uuid=logged.model_id,
        run_id=run_id,
        model_id=logged.model_id,
    )
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / name
        save(directory, metadata)
        client.log_model_artifacts(logged.model_id, str(directory))
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    return logged.model_id


def params(client: MlflowClient, run_id: str) -> dict[str, str]:
    """The params a run logged (they cannot be changed once logged)."""
    return dict(client.get_run(run_id).data.params)


def attach(client: MlflowClient, run_id: str, paths: Iterable[Path], directory: str) -> None:
    """Log each file as an artifact of the run, under `directory`."""
    for path in paths:
        client.log_artifact(run_id, str(path), directory)


def finish(client: MlflowClient, run_id: str, *, succeeded: bool) -> None:
    """Close the run: FINISHED, or FAILED when recording it went wrong."""
    client.set_terminated(run_id, "FINISHED" if succeeded else "FAILED")


def _experiment(client: MlflowClient, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(name))
    except MlflowException:  # another process created it first
        again = client.get_experiment_by_name(name)
        if again is None:
            raise
        return str(again.experiment_id)
