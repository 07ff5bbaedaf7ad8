"""The `modelyard` command: one entry point for every subcommand."""

import logging
import time
from typing import Annotated

import typer
from pydantic import ValidationError

from gates.cli import gate
from gates.experiment_cli import experiment_app, feedback_app
from registry.cli import history, promote, rollback
from registry.client import bound_http_calls
from serving.cli import serve
from serving.keys import app as keys_app
from training.cli import app as train_app

app = typer.Typer(
    help="MLflow-registry-backed model serving.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
app.add_typer(train_app, name="train")
app.add_typer(keys_app, name="keys")
app.add_typer(experiment_app, name="experiment")
app.add_typer(feedback_app, name="feedback")
for command in (serve, gate, promote, rollback, history):
    app.command()(command)


@app.command()
def up() -> None:
    """Run the embedded platform: object store, MLflow server, demo models, serving."""
    from modelyard.demo import seed_if_empty
    from modelyard.processes import StartupError
    from modelyard.settings import StackSettings
    from modelyard.stack import Stack, wait_forever

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    bound_http_calls(timeout_s=30, retries=2)
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
            serving_url = stack.start_serving()
            typer.echo(f"\nready in {time.monotonic() - started:.0f} s")
            typer.echo(f"  MLflow UI    {settings.tracking_uri}")
            typer.echo(f"  S3 endpoint  {settings.s3_endpoint}  (keys in {stack.home}/s3.json)")
            typer.echo(f"  serving      {serving_url}  (admin token in {stack.home}/admin.token)")
            typer.echo("press Ctrl-C to stop")
            wait_forever()
    except StartupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        typer.echo("stopped")


@app.command()
def status(
    url: Annotated[str, typer.Option(help="The serving layer's URL.")] = "http://127.0.0.1:8000",
) -> None:
    """What a running server serves: each model's aliases, versions, state and split."""
    import requests

    try:
        served = requests.get(f"{url.rstrip('/')}/models", timeout=5).json()
    except (requests.RequestException, ValueError) as exc:
        typer.echo(f"error: no serving layer answered at {url}: {type(exc).__name__}", err=True)
        raise typer.Exit(1) from exc
    if served.get("registry_error"):
        typer.echo(f"registry: {served['registry_error']}")
    for name, model in served["models"].items():
        split = model["traffic"]
        weights = ", ".join(f"{a} {w:g}" for a, w in split["weights"].items())
        state = "ready" if model["ready"] else "NOT READY"
        typer.echo(f"{name}  ({state}; split {weights} from {split['source']})")
        for alias, slot in model["aliases"].items():
            detail = slot["last_error"] or slot["note"] or ""
            target = f" -> loading v{slot['target']}" if slot["target"] else ""
            version = f"v{slot['version']}" if slot["version"] else "-"
            typer.echo(f"  {alias:<12} {version:<6} {slot['state']:<8}{target} {detail}".rstrip())


def _settings_error(exc: ValidationError) -> typer.Exit:
    for error in exc.errors():
        field = "_".join(str(part) for part in error["loc"]).upper()
        typer.echo(f"error: setting MODELYARD_{field}: {error['msg']}", err=True)
    return typer.Exit(2)


def main() -> None:
    """Console-script entry point."""
    app()
