"""``medft eval rescore=RUN_DIR [eval.protocol=exact|llava_med] [out=DIR]``: score a run again from its
``predictions.jsonl`` alone (no model, no dataset, no retraining), e.g. under LLaVA-Med's protocol.

    medft eval rescore=logs/runs/lora_vqa_rad_llava_tiny/<time> eval.protocol=llava_med

Candidates for LLaVA-Med's open candidate accuracy come from the run's ``candidates.json`` (every
answer of the dataset's splits, written by ``medft train`` / ``medft eval``); a run older than that
file falls back to the answers in its ``predictions.jsonl``, and says so. Writes ``metrics.json`` into
``out=`` (default ``$MEDFT_LOG_DIR/evals/rescore/<time>/``) and prints the scores. The run dir is only
read (its config as plain YAML: nothing in it is instantiated).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from medft.runs.layout import RELATIVE, RunDir
from medft.util.errors import ConfigError
from medft.util.files import write_json_atomic


def read_predictions(run_dir: Path) -> list[dict[str, Any]]:
    path = RunDir(run_dir).predictions
    if not path.is_file():
        raise ConfigError(f"rescore={run_dir}: no {RELATIVE.predictions} there (a finished medft train or medft eval run writes one)")
    from medft.util.safe_load import load_jsonl

    return load_jsonl(path)  # bounded; a line that is not a JSON object: one line naming it


def rescore(run_dir: str | Path, protocol: str | None = None) -> dict[str, Any]:
    """The metrics of ``run_dir``'s predictions under ``protocol`` (None: the run's model default)."""
    from medft.metrics.protocols import PROTOCOLS, answers_of, protocol_metrics, read_candidates, resolve_protocol

    run_dir = Path(run_dir).expanduser().resolve()
    if not run_dir.is_dir():
        raise ConfigError(f"rescore={run_dir} is not a directory: give a run dir (logs/runs/...) or an eval dir")
    rows = read_predictions(run_dir)
    if not rows or "answer" not in rows[0] or "prediction" not in rows[0]:
        raise ConfigError(f"rescore={run_dir}: its {RELATIVE.predictions} has no answer/prediction rows (report runs cannot be re-scored this way)")
    from medft.runs.trust import read_run_config
    from medft.util.safe_load import load_json

    run = RunDir(run_dir)
    cfg = read_run_config(run_dir) if run.is_run() else {}
    old = load_json(run.metrics) if run.has_metrics() else {}
    old = old if isinstance(old, dict) else {}
    model = cfg.get("model") if isinstance(cfg.get("model"), dict) else {}
    protocol = resolve_protocol(protocol or (None if model else old.get("eval/protocol")), model)
    split = str(old.get("eval/split") or "test")
    candidates = read_candidates(run_dir)
    source = str(RELATIVE.candidates)
    if candidates is None:
        candidates = answers_of(rows)
        source = f"the answers of {RELATIVE.predictions} (the run has no {RELATIVE.candidates})"
        if PROTOCOLS[protocol].candidates:
            print(f"note: {run_dir} has no {RELATIVE.candidates}: {protocol}'s candidate answers are only the "
                  f"{len(candidates)} answers of its predictions, not every answer of the dataset")
    metrics = protocol_metrics(rows, protocol, candidates, split)
    metrics.update({"eval/rescored_from": str(run_dir), "eval/candidates": source, "eval/n": len(rows)})
    return metrics


def rescore_main(args: list[str]) -> dict[str, Any]:
    from medft.metrics.evaluators import scores_line
    from medft.metrics.protocols import PROTOCOLS

    opts: dict[str, str] = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or key not in ("rescore", "eval.protocol", "out"):
            raise ConfigError(f"{arg!r}: medft eval rescore=RUN_DIR takes only eval.protocol={'|'.join(PROTOCOLS)} and out=DIR")
        opts[key] = value
    metrics = rescore(opts["rescore"], opts.get("eval.protocol") or None)
    log_dir = Path(os.environ.get("MEDFT_LOG_DIR", "logs"))
    out = Path(opts["out"]) if opts.get("out") else log_dir / "evals" / "rescore" / time.strftime("%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(RunDir(out).metrics, metrics)
    split = next((k.split("/")[0] for k in metrics if k.endswith("/acc")), "test")
    print(f"rescored {metrics['eval/rescored_from']} ({metrics['eval/n']} predictions) with eval.protocol={metrics['eval/protocol']}")
    print(scores_line("vqa", metrics, split))
    print(f"run dir: {out}")
    return metrics


def main(args: list[str]) -> None:
    """Entry point of ``medft eval rescore=RUN_DIR`` (medft.cli dispatches it here)."""
    rescore_main(args)
