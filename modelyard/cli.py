"""The `modelyard` command: one entry point for every subcommand."""

import logging
import time

import typer
from pydantic import ValidationError

from serving.cli import serve
from training.cli import app as train_app

app = typer.Typer(
    help="MLflow-registry-backed model serving.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
app.add_typer(train_app, name="train")
app.command()(serve)


@app.command()
def up() -> None:
    """Run the embedded platform: object store, MLflow server, demo models, serving."""
    from modelyard.demo import seed_if_empty
    from modelyard.processes import StartupError
    from modelyard.settings import StackSettings
    from modelyard.stack import Stack, wait_forever

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = StackSettings()
    except ValidationError as exc:
        raise _settings_error(exc) from exc
    started = time.monotonic()
    stack = Stack(settings, say=typer.echo)
    try:
        with stack.running():
            stack.check_ports()
            typer.echo(f"modelyard: state under {stack.home}")
            stack.start_object_store()
            stack.start_tracking_server()
            typer.echo("... checking the registry for models")
            seed_if_empty(settings.tracking_uri, typer.echo)
            typer.echo(f"\nready in {time.monotonic() - started:.0f} s")
            typer.echo(f"  MLflow UI    {settings.tracking_uri}")
            typer.echo(f"  S3 endpoint  {settings.s3_endpoint}  (keys in {stack.home}/s3.json)")
            typer.echo("  serving      not part of this build yet: the registry is served alone")
            typer.echo("press Ctrl-C to stop")
            wait_forever()
    except StartupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        typer.echo("stopped")


def _settings_error(exc: ValidationError) -> typer.Exit:
    for error in exc.errors():
        field = "_".join(str(part) for part in error["loc"]).upper()
        typer.echo(f"error: setting MODELYARD_{field}: {error['msg']}", err=True)
    return typer.Exit(2)


def main() -> None:
    """Console-script entry point."""
    app()
