"""The run pipeline every command shares: data -> model -> tuning -> module -> trainer -> score -> write.

One function per step (the shape of torchtune's ``_setup_*``): :func:`setup_data`, :func:`setup_model`,
:func:`make_datamodule`, :func:`make_module`, :func:`make_trainer`, :func:`score`, :func:`write_metrics`.
The flows built from them:

* :func:`train_and_test` — ``medft train`` (and the run inside ``medft pretrain``): fit, test, also_test;
* :func:`pretrain` — ``medft pretrain``, and (:func:`run_recipe`) the embedded model's build in-process, which
  :func:`build_net` asks :mod:`medft.training.embedded` for when a model config says ``pretrained: embedded``;
* :func:`load_run_model` — a trained run rebuilt (``resolve_run`` -> ``run_model_config`` -> model ->
  tuning -> ``load_trained``) for ``medft eval``, ``medft export`` and ``medft ask``.

A command (medft/commands/) reads its arguments, calls these and prints; this module imports no command.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from medft.config.search import find_config, record_config_dirs
from medft.config.validate import validate
from medft.runs.layout import RELATIVE, RunDir, Status
from medft.util.errors import ConfigError
from medft.util.files import write_json_atomic, write_jsonl_atomic


# -- the steps ----------------------------------------------------------------------------------------
def start_run(output_dir: Path, seed: int) -> int:
    """The run dir made (with the user's config dirs that composed it), torch's threads chosen for this job,
    library chatter silenced, every RNG seeded. Returns the threads."""
    import lightning as L

    from medft.util.quiet import install as quiet_libraries
    from medft.util.threads import configure as configure_threads

    output_dir.mkdir(parents=True, exist_ok=True)
    record_config_dirs(output_dir)
    threads, _ = configure_threads()  # the cores this job may use, shared among a joblib sweep's jobs
    quiet_libraries()  # library chatter that is not the user's business
    L.seed_everything(seed, workers=True, verbose=False)
    return threads


def setup_data(dataset: DictConfig, split: str | None = None) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(all_splits, splits, data_stats)``: the dataset's records (cheap: fails early on a bad root) and
    those to serve with their images checked (every split, or only ``split``)."""
    from medft.data.checks import prepare_splits
    from medft.data.sources import load_splits

    all_splits = load_splits(dataset)
    if split is None:
        splits, data_stats = prepare_splits(all_splits, dataset)  # missing images: error, or skipped
        return all_splits, splits, data_stats
    records = all_splits.get(split)
    if not records:
        raise ConfigError(f"split={split} of dataset {dataset.name} is empty: pick another split")
    splits, data_stats = prepare_splits({split: records}, dataset)  # only this split's images
    return all_splits, splits, data_stats


def build_net(model_cfg: DictConfig) -> Any:
    """The model of ``model_cfg`` (:func:`medft.models.build_model`); ``pretrained: embedded`` is medft's own
    pretrained checkpoint of pretraining seed ``pretrain_seed`` made by the recipe ``recipe`` (configs/<recipe>.yaml,
    default ``pretrain``), built under ``embedded_dir`` on first use
    (:func:`medft.training.embedded.ensure_embedded` running :func:`run_recipe`); the model then says which
    draw it holds (``pretrained_id``: seed, sha256 of the weights) and where it was loaded from (``pretrained_dir``)."""
    from medft.models import build_model

    if model_cfg.get("pretrained") != "embedded":
        return build_model(model_cfg)
    from medft.training.embedded import DEFAULT_RECIPE, ensure_embedded, identity

    if not model_cfg.get("embedded_dir"):
        raise ConfigError("model.pretrained=embedded needs model.embedded_dir (the cache dir holding pretrained/)")
    config = str(model_cfg.get("recipe") or DEFAULT_RECIPE)
    built = ensure_embedded(model_cfg.embedded_dir, int(model_cfg.get("pretrain_seed") or 0), config=config, recipe=run_recipe)
    resolved = model_cfg.copy()
    with open_dict(resolved):
        resolved.pretrained = str(built)
    net = build_model(resolved)
    net.pretrained, net.pretrained_dir, net.pretrained_id = "embedded", built, identity(built)
    return net


def setup_model(model_cfg: DictConfig, tune: dict[str, Any], dataset: DictConfig, splits: dict[str, Any],
                data_stats: dict[str, Any]) -> tuple[Any, Any]:
    """``(net, tuning report)``: the model built, checked against the data (``data_stats`` gets what the
    check found) and its tune mode applied (which decides what trains)."""
    from medft.data.checks import check_model_fits
    from medft.tuning import apply_tuning

    net = build_net(model_cfg)
    data_stats.update(check_model_fits(net, dataset, splits))
    return net, apply_tuning(net, tune)


def make_datamodule(cfg: DictConfig, splits: dict[str, Any], net: Any, batch_size: int | None = None,
                    skip_bad_images: bool = False, seed: int = 0) -> Any:
    """The splits served in batches of ``batch_size`` (default ``data.batch_size``) for training,
    ``data.eval_batch_size`` for validation and test."""
    from medft.data.datamodule import MedDataModule

    return MedDataModule(splits, net.collate, cfg.data.batch_size if batch_size is None else batch_size,
                         cfg.data.eval_batch_size, cfg.data.num_workers, skip_bad_images=skip_bad_images, seed=seed)


def make_module(cfg: DictConfig, net: Any, tune_name: str, train: bool = True) -> Any:
    """The LightningModule: ``optim`` / ``scheduler`` when it trains, ``eval.*`` for how it answers."""
    from medft.training.module import MedVLMModule

    return MedVLMModule(
        net,
        optim=hydra.utils.instantiate(cfg.optim) if train else None,
        scheduler=hydra.utils.instantiate(cfg.scheduler) if train and cfg.get("scheduler") else None,
        generate_kwargs=OmegaConf.to_container(cfg.eval.generate, resolve=True),
        closed=cfg.eval.get("closed", "generate"), candidates=tuple(cfg.eval.get("candidates", ("yes", "no"))),
        tune_name=tune_name,
    )


def instantiate_dict(node: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a dict-of-configs group (callbacks, loggers)."""
    if not node:
        return []
    return [hydra.utils.instantiate(v) for v in node.values() if isinstance(v, DictConfig) and "_target_" in v]


def make_trainer(cfg: DictConfig, callbacks: list[Any], logger: Any, **kwargs: Any) -> Any:
    """The Lightning Trainer of ``cfg.trainer`` with these callbacks and loggers."""
    return hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=logger, **kwargs)


def run_protocol(cfg: DictConfig, model_cfg: Any, task: str) -> str | None:
    """The scoring protocol of a VQA run (``eval.protocol``, else the model config's); None for reports."""
    from medft.metrics.protocols import resolve_protocol

    return resolve_protocol(OmegaConf.select(cfg, "eval.protocol"), model_cfg) if task == "vqa" else None


def score(metrics: dict[str, Any], predictions: list[dict[str, Any]], protocol: str | None, all_splits: dict[str, Any],
          dataset_name: str, output_dir: Path, split: str = "test", write: bool = True) -> dict[str, Any]:
    """``eval.protocol`` applied to ``metrics`` (exact match, or LLaVA-Med's scoring, whose candidates are
    every answer of the dataset's splits, written to the run dir when ``write``)."""
    from medft.metrics.protocols import apply_protocol, dataset_candidates, write_candidates

    if not protocol:
        return metrics
    candidates = dataset_candidates(all_splits)
    if write:
        write_candidates(output_dir, candidates, f"dataset {dataset_name}: answers of {', '.join(all_splits)}")
    return apply_protocol(metrics, predictions, protocol, candidates, split)


def write_predictions(output_dir: Path, rows: list[dict[str, Any]], name: str = "") -> Path:
    """``predictions.jsonl`` (``predictions_NAME.jsonl`` for ``also_test.NAME``)."""
    return write_jsonl_atomic(RunDir(output_dir).predictions_of(name or None), rows)


def write_metrics(output_dir: Path, metrics: dict[str, Any]) -> Path:
    return write_json_atomic(RunDir(output_dir).metrics, metrics)


# -- train: fit, test, write ----------------------------------------------------------------------------
def train_and_test(cfg: DictConfig, preemption: bool = True) -> dict[str, Any]:
    """One training run: data -> model -> tune -> fit -> test (also_test) -> run dir; returns its metrics
    (also written to ``metrics.json``). ``preemption``: save and stop on SIGTERM/SIGUSR1/SIGINT."""
    validate(cfg)  # before the heavy imports: a typo costs a second, not a model load
    check_epochs_left(cfg)
    protocol = run_protocol(cfg, cfg.model, OmegaConf.select(cfg, "model.task", default="vqa"))
    for name, dataset_name in (cfg.get("also_test") or {}).items():
        also_test_config(str(name), str(dataset_name))
    from medft.data.checks import finish_data_stats
    from medft.metrics.evaluators import scores_line
    from medft.runs.preempt import Preemption
    from medft.runs.trust import write_status
    from medft.training.loggers import finish as finish_loggers
    from medft.tuning import count_parameters, param_metrics, summary_line
    from medft.util.redact import redact

    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_status(output_dir, Status.RUNNING, resumed_from=str(cfg.ckpt_path) if cfg.get("ckpt_path") else None)
    callbacks = [Preemption(output_dir).install()] if preemption else []  # signals from here on: save, then stop
    threads = start_run(output_dir, cfg.seed)

    all_splits, splits, data_stats = setup_data(cfg.dataset)
    print(f"dataset {cfg.dataset.name}: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    tune = OmegaConf.to_container(cfg.tune, resolve=True)
    net, summary = setup_model(cfg.model, tune, cfg.dataset, splits, data_stats)
    counts = count_parameters(net.model, net.arch["components"])
    print(summary_line(counts))
    datamodule = make_datamodule(cfg, splits, net, skip_bad_images=bool(cfg.dataset.get("skip_bad_images", False)), seed=cfg.seed)
    module = make_module(cfg, net, summary.mode)
    if "wandb" in (cfg.get("logger") or {}):
        os.environ.setdefault("WANDB_MODE", "offline")  # never needs an account unless asked for
    loggers = instantiate_dict(cfg.get("logger"))
    trainer = make_trainer(cfg, [*instantiate_dict(cfg.get("callbacks")), *callbacks], loggers)
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
            write_predictions(output_dir, module.predictions)
        score(metrics, module.predictions, protocol, all_splits, cfg.dataset.name, output_dir, write=writer)
        print(scores_line(net.task, metrics))
        for name, dataset_name in (cfg.get("also_test") or {}).items():  # the same weights, other test sets
            metrics.update(test_on(cfg, str(name), str(dataset_name), trainer, module, net, output_dir))
    metrics.update(tested_val_metrics(trainer, best))

    if counts["trainable"] and trainer.is_global_zero:  # only what was trained (the best checkpoint's weights when tested)
        from medft.runs.trained import save_trained

        weights = "best" if cfg.get("test") and best else "last"
        metrics["checkpoint/trained_bytes"] = save_trained(RunDir(output_dir).trained, net, tune, weights=weights).stat().st_size
    metrics.update(finish_data_stats(data_stats, datamodule))
    metrics.update(params)
    metrics.update(net.pretrained_id)  # the embedded model's draw: pretrained/seed, pretrained/sha256
    metrics.update(run_measures(trainer, output_dir, summary, train_seconds, threads))
    if trainer.is_global_zero:
        write_metrics(output_dir, metrics)
        write_status(output_dir, Status.OK, step=int(trainer.global_step))
    finish_loggers(loggers)
    print(f"run dir: {output_dir}")
    return metrics


def run_measures(trainer: Any, output_dir: Path, summary: Any, train_seconds: float, threads: int) -> dict[str, Any]:
    """What a training run measured of itself: time, steps, threads, step times, checkpoint size, tuned modules."""
    from medft.training.callbacks import StepTimer

    out: dict[str, Any] = {"time/train_s": train_seconds, "train/steps": trainer.global_step, "system/threads": threads}
    for callback in trainer.callbacks:
        if isinstance(callback, StepTimer):
            out.update(callback.summary())
    checkpoints = list(RunDir(output_dir).checkpoints.glob("*.ckpt"))
    if checkpoints:
        out["checkpoint/bytes"] = max(p.stat().st_size for p in checkpoints)
    for kind, n in summary.modules.items():
        out[f"params/modules/{kind}"] = n
    return out


def check_epochs_left(cfg: DictConfig) -> None:
    """Refuse to continue a checkpoint with ``trainer.max_epochs`` below the epochs it has done."""
    from medft.runs.checkpoint import load_checkpoint

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


def tested_val_metrics(trainer: Any, best: str) -> dict[str, Any]:
    """``val/*`` of the checkpoint that was tested (best.ckpt's epoch) and ``last/val/*`` of the last
    epoch, plus ``val/epoch`` and ``val/step`` saying which validation ``val/*`` comes from."""
    from medft.training.callbacks import ValHistory

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
    from medft.config.search import available

    path = find_config("dataset", f"{dataset_name}.yaml")
    if path is None:
        raise ConfigError(f"also_test.{name}={dataset_name}: no such dataset; choose one of {', '.join(available('dataset'))}")
    return path


def test_on(cfg: DictConfig, name: str, dataset_name: str, trainer: Any, module: Any, net: Any, output_dir: Path) -> dict[str, Any]:
    """``also_test.NAME=DATASET``: test the model as it is now (the run's tested weights) on the test
    split of ``configs/dataset/DATASET.yaml``; metrics ``NAME/acc``, ... and ``predictions_NAME.jsonl``."""
    from medft.data.checks import prepare_splits
    from medft.data.sources import load_splits
    from medft.metrics.evaluators import scores_line

    root = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))  # the run's paths.* resolve the same
    with open_dict(root):
        root.dataset = OmegaConf.load(also_test_config(name, dataset_name))
    splits = load_splits(root.dataset)
    test, _ = prepare_splits({"train": splits["test"], "test": splits["test"]}, root.dataset)
    trainer.test(module, datamodule=make_datamodule(cfg, test, net), verbose=False, weights_only=True)
    scores = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    if trainer.is_global_zero:  # several devices: every rank holds the gathered rows (MedVLMModule); rank zero writes
        write_predictions(output_dir, module.predictions, name)
    print(f"{name} ({dataset_name}) " + scores_line(net.task, scores))
    return {f"{name}/{k.removeprefix('test/')}": float(v) for k, v in scores.items()}


# -- pretrain: a model from random weights, saved as a Hugging Face checkpoint dir -----------------------
def pretrain(cfg: DictConfig, train: Callable[[DictConfig], dict[str, Any]] = train_and_test) -> dict[str, Any]:
    """Train ``cfg.model`` from random weights with ``tune=full`` (by ``train``) and save it to ``cfg.out``;
    returns what ``pretrain.json`` says."""
    from medft.data.sources import load_splits
    from medft.runs.trained import load_trained_file
    from medft.training.embedded import is_built
    from medft.tuning import apply_tuning, count_parameters
    from medft.util.threads import THREADS_ENV

    if not cfg.get("out"):
        raise ConfigError("out= is not set: give the checkpoint directory to write, e.g. out=/ckpt/my_blip")
    out = Path(str(cfg.out)).expanduser()
    if is_built(out):
        raise ConfigError(f"out={out} already holds a pretrained checkpoint: choose a new directory or remove it")
    with open_dict(cfg):
        cfg.model.pretrained = None  # pretraining starts from random weights, whatever the model config says
    if cfg.get("threads"):  # the recipe's float path: the same weights at any core count (medft.util.threads reads it)
        os.environ[THREADS_ENV] = str(int(cfg.threads))
    started = time.perf_counter()
    train_samples = len(load_splits(cfg.dataset)["train"])  # records only (generates the set on first use)
    metrics = train(cfg)
    seconds = time.perf_counter() - started
    # the run saved every parameter (tune=full; the best validation checkpoint's): put them into a fresh model
    net = build_net(cfg.model)
    apply_tuning(net, OmegaConf.to_container(cfg.tune, resolve=True))
    load_trained_file(net, RunDir(cfg.paths.output_dir).trained)
    net.model.requires_grad_(True)
    info = {
        "recipe_version": int(cfg.recipe_version),
        "model": str(cfg.model.name),
        "model_class": type(net.model).__name__,
        "params": count_parameters(net.model, net.arch["components"])["total"],
        "dataset": str(cfg.dataset.name),
        "domain": str(OmegaConf.select(cfg, "dataset.load.domain", default="source")),
        "image_size": int(cfg.model.image_size),
        "train_samples": train_samples,
        "seed": int(cfg.seed),
        "threads": int(cfg.threads) if cfg.get("threads") else None,
        "epochs": int(cfg.trainer.max_epochs),
        "lr": float(cfg.optim.lr),
        "weight_decay": float(cfg.optim.weight_decay),
        "scheduler": "cosine" if OmegaConf.select(cfg, "scheduler.fn") is not None else "constant",
        "batch_size": int(cfg.data.batch_size),
        "seconds": round(seconds, 1),
        "source_test": {k: float(v) for k, v in metrics.items() if k.startswith("test/")},
        "run_dir": str(cfg.paths.output_dir),
    }
    save_checkpoint(net, out, info)
    print(f"pretrained {info['model']} in {seconds:.0f} s" + (f", {score_phrase(info['source_test'])}" if info["source_test"] else ""))
    print(f"checkpoint: {out}")
    return info


def save_checkpoint(net: Any, out: Path, info: dict[str, Any]) -> Path:
    """``save_pretrained`` of model and processor, then README.md and pretrain.json (last, with the weights' sha256)."""
    from medft.training.embedded import INFO_FILE, weights_sha256
    from medft.util.files import write_text_atomic

    out.mkdir(parents=True, exist_ok=True)
    net.model.save_pretrained(out)
    net.processor.save_pretrained(out)
    info = {**info, "weights_sha256": weights_sha256(out)}  # the draw's identity, quoted by every run fine-tuning it
    write_text_atomic(out / "README.md", model_card(info))
    write_json_atomic(out / INFO_FILE, info)
    return out


def score_phrase(scores: dict[str, Any]) -> str:
    """``source test accuracy 0.712 (closed .., open ..)`` (VQA) or ``source test BLEU-4 0.512 (ROUGE-L ..)`` (reports)."""
    if scores.get("test/acc") is not None:
        return f"source test accuracy {scores['test/acc']:.3f}" + (
            f" (closed {scores.get('test/acc_closed', float('nan')):.3f}, open {scores.get('test/acc_open', float('nan')):.3f})")
    if scores.get("test/bleu_4") is not None:
        return f"source test BLEU-4 {scores['test/bleu_4']:.3f} (ROUGE-L {scores.get('test/rouge_l', float('nan')):.3f})"
    return "no source test scores"


def model_card(info: dict[str, Any]) -> str:
    model_class = info.get("model_class", "BlipForQuestionAnswering")
    what = "report writer" if model_class == "BlipForConditionalGeneration" else "VQA model"
    items = "reports" if what == "report writer" else "questions"
    lines = [
        f"# {info['model']} pretrained by medft (recipe v{info['recipe_version']})",
        "",
        f"A BLIP-style {what} (`{model_class}`, {info['params']:,} parameters) trained from random",
        f"weights on the synthetic `{info['dataset']}` set (domain `{info['domain']}`: {info['train_samples']:,} "
        f"training {items} on {info['image_size']} px images) by `medft pretrain`.",
        "",
        "| recipe | value |",
        "| --- | --- |",
        f"| seed | {info['seed']} |",
        f"| weights sha256 | `{info['weights_sha256'][:12]}` |",
        f"| threads | {info.get('threads') or 'as medft train chooses'} |",
        f"| epochs | {info['epochs']} |",
        f"| optimizer | AdamW, lr {info['lr']:g}, weight decay {info['weight_decay']:g}, {info['scheduler']} schedule |",
        f"| batch size | {info['batch_size']} |",
        f"| training time | {info['seconds']:.0f} s |",
        "",
        score_phrase(info.get("source_test", {})).capitalize(),
        "",
        "Use it as any checkpoint directory: `medft train +tune=layernorm model.pretrained=THIS_DIR` (with the",
        f"model config it was made from), or `{model_class}.from_pretrained(THIS_DIR)`. Synthetic",
        "images only: it knows nothing about real medical images.",
        "",
    ]
    return "\n".join(lines)


# -- a trained run, rebuilt (eval, export, ask) ------------------------------------------------------------
def parse_run_args(args: list[str], command: str, keys: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """``RUN_DIR key=value ...`` -> (run dir, options); unknown keys are a one-line error. A run dir's
    path may hold '=' (a sweep job's ``..._optim.lr=0.01``); ``--config-dir DIR`` may come anywhere."""
    from medft.config.search import take_config_dirs

    run, opts = None, {}
    for arg in take_config_dirs(args, command):
        key, sep, value = arg.partition("=")
        if not sep or (key not in keys and Path(arg).expanduser().exists()):
            if run is not None:
                raise ConfigError(f"medft {command} takes one RUN_DIR; got {run!r} and {arg!r}")
            run = arg
        elif key in keys:
            opts[key] = value
        else:
            raise ConfigError(f"{arg!r}: medft {command} takes RUN_DIR and {', '.join(k + '=' for k in keys)}")
    if run is None:
        raise ConfigError(f"no run given: medft {command} RUN_DIR " + " ".join(f"[{k}=...]" for k in keys))
    return run, opts


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
    from medft.config.search import add_config_dirs
    from medft.runs.trust import RunDirError

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
    medft's own config of that name with the run's plain values (medft.runs.trust); nothing from the run
    dir is instantiated as given."""
    from omegaconf.errors import OmegaConfBaseException

    from medft.runs.trust import RunDirError, read_run_config, trusted_model_config, trusted_tune_config

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
    from medft.runs.checkpoint import load_checkpoint

    if ckpt_file.suffix == ".safetensors":
        from medft.runs.trained import load_trained_file

        load_trained_file(module.net, ckpt_file)  # the same exact-keys check
        return
    checkpoint = load_checkpoint(ckpt_file)  # weights_only=True: one line for a damaged or unsafe file
    module.on_load_checkpoint(checkpoint)  # the exact-keys check of MedVLMModule
    module.load_state_dict(checkpoint["state_dict"], strict=False)


def load_run_model(ckpt: str | Path, paths: Any = None, keep_original: bool = False) -> dict[str, Any]:
    """A trained run's model, rebuilt the way ``medft eval`` rebuilds it (``resolve_run`` ->
    ``run_model_config`` -> ``build_net`` -> ``apply_tuning`` -> ``load_trained``), for ``medft export``,
    ``medft ask`` and the like. Returns ``{"net", "report", "run_dir", "ckpt_file", "model_cfg", "tune"}``,
    plus ``"original"`` (the trainable parameters' values before loading) with ``keep_original``."""
    import lightning as L

    from medft.models import check_task
    from medft.runs.trained import trained_state
    from medft.runs.trust import read_run_config
    from medft.training.module import MedVLMModule
    from medft.tuning import apply_tuning

    run_dir, ckpt_file = resolve_run(ckpt)
    use_run_config_dirs(run_dir)
    if paths is None:
        cache = os.environ.get("MEDFT_CACHE_DIR") or str(Path("~/.cache/medft").expanduser())
        paths = {"log_dir": os.environ.get("MEDFT_LOG_DIR", "logs"), "cache_dir": cache, "output_dir": str(run_dir)}
    model_cfg, tune = run_model_config(run_dir, OmegaConf.create({"paths": paths}))
    dataset = read_run_config(run_dir).get("dataset")
    check_task(model_cfg, dataset if isinstance(dataset, dict) else {}, run=run_dir.name)  # before any weights load
    L.seed_everything(int(model_cfg.get("seed", 0) or 0), workers=True, verbose=False)
    net = build_net(model_cfg)
    report = apply_tuning(net, tune)
    original = {k: v.clone() for k, v in trained_state(net.model).items()} if keep_original else None
    module = MedVLMModule(net, optim=None, tune_name=report.mode)
    load_trained(module, ckpt_file)
    net.eval()
    return {"net": net, "report": report, "run_dir": run_dir, "ckpt_file": ckpt_file, "model_cfg": model_cfg,
            "tune": tune, "original": original}


# -- the embedded model's recipe: medft pretrain as a library call ----------------------------------------
def run_recipe(out: Path, run_dir: Path, seed: int, cache_dir: str | Path, overrides: tuple[str, ...] = (),
               config: str = "pretrain") -> dict[str, object]:
    """``medft pretrain --config-name CONFIG out=OUT seed=SEED [overrides]`` with its run in ``run_dir``, as a library
    call: medft's own configs/CONFIG.yaml composed by a Hydra of its own, run by :func:`pretrain` while
    :func:`recipe_process` keeps the caller's process state (its Hydra, threads, RNGs, logging, environment)
    out of the build and the build's out of the caller."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf, open_dict

    from medft.config.resolvers import register_resolvers
    from medft.config.search import CONFIG_DIR

    cache = Path(cache_dir).expanduser()
    run_dir.mkdir(parents=True, exist_ok=True)
    with recipe_process(cache, run_dir / "pretrain.log"):
        register_resolvers()
        args = [f"seed={int(seed)}", *overrides]
        caller = GlobalHydra.instance().hydra  # a `medft train` job's: Hydra composes one app at a time
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(str(CONFIG_DIR), version_base="1.3", job_name="pretrain"):
                cfg = compose(config, args)
        finally:
            GlobalHydra.instance().clear()
            GlobalHydra.instance().hydra = caller
        with open_dict(cfg):
            cfg.out = str(out)
            cfg.paths.output_dir = str(run_dir)  # not ${hydra:runtime.output_dir}: that is the caller's run
            cfg.paths.cache_dir = str(cache)
        record = RunDir(run_dir)
        record.hydra_dir.mkdir(exist_ok=True)  # the run records its config as a `medft pretrain` run does
        OmegaConf.save(cfg, record.config)
        OmegaConf.save(OmegaConf.create(args), record.overrides)
        return pretrain(cfg, lambda c: train_and_test(c, preemption=False))  # the caller's signal handlers stay


@contextmanager
def recipe_process(cache_dir: Path, log_file: Path) -> Iterator[None]:
    """Run the recipe as if in a process of its own: medft's configs only (no user config dirs),
    ``MEDFT_CACHE_DIR``; afterwards the caller's environment variables, Hydra config, torch threads and
    flags, RNG states, warning filters and root log handlers are back as they were (the recipe's log
    lines go to ``log_file``, not the caller's train.log)."""
    import logging
    import random
    import warnings

    import numpy as np
    import torch
    from hydra.core.hydra_config import HydraConfig

    from medft.config.search import CONFIG_DIRS_ENV

    environ = dict(os.environ)
    hydra_cfg = HydraConfig.instance().cfg
    threads = torch.get_num_threads()
    flags = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    rng = (random.getstate(), np.random.get_state())
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    file_handler = logging.FileHandler(log_file)
    file_handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    os.environ.pop(CONFIG_DIRS_ENV, None)
    os.environ["MEDFT_CACHE_DIR"] = str(cache_dir)
    root.handlers, root.level = [file_handler], logging.INFO
    try:
        with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_initialized() else []), \
                warnings.catch_warnings():
            yield
    finally:
        root.handlers, root.level = handlers, level
        file_handler.close()
        os.environ.clear()
        os.environ.update(environ)
        HydraConfig.instance().cfg = hydra_cfg
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = flags[2], flags[3]
        random.setstate(rng[0])
        np.random.set_state(rng[1])
