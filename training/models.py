"""Fitting models: scikit-learn pipelines and a small PyTorch MLP, each to one score per row."""

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from training.datasets import Split
from training.pyfunc.contract_model import build_mlp

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

Estimator = Literal["linear", "random-forest", "gradient-boosting"]
ESTIMATORS: tuple[Estimator, ...] = ("linear", "random-forest", "gradient-boosting")


def fit_sklearn(split: Split, estimator: Estimator, seed: int) -> "Pipeline":
    """Scaling followed by the chosen estimator, fitted on the training rows (as arrays)."""
    from sklearn.base import BaseEstimator
    from sklearn.ensemble import (
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classify = split.task == "classification"
    choices: dict[str, BaseEstimator] = {
        "linear": LogisticRegression(max_iter=5000, random_state=seed) if classify else Ridge(),
        "random-forest": (RandomForestClassifier if classify else RandomForestRegressor)(
            n_estimators=100, random_state=seed
        ),
        "gradient-boosting": (
            HistGradientBoostingClassifier if classify else HistGradientBoostingRegressor
        )(random_state=seed),
    }
    pipeline = make_pipeline(StandardScaler(), choices[estimator])
    pipeline.fit(split.x_train.to_numpy(), split.y_train.to_numpy())
    return pipeline


def save_sklearn(pipeline: "Pipeline", directory: Path) -> Path:
    """Write the pipeline with skops (no pickle)."""
    import skops.io

    path = directory / "pipeline.skops"
    skops.io.dump(pipeline, path)
    return path


def fit_torch(split: Split, *, hidden: int, epochs: int, lr: float, seed: int) -> dict[str, Any]:
    """Train the MLP full-batch with Adam; the same seed gives the same weights.

    Returns the state to save: the network's state dict and the standardisation constants.
    """
    import torch

    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    x = split.x_train.to_numpy(dtype="float64")
    y = split.y_train.to_numpy(dtype="float64")
    x_mean, x_std = x.mean(axis=0), x.std(axis=0) + 1e-12
    classify = split.task == "classification"
    y_mean, y_std = (0.0, 1.0) if classify else (float(y.mean()), float(y.std()))
    inputs = torch.from_numpy(((x - x_mean) / x_std).astype("float32"))
    targets = torch.from_numpy(((y - y_mean) / y_std).astype("float32"))
    net = build_mlp(x.shape[1], hidden)
    loss_fn = torch.nn.BCEWithLogitsLoss() if classify else torch.nn.MSELoss()
    optimiser = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-4)
    for _ in range(epochs):
        optimiser.zero_grad()
        loss = loss_fn(net(inputs).squeeze(-1), targets)
        loss.backward()
        optimiser.step()
    return {
        "net": net.state_dict(),
        "x_mean": torch.from_numpy(x_mean),
        "x_std": torch.from_numpy(x_std),
        "y_mean": torch.tensor(y_mean, dtype=torch.float64),
        "y_std": torch.tensor(y_std, dtype=torch.float64),
    }


def save_torch(state: dict[str, Any], directory: Path) -> Path:
    """Write the state dict (tensors only, loadable with weights_only=True)."""
    import torch

    path = directory / "weights.pt"
    torch.save(state, path)
    return path


def shuffled(split: Split, seed: int) -> Split:
    """The same split with its training labels permuted: a deliberately useless model."""
    rng = np.random.default_rng(seed)
    y_train = split.y_train.iloc[rng.permutation(len(split.y_train))]
    y_train.index = split.y_train.index
    return Split(split.name, split.task, split.x_train, y_train, split.x_holdout, split.y_holdout)
