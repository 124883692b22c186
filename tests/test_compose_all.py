"""Every experiment and every model config composes with every tune mode, as a user would ask for it.

Hydra's compose API only (no training, no weights): each of configs/experiment/**.yaml and
configs/model/*.yaml with each of configs/tune/*.yaml (the lists are read from the folders, so a new
config is tested the day it is added), every interpolation resolved, then medft's own early checks
(``medft.config.validate``: task, keys, values, tune mode vs model, trainer), the ones ``medft train``
runs before it loads data or weights. A combination medft refuses on purpose must be refused in one
line (REFUSED); any other refusal, or a refusal that does not come, fails.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict

from medft.config.overrides import normalize_overrides
from medft.config.resolvers import register_resolvers
from medft.config.search import CONFIG_DIR, available
from medft.config.validate import validate
from medft.metrics.protocols import resolve_protocol
from medft.util.errors import ConfigError
from tests.test_shipped_configs import shipped

REPO = Path(__file__).resolve().parents[1]
MODES = available("tune")
EXPERIMENTS = [option for group, option in shipped() if group == "experiment"]
MODELS = [option for group, option in shipped() if group == "model"]

# Combinations medft refuses on purpose: (what, applies to the composed config, the one-line message).
REFUSED: list[tuple[str, Callable[[DictConfig], bool], str]] = [
    ("tune=prefix on a family whose forward peft cannot prefix (Qwen-VL's M-RoPE)",
     lambda cfg: cfg.tune.select == "prefix" and bool(OmegaConf.select(cfg, "model.arch.no_prefix")),
     r"^tune=prefix: \w+: peft's prefix tuning lengthens attention_mask .* use lora, dora, ia3 or layernorm instead$"),
    ("tune=prefix on a model without a decoder-only language model (BLIP)",
     lambda cfg: cfg.tune.select == "prefix" and not OmegaConf.select(cfg, "model.arch.prefix")
     and not OmegaConf.select(cfg, "model.arch.no_prefix"),
     r"^tune=prefix: peft's prefix tuning needs a decoder-only language model .* use lora, dora, ia3 or layernorm instead$"),
    ("tune=prefix with gradient checkpointing (llava_med and the paper's LLaVA presets)",
     lambda cfg: cfg.tune.select == "prefix" and bool(OmegaConf.select(cfg, "model.gradient_checkpointing")),
     r"^tune=prefix cannot run with model\.gradient_checkpointing=true .*: add model\.gradient_checkpointing=false$"),
]
NO_GPU = r"^trainer\.accelerator=(gpu|cuda): no GPU found on this machine .*: use trainer=cpu"


def dataset_task(name: str) -> str:
    return (yaml.safe_load((CONFIG_DIR / "dataset" / f"{name}.yaml").read_text()) or {}).get("task", "vqa")


def model_task(name: str) -> str | None:
    """The task a model config states as a plain value (None: it follows the dataset, or states none)."""
    task = (yaml.safe_load((CONFIG_DIR / "model" / f"{name}.yaml").read_text()) or {}).get("task")
    return task if task and "${" not in str(task) else None


DEFAULT_DATASET = next(d["dataset"] for d in yaml.safe_load((CONFIG_DIR / "train.yaml").read_text())["defaults"]
                       if isinstance(d, dict) and "dataset" in d)


@pytest.fixture(autouse=True)
def own_run_dirs(tmp_path, monkeypatch):
    """Resolving hydra.run.dir claims (creates) a run dir: under tmp_path, and the claims forgotten after."""
    monkeypatch.setenv("MEDFT_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("MEDFT_CACHE_DIR", str(tmp_path / "cache"))
    saved = dict(os.environ)
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        yield
    os.environ.clear()
    os.environ.update(saved)


def composed(*args: str) -> DictConfig:
    """``medft train ARGS``'s config (the CLI's spelling rules applied), output dir never written."""
    cfg = compose("train", overrides=normalize_overrides(list(args)), return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = "/nonexistent/never-written"
        cfg.hydra.runtime.output_dir = "/nonexistent/never-written"
    return cfg


def refusal(cfg: DictConfig) -> str | None:
    """The ConfigError medft's early checks raise for ``cfg`` (None: it passes them)."""
    try:
        validate(cfg)
    except ConfigError as err:
        return str(err)
    return None


def check(args: list[str], expect: dict[str, Any]) -> None:
    """Compose ``medft train ARGS``, resolve it, run the early checks; ``expect``: values the result must have."""
    cfg = composed(*args)
    for key, value in expect.items():
        assert OmegaConf.select(cfg, key) == value, f"{key}={OmegaConf.select(cfg, key)!r}, expected {value!r}"
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # every interpolation resolves
    refused = [(what, pattern) for what, applies, pattern in REFUSED if applies(cfg)]
    got = refusal(cfg)
    if refused:
        what, pattern = refused[0]
        assert got is not None, f"not refused: {what}"
        assert "\n" not in got and re.search(pattern, got), f"{what}: refused as {got!r}"
        return
    if got is not None and re.search(NO_GPU, got) and not torch.cuda.is_available():  # the paper presets on CPU
        assert "\n" not in got
        with open_dict(cfg):
            cfg.trainer.accelerator = "cpu"
        got = refusal(cfg)
    assert got is None, f"refused: {got}"
    for name, dataset in (cfg.get("also_test") or {}).items():
        assert dataset in available("dataset"), f"also_test.{name}={dataset}: no such dataset config"
    if OmegaConf.select(cfg, "model.task", default="vqa") == "vqa":  # as medft train reads it
        resolve_protocol(OmegaConf.select(cfg, "eval.protocol"), cfg.model)


def each_mode(make_args: Callable[[str], list[str]], **expect: Any) -> None:
    """``check`` for every tune mode; every mode's failure is reported, not only the first."""
    failures = []
    for mode in MODES:
        try:
            check(make_args(mode), {"tune.name": mode, **expect})
        except Exception as err:  # noqa: BLE001 - collected and reported below
            failures.append(f"{' '.join(make_args(mode))}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
    assert not failures, "\n".join(failures)


def test_the_lists_come_from_the_config_folders():
    assert {"demo_layernorm", "study", "study_random", "paper/blip_vqa_rad", "paper_tiny/llava_mimic_cxr"} <= set(EXPERIMENTS)
    assert len(EXPERIMENTS) == len(list((CONFIG_DIR / "experiment").rglob("*.yaml")))
    assert {"blip_tiny", "blip_med", "blip_vqa", "blip_report", "llava_tiny", "llava_med"} <= set(MODELS)
    assert {"layernorm", "lora", "prefix", "full", "frozen"} <= set(MODES) and len(MODES) == len(list((CONFIG_DIR / "tune").glob("*.yaml")))


def test_make_paper_runs_every_paper_cell():
    """`make paper`'s grid is configs/experiment/paper/: the BLIP and LLaVA cells and the image-text models'."""
    makefile = (REPO / "Makefile").read_text()
    grid = [re.search(rf"^{var} := (.*)$", makefile, re.M).group(1).split() for var in ("PAPER_CELLS", "IMAGE_TEXT_CELLS")]
    assert sorted(grid[0] + grid[1]) == sorted(p.stem for p in (CONFIG_DIR / "experiment" / "paper").glob("*.yaml"))
    assert "experiment=$(call cells,paper,$(PAPER_CELLS) $(IMAGE_TEXT_CELLS))" in makefile
    assert {f"{model}_{dataset}" for model in ("medgemma", "lingshu", "medvlm_r1")
            for dataset in ("vqa_rad", "slake", "path_vqa")} == set(grid[1])


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_with_every_tune_mode(experiment):
    # `medft train experiment=X tune=MODE`: the mode given wins over one the preset names (demo_layernorm)
    each_mode(lambda mode: [f"experiment={experiment}", f"+tune={mode}"])


@pytest.mark.parametrize("model", MODELS)
def test_every_model_composes_with_every_tune_mode(model):
    task = model_task(model)
    if task and task != dataset_task(DEFAULT_DATASET):  # a report model with the default (VQA) dataset: refused
        got = refusal(composed(f"model={model}", "+tune=layernorm"))
        assert got and "\n" not in got and re.match(rf"^model={model} does {task} but dataset={DEFAULT_DATASET} is a ", got), got
        dataset = next(d for d in available("dataset") if dataset_task(d) == task)  # e.g. iu_xray
        each_mode(lambda mode: [f"model={model}", f"dataset={dataset}", f"+tune={mode}"], **{"model.name": model})
    else:
        each_mode(lambda mode: [f"model={model}", f"+tune={mode}"], **{"model.name": model})


def make_train_args() -> list[str]:
    """The arguments of ``medft train`` in the Makefile's ``train`` target (``$(ARGS)`` left out)."""
    lines = (REPO / "Makefile").read_text().split("\ntrain:", 1)[1].splitlines()
    line = next(ln for ln in lines if "medft train" in ln)
    return [a for a in shlex.split(line.split("medft train", 1)[1]) if a != "$(ARGS)"]


def plain(cfg: DictConfig) -> dict:
    out = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    out.pop("hydra")
    return out


def test_demo_layernorm_spells_out_make_train():
    """configs/experiment/demo_layernorm.yaml says it is `make train` as a preset: the same config, value for value."""
    args = make_train_args()
    assert args == ["+tune=layernorm", "model=blip_med", "dataset=demo_ct"]
    text = (CONFIG_DIR / "experiment" / "demo_layernorm.yaml").read_text()
    assert "medft train " + " ".join(args) in text  # the comment names the command it spells out
    preset, command = plain(composed("experiment=demo_layernorm")), plain(composed(*args))
    assert preset == command
    assert command["optim"]["lr"] == 1e-2 and command["trainer"]["max_epochs"] == 10  # what the preset writes down
    spelled = yaml.safe_load(text)
    assert float(spelled["optim"]["lr"]) == command["optim"]["lr"] and spelled["trainer"]["max_epochs"] == command["trainer"]["max_epochs"]
