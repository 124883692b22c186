"""BLIP-style Med-VLM for report generation: ``BlipForConditionalGeneration`` plus its processor.

One sample's path: record (image, report) -> ``collate`` (processor: pixels; ``[DEC] prompt
report [SEP]`` ids, prompt and padding masked to -100 in the labels) -> ``loss`` / ``generate``
(greedy or beam search from ``[DEC] prompt``; the prompt is cut from the decoded text).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import BlipForConditionalGeneration, BlipProcessor

from medft.errors import ConfigError
from medft.models.blip import load_or_build


class BlipReport(nn.Module):
    """Adapter around a BLIP captioning model with the same API as :class:`medft.models.blip.BlipVQA`."""

    task = "report"

    def __init__(
        self,
        model: BlipForConditionalGeneration,
        processor: BlipProcessor,
        arch: dict[str, Any],
        max_report_len: int = 60,
        prompt: str = "",
    ) -> None:
        super().__init__()
        self.model = model
        self.processor = processor
        self.arch = arch
        self.max_report_len = max_report_len
        self.prompt = prompt.strip()
        self.text_limits = {"report": max_report_len}  # what collate truncates (counted by medft.data.checks)

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    def _prompt_len(self) -> int:
        """Tokens before the report: ``[DEC]`` plus the prompt's word pieces."""
        return 1 + len(self.tokenizer(self.prompt, add_special_tokens=False).input_ids) if self.prompt else 1

    def collate(self, records: list[dict]) -> dict[str, Any]:
        tok = self.tokenizer
        texts = [f"{self.prompt} {r['report']}".strip() for r in records]
        pixels = self.processor.image_processor([r["pil_image"] for r in records], return_tensors="pt").pixel_values
        enc = tok(texts, padding="longest", truncation=True, max_length=self.max_report_len, return_tensors="pt")
        input_ids = enc.input_ids.clone()
        input_ids[:, 0] = tok.bos_token_id  # BLIP's text decoder starts from [DEC], not [CLS]
        labels = input_ids.masked_fill(enc.attention_mask == 0, -100)
        labels[:, : self._prompt_len()] = -100  # the prompt is given, not learned
        return {
            "pixel_values": pixels,
            "input_ids": input_ids,
            "attention_mask": enc.attention_mask,
            "labels": labels,
            "meta": [{"id": r["id"], "report": r["report"]} for r in records],
        }

    def loss(self, batch: dict[str, Any]) -> torch.Tensor:
        out = self.model(
            pixel_values=batch["pixel_values"].to(self.model.dtype),
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            labels=batch["labels"],
        )
        return out.loss

    @torch.no_grad()
    def generate(self, batch: dict[str, Any], **generate_kwargs: Any) -> list[str]:
        """One report per image, as text without the prompt."""
        pixels = batch["pixel_values"].to(self.model.dtype)
        input_ids = None
        if self.prompt:
            ids = self.tokenizer(self.prompt, return_tensors="pt").input_ids.to(pixels.device)  # [CLS] prompt [SEP]
            input_ids = ids.repeat(pixels.shape[0], 1)  # generate() puts [DEC] first and drops [SEP]
        ids = self.model.generate(pixel_values=pixels, input_ids=input_ids, **generate_kwargs)
        texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        prompt = self.tokenizer.decode(self.tokenizer(self.prompt, add_special_tokens=False).input_ids) if self.prompt else ""
        return [t.strip()[len(prompt):].strip() if prompt and t.strip().startswith(prompt) else t.strip() for t in texts]


def build_blip_report(
    arch: dict[str, Any],
    name: str = "blip_report",
    pretrained: str | None = None,
    config: dict[str, Any] | None = None,
    image_size: int = 384,
    dtype: str = "float32",
    gradient_checkpointing: bool = False,
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    max_report_len: int = 60,
    prompt: str = "",
    seed: int = 0,
    task: str = "report",
) -> BlipReport:
    """The report adapter over ``BlipForConditionalGeneration`` (see :func:`medft.models.blip.load_or_build`)."""
    if task != BlipReport.task:
        raise ConfigError(f"model.task={task!r}: {name} writes reports (task report); pick a VQA model for questions")
    model, processor = load_or_build(
        BlipForConditionalGeneration, pretrained, config, image_size, dtype, attn_implementation,
        trust_remote_code, gradient_checkpointing, max_report_len, seed,
    )
    adapter = BlipReport(model, processor, dict(arch), max_report_len, prompt)
    adapter.name, adapter.pretrained = name, pretrained
    return adapter
