"""The dataset's task picks the model: report datasets default to the captioning BLIP; mismatches are one line."""

import pytest
from hydra import compose, initialize_config_dir

from medft.config.overrides import normalize_overrides
from medft.config.resolvers import register_resolvers
from medft.config.search import CONFIG_DIR
from medft.config.validate import validate
from medft.util.errors import ConfigError


def train_cfg(*overrides):
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", normalize_overrides(["+tune=layernorm", "dataset.root=/data", *overrides]))


@pytest.mark.parametrize("dataset, model, monitor, tokens", [
    ("vqa_rad", "blip_tiny", "val/acc", 8),
    ("slake", "blip_tiny", "val/acc", 8),
    ("path_vqa", "blip_tiny", "val/acc", 8),
    ("iu_xray", "blip_report_tiny", "val/bleu_4", 60),
    ("mimic_cxr", "blip_report_tiny", "val/bleu_4", 100),
])
def test_dataset_picks_model_and_metric(dataset, model, monitor, tokens):
    cfg = train_cfg(f"dataset={dataset}")
    validate(cfg)
    assert (cfg.model.name, cfg.model.task) == (model, cfg.dataset.task)
    assert cfg.optimized_metric == monitor and cfg.callbacks.model_checkpoint.monitor == monitor
    assert cfg.eval.generate.max_new_tokens == tokens


def test_vqa_model_on_report_dataset_is_one_line():
    with pytest.raises(ConfigError) as err:
        validate(train_cfg("model=blip_tiny", "dataset=iu_xray"))
    assert str(err.value) == (
        "model=blip_tiny does vqa but dataset=iu_xray is a report dataset: "
        "use a report model (blip_med_report, blip_report, blip_report_tiny) or leave model= out"
    )
    with pytest.raises(ConfigError, match="model=blip_report_tiny does report but dataset=slake is a vqa dataset"):
        validate(train_cfg("dataset=slake", "model=blip_report_tiny"))
