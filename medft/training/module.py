"""The LightningModule: loss in training, generated text scored in validation and test.

What "scored" means follows the model's task (``net.task``): an evaluator per split from
:func:`medft.metrics.evaluators.make_evaluator` (VQA accuracy, or report BLEU/METEOR/ROUGE/CIDEr).

Checkpoints hold only what was trained (the parameters with ``requires_grad``), plus the tune
mode; loading one checks that its keys are exactly this run's trainable keys.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import lightning as L
import torch
from torch import nn

from medft.metrics.evaluators import make_evaluator
from medft.runs.checkpoint import check_compatible
from medft.runs.layout import RELATIVE
from medft.tuning import param_groups, trainable_parameters
from medft.util.errors import ConfigError, TrainingDiverged


class MedVLMModule(L.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        optim: partial,
        scheduler: dict[str, Any] | None = None,
        generate_kwargs: dict[str, Any] | None = None,
        tune_name: str = "",
        closed: str = "generate",
        candidates: tuple[str, ...] = ("yes", "no"),
    ) -> None:
        super().__init__()
        if closed not in ("generate", "rank"):
            raise ConfigError(f"eval.closed={closed!r}: use generate or rank")
        if closed == "rank" and not net.can_rank:
            raise ConfigError(f"eval.closed=rank: {type(net).__name__} cannot rank answers; use eval.closed=generate")
        self.closed, self.candidates = closed, tuple(candidates)
        self.net = net
        self.optim = optim
        self.scheduler = scheduler or {}
        self.generate_kwargs = dict(generate_kwargs or {})
        self.tune_name = tune_name
        self.metrics = nn.ModuleDict({split: make_evaluator(net.task, split) for split in ("val", "test")})
        self.predictions: list[dict[str, Any]] = []
        self.strict_loading = False  # checkpoints hold only the trained parameters; checked below

    # -- training ---------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        if not batch["meta"]:  # every image of the batch was unreadable (dataset.skip_bad_images)
            return None
        loss = self.net.loss(batch)
        if not torch.isfinite(loss):
            raise TrainingDiverged(diverged_message(loss, self.global_step, self.trainer.precision))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["meta"]))
        return loss if loss.requires_grad else None  # tune=frozen: nothing to update, the step is skipped

    # -- evaluation -------------------------------------------------------------------------
    def _evaluate(self, batch: dict[str, Any], split: str) -> list[dict[str, Any]]:
        if not batch["meta"]:
            return []
        if self.closed == "rank":  # CLOSED questions: the likelier candidate; the others generate
            preds = answer_by_rank(self.net, batch, self.candidates, self.generate_kwargs)
        else:
            preds = self.net.generate(batch, **self.generate_kwargs)
        return self.metrics[split].update(preds, batch["meta"])

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if not batch["meta"]:
            return
        self.log("val/loss", self.net.loss(batch), batch_size=len(batch["meta"]))
        self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.predictions.extend(self._evaluate(batch, "test"))

    def _log_accuracy(self, split: str) -> None:
        values = self.metrics[split].compute()
        self.log_dict({f"{split}/{k}": v for k, v in values.items()}, prog_bar=(split == "val"))
        self.metrics[split].reset()

    def on_validation_epoch_end(self) -> None:
        self._log_accuracy("val")

    def on_test_epoch_start(self) -> None:
        self.predictions = []

    def on_test_epoch_end(self) -> None:
        if self.trainer.world_size > 1:  # each rank scored its shard: score the whole test set, each sample once
            self.predictions = gather_rows(self.predictions, self.trainer)
            self._log_rows("test", self.predictions)
        else:
            self._log_accuracy("test")

    def _log_rows(self, split: str, rows: list[dict[str, Any]]) -> None:
        """Log the metrics of ``rows`` (the same on every rank): computed here, not synced again."""
        from torchmetrics import Metric

        evaluator = self.metrics[split]
        evaluator.load_rows(rows)
        metrics = [m for m in evaluator.modules() if isinstance(m, Metric)]
        for m in metrics:
            m._to_sync = False  # the rows are already everyone's
        try:
            values = evaluator.compute()
        finally:
            for m in metrics:
                m._to_sync = True
        self.log_dict({f"{split}/{k}": v for k, v in values.items()}, sync_dist=False, rank_zero_only=True)
        evaluator.reset()

    # -- optimisation -----------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        weight_decay = self.optim.keywords.get("weight_decay", 0.0)
        groups = param_groups(self.net.model, weight_decay)
        if not groups:
            return None  # tune=frozen: nothing to optimise; fit only runs the loss (zero-shot evaluation)
        optimizer = self.optim(params=groups)
        fn = self.scheduler.get("fn")
        if fn is None:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        warmup = int(round(float(self.scheduler.get("warmup_ratio", 0.0)) * total))
        schedule = fn(optimizer, **schedule_kwargs(fn, warmup, total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # -- checkpoints: only what was trained -------------------------------------------------
    def trainable_keys(self) -> set[str]:
        return set(trainable_parameters(self))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        keep = self.trainable_keys()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        checkpoint["medft"] = {"tune": self.tune_name, "trainable_keys": sorted(keep)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        expected = {n: p.shape for n, p in trainable_parameters(self).items()}
        saved_tune = checkpoint.get("medft", {}).get("tune", "?")
        check_compatible(checkpoint["state_dict"], expected, saved_tune, self.tune_name)


def gather_rows(rows: list[dict[str, Any]], trainer: Any) -> list[dict[str, Any]]:
    """Every rank's prediction rows, in the test set's order, each sample once.

    Lightning's DistributedSampler (shuffle off) gives rank ``r`` the samples ``r, r+W, r+2W, ...`` of
    the test set padded to a multiple of W by repeating its first samples: the ``i``-th row of rank
    ``r`` is sample ``i*W + r``, and positions past the set's length are that padding, dropped here.
    Without a DistributedSampler every rank scored the whole set: rank zero's rows are kept.
    """
    import torch.distributed as dist
    from torch.utils.data import DistributedSampler

    loader = trainer.test_dataloaders
    sampler = getattr(loader, "sampler", None)
    world, rank = trainer.world_size, trainer.global_rank
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, [(i * world + rank, row) for i, row in enumerate(rows)])
    if not isinstance(sampler, DistributedSampler):
        return [row for _, row in gathered[0]]
    total = len(sampler.dataset)
    merged = sorted((pair for shard in gathered for pair in shard), key=lambda pair: pair[0])
    return [row for position, row in merged if position < total]


def schedule_kwargs(fn: Any, warmup: int, total: int) -> dict[str, int]:
    """The step counts a transformers schedule takes: constant-with-warmup has no ``num_training_steps``."""
    import inspect

    target = fn.func if isinstance(fn, partial) else fn
    accepted = inspect.signature(target).parameters
    given = {"num_warmup_steps": warmup, "num_training_steps": total}
    return {k: v for k, v in given.items() if k in accepted and k not in getattr(fn, "keywords", {})}


def diverged_message(loss: torch.Tensor, step: int, precision: Any) -> str:
    """The one line a user sees when the loss stops being a number."""
    fp16 = "16" in str(precision) and "bf16" not in str(precision)
    hint = "lower optim.lr (e.g. 10x smaller)" + (
        " and use trainer.precision=bf16-mixed instead of fp16, whose range overflows" if fp16
        else "; on fp16 use trainer.precision=bf16-mixed instead"
    )
    return (
        f"training loss became {loss.item()} at step {step}: stopped before updating the weights; "
        f"the checkpoints saved so far are kept ({RELATIVE.last_ckpt}) — {hint}"
    )


def select_rows(batch: dict[str, Any], rows: list[int]) -> dict[str, Any]:
    """The batch restricted to ``rows`` (tensors and per-sample lists alike)."""
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            out[key] = value[rows]
        elif isinstance(value, list) and len(value) == len(batch["meta"]):
            out[key] = [value[i] for i in rows]
        else:
            out[key] = value
    return out


def answer_by_rank(net: nn.Module, batch: dict[str, Any], candidates: tuple[str, ...], generate_kwargs: dict[str, Any]) -> list[str]:
    """``eval.closed=rank``: CLOSED questions answered by ``net.rank`` over ``candidates`` (one forward
    pass), the others by ``net.generate``; answers in the batch's order."""
    closed = [i for i, m in enumerate(batch["meta"]) if str(m.get("answer_type", "")).upper() == "CLOSED"]
    other = [i for i in range(len(batch["meta"])) if i not in set(closed)]
    preds = [""] * len(batch["meta"])
    if closed:
        for i, answer in zip(closed, net.rank(select_rows(batch, closed), candidates)):
            preds[i] = answer
    if other:
        for i, answer in zip(other, net.generate(select_rows(batch, other), **generate_kwargs)):
            preds[i] = answer
    return preds
