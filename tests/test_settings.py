"""A bad serving setting stops start-up with a message naming it."""

import subprocess
import sys
from pathlib import Path

import pytest


def _serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelyard", "serve", "--port", "1"],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"MODELYARD_MAX_BODY_BYTES": "-5"}, "MODELYARD_MAX_BODY_BYTES"),
        ({"MODELYARD_ALIASES": "[1, 2"}, "MODELYARD_ALIASES"),
        ({"MODELYARD_ALIASES": ""}, "MODELYARD_ALIASES"),
        ({"MODELYARD_TRAFFIC": '{"m": {"production": -1}}'}, "traffic for 'm'"),
        ({"MODELYARD_REQUIRED_ALIAS": "canary"}, "required_alias 'canary'"),
        ({"MODELYARD_CONFIG": "/no/such/file.yaml"}, "MODELYARD_CONFIG"),
        ({"MODELYARD_API_KEYS_FILE": "/no/such/keys.yaml"}, "/no/such/keys.yaml"),
        ({"MODELYARD_BATCHING": "sometimes"}, "MODELYARD_BATCHING"),
        ({"MODELYARD_BATCH_MAX_ROWS": "0"}, "MODELYARD_BATCH_MAX_ROWS"),
    ],
)
def test_serve_bad_setting_exits_naming_it(env: dict[str, str], named: str):
    result = _serve(env)
    assert result.returncode == 2, result.stderr
    assert named in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_reads_settings_from_yaml(tmp_path: Path):
    config = tmp_path / "modelyard.yaml"
    config.write_text("max_body_bytes: -1\n")
    result = _serve({"MODELYARD_CONFIG": str(config)})
    assert result.returncode == 2
    assert "MAX_BODY_BYTES" in result.stderr
