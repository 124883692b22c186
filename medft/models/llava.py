"""LLaVA-style Med-VLM (LLaVA-Med v1.5): ``LlavaForConditionalGeneration`` plus its processor.

One sample's path: record (image, question, answer; or image, report) -> ``collate``: the prompt is
the checkpoint's chat template applied to one user turn (image, then the question or the report
instruction), e.g. ``[INST] <image>\\nIs there a lesion? [/INST]`` for LLaVA-Med v1.5; the
processor expands ``<image>`` into one token per image patch and makes the pixels -> training
sequence ``prompt + answer + </s>``, right-padded, with labels -100 everywhere but the answer
tokens and ``</s>`` -> ``loss``; the prompt alone, left-padded, -> ``generate`` (greedy by
default) -> the text after the prompt.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

from medft.errors import ConfigError
from medft.models.base import MedVLM
from medft.models.loading import load_or_build
from medft.models.tokenizer import MISTRAL_CHAT_TEMPLATE, build_offline_llama_tokenizer

DEFAULT_REPORT_PROMPT = "Describe the findings of this medical image."


class LlavaVQA(MedVLM):
    """A LLaVA model: chat-template prompts, answer-only loss, generation.

    With ``task="report"`` the prompt is ``report_prompt`` and the target is the record's ``report``.
    """

    def __init__(
        self, *parts: Any, max_question_len: int = 32, max_answer_len: int = 16, report_prompt: str = DEFAULT_REPORT_PROMPT,
        **identity: Any,
    ) -> None:
        super().__init__(*parts, **identity)  # model, processor, arch; name, pretrained, task
        self.max_question_len = max_question_len
        self.max_answer_len = max_answer_len
        self.report_prompt = report_prompt
        self.tokenizer.padding_side = "left"  # prompts are left-padded: generation continues each from its end

    @property
    def text_limits(self) -> dict[str, int]:
        """Questions and answers (VQA); a report's length is limited only by ``max_answer_len``, not counted."""
        return {"question": self.max_question_len, "answer": self.max_answer_len} if self.task == "vqa" else {}

    @property
    def pad_token_id(self) -> int:
        tok = self.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    # -- records -> batch -------------------------------------------------------------------
    def _truncate(self, text: str, max_tokens: int) -> str:
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        if len(ids) <= max_tokens:
            return text
        self.truncated += 1
        return self.tokenizer.decode(ids[:max_tokens])

    def prompt(self, question: str) -> str:
        """The chat-template prompt of one question (or report instruction), ending where the answer starts."""
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def _target_ids(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        if len(ids) > self.max_answer_len:
            self.truncated += 1
            ids = ids[: self.max_answer_len]
        return ids + [self.tokenizer.eos_token_id]

    def collate(self, records: list[dict]) -> dict[str, Any]:
        """Turn records (with a PIL ``pil_image``) into model inputs plus the metadata to score them."""
        if self.task == "vqa":
            questions = [self._truncate(r["question"], self.max_question_len) for r in records]
            targets = [r["answer"] for r in records]
            meta = [{k: r[k] for k in ("id", "question", "answer", "answer_type")} for r in records]
        else:
            questions = [self.report_prompt] * len(records)
            targets = [r["report"] for r in records]
            meta = [{"id": r["id"], "report": r["report"]} for r in records]
        enc = self.processor(
            images=[r["pil_image"] for r in records],
            text=[self.prompt(q) for q in questions],
            padding="longest",
            return_tensors="pt",
        )
        prompts = [ids[mask.bool()].tolist() for ids, mask in zip(enc.input_ids, enc.attention_mask)]
        answers = [self._target_ids(t) for t in targets]
        input_ids, attention_mask, labels = _right_padded(prompts, answers, self.pad_token_id)
        return {
            "pixel_values": enc.pixel_values,
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "prompt_ids": enc.input_ids,
            "prompt_attention_mask": enc.attention_mask,
            "meta": meta,
        }

    # -- model calls ------------------------------------------------------------------------
    def loss(self, batch: dict[str, Any]) -> torch.Tensor:
        out = self.model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            pixel_values=batch["pixel_values"].to(self.model.dtype),
            labels=batch["labels"],
        )
        return out.loss

    @torch.no_grad()
    def generate(self, batch: dict[str, Any], **generate_kwargs: Any) -> list[str]:
        """Answer every prompt of the batch (greedy unless ``num_beams`` > 1), as text."""
        prompt = batch["prompt_ids"]
        ids = self.model.generate(
            input_ids=prompt,
            attention_mask=batch["prompt_attention_mask"],
            pixel_values=batch["pixel_values"].to(self.model.dtype),
            pad_token_id=self.pad_token_id,
            **generate_kwargs,
        )
        new = ids[:, prompt.shape[1]:]  # decoder-only: the output repeats the prompt first
        return [s.strip() for s in self.tokenizer.batch_decode(new, skip_special_tokens=True)]


def _right_padded(prompts: list[list[int]], answers: list[list[int]], pad_id: int):
    """``prompt + answer`` per sample, right-padded; labels only on the answer tokens."""
    length = max(len(p) + len(a) for p, a in zip(prompts, answers))
    input_ids = torch.full((len(prompts), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), length), dtype=torch.long)
    labels = torch.full((len(prompts), length), -100, dtype=torch.long)
    for i, (p, a) in enumerate(zip(prompts, answers)):
        n = len(p) + len(a)
        input_ids[i, :n] = torch.tensor(p + a)
        attention_mask[i, :n] = 1
        labels[i, len(p):n] = torch.tensor(a)
    return input_ids, attention_mask, labels


# -- building --------------------------------------------------------------------------------


def tiny_processor(image_size: int, patch_size: int, max_length: int) -> LlavaProcessor:
    """CLIP image processor (PIL backend, no torchvision) and the offline Mistral-style tokenizer."""
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=build_offline_llama_tokenizer(max_length),
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped again by the "default" strategy
        chat_template=MISTRAL_CHAT_TEMPLATE,
    )


def tiny_model(config: dict[str, Any], processor: LlavaProcessor, image_size: int) -> LlavaForConditionalGeneration:
    """Random weights for ``config`` (vision_config, text_config), with the tokenizer's vocabulary."""
    tok = processor.tokenizer
    ids = {"pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
    text_config = {"model_type": "mistral", **config["text_config"], "vocab_size": len(tok), **ids}
    vision_config = {"model_type": "clip_vision_model", **config["vision_config"], "image_size": image_size}
    llava_config = LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=tok.convert_tokens_to_ids(processor.image_token),
        vision_feature_layer=config.get("vision_feature_layer", -2),
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        tie_word_embeddings=False,
    )
    model = LlavaForConditionalGeneration(llava_config)
    model.generation_config.update(**ids)
    return model


def _complete_processor(processor: LlavaProcessor, config: LlavaConfig) -> None:
    """Older llava-hf conversions ship a processor without the patch size: transformers 5 needs it
    to expand ``<image>`` into one token per patch. Take it from the model config (CLIP: + CLS)."""
    if getattr(processor, "patch_size", None) is None:
        processor.patch_size = config.vision_config.patch_size
        processor.vision_feature_select_strategy = config.vision_feature_select_strategy
        processor.num_additional_image_tokens = 1


def build_llava(
    arch: dict[str, Any], name: str = "llava", pretrained: str | None = None, config: dict[str, Any] | None = None,
    task: str = "vqa", image_size: int = 336, chat_template: str | None = None,
    report_prompt: str = DEFAULT_REPORT_PROMPT, max_question_len: int = 32, max_answer_len: int = 16,
    trust_remote_code: bool = False, **load: Any,
) -> LlavaVQA:
    """Load ``pretrained`` (a llava-hf-format hub id or local dir), or build random weights from
    ``config`` (tiny models); ``load``: dtype, quantization, gradient_checkpointing, attn_implementation,
    trust_remote_code, seed (:func:`medft.models.loading.load_or_build`). ``chat_template`` replaces
    the checkpoint's (null: keep it; a checkpoint without one gets LLaVA-Med v1.5's Mistral ``[INST]``
    template)."""
    LlavaVQA.check_can_do(task, name)  # before any weights load

    def random_processor() -> LlavaProcessor:
        max_length = int(config["text_config"].get("max_position_embeddings", 512))  # prompt = image tokens + text
        return tiny_processor(image_size, int(config["vision_config"]["patch_size"]), max_length)

    model, processor = load_or_build(
        LlavaForConditionalGeneration, LlavaProcessor, pretrained, config, random_processor,
        lambda processor: tiny_model(config, processor, image_size), trust_remote_code=trust_remote_code,
        **load,
    )
    _complete_processor(processor, model.config)
    if chat_template or not getattr(processor, "chat_template", None):
        processor.chat_template = chat_template or MISTRAL_CHAT_TEMPLATE
    limits = {"max_question_len": max_question_len, "max_answer_len": max_answer_len}
    return LlavaVQA(model, processor, arch, report_prompt=report_prompt, name=name, pretrained=pretrained, task=task,
                    **limits)
