"""The output contract, shared by every version whatever framework trained it.

Logged as code with each version (MLflow "models from code"). Inputs are the named feature
columns of the signature; outputs are a DataFrame:
- classification: `label` (int64) and `probability` (float64, of the positive class 1);
- regression: `prediction` (float64).
Weights are loaded without pickle: scikit-learn pipelines from skops, PyTorch from a state dict.
"""

from collections.abc import Callable
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc.model import PythonModel, PythonModelContext

SKOPS_TRUSTED = [
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.linear_model._ridge.Ridge",
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.ensemble._forest.RandomForestRegressor",
    "sklearn.tree._classes.DecisionTreeClassifier",
    "sklearn.tree._classes.DecisionTreeRegressor",
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingRegressor",
]


def build_mlp(n_features: int, hidden: int) -> Any:
    """The PyTorch network: standardised inputs -> hidden ReLU layer -> one output."""
    import torch

    return torch.nn.Sequential(
        torch.nn.Linear(n_features, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1)
    )


def to_contract(task: str, scores: np.ndarray) -> pd.DataFrame:
    """Turn one score per row (positive-class probability or regression value) into the contract."""
    if task == "classification":
        return pd.DataFrame(
            {"label": (scores >= 0.5).astype("int64"), "probability": scores.astype("float64")},
            copy=False,
        )
    return pd.DataFrame({"prediction": scores.astype("float64")}, copy=False)


class ContractModel(PythonModel):
    """Any framework's model behind the registered model's one output contract."""

    def load_context(self, context: PythonModelContext) -> None:
        config = context.model_config
        self.task: str = config["task"]
        self.features: list[str] = config["features"]
        self._scorer: Callable[[np.ndarray], np.ndarray]
        if config["framework"] == "torch":
            self._load_torch(context.artifacts["weights"], int(config["hidden"]))
        else:
            import skops.io

            self._pipeline = skops.io.load(context.artifacts["pipeline"], trusted=SKOPS_TRUSTED)
            self._scorer = self._score_sklearn

    def _load_torch(self, path: str, hidden: int) -> None:
        import torch

        state = torch.load(path, weights_only=True)
        self._net = build_mlp(len(self.features), hidden)
        self._net.load_state_dict(state["net"])
        self._net.eval()
        self._x_mean, self._x_std = state["x_mean"].numpy(), state["x_std"].numpy()
        self._y_mean, self._y_std = float(state["y_mean"]), float(state["y_std"])
        self._scorer = self._score_torch

    def score(self, x: np.ndarray) -> np.ndarray:
        """One score per row of `x` (columns in `features` order): probability or value."""
        return self._scorer(x)

    def _score_sklearn(self, x: np.ndarray) -> np.ndarray:
        if self.task == "classification":
            return np.asarray(self._pipeline.predict_proba(x)[:, 1])
        return np.asarray(self._pipeline.predict(x))

    def _score_torch(self, x: np.ndarray) -> np.ndarray:
        import torch

        standardised = torch.from_numpy(((x - self._x_mean) / self._x_std).astype("float32"))
        with torch.inference_mode():
            out = self._net(standardised).squeeze(-1).double().numpy()
        if self.task == "classification":
            return np.asarray(1.0 / (1.0 + np.exp(-out)))
        return np.asarray(out * self._y_std + self._y_mean)

    def predict(
        self,
        context: PythonModelContext | None,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        """Score the named feature columns (extra columns are ignored) into the contract."""
        columns = (
            model_input
            if model_input.columns.tolist() == self.features
            else model_input[self.features]
        )
        x = columns.to_numpy(dtype="float64")
        return to_contract(self.task, self.score(x))


mlflow.models.set_model(ContractModel())
