"""Does the gate tell noise from a real regression, and how long does one gate take?

    .venv/bin/python bench/gate_seeds.py [--seeds 20] [--config torch|random-forest|...]

Starts its own registry (moto's S3 server and an `mlflow server` on SQLite, as the tests do),
then, with the shipped `gate.yaml`:

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
Writes bench/results/gate.json (bench/results/gate-<config>.json for other configurations).
"""

import argparse
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402

from registry import gate, policy  # noqa: E402
from registry.client import connect  # noqa: E402
from tests.servers import S3_ENV, free_port, start_mlflow  # noqa: E402
from training.run import TrainSpec, train  # noqa: E402

MODEL = "cancer-classifier"
BUCKET = "modelyard-bench"
POLICY = ROOT / "gate.yaml"
RESULTS = ROOT / "bench" / "results" / "gate.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument(
        "--config", default="torch", help="torch, or a scikit-learn estimator (random-forest)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    started = time.monotonic()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="gate-bench-") as tmp:
        uri, stop = _start_registry(Path(tmp))
        try:
            os.environ["MLFLOW_TRACKING_URI"] = uri
            results = _bench(uri, Path(tmp), args.seeds, args.config)
        finally:
            stop()
    results["bench_seconds"] = round(time.monotonic() - started, 1)
    results["machine"] = {
        "cores": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    path = RESULTS if args.config == "torch" else RESULTS.with_name(f"gate-{args.config}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(_headline(results), indent=2))
    print(f"wrote {path.relative_to(ROOT)}")


def _bench(uri: str, tmp: Path, seeds: int, config: str) -> dict[str, Any]:
    parsed, digest = policy.load(POLICY)
    client = connect(uri)

    def trained(config: str, **options: Any) -> str:
        framework = "torch" if config == "torch" else "sklearn"
        estimator = {} if config == "torch" else {"estimator": config}
        spec = TrainSpec(framework, model_name=MODEL, **estimator, **options)
        return train(spec, uri).version

    def gated(candidate: str, baseline: str) -> dict[str, Any]:
        spec = gate.GateSpec(
            MODEL, candidate, baseline, parsed, POLICY, digest, report_dir=tmp / "reports"
        )
        clock = time.monotonic()
        report = gate.run(client, spec).report
        failed = [c.name for c in report.verdict.checks if not c.passed]
        improvements = report.evidence.improvements
        latency = report.evidence.latency
        return {
            "candidate": candidate,
            "passed": report.verdict.passed,
            "failed_checks": failed,
            "accuracy": report.evidence.candidate and report.evidence.candidate["accuracy"],
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
    demo = _demo_gate(uri, tmp)
    seed_failures = sum(not r["passed"] for r in seed_runs)
    shuffled_failures = sum(not r["passed"] for r in shuffled_runs)
    return {
        "command": ".venv/bin/python bench/gate_seeds.py",
        "policy": str(POLICY.relative_to(ROOT)),
        "policy_sha256": digest,
        "seed_study": {
            "config": config,
            "baseline_seed": 0,
            "candidates": seeds,
            "failed": seed_failures,
            "goal": "at most 1 fails",
            "met": seed_failures <= 1,
            "gate_seconds_median": statistics.median(r["gate_seconds"] for r in seed_runs),
            "runs": seed_runs,
        },
        "shuffled_labels": {
            "config": config,
            "candidates": seeds,
            "failed": shuffled_failures,
            "goal": "all fail",
            "met": shuffled_failures == seeds,
            "runs": shuffled_runs,
        },
        "linear_seed_independent": {
            "note": "seed 0 vs seed 1 of the demo's linear configuration",
            "improvement_ci": linear_gate["improvement_ci"],
            "identical": all(ci == [0.0, 0.0] for ci in linear_gate["improvement_ci"].values()),
        },
        "demo_gate": demo,
    }


def _demo_gate(uri: str, tmp: Path) -> dict[str, Any]:
    """The demo pair as `modelyard up` trains it, gated by the CLI in a fresh process."""
    train(TrainSpec("sklearn", alias="production"), uri)
    train(TrainSpec("torch", alias="staging"), uri)
    walls, reports = [], []
    for attempt in range(3):
        report_dir = tmp / f"demo-{attempt}"
        command = [
            sys.executable, "-m", "registry", "gate", MODEL,
            "--candidate", "staging", "--baseline", "production",
            "--policy", str(POLICY), "--report-dir", str(report_dir),
        ]  # fmt: skip
        clock = time.monotonic()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
        walls.append(round(time.monotonic() - clock, 2))
        if done.returncode == 2:
            raise RuntimeError(f"demo gate could not evaluate: {done.stderr}")
        reports.append(json.loads(next(report_dir.glob("gate-*.json")).read_text()))
        say(f"  attempt {attempt + 1}: {walls[-1]} s, {reports[-1]['verdict']}")
    last = reports[-1]
    return {
        "command": "python -m registry gate cancer-classifier --candidate staging "
        "--baseline production --policy gate.yaml",
        "wall_seconds": walls,
        "median_wall_seconds": statistics.median(walls),
        "in_process_seconds": [r["seconds"] for r in reports],
        "phases_last_run": last["phases"],
        "verdicts": [r["verdict"] for r in reports],
        "goal": "under 30 s",
        "met": statistics.median(walls) < 30,
        "last_stdout_table": last["table"],
    }


def _start_registry(workdir: Path) -> tuple[str, Any]:
    """moto's S3 server and an MLflow server proxying artifacts to it; returns (uri, stop)."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = free_port()
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    s3.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
        region_name=S3_ENV["AWS_DEFAULT_REGION"],
    ).create_bucket(Bucket=BUCKET)
    uri, process = start_mlflow(workdir, endpoint, BUCKET)

    def stop() -> None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        s3.stop()

    return uri, stop


def _headline(results: dict[str, Any]) -> dict[str, Any]:
    seeds, shuffled, demo = results["seed_study"], results["shuffled_labels"], results["demo_gate"]
    accuracies = [r["accuracy"] for r in seeds["runs"]]
    return {
        "seed retrains failing (goal <= 1)": f"{seeds['failed']}/{seeds['candidates']}",
        "retrain accuracy range": [round(min(accuracies), 4), round(max(accuracies), 4)],
        "shuffled-label candidates failing (goal all)": (
            f"{shuffled['failed']}/{shuffled['candidates']}"
        ),
        "linear model seed-independent": results["linear_seed_independent"]["identical"],
        "demo gate wall seconds (goal < 30)": demo["wall_seconds"],
        "demo gate phases (s)": demo["phases_last_run"],
        "load average before/after": [
            results["machine"]["load_average_before"][0],
            results["machine"]["load_average_after"][0],
        ],
        "bench seconds": results["bench_seconds"],
        "all goals met": seeds["met"] and shuffled["met"] and demo["met"],
    }


def say(message: str) -> None:
    """Progress on stderr; stdout carries the result."""
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
