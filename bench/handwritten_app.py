"""The benchmark's baseline: the smallest reasonable FastAPI server for one MLflow model.

What a competent engineer writes by hand for one known model: load it once at start-up, and
per request parse the JSON `dataframe_split`, build the DataFrame the model takes, call the
model underneath pyfunc (a custom PythonModel, or the flavour's own model such as a
scikit-learn estimator) and answer `{"predictions": ...}`. No validation, metrics or logging.
`POST /hello` reads the body and answers a constant: FastAPI's own ceiling on this machine.
Run it as uvicorn does any factory (uvloop and httptools):

    BENCH_MODEL_URI=models:/cancer-classifier/1 uvicorn bench.handwritten_app:create_app \
        --factory --loop uvloop --http httptools --no-access-log
"""

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import mlflow
import orjson
import pandas as pd
from fastapi import FastAPI, Request, Response

MODEL_URI_VARIABLE = "BENCH_MODEL_URI"


def underlying_predict(model_uri: str) -> Callable[[pd.DataFrame], Any]:
    """The predict of the model under pyfunc: its PythonModel's, else the flavour model's."""
    pyfunc = mlflow.pyfunc.load_model(model_uri)
    python_model = getattr(pyfunc._model_impl, "python_model", None)
    if python_model is not None:
        return lambda frame: python_model.predict(None, frame)
    return pyfunc.get_raw_model().predict  # type: ignore[no-any-return]


def create_app() -> FastAPI:
    """The app serving the model named by BENCH_MODEL_URI (`models:/name/version`)."""
    model_uri = os.environ[MODEL_URI_VARIABLE]
    held: dict[str, Callable[[pd.DataFrame], Any]] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        held["predict"] = underlying_predict(model_uri)
        yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/health")
    async def health() -> Response:
        return Response(b"{}", media_type="application/json")

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        split = orjson.loads(await request.body())["dataframe_split"]
        frame = pd.DataFrame(split["data"], columns=split["columns"])
        output = held["predict"](frame)
        if isinstance(output, pd.DataFrame):
            output = output.to_dict(orient="records")
        body = orjson.dumps({"predictions": output}, option=orjson.OPT_SERIALIZE_NUMPY)
        return Response(body, media_type="application/json")

    @app.post("/hello")
    async def hello(request: Request) -> Response:
        await request.body()
        return Response(b'{"predictions": [0]}', media_type="application/json")

    return app
