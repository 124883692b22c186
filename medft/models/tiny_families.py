"""Where image-text-to-text families truly differ in code: the processor of a tiny random-weight model.

A tiny model (``pretrained: null``) has no checkpoint to read its processor from, so medft builds one
offline: a tokenizer over medft's fixed word list (:mod:`medft.models.tokenizer`) carrying the
family's special and image tokens and a chat template in the family's own format, and the family's
PIL image processor (no torchvision). :func:`random_model` then builds random weights for the
model config (``medft/configs/model/<name>.yaml`` ``config:``), with the tokenizer's vocabulary and the
ids of its special tokens. A real checkpoint brings all of this itself; its only completion here
(``complete``) is LLaVA's patch size for older llava-hf conversions.

Adding a family: an arch YAML (``medft/configs/model/arch/<family>.yaml``), model YAMLs, and a
:class:`Kit` in ``FAMILIES`` (only to build tiny models of it).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from medft.models.tokenizer import MISTRAL_CHAT_TEMPLATE, build_offline_chat_tokenizer, build_offline_llama_tokenizer

# Chat templates in each family's format (one user turn with an image; an assistant answer).
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<start_of_image>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SMOLVLM_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}:"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)
GEMMA_FIRST = ["<pad>", "<eos>", "<bos>", "<unk>"]  # ids 0..3 as in Gemma's tokenizer
QWEN_FIRST = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"]
QWEN_NAMED = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
              "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>"}


@dataclass
class Kit:
    """One family's tiny-model kit: ``processor(config, image_size)``, the config ``defaults`` the model
    config completes, ``token_ids(processor)`` (model-config keys -> token ids), the chat template a
    checkpoint without one gets, and ``complete(processor, model_config)`` for real checkpoints."""

    processor: Callable[[dict[str, Any], int], Any]
    defaults: dict[str, Any]
    token_ids: Callable[[Any], dict[str, int]]
    chat_template: str | None = None
    complete: Callable[[Any, Any], None] = field(default=lambda processor, config: None)
    processor_class: Callable[[], type] | None = None  # what loads a checkpoint's processor (default AutoProcessor)

    def loader(self) -> type:
        from transformers import AutoProcessor

        return self.processor_class() if self.processor_class else AutoProcessor


def _tokenizer(config: dict[str, Any], first: list[str], last: list[str], **kwargs: Any):
    max_length = int(config["text_config"].get("max_position_embeddings", 512))  # prompt = image tokens + text
    return build_offline_chat_tokenizer(first, last, model_max_length=max_length, **kwargs)


def _id(processor: Any, token: str) -> int:
    return processor.tokenizer.convert_tokens_to_ids(token)


# -- LLaVA: CLIP tower, MLP projector, Mistral ------------------------------------------------


def _llava_processor(config: dict[str, Any], image_size: int):
    """CLIP image processor and the offline Mistral-style tokenizer (as LLaVA-Med v1.5's)."""
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    max_length = int(config["text_config"].get("max_position_embeddings", 512))
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=build_offline_llama_tokenizer(max_length),
        patch_size=int(config["vision_config"]["patch_size"]),
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped again by the "default" strategy
        chat_template=MISTRAL_CHAT_TEMPLATE,
    )


def _llava_complete(processor: Any, config: Any) -> None:
    """Older llava-hf conversions ship a processor without the patch size: transformers 5 needs it
    to expand ``<image>`` into one token per patch. Take it from the model config (CLIP: + CLS)."""
    if getattr(processor, "patch_size", None) is None:
        processor.patch_size = config.vision_config.patch_size
        processor.vision_feature_select_strategy = config.vision_feature_select_strategy
        processor.num_additional_image_tokens = 1


# -- Gemma 3 (MedGemma) and PaliGemma: SigLIP tower, Gemma decoder -----------------------------


def _gemma3_processor(config: dict[str, Any], image_size: int):
    from transformers import Gemma3ImageProcessorPil, Gemma3Processor

    tokenizer = _tokenizer(
        config, GEMMA_FIRST, ["<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>", "<image_soft_token>"],
        bos="<bos>", eos="<eos>", pad="<pad>", unk="<unk>", chat_template=GEMMA_CHAT_TEMPLATE,
        named={"image_token": "<image_soft_token>", "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>"},
    )
    image_processor = Gemma3ImageProcessorPil(size={"height": image_size, "width": image_size}, do_pan_and_scan=False)
    return Gemma3Processor(image_processor, tokenizer, chat_template=GEMMA_CHAT_TEMPLATE,
                           image_seq_length=int(config["mm_tokens_per_image"]))


def _paligemma_processor(config: dict[str, Any], image_size: int):
    from transformers import PaliGemmaProcessor, SiglipImageProcessorPil

    tokenizer = _tokenizer(config, GEMMA_FIRST, ["<image>"], bos="<bos>", eos="<eos>", pad="<pad>", unk="<unk>",
                           named={"image_token": "<image>"})
    image_processor = SiglipImageProcessorPil(size={"height": image_size, "width": image_size})
    image_processor.image_seq_length = (image_size // int(config["vision_config"]["patch_size"])) ** 2
    return PaliGemmaProcessor(image_processor, tokenizer)  # no chat template: "<image>...<bos>question\n"


# -- Qwen2-VL (MedVLM-R1) and Qwen2.5-VL (Lingshu): the ViT with its merger inside `visual` ------


def qwen_processor_class(name: str) -> type:
    """Qwen's processor class ``name``; where torchvision is missing (transformers cannot make Qwen's
    video processor without it), the same processor without its video processor: images only, saved
    under the real class name so a checkpoint loads the same anywhere."""
    import transformers
    from transformers.utils import is_torchvision_available

    cls = getattr(transformers, name)
    if is_torchvision_available():
        return cls

    class ImagesOnly(cls):
        @classmethod
        def get_attributes(cls) -> list[str]:
            return ["image_processor", "tokenizer"]

        def to_dict(self) -> dict[str, Any]:
            return {**super().to_dict(), "processor_class": name}

    ImagesOnly.__name__ = ImagesOnly.__qualname__ = name
    return ImagesOnly


def _qwen_processor(processor_class: str):
    def build(config: dict[str, Any], image_size: int):
        import transformers

        tokenizer = _tokenizer(config, QWEN_FIRST, list(QWEN_NAMED.values()), eos="<|im_end|>", pad="<|endoftext|>",
                               unk="<unk>", named=QWEN_NAMED, chat_template=QWEN_CHAT_TEMPLATE)
        vision = config["vision_config"]
        pixels = image_size * image_size  # every image resized to about image_size x image_size
        image_processor = transformers.Qwen2VLImageProcessorPil(
            size={"shortest_edge": pixels, "longest_edge": pixels}, patch_size=int(vision["patch_size"]),
            merge_size=int(vision.get("spatial_merge_size", 2)), temporal_patch_size=int(vision.get("temporal_patch_size", 2)),
        )
        return qwen_processor_class(processor_class)(image_processor, tokenizer, chat_template=QWEN_CHAT_TEMPLATE)

    return build


def _qwen_token_ids(processor: Any) -> dict[str, int]:
    names = {"image_token_id": "image_token", "video_token_id": "video_token",
             "vision_start_token_id": "vision_start_token", "vision_end_token_id": "vision_end_token"}
    return {key: _id(processor, QWEN_NAMED[token]) for key, token in names.items()}


# -- Idefics3 (SmolVLM): SigLIP-style tower, pixel-shuffle connector, Llama decoder --------------


def _idefics3_processor(config: dict[str, Any], image_size: int):
    from transformers import Idefics3ImageProcessorPil, Idefics3Processor

    tokenizer = _tokenizer(
        config, QWEN_FIRST, ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"],
        bos="<|im_start|>", eos="<end_of_utterance>", pad="<|im_end|>", unk="<unk>",
        named={"image_token": "<image>"}, chat_template=SMOLVLM_CHAT_TEMPLATE,
    )
    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=False, size={"longest_edge": image_size}, max_image_size={"longest_edge": image_size},
    )
    patches = (image_size // int(config["vision_config"]["patch_size"])) ** 2
    seq_len = patches // int(config.get("scale_factor", 2)) ** 2
    return Idefics3Processor(image_processor, tokenizer, image_seq_len=seq_len, chat_template=SMOLVLM_CHAT_TEMPLATE)


FAMILIES: dict[str, Kit] = {
    "llava": Kit(
        _llava_processor,
        {"model_type": "llava", "text_config": {"model_type": "mistral"}, "vision_config": {"model_type": "clip_vision_model"},
         "vision_feature_select_strategy": "default", "projector_hidden_act": "gelu", "tie_word_embeddings": False},
        lambda p: {"image_token_index": _id(p, p.image_token)},
        chat_template=MISTRAL_CHAT_TEMPLATE, complete=_llava_complete,
    ),
    "gemma3": Kit(
        _gemma3_processor,
        {"model_type": "gemma3", "text_config": {"model_type": "gemma3_text"},
         "vision_config": {"model_type": "siglip_vision_model", "vision_use_head": False}},  # as MedGemma: no pooling head
        lambda p: {"image_token_index": _id(p, "<image_soft_token>"), "boi_token_index": _id(p, "<start_of_image>"),
                   "eoi_token_index": _id(p, "<end_of_image>")},
    ),
    "paligemma": Kit(
        _paligemma_processor,
        {"model_type": "paligemma", "text_config": {"model_type": "gemma"},
         "vision_config": {"model_type": "siglip_vision_model", "vision_use_head": False}},
        lambda p: {"image_token_index": _id(p, "<image>")},
    ),
    "qwen2_vl": Kit(
        _qwen_processor("Qwen2VLProcessor"), {"model_type": "qwen2_vl", "text_config": {}, "vision_config": {}}, _qwen_token_ids,
        processor_class=lambda: qwen_processor_class("Qwen2VLProcessor"),
    ),
    "qwen2_5_vl": Kit(
        _qwen_processor("Qwen2_5_VLProcessor"), {"model_type": "qwen2_5_vl", "text_config": {}, "vision_config": {}},
        _qwen_token_ids, processor_class=lambda: qwen_processor_class("Qwen2_5_VLProcessor"),
    ),
    "idefics3": Kit(
        _idefics3_processor,
        {"model_type": "idefics3", "text_config": {"model_type": "llama"}, "vision_config": {}},
        lambda p: {"image_token_id": _id(p, "<image>")},
    ),
}


def random_model(kit: Kit, config: dict[str, Any], processor: Any, image_size: int):
    """Random weights for the model config ``config`` (``vision_config``, ``text_config``, the family's
    own keys) completed by the kit's defaults, with the tokenizer's vocabulary and special token ids."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    tok = processor.tokenizer
    ids = {"pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
    values = copy.deepcopy(kit.defaults)
    for key, value in config.items():
        values[key] = {**values[key], **value} if isinstance(value, dict) and isinstance(values.get(key), dict) else value
    values["text_config"].update(vocab_size=len(tok), **ids)
    values["vision_config"]["image_size"] = image_size  # the vision tower's input size is the processor's
    values.update(kit.token_ids(processor))
    model_type = values.pop("model_type")
    model = AutoModelForImageTextToText.from_config(AutoConfig.for_model(model_type, **values))
    # A matrix the family initialises to zero (Gemma 3's mm_input_projection_weight, loaded from the
    # checkpoint in real use) would stop every gradient to the vision tower: random, like the rest.
    for param in model.parameters():
        if param.dim() >= 2 and not param.any():
            torch.nn.init.normal_(param, std=0.02)
    model.generation_config.update(**ids)
    return model
