# syntax=docker/dockerfile:1
#
# Targets:
#   serving (default)  the modelyard image: `modelyard serve`, `modelyard train ...`
#   mlflow             the MLflow tracking server with the PostgreSQL and S3 clients
#
# Without network access to the package indexes, build from a wheelhouse made where they can
# be reached (deploy/containers/build.py does this; pins as below):
#   pip wheel -w wheels torch==2.13.0 "mlflow[auth]==3.17.2" ... "setuptools>=69" wheel
#   docker build --build-context wheels=./wheels --build-arg PIP_NO_INDEX=1 .
ARG PYTHON_IMAGE=python:3.11-slim

# Wheels pip may install from; empty unless `--build-context wheels=DIR` replaces this stage.
FROM scratch AS wheels

FROM ${PYTHON_IMAGE} AS build
# 1 installs from the wheels context alone (an offline build); 0 uses the indexes too.
ARG PIP_NO_INDEX=0
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_FIND_LINKS=/wheels
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, from the CPU index: PyPI's default torch is a CUDA build several GB larger,
# and `pip install .` then finds torch>=2.4 already satisfied.
RUN --mount=type=cache,target=/root/.cache/pip --mount=type=bind,from=wheels,target=/wheels \
    pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
WORKDIR /src
COPY pyproject.toml ./
# The dependencies in a layer of their own, installed with an empty project of the same
# metadata: a change to the code alone then rebuilds without reinstalling them.
RUN --mount=type=cache,target=/root/.cache/pip --mount=type=bind,from=wheels,target=/wheels \
    touch README.md && pip install .
COPY README.md ./
COPY modelyard ./modelyard
COPY registry ./registry
COPY gates ./gates
COPY serving ./serving
COPY training ./training
RUN --mount=type=cache,target=/root/.cache/pip --mount=type=bind,from=wheels,target=/wheels \
    pip install --no-deps --force-reinstall .


FROM ${PYTHON_IMAGE} AS mlflow
# Pinned on purpose: a new tracking-server release may migrate the database schema,
# so upgrading it is a deliberate step (`mlflow db upgrade`), not a side effect of a rebuild.
# The `auth` extra brings Flask-WTF, which MLflow's basic-auth app needs.
ARG MLFLOW_VERSION=3.17.2
ARG PIP_NO_INDEX=0
RUN --mount=type=bind,from=wheels,target=/wheels \
    PIP_FIND_LINKS=/wheels pip install --no-cache-dir --root-user-action=ignore \
        "mlflow[auth]==${MLFLOW_VERSION}" psycopg2-binary==2.9.13 boto3==1.44.5 \
    && useradd --system --uid 10002 --user-group mlflow
ENV MLFLOW_DISABLE_TELEMETRY=true \
    PYTHONUNBUFFERED=1
USER 10002:10002
EXPOSE 5000
ENTRYPOINT ["mlflow"]
CMD ["server", "--host", "0.0.0.0", "--port", "5000"]


FROM ${PYTHON_IMAGE} AS serving
COPY --from=build /opt/venv /opt/venv
# A model artifact is code: refuse pickled models, and keep downloaded artifacts in a
# directory only the service user can read or write. Every artifact transfer goes through
# MLflow's proxy: an MLflow server with an S3 artifact store tells its clients (/server-info)
# to download from and upload to S3 directly with presigned URLs, which name the object
# store's address (http://seaweedfs:8333 in compose), and serving and the trainer have no
# route there, by design (compose networks, networkpolicy.yaml).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false \
    MLFLOW_DISABLE_TELEMETRY=true \
    MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD=false \
    MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD=false \
    MODELYARD_MODEL_CACHE_DIR=/var/cache/modelyard
# The cache, the state directory (MODELYARD_STATE_DIR, set where a volume backs it) and the
# compose stack's prediction log: a fresh named volume copies its mount point's owner.
RUN useradd --system --uid 10001 --user-group --create-home modelyard \
    && install -d -o modelyard -g modelyard -m 0700 /var/cache/modelyard /var/lib/modelyard \
        /var/lib/prediction-log
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /home/modelyard
EXPOSE 8000
# Ready, not merely live: a replica counts as healthy once its models are loaded.
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=2)"]
ENTRYPOINT ["modelyard"]
CMD ["serve", "--host", "0.0.0.0"]
