"""Evaluate a trained run on a dataset: the study's generalization experiments.

    medft eval ckpt=logs/runs/layernorm_vqa_rad_blip_tiny/<time> dataset=slake dataset.root=/data/Slake1.0
    medft eval ckpt=.../checkpoints/last.ckpt dataset=vqa_rad dataset.root=/data/vqa_rad split=val

The run's ``.hydra/config.yaml`` gives the model (and its seed, which fixes the weights a tiny
random model starts from) and the tune mode; the checkpoint holds only the trained parameters
(a run directory gives its ``trained.safetensors``, else ``checkpoints/best.ckpt`` or ``last.ckpt``).
Writes ``metrics.json`` (``test/*``, or ``val/*`` ... per ``split``, plus ``eval/*`` provenance)
and ``predictions.jsonl`` into ``logs/evals/<dataset>/<time>/``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from medft.config.overrides import normalize_overrides, quote_paths
from medft.config.resolvers import register_resolvers
from medft.config.search import CONFIG_DIR, take_config_dirs
from medft.config.validate import check_keys, check_trainer, check_values, run_hydra
from medft.runs.runner import task_wrapper
from medft.runs.trust import CLAIMS_ENV
from medft.training.pipeline import (
    load_trained,
    make_datamodule,
    make_module,
    make_trainer,
    resolve_run,
    run_model_config,
    run_protocol,
    score,
    setup_data,
    setup_model,
    start_run,
    use_run_config_dirs,
    write_metrics,
    write_predictions,
)
from medft.util.errors import ConfigError


@task_wrapper
def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test a trained run's model on ``cfg.dataset``'s ``cfg.split``; metrics.json and predictions.jsonl go
    into this evaluation's own run dir."""
    from medft.data.checks import finish_data_stats
    from medft.metrics.evaluators import scores_line
    from medft.models import check_task

    if OmegaConf.is_missing(cfg, "ckpt"):
        raise ConfigError("no ckpt given: run `medft eval ckpt=RUN_DIR_OR_CKPT dataset=<name> [dataset.root=DIR]`")
    check_keys(cfg, "eval")
    check_values(cfg)
    check_trainer(cfg)
    if cfg.split not in ("train", "val", "test"):
        raise ConfigError(f"split={cfg.split!r} is not known; use test, val or train")
    run_dir, ckpt_file = resolve_run(cfg.ckpt)
    model_cfg, tune = run_model_config(run_dir, cfg)
    check_task(model_cfg, cfg.dataset, run=run_dir.name)  # before any model is built
    protocol = run_protocol(cfg, model_cfg, cfg.dataset.get("task", "vqa"))
    output_dir = Path(cfg.paths.output_dir)
    start_run(output_dir, int(model_cfg.get("seed", 0) or 0))

    all_splits, splits, data_stats = setup_data(cfg.dataset, cfg.split)
    records = splits[cfg.split]
    print(f"evaluating {run_dir} ({ckpt_file.name}) on {cfg.dataset.name}/{cfg.split}: {len(records)} samples")
    net, report = setup_model(model_cfg, tune, cfg.dataset, splits, data_stats)
    datamodule = make_datamodule(  # served as its "test" split; "train" only satisfies the non-empty check
        cfg, {"train": records, "test": records}, net, cfg.data.eval_batch_size,
        skip_bad_images=bool(cfg.dataset.get("skip_bad_images", False)),
    )
    module = make_module(cfg, net, report.mode, train=False)
    load_trained(module, ckpt_file)
    trainer = make_trainer(cfg, [], False, enable_checkpointing=False)
    trainer.test(module, datamodule=datamodule, verbose=False)

    prefix = f"{cfg.split}/"
    metrics: dict[str, Any] = {prefix + k.removeprefix("test/"): v for k, v in trainer.callback_metrics.items()
                               if k.startswith("test/")}
    score(metrics, module.predictions, protocol, all_splits, cfg.dataset.name, output_dir, cfg.split)
    print(scores_line(net.task, metrics, cfg.split))
    metrics.update(finish_data_stats(data_stats, datamodule))
    metrics.update({"eval/run_dir": str(run_dir), "eval/ckpt": str(ckpt_file), "eval/tune": report.mode,
                    "eval/model": net.name, "eval/dataset": cfg.dataset.name, "eval/split": cfg.split})
    write_metrics(output_dir, metrics)
    write_predictions(output_dir, module.predictions)
    print(f"run dir: {output_dir}")
    return metrics


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="eval")
def _hydra_main(cfg: DictConfig) -> None:
    evaluate(cfg)


def main(args: list[str] | None = None) -> None:
    """Entry point of ``medft eval``."""
    args = sys.argv[1:] if args is None else list(args)
    register_resolvers()
    os.environ.pop(CLAIMS_ENV, None)  # a new command claims new dirs (its launcher's workers inherit them)
    args = take_config_dirs(args, "eval")  # --config-dir DIR: anywhere
    for before, arg in zip(["", *args], args):  # a bare path (`medft eval logs/runs/...`): not an override
        bare = "=" not in arg or Path(arg).expanduser().exists()  # a sweep job's dir holds '=' too
        if bare and not arg.startswith("-") and not before.startswith("-"):
            raise ConfigError(f"{arg!r} is not an override: give the run as ckpt={arg} (and dataset=<name>)")
    ckpt = next((a.split("=", 1)[1] for a in args if a.startswith("ckpt=")), None)
    if ckpt and Path(ckpt).expanduser().exists():  # before Hydra composes: the run's own config dirs
        use_run_config_dirs(resolve_run(ckpt)[0])
    args = normalize_overrides(quote_paths(args), config_name="eval")
    sys.argv = [str(Path(__file__).resolve()), *args]
    run_hydra(_hydra_main)


if __name__ == "__main__":
    main()
