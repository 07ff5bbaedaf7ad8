"""`python -m registry`: gate, promote, rollback, history (the same as under `modelyard`)."""

from registry.cli import app

app(prog_name="python -m registry")
