"""`modelyard keys`: issue API keys into a keys file and list what each may do."""

import os
from pathlib import Path
from typing import Annotated

import typer
import yaml
from pydantic import ValidationError

from serving import auth

app = typer.Typer(help="API keys of the prediction endpoints.", no_args_is_help=True)

KeysFile = Annotated[
    Path,
    typer.Option("--file", envvar="MODELYARD_API_KEYS_FILE", help="The keys file (created 0600)."),
]


@app.command()
def add(
    name: Annotated[str, typer.Argument(help="Name of the key, shown in logs and metrics.")],
    file: KeysFile,
    models: Annotated[str, typer.Option(help="Models it may call, `a,b`; `*` for all.")] = "*",
    pin: Annotated[bool, typer.Option(help="May pin aliases other than the required one.")] = False,
    max_concurrency: Annotated[
        int | None, typer.Option(min=1, help="Requests in flight at most, per process.")
    ] = None,
    rate: Annotated[
        float | None, typer.Option(min=0, help="Requests per second, per process.")
    ] = None,
) -> None:
    """Issue a key: append its salted hash to the file and print the key, once."""
    text = file.read_text(encoding="utf-8") if file.exists() else ""
    try:
        existing = auth.parse_keys(text, file)
        if any(k.name == name for k in existing):
            raise auth.KeyFileError(f"{file} already has a key named '{name}'")
        key, entry = auth.issue(
            name,
            tuple(m.strip() for m in models.split(",") if m.strip()),
            pin=pin,
            max_concurrency=max_concurrency,
            rate_per_s=rate,
        )
        separator = "" if not text or text.endswith("\n") else "\n"
        addition = separator + yaml.safe_dump(
            [entry.model_dump(mode="json", exclude_none=True)], sort_keys=False
        )
        if len(auth.parse_keys(text + addition, file)) != len(existing) + 1:
            raise auth.KeyFileError(f"{file} is not a block list of keys: cannot append to it")
    except (auth.KeyFileError, ValidationError) as problem:
        typer.echo(f"error: {_first_line(problem)}", err=True)
        raise typer.Exit(2) from None
    descriptor = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(descriptor, "a", encoding="utf-8") as out:
        out.write(addition)
    typer.echo(f"added key '{name}' to {file}; it is shown once, here:", err=True)
    typer.echo(key)


@app.command("list")
def list_keys(file: KeysFile) -> None:
    """Every key's name and permissions (never a key)."""
    try:
        keys = auth.load_keys(file)
    except auth.KeyFileError as problem:
        typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{'name':<24} {'models':<32} {'pin':<4} {'max_concurrency':<16} rate_per_s")
    for key in keys:
        concurrency = "-" if key.max_concurrency is None else str(key.max_concurrency)
        rate = "-" if key.rate_per_s is None else f"{key.rate_per_s:g}"
        pins = "yes" if key.pin else "no"
        typer.echo(f"{key.name:<24} {','.join(key.models):<32} {pins:<4} {concurrency:<16} {rate}")


def _first_line(problem: Exception) -> str:
    if isinstance(problem, ValidationError):
        error = problem.errors()[0]
        return f"{'.'.join(map(str, error['loc']))}: {error['msg']}"
    return str(problem)
