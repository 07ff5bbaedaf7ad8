"""Does the gate tell noise from a real regression, and how long does one gate take?

    .venv/bin/python -m bench.gate_seeds [--seeds 20] [--config torch|random-forest|...]
    .venv/bin/python -m bench.gate_seeds --quick     # smoke run (2 seeds), JSON in a temp file

Starts its own registry (moto's S3 server and an `mlflow server` on SQLite, as the other
benchmarks do), then, with the shipped `gate.yaml`:

1. trains the demo classifier's configuration with seed 0 as the baseline, then with seeds
   1..N, and gates each retrain against the baseline: goal, at most 1 of N fails;
2. trains N candidates on shuffled labels and gates them: goal, all N fail;
3. trains the demo pair (scikit-learn production, PyTorch staging) and times the gate
   command itself in a fresh process, three times: goal, under 30 s.

The demo's linear model ignores its seed (lbfgs is deterministic), so a seed study on it
would compare identical models; the bench checks and records that, and studies a
configuration whose seed does change the model: the demo's PyTorch MLP by default (its
staging model), or a scikit-learn estimator with `--config random-forest`. (A random forest
gives hard 0/1 probabilities, which the shipped policy's log-loss bound punishes: gate
`log_loss` only for models whose probabilities are calibrated.)
Writes bench/results/gate.json (bench/results/gate-<config>.json for other configurations);
bench/analysis.py judges the goals from the runs it records.
"""

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import analysis, report
from bench.processes import ROOT, registry
from gates import gate, policy
from registry.client import Client, connect
from training.run import TrainSpec, train

MODEL = "cancer-classifier"
POLICY = ROOT / "gate.yaml"
RESULTS = ROOT / "bench" / "results" / "gate.json"
DEMO_GATE_COMMAND = (
    "python -m gates cancer-classifier --candidate staging --baseline production --policy gate.yaml"
)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument(
        "--config", default="torch", help="torch, or a scikit-learn estimator (random-forest)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 seeds, temp JSON")
    parser.add_argument("--output", type=Path, help="results file (default: by --config)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds = 2
    name = "gate.json" if args.config == "torch" else f"gate-{args.config}.json"
    quick = Path(tempfile.gettempdir()) / f"modelyard-{name}"
    path = args.output or (quick if args.quick else RESULTS.with_name(name))
    logging.basicConfig(level=logging.WARNING)
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    started = time.monotonic()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="gate-bench-") as tmp, registry(Path(tmp)) as uri:
        os.environ["MLFLOW_TRACKING_URI"] = uri  # the gate command's process reads it
        results = _bench(connect(uri), Path(tmp), args.seeds, args.config)
    results["bench_seconds"] = round(time.monotonic() - started, 1)
    results["machine"] = {
        "cores": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    goals = analysis.gate_goals(results)
    print(report.goal_table(goals))
    print(f"\n{report.goal_summary(goals)}; {results['bench_seconds']:.0f} s; wrote {path}")


def _bench(client: Client, tmp: Path, seeds: int, config: str) -> dict[str, Any]:
    parsed, digest = policy.load(POLICY)

    def trained(config: str, **options: Any) -> str:
        framework = "torch" if config == "torch" else "sklearn"
        estimator = {} if config == "torch" else {"estimator": config}
        spec = TrainSpec(framework, model_name=MODEL, **estimator, **options)
        return train(spec, client).version

    def gated(candidate: str, baseline: str) -> dict[str, Any]:
        spec = gate.GateSpec(
            MODEL, candidate, baseline, parsed, POLICY, digest, report_dir=tmp / "reports"
        )
        clock = time.monotonic()
        outcome = gate.run(client, spec).report
        failed = [c.name for c in outcome.verdict.checks if not c.passed]
        improvements = outcome.evidence.improvements
        latency = outcome.evidence.latency
        return {
            "candidate": candidate,
            "passed": outcome.verdict.passed,
            "failed_checks": failed,
            "accuracy": outcome.evidence.candidate and outcome.evidence.candidate["accuracy"],
            "improvement_ci": {
                name: [round(i.low, 4), round(i.high, 4)] for name, i in improvements.items()
            },
            "latency_ratios": [round(latency.row_ratio, 2), round(latency.batch_ratio, 2)]
            if latency
            else None,
            "gate_seconds": round(time.monotonic() - clock, 2),
        }

    say(f"seed study: {config}, baseline seed 0 and {seeds} retrains")
    baseline = trained(config, seed=0)
    seed_runs = []
    for seed in range(1, seeds + 1):
        run = gated(trained(config, seed=seed), baseline) | {"seed": seed}
        say(f"  seed {seed}: {'pass' if run['passed'] else 'FAIL ' + str(run['failed_checks'])}")
        seed_runs.append(run)
    say(f"shuffled labels: {seeds} candidates")
    shuffled_runs = []
    for seed in range(1, seeds + 1):
        candidate = trained(config, seed=seed, shuffle_labels=True)
        run = gated(candidate, baseline) | {"seed": seed}
        say(f"  shuffled {seed}: {'pass (!)' if run['passed'] else 'fail'}")
        shuffled_runs.append(run)
    say("linear: is the demo configuration seed-dependent?")
    linear = [trained("linear", seed=seed) for seed in (0, 1)]
    linear_gate = gated(linear[1], linear[0])
    say("demo pair: timing `gate` in a fresh process")
    walls, reports = _demo_gate(client, tmp)
    return {
        "command": ".venv/bin/python -m bench.gate_seeds",
        "policy": str(POLICY.relative_to(ROOT)),
        "policy_sha256": digest,
        "seed_study": analysis.seed_study(config, seed_runs),
        "shuffled_labels": analysis.shuffled_study(config, shuffled_runs),
        "linear_seed_independent": analysis.seed_independence(linear_gate["improvement_ci"]),
        "demo_gate": analysis.demo_gate(DEMO_GATE_COMMAND, walls, reports),
    }


def _demo_gate(client: Client, tmp: Path) -> tuple[list[float], list[dict[str, Any]]]:
    """The demo pair as `modelyard up` trains it, gated by the CLI in a fresh process three
    times: the wall seconds and the JSON report of each."""
    train(TrainSpec("sklearn", alias="production"), client)
    train(TrainSpec("torch", alias="staging"), client)
    walls, reports = [], []
    for attempt in range(3):
        report_dir = tmp / f"demo-{attempt}"
        command = [sys.executable, "-m", "gates", MODEL, "--candidate", "staging"]
        command += ["--baseline", "production", "--policy", str(POLICY)]
        command += ["--report-dir", str(report_dir)]
        clock = time.monotonic()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
        walls.append(round(time.monotonic() - clock, 2))
        if done.returncode == 2:
            raise RuntimeError(f"demo gate could not evaluate: {done.stderr}")
        reports.append(json.loads(next(report_dir.glob("gate-*.json")).read_text()))
        say(f"  attempt {attempt + 1}: {walls[-1]} s, {reports[-1]['verdict']}")
    return walls, reports


def say(message: str) -> None:
    """Progress on stderr; stdout carries the result."""
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
