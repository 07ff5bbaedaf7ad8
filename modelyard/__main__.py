"""`python -m modelyard`: the same as the `modelyard` command."""

from modelyard.cli import main

main()
