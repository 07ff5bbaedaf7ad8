"""The model cache: downloaded versions, each complete and digest-checked, or absent.

An entry is a directory named by the version's identity (name, version and a fingerprint of
its run, source and logged model), so a model re-created under the same name and version
never reuses the old files. A version is downloaded into `.partial/`, its manifest (identity
and the sha256 of every file) written last, and the directory renamed into place: an entry
either has a complete manifest or is never used. One lock file per entry (`fcntl.flock`) is
shared by every worker process and every alias, so one version is downloaded once.
"""

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import quote

logger = logging.getLogger(__name__)

MANIFEST = ".modelyard-manifest.json"
"""Written last into an entry: its identity and the sha256 of every other file."""
PARTIAL = ".partial"
"""Downloads under way and entries being removed; anything here is never served."""
LOCKS = ".locks"
CHUNK = 2**20

Download = Callable[[Path], None]
"""Fills an empty directory with a version's artifacts."""


@dataclass(frozen=True, slots=True)
class VersionId:
    """A registered version and what tells it apart from one re-created with the same number."""

    name: str
    version: str
    run_id: str | None
    source: str
    model_id: str | None = None

    @property
    def key(self) -> str:
        """The entry's directory name: readable, safe as a path, unique per identity."""
        fingerprint = hashlib.sha256(
            "\x00".join((self.run_id or "", self.source, self.model_id or "")).encode()
        ).hexdigest()[:16]
        return f"{quote(self.name, safe='')}+v{quote(self.version, safe='')}+{fingerprint}"


class ModelCache:
    """Complete, digest-checked versions under one private directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / PARTIAL).mkdir(mode=0o700, exist_ok=True)
        (root / LOCKS).mkdir(mode=0o700, exist_ok=True)
        self.sweep()

    def fetch(self, version: VersionId, download: Download | None) -> Path:
        """The verified entry of `version`, downloading it first when it is missing or broken.

        With `download` None (the registry unreachable) only a verified entry is returned;
        else FileNotFoundError.
        """
        entry = self.root / version.key
        with self._lock(version.key):
            if entry.exists():
                problem = verify(entry, version)
                if problem is None:
                    os.utime(entry / MANIFEST)
                    return entry
                logger.warning("cache entry %s unusable (%s): removing it", entry.name, problem)
                self._remove(entry)
            if download is None:
                raise FileNotFoundError(f"{version.name} version {version.version} is not cached")
            partial = Path(tempfile.mkdtemp(prefix=f"{version.key}+", dir=self.root / PARTIAL))
            try:
                download(partial)
                _write_manifest(partial, version)
                partial.rename(entry)
                _sync(self.root)
            finally:
                shutil.rmtree(partial, ignore_errors=True)
            logger.info("cached %s version %s in %s", version.name, version.version, entry.name)
            return entry

    def find(self, version: VersionId) -> Path | None:
        """The verified entry of `version`, or None (never downloads)."""
        try:
            return self.fetch(version, None)
        except FileNotFoundError:
            return None

    def prune(self, in_use: Collection[VersionId], keep: int) -> list[str]:
        """Remove entries not `in_use`, keeping the `keep` most recently used per model.

        Entries locked by a load under way are left alone. Returns the keys removed.
        """
        used = {v.key for v in in_use}
        unused: dict[str, list[tuple[float, Path]]] = {}
        for entry in self._entries():
            if entry.name in used:
                continue
            manifest = entry / MANIFEST
            try:
                name = json.loads(manifest.read_text())["version_id"]["name"]
                unused.setdefault(name, []).append((manifest.stat().st_mtime, entry))
            except (OSError, ValueError, KeyError, TypeError):
                unused.setdefault("", []).append((0.0, entry))
        removed = []
        for name, entries in unused.items():
            entries.sort(reverse=True)
            for _, entry in entries[keep if name else 0 :]:
                with self._lock(entry.name, wait=False) as locked:
                    if locked and entry.exists():  # else another worker pruned it meanwhile
                        self._remove(entry)
                        removed.append(entry.name)
        if removed:
            logger.info("pruned %d cached versions: %s", len(removed), ", ".join(removed))
        return removed

    def sweep(self) -> None:
        """Remove what killed or failed downloads left in `.partial/` (unless still locked)."""
        for leftover in (self.root / PARTIAL).iterdir():
            key = leftover.name.rsplit("+", 1)[0]
            with self._lock(key, wait=False) as locked:
                if locked:
                    shutil.rmtree(leftover, ignore_errors=True)

    def _entries(self) -> Iterator[Path]:
        for path in self.root.iterdir():
            if path.name not in (PARTIAL, LOCKS) and path.is_dir():
                yield path

    def _remove(self, entry: Path) -> None:
        """Take `entry` out of use in one rename, then delete it."""
        trash = Path(tempfile.mkdtemp(prefix=f"{entry.name}+", dir=self.root / PARTIAL))
        entry.rename(trash / "entry")
        shutil.rmtree(trash, ignore_errors=True)

    @contextlib.contextmanager
    def _lock(self, key: str, *, wait: bool = True) -> Iterator[bool]:
        """Hold the entry's lock (shared by every process); without `wait`, yield False if
        another holds it."""
        descriptor = os.open(self.root / LOCKS / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(descriptor)


def verify(entry: Path, version: VersionId) -> str | None:
    """None when `entry` holds exactly the files its manifest lists, each with its digest, and
    the manifest names `version`; else what is wrong."""
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
    except FileNotFoundError:
        return "no manifest: the download did not complete"
    except (OSError, ValueError) as exc:
        return f"unreadable manifest: {exc}"
    if not isinstance(manifest, dict) or manifest.get("version_id") != asdict(version):
        return "manifest names another version"
    files = manifest.get("files")
    if not isinstance(files, dict):
        return "manifest lists no files"
    found = _files(entry)
    if set(found) != set(files):
        return "files differ from the manifest"
    for relative, path in found.items():
        if _sha256(path) != files[relative]:
            return f"digest of {relative} differs"
    return None


def _write_manifest(directory: Path, version: VersionId) -> None:
    files = {relative: _sha256(path) for relative, path in _files(directory).items()}
    document = {"version_id": asdict(version), "files": files, "cached_at": time.time()}
    path = directory / MANIFEST
    with path.open("w") as out:
        json.dump(document, out, indent=1)
        out.flush()
        os.fsync(out.fileno())


def _files(directory: Path) -> dict[str, Path]:
    """Every file under `directory` but the manifest, by relative path."""
    return {
        path.relative_to(directory).as_posix(): path
        for path in directory.rglob("*")
        if path.is_file() and path != directory / MANIFEST
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _sync(directory: Path) -> None:
    """Make a rename inside `directory` durable."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
