"""The command-line options of the benchmarks that run in parts (hostile, resilience)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

Config = TypeVar("Config")


def parse_args(
    argv: Sequence[str] | None,
    description: str,
    default: Config,
    quick: Mapping[str, Any],
    results: Path,
    parts: Sequence[str],
) -> tuple[Config, argparse.Namespace]:
    """The run's configuration (`default`, changed by `quick` with --quick, limited to the
    parts named by --only) and the parsed options."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="smoke run; JSON to a temp file")
    parser.add_argument("--output", type=Path, help=f"results file (default {results})")
    parser.add_argument("--only", help=f"comma-separated parts of {','.join(parts)}")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--show", type=Path, metavar="FILE", help="print a results file's goals")
    args = parser.parse_args(argv)
    cfg = replace(default, **quick) if args.quick else default  # type: ignore[type-var]
    if args.only:
        chosen = tuple(p.strip() for p in args.only.split(",") if p.strip())
        if unknown := set(chosen) - set(parts):
            parser.error(f"unknown parts {sorted(unknown)}; choose from {', '.join(parts)}")
        cfg = replace(cfg, parts=chosen)  # type: ignore[type-var]
    return cfg, args
