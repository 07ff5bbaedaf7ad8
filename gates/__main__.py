"""`python -m gates`: the same as `modelyard gate`."""

from gates.cli import main

main()
