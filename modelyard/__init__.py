"""The `modelyard` command line and the embedded default stack that ties the packages together."""
