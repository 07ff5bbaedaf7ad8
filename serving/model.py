"""A loaded model version: its pyfunc, a direct call into the model, warm-up and contract."""

import logging
import statistics
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PyFuncModel
from mlflow.types import Schema

from registry import contract
from registry.pyfunc import enforce_params, python_model, sklearn_estimator
from registry.refs import ModelRef
from serving import protocol
from serving.errors import BadRequest, InvalidInput
from serving.inputs import Batch, InputSpec, from_frame
from serving.pool import PredictPool

logger = logging.getLogger(__name__)

Native = Callable[[Batch, dict[str, Any] | None], Any]
WARMUP_CALLS = 20
WARMUP_BUDGET_S = 2.0
"""Warm-up stops after WARMUP_CALLS predicts or this long, whichever comes first."""
PROBE_ROWS = 32
"""Warm-up times the example's first row alone and repeated to this many rows."""
PROBE_CALLS = 5
PROBE_BUDGET_S = 1.0
"""The batch probe stops after PROBE_CALLS pairs of predicts or this long."""


@dataclass(frozen=True, slots=True)
class BatchProfile:
    """Warm-up's measure of what merging requests into one predict saves."""

    single_ms: float = 0.0
    """The fastest predict of one row (the input example's first)."""
    batch_ms: float = 0.0
    """The fastest predict of that row repeated to `rows` rows."""
    rows: int = PROBE_ROWS
    problem: str | None = None
    """Why this version's requests cannot be merged, if they cannot."""

    @property
    def speedup(self) -> float:
        """How many times cheaper a row is in a batch of `rows` than alone."""
        return self.single_ms * self.rows / self.batch_ms if self.batch_ms > 0 else 0.0


class WarmupFailed(Exception):
    """The version could not predict on its own input example."""


@dataclass(eq=False)
class LoadedModel:
    """One exact version, ready to predict, with its own predict threads. A swap replaces the
    whole object; only `inline_rows` ever changes, to 0."""

    ref: ModelRef
    pyfunc: PyFuncModel
    schema: Schema | None
    """The signature's input schema, read once."""
    spec: InputSpec | None
    native: Native | None
    pool: PredictPool
    """This version's predict threads; shut down when the version is released."""
    inline_rows: int = 0
    """Requests of at most this many rows predict on the event loop; 0: none do. Set to 0 for
    good once an inline predict was measured far slower than warm-up promised."""
    warmup_ms: float = 0.0
    load_s: float = 0.0
    interface: contract.Interface | None = None
    """Its signatures and the columns it answered its input example with."""
    accepts_missing: bool = True
    """False when warm-up showed it raising on a missing value its signature allows: requests
    holding one are then the client's mistake (400), not the model's failure (500)."""
    batch_profile: BatchProfile = BatchProfile(problem="no input example to time batches on")
    """What warm-up measured of merging requests (see serving.batching)."""

    @property
    def inline(self) -> bool:
        """Whether small requests predict on the event loop."""
        return self.inline_rows > 0

    def runs_inline(self, request: protocol.Decoded) -> bool:
        """Whether this request predicts on the event loop: no larger than the warm-up's."""
        return self.inline_rows > 0 and 0 < rows_of(request) <= self.inline_rows

    def predict(self, request: protocol.Decoded) -> Any:
        """Predict on a decoded request: straight into the model when validated here."""
        if (
            not self.accepts_missing
            and request.batch is not None
            and (missing := request.batch.first_missing()) is not None
        ):
            column, row = missing
            raise BadRequest(
                f"column '{column}' row {row}: missing value; version {self.ref.version} of "
                f"model '{self.ref.name}' does not accept missing values"
            )
        if request.batch is not None and self.native is not None:
            return _plain_labels(self.native(request.batch, self._params(request.params)))
        data = request.batch.frame() if request.batch is not None else request.data
        try:
            return _plain_labels(self.pyfunc.predict(data, params=request.params))
        except MlflowException as exc:
            if exc.error_code in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST"):
                raise InvalidInput(protocol.first_line(exc.message)) from None
            raise

    def _params(self, params: dict[str, Any] | None) -> dict[str, Any] | None:
        """Params checked and defaulted by the params schema, as pyfunc would; none without one."""
        schema = self.pyfunc.metadata.get_params_schema()
        if schema is None:
            return None
        try:
            return enforce_params(schema, params)
        except MlflowException as exc:
            raise InvalidInput(protocol.first_line(exc.message)) from None


def prepare(
    ref: ModelRef,
    pyfunc: PyFuncModel,
    *,
    strict: bool,
    inline_below_ms: float,
    started: float,
    threads: int = 2,
) -> LoadedModel:
    """Wrap a freshly loaded pyfunc, warm it up on its input example and time it.

    `started` is the monotonic time the load began, for the load-seconds metric; `threads`
    the size of the version's predict pool (MODELYARD_PREDICT_THREADS), whose threads end
    when the returned object is released.
    """
    schema = pyfunc.metadata.get_input_schema()
    spec = InputSpec.from_schema(schema, strict=strict)
    pool = PredictPool(threads, f"predict-{ref.name}-{ref.version}")
    model = LoadedModel(ref, pyfunc, schema, spec, _native(pyfunc) if spec else None, pool)
    example = _example(pyfunc, spec)
    if example is None:
        logger.warning("%s has no input example: not warmed up, predicting in a thread", ref)
        return _released_with_pool(
            replace(
                model, load_s=time.monotonic() - started, interface=contract.interface_of(pyfunc)
            )
        )
    timings: list[float] = []
    try:
        deadline = time.perf_counter() + WARMUP_BUDGET_S
        while len(timings) < WARMUP_CALLS and (not timings or time.perf_counter() < deadline):
            began = time.perf_counter()
            output = model.predict(example)
            protocol.encode(output)
            timings.append((time.perf_counter() - began) * 1000)
    except Exception as exc:
        reason = protocol.first_line(str(exc) or type(exc).__name__)
        raise WarmupFailed(f"warm-up predict on the input example failed: {reason}") from exc
    median = statistics.median(timings)
    return _released_with_pool(
        replace(
            model,
            # the fastest call is the model's own cost; the median also counts whatever else
            # ran on the machine during warm-up, which would send a fast model to a thread
            inline_rows=rows_of(example) if min(timings) < inline_below_ms else 0,
            warmup_ms=median,
            load_s=time.monotonic() - started,
            interface=contract.interface_of(pyfunc, output),
            accepts_missing=_accepts_missing(model, example),
            batch_profile=_profile_batches(model, example),
        )
    )


def rows_of(request: protocol.Decoded) -> int:
    """The rows of a decoded request; 0 when its shape does not say."""
    if request.batch is not None:
        return request.batch.rows
    data = request.data
    return len(data) if isinstance(data, (pd.DataFrame, np.ndarray)) and data.ndim else 0


def _released_with_pool(model: LoadedModel) -> LoadedModel:
    """`model`, whose predict threads end when it is released."""
    weakref.finalize(model, model.pool.shutdown)
    return model


def _accepts_missing(model: LoadedModel, example: protocol.Decoded) -> bool:
    """Whether the version answers its input example with missing values where its signature
    allows them; a version that raises on them gets them refused as bad input instead."""
    probe = example.batch.with_missing() if example.batch is not None else None
    if probe is None:
        return True
    try:
        model.predict(protocol.Decoded(batch=probe, params=example.params))
    except Exception:
        logger.info("%s raises on missing values: requests holding one get 400", model.ref)
        return False
    return True


def _profile_batches(model: LoadedModel, example: protocol.Decoded) -> BatchProfile:
    """Time the example's first row alone and repeated to PROBE_ROWS rows (fastest calls:
    what else ran on the machine meanwhile is no cost of the model's)."""
    batch = example.batch
    if batch is None or batch.rows == 0:
        return BatchProfile(problem="inputs not validated here (no named-column signature)")
    if example.params is not None:
        return BatchProfile(problem="its input example carries params")
    one = protocol.Decoded(batch=repeated(batch, 1))
    many = protocol.Decoded(batch=repeated(batch, PROBE_ROWS))
    single: list[float] = []
    merged: list[float] = []
    deadline = time.perf_counter() + PROBE_BUDGET_S
    try:
        while len(single) < PROBE_CALLS and (not single or time.perf_counter() < deadline):
            for request, timings in ((one, single), (many, merged)):
                began = time.perf_counter()
                output = model.predict(request)
                timings.append((time.perf_counter() - began) * 1000)
                if request is many and answer_rows(output) != PROBE_ROWS:
                    return BatchProfile(
                        problem=f"its answer to {PROBE_ROWS} rows is not {PROBE_ROWS} rows long"
                    )
    except Exception as exc:
        reason = protocol.first_line(str(exc) or type(exc).__name__)
        return BatchProfile(problem=f"a predict of {PROBE_ROWS} rows failed at warm-up: {reason}")
    return BatchProfile(min(single), min(merged))


def repeated(batch: Batch, rows: int) -> Batch:
    """`batch`'s rows, cycled to `rows` rows."""
    take = np.arange(rows) % batch.rows
    if batch.matrix is not None:
        return Batch(batch.names, rows, matrix=batch.matrix[take])
    return Batch(batch.names, rows, arrays=tuple(a[take] for a in batch.arrays))


def _plain_labels(answer: Any) -> Any:
    """The answer, a DataFrame's column labels made plain Python objects here, in the predict
    thread: pandas' Arrow-backed string labels take ~10 us to read back on the event loop."""
    if isinstance(answer, pd.DataFrame) and answer.columns.dtype != object:
        answer.columns = pd.Index(answer.columns.tolist(), dtype=object)
    return answer


@dataclass(frozen=True, slots=True)
class Predicted:
    """One request's predictions, and the predict call they came from: its whole answer and
    input, of which the request is the rows from `start` on (all of them when it was predicted
    alone). The prediction log reads each call's columns once, not a request at a time."""

    predictions: Any
    whole: Any
    batch: Batch | None
    """The call's validated input (None for a model without a signature)."""
    start: int = 0
    columns: protocol.Columns | None = None
    """The request's rows as `protocol.Columns`, when it shared a predict call whose answer
    converts (once for all of the call's requests)."""

    @classmethod
    def alone(cls, predictions: Any, batch: Batch | None) -> "Predicted":
        return cls(predictions, predictions, batch)

    @property
    def answer(self) -> Any:
        """What the request's answer is written from: its columns, else its predictions."""
        return self.predictions if self.columns is None else self.columns


def answer_rows(answer: Any) -> int | None:
    """Rows in a predict's answer (DataFrame, Series, list, array); None when it has none."""
    if isinstance(answer, (pd.DataFrame, pd.Series, list)):
        return len(answer)
    shape = getattr(answer, "shape", None)
    return int(shape[0]) if isinstance(shape, tuple) and shape else None


def _example(pyfunc: PyFuncModel, spec: InputSpec | None) -> protocol.Decoded | None:
    try:
        example = pyfunc.input_example
    except Exception:
        return None
    if example is None:
        return None
    if spec is not None and isinstance(example, pd.DataFrame):
        return protocol.Decoded(batch=from_frame(spec, example))
    return protocol.Decoded(data=example)


def _native(pyfunc: PyFuncModel) -> Native | None:
    """A direct call into the flavour's model, skipping pyfunc's second schema check.

    Input was validated against the signature already; pyfunc's own enforcement costs about
    1.5 ms per call through pandas. Flavours not known here keep the pyfunc path.
    """
    if (wrapped := python_model(pyfunc)) is not None:
        model, context = wrapped
        return lambda batch, params: model.predict(context, batch.frame(), params=params)
    if (fitted_model := sklearn_estimator(pyfunc)) is None:
        return None
    estimator, method_name = fitted_model
    method = getattr(estimator, method_name)
    fitted_names = getattr(estimator, "feature_names_in_", None)
    if fitted_names is None:
        return lambda batch, params: method(batch.as_matrix())
    fitted = [str(name) for name in fitted_names]

    # A float matrix whose columns were checked here, in the fitted order, is what the estimator
    # would make of the DataFrame; its pandas checks cost ~300 us a call. Its warning that the
    # matrix has no column names is then no news: the entry point filters it (serving.cli).
    def call(batch: Batch, params: dict[str, Any] | None) -> Any:
        if batch.matrix is not None and batch.names == fitted:
            return method(batch.matrix)
        return method(batch.frame())

    return call
