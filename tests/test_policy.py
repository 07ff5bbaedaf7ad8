"""Gate policies: a typo is an error naming its line, never a check silently skipped."""

from pathlib import Path

import pytest

from gates.errors import PolicyError
from gates.policy import METRIC_NAMES, load, parse
from registry.quality import HIGHER_IS_BETTER

REPO = Path(__file__).resolve().parent.parent

GOOD = """\
model: gate-clf
metrics:
  accuracy: {min: 0.9, max_regression: 0.03}
  log_loss:
    max: 0.35
    max_regression: 0.05
latency: {max_ratio: 1.5}
data: {target: label}
bootstrap: {resamples: 500, seed: 7}
compatibility: {inputs: true, outputs: false}
"""


def _problems(text: str) -> list[tuple[int, str]]:
    with pytest.raises(PolicyError) as caught:
        parse(text, source="gate.yaml")
    return caught.value.problems


def test_policy_parses_every_section():
    policy = parse(GOOD)
    assert policy.model == "gate-clf"
    assert policy.task == "classification"
    assert policy.metrics["accuracy"].min == 0.9
    assert policy.metrics["log_loss"].max_regression == 0.05
    assert policy.latency is not None
    assert policy.latency.max_ratio == 1.5
    assert policy.latency.rounds == 30  # default
    assert policy.data.target == "label"
    assert policy.data.uri is None
    assert (policy.bootstrap.resamples, policy.bootstrap.seed) == (500, 7)
    assert policy.bootstrap.confidence == 0.95
    assert policy.compatibility.inputs
    assert not policy.compatibility.outputs


def test_policy_regression_task_from_its_metrics():
    assert parse("metrics:\n  rmse: {max: 60}\n  r2: {min: 0.3}\n").task == "regression"


def test_policy_metric_names_are_those_registry_metrics_computes():
    assert set(METRIC_NAMES) == set(HIGHER_IS_BETTER)


def test_policy_shipped_gate_yaml_is_valid():
    policy, digest = load(REPO / "gate.yaml")
    assert policy.model == "cancer-classifier"
    assert policy.task == "classification"
    assert len(digest) == 64


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        (
            "metrics:\n  accuracy: {min: 0.9}\n  acuracy: {min: 0.9}\n",
            3,
            "unknown metric 'acuracy'",
        ),
        ("metrics:\n  accuracy:\n    min: 0.9\n    mni: 0.8\n", 4, "unknown key 'mni'"),
        ("metrics:\n  accuracy: {min: 0.9}\nlatncy: {max_ratio: 2}\n", 3, "unknown key 'latncy'"),
        ("metrics:\n  accuracy:\n    min: high\n", 3, "metrics.accuracy.min"),
        ("metrics:\n  accuracy:\n    min: 95\n", 3, "bad bound 95"),
        ("metrics:\n  accuracy: {min: 0.9, max: 0.8}\n", 2, "above max"),
        ("metrics:\n  accuracy: {}\n", 2, "sets no bound"),
        ("metrics:\n  log_loss:\n    max_regression: -0.1\n", 3, "max_regression"),
        ("metrics:\n  accuracy: {min: 0.9}\n  rmse: {max: 3}\n", 3, "regression metric"),
        ("metrics: {}\n", 1, "at least one metric"),
        ("metrics:\n  f1: {min: 0.9}\nlatency:\n  max_ratio: 0\n", 4, "greater than 0"),
        ("metrics:\n  f1: {min: 0.9}\nlatency: {rounds: 10}\n", 3, "max_ratio"),
        ("metrics:\n  f1: {min: 0.9}\ndata:\n  uri: eval.csv\n", 3, "both uri and sha256"),
        ("metrics:\n  f1: {min: 0.9}\ndata:\n  uri: e.csv\n  sha256: abc\n", 5, "sha256"),
        ("metrics:\n  f1: {min: 0.9}\n  f1: {min: 0.8}\n", 3, "duplicate key"),
        ("metrics:\n  f1: {min: 0.9\n", 3, "not valid YAML"),
        ("- accuracy\n", 1, "a policy is a mapping"),
        ("metrics:\n  f1: {min: '0.9'}\n", 2, "metrics.f1.min"),
        ("metrics:\n  f1: {min: 0.9}\ncompatibility: {inputs: 'no'}\n", 3, "compatibility.inputs"),
    ],
)
def test_policy_typo_names_its_line(text: str, line: int, words: str):
    problems = _problems(text)
    assert any(found == line and words in message for found, message in problems), problems


def test_policy_reports_every_problem_with_source_and_line():
    text = "metrics:\n  acuracy: {min: 0.9}\n  f1: {mni: 1}\n"
    with pytest.raises(PolicyError) as caught:
        parse(text, source="gate.yaml")
    message = str(caught.value)
    assert "gate.yaml:2: metrics.acuracy: unknown metric" in message
    assert "gate.yaml:3: metrics.f1.mni: unknown key 'mni'; expected one of: min, max" in message


def test_policy_missing_file_is_a_policy_error(tmp_path: Path):
    with pytest.raises(PolicyError, match="cannot read the policy"):
        load(tmp_path / "nope.yaml")
