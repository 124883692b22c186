"""Train and test one run: seed -> data -> model -> tune -> trainer -> fit -> test -> run dir.

    medft train +tune=layernorm                     # the embedded default (tiny BLIP, demo set)
    medft train -m tune=layernorm,full trainer.max_epochs=1
    medft train resume=logs/runs/layernorm_demo_blip_tiny/<time>   # continue a stopped run in place
    python -m medft.commands.train +tune=layernorm  # the same, without the console script

Every run dir holds .hydra/ (the composed config), metrics.json, predictions.jsonl, csv/ logs and
checkpoints/ (best.ckpt, last.ckpt) with only the trained parameters and the state to resume.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # run as a file (Lightning's DDP re-launch): keep medft/commands/ itself off sys.path
    sys.path[:] = [p for p in sys.path if p != __import__("os").path.dirname(__file__)]
    __import__("os").environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as medft.cli: before torch loads

import os
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from medft.config import (
    CONFIG_DIR, SWEEP_ENV, find_config, normalize_overrides, quote_paths, record_config_dirs, register_resolvers, require_tune, run_hydra,
    sweep_env, take_config_dirs, validate,
)
from medft.errors import ConfigError
from medft.files import write_bytes_atomic, write_json_atomic, write_jsonl_atomic
from medft.redact import redact
from medft.resume import check_auto_resume, locked_run_dir, resume_overrides, resumed_run_dir
from medft.rundir import CLAIMS_ENV, SweepStatus, run_state, sweep_failures, write_status
from medft.runs.layout import RunDir, Status
from medft.runner import task_wrapper


def _instantiate_dict(node: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a dict-of-configs group (callbacks, loggers)."""
    if not node:
        return []
    return [hydra.utils.instantiate(v) for v in node.values() if isinstance(v, DictConfig) and "_target_" in v]


def check_epochs_left(cfg: DictConfig) -> None:
    """Refuse to continue a checkpoint with ``trainer.max_epochs`` below the epochs it has done."""
    from medft.checkpoint import load_checkpoint
    from medft.errors import ConfigError

    max_epochs = OmegaConf.select(cfg, "trainer.max_epochs", default=None)
    if not cfg.get("ckpt_path") or max_epochs in (None, -1):
        return
    progress = load_checkpoint(cfg.ckpt_path, mmap=True).get("loops", {}).get("fit_loop", {}).get("epoch_progress", {})
    done = int(progress.get("current", {}).get("processed", 0))
    if max_epochs < done:
        raise ConfigError(
            f"trainer.max_epochs={max_epochs} is below the {done} epoch(s) {cfg.ckpt_path} has already trained: "
            f"nothing to continue; give trainer.max_epochs > {done} to train longer"
        )


@task_wrapper
def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one experiment and return its final metrics (also written to ``metrics.json``)."""
    validate(cfg)  # before the heavy imports: a typo costs a second, not a model load
    check_epochs_left(cfg)
    from medft.metrics.protocols import apply_protocol, dataset_candidates, resolve_protocol, write_candidates

    vqa = OmegaConf.select(cfg, "model.task", default="vqa") == "vqa"
    protocol = resolve_protocol(OmegaConf.select(cfg, "eval.protocol"), cfg.model) if vqa else None
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
    from medft.loggers import finish as finish_loggers
    from medft.quiet import install as quiet_libraries
    from medft.threads import configure as configure_threads
    from medft.tuning import apply_tuning, count_parameters, param_metrics, summary_line

    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    from medft.preempt import Preemption

    write_status(output_dir, Status.RUNNING, resumed_from=str(cfg.ckpt_path) if cfg.get("ckpt_path") else None)
    record_config_dirs(output_dir)
    preemption = Preemption(output_dir).install()  # SIGTERM/SIGUSR1/SIGINT from here on: save, then stop
    threads, _ = configure_threads()  # the cores this job may use, shared among a joblib sweep's jobs
    quiet_libraries()  # library chatter that is not the user's business
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    splits = load_splits(cfg.dataset)  # records only: cheap, fails early on a bad root
    splits, data_stats = prepare_splits(splits, cfg.dataset)  # missing images: error, or skipped
    print(f"dataset {cfg.dataset.name}: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))

    net = build_model(cfg.model)
    data_stats.update(check_model_fits(net, cfg.dataset, splits))
    tune = OmegaConf.to_container(cfg.tune, resolve=True)
    summary = apply_tuning(net, tune)
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
        tune_name=summary.mode,
    )
    if "wandb" in (cfg.get("logger") or {}):
        os.environ.setdefault("WANDB_MODE", "offline")  # never needs an account unless asked for
    loggers = _instantiate_dict(cfg.get("logger"))
    callbacks = [*_instantiate_dict(cfg.get("callbacks")), preemption]
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
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
        writer = trainer.is_global_zero  # several devices: only rank zero writes run files
        if writer:
            write_jsonl_atomic(RunDir(output_dir).predictions, module.predictions)
        if protocol:  # eval.protocol: exact match, or LLaVA-Med's scoring (candidates: every answer of the splits)
            candidates = dataset_candidates(splits)
            if writer:
                write_candidates(output_dir, candidates, f"dataset {cfg.dataset.name}: answers of {', '.join(splits)}")
            apply_protocol(metrics, module.predictions, protocol, candidates)
        print(scores_line(net.task, metrics))
        for name, dataset_name in (cfg.get("also_test") or {}).items():  # the same weights, other test sets
            metrics.update(test_on(cfg, str(name), str(dataset_name), trainer, module, net, output_dir))
    metrics.update(tested_val_metrics(trainer, best))

    if counts["trainable"] and trainer.is_global_zero:  # only what was trained (the best checkpoint's weights when tested)
        from medft.trained import save_trained

        weights = "best" if cfg.get("test") and best else "last"
        metrics["checkpoint/trained_bytes"] = save_trained(RunDir(output_dir).trained, net, tune, weights=weights).stat().st_size
    metrics.update(finish_data_stats(data_stats, datamodule))
    metrics.update(params)
    metrics.update(net.pretrained_id)  # the embedded model's draw: pretrained/seed, pretrained/sha256
    metrics.update({"time/train_s": train_seconds, "train/steps": trainer.global_step, "system/threads": threads})
    for callback in trainer.callbacks:
        if isinstance(callback, StepTimer):
            metrics.update(callback.summary())
    checkpoints = list(RunDir(output_dir).checkpoints.glob("*.ckpt"))
    if checkpoints:
        metrics["checkpoint/bytes"] = max(p.stat().st_size for p in checkpoints)
    for kind, n in summary.modules.items():
        metrics[f"params/modules/{kind}"] = n
    if trainer.is_global_zero:
        write_json_atomic(RunDir(output_dir).metrics, metrics)
        write_status(output_dir, Status.OK, step=int(trainer.global_step))
    finish_loggers(loggers)
    print(f"run dir: {output_dir}")
    return metrics


def tested_val_metrics(trainer: Any, best: str) -> dict[str, Any]:
    """``val/*`` of the checkpoint that was tested (best.ckpt's epoch) and ``last/val/*`` of the last
    epoch, plus ``val/epoch`` and ``val/step`` saying which validation ``val/*`` comes from."""
    from medft.callbacks import ValHistory

    history = next((c for c in trainer.callbacks if isinstance(c, ValHistory)), None)
    if history is None or not history.history:
        return {}
    last = history.history[-1]
    chosen = last
    if best and trainer.checkpoint_callback is not None:
        ckpt = trainer.checkpoint_callback
        chosen = history.of_best(ckpt.monitor, ckpt.best_model_score) or last
    out = {f"last/{k}": v for k, v in last["metrics"].items()}
    out.update(chosen["metrics"])
    out.update({"val/epoch": chosen["epoch"], "val/step": chosen["step"]})
    return out


def also_test_config(name: str, dataset_name: str) -> Path:
    """The dataset config file that ``also_test.NAME=DATASET`` names (checked before any training)."""
    from medft.config import available

    path = find_config("dataset", f"{dataset_name}.yaml")
    if path is None:
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
    if trainer.is_global_zero:  # several devices: every rank holds the gathered rows (MedVLMModule); rank zero writes
        write_jsonl_atomic(RunDir(output_dir).predictions_of(name), module.predictions)
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
    os.environ.pop(CLAIMS_ENV, None)  # a new command claims new dirs (its launcher's workers inherit them)
    args = take_config_dirs(sys.argv[1:] if args is None else list(args))  # --config-dir DIR: anywhere
    run_dir = resumed_run_dir(args)
    lock_dir = run_dir or locked_run_dir(args)  # resume=RUN, or one job in a given hydra.run.dir
    args = normalize_overrides(resume_overrides(quote_paths(args)))
    require_tune(args)
    if "hydra/launcher=submitit_local" in args and not any("submitit_folder" in a for a in args):
        # the plugin's default folder ends in %j, which submitit's local runner creates literally
        args.append("hydra.launcher.submitit_folder=${hydra.sweep.dir}/.submitit")
    os.environ[SWEEP_ENV] = sweep_env(args)  # inherited by launcher workers: names their run dirs
    sys.argv = [str(Path(__file__).resolve()), *args]
    main_module = sys.modules.get("__main__")
    if getattr(main_module, "__spec__", None) is not None and main_module.__spec__.name != __spec__.name:
        # `python -m medft.cli train ...`: Lightning's DDP launcher would re-run `-m medft.cli` without
        # `train`; with no module spec it re-runs this file (sys.argv[0]) as `medft train` does
        main_module.__spec__ = None
    if lock_dir is None:
        check_auto_resume(args)
        _run_jobs()
        return
    from medft.rundir import RunLock

    with RunLock(lock_dir):  # before Hydra rewrites the run's .hydra/ and train.log: a second process stops here
        check_auto_resume(args)  # a finished run dir: one line, before Hydra writes into it
        hydra_dir = RunDir(lock_dir).hydra_dir
        kept = {p: p.read_bytes() for p in hydra_dir.glob("*.yaml")} if run_state(lock_dir) == Status.OK else {}
        try:
            _run_jobs()
        except BaseException as exit_:  # a refused or failed resume leaves a finished run as it was
            if not isinstance(exit_, SystemExit) or exit_.code:
                for path, data in kept.items():
                    write_bytes_atomic(path, data)
            raise


def _run_jobs() -> None:
    """Run the Hydra app (one job or a sweep); a sweep with failed jobs exits 1 once all have run."""
    SweepStatus.failed = []
    run_hydra(_hydra_main)
    failed, jobs, root = sweep_failures()
    if failed:  # every job ran and each wrote its error.txt; the sweep as a whole did not succeed
        print(f"medft: {len(failed)} of {jobs} jobs failed ({RunDir.ERROR} in each): "
              + ", ".join(p.name for p in failed[:5]) + (" ..." if len(failed) > 5 else "")
              + f" — `medft report {root}` lists them", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
