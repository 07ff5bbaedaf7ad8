"""Datasets bundled with scikit-learn, and the fixed seeded split into train and holdout."""

from dataclasses import dataclass

import pandas as pd

from registry.contract import HOLDOUT_TARGET, Task

_LOADERS: dict[str, tuple[Task, str]] = {
    "breast-cancer": ("classification", "load_breast_cancer"),
    "diabetes": ("regression", "load_diabetes"),
}
"""Each dataset's task and its loader in `sklearn.datasets` (imported when a split is made)."""
NAMES = tuple(_LOADERS)


@dataclass(frozen=True)
class Split:
    """A dataset split into train and holdout, with named feature columns."""

    name: str
    task: Task
    x_train: pd.DataFrame
    y_train: pd.Series
    x_holdout: pd.DataFrame
    y_holdout: pd.Series

    @property
    def features(self) -> list[str]:
        """The input columns every version of a model trained on this dataset takes."""
        return list(self.x_train.columns)

    def holdout_frame(self) -> pd.DataFrame:
        """The holdout features with the target as column `target`."""
        return self.x_holdout.assign(**{HOLDOUT_TARGET: self.y_holdout.to_numpy()})


def load_split(name: str, *, split_seed: int = 0, holdout_fraction: float = 0.25) -> Split:
    """Load a bundled dataset and split it; the same seed always gives the same split."""
    if name not in _LOADERS:
        raise ValueError(f"unknown dataset '{name}'; choose one of: {', '.join(NAMES)}")
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    task, loader = _LOADERS[name]
    bunch = getattr(datasets, loader)(as_frame=True)
    features = bunch.data.rename(columns=lambda column: column.replace(" ", "_")).astype("float64")
    target = bunch.target.astype("int64" if task == "classification" else "float64")
    x_train, x_holdout, y_train, y_holdout = train_test_split(
        features,
        target,
        test_size=holdout_fraction,
        random_state=split_seed,
        stratify=target if task == "classification" else None,
    )
    return Split(name, task, x_train, y_train, x_holdout, y_holdout)
