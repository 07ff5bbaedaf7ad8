"""From the benchmarks' raw measurements to their figures and goals. Pure functions.

Each benchmark measures and records raw results (wrk runs, timings, samples); the functions
here compute what is judged and reported from them: medians, ratios, tails and goals of the
throughput benchmark, the goals of the swap and gate benchmarks. bench/report.py renders them
for the terminal, bench/readme.py for the README, both from the same numbers.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Goal:
    """One judged goal: what is wanted, what was measured, the bound, and whether it was met.

    `met` is None for a figure reported for context, with no bound to meet.
    """

    id: str
    text: str
    measured: str
    bound: str
    met: bool | None


def fmt(value: float | None, unit: str = "", digits: int = 2) -> str:
    """`value` with `digits` decimals and `unit`, or n/a."""
    return "n/a" if value is None else f"{value:.{digits}f}{unit}"


def spread(values: Iterable[float], digits: int = 2, unit: str = "") -> str:
    """`low-high` of the values (one number when they agree at `digits` decimals)."""
    numbers = sorted(values)
    low, high = f"{numbers[0]:.{digits}f}", f"{numbers[-1]:.{digits}f}"
    return f"{low}{unit}" if low == high else f"{low}-{high}{unit}"


# -- serving (bench/serving.py -> bench/results/serving.json) ------------------------------------

DEMO, LOGISTIC, TORCH = "cancer-classifier", "logistic-20", "cancer-torch"
"""The benchmarked models: the demo classifier, a bare logistic regression (context), and the
demo classifier's PyTorch version (batching)."""
MLFLOW, HANDWRITTEN, HELLO = "mlflow models serve", "hand-written", "FastAPI hello-world"
MODELYARD, MODELYARD_DEFAULT = "modelyard", "modelyard /invocations"
MODELYARD_V2 = "modelyard /v2 infer"
"""modelyard's `/v2/models/{name}/infer` (Open Inference Protocol), on the same rows."""
MODELYARD_UNBATCHED = "modelyard unbatched"
"""modelyard with MODELYARD_BATCHING=off, the PyTorch version's own reference."""
SUBJECTS = (MODELYARD, MODELYARD_DEFAULT)
"""modelyard on its pinned path and on `/invocations` (the default model, A/B-routed)."""
REFERENCES = (MLFLOW, HANDWRITTEN, HELLO)
BODY_ROWS = (1, 100)


@dataclass(frozen=True, slots=True)
class RatioBound:
    """What a throughput goal asks: a bound on modelyard's median over a reference server's."""

    reference: str
    metric: str
    """"rps" (modelyard / reference >= bound) or "p99" (<= bound)."""
    bound: float
    rows: tuple[int, ...]

    def met(self, ratio: float) -> bool:
        """Whether `ratio` (modelyard / reference) meets the bound."""
        return ratio >= self.bound if self.metric == "rps" else ratio <= self.bound

    def text(self) -> str:
        """The goal in words, as the results record it."""
        sign = ">=" if self.metric == "rps" else "<="
        what = "req/s" if self.metric == "rps" else "p99 latency"
        bodies = " and ".join(f"{r}-row" for r in self.rows)
        return f"{what} {sign} {self.bound:g}x {self.reference}, {bodies} body"


RATIO_BOUNDS = (
    RatioBound(MLFLOW, "rps", 10, (1,)),
    RatioBound(MLFLOW, "p99", 0.1, (1,)),
    RatioBound(MLFLOW, "rps", 5, (100,)),
    RatioBound(HANDWRITTEN, "rps", 0.9, BODY_ROWS),
    RatioBound(HANDWRITTEN, "p99", 1.25, BODY_ROWS),
)
READY_BOUND = 1.5
"""modelyard's start-to-ready over a plain `mlflow.pyfunc.load_model` process's time."""
PLAIN_LOAD = "plain load_model"
STALL_MS = 30.0
"""A keep-alive p50 this high means responses wait for the client's delayed ACK (~40 ms)."""
TAIL_MS = 100.0
"""A run whose p99 is above this at 32 connections has a tail worth reporting."""


def medians(runs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per server, concurrency and body: the medians over repetitions, and the req/s range."""
    groups: dict[tuple[str, int, int], list[Mapping[str, Any]]] = defaultdict(list)
    for run in runs:
        groups[(run["server"], run["concurrency"], run["rows"])].append(run)
    return [
        {
            "server": server,
            "concurrency": c,
            "rows": rows,
            "runs": len(group),
            "rps": statistics.median(r["rps"] for r in group),
            "p50_ms": statistics.median(r["p50_ms"] for r in group),
            "p99_ms": statistics.median(r["p99_ms"] for r in group),
            "cpu_us_per_request": statistics.median(r["cpu_us_per_request"] for r in group),
            "server_core_share": statistics.median(r["server_core_share"] for r in group),
            "rps_min": min(r["rps"] for r in group),
            "rps_max": max(r["rps"] for r in group),
        }
        for (server, c, rows), group in groups.items()
    ]


def ratios(
    medians_: Sequence[Mapping[str, Any]],
    subjects: Sequence[str] = SUBJECTS,
    references: Sequence[str] = REFERENCES,
) -> list[dict[str, Any]]:
    """Each subject's medians over each reference's, per concurrency and body."""
    by_key = {(m["server"], m["concurrency"], m["rows"]): m for m in medians_}
    out = []
    for subject in subjects:
        for reference in references:
            for (server, c, rows), mine in by_key.items():
                theirs = by_key.get((reference, c, rows))
                if server != subject or theirs is None:
                    continue
                out.append(
                    {
                        "server": subject,
                        "reference": reference,
                        "concurrency": c,
                        "rows": rows,
                        "rps": mine["rps"] / theirs["rps"],
                        "p50": mine["p50_ms"] / theirs["p50_ms"],
                        "p99": mine["p99_ms"] / theirs["p99_ms"],
                        "cpu_per_request": mine["cpu_us_per_request"]
                        / theirs["cpu_us_per_request"],
                    }
                )
    return out


def readiness(seconds: Mapping[str, Sequence[float]], plain_command: str) -> dict[str, Any]:
    """Medians of start-to-ready per server, and modelyard's over the plain load's."""
    median_s = {name: statistics.median(values) for name, values in seconds.items()}
    return {
        "seconds": {name: list(values) for name, values in seconds.items()},
        "median_s": median_s,
        "ratio": median_s[MODELYARD] / median_s[PLAIN_LOAD],
        "plain_command": plain_command,
        "note": f"ratio = modelyard / {PLAIN_LOAD} (timed to load_model returning)",
    }


def ratio_goals(
    ratio_rows: Iterable[Mapping[str, Any]], ready: Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    """Every goal per server, concurrency and body: measured ratio, bound, met."""
    verdicts: list[dict[str, Any]] = []
    rows_ = list(ratio_rows)
    for goal in RATIO_BOUNDS:
        for r in rows_:
            if r["reference"] == goal.reference and r["rows"] in goal.rows:
                measured = r[goal.metric]
                verdicts.append(
                    {
                        "goal": goal.text(),
                        "server": r["server"],
                        "concurrency": r["concurrency"],
                        "rows": r["rows"],
                        "measured": round(measured, 3),
                        "bound": goal.bound,
                        "met": goal.met(measured),
                    }
                )
    if ready is not None:
        measured = ready["ratio"]
        verdicts.append(
            {
                "goal": f"start-to-ready <= {READY_BOUND:g}x a plain load_model process",
                "server": MODELYARD,
                "concurrency": None,
                "rows": None,
                "measured": round(measured, 3),
                "bound": READY_BOUND,
                "met": measured <= READY_BOUND,
            }
        )
    return verdicts


def throughput(
    runs: Sequence[Mapping[str, Any]], ready: Mapping[str, Any] | None
) -> dict[str, Any]:
    """One model's figures from its wrk runs and readiness: medians, ratios and goals."""
    medians_ = medians(runs)
    ratio_rows = ratios(medians_)
    goals = ratio_goals(ratio_rows, ready)
    return {
        "medians": medians_,
        "ratios": ratio_rows,
        "goals": goals,
        "goals_met": all(v["met"] for v in goals),
    }


def with_stalls(medians_: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The medians, each marked whether its p50 shows a delayed-ACK stall."""
    return [dict(m) | {"delayed_ack_stall": m["p50_ms"] >= STALL_MS} for m in medians_]


def tails(
    runs: Iterable[Mapping[str, Any]], concurrency: int = 32, servers: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Per body and server at `concurrency`: each run's p99 and p90, and how many p99s pass
    TAIL_MS."""
    groups: dict[tuple[int, str], list[Mapping[str, Any]]] = defaultdict(list)
    for run in runs:
        if run["concurrency"] == concurrency and (not servers or run["server"] in servers):
            groups[(run["rows"], run["server"])].append(run)
    return [
        {
            "rows": rows,
            "server": server,
            "p99_ms": [r["p99_ms"] for r in group],
            "p90_ms": [r["p90_ms"] for r in group],
            "over": sum(r["p99_ms"] > TAIL_MS for r in group),
            "runs": len(group),
        }
        for (rows, server), group in sorted(groups.items())
    ]


def serving_goals(results: Mapping[str, Any]) -> list[Goal]:
    """The serving benchmark's goals, from the recorded runs of every model alone. A goal whose
    runs the results lack (an older file) is reported as not measured."""

    def cell(model: str, server: str, rows: int, c: int) -> Mapping[str, Any] | None:
        runs = results.get(model, {}).get("runs", [])
        found = [
            m
            for m in medians(runs)
            if (m["server"], m["rows"], m["concurrency"]) == (server, rows, c)
        ]
        return found[0] if found else None

    def ratio_goal(
        id_: str,
        text: str,
        model: str,
        cells: tuple[str, str],
        where: tuple[int, int],
        metric: str,
        bound: float,
    ) -> Goal:
        mine, theirs = (cell(model, server, *where) for server in cells)
        sign = ">=" if metric == "rps" else "<="
        if mine is None or theirs is None:
            return Goal(id_, text, "not measured in this results file", f"{sign} {bound:g}x", None)
        ratio = mine[metric] / theirs[metric]
        unit = "req/s" if metric == "rps" else "ms"
        digits = 2 if metric == "p50_ms" else 1
        return Goal(
            id_,
            text,
            f"{ratio:.3f}x ({mine[metric]:,.{digits}f} vs {theirs[metric]:,.{digits}f} {unit})",
            f"{sign} {bound:g}x",
            ratio >= bound if metric == "rps" else ratio <= bound,
        )

    demo_cell = (1, 32)
    goals = [
        ratio_goal(
            "13a",
            f"demo classifier 1-row c=32: req/s, modelyard / `{MLFLOW}`",
            DEMO,
            (MODELYARD, MLFLOW),
            demo_cell,
            "rps",
            15,
        ),
        ratio_goal(
            "13b",
            f"demo classifier 1-row c=32: p99, modelyard / `{MLFLOW}`",
            DEMO,
            (MODELYARD, MLFLOW),
            demo_cell,
            "p99_ms",
            0.05,
        ),
        ratio_goal(
            "13c",
            "demo classifier 1-row c=32: req/s, modelyard / the hand-written app",
            DEMO,
            (MODELYARD, HANDWRITTEN),
            demo_cell,
            "rps",
            2,
        ),
        ratio_goal(
            "13d",
            "PyTorch version 1-row c=64: req/s, batched / unbatched",
            TORCH,
            (MODELYARD, MODELYARD_UNBATCHED),
            (1, 64),
            "rps",
            3,
        ),
        ratio_goal(
            "13e",
            "PyTorch version 1-row c=1: p50, batched / unbatched",
            TORCH,
            (MODELYARD, MODELYARD_UNBATCHED),
            (1, 1),
            "p50_ms",
            1.05,
        ),
    ]
    v2 = [
        (m["rows"], m["concurrency"], m["rps"] / other["rps"])
        for m in medians(results.get(DEMO, {}).get("runs", []))
        if m["server"] == MODELYARD_V2
        and (other := cell(DEMO, MODELYARD_DEFAULT, m["rows"], m["concurrency"])) is not None
    ]
    text = "demo classifier: req/s, `/v2/models/{name}/infer` / `/invocations`, same rows"
    if not v2:
        goals.append(Goal("13f", text, "not measured in this results file", ">= 0.9x", None))
    else:
        worst = min(v2, key=lambda v: v[2])
        goals.append(
            Goal(
                "13f",
                f"{text}, every body and concurrency",
                f"{spread([r for *_, r in v2], 3, 'x')} (lowest {worst[0]}-row c={worst[1]})",
                ">= 0.9x",
                worst[2] >= 0.9,
            )
        )
    return goals


TAIL_FIELDS = ("server_core_others", "server_core_steal", "load_core_others", "load_core_steal")
"""Where a run's cores went besides the server and wrk: bench/cores.py."""


def tail_evidence(results: Mapping[str, Any], concurrency: int = 32) -> dict[str, Any]:
    """For the runs at `concurrency`: how many had a p99 over TAIL_MS, and the medians of their
    cores' other use and steal against the other runs', with modelyard's own share of requests
    over TAIL_MS (its request-duration histogram) against wrk's p99. Empty for a file whose
    runs recorded no core times."""
    runs = [
        run
        for model in (DEMO, LOGISTIC, TORCH)
        for run in results.get(model, {}).get("runs", [])
        if run["concurrency"] == concurrency and "cores" in run
    ]
    if not runs:
        return {}
    over = [r for r in runs if r["p99_ms"] > TAIL_MS]
    under = [r for r in runs if r["p99_ms"] <= TAIL_MS]

    def typical(group: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
        return {
            name: round(statistics.median(r["cores"][name] for r in group), 4) if group else None
            for name in TAIL_FIELDS
        }

    own = [
        {
            "server": r["server"],
            "rows": r["rows"],
            "wrk_p99_ms": r["p99_ms"],
            "server_share_over_tail": server_share_over(r["server_latency_counts"], TAIL_MS),
        }
        for r in over
        if "server_latency_counts" in r
    ]
    return {
        "concurrency": concurrency,
        "runs": len(runs),
        "over_tail": len(over),
        "cores_median_over_tail": typical(over),
        "cores_median_rest": typical(under),
        "modelyard_over_tail": own,
    }


def server_share_over(counts: Mapping[str, float], bound_ms: float) -> float | None:
    """From cumulative histogram counts by bucket bound (seconds, as text): the share of
    requests that took longer than `bound_ms` inside the server."""
    total = counts.get("+Inf", 0.0)
    within = counts.get(f"{bound_ms / 1000:g}")
    if not total or within is None:
        return None
    return round(1 - within / total, 4)


# -- swap (bench/swap.py -> bench/results/swap.json) ---------------------------------------------

WITH_SHADOW, NO_SHADOW = "with-shadow", "no-shadow"
"""The two serving processes of the shadow-latency part."""
GROWN_ALIAS = "canary"


def swap_goals(config: Mapping[str, Any], parts: Mapping[str, Any]) -> list[Goal]:
    """Every goal of the swap benchmark, from the parts it measured."""
    goals: list[Goal] = []
    if "flapping" in parts:
        goals += _flapping_goals(config, parts["flapping"])
    propagation = parts.get("propagation", {})
    if "polling" in propagation:
        text = (
            f"alias moved -> first new answer, polling alone (poll {config['poll_interval_s']:g} s)"
        )
        goals.append(_propagation_goal("2a", text, propagation["polling"]))
    if "webhook" in propagation:
        poll = config["webhook_poll_interval_s"]
        text = f"alias moved -> first new answer, webhook (poll {poll:g} s)"
        goals.append(_propagation_goal("2b", text, propagation["webhook"]))
    if "memory" in parts:
        goals.append(_memory_goal(config, parts["memory"]))
    if "traffic" in parts:
        goals += _traffic_goals(config, parts["traffic"])
    if "shadow" in parts:
        goals += _shadow_goals(config, parts["shadow"])
    return goals


def _flapping_goals(config: Mapping[str, Any], part: Mapping[str, Any]) -> list[Goal]:
    over, never = part["answers_outside_window"], part["answers_from_never_named_version"]
    corrupt, order = part["corrupt_answers"], part["order"]
    shown = part["failure_shown_after_last_move_s"] is not None
    margin, recovery = part["window_margin_s"], part["recovery_first_answer_s"]

    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    return [
        Goal(
            "1a",
            f"failed requests while the alias moves {config['moves']}x (1/s), "
            f"{config['connections']} conns",
            f"{part['failed']} of {part['requests']}",
            "0",
            part["failed"] == 0,
        ),
        Goal(
            "1b",
            "answers from a version the alias named in [start - (poll + load), end]",
            f"{over} outside (max staleness {fmt(part['staleness_s']['max'], ' s')}), "
            f"{never} never named",
            f"margin {margin:.2f} s",
            over == 0 and never == 0 and corrupt == 0,
        ),
        Goal(
            "1c",
            "distinct versions, in answer order, a subsequence of the moves",
            f"{yes(order['subsequence'])} ({len(order['sequence'])} versions, "
            f"{order['stragglers']} stragglers; strict: {yes(order['strict_subsequence'])})",
            "subsequence",
            order["subsequence"],
        ),
        Goal(
            "1d",
            "corrupt target never answers; its failure shows in /models",
            f"{corrupt} answers; shown: {yes(shown)}",
            "0; yes",
            corrupt == 0 and shown,
        ),
        Goal(
            "1e",
            "move off the failed target -> first answer from the new version",
            fmt(recovery, " s"),
            f"<= poll + load = {margin:.2f} s",
            recovery is not None and recovery <= margin,
        ),
    ]


def _propagation_goal(id_: str, text: str, result: Mapping[str, Any]) -> Goal:
    """Met when, at the 95th percentile, a move's first new answer came within the allowance
    plus that move's own load and warm-up (loads vary from move to move)."""
    excess = result["latency_minus_load_s"]["p95"]
    latency, allowance = result["latency_s"], result["allowance_s"]
    return Goal(
        id_,
        text,
        f"p95 {fmt(excess, ' s')} beyond the load (latency p95 {fmt(latency['p95'], ' s')}, "
        f"median {fmt(latency['median'], ' s')}; load median "
        f"{fmt(result['load_s']['median'], ' s')}; n={latency['n']}, "
        f"missed {result['missed']})",
        f"<= {allowance:g} s + the move's load",
        excess is not None and excess <= allowance and result["missed"] == 0,
    )


def _memory_goal(config: Mapping[str, Any], part: Mapping[str, Any]) -> Goal:
    ratio, slope = part["ratio"], part["second_half_slope_kib_per_swap"]
    first, last = part["rss_kib_after_first_swap"]["VmRSS"], part["rss_kib_after_swaps"]["VmRSS"]
    return Goal(
        "3",
        f"RSS after {config['rss_swaps']} more swaps sklearn<->torch vs after the first swap",
        f"{ratio:.3f}x ({first / 1024:.0f} -> {last / 1024:.0f} MiB; "
        f"trend {fmt(slope, ' KiB/swap', 0)})",
        "<= 1.1x",
        ratio <= 1.1,
    )


def _traffic_goals(config: Mapping[str, Any], part: Mapping[str, Any]) -> list[Goal]:
    keys, worst = config["keys"], part["worst_sigmas"]
    shift, grow = part["90/10->80/20"], part["70/20/10->63/18/19"]
    transfer = part["80/10/10->70/20/10"]
    only_p_to_s = set(shift["by_pair"]) <= {"production->staging"}
    only_to_grown = all(pair.endswith(f"->{GROWN_ALIAS}") for pair in grow["by_pair"])
    leaked = transfer["moved_between_other_pairs"]
    reordered = part["reordered_tag_identical"]
    same = reordered["two_aliases"] and reordered["three_aliases"]
    goals = [
        Goal(
            "4a",
            f"each alias's share over {keys} keys ({len(part['shares'])} splits)",
            f"worst {worst:.2f} sigma",
            "within 4 sigma",
            worst <= 4,
        ),
        Goal(
            "4b",
            "90/10 -> 80/20: moved keys all production->staging, fraction",
            f"{shift['fraction']:.4f}, {'only' if only_p_to_s else 'NOT only'} production->staging",
            "0.10 +- 0.01, only p->s",
            only_p_to_s and abs(shift["fraction"] - 0.10) <= 0.01,
        ),
        Goal(
            "4c",
            "70/20/10 -> 63/18/19: every moved key goes to the grown alias",
            f"{grow['moved']} moved ({grow['fraction']:.4f}; expected "
            f"{grow['expected_fraction']:.2f}), {'all' if only_to_grown else 'NOT all'} "
            f"to {GROWN_ALIAS}",
            "all to the grown alias",
            only_to_grown,
        ),
        Goal(
            "4d",
            "80/10/10 -> 70/20/10: moved fraction, keys moved between other pairs",
            f"{transfer['fraction']:.4f} moved; {leaked} keys ({leaked / keys:.2%}) between "
            "other pairs",
            "report (rendezvous leaks a little)",
            None,
        ),
        Goal(
            "4e",
            "tag with its keys reordered: identical assignment",
            "identical" if same else "DIFFERENT",
            "identical",
            same,
        ),
    ]
    if "http" in part:
        http = part["http"]
        differ, off = http["differ_between_processes"], http["differ_from_traffic_choose"]
        goals.append(
            Goal(
                "4f",
                f"same X-Routing-Key -> same alias from two processes ({http['keys']} keys)",
                f"{differ} differ between processes, {off} from choose()",
                "0",
                differ == 0 and off == 0,
            )
        )
    return goals


def _shadow_goals(config: Mapping[str, Any], part: Mapping[str, Any]) -> list[Goal]:
    flip, disagreement = config["flip_percent"], part["disagreement_percent"]
    goals = [
        Goal(
            "5a",
            f"reported disagreement, staging built to disagree on {flip}% of rows",
            f"{fmt(disagreement, '%')} over {part['recorded']['rows']} rows (these bodies: "
            f"{part['disagreement_percent_by_construction_for_these_bodies']:.2f}%)",
            f"{flip} +- 2 points",
            disagreement is not None and abs(disagreement - flip) <= 2,
        )
    ]
    if "latency" not in part:
        return goals
    latency = part["latency"]
    p99 = latency["median_p99_ms"]
    ratio, paired = latency["p99_ratio"], latency["p99_ratio_per_repeat"]
    cpu = latency["median_server_cpu_ms_per_request"]
    worst_spread = max(latency["p99_spread_over_repeats"].values())
    return [
        *goals,
        Goal(
            "5b",
            f"production p99 with a {config['shadow_rate']:.0%} shadow sample vs none "
            f"({config['shadow_repeats']}x{config['shadow_duration_s']:g} s, medians)",
            f"{ratio:.3f}x ({p99[WITH_SHADOW]:.2f} vs {p99[NO_SHADOW]:.2f} ms; per repeat "
            f"{min(paired):.2f}-{max(paired):.2f}x; p99 spread {worst_spread:.0%})",
            "<= 1.1x",
            ratio <= 1.1,
        ),
        Goal(
            "5c",
            "server CPU per production request, shadow sample vs none (context)",
            f"{cpu[WITH_SHADOW] / cpu[NO_SHADOW]:.3f}x ({cpu[WITH_SHADOW]:.3f} vs "
            f"{cpu[NO_SHADOW]:.3f} ms)",
            "report (less sensitive to other load than p99)",
            None,
        ),
    ]


def shadow_latency(runs: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
    """Medians of the shadow-latency runs of both processes, and their ratios.

    Each repetition's two runs are adjacent in time: their ratio cancels slow drifts in the
    machine's other load; the spread of one process's p99 over repetitions shows the noise.
    """

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    def both(key: str) -> dict[str, float]:
        return {WITH_SHADOW: median(WITH_SHADOW, key), NO_SHADOW: median(NO_SHADOW, key)}

    p99, cpu = both("p99_ms"), both("server_cpu_ms_per_request")
    return {
        "median_p99_ms": p99,
        "median_p50_ms": both("p50_ms"),
        "median_rps": both("rps"),
        "p99_ratio": p99[WITH_SHADOW] / p99[NO_SHADOW],
        "p99_ratio_per_repeat": [
            a["p99_ms"] / b["p99_ms"]
            for a, b in zip(runs[WITH_SHADOW], runs[NO_SHADOW], strict=True)
        ],
        "p99_spread_over_repeats": {
            name: (max(r["p99_ms"] for r in rs) - min(r["p99_ms"] for r in rs))
            / statistics.median(r["p99_ms"] for r in rs)
            for name, rs in runs.items()
        },
        "median_server_cpu_ms_per_request": cpu,
        "server_cpu_ratio": cpu[WITH_SHADOW] / cpu[NO_SHADOW],
    }


# -- gate (bench/gate_seeds.py -> bench/results/gate*.json) --------------------------------------

SEED_GOAL, SEED_ALLOWED_FAILURES = "at most 1 fails", 1
SHUFFLED_GOAL = "all fail"
DEMO_GATE_GOAL, DEMO_GATE_BOUND_S = "under 30 s", 30.0


def seed_study(config: str, runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Retrains with other seeds gated against seed 0: how many failed, against the goal."""
    failed = sum(not r["passed"] for r in runs)
    return {
        "config": config,
        "baseline_seed": 0,
        "candidates": len(runs),
        "failed": failed,
        "goal": SEED_GOAL,
        "met": failed <= SEED_ALLOWED_FAILURES,
        "gate_seconds_median": statistics.median(r["gate_seconds"] for r in runs),
        "runs": list(runs),
    }


def shuffled_study(config: str, runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Candidates trained on shuffled labels: every one should fail."""
    failed = sum(not r["passed"] for r in runs)
    return {
        "config": config,
        "candidates": len(runs),
        "failed": failed,
        "goal": SHUFFLED_GOAL,
        "met": failed == len(runs),
        "runs": list(runs),
    }


def seed_independence(improvement_ci: Mapping[str, Sequence[float]]) -> dict[str, Any]:
    """Two seeds of the linear configuration: identical when every interval is [0, 0]."""
    return {
        "note": "seed 0 vs seed 1 of the demo's linear configuration",
        "improvement_ci": dict(improvement_ci),
        "identical": all(list(ci) == [0.0, 0.0] for ci in improvement_ci.values()),
    }


def demo_gate(
    command: str, walls: Sequence[float], reports: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The gate command timed on the demo pair in fresh processes, against its bound."""
    last = reports[-1]
    median = statistics.median(walls)
    return {
        "command": command,
        "wall_seconds": list(walls),
        "median_wall_seconds": median,
        "in_process_seconds": [r["seconds"] for r in reports],
        "phases_last_run": last["phases"],
        "verdicts": [r["verdict"] for r in reports],
        "goal": DEMO_GATE_GOAL,
        "met": median < DEMO_GATE_BOUND_S,
        "last_stdout_table": last["table"],
    }


def gate_goals(results: Mapping[str, Any]) -> list[Goal]:
    """The gate benchmark's goals, from its results."""
    seeds, shuffled = results["seed_study"], results["shuffled_labels"]
    demo, linear = results["demo_gate"], results["linear_seed_independent"]
    accuracy = [r["accuracy"] for r in seeds["runs"]]
    latency = [x for r in seeds["runs"] for x in r["latency_ratios"] or []]
    failing = _failing_kinds(shuffled["runs"])
    phases = demo["phases_last_run"]
    loading = next((s for name, s in phases.items() if name.startswith("load")), None)
    goals = [
        Goal(
            "seeds",
            f"retrains of the {seeds['config']} configuration with another seed, gated against "
            f"seed {seeds['baseline_seed']}",
            f"{seeds['failed']} of {seeds['candidates']} fail (accuracy "
            f"{spread(accuracy, 3)}; latency ratios {spread(latency)})",
            seeds["goal"],
            seeds["met"],
        ),
        Goal(
            "shuffled",
            f"candidates of the {shuffled['config']} configuration trained on shuffled labels",
            f"{shuffled['failed']} of {shuffled['candidates']} fail"
            + (f" ({failing})" if failing else ""),
            shuffled["goal"],
            shuffled["met"],
        ),
        Goal(
            "demo",
            "one gate on the demo pair (scikit-learn production, PyTorch staging), "
            "in a fresh process",
            f"{spread(demo['wall_seconds'], 1, ' s')} wall; "
            f"{spread(demo['in_process_seconds'], 1, ' s')} inside the gate"
            + (f", {loading:.1f} s of the last run loading the two models" if loading else ""),
            demo["goal"],
            demo["met"],
        ),
        Goal(
            "linear",
            "the demo's scikit-learn configuration, seed 0 vs seed 1",
            "identical (every improvement interval [0, 0])" if linear["identical"] else "different",
            "report",
            None,
        ),
    ]
    return goals


def _failing_kinds(runs: Iterable[Mapping[str, Any]]) -> str:
    """Which kinds of check failed in every failed run: absolute bounds, regression checks."""
    failed = [r["failed_checks"] for r in runs if not r["passed"]]
    if not failed:
        return ""
    absolute = all(any(" vs " not in c for c in checks) for checks in failed)
    regression = all(any(" vs " in c for c in checks) for checks in failed)
    if absolute and regression:
        return "absolute bounds and regression checks alike"
    if absolute:
        return "on absolute bounds"
    return "on regression checks" if regression else ""


def failing_checks(runs: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """How many failed runs each check failed in."""
    counts: dict[str, int] = defaultdict(int)
    for run in runs:
        for check in run["failed_checks"]:
            counts[check] += 1
    return dict(counts)
