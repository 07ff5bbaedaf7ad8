"""`modelyard promote|rollback|history` (also `python -m registry`).

Exit codes: 0 done; 1 refused (alias moved meanwhile, nothing to roll back); 2 could not do it
(unknown model, registry unreachable, the move's history event left unconfirmed). The reason
goes to stderr, never a traceback.
"""

import logging
import os
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from registry.client import bound_http_calls

if TYPE_CHECKING:
    from registry.history import Move

app = typer.Typer(
    help="Alias moves with history.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
logger = logging.getLogger(__name__)

Name = Annotated[str, typer.Argument(help="Registered model name.", show_default=False)]
AliasOption = Annotated[str, typer.Option("--alias", help="The alias to move.", show_default=False)]
Reason = Annotated[str, typer.Option(help="Why: recorded in the alias history.")]


@app.command()
def promote(
    name: Name,
    alias: AliasOption,
    version: Annotated[
        str | None, typer.Option(help="Move the alias to this version number.")
    ] = None,
    from_alias: Annotated[
        str | None, typer.Option(help="Move the alias to the version this alias names.")
    ] = None,
    expect: Annotated[
        str | None,
        typer.Option(
            help="Refuse unless the alias names this version now, and fail if another move "
            "overtakes this one (exit 1)."
        ),
    ] = None,
    reason: Reason = "",
) -> None:
    """Move an alias to a version, recording who, when, from, to and why."""
    if (version is None) == (from_alias is None):
        raise typer.BadParameter("give exactly one of --version and --from-alias")
    for option, value in (("--version", version), ("--expect", expect)):
        if value is not None and not value.isdigit():
            raise typer.BadParameter("a version number", param_hint=option)
    quiet_mlflow()
    from registry import history as alias_history
    from registry import versions
    from registry.client import connect
    from registry.errors import StaleAlias

    try:
        client = connect()
        if version is None:
            version = versions.resolve(client, name, str(from_alias)).version
            reason = reason or f"copied from alias '{from_alias}'"
        move = alias_history.promote(client, name, alias, version, expect=expect, reason=reason)
    except (StaleAlias, alias_history.AliasOvertaken) as exc:
        exit_with(str(exc), 1)
    except Exception as exc:
        exit_with(could_not("promote", exc), 2)
    if move is None:
        typer.echo(f"{name}@{alias} already names version {version}: nothing to do")
    else:
        typer.echo(f"{name}@{alias}: {move.from_version or '(none)'} -> {move.to_version}")


@app.command()
def rollback(name: Name, alias: AliasOption, reason: Reason = "") -> None:
    """Move an alias back to the version it named before its last recorded move."""
    quiet_mlflow()
    from registry import history as alias_history
    from registry.client import connect
    from registry.errors import NothingToRollBack, StaleAlias

    try:
        move = alias_history.rollback(connect(), name, alias, reason=reason)
    except (NothingToRollBack, StaleAlias) as exc:
        exit_with(str(exc), 1)
    except Exception as exc:
        exit_with(could_not("roll back", exc), 2)
    typer.echo(f"{name}@{alias}: {move.from_version or '(none)'} -> {move.to_version} (rollback)")


@app.command()
def history(
    name: Name,
    alias: Annotated[str | None, typer.Option(help="Only this alias.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Show the latest N moves.")] = 20,
) -> None:
    """Print the recorded alias moves of a model, newest last."""
    quiet_mlflow()
    from registry import history as alias_history
    from registry.client import connect

    try:
        aliases, moves = alias_history.read(connect(), name)
    except Exception as exc:
        exit_with(could_not("read the history", exc), 2)
    shown = [m for m in moves if alias is None or m.alias == alias][-limit:]
    rows = [("when (UTC)", "alias", "from", "to", "kind", "actor", "reason")]
    rows += [
        (m.at, m.alias, m.from_version or "-", m.to_version or "-", _kind(m), m.actor, m.reason)
        for m in shown
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for *cells, reason in rows:
        typer.echo("  ".join([*(c.ljust(w) for c, w in zip(cells, widths, strict=True)), reason]))
    for each in sorted({alias} if alias else set(aliases) | {m.alias for m in moves}):
        drift = alias_history.unrecorded_move(moves, each, aliases.get(each))
        if drift is not None:
            recorded, actual = drift
            typer.echo(
                f"note: {each} names {actual or 'nothing'} but its last recorded move set "
                f"{recorded or 'nothing'}: moved outside modelyard (recorded on the next move)"
            )


def _kind(move: "Move") -> str:
    """The kind, and whether the move is unconfirmed or did not take place."""
    shown = {"applied": "", "pending": " (unconfirmed)", "not applied": " (not applied)"}
    return move.kind + shown[move.state]


def quiet_mlflow() -> None:
    """Entry point set-up: stdout kept for our own output (no run links or progress bars from
    MLflow), warnings on stderr, registry calls bounded (10 s, 2 retries)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    bound_http_calls(timeout_s=10, retries=2)


def could_not(what: str, exc: Exception, known: tuple[type[Exception], ...] = ()) -> str:
    """The reason to print: a known error's own message, else its type and text."""
    from registry.errors import RegistryError

    if isinstance(exc, (RegistryError, *known)):
        return str(exc)
    logger.debug("could not %s", what, exc_info=exc)
    return f"could not {what}: {type(exc).__name__}: {exc}"


def exit_with(message: str, code: int) -> NoReturn:
    """Print the error to stderr and exit with `code`."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)
