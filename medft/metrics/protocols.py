"""Which published scoring a VQA run's test metrics follow: ``eval.protocol=exact|llava_med``.

* ``exact`` (BLIP / MISS line of work; medft's default for BLIP): exact match after the Med-VQA
  normalisation of :mod:`medft.metrics.vqa`: ``test/acc_closed``, ``test/acc_open``, ``test/acc``.
* ``llava_med`` (LLaVA-Med and the papers fine-tuning it; the default for LLaVA models):
  :mod:`medft.metrics.llava_med`'s rules: ``test/acc_closed`` (its yes/no rule), ``test/recall_open``,
  ``test/f1_open``, ``test/open_candidate_acc``; ``test/acc`` stays the exact-match overall accuracy
  so sweeps compare across protocols, and the exact-match per-type accuracies move to
  ``test/exact_acc_closed`` / ``test/exact_acc_open``.

Both record ``eval/protocol``. Everything here works from prediction rows alone (``predictions.jsonl``)
and the candidate answers (``candidates.json`` in the run dir: every answer of the dataset's splits),
so a run can be re-scored without its model: ``medft eval rescore=RUN_DIR eval.protocol=llava_med``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from medft.errors import ConfigError

PROTOCOLS = ("exact", "llava_med")
CANDIDATES_FILE = "candidates.json"


def resolve_protocol(value: Any, model_cfg: Mapping[str, Any] | None) -> str:
    """``eval.protocol`` as given, else the model's ``eval_protocol`` (LLaVA: llava_med), else exact."""
    model_cfg = model_cfg or {}
    if value in (None, ""):
        value = model_cfg.get("eval_protocol") or ("llava_med" if "llava" in str(model_cfg.get("_target_", "")) else "exact")
    if value not in PROTOCOLS:
        raise ConfigError(f"eval.protocol={value!r} is not known: use exact (exact match) or llava_med (LLaVA-Med's scoring)")
    return str(value)


def dataset_candidates(splits: Mapping[str, Iterable[Mapping[str, Any]]]) -> list[str]:
    """Every distinct answer of the splits (train, val, test order; first appearance kept): LLaVA-Med's
    candidate set. The order matters: its matcher picks the first of equally good candidates."""
    order = sorted(splits, key=lambda s: ("train", "val", "test").index(s) if s in ("train", "val", "test") else 3)
    seen: dict[str, None] = {}
    for split in order:
        for rec in splits[split]:
            if rec.get("answer") is not None:
                seen.setdefault(str(rec["answer"]), None)
    return list(seen)


def write_candidates(run_dir: Path, candidates: Sequence[str], source: str) -> Path:
    from medft.files import write_json_atomic

    path = Path(run_dir) / CANDIDATES_FILE
    write_json_atomic(path, {"source": source, "answers": list(candidates)})
    return path


def read_candidates(run_dir: Path) -> list[str] | None:
    path = Path(run_dir) / CANDIDATES_FILE
    if not path.is_file():
        return None
    try:
        from medft.safe_load import load_json

        data = load_json(path)
        answers = data["answers"] if isinstance(data, dict) else data
    except (ValueError, KeyError, TypeError):  # medft.safe_load.UnsafeFile is a ValueError
        raise ConfigError(f"{path} is not a candidates file ({{\"answers\": [...]}}): delete it to fall back") from None
    if not isinstance(answers, list):
        raise ConfigError(f"{path}: \"answers\" must be a list of strings")
    return [str(a) for a in answers]


def protocol_metrics(rows: Sequence[Mapping[str, Any]], protocol: str, candidates: Sequence[str] | None,
                     split: str = "test") -> dict[str, Any]:
    """The metrics of ``rows`` (prediction rows with answer, prediction, answer_type) under ``protocol``,
    with the ``<split>/`` prefix, plus ``eval/protocol``."""
    from medft.metrics.accuracy import vqa_accuracy

    exact = vqa_accuracy(rows)
    out: dict[str, Any] = {f"{split}/acc": exact["acc"], "eval/protocol": protocol}
    if protocol == "exact":
        out.update({f"{split}/acc_closed": exact["acc_closed"], f"{split}/acc_open": exact["acc_open"]})
    else:
        from medft.metrics.llava_med import llava_med_scores

        out.update({f"{split}/exact_acc_closed": exact["acc_closed"], f"{split}/exact_acc_open": exact["acc_open"]})
        out.update({f"{split}/{k}": v for k, v in llava_med_scores(rows, candidates or []).items()})
    return {k: v for k, v in out.items() if v is not None}


def apply_protocol(metrics: dict[str, Any], rows: Sequence[Mapping[str, Any]], protocol: str,
                   candidates: Sequence[str] | None, split: str = "test") -> dict[str, Any]:
    """Record ``protocol`` in ``metrics`` (in place; returned). The exact-match values already there
    (computed by the evaluator, synced across devices) stay; with ``llava_med`` the per-type ones move
    to ``<split>/exact_acc_*`` and LLaVA-Med's metrics of ``rows`` are added."""
    metrics["eval/protocol"] = protocol
    if protocol == "llava_med":
        from medft.metrics.llava_med import llava_med_scores

        for key in ("acc_closed", "acc_open"):
            if f"{split}/{key}" in metrics:
                metrics[f"{split}/exact_{key}"] = metrics.pop(f"{split}/{key}")
        metrics.update({f"{split}/{k}": v for k, v in llava_med_scores(rows, candidates or []).items()})
    return metrics


def protocol_line(metrics: Mapping[str, Any], split: str = "test") -> str | None:
    """``test llava_med: closed 0.812 | open recall 0.402 | open f1 0.377 | open candidate acc 0.351``."""
    if metrics.get("eval/protocol") != "llava_med":
        return None

    def fmt(key: str) -> str:
        value = metrics.get(f"{split}/{key}")
        return "n/a" if value is None else f"{float(value):.3f}"

    return (f"{split} llava_med: closed {fmt('acc_closed')} | open recall {fmt('recall_open')} | "
            f"open f1 {fmt('f1_open')} | open candidate acc {fmt('open_candidate_acc')}")
