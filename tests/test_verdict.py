"""The verdict (a pure function of policy and evidence) and the reports rendered from it."""

import json

from gates.bootstrap import Interval
from gates.latency import Latency
from gates.policy import parse
from gates.reports import (
    COLUMNS,
    DataSummary,
    Report,
    footer,
    render_json,
    render_markdown,
    render_text,
    rows,
    summary,
)
from gates.verdict import Evidence, Verdict, judge
from registry.refs import ModelRef

POLICY = parse(
    """\
metrics:
  accuracy: {min: 0.9, max_regression: 0.03}
  log_loss: {max: 0.35}
latency: {max_ratio: 1.5}
"""
)
GOOD = {"accuracy": 0.95, "f1": 0.96, "roc_auc": 0.99, "log_loss": 0.1}


def _evidence(**changes: object) -> Evidence:
    values: dict[str, object] = {
        "candidate": GOOD,
        "baseline": GOOD | {"accuracy": 0.96},
        "improvements": {"accuracy": Interval("accuracy", -0.01, -0.04, 0.02, 0.95)},
        "latency": Latency(1.1, 1.0, 2.2, 2.0, 100, 30),
        "input_breaks": (),
        "output_breaks": (),
    }
    values.update(changes)
    return Evidence(**values)  # type: ignore[arg-type]


def _failed(evidence: Evidence) -> list[str]:
    return [check.name for check in judge(POLICY, evidence).checks if not check.passed]


def test_verdict_all_good_passes():
    verdict = judge(POLICY, _evidence())
    assert verdict.passed
    assert [c.name for c in verdict.checks] == [
        "accuracy",
        "accuracy vs baseline",
        "log_loss",
        "latency p50, 1 row",
        "latency p50, 100 rows",
        "inputs accept baseline requests",
        "outputs in baseline contract",
    ]


def test_verdict_absolute_bound_fails():
    assert _failed(_evidence(candidate=GOOD | {"accuracy": 0.85})) == ["accuracy"]
    assert _failed(_evidence(candidate=GOOD | {"log_loss": 0.4})) == ["log_loss"]
    assert _failed(_evidence(candidate=GOOD | {"log_loss": float("nan")})) == ["log_loss"]


def test_verdict_regression_judged_on_the_interval():
    beyond = {"accuracy": Interval("accuracy", -0.06, -0.09, -0.035, 0.95)}
    assert _failed(_evidence(improvements=beyond)) == ["accuracy vs baseline"]
    noisy = {"accuracy": Interval("accuracy", -0.035, -0.07, 0.0, 0.95)}
    assert _failed(_evidence(improvements=noisy)) == []  # worse than the margin, within noise
    assert _failed(_evidence(improvements={})) == ["accuracy vs baseline"]  # never compared


def test_verdict_latency_ratio_over_budget_fails():
    slow = Latency(1.0, 1.0, 3.1, 2.0, 100, 30)
    assert _failed(_evidence(latency=slow)) == ["latency p50, 100 rows"]


def test_verdict_compatibility_breaks_fail():
    failed = _failed(_evidence(input_breaks=("new required input column 'age'",)))
    assert failed == ["inputs accept baseline requests"]
    failed = _failed(_evidence(output_breaks=("output frame: extra column 'x'",)))
    assert failed == ["outputs in baseline contract"]


def test_verdict_candidate_without_answer_fails():
    failed = _failed(_evidence(candidate=None, candidate_error="predict failed: boom"))
    assert failed[0] == "candidate answers"
    assert "accuracy" in failed


def test_verdict_without_baseline_applies_absolute_bounds_only():
    verdict = judge(POLICY, _evidence(baseline=None, latency=None, improvements={}))
    assert verdict.passed
    assert [c.name for c in verdict.checks] == ["accuracy", "log_loss"]
    assert "only absolute bounds apply" in verdict.notes[0]


def test_verdict_with_no_checks_does_not_pass():
    assert not Verdict(checks=()).passed


def _report(evidence: Evidence) -> Report:
    return Report(
        model="m",
        candidate=ModelRef("m", "2", "run2", "staging"),
        baseline=ModelRef("m", "1", "run1", "production"),
        baseline_asked="production",
        data=DataSummary("baseline holdout", "holdout of run1", 143, "ab" * 32),
        policy_path="gate.yaml",
        policy_sha256="cd" * 32,
        evidence=evidence,
        verdict=judge(POLICY, evidence),
        run_id="run9",
        run_url=None,
        promotion="production -> version 2",
        started_at="2026-01-01T00:00:00+00:00",
        seconds=1.5,
    )


def test_reports_say_what_the_terminal_shows():
    report = _report(_evidence(output_breaks=("output frame: extra column 'x'",)))
    text, markdown = render_text(report), render_markdown(report)
    document = json.loads(render_json(report))
    assert "FAIL" in text.splitlines()[0]
    for line in [*summary(report), *footer(report)]:
        assert line in text.splitlines()
        assert f"- {line}" in markdown.splitlines()
    assert document["summary"] == summary(report)
    assert document["footer"] == footer(report)
    table_lines = text.splitlines()
    for row in rows(report):
        assert any(_cells_in_order(line, row) for line in table_lines), row
        assert "| " + " | ".join(row) + " |" in markdown
        assert document["table"].count(dict(zip(COLUMNS, row, strict=True))) == 1
    assert document["verdict"] == "fail"
    assert document["promotion"] == "production -> version 2"


def _cells_in_order(line: str, cells: tuple[str, ...]) -> bool:
    position = 0
    for cell in cells:
        found = line.find(cell, position)
        if found < 0:
            return False
        position = found + len(cell)
    return True


def test_reports_json_has_no_nan():
    report = _report(_evidence(candidate=GOOD | {"log_loss": float("nan")}))
    document = json.loads(render_json(report))
    assert document["metrics"]["candidate"]["log_loss"] is None
