"""A 4-bit or 8-bit frozen base: ``model.quantization: null | nf4 | int8`` (bitsandbytes through
transformers' ``BitsAndBytesConfig``), QLoRA's recipe for fitting a 7B Med-VLM on one 24 GB GPU.

    medft train model=medgemma_4b +tune=layernorm trainer=gpu model.quantization=nf4

``from_pretrained`` stores the frozen ``nn.Linear`` weights in 4 bits (NF4, double-quantized scales)
or 8 bits (LLM.int8); everything else (norms, biases, embeddings, the LM head, which transformers
leaves out) stays in ``model.dtype``, and peft's LoRA / DoRA / IA3 weights are float32. So every
mode that trains a slice works on it; ``full``, ``ffn`` and ``attention`` would train the quantized
weights themselves and are refused. :func:`check_quantization` refuses, in one line and before any
model is built, what cannot run; :func:`bitsandbytes_config` is what ``from_pretrained`` gets.

:func:`quantized_bytes` is the storage a quantized weight takes (``medft params`` memory estimates):

* ``nf4``: 4 bits a weight, plus one scale (absmax) per block of 64 weights, itself quantized to
  8 bits ("double quantization") with one float32 scale per 256 blocks:
  ``n/2 + n/64 + 4 * n/(64*256)`` bytes, about 0.516 bytes a weight. bitsandbytes also keeps a few
  small per-tensor constants (its 256-entry code book, the NF4 table: about 1.1 KB a tensor), left out.
* ``int8``: one byte a weight plus one float32 scale per output row: ``n + 4 * rows`` bytes.
"""

from __future__ import annotations

import math
from typing import Any

from medft.util.errors import ConfigError

METHODS = ("nf4", "int8")
# The builder of the image-text-to-text family (and its name before LLaVA joined the family), which loads
# through from_pretrained and can take a BitsAndBytesConfig.
QUANTIZABLE_BUILDERS = ("medft.models.llava.build_llava", "medft.models.image_text.build_image_text")
# Modes whose trained parameters would be the quantized Linear weights themselves.
TRAINS_LINEAR_WEIGHTS = ("all", "ffn", "attention")
NF4_BLOCK, NF4_BLOCKS_PER_SCALE = 64, 256
EXTRA = "pip install 'medft[quantization]'"


def check_quantization(model_cfg: Any, tune_cfg: Any = None, cuda: bool | None = None) -> None:
    """Refuse ``model.quantization`` where it cannot run, in one line, before any model is built.

    ``cuda``: whether a CUDA GPU is present (None: ask torch). ``tune_cfg`` None: the mode is not known
    yet (``medft eval`` / ``ask`` / ``export`` of a run whose mode was checked when it trained).
    """
    method = check_quantization_config(model_cfg, tune_cfg)
    if method is None:
        return
    what, name = f"model.quantization={method}", model_cfg.get("name") or "this model"
    if not model_cfg.get("pretrained"):
        raise ConfigError(
            f"{what} quantizes pretrained weights as they load, and model={name} builds random ones "
            "(model.pretrained is null): set model.pretrained to a checkpoint directory"
        )
    if cuda is None:
        cuda = quantization_device() is not None
    if not cuda:
        raise ConfigError(
            f"{what} needs a CUDA GPU and bitsandbytes ({EXTRA}): no CUDA GPU on this machine; "
            "leave model.quantization out"
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError(f"{what} needs bitsandbytes, which is not installed: {EXTRA}") from None


def quantization_device() -> int | str | None:
    """Where bitsandbytes quantizes the weights as they load: the current CUDA device, None without one
    (then :func:`check_quantization` refuses). The one place medft asks whether quantization can run here;
    the tests return ``"cpu"`` from it to run bitsandbytes' CPU backend."""
    import torch

    return torch.cuda.current_device() if torch.cuda.is_available() else None


def check_quantization_config(model_cfg: Any, tune_cfg: Any = None) -> str | None:
    """The configured method (None: no quantization), after the checks that need no GPU: a known
    method, a model of the image-text-to-text family, a tune mode that trains a slice only."""
    method = model_cfg.get("quantization") if model_cfg is not None else None
    if method is None:
        return None
    what, name = f"model.quantization={method}", model_cfg.get("name") or "this model"
    if method not in METHODS:
        raise ConfigError(f"model.quantization={method!r} is not known: use null (the model's dtype), nf4 or int8")
    if str(model_cfg.get("_target_", "")) not in QUANTIZABLE_BUILDERS:
        raise ConfigError(
            f"{what}: only the image-text-to-text models (LLaVA, MedGemma, Qwen-VL) load quantized, "
            f"not model={name}: leave model.quantization out"
        )
    if tune_cfg is not None and tune_cfg.get("select") in TRAINS_LINEAR_WEIGHTS:
        raise ConfigError(refused_mode(str(tune_cfg.get("name")), method))
    return str(method)


def refused_mode(mode: str, method: str) -> str:
    return (f"tune={mode} with model.quantization={method} would train the quantized weights themselves: "
            "use layernorm, bitfit, lora, dora, ia3 or prefix, or model.quantization=null")


def bitsandbytes_config(method: str, compute_dtype: Any):
    """transformers' ``BitsAndBytesConfig`` for ``method``: NF4 with double-quantized scales computing
    in ``compute_dtype`` (QLoRA's settings), or LLM.int8. transformers' default list of modules to
    leave unquantized (the LM head, tied weights) is kept."""
    from transformers import BitsAndBytesConfig

    if method == "nf4":
        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype,
        )
    if method == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ConfigError(f"model.quantization={method!r} is not known: use null (the model's dtype), nf4 or int8")


def quantized_bytes(method: str, numel: int, rows: int) -> int:
    """Bytes bitsandbytes stores for a ``rows x (numel/rows)`` Linear weight quantized with ``method``."""
    if method == "nf4":
        blocks = math.ceil(numel / NF4_BLOCK)
        return math.ceil(numel / 2) + blocks + 4 * math.ceil(blocks / NF4_BLOCKS_PER_SCALE)
    if method == "int8":
        return numel + 4 * rows
    raise ConfigError(f"model.quantization={method!r} is not known: use null (the model's dtype), nf4 or int8")


def parameter_count(param: Any) -> int:
    """The values ``param`` stands for: a 4-bit weight (bitsandbytes' ``Params4bit``) packs two in a byte,
    so its ``numel()`` is the packed storage's and its count is its original shape's (kept in its quant
    state). Any other parameter, 8-bit ones included (a byte a value), is its ``numel()``."""
    state = getattr(param, "quant_state", None)
    return math.prod(state.shape) if state is not None else param.numel()


def quantizable_weights(model: Any) -> dict[int, int]:
    """``{id(weight): rows}`` of the Linear weights ``from_pretrained`` would quantize in ``model``
    (a transformers model, e.g. on the meta device): every ``nn.Linear`` but the modules transformers
    leaves out (output embeddings, tied weights, the model's fp32 modules), by transformers' own rule."""
    from torch import nn
    from transformers.quantizers.base import get_keys_to_not_convert
    from transformers.quantizers.quantizers_utils import should_convert_module

    skip = list(get_keys_to_not_convert(model)) + list(getattr(model, "_keep_in_fp32_modules", None) or [])
    return {
        id(module.weight): module.out_features
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and should_convert_module(name, skip)
    }
