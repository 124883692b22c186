"""The Med-VLMs. ``build_model(cfg.model)`` turns a model config into a :class:`MedVLM` (the model
contract, ``medft/models/base.py``); :func:`check_task` is the one model/dataset task check."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from medft.models.base import MedVLM, check_task, configured_task
from medft.util.errors import ConfigError

__all__ = ["MedVLM", "NOT_BUILDER_ARGS", "build_model", "check_task", "configured_task"]

# Model-config keys that other configs read (optim.lr = tune.lr * model.lr_scale, or the tune's
# lr_key entry for the embedded pretrained model; eval.protocol's default), not the builder.
# embedded_dir / pretrain_seed / recipe: where, which draw and which recipe of medft's own pretrained model (``pretrained: embedded``,
# resolved by medft.training.pipeline.build_net before the builder runs).
NOT_BUILDER_ARGS = ("lr_scale", "eval_protocol", "lr_key", "embedded_dir", "pretrain_seed", "recipe")


def build_model(cfg: DictConfig) -> MedVLM:
    """Instantiate the model config's ``_target_`` builder with its own keys, minus the shared ones.
    ``model.quantization`` that cannot run here is refused first (:mod:`medft.models.quantization`)."""
    from medft.models.quantization import check_quantization

    check_quantization(cfg)
    if cfg.get("pretrained") == "embedded":
        raise ConfigError("model.pretrained=embedded is built on first use by medft.training.pipeline.build_net: "
                          "build the model through it (or give model.pretrained a checkpoint directory)")
    node = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in NOT_BUILDER_ARGS}
    return hydra.utils.instantiate(node, _convert_="all")
