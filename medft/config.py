"""Config plumbing: where the configs live, override spelling, resolvers and validation."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import yaml
from omegaconf import DictConfig, OmegaConf

from medft.errors import CheckpointError, ConfigError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


SWEEP_FUNCTIONS = ("range(", "choice(", "glob(", "interval(", "tag(")


def _is_sweep(value: str) -> bool:
    """Whether an override's value sweeps (``a,b`` or a sweep function), brackets and quotes aside."""
    if value.startswith(SWEEP_FUNCTIONS):
        return True
    depth, quote = 0, None
    for ch in value:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            return True
    return False


def swept_keys(args: list[str]) -> set[str]:
    """Keys that a multirun command line sweeps, e.g. {"optim.lr"} for ``optim.lr=1e-3,1e-2``."""
    return {a.split("=", 1)[0].lstrip("+~") for a in args if "=" in a and _is_sweep(a.split("=", 1)[1])}


SWEEP_ENV = "MEDFT_SWEEP"  # the sweep's command-line keys, for launchers' worker processes


def sweep_env(args: list[str]) -> str:
    """What ``_suffix`` needs to know of the sweep's command line, as JSON for the environment."""
    given = sorted({a.split("=", 1)[0].lstrip("+~") for a in args if "=" in a and not a.startswith("-")})
    return json.dumps({"given": given, "swept": sorted(swept_keys(args))})


def _suffix(override_dirname: str) -> str:
    """Run-dir suffix of a multirun job: its varying overrides other than tune/dataset/model.

    An override varies when the command line sweeps it (``optim.lr=1e-3,1e-2``) or a sweeper set it
    (Optuna's ``optim.lr``, absent from the command line). Names stay ``layernorm_demo_blip_tiny``
    when only the mode is swept and become ``layernorm_demo_blip_tiny_optim.lr=0.01`` otherwise.
    Without the sweep's command line (``MEDFT_SWEEP``, set by ``medft train``) every override is kept.
    """
    if not override_dirname:
        return ""
    items = override_dirname.split(",")
    sweep = os.environ.get(SWEEP_ENV)
    if sweep:
        known = json.loads(sweep)
        items = [
            item for item in items
            if (key := item.split("=", 1)[0].lstrip("+~")) in known["swept"] or key not in known["given"]
        ]
    return "".join(f"_{item}" for item in items)


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("medft_suffix"):
        OmegaConf.register_new_resolver("medft_suffix", _suffix)
    if not OmegaConf.has_resolver("medft_mul"):  # optim.lr: ${medft_mul:${tune.lr},${model.lr_scale}}
        OmegaConf.register_new_resolver("medft_mul", lambda a, b: float(a) * float(b))
    if not OmegaConf.has_resolver("medft_lr"):  # optim.lr: ${medft_lr:${tune},${model}}
        OmegaConf.register_new_resolver("medft_lr", default_lr)


def default_lr(tune: DictConfig, model: DictConfig) -> float:
    """The default ``optim.lr`` of a tune mode on a model: ``tune.lr * model.lr_scale``, or, for a
    pretrained model whose config names ``lr_key`` (the embedded ``blip_med``: ``lr_pretrained``), the
    mode's own rate under that key when the mode has one (searched on that model, see configs/tune)."""
    key = model.get("lr_key")
    if key and model.get("pretrained") and tune.get(key) is not None:
        return float(tune[key])
    return float(tune.lr) * float(model.lr_scale)


def available(group: str) -> list[str]:
    """The choices of a config group, e.g. ``available("tune")`` -> ["attention", "bitfit", ...]."""
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def default_groups(config_name: str = "train") -> set[str]:
    """Config groups named in the root config's defaults list (their ``+group=`` is rewritten)."""
    defaults = yaml.safe_load((CONFIG_DIR / f"{config_name}.yaml").read_text())["defaults"]
    return {next(iter(d)) for d in defaults if isinstance(d, dict)}


def normalize_overrides(args: list[str], config_name: str = "train") -> list[str]:
    """Accept both ``+group=x`` and ``group=x`` for every config group.

    Hydra refuses ``+group=`` for a group already in the defaults list (as ``tune: null`` is) and
    ``group=`` for one that is not; users should not have to know which is which.
    """
    in_defaults = default_groups(config_name)
    groups = {p.name for p in CONFIG_DIR.iterdir() if p.is_dir()}
    out = []
    for arg in args:
        key = arg.split("=", 1)[0] if "=" in arg and not arg.startswith("-") else None
        if key is not None:
            bare = key.lstrip("+")
            if key.startswith("+") and not key.startswith("++") and bare in in_defaults:
                arg = arg[1:]
            elif not key.startswith(("+", "~")) and bare in groups and bare not in in_defaults:
                arg = "+" + arg
        out.append(arg)
    return out


def require_tune(args: list[str]) -> None:
    """Before Hydra starts (and makes a run dir): a training command must name a tune mode."""
    if any(a.startswith(("-h", "--help", "--hydra-help", "--cfg", "--info", "--shell-completion")) for a in args):
        return
    keys = {a.split("=", 1)[0].lstrip("+") for a in args if "=" in a}
    if not keys & {"tune", "experiment"}:
        raise ConfigError(
            "no tune mode given: run `medft train +tune=<mode>` with one of: " + ", ".join(available("tune"))
        )


def validate(cfg: DictConfig) -> None:
    """Reject values a user can mistype, before any model or data is loaded: one line each."""
    if cfg.get("tune") is None:
        raise ConfigError(
            "no tune mode given: run `medft train +tune=<mode>` with one of: " + ", ".join(available("tune"))
        )
    ranges: list[tuple[str, Any, Callable[[float], bool], str]] = [
        ("optim.lr", OmegaConf.select(cfg, "optim.lr"), lambda v: v > 0, "> 0"),
        ("optim.weight_decay", OmegaConf.select(cfg, "optim.weight_decay", default=0.0), lambda v: v >= 0, ">= 0"),
        ("data.batch_size", OmegaConf.select(cfg, "data.batch_size"), lambda v: v >= 1, ">= 1"),
        ("data.eval_batch_size", OmegaConf.select(cfg, "data.eval_batch_size", default=1), lambda v: v >= 1, ">= 1"),
        ("dataset.train_fraction", OmegaConf.select(cfg, "dataset.train_fraction", default=1.0), lambda v: 0 < v <= 1, "in (0, 1]"),
        ("tune.r", OmegaConf.select(cfg, "tune.r", default=1), lambda v: v > 0, "> 0"),
        ("trainer.max_epochs", OmegaConf.select(cfg, "trainer.max_epochs", default=1), lambda v: v >= 0 or v == -1, ">= 0"),
        ("checkpoint.every_n_steps", OmegaConf.select(cfg, "checkpoint.every_n_steps", default=0), lambda v: v >= 0 and v == int(v), "(an integer) >= 0"),
    ]
    check_task(cfg)
    for key, value, ok, allowed in ranges:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
            raise ConfigError(f"{key}={value!r} is out of range: it must be a number {allowed}")
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path and not Path(str(ckpt_path)).expanduser().is_file():
        raise CheckpointError(f"ckpt_path={ckpt_path}: no such checkpoint file; pass RUN_DIR/checkpoints/last.ckpt")


def check_task(cfg: DictConfig) -> None:
    """The model must do the dataset's task (``model.task`` vs ``dataset.task``: vqa or report)."""
    model_task = OmegaConf.select(cfg, "model.task", default=None)
    data_task = OmegaConf.select(cfg, "dataset.task", default=None)
    if model_task and data_task and model_task != data_task:
        name = OmegaConf.select(cfg, "model.name", default="?")
        dataset = OmegaConf.select(cfg, "dataset.name", default="?")
        fits = [m for m in available("model") if _model_task(m) == data_task]
        raise ConfigError(
            f"model={name} does {model_task} but dataset={dataset} is a {data_task} dataset: "
            f"use a {data_task} model ({', '.join(fits) or 'none installed'}) or leave model= out"
        )


def _model_task(name: str) -> str | None:
    try:
        return (yaml.safe_load((CONFIG_DIR / "model" / f"{name}.yaml").read_text()) or {}).get("task")
    except (OSError, yaml.YAMLError):
        return None
