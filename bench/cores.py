"""Where a core's time went during a load run: for telling a server's tail from its neighbours'.

A run's tail can come from the server, or from whatever else ran on its core (another server,
the registry, other work on the machine), on the load generator's core, or from the hypervisor
(steal). /proc/stat says, per core, how much time was busy and stolen; the server's and wrk's
own CPU time are subtracted from their cores' busy time to leave what the neighbours used.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class CoreTimes:
    """Cumulative seconds per core: busy (user, nice, system, irq, softirq) and stolen."""

    busy_s: dict[int, float]
    steal_s: dict[int, float]
    children_cpu_s: float
    """User plus system CPU of this process's waited-for children (wrk, once it returned)."""

    @classmethod
    def now(cls) -> CoreTimes:
        busy, steal = {}, {}
        for line in Path("/proc/stat").read_text().splitlines():
            name, *fields = line.split()
            if not name.startswith("cpu") or name == "cpu":
                continue
            ticks = [int(f) for f in fields]
            # user nice system idle iowait irq softirq steal ...
            busy[int(name[3:])] = (ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]) * _TICK_S
            steal[int(name[3:])] = ticks[7] * _TICK_S
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return cls(busy, steal, children.ru_utime + children.ru_stime)


def attribution(
    before: CoreTimes,
    after: CoreTimes,
    elapsed_s: float,
    server_core: int,
    server_cpu_s: float,
    load_core: int,
) -> dict[str, float]:
    """Shares of `elapsed_s` on the server's and the load generator's cores: busy, stolen by
    the hypervisor, and used by others than the server (on its core) and wrk (on its own)."""

    def share(seconds: float) -> float:
        return round(seconds / elapsed_s, 4)

    busy = {c: after.busy_s[c] - before.busy_s[c] for c in (server_core, load_core)}
    steal = {c: after.steal_s[c] - before.steal_s[c] for c in (server_core, load_core)}
    wrk_cpu_s = after.children_cpu_s - before.children_cpu_s
    return {
        "server_core_busy": share(busy[server_core]),
        "server_core_others": share(max(busy[server_core] - server_cpu_s, 0.0)),
        "server_core_steal": share(steal[server_core]),
        "load_core_busy": share(busy[load_core]),
        "load_core_wrk": share(wrk_cpu_s),
        "load_core_others": share(max(busy[load_core] - wrk_cpu_s, 0.0)),
        "load_core_steal": share(steal[load_core]),
    }
