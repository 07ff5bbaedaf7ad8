"""Alias history: promote, rollback, --expect, moves made in the UI, racing promotes, and
a registry that refuses the history write or is overtaken mid-move (through a real proxy)."""

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import mlflow
import pytest
import requests
from click.testing import Result
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from registry import history
from registry.cli import app
from registry.errors import NothingToRollBack, StaleAlias
from tests.conftest import BUCKET, S3
from tests.postgres import running_postgres
from tests.servers import restoring_tracking_uri, start_mlflow, stop

NewModel = Callable[[int], str]


@pytest.fixture(scope="module")
def client(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri)


def _model_maker(client: MlflowClient) -> NewModel:
    def make(n: int) -> str:
        name = f"history-{uuid.uuid4().hex[:8]}"
        experiment = client.get_experiment_by_name("Default")
        assert experiment is not None
        run = client.create_run(experiment.experiment_id)
        client.create_registered_model(name)
        for _ in range(n):
            client.create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id)
        return name

    return make


@pytest.fixture
def new_model(client: MlflowClient) -> NewModel:
    """A registered model of its own with `n` versions (cheap: no model is logged)."""
    return _model_maker(client)


@pytest.fixture(scope="module")
def postgres_uri(s3: S3, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An `mlflow server` on PostgreSQL, which enforces the 5,000-character tag column."""
    with running_postgres("history") as postgres:
        uri, process = start_mlflow(
            tmp_path_factory.mktemp("mlflow-pg"), s3.endpoint, BUCKET, postgres.url("history")
        )
        yield uri
        stop(process)


class Proxy:
    """A real HTTP hop in front of MLflow. Once an alias move has gone through it, it runs
    `after_alias` and, with `refuse_tags_after_alias`, answers every tag write 403."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.after_alias: Callable[[], None] = lambda: None
        self.refuse_tags_after_alias = False
        self.alias_moved = False
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if proxy.alias_moved and proxy.refuse_tags_after_alias and "set-tag" in self.path:
                    self.answer(403, b'{"error_code": "PERMISSION_DENIED", "message": "no"}')
                    return
                upstream = requests.request(
                    self.command,
                    proxy.upstream + self.path,
                    data=body,
                    headers={"Content-Type": self.headers.get("Content-Type", "")},
                    timeout=30,
                )
                if self.command == "POST" and self.path.endswith("/registered-models/alias"):
                    proxy.alias_moved = True
                    proxy.after_alias()
                self.answer(upstream.status_code, upstream.content)

            def answer(self, status: int, content: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, format: str, *args: object) -> None:
                pass

        for verb in ("GET", "POST", "PATCH", "DELETE"):
            setattr(Handler, f"do_{verb}", Handler.forward)
        return Handler


@pytest.fixture
def proxy(tracking_uri: str) -> Iterator[Proxy]:
    served = Proxy(tracking_uri)
    yield served
    served.server.shutdown()
    served.server.server_close()


def _alias(client: MlflowClient, name: str, alias: str) -> str:
    return str(client.get_model_version_by_alias(name, alias).version)


def _moves(client: MlflowClient, name: str) -> list[history.Move]:
    return history.read(client, name)[1]


def _cli(*argv: str, actor: str = "ci-bot", uri: str | None = None) -> Result:
    target = uri or mlflow.get_tracking_uri()
    env = {"MODELYARD_ACTOR": actor, "MLFLOW_TRACKING_URI": target}
    with restoring_tracking_uri():
        mlflow.set_tracking_uri(target)  # this process's MLflow may point elsewhere
        return CliRunner(env=env).invoke(app, list(argv))


def test_history_promote_records_who_when_from_to_why(client: MlflowClient, new_model: NewModel):
    name = new_model(2)
    result = _cli("promote", name, "--alias", "production", "--version", "1", "--reason", "first")
    assert result.exit_code == 0, result.output
    result = _cli("promote", name, "--alias", "production", "--version", "2", "--reason", "better")
    assert result.exit_code == 0, result.output
    assert "1 -> 2" in result.stdout
    assert _alias(client, name, "production") == "2"
    first, second = _moves(client, name)
    assert (first.from_version, first.to_version, first.reason) == (None, "1", "first")
    assert (second.from_version, second.to_version, second.reason) == ("1", "2", "better")
    assert second.actor == "ci-bot"
    assert second.kind == "promote"
    assert second.at >= first.at
    assert second.key > first.key


def test_history_promote_from_alias(client: MlflowClient, new_model: NewModel):
    name = new_model(2)
    client.set_registered_model_alias(name, "staging", "2")
    result = _cli("promote", name, "--alias", "production", "--from-alias", "staging")
    assert result.exit_code == 0, result.output
    assert _alias(client, name, "production") == "2"
    assert _moves(client, name)[-1].reason == "copied from alias 'staging'"


def test_history_promote_then_rollback_restores_previous(client: MlflowClient, new_model: NewModel):
    name = new_model(3)
    for version in ("1", "3"):
        history.promote(client, name, "production", version, who="alice")
    result = _cli("rollback", name, "--alias", "production", "--reason", "p99 doubled")
    assert result.exit_code == 0, result.output
    assert _alias(client, name, "production") == "1"
    last = _moves(client, name)[-1]
    assert (last.kind, last.from_version, last.to_version) == ("rollback", "3", "1")
    assert "p99 doubled" in last.reason
    history.rollback(client, name, "production")  # a second rollback undoes the first
    assert _alias(client, name, "production") == "3"


def test_history_rollback_with_nothing_before_refuses(client: MlflowClient, new_model: NewModel):
    name = new_model(1)
    history.promote(client, name, "production", "1")
    with pytest.raises(NothingToRollBack, match="did not exist before"):
        history.rollback(client, name, "production")
    result = _cli("rollback", name, "--alias", "production")
    assert result.exit_code == 1
    assert "cannot roll back" in result.stderr
    assert _alias(client, name, "production") == "1"


def test_history_expect_refuses_a_stale_move(client: MlflowClient, new_model: NewModel):
    name = new_model(3)
    history.promote(client, name, "production", "2")
    result = _cli("promote", name, "--alias", "production", "--version", "3", "--expect", "1")
    assert result.exit_code == 1
    assert "names version 2, not the expected version 1" in result.stderr
    assert "Traceback" not in result.output
    assert _alias(client, name, "production") == "2"
    moved = _cli("promote", name, "--alias", "production", "--version", "3", "--expect", "2")
    assert moved.exit_code == 0, moved.output
    assert _alias(client, name, "production") == "3"


def test_history_ui_move_is_noticed_and_recorded(client: MlflowClient, new_model: NewModel):
    name = new_model(3)
    history.promote(client, name, "production", "1", who="alice")
    client.set_registered_model_alias(name, "production", "2")  # someone in the MLflow UI
    note = _cli("history", name)
    assert "moved outside modelyard" in note.stdout
    history.promote(client, name, "production", "3", who="bob")
    moves = _moves(client, name)
    assert [(m.from_version, m.to_version, m.actor) for m in moves] == [
        (None, "1", "alice"),
        ("1", "2", history.OUTSIDE_ACTOR),
        ("2", "3", "bob"),
    ]
    assert moves[1].kind == "outside"


def test_history_rollback_undoes_a_ui_move(client: MlflowClient, new_model: NewModel):
    name = new_model(2)
    history.promote(client, name, "production", "1")
    client.set_registered_model_alias(name, "production", "2")
    history.rollback(client, name, "production")
    assert _alias(client, name, "production") == "1"
    assert [m.kind for m in _moves(client, name)] == ["promote", "outside", "rollback"]


def test_history_racing_promotes_are_both_recorded(client: MlflowClient, new_model: NewModel):
    """MLflow cannot compare-and-set an alias; what modelyard guarantees is that no event is
    lost: every append has a key of its own."""
    name = new_model(5)
    history.promote(client, name, "production", "1")
    races = [("2", "3"), ("4", "5"), ("3", "2")]
    for race, versions in enumerate(races):
        start = threading.Barrier(len(versions))
        errors: list[BaseException] = []

        def promote(
            version: str,
            race: int = race,
            start: threading.Barrier = start,
            errors: list[BaseException] = errors,
        ) -> None:
            start.wait()
            try:
                history.promote(client, name, "production", version, who=f"racer-{race}")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=promote, args=(v,)) for v in versions]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not errors
        recorded = [m.to_version for m in _moves(client, name) if m.actor == f"racer-{race}"]
        assert sorted(recorded) == sorted(versions)
        assert _alias(client, name, "production") in versions
    history.promote(client, name, "production", "1")
    moves = _moves(client, name)
    assert len({m.key for m in moves}) == len(moves)
    assert moves[-1].to_version == _alias(client, name, "production") == "1"


def test_history_events_are_one_small_tag_each():
    moves = [
        history.new_move(
            "p",
            "1",
            "2",
            actor="a" * 9000,
            reason="r" * 9000,
            kind="promote",
            now_ms=1_700_000_000_000,
        )
        for _ in range(50)
    ]
    assert len({m.key for m in moves}) == 50  # same millisecond, still distinct keys
    assert all(len(m.encode()) < 5000 for m in moves)
    assert all(len(m.key) < 250 for m in moves)
    decoded = history.decode({m.key: m.encode() for m in moves} | {"other": "x"})
    assert decoded == sorted(moves, key=lambda m: m.key)
    assert json.loads(moves[0].encode())["to"] == "2"


def test_history_decode_orders_by_time_and_skips_junk():
    late = history.new_move("p", "1", "2", actor="a", reason="", kind="promote", now_ms=2000)
    early = history.new_move("p", None, "1", actor="a", reason="", kind="promote", now_ms=1000)
    tags = {late.key: late.encode(), early.key: early.encode(), f"{history.TAG_PREFIX}x": "{"}
    assert history.decode(tags) == [early, late]


def test_history_stale_alias_error_names_everything():
    error = StaleAlias("m", "production", "3", "4")
    assert str(error) == (
        "model 'm' alias 'production' names version 4, not the expected version 3; "
        "refusing to move it"
    )


def test_history_cli_prints_moves(client: MlflowClient, new_model: NewModel):
    name = new_model(2)
    history.promote(client, name, "production", "1", reason="launch", who="alice")
    history.promote(client, name, "staging", "2", who="bob")
    result = _cli("history", name, "--alias", "production")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["when", "(UTC)", "alias"]
    assert len(lines) == 2
    assert "alice" in lines[1]
    assert "launch" in lines[1]
    unknown = _cli("history", "no-such-model")
    assert unknown.exit_code == 2
    assert "no registered model named 'no-such-model'" in unknown.stderr


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["promote", "m", "--alias", "production"], "exactly one of --version and --from-alias"),
        (["promote", "m", "--alias", "p", "--version", "1", "--from-alias", "s"], "exactly one"),
        (["promote", "m", "--alias", "p", "--version", "v1"], "a version number"),
        (["promote", "m", "--alias", "p", "--version", "1", "--expect", "x"], "--expect"),
    ],
)
def test_history_promote_bad_options_exit_2(argv: list[str], words: str):
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2
    assert words in result.output


def test_history_long_non_ascii_reason_fits_postgres_tag_limit(postgres_uri: str):
    client = MlflowClient(postgres_uri)
    name = _model_maker(client)(2)
    reason = "é" * 900
    result = _cli(
        "promote",
        name,
        "--alias",
        "production",
        "--version",
        "1",
        "--reason",
        reason,
        uri=postgres_uri,
    )
    assert result.exit_code == 0, result.output
    long = _cli(
        "promote",
        name,
        "--alias",
        "production",
        "--version",
        "2",
        "--reason",
        'ü"' * 4000,
        uri=postgres_uri,
    )
    assert long.exit_code == 0, long.output
    assert _alias(client, name, "production") == "2"
    first, second = _moves(client, name)
    assert (first.reason, first.state) == (reason, "applied")
    assert second.reason.endswith(history.CUT_MARKER)
    assert second.reason.startswith('ü"' * 1000)


@pytest.mark.parametrize("text", ["é", '"', "\x00", "😀", "\udcff", "a"])
def test_history_event_fits_one_tag_for_any_text(text: str):
    move = history.new_move("p", "1", "2", actor=text * 9000, reason=text * 9000, kind="promote")
    encoded = move.encode()
    assert len(encoded) <= 5000  # the column of registered-model tag values
    encoded.encode("utf-8")  # what goes over the wire
    assert move.reason.endswith(history.CUT_MARKER)
    assert len(encoded) > 4990, "cut by its encoded length, not for a worst case"
    assert json.loads(encoded)["reason"] == move.reason


def test_history_tag_write_refused_after_the_move_leaves_an_unconfirmed_event(
    client: MlflowClient, new_model: NewModel, proxy: Proxy
):
    name = new_model(3)
    history.promote(client, name, "production", "1")
    proxy.refuse_tags_after_alias = True
    result = _cli(
        "promote", name, "--alias", "production", "--version", "2", "--reason", "x", uri=proxy.url
    )
    assert result.exit_code == 2
    assert "could not be confirmed" in result.stderr
    assert _alias(client, name, "production") == "2"
    last = _moves(client, name)[-1]
    assert (last.from_version, last.to_version, last.state) == ("1", "2", "pending")
    shown = _cli("history", name)
    assert "promote (unconfirmed)" in shown.stdout
    assert "moved outside modelyard" not in shown.stdout
    history.promote(client, name, "production", "3")  # settles the unconfirmed event
    moves = _moves(client, name)
    assert [(m.to_version, m.kind, m.state) for m in moves] == [
        ("1", "promote", "applied"),
        ("2", "promote", "applied"),
        ("3", "promote", "applied"),
    ]


def test_history_refused_first_write_moves_nothing(
    client: MlflowClient, new_model: NewModel, proxy: Proxy
):
    name = new_model(2)
    history.promote(client, name, "production", "1")
    proxy.refuse_tags_after_alias = True
    proxy.alias_moved = True  # refuse every tag write from the start
    result = _cli("promote", name, "--alias", "production", "--version", "2", uri=proxy.url)
    assert result.exit_code == 2
    assert _alias(client, name, "production") == "1"
    assert [m.to_version for m in _moves(client, name)] == ["1"]


def test_history_expect_reads_the_alias_back(
    client: MlflowClient, new_model: NewModel, proxy: Proxy
):
    name = new_model(3)
    history.promote(client, name, "production", "1")
    proxy.after_alias = lambda: client.set_registered_model_alias(name, "production", "3")
    result = _cli(
        "promote", name, "--alias", "production", "--version", "2", "--expect", "1", uri=proxy.url
    )
    assert result.exit_code == 1
    assert "alias moved by someone else to v3" in result.stderr
    assert _moves(client, name)[-1].state == "applied"


def test_history_orders_events_by_what_each_writer_saw(client: MlflowClient, new_model: NewModel):
    """A writer whose clock runs an hour ahead must not push later events before its own."""
    name = new_model(2)
    ahead = history.new_move(
        "production",
        None,
        "1",
        actor="fast-clock",
        reason="",
        kind="promote",
        seq=1,
        state="applied",
        now_ms=time.time_ns() // 1_000_000 + 3_600_000,
    )
    client.set_registered_model_alias(name, "production", "1")
    client.set_registered_model_tag(name, ahead.key, ahead.encode())
    history.promote(client, name, "production", "2", who="bob")
    moves = _moves(client, name)
    assert [(m.actor, m.to_version) for m in moves] == [("fast-clock", "1"), ("bob", "2")]
    assert "moved outside modelyard" not in _cli("history", name).stdout
