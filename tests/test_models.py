"""Med-VLM adapters: real loading (save_pretrained -> model.pretrained=DIR), LLaVA prompts and labels."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from PIL import Image

from medft.config.resolvers import register_resolvers
from medft.config.search import CONFIG_DIR, available
from medft.models import build_model
from medft.models.base import model_config
from medft.models.image_text import ImageTextVLM
from medft.util.errors import ConfigError, user_error
from tests.conftest import model_cfg

REPO = Path(__file__).resolve().parents[1]
# Tiny models: one intra-op thread is as fast as two, and on a busy shared CPU spinning OpenMP threads
# make every op ~50x slower. Subprocesses get the same through OMP_NUM_THREADS.
torch.set_num_threads(1)
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def build(model: str, *overrides: str):
    """Instantiate ``configs/model/<model>.yaml`` (with overrides) exactly as ``medft train`` does."""
    register_resolvers()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", [f"model={model}", *overrides])
    return build_model(cfg.model)


def image(seed: int = 0, size: int = 64) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))


def vqa_records() -> list[dict]:
    return [
        {"id": 1, "question": "Is there a lesion?", "answer": "yes", "answer_type": "CLOSED", "pil_image": image(0)},
        {"id": 2, "question": "Which organ is shown in this image?", "answer": "left kidney",
         "answer_type": "OPEN", "pil_image": image(1)},
    ]


def save_checkpoint(net, directory: Path) -> Path:
    net.model.save_pretrained(directory)
    net.processor.save_pretrained(directory)
    return directory


@pytest.mark.parametrize(
    ("tiny", "full", "extra"),
    [
        ("blip_tiny", "blip_vqa", []),
        ("llava_tiny", "llava_med", ["model.dtype=float32"]),
    ],
)
def test_checkpoint_loads_through_the_full_size_config(tmp_path, tiny, full, extra):
    """A checkpoint dir is all a user needs: the full-size config + model.pretrained=DIR."""
    original = build(tiny)
    ckpt = save_checkpoint(original, tmp_path / "ckpt")
    loaded = build(full, f"model.pretrained={ckpt}", *extra)

    assert type(loaded) is type(original)
    assert loaded.pretrained == str(ckpt)
    a, b = original.model.state_dict(), loaded.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    original.model.eval()
    loaded.model.eval()
    batch_a, batch_b = original.collate(vqa_records()), loaded.collate(vqa_records())
    for key in ("pixel_values", "input_ids", "labels"):
        assert torch.equal(batch_a[key], batch_b[key]), key
    with torch.no_grad():
        assert torch.allclose(original.loss(batch_a), loaded.loss(batch_b))


@pytest.mark.parametrize("tiny", ["blip_tiny", "llava_tiny"])
def test_a_loaded_checkpoint_trains_with_its_dropout(tmp_path, tiny):
    """from_pretrained hands back an eval-mode model and Lightning keeps each module's mode: a fine-tuned
    checkpoint must start in training mode, or its dropout never runs."""
    ckpt = save_checkpoint(build(tiny), tmp_path / "ckpt")
    net = build(tiny, f"model.pretrained={ckpt}")
    assert all(m.training for m in net.model.modules())


def test_llava_dtype_and_gradient_checkpointing_come_from_the_config(tmp_path):
    ckpt = save_checkpoint(build("llava_tiny"), tmp_path / "ckpt")
    net = build("llava_med", f"model.pretrained={ckpt}", "model.attn_implementation=eager")
    assert net.model.dtype == torch.bfloat16  # llava_med defaults: bfloat16, checkpointing on
    assert net.model.config._attn_implementation == "eager"
    assert net.model.is_activation_checkpointing
    net.model.train()
    net.model.model.language_model.norm.weight.requires_grad_(True)
    net.model.requires_grad_(False)
    net.model.model.language_model.layers[0].input_layernorm.weight.requires_grad_(True)
    loss = net.loss(net.collate(vqa_records()))
    loss.backward()  # frozen inputs + checkpointing: the trained norm still gets a gradient
    assert torch.isfinite(loss)
    assert net.model.model.language_model.layers[0].input_layernorm.weight.grad.abs().sum() > 0


def test_missing_local_checkpoint_is_one_line(tmp_path):
    missing = tmp_path / "no_such_ckpt"
    with pytest.raises(Exception) as err:
        build("llava_med", f"model.pretrained={missing}")
    cause = user_error(err.value)  # hydra.utils.instantiate wraps the builder's error
    assert isinstance(cause, ConfigError)
    message = str(cause)
    assert "\n" not in message
    assert str(missing) in message and "does not exist" in message and "model.pretrained=" in message


def test_missing_hub_checkpoint_offline_names_the_cache(tmp_path):
    """HF_HUB_OFFLINE=1: nothing is downloaded; the error names the cache it looked in."""
    env = {**os.environ, **ONE_THREAD, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "MEDFT_LOG_DIR": str(tmp_path / "logs"), "MEDFT_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "medft.cli", "train", "model=blip_vqa", "+tune=layernorm", "debug=fast",
           "model.pretrained=medft-test/not-a-checkpoint"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("medft: error:")]
    assert len(lines) == 1, proc.stderr
    assert "Hugging Face cache" in lines[0] and str(tmp_path / "hf") in lines[0]
    assert "HF_HUB_OFFLINE=1" in lines[0] and "hf download medft-test/not-a-checkpoint" in lines[0]


# -- LLaVA prompts and labels ----------------------------------------------------------------


@pytest.fixture(scope="module")
def llava() -> ImageTextVLM:
    return build("llava_tiny")


def test_llava_prompt_follows_the_mistral_chat_template(llava):
    assert llava.prompt("Is there a lesion?") == "[INST] <image>\nIs there a lesion? [/INST]"


def test_llava_labels_cover_only_the_answer_and_eos(llava):
    tok = llava.tokenizer
    batch = llava.collate(vqa_records())
    n_image = (llava.processor.image_processor.crop_size["height"] // 8) ** 2  # patch 8; CLS dropped
    for i, record in enumerate(vqa_records()):
        ids, labels, mask = batch["input_ids"][i], batch["labels"][i], batch["attention_mask"][i]
        answer = tok(record["answer"], add_special_tokens=False).input_ids + [tok.eos_token_id]
        kept = labels[labels != -100].tolist()
        assert kept == answer
        n = int(mask.sum())
        assert ids[n - len(answer):n].tolist() == answer  # the answer sits right after the prompt
        assert (labels[n:] == -100).all() and (ids[n:] == tok.pad_token_id).all()  # right padding
        assert int((ids == llava.model.config.image_token_index).sum()) == n_image
        assert ids[0] == tok.bos_token_id
        assert tok.convert_ids_to_tokens(int(ids[n - len(answer) - 1])) == "[/INST]"
    # the generation prompt: the same prompt, left-padded, ending with [/INST]
    prompt = batch["prompt_ids"]
    assert (prompt[:, -1] == tok.convert_tokens_to_ids("[/INST]")).all()
    first = batch["prompt_attention_mask"][0]
    assert first[0] == 0 and first[-1] == 1  # the shorter question is padded on the left


def test_llava_generate_returns_only_new_text(llava):
    batch = llava.collate(vqa_records())
    answers = llava.generate(batch, max_new_tokens=3)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    assert not any("[/INST]" in a or "<image>" in a for a in answers)


def test_llava_report_task_trains_on_the_report():
    torch.manual_seed(0)
    net = build("llava_tiny", "model.max_answer_len=24", "model.task=report")
    records = [
        {"id": "r1", "report": "no acute cardiopulmonary abnormality.", "pil_image": image(0)},
        {"id": "r2", "report": "small left pleural effusion. heart size is normal.", "pil_image": image(1)},
    ]
    batch = net.collate(records)
    assert net.task == "report" and batch["meta"][1] == {"id": "r2", "report": records[1]["report"]}
    assert net.prompt(net.report_prompt).startswith("[INST] <image>\n")
    n_target = len(net.tokenizer(records[1]["report"], add_special_tokens=False).input_ids) + 1
    assert int((batch["labels"][1] != -100).sum()) == n_target
    optimizer = torch.optim.AdamW(net.model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = net.loss(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    assert len(net.generate(batch, max_new_tokens=4)) == 2


def test_llava_truncates_long_answers_and_counts_them():
    net = build("llava_tiny")
    record = dict(vqa_records()[0], answer="left " * 40)
    batch = net.collate([record])
    assert int((batch["labels"] != -100).sum()) == net.max_answer_len + 1  # + </s>
    assert net.truncated == 1


# -- configs ------------------------------------------------------------------------------------


FAMILIES = {"blip_tiny": "blip_vqa", "blip_bench": "blip_vqa", "blip_med": "blip_vqa", "blip_vqa": "blip_vqa",
            "blip_report_tiny": "blip_report_gen", "blip_report": "blip_report_gen", "blip_med_report": "blip_report_gen",
            "llava_tiny": "llava", "llava_med": "llava", "medgemma_tiny": "gemma3", "paligemma_tiny": "paligemma",
            "qwen2_vl_tiny": "qwen2_vl", "qwen2_5_vl_tiny": "qwen2_5_vl", "smolvlm_tiny": "idefics3",
            "medgemma_4b": "gemma3", "lingshu_7b": "qwen2_5_vl", "medvlm_r1": "qwen2_vl"}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_each_model_config_resolves_to_its_familys_arch(name):
    """The ``arch`` block is written once per family (configs/model/arch/<family>.yaml) and inherited."""
    family = yaml.safe_load((CONFIG_DIR / "model" / "arch" / f"{FAMILIES[name]}.yaml").read_text())
    parent = family.pop("defaults", [])
    for base in (p for p in parent if p != "_self_"):
        family = {**yaml.safe_load((CONFIG_DIR / "model" / "arch" / f"{base}.yaml").read_text()), **family}
    assert model_cfg(name)["arch"] == family
    assert "arch" not in yaml.safe_load((CONFIG_DIR / "model" / f"{name}.yaml").read_text())  # not copied
    assert set(FAMILIES) == set(available("model"))


@pytest.mark.parametrize(("tiny", "full"), [("blip_tiny", "blip_vqa"), ("llava_tiny", "llava_med")])
def test_tiny_and_full_size_configs_share_the_architecture_description(tiny, full):
    load = lambda name: model_config(name)  # noqa: E731 - composed: the arch comes from the family's file
    assert load(tiny)["arch"] == load(full)["arch"]
    assert load(tiny)["_target_"] == load(full)["_target_"]


def test_full_size_configs_point_at_their_shipped_architecture():
    for name in ("blip_vqa", "blip_report", "llava_med", "medgemma_4b", "lingshu_7b", "medvlm_r1"):
        pretrained = model_cfg(name)["pretrained"]
        assert (CONFIG_DIR / "model" / "arch" / pretrained / "config.json").is_file(), name


def test_llava_checkpoint_without_patch_size_in_its_processor(tmp_path):
    """Older llava-hf conversions have no patch_size in the processor config: taken from the model."""
    import json

    original = build("llava_tiny")
    ckpt = save_checkpoint(original, tmp_path / "ckpt")
    config_file = ckpt / "processor_config.json"
    processor_config = json.loads(config_file.read_text())
    for key in ("patch_size", "num_additional_image_tokens", "vision_feature_select_strategy"):
        processor_config.pop(key)
    config_file.write_text(json.dumps(processor_config))
    loaded = build("llava_med", f"model.pretrained={ckpt}", "model.dtype=float32")
    assert torch.equal(loaded.collate(vqa_records())["input_ids"], original.collate(vqa_records())["input_ids"])
