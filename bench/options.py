"""The command line and the record of the benchmarks that run in parts (swap, hostile,
resilience): their options, the run's record, its results file and the exit code."""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, Generic, TypeVar

from bench import report
from bench.analysis import Goal

Config = TypeVar("Config")
Judge = Callable[[Mapping[str, Any], Mapping[str, Any]], list[Goal]]
"""A benchmark's goals, judged from its recorded configuration and parts alone."""


@dataclass
class Run(Generic[Config]):
    """Everything a run records: its configuration, conditions, and each part's measurements."""

    config: Config
    meta: dict[str, Any] = field(default_factory=dict)
    parts: dict[str, Any] = field(default_factory=dict)


def parse_args(
    argv: Sequence[str] | None,
    description: str,
    default: Config,
    quick: Mapping[str, Any],
    results: Path,
    parts: Sequence[str],
) -> tuple[Config, argparse.Namespace]:
    """The run's configuration (`default`, changed by `quick` with --quick, limited to the
    parts named by --only) and the parsed options, `output` filled in."""
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
    if args.output is None:
        quick_output = Path(tempfile.gettempdir()) / f"modelyard-{results.stem}-quick.json"
        args.output = quick_output if args.quick else results
    return cfg, args


def show(path: Path, goals: Judge) -> int:
    """Print the goals of a results file, judged again from its recorded parts."""
    results = json.loads(path.read_text())
    print(report.goal_table(goals(results["config"], results["parts"])))
    return 0


def quiet_logs() -> None:
    """Progress lines with the time of day; MLflow, its clients and warnings kept quiet."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("mlflow", "urllib3", "botocore", "alembic", "registry", "training", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"


def conditions() -> dict[str, Any]:
    """When and how a run started: the time, the command line, Python's and MLflow's versions."""
    return {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "python": platform.python_version(),
        "mlflow": package_version("mlflow"),
    }


def run_parts(
    name: str,
    run: Run[Config],
    args: argparse.Namespace,
    execute: Callable[[Run[Config], Path], None],
    goals: Judge,
    **meta: Any,
) -> int:
    """`execute` the run in a fresh work directory (kept with --keep), recording `meta` and
    the conditions; then its goals judged, printed and written to --output. 0 unless a goal
    was not met, else 1."""
    run.meta = conditions() | meta | {"loadavg_at_start": list(os.getloadavg())}
    began = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix=f"modelyard-{name}-"))
    try:
        execute(run, workdir)
    finally:
        run.meta["duration_s"] = time.monotonic() - began
        run.meta["loadavg_at_end"] = list(os.getloadavg())
        run.meta["workdir"] = str(workdir) if args.keep else None
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    judged = write_results(run, args.output, goals)
    print()
    print(report.goal_table(judged))
    summary = report.goal_summary(judged)
    print(f"\n{summary}; {run.meta['duration_s']:.0f} s; results: {args.output}")
    return exit_code(judged)


def write_results(run: Run[Any], output: Path, goals: Judge) -> list[Goal]:
    """Judge the run's goals, write them with its meta, config and parts to `output`."""
    config = asdict(run.config)
    judged = goals(config, run.parts)
    document = {
        "meta": run.meta,
        "config": config,
        "goals": [asdict(g) for g in judged],
        "parts": run.parts,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(to_json(document) + "\n")
    return judged


def exit_code(goals: Sequence[Goal]) -> int:
    """0 when no goal was missed (reported-only goals count as not missed), else 1."""
    return 0 if all(g.met is not False for g in goals) else 1


def to_json(value: Any, depth: int = 0) -> str:
    """Indented JSON, except that a list of plain values stays on one line."""
    pad, inner = " " * depth, " " * (depth + 1)
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(str(k))}: {to_json(v, depth + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, (list, tuple)) and value:
        if all(not isinstance(v, (dict, list, tuple)) for v in value):
            return json.dumps(list(value), default=str)
        return "[\n" + ",\n".join(inner + to_json(v, depth + 1) for v in value) + f"\n{pad}]"
    return json.dumps(value, default=str)
