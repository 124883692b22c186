"""How many CPU threads a run's torch ops use: chosen by medft, not left to torch's default.

torch starts one intra-op thread per core of the machine, and OpenMP threads spin while they wait.
Two runs side by side (two seeds, or a joblib sweep with ``n_jobs=2``) then oversubscribe the
cores and collapse (measured: 4.4x slower each on 2 cores, ~250x with a third process). medft:

* counts the cores this process may use: its CPU affinity and the cgroup CPU quota (containers,
  SLURM), not the machine's;
* divides them among the jobs of a joblib sweep (``hydra.launcher.n_jobs``);
* honours ``OMP_NUM_THREADS`` / ``MEDFT_THREADS`` when set (the user's choice wins);
* makes waiting OpenMP threads sleep instead of spin (``OMP_WAIT_POLICY=PASSIVE``, unless set),
  so that processes that share cores anyway do not burn them busy-waiting.

:func:`set_wait_policy` must run before torch is imported (``medft.cli`` does it);
:func:`configure` runs at the start of every training / evaluation job.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

THREADS_ENV = "MEDFT_THREADS"


def set_wait_policy() -> None:
    """Idle OpenMP threads yield the core (read by libgomp when torch loads: call before importing torch)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def cgroup_cpus(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup in cores (v2 ``cpu.max``, v1 ``cfs_quota/period``), or None."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def usable_cores() -> int:
    """Cores this process may run on: CPU affinity, capped by the cgroup quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        cores = os.cpu_count() or 1
    quota = cgroup_cpus()
    if quota:
        cores = min(cores, max(1, math.floor(quota)))
    return max(1, cores)


def choose_threads(n_jobs: int = 1) -> tuple[int, str]:
    """(intra-op threads, why): the user's setting, else the usable cores shared among ``n_jobs``."""
    for var in (THREADS_ENV, "OMP_NUM_THREADS"):
        value = os.environ.get(var, "")
        if value.strip().isdigit() and int(value) > 0:
            return int(value), f"{var}={value}"
    cores = usable_cores()
    n_jobs = max(1, int(n_jobs or 1))
    threads = max(1, cores // n_jobs)
    return threads, f"{cores} usable cores" + (f" / {n_jobs} parallel jobs" if n_jobs > 1 else "")


def launcher_jobs() -> int:
    """Jobs a joblib sweep runs at once (``hydra.launcher.n_jobs``; -1 = one per core), else 1."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return 1
        launcher = HydraConfig.get().get("launcher") or {}
        if "joblib" not in str(launcher.get("_target_", "")).lower():
            return 1
        n = int(launcher.get("n_jobs") or 1)
    except Exception:  # noqa: BLE001 - no Hydra, or a launcher without n_jobs: one job at a time
        return 1
    return usable_cores() if n < 0 else max(1, n)


def configure(n_jobs: int | None = None) -> tuple[int, str]:
    """Set torch's intra-op threads for this job; returns (threads, why)."""
    import torch

    threads, why = choose_threads(launcher_jobs() if n_jobs is None else n_jobs)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads, why
