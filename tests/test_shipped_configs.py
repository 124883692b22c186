"""Every shipped config of every config group composes, validates and builds (where that is cheap).

A config that only the README mentions (``scheduler=constant`` crashed every run) is caught here:
the list of cases is read from configs/, so a new file is tested the day it is added.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from types import SimpleNamespace

import hydra
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict

from medft.config.resolvers import register_resolvers
from medft.config.search import CONFIG_DIR, available
from medft.config.validate import validate
from medft.models import configured_task
from medft.util.errors import ConfigError

# group -> the root config that uses it and how it is named on the command line
ROOTS: dict[str, str] = {}  # all groups are in train.yaml's defaults list (local is optional)
SKIP = {"hydra"}  # hydra's own groups: tested below (launcher) and by every run


def shipped() -> list[tuple[str, str]]:
    """(group, option) for every YAML file under configs/<group>/ (nested groups: experiment/paper/...)."""
    cases = []
    for group_dir in sorted(p for p in CONFIG_DIR.iterdir() if p.is_dir() and p.name not in SKIP):
        for path in sorted(group_dir.rglob("*.yaml")):
            if "arch" in path.relative_to(group_dir).parts:  # model/arch/*: config.json files, not options
                continue
            cases.append((group_dir.name, str(path.relative_to(group_dir).with_suffix(""))))
    return cases


def test_the_case_list_covers_the_config_folders():
    groups = {g for g, _ in shipped()}
    assert {"tune", "scheduler", "trainer", "optim", "callbacks", "logger", "model", "dataset", "experiment",
            "debug", "generation", "hparams_search", "local", "paths"} <= groups
    assert ("scheduler", "constant") in shipped() and ("experiment", "paper/blip_vqa_rad") in shipped()


@pytest.fixture(autouse=True)
def run_dirs_in_tmp(tmp_path, monkeypatch):
    """Resolving hydra.run.dir creates the run dir (medft_claim): under tmp_path, not the checkout's logs/."""
    monkeypatch.setenv("MEDFT_LOG_DIR", str(tmp_path / "logs"))


def compose_train(*overrides: str) -> DictConfig:
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = "/nonexistent/never-written"
        cfg.hydra.runtime.output_dir = "/nonexistent/never-written"
    return cfg


def option_overrides(group: str, option: str) -> list[str]:
    if group == "tune":  # prefix tuning needs a decoder-only language model (refused on BLIP: tests/test_peft_modes.py)
        return [f"tune={option}", "model=llava_tiny"] if option == "prefix" else [f"tune={option}"]
    if group == "generation":
        return [f"generation@eval={option}", "tune=layernorm"]
    if group == "model" and configured_task(option) == "report":  # a report model needs a report dataset
        return [f"model={option}", "dataset=iu_xray", "tune=layernorm"]
    if group == "hparams_search":
        return [f"hparams_search={option}", "tune=layernorm"]
    return [f"{ROOTS.get(group, group)}={option}", "tune=layernorm"]


@pytest.mark.parametrize("group, option", shipped(), ids=[f"{g}={o}" for g, o in shipped()])
def test_every_shipped_config_composes_and_validates(group, option):
    cfg = compose_train(*option_overrides(group, option))
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # every interpolation resolves
    gpu = OmegaConf.select(cfg, "trainer.accelerator") in ("gpu", "cuda")
    if gpu and not torch.cuda.is_available():  # trainer=gpu/ddp/fsdp/deepspeed and experiment=paper/*
        with pytest.raises(ConfigError, match=r"no GPU found on this machine .* use trainer=cpu"):
            validate(cfg)
        with open_dict(cfg):
            cfg.trainer.accelerator = "cpu"
    validate(cfg)  # every key of tune/optim/data/eval/trainer is a known one


def tiny_module(scheduler: DictConfig) -> tuple:
    from medft.models import build_model
    from medft.training.module import MedVLMModule

    cfg = compose_train("tune=layernorm", "seed=0")
    net = build_model(cfg.model)
    from medft.tuning import apply_tuning

    apply_tuning(net, OmegaConf.to_container(cfg.tune, resolve=True))
    module = MedVLMModule(net, optim=hydra.utils.instantiate(cfg.optim), scheduler=hydra.utils.instantiate(scheduler))
    module._trainer = SimpleNamespace(estimated_stepping_batches=20)  # what configure_optimizers reads
    return module


@pytest.mark.parametrize("option", available("scheduler"))
def test_every_scheduler_builds_and_steps(option):
    cfg = compose_train("tune=layernorm", f"scheduler={option}", "scheduler.warmup_ratio=0.1")
    module = tiny_module(cfg.scheduler)
    out = module.configure_optimizers()
    optimizer, schedule = out["optimizer"], out["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(20):
        optimizer.step()
        schedule.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    peak = max(lrs)
    assert lrs[0] < peak  # two warm-up steps of 20
    if option == "constant":
        assert lrs[-1] == pytest.approx(peak)
    if option == "cosine":
        assert lrs[-1] < 0.01 * peak


@pytest.mark.parametrize("option", available("trainer"))
def test_every_trainer_instantiates_or_names_the_missing_gpu(option):
    cfg = compose_train("tune=layernorm", f"trainer={option}")
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no GPU found"):
            validate(cfg)
        return
    if str(cfg.trainer.get("strategy", "")).startswith("deepspeed"):
        pytest.importorskip("deepspeed")
    with open_dict(cfg):
        cfg.trainer.default_root_dir = None
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    assert trainer.max_epochs == cfg.trainer.max_epochs


@pytest.mark.parametrize("group", ["callbacks", "logger"])
def test_every_callback_and_logger_instantiates(group, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    for option in available(group):
        cfg = compose_train("tune=layernorm", f"{group}={option}")
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / option)
        node = cfg.get(group) or {}
        built = [hydra.utils.instantiate(v) for v in node.values() if isinstance(v, DictConfig) and "_target_" in v]
        assert len(built) == sum(1 for v in node.values() if isinstance(v, DictConfig) and "_target_" in v)


def test_optim_instantiates_over_the_trainable_parameters():
    for option in available("optim"):
        cfg = compose_train("tune=layernorm", f"optim={option}")
        optim = hydra.utils.instantiate(cfg.optim)
        assert isinstance(optim, partial)
        optim(params=[torch.nn.Parameter(torch.zeros(2))]).step()


def test_slurm_launcher_composes():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = compose_train("tune=layernorm", "hydra/launcher=slurm", "hydra.launcher.partition=gpu")
    assert cfg.hydra.launcher.partition == "gpu" and cfg.hydra.launcher.gpus_per_node == 1


def test_scheduler_constant_trains(run_cli, tmp_path):
    from tests.conftest import FAST

    out = run_cli("train", "+tune=layernorm", "scheduler=constant", *FAST)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    assert list(Path(tmp_path / "logs").rglob("metrics.json"))
