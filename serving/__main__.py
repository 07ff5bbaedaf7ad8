"""`python -m serving`: the same as `modelyard serve`."""

from serving.cli import main

main()
