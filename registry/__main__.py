"""`python -m registry`: promote, rollback, history (the same as under `modelyard`)."""

from registry.cli import app

app(prog_name="python -m registry")
