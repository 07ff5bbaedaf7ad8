"""The README's measured figures are the committed results: generated, never typed.

Fast and offline: it reads bench/results/*.json and README.md, starts no server.
"""

import difflib
import json
import re
from dataclasses import asdict
from pathlib import Path

import pytest

from bench import analysis, readme

ROOT = Path(__file__).resolve().parents[1]
FIGURE = re.compile(r"\d[\d,.]*\s?(?:x|ms|s|min|%|MiB|KiB|sigma|req/s)(?![\w/])")
"""A measured number in prose: digits with a unit or a ratio sign."""


@pytest.fixture(scope="module")
def results() -> readme.Results:
    return readme.Results(readme.RESULTS)


def _load(name: str) -> dict:
    return json.loads((readme.RESULTS / f"{name}.json").read_text())


def test_readme_blocks_match_results(results: readme.Results):
    text = readme.README.read_text()
    rendered = readme.render(text, results)
    diff = "".join(
        difflib.unified_diff(
            text.splitlines(keepends=True), rendered.splitlines(keepends=True), "README.md", "JSON"
        )
    )
    assert rendered == text, f"run .venv/bin/python -m bench.readme\n{diff[:4000]}"


def test_render_rewrites_a_stale_figure(results: readme.Results):
    text = readme.README.read_text()
    stale = re.sub(r"\| 0 of (\d+) \|", "| 0 of 1\\1 |", text, count=1)
    assert stale != text
    assert readme.render(stale, results) == text


def test_render_refuses_an_unknown_block(results: readme.Results):
    text = readme.README.read_text() + "<!-- bench:nonsense -->\nx\n<!-- /bench:nonsense -->\n"
    with pytest.raises(ValueError, match=r"unknown \['nonsense'\]"):
        readme.render(text, results)


def test_render_refuses_a_missing_block(results: readme.Results):
    block = re.compile(r"<!-- bench:gate -->.*?<!-- /bench:gate -->", re.DOTALL)
    text = block.sub("", readme.README.read_text())
    with pytest.raises(ValueError, match=r"missing \['gate'\]"):
        readme.render(text, results)


def test_measured_prose_quotes_no_figure():
    """Outside the generated blocks and code, the Measured sections quote no number."""
    text = readme.README.read_text()
    sections = re.findall(r"^### Measured\n(.*?)(?=^##)", text, re.M | re.S)
    assert len(sections) == 4  # serving, gates, the A/B loop, rollout
    prose = [readme.MARKER.sub("", section) for section in sections]
    prose = [re.sub(r"`[^`]*`", "", p) for p in prose]
    assert [FIGURE.findall(p) for p in prose] == [[]] * len(sections)


def test_prose_figure_pattern_finds_figures():
    assert FIGURE.findall("took 7.7-10.6 s, 1.30x (18.9 vs 14.6 ms), 11.1% of keys") == [
        "10.6 s",
        "1.30x",
        "14.6 ms",
        "11.1%",
    ]
    assert FIGURE.findall("core 0, 1 and 100 rows at 1, 8 and 32 connections") == []


@pytest.mark.parametrize("model", ["cancer-classifier", "logistic-20"])
def test_throughput_analysis_reproduces_recorded_figures(model: str):
    section = _load("serving")[model]
    recorded = section["readiness"]  # None for a model whose start-up was not timed
    ready = recorded and analysis.readiness(recorded["seconds"], recorded["plain_command"])
    assert ready == recorded
    figures = analysis.throughput(section["runs"], ready)
    assert figures == {k: section[k] for k in ("medians", "ratios", "goals", "goals_met")}


def test_serving_goals_are_judged_from_the_recorded_runs():
    serving = _load("serving")
    goals = analysis.serving_goals(serving)
    assert [g.id for g in goals] == ["13a", "13b", "13c", "13d", "13e", "13f"]
    if "goals" in serving:  # written by bench.serving since issue 13
        assert [asdict(g) for g in goals] == serving["goals"]
        assert analysis.tail_evidence(serving) == serving["tail_evidence"]
    judged = {g.id for g in goals if g.met is not None}
    measured = {g.id for g in goals if not g.measured.startswith("not measured")}
    assert judged == measured
    assert {"13a", "13b", "13c"} <= judged


def test_serving_goals_judge_a_batching_run():
    """The PyTorch goals read batched and unbatched medians; a missing cell is not judged."""

    def run(server: str, c: int, rps: float, p50: float) -> dict:
        return {
            "server": server,
            "concurrency": c,
            "rows": 1,
            "rps": rps,
            "p50_ms": p50,
            "p99_ms": 2 * p50,
            "cpu_us_per_request": 1.0,
            "server_core_share": 1.0,
        }

    batched, unbatched = analysis.MODELYARD, analysis.MODELYARD_UNBATCHED
    runs = [
        run(batched, 64, 3100, 20),
        run(unbatched, 64, 1000, 60),
        run(batched, 1, 900, 1.06),
        run(unbatched, 1, 950, 1.0),
    ]
    goals = {g.id: g for g in analysis.serving_goals({analysis.TORCH: {"runs": runs}})}
    assert goals["13d"].met is True
    assert goals["13d"].measured.startswith("3.100x")
    assert goals["13e"].met is False  # 1.06 ms against 1.0 ms: 6% worse
    assert goals["13a"].met is None


def test_server_share_over_reads_cumulative_buckets():
    counts = {"0.05": 90.0, "0.1": 97.0, "0.25": 100.0, "+Inf": 100.0}
    assert analysis.server_share_over(counts, 100) == 0.03
    assert analysis.server_share_over({"+Inf": 0.0}, 100) is None


def test_multi_worker_analysis_reproduces_recorded_medians():
    section = _load("serving")["multi_worker"]
    assert analysis.with_stalls(analysis.medians(section["runs"])) == section["medians"]


def test_swap_analysis_reproduces_recorded_goals():
    swap = _load("swap")
    goals = analysis.swap_goals(swap["config"], swap["parts"])
    assert sorted((asdict(g) for g in goals), key=lambda g: g["id"]) == sorted(
        swap["goals"], key=lambda g: g["id"]
    )
    latency = swap["parts"]["shadow"]["latency"]
    figures = analysis.shadow_latency(latency["runs"])
    assert figures == {k: latency[k] for k in figures}


@pytest.mark.parametrize("name", ["gate", "gate-random-forest"])
def test_gate_analysis_reproduces_recorded_studies(name: str):
    gate = _load(name)
    seeds, shuffled = gate["seed_study"], gate["shuffled_labels"]
    assert analysis.seed_study(seeds["config"], seeds["runs"]) == seeds
    assert analysis.shuffled_study(shuffled["config"], shuffled["runs"]) == shuffled
    linear = gate["linear_seed_independent"]
    assert analysis.seed_independence(linear["improvement_ci"]) == linear
