"""The watcher's schedule: how soon an alias move is seen, however slowly the registry reads."""

import asyncio
import itertools
import time
from pathlib import Path

import pytest

from registry.snapshot import ModelState
from serving.metrics import Metrics
from serving.settings import ServingSettings
from serving.slots import SlotTable
from serving.watcher import Watcher


def test_polls_start_one_interval_apart_when_a_registry_read_is_slow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A read taking most of the interval does not stretch the period: a move made just after
    a read is seen by the next read, one interval later, not one interval plus one read."""
    interval_s, read_s = 0.4, 0.3
    settings = ServingSettings(poll_interval_s=interval_s, state_dir=tmp_path)
    watcher = Watcher(settings, SlotTable(), Metrics())
    reads: list[float] = []

    def slow_read() -> dict[str, ModelState]:
        reads.append(time.monotonic())
        time.sleep(read_s)
        return {}

    monkeypatch.setattr(watcher, "_read", slow_read)

    async def poll_for(seconds: float) -> None:
        task = asyncio.create_task(watcher.run())
        await asyncio.sleep(seconds)
        task.cancel()

    asyncio.run(poll_for(3.0))
    periods = [b - a for a, b in itertools.pairwise(reads)]
    assert len(periods) >= 3
    assert max(periods) <= interval_s + 0.15, periods  # unfixed: 0.62 s at least
