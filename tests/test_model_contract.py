"""The model contract (medft/models/base.py): every model is a MedVLM, built complete; one task check,
from the model config, before any weights load, for every shipped model config."""

import os
import subprocess
import sys

import pytest
import yaml
from hydra import compose, initialize_config_dir

from medft.config.overrides import normalize_overrides
from medft.config.resolvers import register_resolvers
from medft.config.search import CONFIG_DIR, available
from medft.models import MedVLM, build_model, check_task, configured_task
from medft.util.errors import ConfigError

MODELS = available("model")
DATASETS = {"vqa_rad": "vqa", "iu_xray": "report"}


def train_cfg(tmp_path, *overrides):
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", normalize_overrides(
            ["+tune=layernorm", "dataset.root=/nonexistent", f"paths.output_dir={tmp_path}", *overrides]
        ))


def test_every_model_config_states_its_task():
    for name in MODELS:
        task = (yaml.safe_load((CONFIG_DIR / "model" / f"{name}.yaml").read_text()) or {}).get("task")
        assert task in ("vqa", "report", "${oc.select:dataset.task,vqa}"), name


@pytest.mark.parametrize("dataset", sorted(DATASETS))
@pytest.mark.parametrize("model", MODELS)
def test_task_mismatch_is_refused_before_any_weights_load(model, dataset, tmp_path, monkeypatch, capsys):
    """`medft train model=M dataset=D`: a mismatch exits 2 with one line, and nothing was built or loaded."""
    import transformers

    import medft.models
    from medft.commands.train import train

    def no_weights(*args, **kwargs):
        raise AssertionError("weights were built or loaded before the task check")

    monkeypatch.setattr(medft.models, "build_model", no_weights)
    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", no_weights)
    cfg = train_cfg(tmp_path, f"model={model}", f"dataset={dataset}")
    model_task, data_task = cfg.model.task, DATASETS[dataset]
    if model_task == data_task:  # a model that does the dataset's task (LLaVA follows the dataset)
        check_task(cfg.model, cfg.dataset)
        return
    with pytest.raises(SystemExit) as stop:
        train(cfg)
    assert stop.value.code == 2
    fits = ", ".join(m for m in MODELS if configured_task(m) == data_task)
    assert capsys.readouterr().err.strip() == (
        f"medft: error: model={model} does {model_task} but dataset={dataset} is a {data_task} dataset: "
        f"use a {data_task} model ({fits}) or leave model= out"
    )


def test_full_size_vqa_model_on_a_report_dataset_exits_2_through_the_cli(tmp_path):
    """blip_vqa (361M parameters, not in this machine's cache) is refused by its task, not by a failed load."""
    proc = subprocess.run(
        [sys.executable, "-m", "medft.cli", "train", "model=blip_vqa", "dataset=iu_xray", "dataset.root=/nonexistent",
         "+tune=layernorm", f"paths.log_dir={tmp_path}"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("medft: error:")]
    assert lines == ["medft: error: model=blip_vqa does vqa but dataset=iu_xray is a report dataset: "
                     "use a report model (blip_med_report, blip_report, blip_report_tiny) or leave model= out"]


def test_a_model_without_a_task_is_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"model mine states task=None: set task: vqa or task: report"):
        check_task({"name": "mine"}, {"name": "vqa_rad", "task": "vqa"})


@pytest.mark.parametrize("name", ["blip_tiny", "blip_report_tiny", "llava_tiny"])
def test_builders_return_the_model_complete(name):
    from tests.conftest import model_cfg

    net = build_model(_builder_cfg(name))
    assert isinstance(net, MedVLM)
    assert (net.name, net.pretrained, net.task) == (name, None, model_cfg(name)["task"])
    assert net.arch == model_cfg(name)["arch"]
    assert set(net.text_limits) <= {"question", "answer", "report"} and all(v > 0 for v in net.text_limits.values())
    assert net.uses_gradient_checkpointing is False


def _builder_cfg(name):
    from omegaconf import OmegaConf

    from tests.conftest import model_cfg

    target = yaml.safe_load((CONFIG_DIR / "model" / f"{name}.yaml").read_text())["_target_"]
    return OmegaConf.create({"_target_": target, **model_cfg(name)})


def test_rank_is_declared_and_refused_where_not_supported():
    from medft.models.blip import BlipVQA
    from medft.models.blip_report_gen import BlipReportGen
    from medft.models.image_text import ImageTextVLM

    assert BlipVQA.can_rank and not ImageTextVLM.can_rank and not BlipReportGen.can_rank
    net = build_model(_builder_cfg("llava_tiny"))
    with pytest.raises(ConfigError, match="ImageTextVLM cannot rank answers; use eval.closed=generate"):
        net.rank({}, ("yes", "no"))


def test_runs_from_before_the_rename_and_the_stated_task_still_load_as_data():
    """A run dir written before BlipReport became BlipReportGen, or before blip_vqa.yaml stated its task."""
    from medft.runs.trust import trusted_model_config

    old_report = {"_target_": "medft.models.blip_report.build_blip_report", "name": "blip_report_tiny", "task": "report"}
    assert trusted_model_config(old_report, "run")["_target_"] == "medft.models.blip_report_gen.build_blip_report_gen"
    old_vqa = {"_target_": "medft.models.blip.build_blip_vqa", "name": "blip_vqa", "pretrained": "/ckpt/blip"}
    assert trusted_model_config(old_vqa, "run")["task"] == "vqa"
    arch = {"components": {"vision": "vision_model"}}  # a run's arch is checked against the composed own config
    assert trusted_model_config({"name": "blip_tiny", "arch": arch}, "run")["arch"] == arch
