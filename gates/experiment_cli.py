"""`modelyard experiment report`, `modelyard experiment check` and `modelyard feedback import`.

Exit codes: 0 the report was made (whatever it decided) or the labels were stored; 2 it could
not be done (unknown model, a log that cannot be read, labels refused, registry unreachable).
`experiment check`: 0 every guard passed, 1 a guard breached, 2 no data (or could not check).
The reason goes to stderr, never a traceback.
"""

import json
import os
from datetime import UTC, datetime, timedelta
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


@experiment_app.command()
def check(
    name: Name,
    log: LogOption,
    guard: Annotated[
        Path, typer.Option("--guard", help="The rollout guards (YAML; see rollout.yaml).")
    ] = Path("rollout.yaml"),
    since: Annotated[
        str | None,
        typer.Option(
            help="Start of the window (ISO 8601; UTC unless it says; default: 10 minutes ago).",
            show_default=False,
        ),
    ] = None,
    until: Annotated[str | None, typer.Option(help="End of the window, excluded.")] = None,
    candidate: Annotated[str, typer.Option(help="The candidate's alias.")] = "staging",
    baseline: Annotated[str, typer.Option(help="The baseline's alias.")] = "production",
    output: Annotated[Format, typer.Option("--format", help="What to print.")] = Format.text,
) -> None:
    """One evaluation of the rollout guards over a window of the log: exit 0 pass, 1 breach,
    2 no data. For an Argo Rollouts Job metric or a Flagger webhook."""
    from registry.predictionlog import Window

    try:
        start = _moment(since, "--since") or datetime.now(UTC) - timedelta(minutes=10)
        window = Window(start, _moment(until, "--until"))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    quiet_mlflow()
    try:
        from gates import rollout_guards, rollout_policy
        from gates.errors import GateError
        from registry import versions
        from registry.client import connect
        from registry.predictionlog import open_root

        policy, _ = rollout_policy.load(guard)
        if policy.model is not None and policy.model != name:
            raise GateError(f"the guards in {guard} are for model '{policy.model}', not '{name}'")
        client = connect()
        candidate_ref = versions.resolve(client, name, candidate)
        baseline_ref = versions.resolve(client, name, baseline)
        root = open_root(log, os.environ)
        predictions, feedback = rollout_guards.read(root, name, window, window.since)
        found = rollout_guards.evaluate(
            policy, predictions, feedback, candidate_ref, baseline_ref, window.since
        )
    except Exception as exc:
        exit_with(could_not("check", exc, (*_known(), GateError)), 2)
    code = {"pass": 0, "breach": 1, "no_data": 2}[found.outcome]
    if output == Format.json:
        typer.echo(json.dumps(found.document() | {"exit_code": code}, indent=2))
    else:
        until_text = window.until.isoformat() if window.until else "now"
        typer.echo(
            f"check {name}: {candidate_ref} vs {baseline_ref}, from {start.isoformat()} to "
            f"{until_text}: {found.outcome.replace('_', ' ').upper()}"
        )
        for result in found.guards:
            typer.echo(f"  {result.line()}")
    raise typer.Exit(code)


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
    from registry.rollouts import snapshot

    snapshot(client, name)


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
