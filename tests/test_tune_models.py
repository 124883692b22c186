"""Every (model, tune mode) pair trains through the Lightning module, and what is reported as
trainable is exactly what receives a gradient."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch
from test_models import build, vqa_records

from medft.commands.params import mode_names, tune_config
from medft.data.datamodule import MedDataModule
from medft.data.sources import demo
from medft.models.base import model_config
from medft.training.module import MedVLMModule
from medft.tuning import apply_tuning, count_parameters, unused_modules
from medft.util.errors import ConfigError

MODELS = ("blip_tiny", "llava_tiny", "medgemma_tiny", "paligemma_tiny", "qwen2_vl_tiny", "qwen2_5_vl_tiny", "smolvlm_tiny")
MODES = mode_names(None)  # every mode in configs/tune/


def takes(model: str, mode: str) -> bool:
    """Whether ``model`` can have ``mode``: prefix tuning needs a language model to prefix (``arch.prefix``)."""
    arch = model_config(model)["arch"]
    return mode != "prefix" or bool(arch.get("prefix"))


CASES = [(model, mode) for model in MODELS for mode in MODES if takes(model, mode)]


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "demo"
    return demo(str(root), val_fraction=0.0, n_train_images=4, n_test_images=1)


class GradientRecorder(L.Callback):
    """Names of the parameters that got a non-zero gradient in any backward pass."""

    def __init__(self) -> None:
        self.nonzero: set[str] = set()

    def on_after_backward(self, trainer, module) -> None:
        for name, param in module.net.model.named_parameters():
            if param.grad is not None and bool(param.grad.abs().sum() > 0):
                self.nonzero.add(name)


@pytest.mark.parametrize(("model", "mode"), CASES)
def test_every_mode_trains_exactly_what_it_reports(model, mode, splits):
    torch.manual_seed(0)
    net = build(model)
    report = apply_tuning(net, tune_config(mode, None, None))
    before = {n: p.detach().clone() for n, p in net.model.named_parameters()}
    trainable = {n for n, p in net.model.named_parameters() if p.requires_grad}
    assert trainable == set(report.trainable)

    recorder = GradientRecorder()
    module = MedVLMModule(net, optim=partial(torch.optim.AdamW, lr=1e-2, weight_decay=0.0), tune_name=mode)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=2, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[recorder],
    )
    trainer.fit(module, datamodule=MedDataModule(splits, net.collate, batch_size=4))

    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    # LoRA's A matrices get their first gradient in step 2, once B is no longer zero
    assert recorder.nonzero == trainable, "trainable parameters without a gradient, or frozen ones with one"
    changed = {n for n, p in net.model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed == trainable
    assert trainer.global_step == 2  # frozen too: the loss runs, nothing is updated


def test_llava_unused_vision_modules_are_exactly_those_without_gradient():
    """Without the freeze, `full` would report the last vision layer and post_layernorm as trained."""
    net = build("llava_tiny")
    unused = unused_modules(net.model, net.arch)
    assert unused == ["model.vision_tower.encoder.layers.1", "model.vision_tower.post_layernorm"]
    net.model.requires_grad_(True)  # what `full` would do with no knowledge of the forward pass
    net.loss(net.collate(vqa_records())).backward()
    no_grad = {n for n, p in net.model.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)}
    expected = {n for n, _ in net.model.named_parameters() if any(n.startswith(u + ".") for u in unused)}
    assert no_grad == expected and expected


def test_norm_counts_report_layernorm_and_rmsnorm_separately():
    llava = build("llava_tiny")
    report = apply_tuning(llava, tune_config("layernorm", None, None))
    # CLIP: pre_layrnorm + 2 in layer 0 (layer 1 and post_layernorm unused); Mistral: 2 per layer + final norm
    assert report.modules == {"layernorm": 3, "rmsnorm": 5}
    blip = build("blip_tiny")
    assert apply_tuning(blip, tune_config("layernorm", None, None)).modules == {"layernorm": 20, "rmsnorm": 0}


def test_llava_lora_defaults_to_the_language_model_qkvo():
    net = build("llava_tiny")
    report = apply_tuning(net, tune_config("lora", None, None))
    wrapped = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in report.trainable}
    assert wrapped == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert all(".language_model." in n for n in report.trainable)
    assert len(report.trainable) == 2 * 4 * 2  # layers x projections x (A, B)


def test_lora_on_the_vision_tower_skips_the_unused_layer():
    net = build("llava_tiny")
    tune = dict(tune_config("lora", ["vision"], None), target_modules=["q_proj", "v_proj"])
    report = apply_tuning(net, tune)
    assert report.trainable and all(".vision_tower.encoder.layers.0." in n for n in report.trainable)
    with pytest.raises(ConfigError, match="matched no Linear layer"):
        apply_tuning(build("llava_tiny"), tune_config("lora", ["vision"], None))  # default targets: language only


def test_llava_components_split_the_whole_model():
    net = build("llava_tiny")
    counts = count_parameters(net.model, net.arch["components"])
    assert sum(c["total"] for c in counts["components"].values()) == counts["total"]
    assert all(c["total"] > 0 for c in counts["components"].values())
    apply_tuning(net, tune_config("full", ["projector"], None))
    counts = count_parameters(net.model, net.arch["components"])
    assert counts["trainable"] == counts["components"]["projector"]["total"]


@pytest.mark.parametrize("mode", MODES)
def test_llava_report_generation_trains_in_every_mode(mode):
    """Reports: the same model class with task=report; two optimizer steps, same gradient check."""
    from test_models import image

    torch.manual_seed(0)
    net = build("llava_tiny", "model.task=report", "model.max_answer_len=24")
    report = apply_tuning(net, tune_config(mode, None, None))
    records = [
        {"id": "a", "report": "no acute cardiopulmonary abnormality.", "pil_image": image(0)},
        {"id": "b", "report": "small left pleural effusion.", "pil_image": image(1)},
    ]
    batch = net.collate(records)
    trainable = {n: p for n, p in net.model.named_parameters() if p.requires_grad}
    assert set(trainable) == set(report.trainable)
    optimizer = torch.optim.AdamW(trainable.values(), lr=1e-2) if trainable else None
    nonzero = set()
    for _ in range(2):
        loss = net.loss(batch)
        assert torch.isfinite(loss)
        if optimizer is None:
            break
        loss.backward()
        nonzero |= {n for n, p in trainable.items() if p.grad is not None and bool(p.grad.abs().sum() > 0)}
        optimizer.step()
        optimizer.zero_grad()
    assert nonzero == set(trainable)


def test_arch_never_trained_is_frozen_in_every_mode():
    net = build("blip_tiny")
    net.arch = dict(net.arch, never_trained=["text_decoder.cls"])
    report = apply_tuning(net, tune_config("full", None, None))
    frozen = {n for n, p in net.model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith("text_decoder.cls.") for n in frozen)
    assert report.unused == ["text_decoder.cls"]
