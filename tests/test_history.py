"""Alias history: promote, rollback, --expect, moves made in the UI, racing promotes."""

import json
import threading
import uuid
from collections.abc import Callable

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from registry import history
from registry.cli import app
from registry.errors import NothingToRollBack, StaleAlias

NewModel = Callable[[int], str]


@pytest.fixture(scope="module")
def client(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri)


@pytest.fixture
def new_model(client: MlflowClient) -> NewModel:
    """A registered model of its own with `n` versions (cheap: no model is logged)."""

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


def _alias(client: MlflowClient, name: str, alias: str) -> str:
    return str(client.get_model_version_by_alias(name, alias).version)


def _moves(client: MlflowClient, name: str) -> list[history.Move]:
    return history.read(client, name)[1]


def _cli(*argv: str, actor: str = "ci-bot") -> object:
    return CliRunner(env={"MODELYARD_ACTOR": actor}).invoke(app, list(argv))


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
