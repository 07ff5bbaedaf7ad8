"""Serving starts as a non-root user on a root-owned mount (Kubernetes' emptyDir with fsGroup)."""

import os
import stat
import tempfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from registry.cache import VersionId
from serving.service import Service
from serving.settings import ServingSettings
from serving.state import LastKnownGood, SavedModel

USER = GROUP = 10001
"""The pod's runAsUser and fsGroup (deploy/kubernetes/deployment.yaml)."""

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users")


@pytest.fixture
def mount() -> Iterator[Path]:
    """A directory as Kubernetes mounts an emptyDir with fsGroup: root's, group-writable, setgid."""
    with tempfile.TemporaryDirectory() as parent:
        os.chmod(parent, 0o755)
        path = Path(parent) / "modelyard"
        path.mkdir()
        os.chown(path, 0, GROUP)
        os.chmod(path, 0o2775)
        yield path


def _as_user(work: Callable[[], None]) -> str | None:
    """Run `work()` in a child process as USER with the supplementary GROUP; its traceback,
    or None when it succeeded."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        code = 1
        try:
            os.setgroups([GROUP])
            os.setgid(USER)
            os.setuid(USER)
            work()
            code = 0
        except BaseException:
            os.write(write, traceback.format_exc().encode())
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as child:
        problem = child.read()
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    return None if code == 0 else problem or f"exit code {code}"


def test_service_starts_as_non_root_on_a_root_owned_mount(mount: Path):
    settings = ServingSettings(model_cache_dir=mount, state_dir=mount)
    version = VersionId("iris", "1", "run-1", "models:/m-1")

    def start_and_write() -> None:
        storage = Service(settings).watcher.storage
        storage.cache.fetch(version, lambda d: (d / "MLmodel").write_text("flavors: {}\n"))
        storage.save(LastKnownGood({"iris": SavedModel({"production": version})}, 1.0))

    problem = _as_user(start_and_write)
    assert problem is None, problem
    info = mount.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o2775), "the mount was changed"
    for private in mount.iterdir():
        owned = private.stat()
        assert (owned.st_uid, stat.S_IMODE(owned.st_mode)) == (USER, 0o700), private
    assert sorted(p.name for p in mount.iterdir()) == ["models", "state"]
