"""BLIP-style Med-VLM for VQA: ``BlipForQuestionAnswering`` plus its processor.

One sample's path: record (image, question, answer) -> ``collate`` (processor: pixels + question
ids; answer ids with ``[DEC]`` first, padding masked to -100) -> ``loss`` / ``generate``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import BlipConfig, BlipForQuestionAnswering, BlipImageProcessorPil, BlipProcessor

from medft.errors import ConfigError
from medft.models.loading import DTYPES, enable_gradient_checkpointing, load_pretrained, torch_dtype  # noqa: F401
from medft.models.tokenizer import build_offline_tokenizer


class BlipVQA(nn.Module):
    """Adapter around a BLIP VQA model: batching, loss and answer generation.

    ``arch`` (from the model config) names the architecture's pieces for the tuning module:
    ``components`` (component name -> module prefix), ``attention`` and ``ffn`` (module class
    names whose Linear children are attention / feed-forward projections), ``lora_targets``.
    """

    task = "vqa"

    def __init__(
        self,
        model: BlipForQuestionAnswering,
        processor: BlipProcessor,
        arch: dict[str, Any],
        max_question_len: int = 32,
        max_answer_len: int = 8,
    ) -> None:
        super().__init__()
        self.model = model
        self.processor = processor
        self.arch = arch
        self.max_question_len = max_question_len
        self.max_answer_len = max_answer_len
        self.truncated = 0  # questions / answers cut to the maximum length so far

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    def collate(self, records: list[dict]) -> dict[str, Any]:
        """Turn records (with a PIL ``pil_image``) into model inputs plus the metadata to score them."""
        tok = self.tokenizer
        questions = [r["question"] for r in records]
        enc = self.processor(
            images=[r["pil_image"] for r in records],
            text=questions,
            padding="longest",
            truncation=True,
            max_length=self.max_question_len,
            return_tensors="pt",
        )
        answers = [r["answer"] for r in records]
        ans = tok(answers, padding="longest", truncation=True, max_length=self.max_answer_len, return_tensors="pt")
        decoder_input_ids = ans.input_ids.clone()
        decoder_input_ids[:, 0] = tok.bos_token_id  # BLIP's answer decoder starts from [DEC], not [CLS]
        labels = decoder_input_ids.masked_fill(ans.attention_mask == 0, -100)
        self.truncated += int((enc.attention_mask.sum(1) >= self.max_question_len).sum())
        return {
            "pixel_values": enc.pixel_values,
            "input_ids": enc.input_ids,
            "attention_mask": enc.attention_mask,
            "decoder_input_ids": decoder_input_ids,
            "decoder_attention_mask": ans.attention_mask,
            "labels": labels,
            "meta": [{k: r[k] for k in ("id", "question", "answer", "answer_type")} for r in records],
        }

    def loss(self, batch: dict[str, Any]) -> torch.Tensor:
        out = self.model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            pixel_values=batch["pixel_values"].to(self.model.dtype),
            decoder_input_ids=batch["decoder_input_ids"],
            decoder_attention_mask=batch["decoder_attention_mask"],
            labels=batch["labels"],
        )
        return out.loss

    @torch.no_grad()
    def generate(self, batch: dict[str, Any], **generate_kwargs: Any) -> list[str]:
        """Answer every question of the batch (greedy unless ``num_beams`` > 1), as text."""
        ids = self.model.generate(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            pixel_values=batch["pixel_values"].to(self.model.dtype),
            **generate_kwargs,
        )
        return [s.strip() for s in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]


def tiny_processor(image_size: int, max_length: int) -> BlipProcessor:
    """Image processor (PIL backend, no torchvision) and offline tokenizer for a tiny model."""
    image_processor = BlipImageProcessorPil(size={"height": image_size, "width": image_size})
    return BlipProcessor(image_processor=image_processor, tokenizer=build_offline_tokenizer(max_length))


def tiny_blip_config(config: dict[str, Any], tokenizer, image_size: int) -> BlipConfig:
    """A ``BlipConfig`` from the model config's sizes, its text side matched to ``tokenizer``."""
    text_config = dict(config["text_config"])
    text_config.update(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        sep_token_id=tokenizer.sep_token_id,
    )
    vision_config = dict(config["vision_config"], image_size=image_size)
    return BlipConfig(vision_config=vision_config, text_config=text_config)


def load_or_build(
    model_cls: type,
    pretrained: str | None,
    config: dict[str, Any] | None,
    image_size: int,
    dtype: str,
    attn_implementation: str | None,
    trust_remote_code: bool,
    gradient_checkpointing: bool,
    max_text_len: int,
    seed: int,
) -> tuple[nn.Module, BlipProcessor]:
    """A BLIP model and processor: ``pretrained`` (hub id or local dir) loaded, or random weights
    built from ``config`` (tiny models, with the offline processor)."""
    if pretrained:
        model, processor = load_pretrained(
            model_cls, BlipProcessor, pretrained, dtype, attn_implementation, trust_remote_code
        )
    else:
        if config is None:
            raise ConfigError("model.pretrained is null and model.config is empty: set model.pretrained=PATH")
        processor = tiny_processor(image_size, max_text_len)
        blip_config = tiny_blip_config(config, processor.tokenizer, image_size)
        torch.manual_seed(seed)  # the random "pretrained" weights are a function of the seed
        model = model_cls(blip_config).to(torch_dtype(dtype))
    if gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return model, processor


def build_blip_vqa(
    arch: dict[str, Any],
    name: str = "blip",
    pretrained: str | None = None,
    config: dict[str, Any] | None = None,
    image_size: int = 384,
    dtype: str = "float32",
    gradient_checkpointing: bool = False,
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    max_question_len: int = 32,
    max_answer_len: int = 8,
    seed: int = 0,
    task: str = "vqa",
) -> BlipVQA:
    """The VQA adapter over ``BlipForQuestionAnswering`` (see :func:`load_or_build`)."""
    if task != BlipVQA.task:
        raise ConfigError(f"model.task={task!r}: {name} answers questions (task vqa); pick a report model for reports")
    model, processor = load_or_build(
        BlipForQuestionAnswering, pretrained, config, image_size, dtype, attn_implementation,
        trust_remote_code, gradient_checkpointing, max_question_len, seed,
    )
    adapter = BlipVQA(model, processor, dict(arch), max_question_len, max_answer_len)
    adapter.name, adapter.pretrained = name, pretrained
    return adapter
