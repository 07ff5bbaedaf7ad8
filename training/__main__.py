"""`python -m training`: the same as `modelyard train`."""

from training.cli import app

app(prog_name="python -m training")
