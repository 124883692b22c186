"""Lightning's CSVLogger, except that a resumed run keeps its earlier rows.

Lightning's writer deletes ``metrics.csv`` when its directory is not empty ("Previous log files in
this directory will be deleted"), so ``medft train resume=RUN_DIR`` lost the training curve before
the resume. This one reads the existing header and appends under it (rewriting the file only when a
new column appears, as Lightning does). Steps logged after the checkpoint the run resumed from and
before it stopped are logged again by the resumed run: their rows appear twice, in order.
"""

from __future__ import annotations

import csv
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as fh:
                self.metrics_keys = list(next(csv.reader(fh), []))


class CSVLogger(LightningCSVLogger):
    @property
    @rank_zero_experiment
    def experiment(self) -> AppendingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def WandbLogger(**kwargs: Any) -> Any:  # noqa: N802 - stands in for the class in configs/logger/wandb.yaml
    """Lightning's WandbLogger without its ``anonymous=None`` (wandb warns about it on every run), and
    quiet: wandb's run history and summary repeat metrics.json; :func:`finish` says where the run is."""
    import os

    import wandb
    from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger

    if "settings" not in kwargs and not os.environ.get("WANDB_QUIET"):
        kwargs["settings"] = wandb.Settings(quiet=True)
    logger = LightningWandbLogger(**kwargs)
    if "anonymous" not in kwargs and logger._wandb_init.get("anonymous") is None:
        logger._wandb_init.pop("anonymous", None)
    return logger


def finish(loggers: list[Any]) -> None:
    """End W&B runs while the process is whole: at interpreter exit wandb prints its summary with raw
    ANSI colour codes even into a log file."""
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger" and getattr(logger, "_experiment", None) is not None:
            run = logger.experiment
            settings = run.settings
            run.finish()
            if settings._offline:
                print(f"W&B run saved offline: upload it with `wandb sync {settings.sync_dir}`")
            elif getattr(settings, "run_url", None):
                print(f"W&B run: {settings.run_url}")
