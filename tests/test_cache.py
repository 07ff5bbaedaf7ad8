"""The model cache: only complete, digest-checked versions are ever served from it."""

import threading
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from registry.cache import MANIFEST, PARTIAL, Download, ModelCache, VersionId
from registry.client import connect
from registry.loading import identify
from serving.app import create_app
from serving.settings import ServingSettings
from tests.conftest import DemoRegistry, wait_until
from training.datasets import load_split

MODEL = "cancer-classifier"


def _settings(cache: Path) -> ServingSettings:
    return ServingSettings(
        models=[MODEL], aliases=["production"], poll_interval_s=0.3, model_cache_dir=cache
    )


def _body() -> dict[str, object]:
    frame = load_split("breast-cancer").x_holdout.head(2)
    return {"dataframe_split": {"columns": list(frame.columns), "data": frame.values.tolist()}}


def _serve_once(cache: Path) -> str:
    """Start serving on `cache`, predict once, stop; the version that answered."""
    with TestClient(create_app(_settings(cache))) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="ready")
        response = client.post(f"/models/{MODEL}/invocations", json=_body())
        assert response.status_code == 200, response.text
        return response.headers["X-Model-Version"]


def test_cut_off_download_is_never_served_and_is_downloaded_again(
    demo_registry: DemoRegistry, tmp_path: Path
):
    version = _serve_once(tmp_path)
    cut = 0
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.name not in ("MLmodel", MANIFEST) and "lock" not in path.name:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
            cut += 1
    assert cut
    assert _serve_once(tmp_path) == version


def _version_id(name: str, number: str, source: str) -> VersionId:
    return VersionId(name, number, f"run-{source}", f"models:/m-{source}")


def _writer(content: bytes) -> Download:
    def download(directory: Path) -> None:
        (directory / "model.bin").write_bytes(content)
        (directory / "MLmodel").write_text("flavors: {}\n")

    return download


def test_entry_without_manifest_or_left_in_partial_is_never_used(tmp_path: Path):
    version = _version_id("iris", "1", "a")
    stale = tmp_path / version.key
    stale.mkdir()
    (stale / "MLmodel").write_text("flavors: {}\n")  # a download cut off after MLmodel
    leftover = tmp_path / PARTIAL / f"{version.key}+killed"
    leftover.mkdir(parents=True)
    (leftover / "model.bin").write_bytes(b"half")
    cache = ModelCache(tmp_path)
    assert not leftover.exists()
    assert cache.find(version) is None
    entry = cache.fetch(version, _writer(b"whole"))
    assert (entry / "model.bin").read_bytes() == b"whole"
    (entry / "model.bin").write_bytes(b"tampered")
    assert cache.find(version) is None
    assert not entry.exists()


def test_recreated_model_with_the_same_version_is_downloaded_afresh(tmp_path: Path):
    cache = ModelCache(tmp_path)
    old = cache.fetch(_version_id("iris", "1", "a"), _writer(b"old model"))
    new = cache.fetch(_version_id("iris", "1", "b"), _writer(b"new model"))
    assert (old / "model.bin").read_bytes() == b"old model"
    assert (new / "model.bin").read_bytes() == b"new model"


def test_concurrent_loads_of_one_version_download_once(demo_registry: DemoRegistry, tmp_path: Path):
    client = connect(demo_registry.tracking_uri)
    ref = demo_registry.classifier_sklearn
    _, version = identify(client, ref.name, ref.version)
    calls: list[str] = []
    start = threading.Barrier(4)
    entries: list[Path] = []

    def download(directory: Path) -> None:
        calls.append(directory.name)
        mlflow.artifacts.download_artifacts(
            artifact_uri=ref.uri, dst_path=str(directory), tracking_uri=client.tracking_uri
        )

    def load() -> None:
        cache = ModelCache(tmp_path)  # one per worker process: each its own lock descriptors
        start.wait()
        entries.append(cache.fetch(version, download))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert len(entries) == 4
    assert len(set(entries)) == 1
    model = mlflow.pyfunc.load_model(str(entries[0]))
    frame = pd.DataFrame(**_body()["dataframe_split"])  # type: ignore[arg-type]
    assert len(model.predict(frame)) == 2


def test_prune_keeps_versions_in_use_and_the_most_recent(tmp_path: Path):
    cache = ModelCache(tmp_path)
    versions = [_version_id("iris", str(n), str(n)) for n in range(1, 6)]
    for version in versions:
        cache.fetch(version, _writer(version.version.encode()))
    cache.find(versions[1])  # used last: the most recent of those no alias names
    other = _version_id("wine", "1", "w")
    cache.fetch(other, _writer(b"wine"))
    cache.prune([versions[4]], keep=1)
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert left == sorted([versions[4].key, versions[1].key, other.key])


def test_workers_pruning_at_once_each_remove_what_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    first, second = ModelCache(tmp_path), ModelCache(tmp_path)
    for version in (_version_id("iris", "1", "a"), _version_id("iris", "2", "b")):
        first.fetch(version, _writer(version.version.encode()))
    listed = list(second._entries())  # the second worker lists the entries,
    assert len(first.prune([], keep=0)) == 2  # the first removes them,
    monkeypatch.setattr(second, "_entries", lambda: iter(listed))
    assert second.prune([], keep=0) == []  # and the second finds them gone
    assert list((tmp_path / PARTIAL).iterdir()) == []


def test_a_starting_worker_leaves_a_download_under_way(tmp_path: Path):
    cache = ModelCache(tmp_path)
    version = _version_id("iris", "1", "a")
    loading = threading.Event()
    release = threading.Event()

    def slow(directory: Path) -> None:
        loading.set()
        release.wait(10)
        (directory / "model.bin").write_bytes(b"x")

    worker = threading.Thread(target=cache.fetch, args=(version, slow))
    worker.start()
    loading.wait(10)
    ModelCache(tmp_path).prune([], keep=0)  # another worker starts: it sweeps, then prunes
    release.set()
    worker.join()
    assert cache.find(version) is not None
