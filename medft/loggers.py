"""Lightning's CSVLogger, except that a resumed run keeps its earlier rows.

Lightning's writer deletes ``metrics.csv`` when its directory is not empty ("Previous log files in
this directory will be deleted"), so ``medft train resume=RUN_DIR`` lost the training curve before
the resume. This one reads the existing header and appends under it (rewriting the file only when a
new column appears, as Lightning does). Steps logged after the checkpoint the run resumed from and
before it stopped are logged again by the resumed run: their rows appear twice, in order.
"""

from __future__ import annotations

import csv

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
