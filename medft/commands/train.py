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
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from medft.config.overrides import SWEEP_ENV, normalize_overrides, quote_paths, require_tune, sweep_env
from medft.config.resolvers import register_resolvers
from medft.config.search import CONFIG_DIR, take_config_dirs
from medft.config.validate import run_hydra
from medft.runs.layout import RunDir, Status
from medft.runs.resume import check_auto_resume, locked_run_dir, resume_overrides, resumed_run_dir
from medft.runs.runner import task_wrapper
from medft.runs.trust import CLAIMS_ENV, SweepStatus, run_state, sweep_failures
from medft.training.pipeline import train_and_test
from medft.util.files import write_bytes_atomic


@task_wrapper
def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one experiment and return its final metrics (also written to ``metrics.json``): seed -> data ->
    model -> tune -> module -> trainer -> fit -> test -> run dir, as :func:`medft.training.pipeline.train_and_test`
    does it (the run inside ``medft pretrain`` too); this wrapper adds error.txt, the run dir's lock and
    the exit status."""
    return train_and_test(cfg)


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
    from medft.runs.trust import RunLock

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
