"""BLIP-style Med-VLM for report generation: ``BlipForConditionalGeneration`` plus its processor.

One sample's path: record (image, report) -> ``collate`` (processor: pixels; ``[DEC] prompt
report [SEP]`` ids, prompt and padding masked to -100 in the labels) -> ``loss`` / ``generate``
(greedy or beam search from ``[DEC] prompt``; the prompt is cut from the decoded text).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import BlipForConditionalGeneration

from medft.models.base import MedVLM
from medft.models.blip import load_blip


class BlipReportGen(MedVLM):
    """A BLIP captioning model writing reports: batching, loss and report generation."""

    tasks = ("report",)
    does = "writes reports (task report); pick a VQA model for questions"

    def __init__(self, *parts: Any, max_report_len: int = 60, prompt: str = "", **identity: Any) -> None:
        super().__init__(*parts, **identity)  # model, processor, arch; name, pretrained, task
        self.max_report_len = max_report_len
        self.prompt = prompt.strip()

    @property
    def text_limits(self) -> dict[str, int]:
        return {"report": self.max_report_len}  # what collate truncates (counted by medft.data.checks)

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


def build_blip_report_gen(
    arch: dict[str, Any], name: str = "blip_report", pretrained: str | None = None, config: dict[str, Any] | None = None,
    task: str = "report", image_size: int = 384, max_report_len: int = 60, prompt: str = "",
    trust_remote_code: bool = False, **load: Any,
) -> BlipReportGen:
    """A :class:`BlipReportGen` over ``BlipForConditionalGeneration`` (see :func:`medft.models.blip.load_blip`)."""
    BlipReportGen.check_can_do(task, name)  # before any weights load
    model, processor = load_blip(
        BlipForConditionalGeneration, pretrained, config, image_size, max_report_len,
        trust_remote_code=trust_remote_code, **load,
    )
    identity = {"name": name, "pretrained": pretrained, "task": task}
    return BlipReportGen(model, processor, arch, max_report_len=max_report_len, prompt=prompt, **identity)
