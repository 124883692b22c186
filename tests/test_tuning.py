"""The exact trainable set of every tune mode on the tiny BLIP, selected by module type."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medft.models.blip import build_blip_vqa
from medft.tuning import MODE_ORDER, apply_tuning, count_parameters, norm_kind, param_groups, summary_line
from medft.util.errors import ConfigError
from tests.conftest import model_cfg, tune_cfg

MODES = [m for m in MODE_ORDER if m != "prefix"]  # prefix (LLaVA only): tests/test_peft_modes.py


def tuned(mode: str, **tune_overrides):
    net = build_blip_vqa(**model_cfg())
    report = apply_tuning(net, tune_cfg(mode, **tune_overrides))
    return net, report


def trainable(net) -> dict[str, torch.Tensor]:
    return {n: p for n, p in net.model.named_parameters() if p.requires_grad}


def norm_param_names(model: nn.Module) -> set[str]:
    return {f"{m}.{p}" for m, mod in model.named_modules() if norm_kind(mod) for p, _ in mod.named_parameters(recurse=False)}


def test_layernorm_trains_exactly_the_norm_parameters():
    net, report = tuned("layernorm")
    norms = [m for m in net.model.modules() if isinstance(m, nn.LayerNorm)]
    assert set(trainable(net)) == norm_param_names(net.model)
    assert sum(p.numel() for p in trainable(net).values()) == sum(p.numel() for m in norms for p in m.parameters())
    # BLIP's BERT blocks hide LayerNorms inside attention.output and output: they are norms too
    assert any(".attention.output.LayerNorm." in n for n in trainable(net))
    assert any(n.startswith("vision_model.post_layernorm") for n in trainable(net))
    assert report.modules == {"layernorm": len(norms), "rmsnorm": 0}


@pytest.mark.parametrize("mode", ["ffn", "attention"])
def test_ffn_and_attention_contain_no_norm_parameter(mode):
    net, _ = tuned(mode)
    names = set(trainable(net))
    assert names and not names & norm_param_names(net.model)
    linear = {f"{m}.{p}" for m, mod in net.model.named_modules() if isinstance(mod, nn.Linear) for p, _ in mod.named_parameters()}
    assert names <= linear


def test_attention_covers_self_and_cross_attention_projections():
    names = set(trainable(tuned("attention")[0]))
    for part in ("self_attn.qkv", "self_attn.projection", "attention.self.query", "attention.self.key",
                 "attention.self.value", "attention.output.dense", "crossattention.self.key", "crossattention.output.dense"):
        assert any(part in n for n in names), part
    assert not any("intermediate" in n or ".mlp." in n or n.endswith("output.dense.weight") and "attention" not in n for n in names)


def test_ffn_covers_mlp_layers_only():
    names = set(trainable(tuned("ffn")[0]))
    for part in ("mlp.fc1", "mlp.fc2", "intermediate.dense", "layer.0.output.dense"):
        assert any(part in n for n in names), part
    assert not any("attention" in n or "self_attn" in n for n in names)


def test_full_frozen_bitfit():
    net, _ = tuned("full")
    counts = count_parameters(net.model, net.arch["components"])
    assert counts["trainable"] == counts["total"] == sum(p.numel() for p in net.model.parameters())
    net, _ = tuned("frozen")
    assert not trainable(net)
    net, _ = tuned("bitfit")
    assert trainable(net) and all(n.endswith("bias") for n in trainable(net))
    assert len(trainable(net)) == sum(1 for n, _ in net.model.named_parameters() if n.endswith("bias"))


def test_lora_trains_only_adapters_on_text_query_value():
    net, _ = tuned("lora")
    names = set(trainable(net))
    assert names and all("lora_" in n for n in names)
    assert all(("query" in n or "value" in n) for n in names)
    assert not any("vision_model" in n for n in names)
    counts = count_parameters(net.model, net.arch["components"])
    assert counts["components"]["vision"]["trainable"] == 0
    assert counts["components"]["text"]["trainable"] > 0 and counts["components"]["decoder"]["trainable"] > 0


def test_components_restrict_a_mode():
    net, _ = tuned("layernorm", components=["vision"])
    assert trainable(net) and all(n.startswith("vision_model.") for n in trainable(net))
    net, _ = tuned("lora", components=["decoder"])
    assert trainable(net) and all(".text_decoder." in n for n in trainable(net))


@pytest.mark.parametrize(
    "mode, overrides, message",
    [
        ("layernorm", {"components": ["audio"]}, "unknown component"),
        ("lora", {"target_modules": ["no_such_layer"]}, "matched no Linear layer"),
        ("layernorm", {"select": "everything"}, "tune.select='everything'"),
        ("lora", {"r": 0}, "tune.r=0"),
    ],
)
def test_a_mode_that_matches_nothing_is_an_error(mode, overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        tuned(mode, **overrides)


def test_no_weight_decay_on_norms_and_biases():
    net, _ = tuned("full")
    groups = param_groups(net.model, weight_decay=0.05)
    decay = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    for name, param in net.model.named_parameters():
        is_norm_or_bias = name in norm_param_names(net.model) or name.endswith("bias")
        assert (id(param) in decay) != is_norm_or_bias, name
    assert sum(len(g["params"]) for g in groups) == len(list(net.model.parameters()))


def test_optimizer_groups_hold_only_trainable_parameters():
    net, _ = tuned("layernorm")
    groups = param_groups(net.model, weight_decay=0.05)
    assert all(p.requires_grad for g in groups for p in g["params"])
    assert all(g["weight_decay"] == 0.0 for g in groups)  # norms only: nothing decays


def test_summary_line_has_peft_shape():
    net, _ = tuned("layernorm")
    line = summary_line(count_parameters(net.model, net.arch["components"]))
    n_norm = sum(p.numel() for n, p in net.model.named_parameters() if n in norm_param_names(net.model))
    total = sum(p.numel() for p in net.model.parameters())
    assert line == f"trainable params: {n_norm:,} || all params: {total:,} || trainable%: {100 * n_norm / total:.4f}"


@pytest.mark.parametrize("mode", [m for m in MODES if m != "frozen"])
def test_gradient_checkpointing_backpropagates_in_every_mode(mode):
    """Frozen embeddings + checkpointing once crashed BLIP (in-place add on a leaf requiring grad)."""
    from PIL import Image

    net = build_blip_vqa(**model_cfg(gradient_checkpointing=True))
    apply_tuning(net, tune_cfg(mode))
    net.model.train()
    records = [{"id": str(i), "question": "is there a lesion?", "answer": "yes", "answer_type": "CLOSED",
                "pil_image": Image.new("RGB", (64, 64), (i * 60, 0, 0))} for i in range(2)]
    loss = net.loss(net.collate(records))
    loss.backward()
    graded = {n for n, p in trainable(net).items() if p.grad is not None and p.grad.abs().sum() > 0}
    if mode in ("lora", "dora"):  # B starts at zero, so A gets no gradient in the first step (DoRA's magnitude does)
        assert graded == {n for n in trainable(net) if "lora_A" not in n}
    else:
        assert graded == set(trainable(net))


def test_ia3_scales_text_keys_values_and_the_ffn_outputs_input():
    """(IA)^3 on BLIP: key/value of the text towers' self- and cross-attention scale their output; the
    FFN output projections (vision mlp.fc2, text output.dense) their input. Not attention's output.dense."""
    net, report = tuned("ia3")
    names = set(trainable(net))
    assert names == set(report.trainable) and all(".ia3_l." in n for n in names)
    layers = {n.removeprefix("base_model.model.").split(".ia3_l.")[0]: p for n, p in trainable(net).items()}
    kv = {n for n in layers if n.endswith((".self.key", ".self.value"))}
    ffn = {n for n in layers if n.endswith(".mlp.fc2") or (n.endswith(".output.dense") and ".attention." not in n and ".crossattention." not in n)}
    assert kv | ffn == set(layers) and kv and ffn
    assert any(n.startswith("vision_model.") for n in ffn) and not any(n.startswith("vision_model.") for n in kv)
    assert any(".crossattention.self.key" in n for n in kv)
    modules = dict(net.model.named_modules())
    for name, vector in layers.items():
        layer = modules["base_model.model." + name]
        assert layer.is_feedforward == (name in ffn)
        assert vector.numel() == (layer.in_features if name in ffn else layer.out_features)


def test_dora_is_lora_with_a_magnitude_per_output():
    lora, _ = tuned("lora")
    dora, _ = tuned("dora")
    lora_names = set(trainable(lora))
    magnitudes = {n for n in trainable(dora) if "lora_magnitude_vector" in n}
    assert set(trainable(dora)) - magnitudes == lora_names and magnitudes
    n_out = sum(p.numel() for n, p in trainable(lora).items() if "lora_B" in n) // 8  # r = 8
    assert sum(trainable(dora)[n].numel() for n in magnitudes) == n_out


@pytest.mark.parametrize("half", ["weight", "bias"])
def test_norm_params_trains_one_half_of_every_norm(half):
    both = set(trainable(tuned("layernorm")[0]))
    net, report = tuned("layernorm", norm_params=half)
    names = set(trainable(net))
    assert names == {n for n in both if n.endswith("." + half)} and names
    assert report.modules == {"layernorm": 20, "rmsnorm": 0}


def test_prefix_on_blip_is_refused_naming_why_and_what_instead():
    from medft.tuning import UnsupportedMode

    with pytest.raises(UnsupportedMode, match=r"tune=prefix: .*past_key_values.*blip_tiny.*use lora, dora, ia3 or layernorm instead"):
        tuned("prefix")


@pytest.mark.parametrize(("mode", "scale"), [("ia3", ".ia3_l."), ("dora", ".lora_magnitude_vector.")])
def test_peft_scales_get_no_weight_decay(mode, scale):
    """IA3 vectors (start at 1) and DoRA magnitudes scale like norm gains: no decay toward 0."""
    net, _ = tuned(mode)
    groups = param_groups(net.model, weight_decay=0.05)
    plain = {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    for name, param in trainable(net).items():
        assert (id(param) in plain) == (scale in name), name
    assert sum(len(g["params"]) for g in groups) == len(trainable(net))


def test_one_mode_order_covers_every_shipped_mode_and_drives_make_sweep():
    """MODE_ORDER is the one list of tune modes: every configs/tune/ file once, and what `make sweep` runs."""
    import subprocess
    import sys
    from pathlib import Path

    from medft.config.search import CONFIG_DIR, available

    assert sorted(MODE_ORDER) == sorted(available("tune")) and len(set(MODE_ORDER)) == len(MODE_ORDER)
    dry = subprocess.run(["make", "-n", "sweep", f"BIN={Path(sys.executable).parent}"], cwd=Path(__file__).resolve().parents[1],
                         capture_output=True, text=True, check=True).stdout
    swept = next(line for line in dry.splitlines() if "tune=" in line).split("tune=")[1].split()[0]
    assert swept.split(",") == [m for m in MODE_ORDER if m != "prefix"]


def test_medft_params_and_report_list_modes_in_mode_order():
    from medft.commands.params import mode_names
    from medft.commands.report import _mode_key

    assert mode_names(None) == list(MODE_ORDER)
    assert sorted(reversed(MODE_ORDER), key=_mode_key) == list(MODE_ORDER)
