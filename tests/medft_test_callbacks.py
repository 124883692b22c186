"""Test-only Lightning callbacks, loaded by subprocess runs with PYTHONPATH=tests.

``+callbacks.pause._target_=medft_test_callbacks.PauseAtStep`` is inert unless the environment
names a step (MEDFT_TEST_PAUSE_AT_STEP) and a marker file (MEDFT_TEST_PAUSE_MARKER): then, once
that many optimizer steps are done, it writes the marker and sleeps, so a test can SIGKILL the
run at a known point after a checkpoint without racing it.
"""

import os
import time
from pathlib import Path

import lightning as L


class PauseAtStep(L.Callback):
    def __init__(self) -> None:
        self.step = int(os.environ.get("MEDFT_TEST_PAUSE_AT_STEP", "-1"))
        self.marker = os.environ.get("MEDFT_TEST_PAUSE_MARKER")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.marker and trainer.global_step == self.step:
            Path(self.marker).write_text(f"{trainer.global_step} {trainer.current_epoch} {batch_idx}\n")
            time.sleep(600)
