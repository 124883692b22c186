"""Image-text-to-text Med-VLMs: every model ``AutoModelForImageTextToText`` and ``AutoProcessor`` load
(LLaVA / LLaVA-Med, Gemma 3 / MedGemma, PaliGemma, Qwen2-VL / MedVLM-R1, Qwen2.5-VL / Lingshu,
Idefics3 / SmolVLM), through one class.

What differs between families is data in ``medft/configs/model/arch/<family>.yaml``: role -> module
prefixes, the extra forward inputs (``forward_inputs``: Gemma 3 and PaliGemma's ``token_type_ids``,
Qwen's ``image_grid_thw`` and ``mm_token_type_ids``, Idefics3's ``pixel_attention_mask``), what an
answer token's type is (``answer_token_type``), modules adapters leave out. The one piece of code
per family is the tiny random-weight kit (processor and token ids, :mod:`medft.models.tiny_families`).

One sample's path: record (image, question, answer; or image, report) -> ``collate``: the prompt is
the processor's chat template applied to one user turn (image, then the question or the report
instruction), e.g. ``[INST] <image>\\nIs there a lesion? [/INST]`` for LLaVA-Med v1.5; the processor
expands the image placeholder into the family's image tokens and makes the pixels -> training
sequence ``prompt + answer + eos``, right-padded, with labels -100 everywhere but the answer tokens
and eos -> ``loss``; the prompt alone, left-padded, -> ``generate`` (greedy by default) -> the text
after the prompt.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medft.models.base import MedVLM
from medft.models.loading import load_or_build
from medft.util.errors import ConfigError

DEFAULT_REPORT_PROMPT = "Describe the findings of this medical image."
TEXT_INPUTS = ("input_ids", "attention_mask")


class ImageTextVLM(MedVLM):
    """An image-text-to-text model: chat-template prompts, answer-only loss, generation.

    With ``task="report"`` the prompt is ``report_prompt`` and the target is the record's ``report``.
    ``arch.forward_inputs`` names what the model takes besides ids and mask; those of them with one
    value per token (``token_type_ids``) are carried over to the training sequence, where answer
    tokens get ``arch.answer_token_type`` (default 0).
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
    def family(self) -> str:
        return self.arch.get("family", "?")

    @property
    def text_limits(self) -> dict[str, int]:
        """Questions and answers (VQA); a report's length is limited only by ``max_answer_len``, not counted."""
        return {"question": self.max_question_len, "answer": self.max_answer_len} if self.task == "vqa" else {}

    @property
    def pad_token_id(self) -> int:
        tok = self.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    @property
    def forward_inputs(self) -> list[str]:
        return list(self.arch.get("forward_inputs") or ["pixel_values"])

    # -- records -> batch -------------------------------------------------------------------
    def _truncate(self, text: str, max_tokens: int) -> str:
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        if len(ids) <= max_tokens:
            return text
        self.truncated += 1
        return self.tokenizer.decode(ids[:max_tokens])

    def prompt(self, question: str) -> str:
        """The chat-template prompt of one question (or report instruction), ending where the answer
        starts; without a chat template (PaliGemma) it is the image token, then the question."""
        if not getattr(self.processor, "chat_template", None):
            return f"{self.processor.image_token}{question}"
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def _target_ids(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        if len(ids) > self.max_answer_len:
            self.truncated += 1
            ids = ids[: self.max_answer_len]
        return ids + [self.tokenizer.eos_token_id]

    def encode_prompts(self, images: list, questions: list[str]):
        """The processor's left-padded prompt batch (image tokens expanded, pixels made)."""
        prompts = [self.prompt(q) for q in questions]
        bos = self.tokenizer.bos_token
        # a chat template that writes the BOS itself (Gemma 3) must not get a second one from the tokenizer
        add_special = not (bos and all(p.startswith(bos) for p in prompts))
        return self.processor(
            images=[[image] for image in images],  # one image per prompt
            text=prompts, padding="longest", return_tensors="pt", add_special_tokens=add_special,
        )

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
        enc = self.encode_prompts([r["pil_image"] for r in records], questions)
        missing = [k for k in self.forward_inputs if k not in enc]
        if missing:
            raise ConfigError(
                f"model {self.name} (family {self.family}): its processor gives no {missing} (arch.forward_inputs); "
                f"it gives {sorted(enc)}: check medft/configs/model/arch/{self.family}.yaml"
            )
        keep = [mask.bool() for mask in enc.attention_mask]
        answers = [self._target_ids(t) for t in targets]
        per_token = [k for k in self.forward_inputs if _per_token(enc[k], enc.input_ids)]
        sequences = {"input_ids": [ids[m].tolist() for ids, m in zip(enc.input_ids, keep)]}
        sequences.update({k: [v[m].tolist() for v, m in zip(enc[k], keep)] for k in per_token})
        answer_type = int(self.arch.get("answer_token_type", 0))
        batch = _right_padded(sequences, answers, self.pad_token_id, answer_type)
        batch.update({k: enc[k] for k in self.forward_inputs if k not in per_token})
        batch.update({"prompt_ids": enc.input_ids, "prompt_attention_mask": enc.attention_mask, "meta": meta})
        batch.update({f"prompt_{k}": enc[k] for k in per_token})
        return batch

    def _inputs(self, batch: dict[str, Any], prompt: bool = False) -> dict[str, Any]:
        """The forward inputs besides ids and mask, floating ones in the model's dtype."""
        out = {}
        for key in self.forward_inputs:
            value = batch.get(f"prompt_{key}", batch[key]) if prompt else batch[key]
            out[key] = value.to(self.model.dtype) if torch.is_floating_point(value) else value
        return out

    # -- model calls ------------------------------------------------------------------------
    def loss(self, batch: dict[str, Any]) -> torch.Tensor:
        out = self.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"],
            **self._inputs(batch),
        )
        return out.loss

    @torch.no_grad()
    def generate(self, batch: dict[str, Any], **generate_kwargs: Any) -> list[str]:
        """Answer every prompt of the batch (greedy unless ``num_beams`` > 1), as text."""
        prompt = batch["prompt_ids"]
        ids = self.model.generate(
            input_ids=prompt, attention_mask=batch["prompt_attention_mask"], pad_token_id=self.pad_token_id,
            **self._inputs(batch, prompt=True), **generate_kwargs,
        )
        new = ids[:, prompt.shape[1]:]  # decoder-only: the output repeats the prompt first
        return [s.strip() for s in self.tokenizer.batch_decode(new, skip_special_tokens=True)]


def _per_token(value: Any, input_ids: torch.Tensor) -> bool:
    return isinstance(value, torch.Tensor) and value.shape == input_ids.shape


def _right_padded(prompts: dict[str, list[list[int]]], answers: list[list[int]], pad_id: int, answer_type: int):
    """``prompt + answer`` per sample, right-padded; labels only on the answer tokens. ``prompts`` holds
    ``input_ids`` and any per-token inputs (``token_type_ids``), whose answer tokens get ``answer_type``."""
    ids = prompts["input_ids"]
    length = max(len(p) + len(a) for p, a in zip(ids, answers))
    shape = (len(ids), length)
    out = {key: torch.zeros(shape, dtype=torch.long) for key in prompts}
    out["input_ids"].fill_(pad_id)
    out["attention_mask"] = torch.zeros(shape, dtype=torch.long)
    out["labels"] = torch.full(shape, -100, dtype=torch.long)
    for i, answer in enumerate(answers):
        n_prompt = len(ids[i])
        n = n_prompt + len(answer)
        for key, rows in prompts.items():
            tail = answer if key == "input_ids" else [answer_type] * len(answer)
            out[key][i, :n] = torch.tensor(rows[i] + tail)
        out["attention_mask"][i, :n] = 1
        out["labels"][i, n_prompt:n] = torch.tensor(answer)
    return out


# -- the architecture description, checked against the model ----------------------------------


def check_arch(model: nn.Module, arch: dict[str, Any]) -> None:
    """Every module pattern of ``arch`` names a module of ``model``: component prefixes, the vision
    layers and head, ``no_adapters``; ``attention`` and ``ffn`` classes are found in the language model.
    Otherwise a ConfigError naming the family and the pattern."""
    family = arch.get("family", "?")
    modules = dict(model.named_modules())
    where = f"medft/configs/model/arch/{family}.yaml"

    def missing(key: str, pattern: str) -> ConfigError:
        return ConfigError(
            f"family {family}: arch.{key} names {pattern!r}, which matches no module of {type(model).__name__}: "
            f"fix {where} (module names as in model.named_modules())"
        )

    patterns = [(f"components.{role}", p) for role, ps in arch.get("components", {}).items() for p in _as_list(ps)]
    patterns += [("vision_layers", p) for p in _as_list(arch.get("vision_layers"))]
    patterns += [(key, p) for key in ("vision_head", "no_adapters") for p in _as_list(arch.get(key))]
    for key, pattern in patterns:
        if pattern not in modules:
            raise missing(key, pattern)
    from medft.tuning import under

    language = _as_list(arch.get("components", {}).get("language"))
    for key in ("attention", "ffn"):
        wanted = set(arch.get(key) or [])
        if wanted and not any(type(m).__name__ in wanted and under(n, language) for n, m in modules.items()):
            raise missing(key, f"any of {sorted(wanted)} in the language model")


def _as_list(value: Any) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


# -- building --------------------------------------------------------------------------------


def build_image_text(
    arch: dict[str, Any], name: str = "image_text", pretrained: str | None = None, config: dict[str, Any] | None = None,
    task: str = "vqa", image_size: int = 224, chat_template: str | None = None,
    report_prompt: str = DEFAULT_REPORT_PROMPT, max_question_len: int = 32, max_answer_len: int = 16,
    trust_remote_code: bool = False, **load: Any,
) -> ImageTextVLM:
    """Load ``pretrained`` (a transformers-format hub id or local dir: ``AutoModelForImageTextToText``
    and ``AutoProcessor``), or build random weights from ``config`` (tiny models: the family's kit in
    :mod:`medft.models.tiny_families`); ``load``: dtype, gradient_checkpointing, attn_implementation,
    seed (:func:`medft.models.loading.load_or_build`). ``chat_template`` replaces the checkpoint's
    (null: keep it; a checkpoint without one gets the family's, if it has one)."""
    from transformers import AutoModelForImageTextToText

    from medft.models import tiny_families

    ImageTextVLM.check_can_do(task, name)  # before any weights load
    arch = {"family": "llava", **arch}  # runs written before LLaVA joined the family have no arch.family
    family = arch["family"]
    if family not in tiny_families.FAMILIES:
        raise ConfigError(
            f"model {name}: arch.family={family!r} is not known; use one of {sorted(tiny_families.FAMILIES)} "
            "(medft/configs/model/arch/<family>.yaml)"
        )
    kit = tiny_families.FAMILIES[family]
    model, processor = load_or_build(
        AutoModelForImageTextToText, kit.loader(), pretrained, config,
        lambda: kit.processor(config, image_size), lambda processor: tiny_families.random_model(kit, config, processor, image_size),
        trust_remote_code=trust_remote_code, **load,
    )
    check_arch(model, arch)
    kit.complete(processor, model.config)
    if chat_template or (not getattr(processor, "chat_template", None) and kit.chat_template):
        processor.chat_template = chat_template or kit.chat_template
    limits = {"max_question_len": max_question_len, "max_answer_len": max_answer_len}
    return ImageTextVLM(model, processor, arch, report_prompt=report_prompt, name=name, pretrained=pretrained, task=task,
                        **limits)
