# The two commands: `make demo` (set up, run the embedded platform) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint setup clean test-containers

demo: $(STAMP)
	$(BIN)/modelyard up

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

setup: $(STAMP)

# torch first, pinned: its CPU build lies on local disk; an unpinned torch pulls a CUDA build.
$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# docker-compose.yml in real containers (podman, as root): build the images that are missing
# (deploy/containers/build.py), run the stack and check it end to end, then take it down
# (deploy/containers/check.py). Needs podman, runc and debootstrap (.ci/run installs them).
test-containers: $(VENV)/.containers
	$(BIN)/python deploy/containers/build.py
	$(BIN)/python deploy/containers/check.py

$(VENV)/.containers: $(STAMP)
	$(BIN)/pip install --quiet podman-compose==1.6.0
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
