"""BLIP-style Med-VLM for VQA: ``BlipForQuestionAnswering`` plus its processor.

One sample's path: record (image, question, answer) -> ``collate`` (processor: pixels + question
ids; answer ids with ``[DEC]`` first, padding masked to -100) -> ``loss`` / ``generate`` / ``rank``.

``loss`` and ``generate`` call the three towers themselves (vision encoder -> question encoder
cross-attending to the image -> answer decoder cross-attending to the question), exactly as
``BlipForQuestionAnswering.forward`` / ``.generate`` do, so that the image features can come from a
cache: with ``cache_image_features: auto`` and the whole vision encoder frozen, each image's
features are computed once (vision encoder in eval mode, no gradient) and reused, keyed by the
image path. Anything trainable in the vision encoder, or a batch marked ``augmented``, turns it off.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import BlipConfig, BlipForQuestionAnswering, BlipImageProcessorPil, BlipProcessor

from medft.models.base import MedVLM
from medft.models.loading import load_or_build
from medft.models.tokenizer import build_offline_tokenizer
from medft.util.errors import ConfigError


class BlipVQA(MedVLM):
    """A BLIP VQA model: batching, loss, answer generation and answer ranking.

    ``arch`` (from the model config) names the architecture's pieces for the tuning module:
    ``components`` (component name -> module prefix), ``attention`` and ``ffn`` (module class
    names whose Linear children are attention / feed-forward projections), ``lora_targets``.
    """

    tasks = ("vqa",)
    does = "answers questions (task vqa); pick a report model for reports"
    can_rank = True

    def __init__(
        self, *parts: Any, max_question_len: int = 32, max_answer_len: int = 8, cache_image_features: str | bool = "auto",
        **identity: Any,
    ) -> None:
        super().__init__(*parts, **identity)  # model, processor, arch; name, pretrained, task
        self.max_question_len = max_question_len
        self.max_answer_len = max_answer_len
        if cache_image_features not in ("auto", False, "false"):
            raise ConfigError(f"model.cache_image_features={cache_image_features!r}: use auto or false")
        self.cache_image_features = cache_image_features == "auto"
        self.feature_cache: dict[str, torch.Tensor] = {}  # image path -> vision encoder output (CPU)
        self.cache_hits = 0

    @property
    def text_limits(self) -> dict[str, int]:
        return {"question": self.max_question_len, "answer": self.max_answer_len}

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
            "image_keys": [_image_key(r) for r in records],
            "meta": [{k: r[k] for k in ("id", "question", "answer", "answer_type")} for r in records],
        }

    # -- image features, cached when the vision encoder is frozen --------------------------------
    def caching(self, batch: dict[str, Any] | None = None) -> bool:
        """True if image features may come from the cache: switched on, nothing in the vision encoder
        trains, the batch is not augmented and every image has a key (its path)."""
        if not self.cache_image_features or any(p.requires_grad for p in self.model.vision_model.parameters()):
            return False
        return batch is None or (not batch.get("augmented") and all(batch.get("image_keys") or [None]))

    def image_features(self, batch: dict[str, Any]) -> torch.Tensor:
        """The vision encoder's last hidden state for the batch's images (from the cache when it may)."""
        vision = self.model.vision_model
        pixels = batch["pixel_values"].to(self.model.dtype)
        if not self.caching(batch):
            return vision(pixel_values=pixels).last_hidden_state
        keys = batch["image_keys"]
        todo = [i for i, k in enumerate(keys) if k not in self.feature_cache]
        self.cache_hits += len(keys) - len(todo)
        if todo:
            was_training = vision.training
            vision.eval()  # deterministic features: no dropout, whatever the mode of the rest
            with torch.no_grad():
                feats = vision(pixel_values=pixels[todo]).last_hidden_state
            vision.train(was_training)
            for i, f in zip(todo, feats):
                self.feature_cache[keys[i]] = f.detach().cpu()
        return torch.stack([self.feature_cache[k] for k in keys]).to(pixels.device)

    def encode_question(self, batch: dict[str, Any]) -> torch.Tensor:
        """Question tokens cross-attending to the image: the decoder's ``encoder_hidden_states``."""
        image_embeds = self.image_features(batch)
        image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        return self.model.text_encoder(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
            encoder_hidden_states=image_embeds, encoder_attention_mask=image_mask, return_dict=False,
        )[0]

    def loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """Mean token cross-entropy of the answers (``BlipForQuestionAnswering.forward``'s loss)."""
        out = self.model.text_decoder(
            input_ids=batch["decoder_input_ids"],
            attention_mask=batch["decoder_attention_mask"],
            encoder_hidden_states=self.encode_question(batch),
            encoder_attention_mask=batch["attention_mask"],
            labels=batch["labels"],
            reduction="mean",
        )
        return out.loss.mean()

    @torch.no_grad()
    def generate(self, batch: dict[str, Any], **generate_kwargs: Any) -> list[str]:
        """Answer every question of the batch (greedy unless ``num_beams`` > 1, with the KV cache), as text."""
        question = self.encode_question(batch)
        text_config = self.model.config.text_config
        bos = torch.full((question.size(0), 1), text_config.bos_token_id, device=question.device)
        ids = self.model.text_decoder.generate(
            input_ids=bos,
            eos_token_id=text_config.sep_token_id,
            pad_token_id=text_config.pad_token_id,
            encoder_hidden_states=question,
            encoder_attention_mask=torch.ones(question.shape[:-1], dtype=torch.long, device=question.device),
            **generate_kwargs,
        )
        return [s.strip() for s in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    @torch.no_grad()
    def rank(self, batch: dict[str, Any], candidates: tuple[str, ...] = ("yes", "no")) -> list[str]:
        """For every question, the candidate answer the decoder finds most likely (summed token
        log-probabilities): all questions x candidates in one decoder forward pass."""
        question = self.encode_question(batch)
        n, k = question.size(0), len(candidates)
        tok = self.tokenizer(list(candidates), padding="longest", return_tensors="pt")
        ids = tok.input_ids.to(question.device)
        ids[:, 0] = self.tokenizer.bos_token_id  # [DEC] first, as in training
        mask = tok.attention_mask.to(question.device)
        rep = lambda t: t.repeat_interleave(k, dim=0)  # noqa: E731 - question i, candidate j at row i*k+j
        logits = self.model.text_decoder(
            input_ids=ids.repeat(n, 1), attention_mask=mask.repeat(n, 1), encoder_hidden_states=rep(question),
            encoder_attention_mask=torch.ones(n * k, question.size(1), dtype=torch.long, device=question.device),
            return_dict=True,
        ).logits
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, ids.repeat(n, 1)[:, 1:, None])[..., 0]
        scores = (logp * mask.repeat(n, 1)[:, 1:]).sum(-1).view(n, k)
        return [candidates[j] for j in scores.argmax(-1).tolist()]


def _image_key(record: dict[str, Any]) -> str | None:
    """What identifies a record's image for the feature cache: its path (or its views' paths)."""
    views = record.get("views")
    if views:
        return "|".join(str(v) for v in views)
    image = record.get("image")
    return str(image) if image else None


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


def load_blip(model_cls: type, pretrained: str | None, config: dict[str, Any] | None, image_size: int,
              max_text_len: int, **load: Any) -> tuple[nn.Module, BlipProcessor]:
    """A BLIP model and processor: ``pretrained`` loaded, or random weights built from ``config`` (tiny
    models, with the offline processor); ``load``: dtype, gradient_checkpointing, attn_implementation,
    trust_remote_code, seed (:func:`medft.models.loading.load_or_build`)."""
    def random_processor() -> BlipProcessor:
        return tiny_processor(image_size, max_text_len)

    def random_model(processor: BlipProcessor) -> nn.Module:
        return model_cls(tiny_blip_config(config, processor.tokenizer, image_size))

    return load_or_build(model_cls, BlipProcessor, pretrained, config, random_processor, random_model, **load)


def build_blip_vqa(
    arch: dict[str, Any], name: str = "blip", pretrained: str | None = None, config: dict[str, Any] | None = None,
    task: str = "vqa", image_size: int = 384, max_question_len: int = 32, max_answer_len: int = 8,
    cache_image_features: str | bool = "auto", trust_remote_code: bool = False, **load: Any,
) -> BlipVQA:
    """A :class:`BlipVQA` over ``BlipForQuestionAnswering`` (see :func:`load_blip`). ``pretrained: embedded``
    (medft's own pretrained checkpoint) is resolved to its directory before this is called
    (:func:`medft.training.pipeline.build_net`)."""
    BlipVQA.check_can_do(task, name)  # before any weights load
    model, processor = load_blip(
        BlipForQuestionAnswering, pretrained, config, image_size, max_question_len, trust_remote_code=trust_remote_code, **load
    )
    limits = {"max_question_len": max_question_len, "max_answer_len": max_answer_len}
    net = BlipVQA(
        model, processor, arch, cache_image_features=cache_image_features, name=name, pretrained=pretrained, task=task,
        **limits,
    )
    return net
