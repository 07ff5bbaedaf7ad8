"""Readiness and the /models document as pure functions of the slot table (no server)."""

import dataclasses

from serving.settings import ServingSettings
from serving.slots import ServedModel, Slot, SlotTable
from serving.status import check_model, check_process, describe
from serving.traffic import TrafficSplit


def _served(name: str, *, error: str | None = None, note: str | None = None) -> ServedModel:
    production = Slot(name, "production", error=error, note=note)
    return ServedModel(
        name,
        {"production": production, "staging": Slot(name, "staging")},
        TrafficSplit({"production": 90, "staging": 10}, "exp-1", "tag"),
        "production",
    )


def test_check_process_with_nothing_served_names_the_registry_error():
    settings = ServingSettings()
    assert check_process(settings, SlotTable(), None).reasons == (
        "no model with a required alias found yet",
    )
    unreachable = check_process(settings, SlotTable(), "registry not reachable: timeout")
    assert not unreachable.ready
    assert unreachable.reasons == ("registry not reachable: timeout",)


def test_check_process_names_every_missing_or_unloaded_model():
    settings = ServingSettings(models=["iris", "wine", "absent"])
    table = SlotTable({"iris": _served("iris", error="version 3: boom"), "wine": _served("wine")})
    assert check_process(settings, table, None).reasons == (
        "model 'absent' not loaded yet",
        "iris@production: version 3: boom",
        "wine@production: absent",
    )


def test_check_process_asks_only_required_models():
    settings = ServingSettings(required_models=["wine"])
    table = SlotTable({"iris": _served("iris", error="version 3: boom"), "wine": _served("wine")})
    assert check_process(settings, table, None).reasons == ("wine@production: absent",)


def test_check_model_says_why_its_required_alias_is_not_ready():
    assert check_model(_served("iris", note="alias not set")).reasons == ("alias not set",)
    assert check_model(_served("iris")).reasons == ("alias 'production' is absent",)


def test_describe_is_the_models_document():
    table = SlotTable({"iris": _served("iris", note="alias not set")})
    document = dataclasses.asdict(describe(table, None, 1700000000.0))
    assert document == {
        "registry_error": None,
        "last_poll": 1700000000.0,
        "poll_age_s": None,
        "stale": False,
        "models": {
            "iris": {
                "ready": False,
                "required_alias": "production",
                "traffic": {
                    "weights": {"production": 90, "staging": 10},
                    "salt": "exp-1",
                    "source": "tag",
                    "problem": None,
                },
                "shadow": {},
                "aliases": {
                    alias: {
                        "state": "absent",
                        "version": None,
                        "run_id": None,
                        "target": None,
                        "registry_version": None,
                        "predict": None,
                        "last_error": None,
                        "note": note,
                    }
                    for alias, note in (("production", "alias not set"), ("staging", None))
                },
            }
        },
    }
