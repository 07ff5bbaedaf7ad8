"""`modelyard experiment report` and `modelyard feedback import`.

Exit codes: 0 the report was made (whatever it decided) or the labels were stored; 2 it could
not be done (unknown model, a log that cannot be read, labels refused, registry unreachable).
The reason goes to stderr, never a traceback.
"""

import os
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from registry.cli import could_not, exit_with, quiet_mlflow

if TYPE_CHECKING:
    import pyarrow as pa

    from registry.client import Client

experiment_app = typer.Typer(
    help="Live A/B experiments from the prediction log.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
feedback_app = typer.Typer(
    help="Labels for logged predictions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

Name = Annotated[str, typer.Argument(help="Registered model name.", show_default=False)]
LogOption = Annotated[
    str,
    typer.Option(
        "--log",
        envvar="MODELYARD_PREDICTION_LOG",
        help="The prediction log's root: an s3:// URI (reached through MLFLOW_S3_ENDPOINT_URL "
        "and AWS_*) or a local directory.",
        show_default=False,
    ),
]


class Format(StrEnum):
    """How the report is printed."""

    text = "text"
    json = "json"
    md = "md"


@experiment_app.command()
def report(
    name: Name,
    log: LogOption,
    since: Annotated[
        str | None, typer.Option(help="Start of the window (ISO 8601; UTC unless it says).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="End of the window, excluded.")] = None,
    candidate: Annotated[str, typer.Option(help="The candidate's alias.")] = "staging",
    baseline: Annotated[str, typer.Option(help="The baseline's alias.")] = "production",
    min_effect: Annotated[
        float | None,
        typer.Option(
            help="The difference worth detecting, in the deciding metric's unit, for the "
            "labels-needed estimate (default: the difference observed).",
            min=0,
        ),
    ] = None,
    report_dir: Annotated[
        Path, typer.Option(help="Where the JSON and Markdown reports go.")
    ] = Path("reports"),
    output: Annotated[Format, typer.Option("--format", help="What to print.")] = Format.text,
    no_mlflow: Annotated[
        bool, typer.Option("--no-mlflow", help="Write the reports only: no run, no version tags.")
    ] = False,
) -> None:
    """The live A/B report: per arm traffic, errors, latency, labels and metric; the split's
    health; the difference with an always-valid 95% confidence sequence; a decision."""
    from registry.predictionlog import Window

    try:
        window = Window(_moment(since, "--since"), _moment(until, "--until"))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    quiet_mlflow()
    try:
        from gates import experiment, experiment_reports
        from registry.client import connect
        from registry.predictionlog import open_root

        spec = experiment.ExperimentSpec(
            name, window, candidate, baseline, report_dir, min_effect, record=not no_mlflow
        )
        made = experiment.run(connect(), open_root(log, os.environ), spec)
    except Exception as exc:  # a report that cannot be made is exit 2, never a traceback
        exit_with(could_not("report", exc, _known()), 2)
    render = {
        Format.text: experiment_reports.render_text,
        Format.json: experiment_reports.render_json,
        Format.md: experiment_reports.render_markdown,
    }[output]
    typer.echo(render(made), nl=False)


@feedback_app.command("import")
def import_labels(
    name: Name,
    file: Annotated[
        Path, typer.Argument(help="CSV (with a header) or Parquet: request_id, row, target.")
    ],
    log: LogOption,
) -> None:
    """Store labels from CSV or Parquet (request_id, row, target); any bad row refuses the file.

    The bad rows are named (CSV by line, Parquet by row), up to ten of them."""
    quiet_mlflow()
    try:
        from registry import predictionlog
        from registry.client import connect

        root = predictionlog.open_root(log, os.environ)
        _check_model(connect(), name)
        table = _labels(file)
        path = predictionlog.write_feedback(root, name, table)
    except Exception as exc:
        exit_with(could_not("import labels", exc, _known()), 2)
    typer.echo(f"imported {table.num_rows} labels for {name} into {path}")


def _known() -> tuple[type[Exception], ...]:
    from registry.predictionlog import PredictionLogError

    return (PredictionLogError,)


def _check_model(client: "Client", name: str) -> None:
    """Raise ModelNotFound unless the registry has a model of that name."""
    from mlflow.exceptions import MlflowException

    from registry.errors import ModelNotFound

    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise ModelNotFound(name) from None


def _labels(file: Path) -> "pa.Table":
    """The file's labels, checked; bad rows named by CSV line or Parquet row."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from registry import predictionlog

    csv = file.suffix.lower() != ".parquet"
    try:
        if csv:
            items = pd.read_csv(file, dtype={"request_id": "string"}, keep_default_na=False,
                                na_values={"row": [""], "target": [""]})  # fmt: skip
        else:
            items = pq.read_table(file).to_pandas()
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise predictionlog.PredictionLogError(f"cannot read {file}: {exc}") from exc
    try:
        return predictionlog.feedback_table(items)
    except predictionlog.BadFeedback as exc:
        where = "line" if csv else "row"
        offset = 2 if csv else 0  # a CSV's first line is its header
        shown = "; ".join(f"{where} {i + offset}: {why}" for i, why in exc.problems[:10])
        more = f" (and {len(exc.problems) - 10} more)" if len(exc.problems) > 10 else ""
        raise predictionlog.PredictionLogError(
            f"{file}: {len(exc.problems)} bad rows, nothing imported: {shown}{more}"
        ) from exc


def _moment(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{option}: {text!r} is not an ISO 8601 date or time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
