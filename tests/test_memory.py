"""Memory per mode (``medft params``' ``memory_gib``) and the quantized frozen base (``model.quantization``):
figures equal hand-computed bytes; quantization is refused, in one line, where it cannot run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from medft_testing import quantize_here
from test_params_cmd import REPO, counts
from torch import nn

from medft.commands.params import GIB, memory_bytes
from medft.models.quantization import bitsandbytes_config, check_quantization, quantizable_weights, quantized_bytes
from medft.util.errors import ConfigError

ONE_THREAD = {"OMP_NUM_THREADS": "1"}


class Tiny(nn.Module):
    """Linear 8->4 (with bias), LayerNorm 4, Linear 4->2 (no bias): 36 + 8 + 8 = 52 parameters."""

    def __init__(self, dtype=torch.float32):
        super().__init__()
        self.up, self.norm, self.down = nn.Linear(8, 4), nn.LayerNorm(4), nn.Linear(4, 2, bias=False)
        self.to(dtype)


def test_memory_of_a_tiny_model_is_the_hand_computed_bytes():
    net = Tiny().requires_grad_(False)
    net.norm.requires_grad_(True)  # layernorm: 8 values train
    assert memory_bytes(net) == {"weights": 52 * 4, "gradients": 8 * 4, "optimizer": 2 * 8 * 4,
                                 "total": 52 * 4 + 8 * 4 + 16 * 4}
    half = Tiny(torch.bfloat16).requires_grad_(False)
    half.norm.requires_grad_(True)
    assert memory_bytes(half) == {"weights": 104, "gradients": 16, "optimizer": 32, "total": 152}
    # nf4: the two frozen Linear weights (32 and 8 values) at 4 bits + one 8-bit scale per 64 + one fp32 per 256 blocks
    quantized = {id(half.up.weight): 4, id(half.down.weight): 2}
    nf4 = memory_bytes(half, "nf4", quantized)
    assert nf4["weights"] == (16 + 1 + 4) + (4 + 1 + 4) + (4 + 8) * 2  # + bias 4 and the norm's 8, in bf16
    assert nf4["gradients"] == 16 and nf4["optimizer"] == 32
    int8 = memory_bytes(half, "int8", quantized)
    assert int8["weights"] == (32 + 4 * 4) + (8 + 4 * 2) + (4 + 8) * 2  # a byte a weight + an fp32 scale per row
    half.up.requires_grad_(True)  # a trained Linear is never counted as quantized
    assert memory_bytes(half, "nf4", quantized)["weights"] == (36 + 8) * 2 + (4 + 1 + 4)  # up and norm in bf16


def test_quantized_storage_per_weight():
    n = 4096 * 4096
    assert quantized_bytes("nf4", n, 4096) == n // 2 + n // 64 + 4 * (n // 64 // 256)  # 0.5161 bytes a weight
    assert quantized_bytes("int8", n, 4096) == n + 4 * 4096
    with pytest.raises(ConfigError, match="model.quantization='fp4' is not known"):
        quantized_bytes("fp4", n, 4096)


def test_params_memory_follows_the_counts_on_llava_tiny():
    """float32: 4 bytes a parameter; AdamW's moments 8 bytes a trained one; peft's LoRA weights stay float32."""
    result = counts("llava_tiny", "modes=[frozen,layernorm,lora,full]")
    total, modes = result["total"], result["modes"]
    for mode in ("frozen", "layernorm", "full"):
        trained = modes[mode]["trainable"]
        want = {"weights": 4 * total, "gradients": 4 * trained, "optimizer": 8 * trained, "total": 4 * total + 12 * trained}
        assert modes[mode]["memory_gib"] == {k: v / GIB for k, v in want.items()}
    half = counts("llava_tiny", "modes=[layernorm,lora]", "model.dtype=bfloat16")["modes"]
    lora, norms = modes["lora"]["trainable"], modes["layernorm"]["trainable"]
    assert half["layernorm"]["memory_gib"]["weights"] == 2 * total / GIB  # every parameter in bf16
    assert half["layernorm"]["memory_gib"]["optimizer"] == 2 * 2 * norms / GIB
    assert half["lora"]["memory_gib"]["weights"] == (2 * total + 4 * lora) / GIB  # + peft's fp32 adapters
    assert half["lora"]["memory_gib"]["gradients"] == 4 * lora / GIB


def test_quantizable_weights_follow_transformers_rule():
    from test_models import build

    net = build("llava_tiny")
    quantized = quantizable_weights(net.model)
    linears = {id(m.weight): m.out_features for n, m in net.model.named_modules() if isinstance(m, nn.Linear)}
    assert id(net.model.lm_head.weight) not in quantized  # transformers keeps the output embeddings
    assert quantized == {k: v for k, v in linears.items() if k != id(net.model.lm_head.weight)}


def test_nf4_memory_of_medgemma_4b_refuses_the_modes_that_train_linear_weights():
    result = counts("medgemma_4b", "modes=[layernorm,lora,full]", "model.quantization=nf4")
    plain = counts("medgemma_4b", "modes=[layernorm]")
    assert result["quantization"] == "nf4" and result["modes"]["full"]["memory_gib"] is None
    assert "would train the quantized weights themselves" in result["modes"]["full"]["refused"]
    nf4, bf16 = result["modes"]["layernorm"]["memory_gib"], plain["modes"]["layernorm"]["memory_gib"]
    assert nf4["gradients"] == bf16["gradients"] and nf4["weights"] < bf16["weights"] / 2


# -- model.quantization: refused where it cannot run --------------------------------------------------------

LLAVA = {"_target_": "medft.models.llava.build_llava", "name": "llava_med", "pretrained": "/ckpt/llava-med"}


def test_quantization_is_refused_in_one_line_where_it_cannot_run():
    cases = [
        ({**LLAVA, "quantization": "fp4"}, None, True, r"model.quantization='fp4' is not known: use null .*, nf4 or int8$"),
        ({"_target_": "medft.models.blip.build_blip_vqa", "name": "blip_vqa", "quantization": "nf4"}, None, True,
         r"only the image-text-to-text models .* not model=blip_vqa: leave model.quantization out$"),
        ({**LLAVA, "quantization": "nf4"}, {"name": "full", "select": "all"}, True,
         r"^tune=full with model.quantization=nf4 would train the quantized weights themselves"),
        ({**LLAVA, "quantization": "int8"}, {"name": "ffn", "select": "ffn"}, True, r"^tune=ffn with model.quantization=int8"),
        ({**LLAVA, "quantization": "nf4", "pretrained": None}, None, True, r"builds random ones .*model.pretrained"),
        ({**LLAVA, "quantization": "nf4"}, {"name": "layernorm", "select": "norm"}, False,
         r"^model.quantization=nf4 needs a CUDA GPU and bitsandbytes \(pip install 'medft\[quantization\]'\): no CUDA GPU"),
    ]
    for model, tune, cuda, pattern in cases:
        with pytest.raises(ConfigError, match=pattern) as err:
            check_quantization(model, tune, cuda=cuda)
        assert "\n" not in str(err.value)
    check_quantization({**LLAVA, "quantization": None}, {"name": "full", "select": "all"}, cuda=False)  # nothing asked


def test_bitsandbytes_config_is_qlora_nf4_or_int8():
    nf4 = bitsandbytes_config("nf4", torch.bfloat16)
    assert nf4.load_in_4bit and nf4.bnb_4bit_quant_type == "nf4" and nf4.bnb_4bit_use_double_quant
    assert nf4.bnb_4bit_compute_dtype == torch.bfloat16
    assert bitsandbytes_config("int8", torch.bfloat16).load_in_8bit


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_train_with_nf4_without_cuda_exits_2_before_building(tmp_path):
    env = {**os.environ, **ONE_THREAD, "HF_HUB_OFFLINE": "1", "MEDFT_LOG_DIR": str(tmp_path / "logs")}
    proc = subprocess.run(
        [sys.executable, "-m", "medft.cli", "train", "model=medgemma_4b", "+tune=layernorm", "model.quantization=nf4",
         "dataset.root=/nonexistent"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("medft: error:")]
    assert errors == ["medft: error: model.quantization=nf4 needs a CUDA GPU and bitsandbytes "
                      "(pip install 'medft[quantization]'): no CUDA GPU on this machine; leave model.quantization out"]


def test_quantization_on_blip_through_medft_params_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "medft.cli", "params", "model=blip_tiny", "+model.quantization=nf4"],
                          cwd=REPO, env={**os.environ, **ONE_THREAD}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["medft: error: model.quantization=nf4: only the image-text-to-text "
                                                "models (LLaVA, MedGemma, Qwen-VL) load quantized, not model=blip_tiny: "
                                                "leave model.quantization out"]


@pytest.mark.parametrize("method", ["nf4", "int8"])
def test_one_quantized_layernorm_step_changes_only_norm_weights(tmp_path, monkeypatch, method):
    """llava_tiny saved to a directory, loaded back quantized (on the GPU, or through bitsandbytes' CPU
    backend), one layernorm AdamW step: the norms move, every quantized Linear stays byte for byte."""
    device = quantize_here(monkeypatch)
    from test_models import build, image, save_checkpoint

    from medft.tuning import apply_tuning, trainable_parameters

    ckpt = save_checkpoint(build("llava_tiny"), tmp_path / "ckpt")
    net = build("llava_tiny", f"model.pretrained={ckpt}", f"model.quantization={method}", "model.dtype=bfloat16")
    quantized = {n for n, m in net.model.named_modules() if type(m).__name__ in ("Linear4bit", "Linear8bitLt")}
    assert quantized and "lm_head" not in quantized  # transformers keeps the output embeddings unquantized
    apply_tuning(net, {"name": "layernorm", "select": "norm"})
    before = {n: p.detach().clone() for n, p in net.model.named_parameters()}
    batch = net.collate([{"id": "0", "question": "is there a lesion?", "answer": "yes", "answer_type": "CLOSED",
                          "pil_image": image()}])
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    optimizer = torch.optim.AdamW(trainable_parameters(net.model).values(), lr=1e-2)
    net.loss(batch).backward()
    optimizer.step()
    changed = {n for n, p in net.model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed and changed <= set(trainable_parameters(net.model))
    assert all("norm" in n for n in changed)
    assert not any(n.rsplit(".", 1)[0] in quantized for n in changed)


def test_quantized_storage_is_the_estimate(tmp_path, monkeypatch):
    """What bitsandbytes stores for llava_tiny (packed weights, their 8-bit block scales and the float32
    scales of those, int8's per-row scales; every other parameter at bf16) equals ``medft params``'
    ``weights`` estimate for the same model, to the byte, in nf4 and int8."""
    quantize_here(monkeypatch)
    from test_models import build, save_checkpoint

    ckpt = save_checkpoint(build("llava_tiny"), tmp_path / "ckpt")
    for method in ("nf4", "int8"):
        net = build("llava_tiny", f"model.pretrained={ckpt}", f"model.quantization={method}", "model.dtype=bfloat16")
        stored = sum(stored_bytes(p) for p in net.model.parameters())
        estimate = counts("llava_tiny", "modes=[frozen]", f"model.pretrained={ckpt}", f"model.quantization={method}",
                          "model.dtype=bfloat16")
        assert stored == estimate["modes"]["frozen"]["memory_gib"]["weights"] * GIB
        plain = counts("llava_tiny", "modes=[frozen]", "model.dtype=bfloat16")
        assert stored < plain["modes"]["frozen"]["memory_gib"]["weights"] * GIB


def stored_bytes(param) -> int:
    """Bytes bitsandbytes keeps for ``param``: its data, plus an NF4 weight's block scales (8-bit, double
    quantized) and their float32 scales, or an int8 weight's float32 scale per row. The per-tensor
    constants (code books, offsets) are left out, as the estimate leaves them out."""
    size = param.numel() * param.element_size()
    state = getattr(param, "quant_state", None)
    if state is not None:
        assert state.nested and state.blocksize == 64  # double quantization, QLoRA's block of 64
        size += state.absmax.numel() * state.absmax.element_size() + state.state2.absmax.numel() * 4
    if getattr(param, "SCB", None) is not None:
        size += param.SCB.numel() * param.SCB.element_size()
    return size


def test_from_pretrained_gets_the_bitsandbytes_config(tmp_path, monkeypatch):
    """The wiring without a GPU: load_or_build hands from_pretrained the BitsAndBytesConfig and the CUDA device."""
    from medft.models.loading import load_or_build

    seen = {}

    class Model(nn.Module):
        @classmethod
        def from_pretrained(cls, source, **kwargs):
            seen.update(kwargs, source=source)
            return cls()

    class Processor:
        @classmethod
        def from_pretrained(cls, source, **kwargs):
            return cls()

    monkeypatch.setattr("medft.models.quantization.quantization_device", lambda: 0)
    model, _ = load_or_build(Model, Processor, str(tmp_path), None, None, None, dtype="bfloat16", quantization="nf4")
    config = seen["quantization_config"]
    assert seen["source"] == str(tmp_path) and seen["device_map"] == {"": 0} and seen["dtype"] == torch.bfloat16
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_compute_dtype == torch.bfloat16
    seen.clear()
    load_or_build(Model, Processor, str(tmp_path), None, None, None, dtype="bfloat16")
    assert "quantization_config" not in seen and "device_map" not in seen  # unquantized: as before


def test_build_model_refuses_quantization_before_building(tmp_path):
    """medft eval / ask / export build through build_model too: the check runs there, before any builder."""
    from test_models import build

    with pytest.raises(ConfigError, match=r"^model.quantization=nf4 quantizes pretrained weights as they load"):
        build("llava_tiny", "model.quantization=nf4")
    with pytest.raises(ConfigError, match=r"^model.quantization=int8 needs a CUDA GPU|^model.quantization=int8 needs bitsandbytes"):
        build("llava_tiny", f"model.pretrained={tmp_path}", "model.quantization=int8")
