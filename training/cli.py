"""`modelyard train sklearn|torch` (also `python -m training`)."""

import logging
from typing import Annotated

import typer

from registry.errors import RegistryError
from training.datasets import NAMES
from training.models import ESTIMATORS, Estimator

app = typer.Typer(help="Train a model, log it to MLflow, register a version.", no_args_is_help=True)

Dataset = Annotated[str, typer.Option(help=f"Bundled dataset: {', '.join(NAMES)}.")]
ModelName = Annotated[
    str | None, typer.Option(help="Registered model name (default: the dataset's demo name).")
]
Alias = Annotated[str | None, typer.Option(help="Point this alias at the new version.")]
Seed = Annotated[int, typer.Option(help="Seed of the model's own randomness.")]
SplitSeed = Annotated[int, typer.Option(help="Seed of the train/holdout split (keep it fixed).")]
Experiment = Annotated[str, typer.Option(help="MLflow experiment to log the run in.")]
TrackingUri = Annotated[
    str | None,
    typer.Option(envvar="MLFLOW_TRACKING_URI", help="MLflow tracking server to log to."),
]
Shuffle = Annotated[
    bool, typer.Option(help="Permute the training labels: a deliberately useless model.")
]


@app.command()
def sklearn(
    dataset: Dataset = "breast-cancer",
    model_name: ModelName = None,
    alias: Alias = None,
    estimator: Annotated[
        str, typer.Option(help=f"After scaling: {', '.join(ESTIMATORS)}.")
    ] = "linear",
    seed: Seed = 0,
    split_seed: SplitSeed = 0,
    experiment: Experiment = "modelyard",
    shuffle_labels: Shuffle = False,
    tracking_uri: TrackingUri = None,
) -> None:
    """A scikit-learn pipeline: scaling, then a classifier or regressor."""
    if estimator not in ESTIMATORS:
        raise typer.BadParameter(
            f"choose one of: {', '.join(ESTIMATORS)}", param_hint="--estimator"
        )
    chosen: Estimator = estimator
    _train(
        framework="sklearn",
        dataset=dataset,
        model_name=model_name,
        alias=alias,
        seed=seed,
        split_seed=split_seed,
        experiment=experiment,
        shuffle_labels=shuffle_labels,
        estimator=chosen,
        tracking_uri=tracking_uri,
    )


@app.command()
def torch(
    dataset: Dataset = "breast-cancer",
    model_name: ModelName = None,
    alias: Alias = None,
    hidden: Annotated[int, typer.Option(min=1, help="Hidden layer width.")] = 32,
    epochs: Annotated[int, typer.Option(min=1, help="Full-batch training epochs.")] = 300,
    lr: Annotated[float, typer.Option(min=0, help="Adam learning rate.")] = 0.01,
    seed: Seed = 0,
    split_seed: SplitSeed = 0,
    experiment: Experiment = "modelyard",
    shuffle_labels: Shuffle = False,
    tracking_uri: TrackingUri = None,
) -> None:
    """A small PyTorch MLP, deterministic under its seed."""
    _train(
        framework="torch",
        dataset=dataset,
        model_name=model_name,
        alias=alias,
        seed=seed,
        split_seed=split_seed,
        experiment=experiment,
        shuffle_labels=shuffle_labels,
        hidden=hidden,
        epochs=epochs,
        lr=lr,
        tracking_uri=tracking_uri,
    )


def _train(tracking_uri: str | None, **options: object) -> None:
    from registry.client import bound_http_calls, connect
    from training.run import TrainSpec, train

    if options["dataset"] not in NAMES:
        raise typer.BadParameter(f"choose one of: {', '.join(NAMES)}", param_hint="--dataset")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    bound_http_calls(timeout_s=30, retries=2)
    try:
        ref = train(TrainSpec(**options), connect(tracking_uri))  # type: ignore[arg-type]
    except RegistryError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"registered {ref}")
