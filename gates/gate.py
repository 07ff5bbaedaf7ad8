"""The evaluation gate: score a candidate version against a baseline under a policy, record the
evidence and verdict in MLflow, and move an alias only when the candidate passed.

Each version is loaded and scored in a process of its own (gates/isolation.py); the metrics,
the bootstrap and the verdict are computed here, on their answers. Anything wrong with the
candidate's answers is a failed check; anything that keeps the gate from judging (policy,
data, registry, the baseline itself, a scoring process that misbehaves) raises a GateError or
a RegistryError instead, which CI must treat as "could not evaluate", never as a pass.
"""

import logging
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import pandas as pd

from gates import bootstrap, evaluation, exam, latency, reports
from gates.errors import EvaluationError
from gates.evaluation import EvaluationData
from gates.isolation import Isolation, Scorer
from gates.policy import Policy
from gates.reports import DataSummary, Report
from gates.verdict import Evidence, Overlap, Verdict, judge
from registry import contract, history, quality, runs, versions
from registry.client import Client
from registry.contract import Interface
from registry.errors import AliasNotFound, StaleAlias
from registry.refs import ModelRef

logger = logging.getLogger(__name__)

EXPERIMENT = "modelyard-gates"
"""The MLflow experiment every gate run is logged in."""
VERDICT_TAG = "modelyard.gate.verdict"
"""Model-version tag: `pass` or `fail`, the verdict of the latest gate run on that version."""
RUN_ID_TAG = "modelyard.gate.run_id"
"""Model-version tag: the MLflow run holding that gate's evidence and reports."""


@dataclass(frozen=True, slots=True)
class GateSpec:
    """What to gate, against what, under which policy, and where to put the reports."""

    name: str
    candidate: str
    baseline: str
    policy: Policy
    policy_path: Path
    policy_sha256: str
    data: Path | None = None
    report_dir: Path = Path("reports")
    promote: str | None = None
    isolation: Isolation = field(default_factory=Isolation)


@dataclass(frozen=True, slots=True)
class Outcome:
    """A finished gate: its report, where the report files are, and whether the alias moved."""

    report: Report
    json_path: Path
    markdown_path: Path
    promoted: bool | None
    """None: no promotion asked; False: asked but not done (failed gate or a stale alias)."""

    @property
    def exit_code(self) -> int:
        """0 when the gate passed and any promotion asked for was made, else 1."""
        return 0 if self.report.verdict.passed and self.promoted is not False else 1


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Both versions judged: what was compared, on which data, the evidence and the verdict."""

    candidate: ModelRef
    baseline: ModelRef | None
    data: DataSummary
    evidence: Evidence
    verdict: Verdict
    phases: dict[str, float]


def run(client: Client, spec: GateSpec) -> Outcome:
    """Evaluate, record in MLflow, write the reports, then promote if asked and passed."""
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    clock = time.monotonic()
    judged = evaluate(client, spec)
    evaluated = time.monotonic()
    candidate, verdict = judged.candidate, judged.verdict
    run_id, run_url = _record(client, spec, judged)
    try:
        versions.tag(
            client, spec.name, candidate.version, {VERDICT_TAG: _word(verdict), RUN_ID_TAG: run_id}
        )
        promoted, promotion = promote_if_passed(
            client, spec, candidate, judged.baseline, verdict, run_id
        )
        recorded = time.monotonic()
        report = Report(
            model=spec.name,
            candidate=candidate,
            baseline=judged.baseline,
            baseline_asked=spec.baseline,
            data=judged.data,
            policy_path=str(spec.policy_path),
            policy_sha256=spec.policy_sha256,
            evidence=judged.evidence,
            verdict=verdict,
            run_id=run_id,
            run_url=run_url,
            promotion=promotion,
            started_at=started_at,
            seconds=recorded - clock,
            phases=judged.phases | {"record and promote": recorded - evaluated},
        )
        json_path, markdown_path = reports.write(report, spec.report_dir)
        runs.attach(client, run_id, (json_path, markdown_path, spec.policy_path), "gate")
    except BaseException:
        runs.finish(client, run_id, succeeded=False)
        raise
    runs.finish(client, run_id, succeeded=True)
    return Outcome(report, json_path, markdown_path, promoted)


def evaluate(client: Client, spec: GateSpec) -> Evaluation:
    """Resolve both versions, fetch and check the evaluation data, score both, judge."""
    clock = time.monotonic()
    if spec.policy.model is not None and spec.policy.model != spec.name:
        raise EvaluationError(
            f"policy {spec.policy_path} is for model '{spec.policy.model}', not '{spec.name}'"
        )
    candidate = versions.find(client, spec.name, spec.candidate)
    baseline = _baseline(client, spec.name, spec.baseline)
    source = evaluation.choose(spec.policy.data, spec.data, baseline, spec.policy_path.parent)
    data = evaluation.fetch(source, client.tracking_uri)
    evaluation.check_target(data, spec.policy.task)
    notes = []
    if source.kind == "baseline holdout" and baseline is not None and baseline.run_id:
        notes.append(exam.check_holdout(client, baseline.run_id, data))
    overlap = exam.overlap(client, candidate, data)
    marks = {"resolve, fetch and check data": time.monotonic()}
    with (
        tempfile.TemporaryDirectory(prefix="modelyard-gate-") as tmp,
        Scorer(client, Path(tmp), data.features, spec.isolation) as scorer,
    ):
        # the baseline first: it is loaded before any candidate code runs
        baseline_scored = scorer.score(baseline, "baseline") if baseline else None
        candidate_scored = scorer.score(candidate, "candidate")
        marks["load and score, each in its own process"] = time.monotonic()
        evidence = gather(
            spec.policy,
            data,
            candidate_scored,
            baseline_scored,
            overlap=overlap,
            notes=tuple(notes),
        )
        scorer.finish()
        marks["metrics, bootstrap, latency"] = time.monotonic()
    verdict = judge(spec.policy, evidence)
    logger.info("gate %s v%s: %s", spec.name, candidate.version, _word(verdict))
    summary = DataSummary(source.kind, source.describe(), data.rows, data.sha256)
    return Evaluation(candidate, baseline, summary, evidence, verdict, _phases(clock, marks))


class Answered(Protocol):
    """A version's answer to the evaluation data, or why it gave none; its interface; and a
    way to have it predict rows of that data again (by position), for latency timing."""

    @property
    def answer(self) -> pd.DataFrame | None: ...

    @property
    def error(self) -> str | None: ...

    @property
    def interface(self) -> Interface: ...

    def predict(self, request: pd.DataFrame) -> object: ...


def gather(
    policy: Policy,
    data: EvaluationData,
    candidate: Answered,
    baseline: Answered | None,
    *,
    overlap: Overlap | None = None,
    notes: tuple[str, ...] = (),
) -> Evidence:
    """Collect what the policy's checks need from both versions' answers."""
    task = policy.task
    candidate_out, candidate_error = candidate.answer, candidate.error
    candidate_metrics = None
    if candidate_out is not None:
        try:
            candidate_metrics = quality.compute(task, data.target, candidate_out)
        except (KeyError, ValueError, TypeError) as exc:
            candidate_error = f"the answer does not fit the {task} output contract: {exc}"
    if baseline is None:
        return Evidence(candidate_metrics, None, candidate_error, overlap=overlap, notes=notes)
    baseline_out = baseline.answer
    if baseline_out is None:
        raise EvaluationError(f"the baseline cannot answer the evaluation data: {baseline.error}")
    try:
        baseline_metrics = quality.compute(task, data.target, baseline_out)
    except (KeyError, ValueError, TypeError) as exc:
        raise EvaluationError(
            f"the baseline's answer does not fit the policy's {task}: {exc}"
        ) from exc
    improvements: dict[str, bootstrap.Interval] = {}
    timing = None
    if candidate_out is not None and candidate_metrics is not None:
        improvements = bootstrap.improvements(
            task,
            data.target,
            candidate_out,
            baseline_out,
            policy.metrics,
            resamples=policy.bootstrap.resamples,
            confidence=policy.bootstrap.confidence,
            seed=policy.bootstrap.seed,
        )
        if policy.latency is not None:
            timing = latency.measure(
                candidate.predict,
                baseline.predict,
                data.features.reset_index(drop=True),
                rounds=policy.latency.rounds,
                batch_rows=policy.latency.batch_rows,
            )
    inputs = outputs = None
    if policy.compatibility.inputs:
        inputs = tuple(contract.input_breaks(baseline.interface.inputs, candidate.interface.inputs))
    if policy.compatibility.outputs:
        outputs = tuple(contract.output_breaks(baseline.interface, candidate.interface))
    return Evidence(
        candidate_metrics,
        baseline_metrics,
        candidate_error,
        improvements,
        timing,
        inputs,
        outputs,
        overlap,
        notes,
    )


def _baseline(client: Client, name: str, baseline: str) -> ModelRef | None:
    """The baseline version; None when it is an alias that does not exist (yet)."""
    try:
        return versions.find(client, name, baseline)
    except AliasNotFound:
        return None


def promote_if_passed(
    client: Client,
    spec: GateSpec,
    candidate: ModelRef,
    baseline: ModelRef | None,
    verdict: Verdict,
    run_id: str,
) -> tuple[bool | None, str | None]:
    """Move `spec.promote` to the candidate if the gate passed: (moved?, what happened).

    When the alias promoted is the baseline's own, the move expects it to still name the
    version the candidate was compared against; if it moved meanwhile, nothing moves.
    """
    if spec.promote is None:
        return None, None
    if not verdict.passed:
        return False, f"{spec.promote} not moved: the gate failed"
    expect = None
    if baseline is not None and spec.promote == baseline.alias:
        expect = baseline.version
    try:
        history.promote(
            client,
            spec.name,
            spec.promote,
            candidate.version,
            expect=expect,
            reason=f"gate passed: run {run_id}",
        )
    except StaleAlias as exc:
        return False, f"{spec.promote} not moved: {exc}"
    return True, f"{spec.promote} -> version {candidate.version}"


def _record(client: Client, spec: GateSpec, judged: Evaluation) -> tuple[str, str | None]:
    """Log the evaluation as a run linked to both versions; return its id and UI address."""
    candidate, baseline, data = judged.candidate, judged.baseline, judged.data
    evidence, verdict = judged.evidence, judged.verdict
    passed = sum(check.passed for check in verdict.checks)
    baseline_label = f"v{baseline.version}" if baseline else "no baseline"
    tags = {
        "modelyard.gate.model": spec.name,
        "modelyard.gate.candidate": f"{spec.name}/{candidate.version}",
        "modelyard.gate.baseline": f"{spec.name}/{baseline.version}" if baseline else "none",
        VERDICT_TAG: _word(verdict),
        "modelyard.gate.checks": f"{passed}/{len(verdict.checks)} passed",
    }
    params = {
        "model": spec.name,
        "candidate.version": candidate.version,
        "candidate.asked": spec.candidate,
        "candidate.run_id": candidate.run_id or "",
        "baseline.version": baseline.version if baseline else "none",
        "baseline.asked": spec.baseline,
        "baseline.run_id": (baseline.run_id or "") if baseline else "",
        "policy.path": str(spec.policy_path),
        "policy.sha256": spec.policy_sha256,
        "data.kind": data.kind,
        "data.source": data.description,
        "data.sha256": data.sha256,
        "data.rows": str(data.rows),
    }
    values: dict[str, float] = {}
    for side, found in (("candidate", evidence.candidate), ("baseline", evidence.baseline)):
        values |= {f"{side}.{k}": v for k, v in (found or {}).items()}
    for name, interval in evidence.improvements.items():
        values |= {
            f"improvement.{name}": interval.estimate,
            f"improvement.{name}.low": interval.low,
            f"improvement.{name}.high": interval.high,
        }
    if evidence.latency is not None:
        values |= {
            "latency.row_ratio": evidence.latency.row_ratio,
            "latency.batch_ratio": evidence.latency.batch_ratio,
            "latency.candidate_row_ms": evidence.latency.candidate_row_ms,
            "latency.baseline_row_ms": evidence.latency.baseline_row_ms,
        }
    values["passed"] = float(verdict.passed)
    record = runs.start(
        client,
        EXPERIMENT,
        f"gate {spec.name} v{candidate.version} vs {baseline_label}",
        tags=tags,
        params=params,
        metrics=values,
    )
    return record.run_id, record.url


def _phases(start: float, marks: dict[str, float]) -> dict[str, float]:
    """Seconds spent in each phase, from the time each one ended."""
    ends = list(marks.values())
    return {
        name: end - begin for name, end, begin in zip(marks, ends, [start, *ends], strict=False)
    }


def _word(verdict: Verdict) -> str:
    return "pass" if verdict.passed else "fail"
