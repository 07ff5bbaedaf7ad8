"""`modelyard rollout NAME ...`, `modelyard rollout status NAME`, `modelyard rollout abort NAME`.

Exit codes of a rollout: 0 passed (and promoted); 1 a guard breached, or the rollout was stopped
by a person (an abort, an alias moved, the split edited) or taken over by another controller;
2 it could not go on (bad guards or options, a rollout already running, no data in time,
registry unreachable). `status`: 0, or 2 if the registry cannot be read. `abort`: 0 aborted,
1 no rollout running, 2 could not. The reason goes to stderr, never a traceback.
"""

import json
import os
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from gates.experiment_cli import LogOption
from registry.cli import could_not, exit_with, quiet_mlflow


class _NameFirst(TyperGroup):
    """`rollout NAME ...` is `rollout start NAME ...`: anything but a subcommand or an option
    in first place names the model."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # typer's own click Context
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["start", *args]
        return super().parse_args(ctx, args)


rollout_app = typer.Typer(
    cls=_NameFirst,
    help="Guarded progressive rollout: `modelyard rollout NAME --candidate staging --steps "
    "5,25,50,100 --step-seconds 300 --guard rollout.yaml`; `rollout status NAME`; `rollout "
    "abort NAME`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

Name = Annotated[str, typer.Argument(help="Registered model name.", show_default=False)]
GuardOption = Annotated[
    Path, typer.Option("--guard", help="The rollout guards (YAML; see rollout.yaml).")
]


class Format(StrEnum):
    """How status is printed."""

    text = "text"
    json = "json"


@rollout_app.command("start")
def start(
    name: Name,
    log: LogOption,
    candidate: Annotated[str, typer.Option(help="The candidate's alias.")] = "staging",
    baseline: Annotated[str, typer.Option(help="The baseline's alias.")] = "production",
    steps: Annotated[
        str | None,
        typer.Option(
            help="The candidate's weight at each step, in percent, comma-separated "
            "(default 5,25,50,100; on --resume, the recorded ones).",
            show_default=False,
        ),
    ] = None,
    step_seconds: Annotated[float, typer.Option(min=0.1, help="How long each step lasts.")] = 300.0,
    check_seconds: Annotated[
        float | None,
        typer.Option(
            min=0.1,
            help="Between two checks of the guards (default: a tenth of a step, 1-30 s).",
            show_default=False,
        ),
    ] = None,
    data_wait_seconds: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="How long past a step's end to wait for the data it needs before giving up "
            "(exit 2; default: one step).",
            show_default=False,
        ),
    ] = None,
    guard: GuardOption = Path("rollout.yaml"),
    promote: Annotated[
        str | None,
        typer.Option(
            help="The alias moved to the candidate once the last step passes (default: the "
            "baseline's).",
            show_default=False,
        ),
    ] = None,
    no_promote: Annotated[
        bool,
        typer.Option("--no-promote", help="Move no alias: the split stays at its last step."),
    ] = False,
    resume: Annotated[
        bool,
        typer.Option(
            help="Continue the model's running rollout from its recorded step (after its "
            "controller died); its steps, timings and aliases are the recorded ones."
        ),
    ] = False,
) -> None:
    """Shift traffic to the candidate step by step, judging each step on the prediction log;
    promote after the last, set the candidate's weight to 0 on a breach."""
    try:
        parsed_steps = _steps(steps) if steps is not None else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--steps") from None
    quiet_mlflow()
    try:
        from gates import rollout_policy
        from gates.rollout import Controller, RolloutSpec
        from registry.client import connect
        from registry.predictionlog import open_root

        policy, digest = rollout_policy.load(guard)
        spec = RolloutSpec(
            name=name,
            policy=policy,
            guard_path=str(guard),
            guard_sha256=digest,
            candidate=candidate,
            baseline=baseline,
            steps=parsed_steps if resume or parsed_steps else (5, 25, 50, 100),
            step_seconds=step_seconds,
            check_seconds=check_seconds,
            data_wait_seconds=data_wait_seconds,
            promote=None if no_promote else (promote or baseline),
            resume=resume,
        )
        controller = Controller(connect(), open_root(log, os.environ), spec, say=typer.echo)
        finished = controller.run()
    except KeyboardInterrupt:
        exit_with(
            f"interrupted: the rollout of {name} stays where it is; continue it with "
            f"`modelyard rollout {name} --resume` or stop it with `modelyard rollout abort {name}`",
            2,
        )
    except Exception as exc:
        exit_with(could_not("roll out", exc, _known()), 2)
    raise typer.Exit(finished.exit_code)


@rollout_app.command()
def status(
    name: Name,
    output: Annotated[Format, typer.Option("--format", help="What to print.")] = Format.text,
) -> None:
    """The model's latest rollout, read from the registry: candidate, step, last check, run."""
    quiet_mlflow()
    try:
        from gates import rollout
        from registry import split
        from registry.client import connect

        found, snap = rollout.status(connect(), name)
    except Exception as exc:
        exit_with(could_not("read the rollout", exc, _known()), 2)
    if output == Format.json:
        document: dict[str, Any] = {
            "model": name,
            "rollout": json.loads(found.encode()) if found else None,
            "split": split.of_tags(snap.tags).encode(),
            "aliases": dict(snap.aliases),
        }
        typer.echo(json.dumps(document, indent=2))
        return
    if found is None:
        typer.echo(f"{name}: no rollout recorded")
        return
    for line in rollout.describe(found, snap, datetime.now(UTC)):
        typer.echo(line)


@rollout_app.command()
def abort(
    name: Name,
    reason: Annotated[str, typer.Option(help="Why: recorded in the alias history.")] = "",
) -> None:
    """Stop the running rollout: the candidate's weight to 0 now; its controller stops at its
    next check (exit 1)."""
    quiet_mlflow()
    try:
        from gates import rollout
        from registry.client import connect

        ended = rollout.abort(connect(), name, reason=reason)
    except Exception as exc:
        from gates.rollout import NoRollout

        if isinstance(exc, NoRollout):
            exit_with(str(exc), 1)
        exit_with(could_not("abort the rollout", exc, _known()), 2)
    typer.echo(
        f"{name}: rollout {ended.id} aborted at step {ended.step + 1}/{len(ended.steps)}; "
        f"{ended.candidate_alias} v{ended.candidate_version} takes no traffic"
    )


def _steps(text: str) -> tuple[float, ...]:
    try:
        found = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"{text!r}: percentages separated by commas, e.g. 5,25,50,100") from None
    from gates.rollout import RolloutError, check_steps

    try:
        return check_steps(found)
    except RolloutError as exc:
        raise ValueError(str(exc)) from None


def _known() -> tuple[type[Exception], ...]:
    from gates.errors import GateError
    from registry.predictionlog import PredictionLogError

    return (GateError, PredictionLogError)
