"""`modelyard gate` (also `python -m gates`): the evaluation gate for CI.

Exit codes: 0 passed; 1 failed (or passed but the alias to promote moved meanwhile); 2 could
not evaluate (bad policy or data, unknown model, registry unreachable, a version's scoring
process that misbehaved). The reason goes to stderr, never a traceback.
"""

import os
from pathlib import Path
from typing import Annotated

import typer

from gates.errors import GateError
from registry.cli import could_not, exit_with, quiet_mlflow

Name = Annotated[str, typer.Argument(help="Registered model name.", show_default=False)]


def gate(
    name: Name,
    candidate: Annotated[
        str, typer.Option(help="Alias or version number of the candidate.")
    ] = "staging",
    baseline: Annotated[
        str,
        typer.Option(
            help="Alias or version number to compare against; an alias that does not exist "
            "yet means no baseline (absolute bounds only)."
        ),
    ] = "production",
    policy: Annotated[Path, typer.Option(help="Gate policy (YAML).")] = Path("gate.yaml"),
    data: Annotated[
        Path | None,
        typer.Option(
            help="Evaluation data, CSV or Parquet, when the policy pins none "
            "(default: the holdout of the baseline's training run)."
        ),
    ] = None,
    report_dir: Annotated[
        Path, typer.Option(help="Where the JSON and Markdown reports go.")
    ] = Path("reports"),
    promote_alias: Annotated[
        str | None,
        typer.Option("--promote", help="Move this alias to the candidate if the gate passes."),
    ] = None,
    score_timeout: Annotated[
        float,
        typer.Option(
            min=0.1,
            help="Seconds each version's scoring process may take for each answer (loading "
            "and scoring the evaluation data, each latency call); beyond it: exit 2.",
        ),
    ] = 300.0,
) -> None:
    """Evaluation gate for CI: exit 0 pass, 1 fail, 2 could not evaluate."""
    quiet_mlflow()
    try:
        from gates import gate as gates
        from gates import policy as policies
        from gates.isolation import Isolation
        from gates.score import forbid_inspection
        from registry.client import connect

        # the scoring processes must not read this one's credentials or memory
        forbid_inspection()
        # as `serve`: pickled models load only where the operator allows them
        allow_pickle = os.environ.get("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")

        parsed, digest = policies.load(policy)
        spec = gates.GateSpec(
            name=name,
            candidate=candidate,
            baseline=baseline,
            policy=parsed,
            policy_path=policy,
            policy_sha256=digest,
            data=data,
            report_dir=report_dir,
            promote=promote_alias,
            isolation=Isolation(score_timeout, allow_pickle.lower() in ("true", "1")),
        )
        outcome = gates.run(connect(), spec)
    except Exception as exc:  # CI must see "could not evaluate", not a traceback
        exit_with(could_not("evaluate", exc, (GateError,)), 2)
    from gates.reports import render_text

    typer.echo(render_text(outcome.report), nl=False)
    typer.echo(f"reports: {outcome.markdown_path} {outcome.json_path}")
    raise typer.Exit(outcome.exit_code)


def main() -> None:
    """`python -m gates`."""
    typer.run(gate)
