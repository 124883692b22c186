"""VQA accuracy: exact match, split by answer type, as a torchmetrics ``Metric`` (DDP-synced).

One rule for training, evaluation and rescoring: an answer type is ``CLOSED`` or ``OPEN`` in any
case and with stray spaces ("CLOSED " is in VQA-RAD's release); a record of another type counts
toward the overall accuracy only. Correctness (exact match after Med-VQA normalisation) is
:func:`medft.metrics.vqa.is_correct`.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch
from torchmetrics import Metric

from medft.metrics.vqa import is_correct

KINDS = ("closed", "open")


def answer_kind(answer_type: Any) -> str | None:
    """``"closed"`` / ``"open"`` for a CLOSED / OPEN answer type (any case, stray spaces), else None."""
    kind = str(answer_type or "").strip().lower()
    return kind if kind in KINDS else None


class VQAAccuracy(Metric):
    """Accumulates correct / total overall and for CLOSED and OPEN questions; ``compute`` gives the accuracies."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        for name in ("correct", "n", "correct_closed", "n_closed", "correct_open", "n_open"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, correct: list[bool], answer_types: list[str]) -> None:
        for ok, answer_type in zip(correct, answer_types):
            self.correct += int(ok)
            self.n += 1
            kind = answer_kind(answer_type)
            if kind is not None:
                setattr(self, f"correct_{kind}", getattr(self, f"correct_{kind}") + int(ok))
                setattr(self, f"n_{kind}", getattr(self, f"n_{kind}") + 1)

    def compute(self) -> dict[str, torch.Tensor]:
        out = {"acc": self.correct.float() / self.n.clamp(min=1)}
        for kind in KINDS:
            n = getattr(self, f"n_{kind}")
            if n > 0:
                out[f"acc_{kind}"] = getattr(self, f"correct_{kind}").float() / n
        return out



def vqa_accuracy(records: Iterable[Mapping[str, Any]]) -> dict[str, float | int | None]:
    """:class:`VQAAccuracy` of ``records`` (dicts with prediction, answer, answer_type), as plain numbers.

    Returns ``{"acc", "acc_closed", "acc_open", "n", "n_closed", "n_open"}``. An accuracy over
    zero records is ``None`` (not 0, not NaN) so that "no OPEN questions" is not mistaken for
    "all OPEN questions wrong".
    """
    metric = VQAAccuracy()
    records = list(records)
    metric.update([is_correct(r.get("prediction"), r.get("answer")) for r in records], [r.get("answer_type") for r in records])
    out: dict[str, float | int | None] = {}
    for suffix in ("", "_closed", "_open"):  # from the integer counts: no float32 rounding in metrics.json
        n, hits = int(getattr(metric, f"n{suffix}")), int(getattr(metric, f"correct{suffix}"))
        out[f"acc{suffix}"] = hits / n if n else None
    return {**out, "n": int(metric.n), "n_closed": int(metric.n_closed), "n_open": int(metric.n_open)}
