"""Config plumbing: where the configs live, override spelling, resolvers and validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import yaml
from omegaconf import DictConfig, OmegaConf

from medft.errors import CheckpointError, ConfigError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def _suffix(override_dirname: str) -> str:
    return f"_{override_dirname}" if override_dirname else ""


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("medft_suffix"):
        OmegaConf.register_new_resolver("medft_suffix", _suffix)


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
    for key, value, ok, allowed in ranges:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
            raise ConfigError(f"{key}={value!r} is out of range: it must be a number {allowed}")
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path and not Path(str(ckpt_path)).expanduser().is_file():
        raise CheckpointError(f"ckpt_path={ckpt_path}: no such checkpoint file; pass RUN_DIR/checkpoints/last.ckpt")
