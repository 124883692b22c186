"""Loading a pretrained Med-VLM: one function for every model family.

``load_pretrained`` goes through ``from_pretrained`` (a local directory, or a hub id found in the
Hugging Face cache or downloaded; ``HF_HUB_OFFLINE=1`` keeps it to the cache). A checkpoint that
cannot be found gives one line: where medft looked and how to fix it.

``build_on_meta`` builds a model from its architecture config on the meta device (no weights, no
memory): ``medft params`` counts parameters this way. ``arch_config`` finds that config: a local
checkpoint's ``config.json``, the copy medft ships for the default checkpoints
(``configs/model/arch/<hub id>/config.json``), or the Hugging Face cache.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from medft.config.search import CONFIG_DIR, find_config
from medft.util.errors import ConfigError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# published config.json of the default checkpoints, by hub id (package data, as medft.config.search finds configs)
ARCH_DIR = CONFIG_DIR / "model" / "arch"


def torch_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ConfigError(f"model.dtype={name!r} is not supported; use one of {sorted(DTYPES)}")
    return DTYPES[name]


def model_kwargs(
    dtype: str, attn_implementation: str | None, trust_remote_code: bool = False, quantization: str | None = None
) -> dict[str, Any]:
    """Keyword arguments of ``from_pretrained`` shared by every model family; ``quantization`` (nf4 |
    int8) loads the Linear weights through bitsandbytes onto the current CUDA device
    (:mod:`medft.models.quantization`'s ``quantization_device``)."""
    kwargs: dict[str, Any] = {"dtype": torch_dtype(dtype)}
    if quantization:
        from medft.models.quantization import bitsandbytes_config, quantization_device

        kwargs["quantization_config"] = bitsandbytes_config(quantization, torch_dtype(dtype))
        kwargs["device_map"] = {"": quantization_device()}  # bitsandbytes quantizes as weights reach the GPU
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if trust_remote_code:
        kwargs["trust_remote_code"] = True
    return kwargs


def is_local(pretrained: str) -> bool:
    """True if ``pretrained`` names a directory rather than a hub id (``owner/name``)."""
    path = Path(pretrained).expanduser()
    return path.exists() or pretrained.startswith(("/", ".", "~")) or pretrained.count("/") != 1


def where_looked(pretrained: str) -> str:
    """Where ``from_pretrained`` looks for ``pretrained``, in words."""
    if is_local(pretrained):
        path = Path(pretrained).expanduser().resolve()
        return f"local directory {path}" + ("" if path.is_dir() else " (does not exist)")
    from huggingface_hub import constants

    offline = constants.HF_HUB_OFFLINE
    return f"Hugging Face cache {constants.HF_HUB_CACHE}" + (" (HF_HUB_OFFLINE=1: hub not asked)" if offline else " and the hub")


def load_pretrained(
    model_cls: type,
    processor_cls: type,
    pretrained: str,
    dtype: str = "float32",
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    quantization: str | None = None,
) -> tuple[nn.Module, Any]:
    """``model_cls.from_pretrained`` and ``processor_cls.from_pretrained`` of one checkpoint."""
    from huggingface_hub.errors import HFValidationError

    kwargs = model_kwargs(dtype, attn_implementation, trust_remote_code, quantization)
    local = is_local(pretrained)
    fix = (
        "set model.pretrained to a checkpoint directory (config.json, the weights and the processor files)"
        if local else f"download it first (hf download {pretrained}) or set model.pretrained to a checkpoint directory"
    )
    if local and not Path(pretrained).expanduser().is_dir():
        raise ConfigError(f"cannot load model.pretrained={pretrained!r}: no {where_looked(pretrained)} — {fix}")
    try:
        model = model_cls.from_pretrained(pretrained, **kwargs)
        processor = processor_cls.from_pretrained(pretrained, trust_remote_code=trust_remote_code)
    except (OSError, HFValidationError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"cannot load model.pretrained={pretrained!r} from the {where_looked(pretrained)}: {first} — {fix}"
        ) from None
    except pickle.UnpicklingError:  # torch.load(weights_only=True) met an object: refused, never unpickled
        raise ConfigError(
            f"model.pretrained={pretrained!r}: its pytorch_model.bin holds pickled objects, not plain weights, and was "
            "not loaded (unpickling it could run code) — use a checkpoint with model.safetensors, or convert a file "
            "you trust to safetensors"
        ) from None
    model.train()  # from_pretrained returns it in eval mode, and Lightning keeps modules' modes: dropout must train
    return model, processor


def load_or_build(
    model_cls: type,
    processor_cls: type,
    pretrained: str | None,
    config: dict[str, Any] | None,
    random_processor: Callable[[], Any],
    random_model: Callable[[Any], nn.Module],
    dtype: str = "float32",
    gradient_checkpointing: bool = False,
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    seed: int = 0,
    quantization: str | None = None,
) -> tuple[nn.Module, Any]:
    """A model and processor: ``pretrained`` (hub id or local dir) loaded, or random weights built
    from ``config`` (tiny models): ``random_processor()``, then ``random_model(processor)`` seeded.
    ``quantization``: nf4 | int8 (checked by :func:`medft.models.build_model` before any builder runs)."""
    if pretrained:
        model, processor = load_pretrained(
            model_cls, processor_cls, pretrained, dtype, attn_implementation, trust_remote_code, quantization
        )
    else:
        if config is None:
            raise ConfigError("model.pretrained is null and model.config is empty: set model.pretrained=PATH")
        processor = random_processor()
        torch.manual_seed(seed)  # the random "pretrained" weights are a function of the seed
        model = random_model(processor).to(torch_dtype(dtype))
    if gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return model, processor


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Recompute activations in backward. Non-reentrant, so frozen inputs (every PEFT mode) still
    let gradients reach the trained layers."""
    model.activation_checkpointing_enable({"use_reentrant": False})  # transformers 5 name of gradient checkpointing
    # transformers also hooks the input embeddings to require grad (needed by *reentrant* checkpointing
    # only). With frozen embeddings that turns their output into a leaf that requires grad, and BLIP's
    # in-place `embeddings += position_embeddings` then fails: drop the hook, which is not needed here.
    model.disable_input_require_grads()


def arch_config(pretrained: str, trust_remote_code: bool = False):
    """The architecture config (``PretrainedConfig``) of ``pretrained``, without any weights.

    Looks, in order, in a local checkpoint directory, in ``configs/model/arch/<hub id>/`` (the
    published configs medft ships), then in the Hugging Face cache (never the network).
    """
    from transformers import AutoConfig

    shipped = find_config("model", "arch", pretrained, "config.json")  # a user's config dir, then medft's
    source = Path(pretrained).expanduser() if is_local(pretrained) else (shipped.parent if shipped else ARCH_DIR / pretrained)
    if is_local(pretrained) or (source / "config.json").is_file():
        if not (source / "config.json").is_file():
            raise ConfigError(f"{source} has no config.json: set model.pretrained to a checkpoint directory")
        return AutoConfig.from_pretrained(str(source), trust_remote_code=trust_remote_code)
    try:
        return AutoConfig.from_pretrained(pretrained, local_files_only=True, trust_remote_code=trust_remote_code)
    except OSError:
        raise ConfigError(
            f"no architecture config for model.pretrained={pretrained!r}: not in {ARCH_DIR} nor in the "
            "Hugging Face cache — set model.pretrained to a checkpoint directory holding config.json"
        ) from None


def model_class(config) -> type:
    """The transformers class named by ``config.architectures`` (e.g. ``LlavaForConditionalGeneration``)."""
    import transformers

    names = list(getattr(config, "architectures", None) or [])
    for name in names:
        cls = getattr(transformers, name, None)
        if cls is not None:
            return cls
    raise ConfigError(
        f"config.json names architectures={names}, none of which transformers provides: "
        "medft needs a transformers-format checkpoint (e.g. llava-hf format for LLaVA)"
    )


def build_on_meta(config) -> nn.Module:
    """The model of ``config`` with every parameter on the meta device: shapes only, no memory."""
    cls = model_class(config)
    with torch.device("meta"):
        return cls(config)

