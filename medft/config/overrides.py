"""Command-line overrides as medft reads them before Hydra: ``+group=``/``group=`` alike, sweeps, run-dir
suffixes of a multirun's jobs, paths quoted, a tune mode required."""

from __future__ import annotations

import json
import os

from medft.config.search import available, config_dirs, default_groups
from medft.util.errors import ConfigError

SWEEP_FUNCTIONS = ("range(", "choice(", "glob(", "interval(", "tag(")


def is_sweep(value: str) -> bool:
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
    return {a.split("=", 1)[0].lstrip("+~") for a in args if "=" in a and is_sweep(a.split("=", 1)[1])}


SWEEP_ENV = "MEDFT_SWEEP"  # the sweep's command-line keys, for launchers' worker processes


def sweep_env(args: list[str]) -> str:
    """What ``run_suffix`` needs to know of the sweep's command line, as JSON for the environment."""
    given = sorted({a.split("=", 1)[0].lstrip("+~") for a in args if "=" in a and not a.startswith("-")})
    return json.dumps({"given": given, "swept": sorted(swept_keys(args))})


def run_suffix(override_dirname: str) -> str:
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


def normalize_overrides(args: list[str], config_name: str = "train") -> list[str]:
    """Accept both ``+group=x`` and ``group=x`` for every config group.

    Hydra refuses ``+group=`` for a group already in the defaults list (as ``tune: null`` is) and
    ``group=`` for one that is not; users should not have to know which is which.
    """
    in_defaults = default_groups(config_name)
    groups = {d.name for root in config_dirs() for d in root.iterdir() if d.is_dir()}
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


def quote_value(value: str) -> str:
    """A path as a Hydra override value (quoted, so ':' ',' '=' and spaces stay literal)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


PATH_KEYS = ("ckpt", "ckpt_path", "dataset.root", "model.pretrained", "paths.log_dir", "hydra.run.dir", "hydra.sweep.dir")


def quote_paths(args: list[str]) -> list[str]:
    """Path values holding '=' (sweep job dirs such as ``..._optim.lr=0.01``) quoted for Hydra's parser."""
    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+~") in PATH_KEYS and "=" in value and value[:1] not in "'\"" and "," not in value:
            arg = f"{key}={quote_value(value)}"
        out.append(arg)
    return out
