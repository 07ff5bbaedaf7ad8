"""The prediction log's contract: schema, Hive layout, windows read back, on disk and on S3."""

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from registry import predictionlog
from registry.predictionlog import LogRoot, PredictionLogError, Window
from tests.conftest import BUCKET, S3
from tests.servers import S3_ENV

START = datetime(2026, 11, 30, 22, 30, tzinfo=UTC)


def records(
    count: int, start: datetime = START, step: timedelta = timedelta(minutes=1)
) -> pa.Table:
    """`count` one-row classifier requests, one every `step`, with an input column."""
    ts = [start + i * step for i in range(count)]
    return pa.table(
        {
            "request_id": [f"req-{i}" for i in range(count)],
            "row": [0] * count,
            "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "alias": ["production"] * count,
            "version": ["1"] * count,
            "run_id": ["abc"] * count,
            "assignment": ["key"] * count,
            "salt": ["exp-1"] * count,
            "key_hash": [predictionlog.key_hash("exp-1", f"user-{i}") for i in range(count)],
            "sample_rate": [1.0] * count,
            "status": [200] * count,
            "latency_ms": [1.5] * count,
            "label": [i % 2 for i in range(count)],
            "probability": [0.9 if i % 2 else 0.1 for i in range(count)],
            "prediction": pa.nulls(count, pa.float64()),
            "input.mean radius": [float(i) for i in range(count)],
        }
    )


def test_layout_is_hive_partitioned_by_model_date_and_hour(tmp_path: Path) -> None:
    root = predictionlog.open_root(str(tmp_path), {})
    written = predictionlog.write_predictions(root, "cancer classifier/x", records(120), "r1-0")
    relative = sorted(str(Path(p).relative_to(tmp_path)) for p in written)
    model = "predictions/model=cancer%20classifier%2Fx"
    assert relative == [
        f"{model}/date=2026-11-30/hour=22/r1-0.parquet",
        f"{model}/date=2026-11-30/hour=23/r1-0.parquet",
        f"{model}/date=2026-12-01/hour=00/r1-0.parquet",
    ]
    # any engine reads it: a generic Hive reader finds the model, date and hour in the path
    generic = ds.dataset(tmp_path / "predictions", format="parquet", partitioning="hive")
    table = generic.to_table(columns=["model", "date", "hour", "request_id", "input.mean radius"])
    assert set(table["model"].to_pylist()) == {"cancer classifier/x"}
    assert table.num_rows == 120


def test_read_window_prunes_partitions_and_projects_columns(tmp_path: Path) -> None:
    root = predictionlog.open_root(str(tmp_path), {})
    predictionlog.write_predictions(root, "m", records(180), "r1-0")  # 22:30 to 01:29
    # a damaged file in an hour outside the window is never opened
    damaged = tmp_path / "predictions/model=m/date=2026-11-30/hour=22/r2-0.parquet"
    damaged.write_bytes(b"not parquet")
    window = Window(
        datetime(2026, 11, 30, 23, 15, tzinfo=UTC), datetime(2026, 12, 1, 0, 5, tzinfo=UTC)
    )
    table = predictionlog.read_predictions(root, "m", window, ["request_id", "ts"])
    assert table.column_names == ["request_id", "ts"]
    times = table["ts"].to_pylist()
    assert len(times) == 50
    assert min(times) >= window.since
    assert max(times) < window.until
    with pytest.raises(PredictionLogError, match="cannot read the log"):
        predictionlog.read_predictions(root, "m", Window())


def test_readers_skip_files_being_written_and_other_models(tmp_path: Path) -> None:
    root = predictionlog.open_root(str(tmp_path), {})
    predictionlog.write_predictions(root, "m", records(5), "r1-0")
    predictionlog.write_predictions(root, "other", records(7), "r1-0")
    hour = tmp_path / "predictions/model=m/date=2026-11-30/hour=22"
    (hour / ".r1-1.parquet").write_bytes(b"half written")
    assert predictionlog.read_predictions(root, "m", Window()).num_rows == 5
    assert predictionlog.read_predictions(root, "none", Window()).num_rows == 0


def test_records_that_break_the_schema_are_refused(tmp_path: Path) -> None:
    root = predictionlog.open_root(str(tmp_path), {})
    with pytest.raises(PredictionLogError, match="missing columns \\['status'\\]"):
        predictionlog.write_predictions(root, "m", records(3).drop_columns(["status"]), "r1-0")
    with pytest.raises(PredictionLogError, match="unexpected \\['secret'\\]"):
        predictionlog.write_predictions(
            root, "m", records(3).append_column("secret", pa.array([1, 2, 3])), "r1-0"
        )
    bad_type = records(3).set_column(11, "latency_ms", pa.array(["fast"] * 3))
    with pytest.raises(PredictionLogError, match="schema"):
        predictionlog.write_predictions(root, "m", bad_type, "r1-0")
    with pytest.raises(PredictionLogError, match="file name"):
        predictionlog.write_predictions(root, "m", records(3), "../escape")
    assert not list(tmp_path.rglob("*.parquet"))


def test_feedback_latest_label_wins_and_earlier_arrivals_are_left_out(tmp_path: Path) -> None:
    root = predictionlog.open_root(str(tmp_path), {})
    first = pa.table(
        {
            "request_id": ["a", "b"],
            "row": [0, 0],
            "target": [0.0, 1.0],
            "ts": pa.array([START, START], pa.timestamp("us", tz="UTC")),
        }
    )
    later = first.slice(0, 1).set_column(2, "target", pa.array([1.0]))
    later = later.set_column(
        3, "ts", pa.array([START + timedelta(hours=1)], pa.timestamp("us", tz="UTC"))
    )
    predictionlog.write_feedback(root, "m", first, "fb-0")
    predictionlog.write_feedback(root, "m", later, "fb-1")
    labels = predictionlog.read_feedback(root, "m").to_pandas().set_index("request_id")
    assert labels.loc["a", "target"] == 1.0
    assert labels.loc["b", "target"] == 1.0
    assert len(labels) == 2


def test_feedback_table_names_every_bad_item() -> None:
    items = pd.DataFrame(
        {
            "request_id": ["ok", "", "ok2", "x" * 201, "ok3"],
            "row": [0, 1, -1, 0, 1.5],
            "target": [1, 0, 1, float("nan"), "yes"],
        }
    )
    with pytest.raises(predictionlog.BadFeedback) as caught:
        predictionlog.feedback_table(items)
    assert [i for i, _ in caught.value.problems] == [1, 2, 3, 4]
    assert "item 2: row must be an integer >= 0" in str(caught.value)
    good = predictionlog.feedback_table(items.iloc[[0]])
    assert good.to_pylist() == [{"request_id": "ok", "row": 0, "target": 1.0}]


def test_roots_other_than_s3_or_local_are_refused() -> None:
    with pytest.raises(PredictionLogError, match="only s3"):
        predictionlog.open_root("gs://bucket/log", {})
    with pytest.raises(PredictionLogError, match="no bucket"):
        predictionlog.open_root("s3:///log", {})


def s3_root(s3: S3) -> LogRoot:
    environ = S3_ENV | {"MLFLOW_S3_ENDPOINT_URL": s3.endpoint}
    return predictionlog.open_root(f"s3://{BUCKET}/log-{uuid.uuid4().hex[:8]}", environ)


def test_round_trip_on_s3(s3: S3) -> None:
    root = s3_root(s3)
    written = predictionlog.write_predictions(root, "cancer-classifier", records(90), "r1-0")
    assert len(written) == 2
    labels = pa.table({"request_id": ["req-3"], "row": [0], "target": [1.0]})
    predictionlog.write_feedback(root, "cancer-classifier", labels)
    window = Window(START + timedelta(minutes=30), None)
    table = predictionlog.read_predictions(root, "cancer-classifier", window, ["request_id"])
    assert table.num_rows == 60
    feedback = predictionlog.read_feedback(root, "cancer-classifier")
    assert feedback["request_id"].to_pylist() == ["req-3"]
    listed = s3.client.list_objects_v2(Bucket=BUCKET, Prefix=root.path.split("/", 1)[1])  # type: ignore[attr-defined]
    keys = [item["Key"] for item in listed["Contents"]]
    assert any(
        "/predictions/model=cancer-classifier/date=2026-11-30/hour=23/r1-0.parquet" in k
        for k in keys
    )


def test_a_spooled_file_of_one_hour_ships_as_it_is_any_other_is_rewritten(
    s3: S3, tmp_path: Path
) -> None:
    root = s3_root(s3)
    ((hour, conformed),) = predictionlog.hours_of(records(30, step=timedelta(seconds=1)))
    assert hour == START.replace(minute=0)
    spooled = tmp_path / "spooled.parquet"
    predictionlog.write_file(conformed, spooled)
    (path,) = predictionlog.ship_predictions(root, "m", spooled, "r1-0")
    assert path.endswith("/date=2026-11-30/hour=22/r1-0.parquet")
    with root.filesystem.open_input_stream(path) as shipped:
        assert shipped.read() == spooled.read_bytes()  # not decoded, not re-encoded
    # records of three hours, not in the log's types (`row` int64): rewritten, split by hour
    pq.write_table(records(120), spooled)
    written = predictionlog.ship_predictions(root, "m", spooled, "r1-1")
    assert [p.rsplit("/", 2)[1] for p in written] == ["hour=22", "hour=23", "hour=00"]
    table = predictionlog.read_predictions(root, "m", Window(), ["request_id", "row"])
    assert table.num_rows == 30 + 120
    assert table.schema.field("row").type == pa.int32()
