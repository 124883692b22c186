"""Run directories that are never shared, and a sweep's exit status.

``${medft_claim:PATH}`` (configs/hydra/default.yaml) creates PATH with ``os.mkdir`` (atomic: of two
runs started in the same second exactly one gets PATH) and, when it exists, ``PATH_2``, ``PATH_3``...
The claim is remembered in the environment, so Hydra resolving the same path again, and launcher
workers started afterwards, get the same directory.

:class:`SweepStatus` is a Hydra callback: after a multirun it counts the jobs that left an
``error.txt`` (and no ``metrics.json``), so ``medft train -m`` can exit non-zero.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

CLAIMS_ENV = "MEDFT_CLAIMED_DIRS"


def claim_dir(path: str) -> str:
    """A directory for this run only: ``path`` if this call created it, else the first free ``path_N``."""
    claims = json.loads(os.environ.get(CLAIMS_ENV) or "{}")
    if path in claims:
        return claims[path]
    base = Path(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        candidate = base if n == 1 else base.with_name(f"{base.name}_{n}")
        try:
            os.mkdir(candidate)
            break
        except FileExistsError:
            n += 1
    claims[path] = str(candidate)
    os.environ[CLAIMS_ENV] = json.dumps(claims)
    return str(candidate)


class SweepStatus(Callback):
    """After a multirun: which jobs failed (read from the sweep dir, so every launcher is covered)."""

    failed: list[Path] = []
    jobs: int = 0

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        SweepStatus.failed, SweepStatus.jobs = [], 0
        if "optuna" in str(config.hydra.get("sweeper", {}).get("_target_", "")).lower():
            import logging

            import optuna  # its coloured "A new study created" line repeats the sweeper's "Study name"

            optuna.logging.set_verbosity(logging.WARNING)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        root = Path(str(config.hydra.sweep.dir))
        runs = sorted(p.parent.parent for p in root.rglob(".hydra/config.yaml")) if root.is_dir() else []
        SweepStatus.jobs = len(runs)
        SweepStatus.failed = [r for r in runs if (r / "error.txt").is_file() and not (r / "metrics.json").is_file()]
        SweepStatus.root = root


def sweep_failures() -> tuple[list[Path], int, Path | None]:
    """(failed job dirs, jobs, sweep dir) of the last multirun in this process."""
    return SweepStatus.failed, SweepStatus.jobs, getattr(SweepStatus, "root", None)
