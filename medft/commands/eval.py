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

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from medft.config import (
    CONFIG_DIR, check_keys, check_trainer, check_values, normalize_overrides, quote_paths, record_config_dirs, register_resolvers,
    run_hydra, take_config_dirs,
)
from medft.errors import ConfigError
from medft.files import write_json_atomic, write_jsonl_atomic
from medft.rundir import CLAIMS_ENV
from medft.runner import task_wrapper
from medft.runs.layout import RELATIVE, RunDir


def resolve_run(ckpt: str | Path) -> tuple[Path, Path]:
    """``(run_dir, checkpoint file)`` for a run directory or a checkpoint inside one. A run directory
    gives its ``trained.safetensors`` (only the trained parameters), else its Lightning checkpoint."""
    path = Path(ckpt).expanduser().resolve()
    if path.is_dir() and not RunDir(path).is_run():
        runs = sorted(r.path for r in RunDir.find(path))
        runs = [r for r in runs if RunDir(r).trained.is_file() or RunDir(r).checkpoints.is_dir()]  # train runs
        example = f", e.g. ckpt={runs[-1]}" if runs else ""
        raise ConfigError(
            f"ckpt={ckpt} is not a run directory (no {RELATIVE.config}): give one run's directory{example}"
            + (f" ({len(runs)} trained runs under it)" if runs else " (no trained runs under it)")
        )
    if path.is_dir():
        run_dir = path
        found = [RunDir(run_dir).trained, RunDir(run_dir).best_ckpt, RunDir(run_dir).last_ckpt]
        ckpt_file = next((p for p in found if p.is_file()), None)
        if ckpt_file is None:
            raise ConfigError(
                f"ckpt={ckpt}: no {RunDir.TRAINED}, {RELATIVE.best_ckpt} or {RELATIVE.last_ckpt} in that run directory"
            )
    elif path.is_file():
        ckpt_file = path
        run_dir = RunDir.of_checkpoint(path).path
    else:
        raise ConfigError(f"ckpt={ckpt} does not exist: give a run directory (logs/runs/...) or a .ckpt file")
    if not RunDir(run_dir).is_run():
        raise ConfigError(f"ckpt={ckpt}: {RunDir(run_dir).config} is missing (the run's config names its model and tune mode)")
    use_run_config_dirs(run_dir)  # before anything parses the run's config: a user's model names its own configs
    return run_dir, ckpt_file


def safe_config_dir(folder: Path) -> bool:
    """True if only you (or root) can change what ``folder`` holds: it and every folder above it are owned by
    you or root and writable by no one else (a sticky folder above it, like /tmp, is fine: others cannot
    replace what you own there). A config dir is code (its ``_target_`` builders run), so a run's recorded
    dir that another user could have written is not searched unless you give it again."""
    uid = os.getuid()
    path = folder.resolve()
    for part in (path, *path.parents):
        st = part.stat()
        if st.st_uid not in (0, uid):
            return False
        if st.st_mode & 0o022 and not (part != path and st.st_mode & stat.S_ISVTX):
            return False
    return True


def use_run_config_dirs(run_dir: Path) -> None:
    """Search the config dirs that composed the run (its ``config_dirs.json``) after the ones given now,
    so a run of a user's own model config is rebuilt from that config. A dir inside the run dir is
    refused (it would come with the run: data, not code); one that no longer exists is skipped."""
    from medft.config import add_config_dirs
    from medft.rundir import RunDirError

    path = RunDir(run_dir).config_dirs
    try:
        recorded = json.loads(path.read_text()).get("config_dirs", []) if path.is_file() else []
    except (AttributeError, OSError, ValueError):
        raise RunDirError(f"{path} is damaged (not a JSON object): restore it, or give --config-dir DIR") from None
    if not isinstance(recorded, list) or not all(isinstance(d, str) for d in recorded):
        raise RunDirError(f"{path} is not a list of directories: restore it, or give --config-dir DIR")
    dirs = []
    for value in recorded:
        folder = Path(value)
        if not folder.is_absolute() or folder.resolve().is_relative_to(run_dir.resolve()):
            raise RunDirError(
                f"{path}: config dir {value!r} is not an absolute path outside the run dir: refused, a run dir "
                "brings data only, never code (give your own config dir with --config-dir DIR)"
            )
        if folder.is_dir() and not safe_config_dir(folder):
            print(f"medft: the run's config dir {value} is not searched: it, or a folder above it, can be written by "
                  "another user; give it with --config-dir DIR if you trust it", file=sys.stderr)
        elif folder.is_dir():
            dirs.append(folder)
        else:
            print(f"medft: the run's config dir {value} does not exist here: give it with --config-dir DIR if the "
                  "run's model or tune config is there", file=sys.stderr)
    if dirs:
        add_config_dirs(dirs)


def run_model_config(run_dir: Path, cfg: DictConfig) -> tuple[DictConfig, dict[str, Any]]:
    """The run's model node (resolved against the run's config) and tune mode, as data: the model is
    medft's own config of that name with the run's plain values (medft.rundir); nothing from the run
    dir is instantiated as given."""
    from omegaconf.errors import OmegaConfBaseException

    from medft.rundir import RunDirError, read_run_config, trusted_model_config, trusted_tune_config

    source = str(RunDir(run_dir).config)
    run_cfg = OmegaConf.create(read_run_config(run_dir))
    run_cfg.paths = cfg.paths  # the run's output_dir interpolates Hydra's runtime, valid only back then
    if run_cfg.get("tune") is None or run_cfg.get("model") is None:
        raise ConfigError(f"{RunDir(run_dir).config} has no model or tune: is it a medft train run?")
    try:
        model, tune = (OmegaConf.to_container(run_cfg[k], resolve=True) for k in ("model", "tune"))
    except OmegaConfBaseException as err:
        raise RunDirError(f"{source}: {str(err).splitlines()[0]}: the run dir is damaged") from None
    return OmegaConf.create(trusted_model_config(model, source)), trusted_tune_config(tune, source)


def load_trained(module: Any, ckpt_file: Path) -> None:
    """Put the checkpoint's trained parameters into ``module`` (its keys must be exactly the trainable ones)."""
    from medft.checkpoint import load_checkpoint

    if ckpt_file.suffix == ".safetensors":
        from medft.trained import load_trained_file

        load_trained_file(module.net, ckpt_file)  # the same exact-keys check
        return
    checkpoint = load_checkpoint(ckpt_file)  # weights_only=True: one line for a damaged or unsafe file
    module.on_load_checkpoint(checkpoint)  # the exact-keys check of MedVLMModule
    module.load_state_dict(checkpoint["state_dict"], strict=False)


def load_run_model(ckpt: str | Path, paths: Any = None, keep_original: bool = False) -> dict[str, Any]:
    """A trained run's model, rebuilt the way ``medft eval`` rebuilds it (``resolve_run`` ->
    ``run_model_config`` -> ``build_model`` -> ``apply_tuning`` -> ``load_trained``), for ``medft export``,
    ``medft ask`` and the like. Returns ``{"net", "report", "run_dir", "ckpt_file", "model_cfg", "tune"}``,
    plus ``"original"`` (the trainable parameters' values before loading) with ``keep_original``."""
    import lightning as L

    from medft.models import build_model, check_task
    from medft.module import MedVLMModule
    from medft.rundir import read_run_config
    from medft.trained import trained_state
    from medft.tuning import apply_tuning

    run_dir, ckpt_file = resolve_run(ckpt)
    use_run_config_dirs(run_dir)
    if paths is None:
        import os

        cache = os.environ.get("MEDFT_CACHE_DIR") or str(Path("~/.cache/medft").expanduser())
        paths = {"log_dir": os.environ.get("MEDFT_LOG_DIR", "logs"), "cache_dir": cache, "output_dir": str(run_dir)}
    model_cfg, tune = run_model_config(run_dir, OmegaConf.create({"paths": paths}))
    dataset = read_run_config(run_dir).get("dataset")
    check_task(model_cfg, dataset if isinstance(dataset, dict) else {}, run=run_dir.name)  # before any weights load
    L.seed_everything(int(model_cfg.get("seed", 0) or 0), workers=True, verbose=False)
    net = build_model(model_cfg)
    report = apply_tuning(net, tune)
    original = {k: v.clone() for k, v in trained_state(net.model).items()} if keep_original else None
    module = MedVLMModule(net, optim=None, tune_name=report.mode)
    load_trained(module, ckpt_file)
    net.eval()
    return {"net": net, "report": report, "run_dir": run_dir, "ckpt_file": ckpt_file, "model_cfg": model_cfg,
            "tune": tune, "original": original}


@task_wrapper
def evaluate(cfg: DictConfig) -> dict[str, Any]:
    import lightning as L

    from medft.data.checks import check_model_fits, finish_data_stats, prepare_splits
    from medft.data.datamodule import MedDataModule
    from medft.data.sources import load_splits
    from medft.metrics.evaluators import scores_line
    from medft.models import build_model, check_task
    from medft.module import MedVLMModule
    from medft.tuning import apply_tuning

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
    from medft.metrics.protocols import apply_protocol, dataset_candidates, resolve_protocol, write_candidates

    vqa = cfg.dataset.get("task", "vqa") == "vqa"
    protocol = resolve_protocol(OmegaConf.select(cfg, "eval.protocol"), model_cfg) if vqa else None
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    record_config_dirs(output_dir)
    from medft.quiet import install as quiet_libraries
    from medft.threads import configure as configure_threads

    configure_threads()
    quiet_libraries()
    L.seed_everything(int(model_cfg.get("seed", 0) or 0), workers=True, verbose=False)

    all_splits = load_splits(cfg.dataset)
    records = all_splits.get(cfg.split)
    if not records:
        raise ConfigError(f"split={cfg.split} of dataset {cfg.dataset.name} is empty: pick another split")
    splits, data_stats = prepare_splits({cfg.split: records}, cfg.dataset)  # only this split's images
    records = splits[cfg.split]
    print(f"evaluating {run_dir} ({ckpt_file.name}) on {cfg.dataset.name}/{cfg.split}: {len(records)} samples")

    net = build_model(model_cfg)
    data_stats.update(check_model_fits(net, cfg.dataset, splits))
    report = apply_tuning(net, tune)
    datamodule = MedDataModule(  # served as its "test" split; "train" only satisfies the non-empty check
        {"train": records, "test": records}, net.collate, cfg.data.eval_batch_size,
        cfg.data.eval_batch_size, cfg.data.num_workers, skip_bad_images=bool(cfg.dataset.get("skip_bad_images", False)),
    )
    module = MedVLMModule(net, optim=None, generate_kwargs=OmegaConf.to_container(cfg.eval.generate, resolve=True),
                          closed=cfg.eval.get("closed", "generate"), candidates=tuple(cfg.eval.get("candidates", ("yes", "no"))),
                          tune_name=report.mode)
    load_trained(module, ckpt_file)
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False)
    trainer.test(module, datamodule=datamodule, verbose=False)

    prefix = f"{cfg.split}/"
    metrics: dict[str, Any] = {prefix + k.removeprefix("test/"): v for k, v in trainer.callback_metrics.items()
                               if k.startswith("test/")}
    if protocol:  # eval.protocol: exact match, or LLaVA-Med's scoring (candidates: every answer of the dataset)
        candidates = dataset_candidates(all_splits)
        write_candidates(output_dir, candidates, f"dataset {cfg.dataset.name}: answers of {', '.join(all_splits)}")
        apply_protocol(metrics, module.predictions, protocol, candidates, cfg.split)
    print(scores_line(net.task, metrics, cfg.split))
    metrics.update(finish_data_stats(data_stats, datamodule))
    metrics.update({"eval/run_dir": str(run_dir), "eval/ckpt": str(ckpt_file), "eval/tune": report.mode,
                    "eval/model": net.name, "eval/dataset": cfg.dataset.name, "eval/split": cfg.split})
    write_json_atomic(RunDir(output_dir).metrics, metrics)
    write_jsonl_atomic(RunDir(output_dir).predictions, module.predictions)
    print(f"run dir: {output_dir}")
    return metrics


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="eval")
def _hydra_main(cfg: DictConfig) -> None:
    evaluate(cfg)


def main(args: list[str] | None = None) -> None:
    """Entry point of ``medft eval``."""
    args = sys.argv[1:] if args is None else list(args)
    if any(a.startswith("rescore=") for a in args):  # from predictions.jsonl alone: no model, no dataset
        from medft.commands.rescore import rescore_main

        rescore_main(args)
        return
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
