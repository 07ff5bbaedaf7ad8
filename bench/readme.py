"""The README's measured figures, written from bench/results/*.json.

    .venv/bin/python -m bench.readme           # rewrite every block of README.md
    .venv/bin/python -m bench.readme --check   # exit 1 with a diff when a block is stale

A block is the text between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`; NAME says which
figures go there (BLOCKS). The figures are computed by bench/analysis.py from the raw results
each file records, so the README, `--show` and the benchmarks' own output agree. The prose
around the blocks quotes no measured number: a number in the README comes from a block.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench import analysis
from bench.analysis import (
    HANDWRITTEN,
    HELLO,
    MLFLOW,
    MODELYARD,
    MODELYARD_DEFAULT,
    MODELYARD_UNBATCHED,
    MODELYARD_V2,
    TORCH,
    Goal,
)

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "bench" / "results"
MARKER = re.compile(
    r"<!-- bench:(?P<name>[a-z0-9-]+) -->\n(?P<body>.*?)<!-- /bench:(?P=name) -->", re.DOTALL
)
MODELS = {
    "cancer-classifier": ("demo classifier", "contract pyfunc"),
    "logistic-20": ("logistic regression", "sklearn flavour, 20 features"),
}
"""The throughput benchmark's models: short name, and what they are."""
PATHS = {MODELYARD: "modelyard, pinned path", MODELYARD_DEFAULT: "modelyard, `/invocations`"}
NAMES = {
    HANDWRITTEN: "the hand-written app",
    MODELYARD: "modelyard's pinned path",
    MODELYARD_DEFAULT: "its `/invocations`",
}
VERDICT = {True: "met", False: "**not met**", None: "info"}


class Results:
    """The results files of a directory, each read once."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._read: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._read:
            self._read[name] = json.loads((self.directory / f"{name}.json").read_text())
        return self._read[name]


# -- formatting ----------------------------------------------------------------------------------


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def rps(value: float) -> str:
    return f"{value:,.0f}"


def ms(value: float) -> str:
    """Milliseconds: one decimal below 10, whole numbers above."""
    return f"{value:.1f}" if value < 10 else f"{value:,.0f}"


def ratio_range(values: Iterable[float]) -> str:
    return analysis.spread(values, 2, "x")


def where(model: str, rows: int, concurrencies: Iterable[int], bodies: bool = True) -> str:
    """`demo classifier 1-row c=1, 8, 32`."""
    body = f" {rows}-row" if bodies else ""
    return f"{MODELS[model][0]}{body} c={', '.join(str(c) for c in sorted(concurrencies))}"


def throughput_models(results: Results) -> list[str]:
    return [model for model in MODELS if model in results["serving"]]


# -- throughput ----------------------------------------------------------------------------------


def serving_table(results: Results) -> str:
    """Conditions, then req/s and p99 of every server per model, body and concurrency."""
    serving = results["serving"]
    models = throughput_models(results)
    first = serving[models[0]]
    config, machine = first["config"], first["machine"]
    versions = machine["versions"]
    repeats = {MODELS[m][0]: serving[m]["config"]["repeats"] for m in models[1:]}
    others = "".join(
        f", {n} for the {name}" for name, n in repeats.items() if n != config["repeats"]
    )
    intro = (
        f"On {machine['cpu_count']} CPUs ({machine['cpu_model']}), Python {machine['python']}, "
        f"MLflow {versions['mlflow']}, uvicorn {versions['uvicorn']}, load average "
        f"{machine['loadavg_at_start'][0]:.1f} at the start: {config['repeats']} interleaved "
        f"repetitions{others} of {config['duration_s']} s at "
        f"{', '.join(str(c) for c in config['concurrencies'])} connections; median req/s and "
        "median p99 (ms) per cell:"
    )
    servers = [MLFLOW, HANDWRITTEN, MODELYARD, MODELYARD_DEFAULT]
    header = [
        "model, body, connections",
        "`mlflow models serve`",
        "hand-written",
        PATHS[MODELYARD],
        PATHS[MODELYARD_DEFAULT],
        "hello-world (req/s)",
    ]
    lines = []
    for model in models:
        medians = analysis.medians(serving[model]["runs"])
        by_key = {(m["server"], m["rows"], m["concurrency"]): m for m in medians}
        cells = sorted({(rows, c) for _, rows, c in by_key})
        for i, (rows, c) in enumerate(cells):
            name, what = MODELS[model]
            label = f"{name} ({what})" if i == 0 else name
            row = [f"{label}, {rows} row{'s' if rows > 1 else ''}, c={c}"]
            for server in servers:
                m = by_key[(server, rows, c)]
                row.append(f"{rps(m['rps'])}, {ms(m['p99_ms'])}")
            hello = by_key.get((HELLO, rows, c))
            row.append(rps(hello["rps"]) if hello else "-")
            lines.append(row)
    return f"{intro}\n\n{table(header, lines)}"


def serving_ratios(results: Results) -> str:
    """modelyard's req/s over the references' per model and body, and start-to-ready."""
    serving = results["serving"]
    models = throughput_models(results)
    columns = [(model, rows) for model in models for rows in analysis.BODY_ROWS]
    header = ["median req/s, range over concurrencies"] + [
        f"{MODELS[model][0]}, {rows} row{'s' if rows > 1 else ''}" for model, rows in columns
    ]
    ratio_rows = {
        model: analysis.ratios(analysis.medians(serving[model]["runs"])) for model in models
    }
    lines = []
    for reference, reference_name in ((HANDWRITTEN, "hand-written"), (MLFLOW, f"`{MLFLOW}`")):
        for server in (MODELYARD, MODELYARD_DEFAULT):
            row = [f"{PATHS[server]} / {reference_name}"]
            for model, rows in columns:
                row.append(
                    ratio_range(
                        r["rps"]
                        for r in ratio_rows[model]
                        if r["server"] == server
                        and r["reference"] == reference
                        and r["rows"] == rows
                    )
                )
            lines.append(row)
    ready = {
        model: analysis.readiness(r["seconds"], r["plain_command"])
        for model in models
        if (r := serving[model]["readiness"])
    }
    text = table(header, lines)
    if ready:
        repeats = max(len(r["seconds"][MODELYARD]) for r in ready.values())
        parts = [f"{r['ratio']:.2f}x ({MODELS[model][0]})" for model, r in ready.items()]
        text += (
            f"\n\nFrom process start to `/health/ready` modelyard takes {' and '.join(parts)} "
            "the time a fresh process takes to import mlflow and load the same model (medians "
            f"of {repeats} starts)."
        )
    return text


def _goal_cell(verdicts: Sequence[Mapping[str, Any]], bodies: bool) -> str:
    """How one server did on one goal over every model, body and concurrency."""
    if not verdicts:
        return "-"
    met = [v for v in verdicts if v["met"]]
    missed = [v for v in verdicts if not v["met"]]
    if len(verdicts) == 1:
        v = verdicts[0]
        return f"{'met' if v['met'] else '**missed**'} ({v['measured']:.2f}x)"
    if not missed:
        every = "both" if len(verdicts) == 2 else f"all {len(verdicts)}"
        return f"met in {every} ({ratio_range(v['measured'] for v in met)})"
    groups: dict[tuple[str, int], list[Mapping[str, Any]]] = defaultdict(list)
    for v in missed:
        groups[(v["model"], v["rows"])].append(v)
    where_ = "; ".join(
        f"{where(model, rows, (v['concurrency'] for v in vs), bodies)} "
        f"({ratio_range(v['measured'] for v in vs)})"
        for (model, rows), vs in groups.items()
    )
    return f"**missed** in {len(missed)} of {len(verdicts)}: {where_}" + (
        f"; met elsewhere ({ratio_range(v['measured'] for v in met)})" if met else ""
    )


def _verdicts(results: Results) -> list[dict[str, Any]]:
    """Every throughput verdict of every model, each naming its model."""
    serving = results["serving"]
    out = []
    for model in throughput_models(results):
        section = serving[model]
        ready = section["readiness"]
        if ready is not None:
            ready = analysis.readiness(ready["seconds"], ready["plain_command"])
        figures = analysis.throughput(section["runs"], ready)
        out += [v | {"model": model} for v in figures["goals"]]
    return out


def serving_goals(results: Results) -> str:
    """Each goal per modelyard path, and where `/invocations` alone misses a p99 goal."""
    verdicts = _verdicts(results)
    texts = list(dict.fromkeys(v["goal"] for v in verdicts))
    bounds = {bound.text(): bound for bound in analysis.RATIO_BOUNDS}
    lines = []
    for text in texts:
        bodies = text not in bounds or len(bounds[text].rows) > 1
        row = [text]
        for server in (MODELYARD, MODELYARD_DEFAULT):
            mine = [v for v in verdicts if v["goal"] == text and v["server"] == server]
            row.append(_goal_cell(mine, bodies))
        lines.append(row)
    text = table(["goal", PATHS[MODELYARD], PATHS[MODELYARD_DEFAULT]], lines)
    pinned = {
        (v["model"], v["goal"], v["rows"], v["concurrency"]): v
        for v in verdicts
        if v["server"] == MODELYARD
    }
    alone = [
        v
        for v in verdicts
        if v["server"] == MODELYARD_DEFAULT
        and v["goal"].startswith("p99")
        and not v["met"]
        and pinned[(v["model"], v["goal"], v["rows"], v["concurrency"])]["met"]
    ]
    if alone:
        cases = "; ".join(
            f"{where(v['model'], v['rows'], [v['concurrency']])}: {v['measured']:.2f}x "
            f"{bounds[v['goal']].reference} against a bound of {v['bound']:g}x (pinned path "
            f"{pinned[(v['model'], v['goal'], v['rows'], v['concurrency'])]['measured']:.2f}x)"
            for v in alone
        )
        text += (
            f"\n\n`/invocations` misses its own p99 goal where the pinned path meets it in "
            f"{len(alone)} case{'s' if len(alone) > 1 else ''}: {cases}."
        )
    return text


def serving_tails(results: Results) -> str:
    """At 32 connections: every run's p99, how many pass TAIL_MS, and the p90 beside them."""
    serving = results["serving"]
    servers = (HANDWRITTEN, MODELYARD, MODELYARD_DEFAULT)
    header = ["c=32, p99 of each run (ms)"] + [
        "hand-written" if s == HANDWRITTEN else PATHS[s] for s in servers
    ]
    lines = []
    over: dict[str, list[int]] = defaultdict(list)
    p90: dict[str, list[float]] = defaultdict(list)
    for model in throughput_models(results):
        tails = analysis.tails(serving[model]["runs"], 32, servers)
        by_key = {(t["rows"], t["server"]): t for t in tails}
        for rows in sorted({t["rows"] for t in tails}):
            row = [f"{MODELS[model][0]}, {rows} row{'s' if rows > 1 else ''}"]
            for server in servers:
                t = by_key[(rows, server)]
                over[server] += [t["over"], t["runs"]]
                p90[server] += t["p90_ms"]
                row.append(
                    f"{', '.join(ms(x) for x in t['p99_ms'])} ({t['over']} of {t['runs']} "
                    f"over {analysis.TAIL_MS:g})"
                )
            lines.append(row)
    summary = ", ".join(f"{NAMES[s]} {sum(over[s][::2])} of {sum(over[s][1::2])}" for s in servers)
    p90s = ", ".join(f"{NAMES[s]} {analysis.spread(p90[s], 0, ' ms')}" for s in servers)
    text = (
        f"{table(header, lines)}\n\nRuns at c=32 whose p99 passed {analysis.TAIL_MS:g} ms: "
        f"{summary}. The p90 of the same runs: {p90s}."
    )
    evidence = analysis.tail_evidence(serving)
    if not evidence:
        return text + (
            " These runs recorded no per-core times (an older run of the benchmark), so the "
            "tails cannot be attributed from them."
        )
    return text + "\n\n" + tails_attribution(evidence)


def tails_attribution(evidence: Mapping[str, Any]) -> str:
    """Where the cores' time went in the runs with a tail, against the others."""

    def percent(share: float | None) -> str:
        return analysis.fmt(None if share is None else share * 100, "%", 0)

    def shares(cores: Mapping[str, float | None]) -> str:
        return ", ".join(
            f"{label} {percent(cores[key])}"
            for key, label in (
                ("server_core_others", "others on the server's core"),
                ("server_core_steal", "stolen there"),
                ("load_core_others", "others on wrk's core"),
                ("load_core_steal", "stolen there"),
            )
        )

    own = evidence["modelyard_over_tail"]
    inside = [o["server_share_over_tail"] for o in own if o["server_share_over_tail"] is not None]
    text = (
        f"Where the cores' time went (medians): in the {evidence['over_tail']} of "
        f"{evidence['runs']} runs at c={evidence['concurrency']} with a tail, "
        f"{shares(evidence['cores_median_over_tail'])}; in the rest, "
        f"{shares(evidence['cores_median_rest'])}."
    )
    if inside:
        text += (
            f" In modelyard's runs with a tail, its own histogram puts "
            f"{analysis.spread((x * 100 for x in inside), 1, '%')} of requests over "
            f"{analysis.TAIL_MS:g} ms from body read to response."
        )
    return text


def serving_batching(results: Results) -> str:
    """The serving goals, then the PyTorch version batched and unbatched, and the demo
    classifier on `/v2/models/{name}/infer` against `/invocations`, when measured."""
    serving = results["serving"]
    text = goals_table(analysis.serving_goals(serving))
    if TORCH in serving:
        medians = analysis.medians(serving[TORCH]["runs"])
        by_key = {(m["server"], m["concurrency"]): m for m in medians}
        lines = []
        for c in sorted({c for _, c in by_key}):
            mine, theirs = by_key.get((MODELYARD, c)), by_key.get((MODELYARD_UNBATCHED, c))
            if mine is None or theirs is None:
                continue
            lines.append(
                [
                    str(c),
                    f"{rps(mine['rps'])}, {mine['p50_ms']:.2f}, {ms(mine['p99_ms'])}",
                    f"{rps(theirs['rps'])}, {theirs['p50_ms']:.2f}, {ms(theirs['p99_ms'])}",
                    f"{mine['rps'] / theirs['rps']:.2f}x",
                ]
            )
        header = ["connections", "batched: req/s, p50, p99 ms", "unbatched", "req/s ratio"]
        n = serving[TORCH]["config"]["repeats"]
        text += (
            f"\n\nThe PyTorch version, 1-row body, medians of {n} run{'s' if n > 1 else ''}:"
            f"\n\n{table(header, lines)}"
        )
    demo = serving[next(iter(MODELS))]
    cells = {(m["server"], m["rows"], m["concurrency"]): m for m in analysis.medians(demo["runs"])}
    pairs = sorted(
        (
            (rows, c, m, cells[(MODELYARD_DEFAULT, rows, c)])
            for (server, rows, c), m in cells.items()
            if server == MODELYARD_V2 and (MODELYARD_DEFAULT, rows, c) in cells
        ),
        key=lambda pair: pair[:2],
    )
    if pairs:
        header = ["body, connections", "`/v2/.../infer` req/s, p99 ms", "`/invocations`", "ratio"]
        lines = [
            [
                f"{rows} row{'s' if rows > 1 else ''}, c={c}",
                f"{rps(v2['rps'])}, {ms(v2['p99_ms'])}",
                f"{rps(inv['rps'])}, {ms(inv['p99_ms'])}",
                f"{v2['rps'] / inv['rps']:.2f}x",
            ]
            for rows, c, v2, inv in pairs
        ]
        text += f"\n\nThe demo classifier on both protocols, same rows:\n\n{table(header, lines)}"
    return text


def serving_workers(results: Results) -> str:
    """The multi-worker check: every server's medians, and which stalled."""
    section = results["serving"]["multi_worker"]
    medians = analysis.with_stalls(analysis.medians(section["runs"]))
    intro = (
        f"{section['workers']} workers sharing core 0, 1-row body, keep-alive connections, "
        f"{section['repeats']} repetitions of {section['duration_s']} s; medians:"
    )
    header = ["server", "connections", "req/s", "p50 ms", "p99 ms", "CPU ms per request"]
    lines = [
        [
            m["server"] + (" (**delayed-ACK stall**)" if m["delayed_ack_stall"] else ""),
            str(m["concurrency"]),
            rps(m["rps"]),
            f"{m['p50_ms']:.2f}",
            f"{m['p99_ms']:.1f}",
            f"{m['cpu_us_per_request'] / 1000:.2f}",
        ]
        for m in sorted(medians, key=lambda m: m["concurrency"])
    ]
    return f"{intro}\n\n{table(header, lines)}"


# -- swap and gate -------------------------------------------------------------------------------


def goals_table(goals: Sequence[Goal]) -> str:
    return table(
        ["", "goal", "measured", "bound", "verdict"],
        [[g.id, g.text, g.measured, g.bound, VERDICT[g.met]] for g in goals],
    )


def swap_table(results: Results) -> str:
    """Conditions, then every goal of the swap benchmark."""
    swap = results["swap"]
    meta, machine = swap["meta"], swap["meta"]["machine"]
    goals = analysis.swap_goals(swap["config"], swap["parts"])
    intro = (
        f"A full run took {meta['duration_s'] / 60:.1f} min on {machine['cpus']} CPUs, load "
        f"average {machine['loadavg_at_start'][0]:.1f} at the start (MLflow {meta['mlflow']}):"
    )
    return f"{intro}\n\n{goals_table(goals)}"


def gate_table(results: Results) -> str:
    """Conditions, then every goal of the gate benchmark."""
    gate = results["gate"]
    machine = gate["machine"]
    intro = (
        f"On {machine['cores']} cores shared with other work (load average "
        f"{machine['load_average_before'][0]:.1f} before, "
        f"{machine['load_average_after'][0]:.1f} after), the run took "
        f"{gate['bench_seconds'] / 60:.1f} min:"
    )
    return f"{intro}\n\n{goals_table(analysis.gate_goals(gate))}"


def gate_random_forest(results: Results) -> str:
    """What failed when the seed study retrains a random forest."""
    study = results["gate-random-forest"]["seed_study"]
    counts = analysis.failing_checks(study["runs"])
    regression = [name for name in counts if " vs " in name]
    if len(counts) == 1:
        (name,) = counts
        which = f"every one of them only on `{name}`"
    else:
        which = "on " + ", ".join(f"`{name}` ({n})" for name, n in counts.items())
    if counts and not regression:
        which += ", an absolute bound (no regression check failed)"
    return (
        f"With `--config random-forest` (`bench/results/gate-random-forest.json`), "
        f"{study['failed']} of {study['candidates']} seed retrains failed, {which}."
    )


def experiment_table(results: Results) -> str:
    """Conditions, then every goal of the prediction log and experiment benchmark."""
    from bench import experiment

    found = results["experiment"]
    meta = found["meta"]
    intro = (
        f"A full run took {meta['duration_s'] / 60:.1f} min, load average "
        f"{meta['loadavg_at_start'][0]:.1f} at the start and {meta['loadavg_at_end'][0]:.1f} "
        f"at the end (MLflow {meta['mlflow']}):"
    )
    return f"{intro}\n\n{goals_table(experiment.goals(found['config'], found['parts']))}"


def rollout_table(results: Results) -> str:
    """Conditions, then every goal of the rollout benchmark."""
    from bench import rollout

    found = results["rollout"]
    meta = found["meta"]
    intro = (
        f"A full run took {meta['duration_s'] / 60:.1f} min, load average "
        f"{meta['loadavg_at_start'][0]:.1f} at the start and {meta['loadavg_at_end'][0]:.1f} "
        f"at the end (MLflow {meta['mlflow']}):"
    )
    return f"{intro}\n\n{goals_table(rollout.goals(found['config'], found['parts']))}"


BLOCKS: dict[str, Callable[[Results], str]] = {
    "serving": serving_table,
    "serving-ratios": serving_ratios,
    "serving-goals": serving_goals,
    "serving-tails": serving_tails,
    "serving-batching": serving_batching,
    "serving-workers": serving_workers,
    "swap": swap_table,
    "gate": gate_table,
    "gate-random-forest": gate_random_forest,
    "experiment": experiment_table,
    "rollout": rollout_table,
}


def render(text: str, results: Results) -> str:
    """`text` with every block rewritten from `results`; every block must appear once."""
    names = [m["name"] for m in MARKER.finditer(text)]
    unknown = sorted(set(names) - set(BLOCKS))
    missing = sorted(set(BLOCKS) - set(names))
    repeated = sorted({n for n in names if names.count(n) > 1})
    if unknown or missing or repeated:
        raise ValueError(
            f"README blocks: unknown {unknown}, missing {missing}, repeated {repeated}"
        )

    def block(found: re.Match[str]) -> str:
        name = found["name"]
        return f"<!-- bench:{name} -->\n\n{BLOCKS[name](results)}\n\n<!-- /bench:{name} -->"

    return MARKER.sub(block, text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 if stale")
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--results", type=Path, default=RESULTS, help="results directory")
    args = parser.parse_args(argv)
    text = args.readme.read_text()
    try:
        rendered = render(text, Results(args.results))
    except ValueError as exc:
        print(f"error: {args.readme}: {exc}", file=sys.stderr)
        return 2
    if rendered == text:
        print(f"{args.readme}: every block matches {args.results}")
        return 0
    if args.check:
        diff = difflib.unified_diff(
            text.splitlines(keepends=True),
            rendered.splitlines(keepends=True),
            f"{args.readme} (as committed)",
            f"{args.readme} (from {args.results})",
        )
        sys.stdout.writelines(diff)
        print(f"\n{args.readme} is stale: run .venv/bin/python -m bench.readme", file=sys.stderr)
        return 1
    args.readme.write_text(rendered)
    print(f"rewrote the blocks of {args.readme} from {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
