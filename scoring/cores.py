"""How many cores this process may use: its CPU affinity, capped by its container's CPU quota.

A container limited to 2 CPUs (``docker run --cpus 2``, a Kubernetes CPU limit) still sees every
core of its host in its affinity. TensorFlow threads sized to the host would be throttled by the
quota, so the quota counts as the number of cores, rounded down, at least one.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def available_cores(cgroup: Path = CGROUP) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # platforms without affinity
        cores = os.cpu_count() or 1
    quota = cpu_quota(cgroup)
    return cores if quota is None else min(cores, max(1, math.floor(quota)))


def cpu_quota(cgroup: Path = CGROUP) -> float | None:
    """CPUs the cgroup's quota allows per period; None when unlimited or not readable."""
    found = _quota_and_period(cgroup)
    if found is None or found[0] == "max":
        return None
    try:
        allowed = int(found[0]) / int(found[1])
    except (ValueError, ZeroDivisionError):
        return None
    return allowed if allowed > 0 else None  # v1 writes -1 for no quota


def _quota_and_period(cgroup: Path) -> tuple[str, str] | None:
    """cgroup v2's ``cpu.max`` ("200000 100000" or "max 100000"), else v1's two files."""
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()
        return quota, period
    except (OSError, ValueError):
        pass
    for v1 in (cgroup / "cpu", cgroup / "cpu,cpuacct"):
        try:
            return (v1 / "cpu.cfs_quota_us").read_text().strip(), (v1 / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            continue
    return None
