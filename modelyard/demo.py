"""The demo registry: what `modelyard up` trains when the registry holds no models."""

from collections.abc import Callable

from registry.client import connect
from training.run import TrainSpec, train

DEMO_MODELS = (
    TrainSpec("sklearn", dataset="breast-cancer", alias="production"),
    TrainSpec("torch", dataset="breast-cancer", alias="staging"),
    TrainSpec("sklearn", dataset="diabetes", alias="production"),
)
"""One classifier with a scikit-learn production and a PyTorch staging, one regressor."""


def seed_if_empty(tracking_uri: str, say: Callable[[str], None]) -> bool:
    """Train and register the demo models unless the registry already holds a model."""
    client = connect(tracking_uri)
    if client.search_registered_models(max_results=1):
        say("      registry already holds models: keeping them")
        return False
    for number, spec in enumerate(DEMO_MODELS, start=1):
        say(f"      [{number}/{len(DEMO_MODELS)}] {spec.framework} on {spec.dataset}")
        ref = train(spec, client)
        say(f"            registered {ref}")
    return True
