"""The model contract: what the rest of medft may use of a Med-VLM.

Every model (``BlipVQA``, ``BlipReportGen``, ``ImageTextVLM``) is a :class:`MedVLM`. Outside this package
medft reads a model only through these names, never by probing it:

* ``task`` (``vqa`` | ``report``), ``name`` (the model config's name), ``pretrained`` (hub id,
  directory, ``embedded`` or None for random weights), ``arch`` (component prefixes and module
  types from the model config), ``model`` (the Hugging Face model; a peft model once tuned),
  ``processor`` / ``tokenizer``;
* ``text_limits`` (record field -> the maximum token length ``collate`` keeps), ``truncated``;
* ``collate(records)``, ``loss(batch)``, ``generate(batch, **kwargs)``; ``rank(batch, candidates)``
  where ``can_rank`` (otherwise one line saying it cannot);
* ``check_dataset(dataset_cfg)`` (the task check), ``uses_gradient_checkpointing``,
  ``vision_feature_layer``, ``merged_model()`` / ``base_model()`` (for export).

:func:`check_task` is the one model/dataset task check. It reads the model *config* (its ``task:``;
every file in ``configs/model/`` states one), so train, eval, export, ask and pretrain call it before
any weights load; ``MedVLM.check_dataset`` is the same check for a built model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from medft.config.search import CONFIG_DIR, available, find_config, use_search_path
from medft.util.errors import ConfigError

TASKS = ("vqa", "report")
# builders renamed since runs were written: a run dir's model._target_ -> medft's own today
FORMER_TARGETS = {
    "medft.models.blip_report.build_blip_report": "medft.models.blip_report_gen.build_blip_report_gen",
    "medft.models.llava.build_llava": "medft.models.image_text.build_image_text",  # LLaVA joined the family
}


class MedVLM(nn.Module):
    """A Med-VLM: a Hugging Face model, its processor and what medft needs to train and score it.

    Subclasses set ``tasks`` (what they can do), ``does`` (that, in words, for the one-line refusal)
    and implement ``collate``, ``loss``, ``generate`` and ``text_limits``; ``can_rank`` ones ``rank``.
    Their constructors take the model, processor and arch, their own settings, and pass ``name``,
    ``pretrained`` and ``task`` (default: the first of ``tasks``) on to this one.
    """

    tasks: tuple[str, ...] = TASKS
    does = "answers questions (task vqa) or writes reports (task report)"
    can_rank = False  # eval.closed=rank: score the candidate answers instead of generating

    def __init__(
        self, model: nn.Module, processor: Any, arch: dict[str, Any], *, name: str, pretrained: str | None = None,
        task: str | None = None,
    ) -> None:
        super().__init__()
        task = task or self.tasks[0]
        self.check_can_do(task, name)
        self.model = model
        self.processor = processor
        self.arch = dict(arch)
        self.name = name
        self.pretrained = pretrained
        self.pretrained_id: dict[str, Any] = {}  # which pretrained weights, where a builder knows (metrics.json pretrained/*)
        self.pretrained_dir: Path | None = None  # pretrained: embedded: the cached checkpoint dir it was loaded from
        self.task = task
        self.truncated = 0  # texts cut to the maximum length so far

    @classmethod
    def check_can_do(cls, task: str, name: str) -> None:
        """``task`` is one this class does (builders call it before any weights load)."""
        if task not in TASKS:
            raise ConfigError(f"model.task={task!r} is not known; use one of {list(TASKS)}")
        if task not in cls.tasks:
            raise ConfigError(f"model.task={task!r}: {name} {cls.does}")

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    # -- what every model implements ------------------------------------------------------------
    @property
    def text_limits(self) -> dict[str, int]:
        """Record field -> the maximum token length ``collate`` keeps (longer texts are truncated)."""
        raise NotImplementedError

    def collate(self, records: list[dict]) -> dict[str, Any]:
        """Records (with a PIL ``pil_image``) -> model inputs plus ``meta`` (what scoring reads)."""
        raise NotImplementedError

    def loss(self, batch: dict[str, Any]) -> torch.Tensor:
        raise NotImplementedError

    def generate(self, batch: dict[str, Any], **generate_kwargs: Any) -> list[str]:
        """One answer (or report) per sample of the batch, as text."""
        raise NotImplementedError

    def rank(self, batch: dict[str, Any], candidates: tuple[str, ...] = ("yes", "no")) -> list[str]:
        """Per sample, the most likely of ``candidates`` (only where ``can_rank``)."""
        raise ConfigError(f"eval.closed=rank: {type(self).__name__} cannot rank answers; use eval.closed=generate")

    # -- checks and facts the rest of medft asks for ------------------------------------------
    def check_dataset(self, dataset_cfg: Any) -> None:
        """The dataset's task is this model's (the same check as :func:`check_task`)."""
        check_task({"name": self.name, "task": self.task}, dataset_cfg)

    @property
    def uses_gradient_checkpointing(self) -> bool:
        return any(getattr(m, "gradient_checkpointing", False) for m in self.model.modules())

    @property
    def vision_feature_layer(self) -> int | list[int] | None:
        return vision_feature_layer(self.model)

    def merged_model(self) -> nn.Module:
        """The Hugging Face model with any LoRA weights merged in (for a complete export)."""
        return self.model.merge_and_unload() if hasattr(self.model, "merge_and_unload") else self.model

    def base_model(self) -> nn.Module:
        """The Hugging Face model under any peft wrapper."""
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model


class Skeleton(MedVLM):
    """A model's architecture only (e.g. on the meta device, from ``config.json``): enough to count
    parameters and apply tune modes (``medft params``), not to batch, train or generate."""

    def __init__(self, model: nn.Module, arch: dict[str, Any], *, name: str = "", pretrained: str | None = None,
                 task: str = "vqa") -> None:
        super().__init__(model, None, arch, name=name, pretrained=pretrained, task=task)


def vision_feature_layer(model: nn.Module) -> int | list[int] | None:
    """The vision hidden state the language side reads (LLaVA: ``config.vision_feature_layer``), else None."""
    return getattr(getattr(model, "config", None), "vision_feature_layer", None)


def is_prompt_learning(model: nn.Module) -> bool:
    """True if ``model`` is a peft prompt-learning model (``tune=prefix``): its base model and prompt
    encoder sit beside each other rather than one inside the other."""
    config = getattr(model, "active_peft_config", None)
    return config is not None and bool(config.is_prompt_learning)


def model_config(name: str) -> dict[str, Any]:
    """``configs/model/<name>.yaml`` as Hydra composes it (its defaults merged: the family's ``arch``
    from ``configs/model/arch/``, a parent model config), unresolved."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    if GlobalHydra.instance().is_initialized():  # inside a medft command: its search path (the user's dirs, CONFIG_DIR)
        cfg = compose(config_name=f"model/{name}")
    else:
        use_search_path()
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(config_name=f"model/{name}")
    return OmegaConf.to_container(cfg.model, resolve=False)


def configured_task(name: str) -> str | None:
    """The ``task:`` written in ``configs/model/<name>.yaml`` (None when it follows the dataset)."""
    import yaml

    try:
        task = (yaml.safe_load(find_config("model", f"{name}.yaml").read_text()) or {}).get("task")
    except (AttributeError, OSError, yaml.YAMLError):  # AttributeError: no such config
        return None
    return task if task in TASKS else None


def check_task(model_cfg: Any, dataset_cfg: Any, run: str | None = None) -> None:
    """The one model/dataset task check: the model config's ``task`` must be the dataset's.

    Reads configs only (no weights): call it before building the model. ``run`` names the trained run
    being evaluated (the fix is then another dataset, not another model).
    """
    name = model_cfg.get("name") or "?"
    model_task = model_cfg.get("task")
    if model_task not in TASKS:
        raise ConfigError(
            f"model {name} states task={model_task!r}: set task: vqa or task: report in its config (configs/model/{name}.yaml)"
        )
    data_task = dataset_cfg.get("task", "vqa")
    if model_task == data_task:
        return
    said = f"model={name} does {model_task} but dataset={dataset_cfg.get('name', '?')} is a {data_task} dataset: "
    if run is not None:
        raise ConfigError(f"run {run}: {said}evaluate it on a {model_task} dataset")
    fits = [m for m in available("model") if configured_task(m) == data_task]
    raise ConfigError(said + f"use a {data_task} model ({', '.join(fits) or 'none installed'}) or leave model= out")
