"""The MLflow internals that calling a loaded model directly needs, behind public functions.

`PyFuncModel.predict` checks every input against the signature (about 1.5 ms a call, through
pandas), then calls the flavour's model. A caller that checked the input already may call the
model directly, which needs a few names MLflow keeps private. Each is used in this module alone,
with a comment on why and on what breaks if MLflow changes it; tests/test_pyfunc.py pins their
behaviour on real logged models, so an MLflow upgrade that changes one fails there first.
"""

import inspect
from typing import Any

# _enforce_params_schema: pyfunc's params check, public under no name; moved: ImportError at start
from mlflow.models.utils import _enforce_params_schema
from mlflow.pyfunc import FLAVOR_NAME, PyFuncModel

# _PythonModelPyfuncWrapper: pyfunc's wrapper of a plain PythonModel, told apart from ChatModel's
# and agents' wrappers by its type; renamed: ImportError at start
from mlflow.pyfunc.model import PythonModel, PythonModelContext, _PythonModelPyfuncWrapper
from mlflow.types import ParamSchema

SKLEARN_LOADER = "mlflow.sklearn"
"""The pyfunc loader module of models saved with the scikit-learn flavour."""


def enforce_params(schema: ParamSchema, params: dict[str, Any] | None) -> dict[str, Any]:
    """`params` checked against `schema` and completed with its defaults, as pyfunc's predict
    does; raises MlflowException (INVALID_PARAMETER_VALUE) naming a param that does not fit."""
    checked: dict[str, Any] = _enforce_params_schema(params, schema)
    return checked


def python_model(pyfunc: PyFuncModel) -> tuple[PythonModel, PythonModelContext] | None:
    """The PythonModel and its context when pyfunc's predict, after its checks, is exactly
    `model.predict(context, frame, params=params)`; else None (keep calling pyfunc).

    None for other flavours, for signatures inferred from type hints (pyfunc converts the input
    for those first) and for a `predict` that takes no `context` or no `params`.
    """
    # the flavour's model under pyfunc's checks ("stable developer API"); gone: no version loads
    impl = pyfunc._model_impl
    if not isinstance(impl, _PythonModelPyfuncWrapper):
        return None
    # the one case where pyfunc converts inputs before predict; gone: no version loads
    if pyfunc.metadata._is_signature_from_type_hint():
        return None
    model: PythonModel = impl.python_model
    parameters = inspect.signature(model.predict).parameters
    if "context" not in parameters or "params" not in parameters:
        return None
    return model, impl.context


def sklearn_estimator(pyfunc: PyFuncModel) -> tuple[Any, str] | None:
    """The fitted estimator of a model saved with the scikit-learn flavour and the name of the
    method pyfunc's predict calls on it (`predict`, `predict_proba`, ...); else None."""
    if pyfunc.loader_module != SKLEARN_LOADER:
        return None
    # the MLmodel file's record of `pyfunc_predict_fn`, read as pyfunc.load_model reads it
    method = str(pyfunc.metadata.flavors[FLAVOR_NAME].get("predict_fn", "predict"))
    return pyfunc.get_raw_model(), method
