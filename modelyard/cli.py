"""The `modelyard` command: one entry point for every subcommand."""

import logging
import time
from typing import Annotated

import typer
from pydantic import ValidationError

from gates.cli import gate
from gates.experiment_cli import experiment_app, feedback_app
from gates.rollout_cli import rollout_app
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
app.add_typer(rollout_app, name="rollout")
for command in (serve, gate, promote, rollback, history):
    app.command()(command)
demo_app = typer.Typer(help="Try the platform on the embedded stack.", no_args_is_help=True)
app.add_typer(demo_app, name="demo")


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
            env_file = stack.write_env_file(serving_url)
            typer.echo(f"  prediction log  {stack.client_env()['MODELYARD_PREDICTION_LOG']}")
            typer.echo(f"in another shell: source {env_file}; modelyard demo traffic")
            typer.echo("press Ctrl-C to stop")
            wait_forever()
    except StartupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        typer.echo("stopped")


@demo_app.command("traffic")
def demo_traffic(
    requests: Annotated[int, typer.Option(min=1, help="Requests to send.")] = 2_000,
    label_delay: Annotated[
        float, typer.Option(min=0, help="Seconds before the true labels are posted.")
    ] = 5.0,
    model: Annotated[str, typer.Option(help="The classifier to send rows to.")] = (
        "cancer-classifier"
    ),
    staging_share: Annotated[
        float,
        typer.Option(min=0, max=100, help="Percent to staging, if the model has no split yet."),
    ] = 50.0,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Requests at once.")] = 8,
    url: Annotated[
        str, typer.Option(envvar="MODELYARD_SERVING_URL", help="The serving layer's URL.")
    ] = "http://127.0.0.1:8000",
    tracking_uri: Annotated[
        str, typer.Option(envvar="MLFLOW_TRACKING_URI", help="The MLflow server.")
    ] = "http://127.0.0.1:5000",
) -> None:
    """Send holdout rows with routing keys through the running server, then post their true
    labels as feedback: an A/B test for `modelyard experiment report` to judge."""
    from modelyard import traffic_demo
    from registry.client import connect
    from registry.errors import RegistryUnavailable

    url = url.rstrip("/")
    try:
        traffic_demo.ensure_split(connect(tracking_uri), url, model, staging_share, typer.echo)
        typer.echo(f"sending {requests} requests to {url} ({concurrency} at once)")
        sent = traffic_demo.send(url, model, requests, concurrency, typer.echo)
        statuses = ", ".join(f"{n} x {code}" for code, n in sorted(sent.statuses.items()))
        typer.echo(f"answered: {statuses}")
        typer.echo(f"posting {len(sent.labels)} labels in {label_delay:g} s")
        time.sleep(label_delay)
        accepted = traffic_demo.post_labels(url, model, sent.labels)
    except (traffic_demo.DemoError, RegistryUnavailable) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"{accepted} labels accepted. Next: modelyard experiment report {model}")


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
