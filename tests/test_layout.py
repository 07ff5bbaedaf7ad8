"""The architecture's rules, read off the code: who may import whom, and nothing at import time."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("serving", "training", "registry", "gates", "modelyard")
MAY_NOT_IMPORT = {
    "serving": {"training", "gates", "modelyard"},
    "training": {"serving", "gates", "modelyard"},
    "gates": {"serving", "training", "modelyard", "mlflow"},
    "registry": {"serving", "training", "gates", "modelyard"},
}
"""serving, training and gates reach MLflow's registry through registry/ alone; only modelyard/
composes them. gates use no MLflow at all: runs, artifacts and models come through registry/."""


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, dotted name) of every module `path` imports, including `from a import b` as a.b."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


@pytest.mark.parametrize("package", list(MAY_NOT_IMPORT))
def test_dependencies_point_one_way(package: str):
    forbidden = MAY_NOT_IMPORT[package]
    violations = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in _modules(package)
        for line, name in _imports(path)
        if name.split(".")[0] in forbidden
    ]
    assert violations == []


@pytest.mark.parametrize("package", ["serving", "training", "gates", "modelyard"])
def test_only_registry_touches_mlflow_private_names(package: str):
    """MLflow's private names live behind registry/, where each one is explained."""
    violations = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in _modules(package)
        for line, name in _imports(path)
        if name.startswith("mlflow.") and any(part.startswith("_") for part in name.split("."))
    ]
    assert violations == []


def test_importing_changes_no_process_state():
    """Importing every module leaves the environment, root logging, warning filters and MLflow's
    tracking URI as they were: entry points configure, libraries do not."""
    modules = [
        ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for package in PACKAGES
        for path in _modules(package)
        if path.name != "__main__.py" and "pyfunc" not in path.parts[:-1]
    ]
    # What third-party packages do when imported (scipy and urllib3 add warning filters) is
    # theirs: they are imported first, then the project's modules are measured.
    third_party = sorted(
        {
            name.rsplit(".", 1)[0] if "." in name else name
            for package in PACKAGES
            for path in _modules(package)
            for _, name in _imports(path)
            if name.split(".")[0] not in PACKAGES
        }
    )
    probe = f"""
import importlib, json, logging, os, warnings
from mlflow.tracking._tracking_service import utils
for name in {third_party!r}:
    try:
        importlib.import_module(name)
    except ImportError:
        pass  # `from a import function`: a's import is what counts
before = (dict(os.environ), list(logging.getLogger().handlers), list(warnings.filters))
for name in {modules!r}:
    importlib.import_module(name)
after = (dict(os.environ), list(logging.getLogger().handlers), list(warnings.filters))
print(json.dumps({{
    "environment": sorted(set(after[0].items()) ^ set(before[0].items())),
    "root handlers": len(after[1]) - len(before[1]),
    "warning filters": len(after[2]) - len(before[2]),
    "tracking uri": utils._tracking_uri,
}}))
"""
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    changes = json.loads(result.stdout.strip().splitlines()[-1])
    assert changes == {
        "environment": [],
        "root handlers": 0,
        "warning filters": 0,
        "tracking uri": None,
    }
