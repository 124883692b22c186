"""Train and test one run: seed -> data -> model -> tune -> trainer -> fit -> test -> run dir.

    medft train +tune=layernorm                     # the embedded default (tiny BLIP, demo set)
    medft train -m tune=layernorm,full trainer.max_epochs=1
    medft train resume=logs/runs/layernorm_demo_blip_tiny/<time>   # continue a stopped run in place
    python -m medft.train +tune=layernorm           # the same, without the console script

Every run dir holds .hydra/ (the composed config), metrics.json, predictions.jsonl, csv/ logs and
checkpoints/ (best.ckpt, last.ckpt) with only the trained parameters and the state to resume.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # run as a file (Lightning's DDP re-launch): keep medft/ itself off sys.path
    sys.path[:] = [p for p in sys.path if p != __import__("os").path.dirname(__file__)]

import functools
import os
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from medft.config import CONFIG_DIR, SWEEP_ENV, normalize_overrides, register_resolvers, require_tune, sweep_env, validate
from medft.errors import ConfigError, user_error
from medft.files import write_json_atomic, write_jsonl_atomic, write_text_atomic
from medft.redact import redact
from medft.resume import resume_overrides


def task_wrapper(fn: Callable[[DictConfig], dict[str, Any]]) -> Callable[[DictConfig], dict[str, Any] | None]:
    """Write ``error.txt`` into the run dir on failure. A single run exits non-zero (status 2 and one
    line for a user error); in a multirun the failed job is recorded and the sweep goes on."""

    @functools.wraps(fn)
    def wrapped(cfg: DictConfig) -> dict[str, Any] | None:
        try:
            return fn(cfg)
        except Exception as err:  # noqa: BLE001 - recorded, then re-raised or survived by the sweep
            where, cause = traceback.format_exc(), user_error(err)  # a MedftError, maybe wrapped by instantiate
            if cause is not None:
                message, status = f"medft: error: {cause}", 2
            else:
                message, status = f"{type(err).__name__}: {err}", 1
        output_dir = OmegaConf.select(cfg, "paths.output_dir")
        if output_dir:
            write_text_atomic(Path(output_dir) / "error.txt", redact(f"{message}\n\nwhere:\n{where}"))
        if status == 1:
            message = f"{message}\n\n{where}"
        print(message.splitlines()[0] if status == 2 else message, file=sys.stderr)
        if _is_multirun():
            return None
        raise SystemExit(status)

    return wrapped


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _instantiate_dict(node: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a dict-of-configs group (callbacks, loggers)."""
    if not node:
        return []
    return [hydra.utils.instantiate(v) for v in node.values() if isinstance(v, DictConfig) and "_target_" in v]


@task_wrapper
def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one experiment and return its final metrics (also written to ``metrics.json``)."""
    validate(cfg)  # before the heavy imports: a typo costs a second, not a model load
    for name, dataset_name in (cfg.get("also_test") or {}).items():
        also_test_config(str(name), str(dataset_name))
    import lightning as L

    from medft.callbacks import StepTimer
    from medft.data.checks import check_model_fits, finish_data_stats, prepare_splits
    from medft.data.datamodule import MedDataModule
    from medft.data.sources import load_splits
    from medft.metrics.evaluators import scores_line
    from medft.models import build_model
    from medft.module import MedVLMModule
    from medft.tuning import apply_tuning, count_parameters, param_metrics, summary_line

    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    splits = load_splits(cfg.dataset)  # records only: cheap, fails early on a bad root
    splits, data_stats = prepare_splits(splits, cfg.dataset)  # missing images: error, or skipped
    print(f"dataset {cfg.dataset.name}: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))

    net = build_model(cfg.model)
    data_stats.update(check_model_fits(net, cfg.dataset, splits))
    tune = OmegaConf.to_container(cfg.tune, resolve=True)
    report = apply_tuning(net, tune)
    counts = count_parameters(net.model, net.arch["components"])
    print(summary_line(counts))

    datamodule = MedDataModule(
        splits, net.collate, cfg.data.batch_size, cfg.data.eval_batch_size, cfg.data.num_workers,
        skip_bad_images=bool(cfg.dataset.get("skip_bad_images", False)), seed=cfg.seed,
    )
    module = MedVLMModule(
        net,
        optim=hydra.utils.instantiate(cfg.optim),
        scheduler=hydra.utils.instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        generate_kwargs=OmegaConf.to_container(cfg.eval.generate, resolve=True),
        closed=cfg.eval.get("closed", "generate"), candidates=tuple(cfg.eval.get("candidates", ("yes", "no"))),
        tune_name=report.mode,
    )
    if "wandb" in (cfg.get("logger") or {}):
        os.environ.setdefault("WANDB_MODE", "offline")  # never needs an account unless asked for
    loggers = _instantiate_dict(cfg.get("logger"))
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=_instantiate_dict(cfg.get("callbacks")), logger=loggers)
    params = param_metrics(counts)
    for logger in loggers:
        logger.log_hyperparams(redact(OmegaConf.to_container(cfg, resolve=True)))
        logger.log_metrics(params, step=0)

    started = time.perf_counter()
    if counts["trainable"]:
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    else:  # tune=frozen: zero-shot evaluation of the model as loaded
        print("nothing to train (all parameters frozen): evaluating the model as it is")
    train_seconds = time.perf_counter() - started
    metrics: dict[str, Any] = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("val/")}

    best = ""
    if cfg.get("test"):
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback and counts["trainable"] else ""
        trainer.test(module, datamodule=datamodule, ckpt_path=best or None, verbose=False, weights_only=True)
        metrics.update({k: v for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
        write_jsonl_atomic(output_dir / "predictions.jsonl", module.predictions)
        print(scores_line(net.task, metrics))
        for name, dataset_name in (cfg.get("also_test") or {}).items():  # the same weights, other test sets
            metrics.update(test_on(cfg, str(name), str(dataset_name), trainer, module, net, output_dir))

    if counts["trainable"] and trainer.is_global_zero:  # only what was trained (the best checkpoint's weights when tested)
        from medft.trained import FILENAME, save_trained

        weights = "best" if cfg.get("test") and best else "last"
        metrics["checkpoint/trained_bytes"] = save_trained(output_dir / FILENAME, net, tune, weights=weights).stat().st_size
    metrics.update(finish_data_stats(data_stats, datamodule))
    metrics.update(params)
    metrics.update({"time/train_s": train_seconds, "train/steps": trainer.global_step})
    for callback in trainer.callbacks:
        if isinstance(callback, StepTimer):
            metrics.update(callback.summary())
    checkpoints = list((output_dir / "checkpoints").glob("*.ckpt"))
    if checkpoints:
        metrics["checkpoint/bytes"] = max(p.stat().st_size for p in checkpoints)
    for kind, n in report.modules.items():
        metrics[f"params/modules/{kind}"] = n
    write_json_atomic(output_dir / "metrics.json", metrics)
    print(f"run dir: {output_dir}")
    return metrics


def also_test_config(name: str, dataset_name: str) -> Path:
    """The dataset config file that ``also_test.NAME=DATASET`` names (checked before any training)."""
    from medft.config import available

    path = CONFIG_DIR / "dataset" / f"{dataset_name}.yaml"
    if not path.is_file():
        raise ConfigError(f"also_test.{name}={dataset_name}: no such dataset; choose one of {', '.join(available('dataset'))}")
    return path


def test_on(cfg: DictConfig, name: str, dataset_name: str, trainer: Any, module: Any, net: Any, output_dir: Path) -> dict[str, Any]:
    """``also_test.NAME=DATASET``: test the model as it is now (the run's tested weights) on the test
    split of ``configs/dataset/DATASET.yaml``; metrics ``NAME/acc``, ... and ``predictions_NAME.jsonl``."""
    from medft.data.checks import prepare_splits
    from medft.data.datamodule import MedDataModule
    from medft.data.sources import load_splits
    from medft.metrics.evaluators import scores_line

    root = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))  # the run's paths.* resolve the same
    with open_dict(root):
        root.dataset = OmegaConf.load(also_test_config(name, dataset_name))
    splits = load_splits(root.dataset)
    test, _ = prepare_splits({"train": splits["test"], "test": splits["test"]}, root.dataset)
    datamodule = MedDataModule(test, net.collate, cfg.data.batch_size, cfg.data.eval_batch_size, cfg.data.num_workers)
    trainer.test(module, datamodule=datamodule, verbose=False, weights_only=True)
    scores = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    write_jsonl_atomic(output_dir / f"predictions_{name}.jsonl", module.predictions)
    print(f"{name} ({dataset_name}) " + scores_line(net.task, scores))
    return {f"{name}/{k.removeprefix('test/')}": float(v) for k, v in scores.items()}


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    value = (metrics or {}).get(cfg.get("optimized_metric") or "")
    return None if value is None else float(value)


def main(args: list[str] | None = None) -> None:
    """Entry point of ``medft train``. Rewrites ``+group=`` / ``group=`` as Hydra wants them, and
    points ``sys.argv[0]`` at this file so Lightning's DDP launcher re-runs the same training job."""
    register_resolvers()
    args = normalize_overrides(resume_overrides(sys.argv[1:] if args is None else list(args)))
    require_tune(args)
    os.environ[SWEEP_ENV] = sweep_env(args)  # inherited by launcher workers: names their run dirs
    sys.argv = [str(Path(__file__).resolve()), *args]
    _hydra_main()


if __name__ == "__main__":
    main()
