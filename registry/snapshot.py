"""One bounded call that reads every registered model's aliases and tags."""

from collections.abc import Mapping
from dataclasses import dataclass, field

from mlflow.tracking import MlflowClient


@dataclass(frozen=True)
class ModelState:
    """A registered model's aliases (alias -> version) and tags, as read at one moment."""

    name: str
    aliases: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)


def read(client: MlflowClient, *, page_size: int = 1000) -> dict[str, ModelState]:
    """Every registered model's state (one search call per `page_size` models)."""
    states: dict[str, ModelState] = {}
    token = None
    while True:
        page = client.search_registered_models(max_results=page_size, page_token=token)
        for model in page:
            states[model.name] = ModelState(
                model.name,
                {alias: str(v) for alias, v in (model.aliases or {}).items()},
                dict(model.tags or {}),
            )
        token = page.token
        if not token:
            return states
