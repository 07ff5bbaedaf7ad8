"""The last known good state: what a replica served, kept on disk to serve again without MLflow.

After each applied poll and each swap, the watcher writes every served model's aliases (each
with the exact version's identity, the key of its cache entry) and the traffic split taken
from its tag, atomically (a temporary file, then a rename). A replica started while the
registry is unreachable loads those versions from its digest-checked cache.
"""

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from registry.cache import ModelCache, VersionId
from registry.loading import private_dir
from registry.split import validate
from serving.settings import ServingSettings
from serving.traffic import TrafficSplit

logger = logging.getLogger(__name__)

STATE_FILE = "last-known-good.json"
FORMAT = 1
LEFTOVER_AGE_S = 60
"""A temporary state file this old is a killed process's (a save takes milliseconds)."""


@dataclass(frozen=True)
class SavedModel:
    """One served model: the version each alias served, and the split its tag set (if any)."""

    aliases: Mapping[str, VersionId]
    split: TrafficSplit | None = None


@dataclass(frozen=True)
class LastKnownGood:
    """Every served model, and when the registry was last read."""

    models: Mapping[str, SavedModel] = field(default_factory=dict)
    polled_at: float | None = None
    """Unix time of the poll this state came from."""


@dataclass(frozen=True)
class Storage:
    """Where a serving process keeps its cache and, given a state directory, its state."""

    cache: ModelCache
    state_file: Path | None
    """None without `state_dir`: nothing survives the process."""
    temporary: bool = False
    """The cache is a temporary directory of this process's own, removed when it stops."""

    @classmethod
    def create(cls, settings: ServingSettings) -> "Storage":
        """Private (0700) directories under the configured ones, never changing those."""
        cache_base = settings.model_cache_dir or settings.state_dir
        cache = ModelCache(private_dir(cache_base, "models"))
        if settings.state_dir is None:
            return cls(cache, None, temporary=cache_base is None)
        state_dir = private_dir(settings.state_dir, "state")
        for leftover in state_dir.glob(f".{STATE_FILE}.*"):
            with contextlib.suppress(FileNotFoundError):  # another worker removed it meanwhile
                if leftover.stat().st_mtime < time.time() - LEFTOVER_AGE_S:
                    leftover.unlink(missing_ok=True)  # a process killed while saving
        return cls(cache, state_dir / STATE_FILE)

    def close(self) -> None:
        """Remove the cache if it is this process's temporary one."""
        if self.temporary:
            shutil.rmtree(self.cache.root, ignore_errors=True)

    def load(self) -> LastKnownGood | None:
        """The saved state, or None when there is none or it cannot be read (logged)."""
        if self.state_file is None or not self.state_file.exists():
            return None
        try:
            return _parse(json.loads(self.state_file.read_text()))
        except Exception as exc:  # whatever the file holds: the watcher must start regardless
            logger.warning("ignoring the saved state %s: %s", self.state_file, exc)
            return None

    def save(self, state: LastKnownGood) -> None:
        """Replace the saved state in one rename (a crash leaves the old one or the new one)."""
        if self.state_file is None:
            return
        document = {
            "format": FORMAT,
            "saved_at": time.time(),
            "polled_at": state.polled_at,
            "models": {
                name: {
                    "aliases": {alias: asdict(v) for alias, v in model.aliases.items()},
                    "split": _split_document(model.split),
                }
                for name, model in state.models.items()
            },
        }
        descriptor, temporary = tempfile.mkstemp(
            prefix=f".{STATE_FILE}.", dir=self.state_file.parent
        )
        try:
            with os.fdopen(descriptor, "w") as out:
                json.dump(document, out, indent=1)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.state_file)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def _split_document(split: TrafficSplit | None) -> dict[str, object] | None:
    if split is None:
        return None
    return {"weights": dict(split.weights), "salt": split.salt}


def _parse(document: dict[str, object]) -> LastKnownGood:
    if document.get("format") != FORMAT:
        raise ValueError(f"unknown format {document.get('format')!r}")
    models = document["models"]
    if not isinstance(models, dict):
        raise ValueError("'models' is not an object")
    parsed = {}
    for name, model in models.items():
        split = model.get("split")
        parsed[name] = SavedModel(
            {alias: VersionId(**v) for alias, v in model["aliases"].items()},
            TrafficSplit(validate(split["weights"]), str(split["salt"]), "tag") if split else None,
        )
    polled_at = document.get("polled_at")
    return LastKnownGood(parsed, float(polled_at) if isinstance(polled_at, (int, float)) else None)
