"""VQA accuracy as a torchmetrics ``Metric``: exact match, split by answer type, DDP-synced."""

from __future__ import annotations

import torch
from torchmetrics import Metric


class VQAAccuracy(Metric):
    """Accumulates correct / total for CLOSED and OPEN questions; ``compute`` gives the three accuracies."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        for name in ("correct_closed", "n_closed", "correct_open", "n_open"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, correct: list[bool], answer_types: list[str]) -> None:
        for ok, kind in zip(correct, answer_types):
            if kind == "CLOSED":
                self.correct_closed += int(ok)
                self.n_closed += 1
            else:
                self.correct_open += int(ok)
                self.n_open += 1

    def compute(self) -> dict[str, torch.Tensor]:
        n = self.n_closed + self.n_open
        out = {"acc": (self.correct_closed + self.correct_open).float() / n.clamp(min=1)}
        if self.n_closed > 0:
            out["acc_closed"] = self.correct_closed.float() / self.n_closed
        if self.n_open > 0:
            out["acc_open"] = self.correct_open.float() / self.n_open
        return out
