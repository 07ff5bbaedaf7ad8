"""Interleaved latency: the ratio of medians sees a slower candidate and ignores shared drift."""

import time

import pandas as pd

from gates.latency import measure

FRAME = pd.DataFrame({"x": range(200)})


def _sleeper(per_call_s: float, per_row_s: float = 0.0):
    calls: list[int] = []

    def predict(frame: pd.DataFrame) -> None:
        calls.append(len(frame))
        time.sleep(per_call_s + per_row_s * len(frame))

    return predict, calls


def test_latency_ratio_of_medians_sees_a_slower_candidate():
    slow, _ = _sleeper(0.002, per_row_s=0.00004)
    fast, _ = _sleeper(0.001, per_row_s=0.00002)
    latency = measure(slow, fast, FRAME, rounds=10, batch_rows=50, repeat=1, warmup=1)
    assert 1.6 < latency.row_ratio < 2.6
    assert 1.6 < latency.batch_ratio < 2.6
    assert latency.batch_rows == 50
    assert latency.baseline_batch_ms > latency.baseline_row_ms


def test_latency_times_both_on_single_rows_and_batches_interleaved():
    candidate, candidate_calls = _sleeper(0)
    baseline, baseline_calls = _sleeper(0)
    measure(candidate, baseline, FRAME, rounds=6, batch_rows=20, repeat=2, warmup=2)
    expected = [1, 1, 20, 20] * 8  # (rounds + warmup) x (row x repeat, batch x repeat)
    assert candidate_calls == expected
    assert baseline_calls == expected


def test_latency_equal_models_ratio_near_one():
    first, _ = _sleeper(0.001)
    second, _ = _sleeper(0.001)
    latency = measure(first, second, FRAME, rounds=12, repeat=1, warmup=1)
    assert 0.7 < latency.row_ratio < 1.4
