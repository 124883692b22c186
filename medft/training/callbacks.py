"""Lightning callbacks of medft's own (checkpointing, progress and early stopping are Lightning's)."""

from __future__ import annotations

import resource
import statistics
import sys
import time
from typing import Any

import lightning as L
import torch


class StepTimer(L.Callback):
    """Median seconds per optimizer step (after ``warmup`` steps) and the run's peak memory."""

    def __init__(self, warmup: int = 2) -> None:
        self.warmup = warmup
        self.durations: list[float] = []
        self._start = 0.0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Start the peak-memory count at this run (once: its first fit or test), so that the runs of a
        multirun sharing one process each report their own peak RSS, not the process's so far."""
        if not getattr(self, "_reset", False):
            self._reset = True
            _reset_peak_rss()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.durations.append(time.perf_counter() - self._start)

    def summary(self) -> dict[str, float]:
        """``time/step_s`` (median, warm-up excluded) and ``memory/peak_mb`` (GPU allocator or process RSS)."""
        out: dict[str, float] = {}
        timed = self.durations[self.warmup:] or self.durations
        if timed:
            out["time/step_s"] = statistics.median(timed)
        if torch.cuda.is_available():
            out["memory/peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        else:  # peak resident set size of this process (since this run started, on Linux)
            out["memory/peak_mb"] = _peak_rss_mb()
        return out


class ValHistory(L.Callback):
    """The ``val/*`` metrics of every validation, kept in the checkpoints (so a resumed run has them
    too): ``metrics.json`` records those of the checkpoint that was tested, not only the last epoch's."""

    def __init__(self) -> None:
        self.history: list[dict[str, Any]] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        values = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if values:
            self.history.append({"epoch": trainer.current_epoch, "step": trainer.global_step, "metrics": values})

    def of_best(self, monitor: str | None, best_score: Any) -> dict[str, Any] | None:
        """The first validation whose ``monitor`` equals the best checkpoint's score (ModelCheckpoint
        keeps the earliest of equal scores)."""
        if not monitor or best_score is None:
            return None
        best = float(best_score)
        return next((h for h in self.history if h["metrics"].get(monitor) == best), None)

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """A resume brings the history so far; testing best.ckpt (an earlier state) must not cut it short."""
        known = {(h["epoch"], h["step"]) for h in self.history}
        merged = self.history + [h for h in state_dict.get("history", []) if (h["epoch"], h["step"]) not in known]
        self.history = sorted(merged, key=lambda h: h["step"])


def _reset_peak_rss() -> None:
    """Linux: reset the process's peak RSS (VmHWM) to its current RSS; elsewhere nothing."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_rss_mb() -> float:
    """Peak RSS in MB: VmHWM (Linux, resettable), else getrusage (kilobytes on Linux, bytes on macOS)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10)
