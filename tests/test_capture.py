"""The prediction log as clients and data scientists see it: every answered row in the log,
labels stored, nothing lost when the store is down or the process stops, never a slower answer."""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from registry import predictionlog
from registry.client import connect
from registry.predictionlog import Window
from serving.app import create_app
from serving.settings import ServingSettings
from tests.conftest import S3, wait_until
from tests.servers import S3_ENV
from training.datasets import load_split
from training.faults import register_fault_model

MODEL = "capture-clf"


@pytest.fixture(scope="module")
def holdout() -> pd.DataFrame:
    frame: pd.DataFrame = load_split("breast-cancer").x_holdout
    return frame


@pytest.fixture(scope="module")
def registered(tracking_uri: str) -> str:
    registry = connect(tracking_uri)
    register_fault_model(MODEL, registry, alias="production")
    register_fault_model(MODEL, registry, alias="staging")
    registry.set_registered_model_tag(
        MODEL, "modelyard.traffic", json.dumps({"production": 50, "staging": 50, "salt": "s1"})
    )
    return MODEL


@contextmanager
def logging_server(root: str | Path, spool: Path, **settings: Any) -> Iterator[TestClient]:
    """The serving app logging to `root`, both aliases of the model loaded."""
    options: dict[str, Any] = {"prediction_log_flush_s": 0.2} | settings
    app = create_app(
        ServingSettings(
            models=[MODEL],
            poll_interval_s=0.3,
            prediction_log=str(root),
            prediction_log_spool=spool,
            **options,
        )
    )
    with TestClient(app) as client:
        wait_until(lambda: _loaded(client), what="both aliases to load")
        yield client


def _loaded(client: TestClient) -> bool:
    served = client.get("/models").json()["models"].get(MODEL, {"aliases": {}})
    return [s["state"] for s in served["aliases"].values()] == ["ready", "ready"]


def _body(frame: pd.DataFrame) -> dict[str, Any]:
    return {"dataframe_split": frame.to_dict(orient="split", index=False)}


def _logged(root: str | Path, env: dict[str, str] | None = None) -> pd.DataFrame:
    log = predictionlog.open_root(str(root), env or {})
    return predictionlog.read_predictions(log, MODEL, Window()).to_pandas()


def _all_columns(root: Path) -> pa.Table:
    """Every column of every predictions file under `root`, inputs included."""
    files = sorted((root / "predictions").rglob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files], promote_options="permissive")


def test_every_answered_row_is_logged_with_its_routing_its_outputs_and_its_inputs(
    registered: str, holdout: pd.DataFrame, tmp_path: Path
) -> None:
    root = tmp_path / "log"
    with logging_server(root, tmp_path / "spool") as client:
        answers = []
        for i in range(20):
            rows = holdout.iloc[i : i + 1 + i % 3]
            headers = {"X-Routing-Key": f"user-{i}", "X-Request-ID": f"req-{i}"}
            response = client.post(
                f"/models/{MODEL}/invocations", json=_body(rows), headers=headers
            )
            assert response.status_code == 200
            answers.append((f"req-{i}", rows, response))
        pinned = client.post(
            f"/models/{MODEL}/aliases/staging/invocations",
            json=_body(holdout.iloc[:1]),
            headers={"X-Request-ID": "pinned-1"},
        )
        bad = client.post(
            f"/models/{MODEL}/invocations",
            json={"dataframe_split": {"columns": ["nope"], "data": [[1]]}},
            headers={"X-Request-ID": "bad-1"},
        )
        assert (pinned.status_code, bad.status_code) == (200, 400)
        expected = sum(len(rows) for _, rows, _ in answers) + 2
        wait_until(lambda: len(_logged(root)) == expected, timeout_s=20, what="rows shipped")

    logged = _logged(root).set_index(["request_id", "row"]).sort_index()
    everything = _all_columns(root).to_pandas().set_index(["request_id", "row"])
    for request_id, rows, response in answers:
        mine = logged.loc[request_id]
        assert list(mine.index) == list(range(len(rows)))
        assert set(mine["alias"]) == {response.headers["X-Model-Alias"]}
        assert set(mine["version"]) == {response.headers["X-Model-Version"]}
        assert set(mine["assignment"]) == {"key"}
        assert set(mine["salt"]) == {"s1"}
        answered = pd.DataFrame(response.json()["predictions"])
        assert mine["label"].tolist() == answered["label"].tolist()
        assert mine["probability"].tolist() == pytest.approx(answered["probability"].tolist())
        inputs = everything.loc[request_id][[f"input.{c}" for c in rows.columns]]
        assert inputs.to_numpy().tolist() == rows.to_numpy().tolist()
    assert logged.loc["pinned-1"]["assignment"].tolist() == ["pinned"]
    error = logged.loc["bad-1"]
    assert error["status"].tolist() == [400]
    assert error["label"].isna().all()
    # the routing key is stored only as its salted hash
    assert set(logged.loc["req-3"]["key_hash"]) == {predictionlog.key_hash("s1", "user-3")}
    for path in (root / "predictions").rglob("*.parquet"):
        assert b"user-3" not in path.read_bytes()
    # Hive layout: model, date and hour partitions; files named <replica>-<seq>
    path = next((root / "predictions").rglob("*.parquet"))
    assert path.relative_to(root).parts[1] == f"model={MODEL}"
    assert path.parent.name.startswith("hour=")
    assert path.parent.parent.name.startswith("date=")


def test_stopping_ships_what_is_queued_before_the_next_flush(
    registered: str, holdout: pd.DataFrame, tmp_path: Path
) -> None:
    root = tmp_path / "log"
    with logging_server(root, tmp_path / "spool", prediction_log_flush_s=60) as client:
        for _ in range(30):
            response = client.post(f"/models/{MODEL}/invocations", json=_body(holdout.iloc[:2]))
            assert response.status_code == 200
        assert not (root / "predictions").exists()  # nothing flushed yet
    assert len(_logged(root)) == 60


def test_a_spool_left_by_a_dead_process_is_shipped_by_the_next_one(
    registered: str, holdout: pd.DataFrame, tmp_path: Path
) -> None:
    root, spool = tmp_path / "log", tmp_path / "spool"
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the log's root should be: every ship fails")
    with logging_server(blocked / "log", spool, prediction_log_flush_s=0.1) as client:
        for _ in range(10):
            assert client.post(
                f"/models/{MODEL}/invocations", json=_body(holdout.iloc[:3])
            ).is_success
        wait_until(lambda: len(list(spool.rglob("*.parquet"))) >= 1, what="rows spooled")
    left = list(spool.glob("*/predictions/*/*.parquet"))
    assert left, "the spool keeps what could not be shipped"
    dead_replica = "host-of-a-dead-process-1"  # what another process's spool is named
    left[0].parent.parent.parent.rename(spool / dead_replica)
    with logging_server(root, spool):
        wait_until(lambda: len(_logged(root)) == 30, timeout_s=20, what="the old spool shipped")
    names = {p.name for p in (root / "predictions").rglob("*.parquet")}
    assert all(name.startswith(f"{dead_replica}-") for name in names)
    assert not (spool / dead_replica).exists()


def test_while_the_store_is_down_requests_are_answered_and_rows_wait_in_the_spool(
    registered: str, holdout: pd.DataFrame, tmp_path: Path
) -> None:
    base = tmp_path / "store"
    base.write_text("down")  # the root's parent is a file: the store refuses every write
    root = base / "log"
    with logging_server(root, tmp_path / "spool", prediction_log_flush_s=0.1) as client:
        for _ in range(40):
            assert client.post(
                f"/models/{MODEL}/invocations", json=_body(holdout.iloc[:1])
            ).is_success
        wait_until(lambda: _metric(client, "modelyard_prediction_log_ship_failures_total") > 0)
        assert _metric(client, "modelyard_prediction_log_spool_bytes") > 0
        base.unlink()  # the store is back
        wait_until(lambda: root.exists() and len(_logged(root)) == 40, timeout_s=45)
        wait_until(lambda: _metric(client, "modelyard_prediction_log_spool_bytes") == 0)


def test_past_the_spool_cap_rows_are_dropped_and_counted_never_the_requests(
    registered: str, holdout: pd.DataFrame, tmp_path: Path
) -> None:
    base = tmp_path / "store"
    base.write_text("down")
    with logging_server(
        base / "log",
        tmp_path / "spool",
        prediction_log_flush_s=0.1,
        prediction_log_spool_max_bytes=1,
    ) as client:
        for _ in range(5):
            assert client.post(
                f"/models/{MODEL}/invocations", json=_body(holdout.iloc[:2])
            ).is_success
        wait_until(lambda: _metric(client, "modelyard_prediction_log_spool_bytes") > 0)
        for _ in range(5):
            assert client.post(
                f"/models/{MODEL}/invocations", json=_body(holdout.iloc[:2])
            ).is_success
        dropped = (
            'modelyard_prediction_log_dropped_rows_total{model="capture-clf",reason="spool_full"}'
        )
        wait_until(lambda: _metric(client, dropped) > 0, what="rows dropped past the cap")


def test_sampling_and_inputs_are_settings_per_model(
    registered: str, holdout: pd.DataFrame, tmp_path: Path
) -> None:
    root = tmp_path / "log"
    with logging_server(root, tmp_path / "spool", prediction_log_skip_inputs=[MODEL]) as client:
        assert client.post(f"/models/{MODEL}/invocations", json=_body(holdout.iloc[:2])).is_success
        wait_until(lambda: (root / "predictions").exists() and len(_logged(root)) == 2)
    assert not [c for c in _all_columns(root).column_names if c.startswith("input.")]

    root = tmp_path / "unsampled"
    with logging_server(root, tmp_path / "spool", prediction_log_sample={MODEL: 0.0}) as client:
        for _ in range(10):
            assert client.post(
                f"/models/{MODEL}/invocations", json=_body(holdout.iloc[:2])
            ).is_success
    assert not (root / "predictions").exists()


def test_shadow_answers_are_logged_beside_the_production_records_they_shadow(
    registered: str, holdout: pd.DataFrame, tmp_path: Path
) -> None:
    root = tmp_path / "log"
    with logging_server(root, tmp_path / "spool", shadow={MODEL: 1.0}) as client:
        aliases = client.get("/models").json()["models"][MODEL]["aliases"]
        staging = aliases["staging"]["version"]
        assert staging != aliases["production"]["version"]
        sent = 0
        for i in range(6):
            rows = holdout.iloc[i : i + 1 + i % 3]
            response = client.post(
                f"/models/{MODEL}/aliases/production/invocations",
                json=_body(rows),
                headers={"X-Request-ID": f"shadowed-{i}"},
            )
            assert response.status_code == 200
            sent += len(rows)
        pinned = client.post(
            f"/models/{MODEL}/aliases/staging/invocations",
            json=_body(holdout.iloc[:1]),
            headers={"X-Request-ID": "staging-1"},
        )
        assert pinned.status_code == 200
        expected = 2 * sent + 1
        wait_until(
            lambda: (root / "predictions").exists() and len(_logged(root)) == expected,
            timeout_s=20,
            what="production and shadow rows shipped",
        )

    logged = _logged(root)
    shadow = logged[logged["assignment"] == "shadow"].set_index(["request_id", "row"])
    production = logged[logged["alias"] == "production"].set_index(["request_id", "row"])
    assert sorted(shadow.index) == sorted(production.index)
    assert len(shadow) == sent
    assert set(shadow["alias"]) == {"staging"}
    assert set(shadow["version"]) == {staging}
    assert set(shadow["status"]) == {200}
    assert (shadow["latency_ms"] > 0).all()
    # the same model behind both aliases: the shadow answered what production answered
    answers = production.loc[shadow.index]
    assert shadow["label"].tolist() == answers["label"].tolist()
    assert shadow["probability"].tolist() == pytest.approx(answers["probability"].tolist())
    # inputs are stored once, with the production record
    everything = _all_columns(root).to_pandas()
    inputs = [c for c in everything.columns if c.startswith("input.")]
    assert everything.loc[everything["assignment"] == "shadow", inputs].isna().all().all()
    assert everything.loc[everything["alias"] == "production", inputs].notna().all().all()


def test_a_shadow_answer_is_logged_only_with_the_request_it_shadows(
    registered: str, holdout: pd.DataFrame, tmp_path: Path
) -> None:
    root = tmp_path / "log"
    settings: dict[str, Any] = {"shadow": {MODEL: 1.0}, "prediction_log_sample": {MODEL: 0.5}}
    with logging_server(root, tmp_path / "spool", **settings) as client:
        for i in range(40):
            response = client.post(
                f"/models/{MODEL}/aliases/production/invocations", json=_body(holdout.iloc[[i]])
            )
            assert response.status_code == 200
        shadowed = f'modelyard_shadow_rows_total{{model="{MODEL}"'
        wait_until(lambda: _metric_sum(client, shadowed) == 40, what="every request shadowed")
        wait_until(lambda: _paired(*_pairs(root)), timeout_s=20, what="the shadow records shipped")
    production, shadow = _pairs(root)
    assert 0 < len(production) < 40
    assert shadow == production


def _paired(production: set[str], shadow: set[str]) -> bool:
    return bool(production) and production == shadow


def _pairs(root: Path) -> tuple[set[str], set[str]]:
    """The request ids of the production records and of the shadow records logged."""
    if not (root / "predictions").exists():
        return set(), set()
    logged = _logged(root)
    kinds = [
        logged.loc[logged["assignment"] == kind, "request_id"] for kind in ("pinned", "shadow")
    ]
    return set(kinds[0]), set(kinds[1])


def test_feedback_is_accepted_counted_and_stored_for_the_report(
    registered: str, tmp_path: Path
) -> None:
    root = tmp_path / "log"
    labels = [{"request_id": f"r-{i}", "row": 0, "target": i % 2} for i in range(5)]
    with logging_server(root, tmp_path / "spool") as client:
        response = client.post(f"/models/{MODEL}/feedback", json={"feedback": labels})
        assert (response.status_code, response.json()) == (202, {"accepted": 5})
        log = predictionlog.open_root(str(root), {})
        wait_until(lambda: predictionlog.read_feedback(log, MODEL).num_rows == 5)
    stored = predictionlog.read_feedback(log, MODEL).to_pandas().sort_values("request_id")
    assert stored["target"].tolist() == [0.0, 1.0, 0.0, 1.0, 0.0]


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (
            {"feedback": [{"request_id": "a", "row": 0, "target": 1}, {"row": 0, "target": 1}]},
            "item 1: missing request_id",
        ),
        (
            {"feedback": [{"request_id": "a", "row": -1, "target": 1}]},
            "item 0: row must be an integer >= 0",
        ),
        (
            {"feedback": [{"request_id": "a", "row": 0, "target": "yes"}]},
            "item 0: target must be a number",
        ),
        (
            {"feedback": [{"request_id": "a", "row": 0.5, "target": 1}]},
            "item 0: row must be an integer",
        ),
        (
            {"feedback": [{"request_id": "a", "row": 0, "target": 1, "x": 2}]},
            "unexpected field 'x'",
        ),
        ({"feedback": []}, '{"feedback"'),
        ([1, 2], '{"feedback"'),
    ],
)
def test_bad_feedback_gets_400_naming_the_item_and_stores_nothing(
    registered: str, tmp_path: Path, body: Any, named: str
) -> None:
    root = tmp_path / "log"
    with logging_server(root, tmp_path / "spool") as client:
        response = client.post(f"/models/{MODEL}/feedback", json=body)
        assert response.status_code == 400
        assert named in response.json()["message"]
    assert not (root / "feedback").exists()


def test_feedback_needs_a_log_and_a_served_model(
    registered: str, serving: TestClient, tmp_path: Path
) -> None:
    labels = {"feedback": [{"request_id": "a", "row": 0, "target": 1}]}
    response = serving.post("/models/cancer-classifier/feedback", json=labels)
    assert response.status_code == 404
    assert "MODELYARD_PREDICTION_LOG" in response.json()["message"]
    with logging_server(tmp_path / "log", tmp_path / "spool") as client:
        response = client.post("/models/no-such-model/feedback", json=labels)
        assert response.status_code == 404


def test_the_log_ships_to_s3(
    registered: str, holdout: pd.DataFrame, tmp_path: Path, s3: S3, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = S3_ENV | {"MLFLOW_S3_ENDPOINT_URL": s3.endpoint}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    root = "s3://modelyard-test/prediction-log"
    with logging_server(root, tmp_path / "spool") as client:
        response = client.post(f"/models/{MODEL}/invocations", json=_body(holdout.iloc[:4]))
        assert response.status_code == 200
        wait_until(lambda: len(_logged(root, env)) == 4, timeout_s=20)
    assert set(_logged(root, env)["request_id"]) == {response.headers["X-Request-ID"]}


def _metric(client: TestClient, series: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _metric_sum(client: TestClient, prefix: str) -> float:
    """The sum of every series whose line starts with `prefix`."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in client.get("/metrics").text.splitlines()
        if line.startswith(prefix)
    )


def test_a_roll_that_fails_in_any_way_drops_its_rows_counted_and_the_roller_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from serving import capture
    from serving.metrics import Metrics

    metrics = Metrics()
    (tmp_path / "spool").mkdir()
    log = capture.PredictionCapture(
        predictionlog.open_root(str(tmp_path / "log"), {}),
        tmp_path / "spool",
        metrics,
        flush_s=0.05,
        queue_rows=1_000,
        spool_max_bytes=2**30,
        sample={},
        skip_inputs=frozenset(),
    )
    served = capture.Served("r-1", 0, "production", "1", None, "random", "", None, 1.0, 200, 1.0, 1)
    real = capture.records
    monkeypatch.setattr(capture, "records", lambda items: 1 / 0)
    log.start()
    log.record(MODEL, served)
    dropped = metrics.log_dropped.labels(MODEL, "spool_failed")
    wait_until(lambda: dropped._value.get() == 1, timeout_s=10, what="the failed roll counted")
    monkeypatch.setattr(capture, "records", real)
    log.record(MODEL, served)
    log.close(ship_timeout_s=5)
    assert len(_logged(tmp_path / "log")) == 1


def test_each_record_holds_its_own_request_s_rows_of_the_call_that_answered_it() -> None:
    """Requests merged into one predict, one predicted alone, an error, and an answer without
    one row per row asked: outputs and inputs land on the right records."""
    from serving.capture import Served, records
    from serving.inputs import Batch
    from serving.model import Predicted

    names = ["a", "b"]
    merged = pd.DataFrame({"label": [0, 1, 1, 0, 1], "probability": [0.1, 0.9, 0.8, 0.2, 0.7]})
    merged_in = Batch(names, 5, matrix=np.arange(10.0).reshape(5, 2))
    alone = pd.DataFrame({"label": [1, 0], "probability": [0.6, 0.3]})
    alone_in = Batch(names, 2, matrix=np.array([[100.0, 101.0], [102.0, 103.0]]))
    short = pd.DataFrame({"label": [1], "probability": [0.5]})
    short_in = Batch(names, 2, matrix=np.array([[200.0, 201.0], [202.0, 203.0]]))

    def served(request_id: str, rows: int, predicted: Predicted | None) -> Served:
        status = 200 if predicted is not None else 500
        return Served(
            request_id, 0, "production", "1", None, "random", None, None, 1.0, status, 1.0,
            rows, predicted, with_inputs=True,
        )  # fmt: skip

    table = records(
        [
            served("second", 3, Predicted(merged.iloc[2:5], merged, merged_in, 2)),
            served("error", 1, None),
            served("alone", 2, Predicted.alone(alone, alone_in)),
            served("first", 2, Predicted(merged.iloc[0:2], merged, merged_in, 0)),
            served("short", 2, Predicted.alone(short, short_in)),
        ]
    )
    found = {
        (r["request_id"], r["row"]): (r["label"], r["probability"], r["input.a"], r["input.b"])
        for r in table.to_pylist()
    }
    assert found == {
        ("first", 0): (0, 0.1, 0.0, 1.0),
        ("first", 1): (1, 0.9, 2.0, 3.0),
        ("second", 0): (1, 0.8, 4.0, 5.0),
        ("second", 1): (0, 0.2, 6.0, 7.0),
        ("second", 2): (1, 0.7, 8.0, 9.0),
        ("error", 0): (None, None, None, None),
        ("alone", 0): (1, 0.6, 100.0, 101.0),
        ("alone", 1): (0, 0.3, 102.0, 103.0),
        ("short", 0): (None, None, 200.0, 201.0),
        ("short", 1): (None, None, 202.0, 203.0),
    }
