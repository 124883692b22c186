"""A composed config checked before any expensive work: task, keys, values, tune mode against model,
trainer; Hydra's own errors made one line; :func:`run_hydra`, the one way a command starts Hydra."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable

import yaml
from omegaconf import DictConfig, OmegaConf

from medft.config.search import CONFIG_DIR, available, config_dirs, find_config, generation_config, root_config
from medft.runs.layout import PLACEHOLDER
from medft.util.errors import CheckpointError, ConfigError


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
        ("trainer.max_epochs", OmegaConf.select(cfg, "trainer.max_epochs", default=1), lambda v: v >= 1 or v == -1, ">= 1 (or -1: until max_steps)"),
        ("checkpoint.every_n_steps", OmegaConf.select(cfg, "checkpoint.every_n_steps", default=0), lambda v: v >= 0 and v == int(v), "(an integer) >= 0"),
    ]
    check_model_task(cfg)
    check_keys(cfg)
    check_values(cfg)
    check_tune_fits(cfg)
    for key, value, ok, allowed in ranges:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
            raise ConfigError(f"{key}={value!r} is out of range: it must be a number {allowed}")
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path and not Path(str(ckpt_path)).expanduser().is_file():
        raise CheckpointError(f"ckpt_path={ckpt_path}: no such checkpoint file; pass {PLACEHOLDER.last_ckpt}")
    check_trainer(cfg)  # imports Lightning: last, so the cheap checks answer first


def check_values(cfg: DictConfig) -> None:
    """Values that cannot be meant (refused, one line) or are merely odd (a warning), for every command."""
    ints = [
        ("seed", OmegaConf.select(cfg, "seed", default=0), lambda v: 0 <= v < 2**32, "an integer in [0, 2**32 - 1]"),
        ("eval.generate.max_new_tokens", OmegaConf.select(cfg, "eval.generate.max_new_tokens", default=1),
         lambda v: v >= 1, "an integer >= 1 (answers need at least one token)"),
        ("dataset.max_image_pixels", OmegaConf.select(cfg, "dataset.max_image_pixels", default=1), lambda v: v >= 1,
         "an integer >= 1"),
        ("dataset.max_batch_pixels", OmegaConf.select(cfg, "dataset.max_batch_pixels", default=1), lambda v: v >= 1,
         "an integer >= 1"),
    ]
    for key, value, ok, allowed in ints:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not ok(value)):
            raise ConfigError(f"{key}={value!r} is out of range: it must be {allowed}")
    lr = OmegaConf.select(cfg, "optim.lr", default=None)
    if isinstance(lr, (int, float)) and not isinstance(lr, bool):
        if lr >= 10:
            raise ConfigError(f"optim.lr={lr!r} cannot be meant: AdamW with a learning rate >= 10 diverges; use e.g. 1e-3")
        if lr > 1:
            print(f"medft: warning: optim.lr={lr!r} is unusually high (the tune modes' defaults are 1e-3 to 1e-1)", file=sys.stderr)


def check_model_task(cfg: DictConfig) -> None:
    """The model config's task is the dataset's (:func:`medft.models.check_task`), before any weights load."""
    from medft.models import check_task

    if cfg.get("model") is not None and cfg.get("dataset") is not None:
        check_task(cfg.model, cfg.dataset)


def check_tune_fits(cfg: DictConfig) -> None:
    """The tune mode must be one the model can take (``tune=prefix`` on BLIP is refused here, not after the model loads)."""
    from medft.tuning import check_tune

    tune = OmegaConf.to_container(cfg.tune, resolve=True)
    arch = OmegaConf.to_container(cfg.model.arch, resolve=True) if OmegaConf.select(cfg, "model.arch") else {}
    check_tune(tune, arch, str(OmegaConf.select(cfg, "model.name", default="") or ""),
               bool(OmegaConf.select(cfg, "model.gradient_checkpointing", default=False)))
    from medft.models.quantization import check_quantization

    check_quantization(cfg.model, tune)  # model.quantization: a mode that trains a slice, a CUDA GPU, bitsandbytes


# -- keys a user can mistype: refused in one line, naming the nearest valid key ---------------
CHECKED_GROUPS = ("tune", "optim", "data", "eval")


def nearest(key: str, choices: list[str] | set[str], prefix: str = "") -> str:
    """``did you mean PREFIX.X?`` for the closest of ``choices``, else the list of valid keys."""
    import difflib

    close = difflib.get_close_matches(key, sorted(choices), n=1, cutoff=0.6)
    if close:
        return f"did you mean {prefix}{close[0]}?"
    return "valid keys: " + ", ".join(sorted(c for c in choices if not c.startswith("_")))


def _yaml_keys(path: Path) -> set[str]:
    try:
        return set(yaml.safe_load(path.read_text()) or {})
    except (OSError, yaml.YAMLError):
        return set()


def _signature_keys(target: Any) -> set[str]:
    import inspect

    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return set()
    return {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)} - {"self", "params"}


def known_keys(cfg: DictConfig, group: str, config_name: str = "train") -> set[str] | None:
    """The keys ``group`` may hold in this config (None: not checked)."""
    if group == "tune":
        mode = find_config("tune", f"{OmegaConf.select(cfg, 'tune.name', default='')}.yaml")
        files = [mode] if mode else sorted(p for d in config_dirs() for p in (d / "tune").glob("*.yaml"))
        return set().union(*(_yaml_keys(p) for p in files))
    if group == "optim":
        target = OmegaConf.select(cfg, "optim._target_", default=None)
        if not target:
            return None
        from hydra.utils import get_class

        try:
            return _signature_keys(get_class(target)) | {"_target_", "_partial_"}
        except Exception:  # noqa: BLE001 - an unknown optimizer class fails at instantiation with its own message
            return None
    if group == "data":
        root = yaml.safe_load(root_config(config_name).read_text()) or {}
        return set(root.get("data") or {})
    if group == "eval":
        return _yaml_keys(generation_config())
    return None


def generate_keys() -> set[str]:
    """What ``model.generate`` accepts as ``eval.generate.*``: transformers' GenerationConfig fields."""
    from transformers import GenerationConfig

    return set(GenerationConfig().to_dict()) - {"transformers_version", "_from_model_config"}


def check_keys(cfg: DictConfig, config_name: str = "train") -> None:
    """Unknown keys under tune / optim / data / eval (e.g. ``+tune.rank=8``) are refused, not ignored."""
    for group in CHECKED_GROUPS:
        node = cfg.get(group)
        allowed = known_keys(cfg, group, config_name) if isinstance(node, DictConfig) else None
        if not allowed:
            continue
        for key in node:
            if key not in allowed:
                name = f"{group}={cfg.tune.name}" if group == "tune" and "name" in cfg.tune else group
                raise ConfigError(f"{group}.{key} is not a key of {name}: {nearest(str(key), allowed, f'{group}.')}")
    given = OmegaConf.select(cfg, "eval.generate", default=None)
    shipped = set((yaml.safe_load(generation_config().read_text()) or {}).get("generate") or {})
    unknown = [str(k) for k in given if k not in shipped] if isinstance(given, DictConfig) else []
    if unknown:  # transformers is imported only when a key beyond the shipped ones is given
        allowed = generate_keys()
        for key in unknown:
            if key not in allowed:
                raise ConfigError(f"eval.generate.{key} is not a generation option: {nearest(key, allowed, 'eval.generate.')}")


GPU_ACCELERATORS = ("gpu", "cuda")


def check_trainer(cfg: DictConfig) -> None:
    """Lightning's Trainer arguments and the accelerator, before any data or model is loaded."""
    node = cfg.get("trainer")
    if not isinstance(node, DictConfig):
        return
    from lightning.pytorch import Trainer

    allowed = _signature_keys(Trainer.__init__) | {"_target_", "_partial_", "_convert_", "_recursive_"}
    for key in node:
        if key not in allowed:
            raise ConfigError(f"trainer.{key} is not an argument of Lightning's Trainer: {nearest(str(key), allowed, 'trainer.')}")
    accelerator = str(node.get("accelerator", "auto"))
    if accelerator in GPU_ACCELERATORS:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                f"trainer.accelerator={accelerator}: no GPU found on this machine (torch.cuda.is_available() is "
                "False): use trainer=cpu, or run where a CUDA GPU and a CUDA build of torch are installed"
            )
    if accelerator == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise ConfigError("trainer.accelerator=mps: no Apple GPU (MPS) found on this machine: use trainer=cpu")


def hydra_error(err: BaseException) -> ConfigError:
    """Hydra's composition and override errors as one line that names the key and the fix."""
    import re

    text = str(err)
    missing = re.search(r"Could not find '([^']+)/([^'/]+)'", text)
    if missing:
        group, name = missing.groups()
        options = available(group)
        hint = nearest(name, options) if options else "no options installed"
        if options and hint.startswith("did you mean"):
            hint += " Choose one of: " + ", ".join(options)
        elif options:
            hint = "choose one of: " + ", ".join(options)
        return ConfigError(f"{group}={name}: no such {group} config ({CONFIG_DIR.name}/{group}/{name}.yaml); {hint}")
    cause = err.__cause__
    full_key = getattr(cause, "full_key", None)
    parent = getattr(cause, "parent_node", None)
    if full_key and "not in struct" in str(cause):
        root = str(full_key).split(".", 1)[0]
        if root == "trainer":
            from lightning.pytorch import Trainer

            choices: set[str] = _signature_keys(Trainer.__init__)
        else:
            choices = {str(k) for k in parent.keys()} if isinstance(parent, DictConfig) else set()
        prefix = str(full_key).rsplit(".", 1)[0] + "." if "." in str(full_key) else ""
        hint = nearest(str(full_key).rsplit(".", 1)[-1], choices, prefix) if choices else "check the spelling"
        return ConfigError(f"{full_key} is not a config key: {hint}")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("See https://hydra.cc")]
    if cause is not None and str(cause).strip():
        lines.append(str(cause).strip().splitlines()[0])
    return ConfigError("; ".join(lines[:3]) or type(err).__name__)


def _medft_cause(err: BaseException) -> BaseException | None:
    """The MedftError a resolver raised under OmegaConf's / Hydra's wrapping (its cause or context)."""
    from medft.util.errors import MedftError

    seen = 0
    while err is not None and seen < 20:
        if isinstance(err, MedftError):
            return err
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None


def run_hydra(hydra_main: Callable[[], Any]) -> None:
    """Call a ``@hydra.main`` function; a config error (a typo'd key or group option, an unparsable
    override) is raised as one ``ConfigError`` line instead of Hydra's text and exit status 1."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    previous = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises instead of printing and exiting 1
    try:
        hydra_main()
    except (HydraException, OmegaConfBaseException) as err:
        cause = _medft_cause(err)  # a medft resolver's one line (medft_claim: a read-only disk), as it said it
        raise (cause if cause is not None else hydra_error(err)) from None
    finally:
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous
