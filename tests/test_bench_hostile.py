"""The hostile and resilience benchmarks judge their goals from recorded parts alone."""

import json
from dataclasses import asdict
from types import ModuleType

import pytest

from bench import attacks, hostile, options, resilience
from bench.probes import percentile


def _case(status: int | None, seconds: float = 0.2, rise: float = 10, p99: float = 5) -> dict:
    return {
        "answers": [{"status": status, "seconds": seconds}],
        "rss_rise_mib": rise,
        "live": {"p99_ms": p99, "errors": 0},
        "alive_after": True,
    }


CONFIG = {"answer_within_s": 1.0, "body_timeout_s": 5.0}


def test_case_goal_met_only_when_refused_in_time_and_bounded():
    def met(record: dict, name: str = "long-string") -> bool | None:
        return hostile.case_goal(CONFIG, name, record).met

    assert met(_case(400))
    assert not met(_case(500))
    assert not met(_case(200))
    assert not met(_case(400, seconds=1.5))
    assert not met(_case(413, rise=200))
    assert not met(_case(413, p99=150))
    assert met(_case(408, seconds=5.5), "stalled-body")
    assert met(_case(200), "tag-1e308")
    assert not met(_case(500), "tag-1e308")


def test_foreign_column_goal_fails_on_an_injected_header():
    record = _case(200)
    record["answers"][0]["injected_header"] = True
    assert not hostile.case_goal(CONFIG, "foreign-columns", record).met


def test_interleaved_goal_compares_median_p99():
    runs = {
        "without": [{"errors": 0, "p99_ms": 10.0}, {"errors": 0, "p99_ms": 12.0}],
        "with": [{"errors": 0, "p99_ms": 21.0}, {"errors": 0, "p99_ms": 23.0}],
    }
    assert hostile.interleaved_goal("x", "x", runs, 2.0).met
    assert not hostile.interleaved_goal("x", "x", runs, 1.2).met
    assert not hostile.interleaved_goal("x", "x", runs, 2.0, extra_errors=1).met


def test_gate_goal_wants_exit_2_every_time():
    part = {"runs": {"sys-exit": [{"exit_code": 2, "seconds": 3}, {"exit_code": 0, "seconds": 3}]}}
    assert resilience.gate_goals(part)[0].met is False
    part["runs"]["sys-exit"][1]["exit_code"] = 2
    assert resilience.gate_goals(part)[0].met is True


def test_resume_goal_allows_one_poll_plus_the_load():
    part = {"resumed_s": 2.9, "load_s": 2.0, "poll_interval_s": 1.0}
    assert resilience._resume_goal("r", "r", part).met
    assert not resilience._resume_goal("r", "r", part | {"resumed_s": 3.1}).met


def test_bodies_are_what_the_cases_say():
    features = [f"f{i}" for i in range(30)]
    assert len(attacks.wide_csv().split(b"\n")[0].split(b",")) == 200_000
    cells = json.loads(attacks.many_cells(features))["dataframe_split"]["data"]
    assert len(cells) * len(cells[0]) <= 1_000_000 < (len(cells) + 1) * len(cells[0])
    assert len(attacks.many_cells(features)) < 5 * 2**20
    long = json.loads(attacks.long_string_split(features))["dataframe_split"]["data"]
    assert (len(long), len(long[0][0]), long[1][0]) == (8_000, 20_000, "")
    assert (
        attacks.nested(10) == b'{"dataframe_split":{"columns":["a"],"data":[[[[[[[[[[]]]]]]]]]]}}'
    )


def test_percentile_is_nearest_rank():
    assert percentile(list(range(1, 101)), 99) == 99
    assert percentile([], 99) is None


@pytest.mark.parametrize("bench", [hostile, resilience], ids=["hostile", "resilience"])
def test_committed_goals_are_judged_from_the_committed_parts(bench: ModuleType):
    results = json.loads(bench.RESULTS.read_text())
    judged = bench.goals(results["config"], results["parts"])
    assert [asdict(goal) for goal in judged] == results["goals"]


def test_quick_run_writes_a_temporary_file_and_only_limits_the_parts():
    def parse(*argv: str):
        return options.parse_args(
            argv, "", hostile.Config(), hostile.QUICK, hostile.RESULTS, hostile.PARTS
        )

    cfg, args = parse("--quick", "--only", "cases,hang")
    assert (cfg.parts, cfg.repeats) == (("cases", "hang"), hostile.QUICK["repeats"])
    assert args.output.name == "modelyard-hostile-quick.json"
    cfg, args = parse()
    assert (cfg, args.output) == (hostile.Config(), hostile.RESULTS)
    with pytest.raises(SystemExit):
        parse("--only", "cases,nonsense")
