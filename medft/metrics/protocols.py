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

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from medft.metrics import llava_med
from medft.runs.layout import RunDir
from medft.util.errors import ConfigError

Rows = Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class Protocol:
    """A published scoring: one entry of :data:`PROTOCOLS`.

    ``score(rows, candidates)`` -> its metrics without the split prefix; None: exact match only, as the
    evaluator computed it. A protocol with ``score`` keeps ``acc`` (exact match, comparable across
    protocols) and moves the exact per-type accuracies to ``exact_acc_*``. ``keys``: (metric, label)
    of each metric it writes, in the order ``protocol_line`` prints them. ``per_question(rows,
    candidates)`` -> {metric: one value per row, NaN where the row does not count}: what
    :mod:`medft.metrics.stats` resamples for its intervals. ``candidates``: its scores use the
    dataset's candidate answers (``candidates.json``)."""

    name: str
    about: str
    score: Callable[[Rows, Sequence[str]], dict[str, Any]] | None = None
    keys: tuple[tuple[str, str], ...] = ()
    per_question: Callable[[Rows, Sequence[str]], dict[str, Sequence[float]]] | None = None
    candidates: bool = False


# A new protocol: its module (rows and candidates in, metrics out) and one entry here.
PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (
    Protocol("exact", "exact match"),
    Protocol("llava_med", "LLaVA-Med's scoring", llava_med.llava_med_scores, (
        ("acc_closed", "closed"), ("recall_open", "open recall"), ("f1_open", "open f1"),
        ("open_candidate_acc", "open candidate acc")), llava_med.per_question, candidates=True),
)}
DEFAULT_PROTOCOL = "exact"


def resolve_protocol(value: Any, model_cfg: Mapping[str, Any] | None) -> str:
    """``eval.protocol`` as given, else the model config's ``eval_protocol`` (the LLaVA models: llava_med),
    else exact. A run from before the key: the ``eval_protocol`` of the model config of that name."""
    if value in (None, ""):
        model_cfg = model_cfg or {}
        value = model_cfg.get("eval_protocol") or configured_protocol(model_cfg.get("name")) or DEFAULT_PROTOCOL
    if value not in PROTOCOLS:
        known = ", ".join(f"{p.name} ({p.about})" for p in PROTOCOLS.values())
        raise ConfigError(f"eval.protocol={value!r} is not known: use one of {known}")
    return str(value)


def configured_protocol(model_name: Any) -> str | None:
    """The ``eval_protocol:`` written in the model config ``model/<name>.yaml`` (a user's config dir first)."""
    import yaml

    from medft.config.search import find_config

    path = find_config("model", f"{model_name}.yaml") if isinstance(model_name, str) and model_name else None
    try:
        return (yaml.safe_load(path.read_text()) or {}).get("eval_protocol") if path else None
    except (OSError, yaml.YAMLError, AttributeError):
        return None


def answers_of(rows: Rows) -> list[str]:
    """The distinct answers of prediction rows, first appearance kept: the candidates of a run without
    ``candidates.json``."""
    return list(dict.fromkeys(str(r.get("answer")) for r in rows))


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
    from medft.util.files import write_json_atomic

    path = RunDir(run_dir).candidates
    write_json_atomic(path, {"source": source, "answers": list(candidates)})
    return path


def read_candidates(run_dir: Path) -> list[str] | None:
    path = RunDir(run_dir).candidates
    if not path.is_file():
        return None
    try:
        from medft.util.safe_load import load_json

        data = load_json(path)
        answers = data["answers"] if isinstance(data, dict) else data
    except (ValueError, KeyError, TypeError):  # medft.util.safe_load.UnsafeFile is a ValueError
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
    out: dict[str, Any] = {f"{split}/acc": exact["acc"], f"{split}/acc_closed": exact["acc_closed"],
                           f"{split}/acc_open": exact["acc_open"]}
    apply_protocol(out, rows, protocol, candidates, split)
    return {k: v for k, v in out.items() if v is not None}


def apply_protocol(metrics: dict[str, Any], rows: Sequence[Mapping[str, Any]], protocol: str,
                   candidates: Sequence[str] | None, split: str = "test") -> dict[str, Any]:
    """Record ``protocol`` in ``metrics`` (in place; returned). The exact-match values already there
    (computed by the evaluator, synced across devices) stay; with ``llava_med`` the per-type ones move
    to ``<split>/exact_acc_*`` and LLaVA-Med's metrics of ``rows`` are added."""
    metrics["eval/protocol"] = protocol
    score = PROTOCOLS[protocol].score
    if score is not None:
        for key in ("acc_closed", "acc_open"):
            if f"{split}/{key}" in metrics:
                metrics[f"{split}/exact_{key}"] = metrics.pop(f"{split}/{key}")
        metrics.update({f"{split}/{k}": v for k, v in score(rows, candidates or []).items()})
    return metrics


def protocol_line(metrics: Mapping[str, Any], split: str = "test") -> str | None:
    """``test llava_med: closed 0.812 | open recall 0.402 | open f1 0.377 | open candidate acc 0.351``
    (None for a protocol without a line of its own, such as exact)."""
    protocol = PROTOCOLS.get(str(metrics.get("eval/protocol")))
    if protocol is None or not protocol.keys:
        return None

    def fmt(key: str) -> str:
        value = metrics.get(f"{split}/{key}")
        return "n/a" if value is None else f"{float(value):.3f}"

    return f"{split} {protocol.name}: " + " | ".join(f"{label} {fmt(key)}" for key, label in protocol.keys)
