"""Config plumbing: where the configs live, override spelling, resolvers and validation."""

from __future__ import annotations

import json
import os
import sys
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import yaml
from hydra.core.config_search_path import ConfigSearchPath, SearchPathQuery
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import DictConfig, OmegaConf

from medft.errors import CheckpointError, ConfigError
from medft.runs.layout import PLACEHOLDER, RunDir

CONFIG_DIR = Path(str(resources.files("medft") / "configs"))  # shipped as package data (pyproject.toml)

# -- where configs are found: the user's config dirs first, then medft's own ---------------------
CONFIG_DIRS_ENV = "MEDFT_CONFIG_DIRS"  # the user's config dirs (os.pathsep-separated); launcher workers inherit it
CONFIG_DIRS_FILE = RunDir.CONFIG_DIRS  # in a run dir: {"config_dirs": the user's config dirs that composed the run}
CONFIG_DIR_FLAGS = ("--config-dir", "-cd")


def user_config_dirs() -> list[Path]:
    """The user's config dirs, searched before medft's own: ``--config-dir DIR`` and ``hydra.searchpath``
    of a command line (:func:`take_config_dirs`), or ``MEDFT_CONFIG_DIRS`` set by hand."""
    return [Path(p) for p in os.environ.get(CONFIG_DIRS_ENV, "").split(os.pathsep) if p]


def config_dirs() -> list[Path]:
    """Every config dir in search order: the user's, then medft's own (CONFIG_DIR)."""
    return [*user_config_dirs(), CONFIG_DIR]


def find_config(*parts: str) -> Path | None:
    """The first ``DIR/parts...`` file in search order (a user's ``dataset/mine.yaml`` before medft's), or None."""
    return next((path for d in config_dirs() if (path := d.joinpath(*parts)).is_file()), None)


def add_config_dirs(dirs: list[Path]) -> None:
    """Put ``dirs`` on the config search path (after those already on it) for this process and its children."""
    known = user_config_dirs()
    os.environ[CONFIG_DIRS_ENV] = os.pathsep.join(str(d) for d in [*known, *(d for d in dirs if d not in known)])
    use_search_path()


def record_config_dirs(run_dir: Path) -> None:
    """Write the user's config dirs that compose this run into it (``eval``/``export``/``ask`` search them again)."""
    from medft.files import write_json_atomic

    write_json_atomic(RunDir(run_dir).config_dirs, {"config_dirs": [str(d) for d in user_config_dirs()]})


def _searchpath_dirs(value: str) -> tuple[list[str], bool]:
    """The directories of a ``hydra.searchpath=[file://A,B]`` value, and whether it names anything else (pkg://)."""
    entries = [e.strip().strip("'\"") for e in value.strip().strip("[]").split(",") if e.strip()]
    dirs = [e.removeprefix("file://") for e in entries if "://" not in e.removeprefix("file://")]
    return dirs, len(dirs) < len(entries)


def take_config_dirs(args: list[str], config_name: str = "train") -> list[str]:
    """Take the user's config dirs out of a command line, in any position: ``--config-dir DIR``,
    ``--config-dir=DIR`` or ``-cd DIR`` (repeatable) and ``hydra.searchpath=[file://DIR,...]``, plus the
    ``hydra.searchpath`` of a ``CONFIG_NAME.yaml`` in one of those dirs. They are searched before medft's
    own configs by every compose that follows (Hydra's, and medft's own look-ups); returns the rest."""
    found: list[str] = []
    rest: list[str] = []
    items = iter(args)
    for arg in items:
        flag, eq, value = arg.partition("=")
        if flag in CONFIG_DIR_FLAGS:
            value = value if eq else next(items, "")
            if not value or value.startswith("-"):
                raise ConfigError(f"{flag} needs a directory: {flag} DIR (your model, dataset, ... configs)")
            found.append(value)
        elif flag.lstrip("+") == "hydra.searchpath" and eq:
            dirs, others = _searchpath_dirs(value)
            found.extend(dirs)
            if others:  # pkg://... : Hydra's own search path handles it
                rest.append(arg)
        else:
            rest.append(arg)
    dirs: list[Path] = []
    for value in found:
        path = Path(value).expanduser().resolve()
        if not path.is_dir():
            raise ConfigError(f"--config-dir {value}: no such directory (give the folder holding your model/, dataset/, ... configs)")
        dirs.append(path)
        primary = path / f"{config_name}.yaml"
        searchpath = (yaml.safe_load(primary.read_text()) or {}).get("hydra", {}).get("searchpath") if primary.is_file() else None
        for entry in searchpath or []:
            extra = Path(str(entry).removeprefix("file://")).expanduser().resolve()
            if "://" not in str(entry).removeprefix("file://") and extra.is_dir():
                dirs.append(extra)
    if dirs:
        add_config_dirs(dirs)
    return rest


def use_search_path() -> None:
    """Register medft's Hydra search-path plugin once: the user's config dirs come before medft's."""
    from hydra.core.plugins import Plugins

    plugins = Plugins.instance()
    if UserConfigDirs.__name__ not in {c.__name__ for c in plugins.discover(SearchPathPlugin)}:
        plugins.register(UserConfigDirs)


class UserConfigDirs(SearchPathPlugin):
    """Hydra's search path of a medft config (its main dir is CONFIG_DIR) gets the user's config dirs
    before medft's own, in order; Hydra's ``--config-dir`` alone would come after them."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        main = SearchPathQuery(provider="main")
        found = [e.path for e in search_path.get_path() if e.provider == main.provider]
        if not found or found[0].removeprefix("file://") != str(CONFIG_DIR):  # another Hydra app in this process
            return
        for path in user_config_dirs():
            search_path.prepend(provider="medft-config-dir", path=f"file://{path}", anchor=main)


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
    """medft's OmegaConf resolvers, and its Hydra search path (the user's config dirs first)."""
    use_search_path()
    if not OmegaConf.has_resolver("medft_suffix"):
        OmegaConf.register_new_resolver("medft_suffix", _suffix)
    if not OmegaConf.has_resolver("medft_claim"):  # hydra.run.dir / hydra.sweep.dir: never another run's
        from medft.rundir import claim_dir

        OmegaConf.register_new_resolver("medft_claim", claim_dir)
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
    """The choices of a config group in every config dir, e.g. ``available("tune")`` -> ["attention", "bitfit", ...]."""
    return sorted({p.stem for d in config_dirs() for p in (d / group).glob("*.yaml")})


def group_dirs() -> set[str]:
    """The config groups of every config dir, nested ones too (``model/arch``)."""
    return {str(p.relative_to(d)) for d in config_dirs() for p in d.rglob("*") if p.is_dir()}


def _root_config(config_name: str) -> Path:
    return find_config(f"{config_name}.yaml") or CONFIG_DIR / f"{config_name}.yaml"


def _generation_config() -> Path:
    return find_config("generation", "default.yaml") or CONFIG_DIR / "generation" / "default.yaml"


def default_groups(config_name: str = "train") -> set[str]:
    """Config groups named in the root config's defaults list (their ``+group=`` is rewritten)."""
    defaults = yaml.safe_load(_root_config(config_name).read_text())["defaults"]
    return {next(iter(d)) for d in defaults if isinstance(d, dict)}


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
        root = yaml.safe_load(_root_config(config_name).read_text()) or {}
        return set(root.get("data") or {})
    if group == "eval":
        return _yaml_keys(_generation_config())
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
    shipped = set((yaml.safe_load(_generation_config().read_text()) or {}).get("generate") or {})
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


PATH_KEYS = ("ckpt", "ckpt_path", "dataset.root", "model.pretrained", "paths.log_dir", "hydra.run.dir", "hydra.sweep.dir")


def quote_paths(args: list[str]) -> list[str]:
    """Path values holding '=' (sweep job dirs such as ``..._optim.lr=0.01``) quoted for Hydra's parser."""
    from medft.resume import _quote

    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+~") in PATH_KEYS and "=" in value and value[:1] not in "'\"" and "," not in value:
            arg = f"{key}={_quote(value)}"
        out.append(arg)
    return out


def _medft_cause(err: BaseException) -> BaseException | None:
    """The MedftError a resolver raised under OmegaConf's / Hydra's wrapping (its cause or context)."""
    from medft.errors import MedftError

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
