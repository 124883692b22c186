"""One evaluator per task: it turns generated text into prediction rows and split metrics.

``make_evaluator(task, split)`` is what :class:`medft.training.module.MedVLMModule` holds per split:

* ``vqa``    -> :class:`VQAEvaluator`: exact-match accuracy (``acc``, ``acc_closed``, ``acc_open``);
* ``report`` -> :class:`ReportEvaluator`: BLEU-4 (torchmetrics, cheap) during validation; on the
  test split the pycocoevalcap set (``bleu_1``..``bleu_4``, ``meteor``, ``rouge_l``, ``cider``)
  on R2Gen-cleaned reports.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchmetrics.text import BLEUScore

from medft.metrics.accuracy import VQAAccuracy
from medft.metrics.report_gen import clean_report, coco_scores
from medft.metrics.vqa import is_correct, normalize_answer
from medft.util.errors import ConfigError


class VQAEvaluator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.accuracy = VQAAccuracy()

    def update(self, predictions: list[str], metas: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # answer and prediction exactly as given and as generated; *_norm: the forms that were compared
        rows = [{**m, "prediction": p, "answer_norm": normalize_answer(m["answer"]), "prediction_norm": normalize_answer(p),
                 "correct": is_correct(p, m["answer"])} for p, m in zip(predictions, metas)]
        self.accuracy.update([r["correct"] for r in rows], [r["answer_type"] for r in rows])
        return rows

    def compute(self) -> dict[str, torch.Tensor]:
        return self.accuracy.compute()

    def reset(self) -> None:
        self.accuracy.reset()

    def load_rows(self, rows: list[dict[str, Any]]) -> None:
        """Reset, then count ``rows`` (prediction rows of :meth:`update`, e.g. gathered from every rank)."""
        self.reset()
        self.accuracy.update([r["correct"] for r in rows], [r["answer_type"] for r in rows])


class ReportEvaluator(nn.Module):
    """BLEU-4 of cleaned reports (torchmetrics, DDP-synced); with ``coco`` the pycocoevalcap set."""

    def __init__(self, coco: bool = False) -> None:
        super().__init__()
        self.coco = coco
        self.bleu = BLEUScore(n_gram=4)
        self.references: list[str] = []
        self.generated: list[str] = []

    def update(self, predictions: list[str], metas: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rows = [{"id": m["id"], "reference": m["report"], "generated": p} for p, m in zip(predictions, metas)]
        self.bleu.update([clean_report(p) for p in predictions], [[clean_report(m["report"])] for m in metas])
        if self.coco:
            self.references.extend(r["reference"] for r in rows)
            self.generated.extend(r["generated"] for r in rows)
        return rows

    def compute(self) -> dict[str, Any]:
        if self.coco and self.references:
            return coco_scores(self.references, self.generated)
        return {"bleu_4": self.bleu.compute()}

    def reset(self) -> None:
        self.bleu.reset()
        self.references, self.generated = [], []

    def load_rows(self, rows: list[dict[str, Any]]) -> None:
        """Reset, then score ``rows`` (prediction rows of :meth:`update`, e.g. gathered from every rank)."""
        self.reset()
        if rows:
            self.update([r["generated"] for r in rows], [{"id": r["id"], "report": r["reference"]} for r in rows])


def make_evaluator(task: str, split: str) -> nn.Module:
    if task == "vqa":
        return VQAEvaluator()
    if task == "report":
        return ReportEvaluator(coco=split == "test")
    raise ConfigError(f"task {task!r} has no evaluator; use vqa or report")


def report_scores_line(metrics: dict[str, Any], split: str = "test") -> str:
    """``test report scores: bleu_1 … | bleu_4 … | meteor … | rouge_l … | cider …``."""
    keys = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider")
    parts = [f"{k} {float(metrics[f'{split}/{k}']):.4f}" for k in keys if metrics.get(f"{split}/{k}") is not None]
    return f"{split} report scores: " + (" | ".join(parts) or "n/a")


def scores_line(task: str, metrics: dict[str, Any], split: str = "test") -> str:
    """One line of a split's scores: accuracies (vqa) or report scores."""
    if task != "vqa":
        return report_scores_line(metrics, split)

    from medft.metrics.protocols import protocol_line

    exact = "exact_" if f"{split}/exact_acc_closed" in metrics or f"{split}/exact_acc_open" in metrics else ""

    def fmt(key: str) -> str:
        value = metrics.get(f"{split}/{key}")
        return "n/a" if value is None else f"{float(value):.3f}"

    line = f"{split} accuracy: closed {fmt(exact + 'acc_closed')} | open {fmt(exact + 'acc_open')} | overall {fmt('acc')}"
    llava = protocol_line(metrics, split)  # eval.protocol=llava_med: LLaVA-Med's scores on a second line
    return line if llava is None else f"{line}\n{llava}"
