"""The image-text-to-text family: every tiny family (LLaVA, Gemma 3, PaliGemma, Qwen2-VL, Qwen2.5-VL,
Idefics3) batches, masks, generates, round-trips through save_pretrained and trains from the CLI.
(Every family x tune mode through the Lightning module: tests/test_tune_models.py.)"""

from __future__ import annotations

import json

import pytest
import torch
from medft_testing import TINY, cache, cli  # noqa: F401 - fixtures
from test_models import build, image, save_checkpoint

from medft.commands.export import export
from medft.commands.params import tune_config
from medft.models.image_text import check_arch
from medft.models.tiny_families import FAMILIES
from medft.training.pipeline import load_run_model
from medft.tuning import apply_tuning, component_of, norm_kind
from medft.util.errors import ConfigError

TINY_MODELS = {"llava": "llava_tiny", "gemma3": "medgemma_tiny", "paligemma": "paligemma_tiny",
               "qwen2_vl": "qwen2_vl_tiny", "qwen2_5_vl": "qwen2_5_vl_tiny", "idefics3": "smolvlm_tiny"}
NEW = [m for m in TINY_MODELS.values() if m != "llava_tiny"]  # llava_tiny's own tests: test_models.py


def records() -> list[dict]:
    """Questions of different lengths and images of different shapes: padding on both sides is exercised."""
    qa = [("Is there a lesion?", "yes", "CLOSED"), ("Which organ is shown in this image of the chest?", "left lung", "OPEN"),
          ("How many?", "two", "OPEN")]
    return [{"id": i, "question": q, "answer": a, "answer_type": t, "pil_image": image(i, 48 + 16 * i)}
            for i, (q, a, t) in enumerate(qa)]


def test_every_family_has_a_tiny_model():
    assert set(TINY_MODELS) == set(FAMILIES)


@pytest.mark.parametrize("name", TINY_MODELS.values())
def test_labels_are_the_answer_and_eos_and_token_inputs_follow_the_sequence(name):
    net = build(name)
    batch = net.collate(records())
    tok = net.tokenizer
    for i, r in enumerate(records()):
        answer = tok(r["answer"], add_special_tokens=False).input_ids + [tok.eos_token_id]
        labelled = batch["labels"][i][batch["labels"][i] != -100].tolist()
        assert labelled == answer
        n = int(batch["attention_mask"][i].sum())
        assert batch["input_ids"][i, n - len(answer):n].tolist() == answer  # right after the prompt
        prompt = batch["prompt_ids"][i][batch["prompt_attention_mask"][i].bool()].tolist()
        assert batch["input_ids"][i, : n - len(answer)].tolist() == prompt
        for key in net.forward_inputs:
            if f"prompt_{key}" in batch:  # one value per token (token_type_ids): the answer's is the arch's
                tail = batch[key][i, n - len(answer):n]
                assert tail.tolist() == [net.arch.get("answer_token_type", 0)] * len(answer)
    assert torch.isfinite(net.loss(batch))


def test_the_families_extra_inputs_reach_the_model():
    gemma = build("medgemma_tiny").collate(records())
    assert int(gemma["token_type_ids"].sum()) == 3 * 4  # 4 soft image tokens per image, marked 1
    pali = build("paligemma_tiny").collate(records())
    assert int(pali["token_type_ids"].sum()) == sum(len(r["answer"].split()) + 1 for r in records())  # answers: 1
    qwen = build("qwen2_5_vl_tiny").collate(records())
    assert qwen["image_grid_thw"].shape == (3, 3) and "mm_token_type_ids" in qwen
    smol = build("smolvlm_tiny").collate(records())
    assert smol["pixel_attention_mask"].shape[:2] == (3, 1)


@pytest.mark.parametrize("name", TINY_MODELS.values())
def test_batched_generation_with_left_padding_gives_the_answers_one_by_one_gives(name):
    torch.manual_seed(0)
    net = build(name).eval()
    rs = records()
    batched = net.generate(net.collate(rs), max_new_tokens=4)
    alone = [net.generate(net.collate([r]), max_new_tokens=4)[0] for r in rs]
    assert batched == alone


@pytest.mark.parametrize("name", NEW)
def test_save_pretrained_round_trips_model_and_processor(name, tmp_path):
    net = build(name).eval()
    ckpt = save_checkpoint(net, tmp_path / "ckpt")
    loaded = build(name, f"model.pretrained={ckpt}").eval()
    assert type(loaded.model) is type(net.model) and type(loaded.processor).__name__ == type(net.processor).__name__
    assert loaded.prompt("Is there a lesion?") == net.prompt("Is there a lesion?")
    batch, again = net.collate(records()), loaded.collate(records())
    assert torch.equal(batch["input_ids"], again["input_ids"])
    with torch.no_grad():
        assert torch.allclose(net.loss(batch), loaded.loss(again))


# -- what layernorm selects, per family and role ------------------------------------------------
NORMS = {  # family -> norm modules that must be among layernorm's (by role), beyond the decoder layers' own
    "gemma3": {"projector": {"model.multi_modal_projector.mm_soft_emb_norm"},
               "language": {"model.language_model.layers.0.self_attn.q_norm", "model.language_model.layers.0.self_attn.k_norm",
                            "model.language_model.norm"}},
    "qwen2_vl": {"projector": {"model.visual.merger.ln_q"}, "vision": {"model.visual.blocks.0.norm1"}},
    "qwen2_5_vl": {"projector": {"model.visual.merger.ln_q"}, "vision": {"model.visual.blocks.0.norm1"}},
    "paligemma": {"vision": {"model.vision_tower.post_layernorm"}},
    "idefics3": {"vision": {"model.vision_model.post_layernorm"}, "language": {"model.text_model.norm"}},
}


@pytest.mark.parametrize("family", sorted(NORMS))
def test_layernorm_trains_every_norm_by_type_and_role(family):
    net = build(TINY_MODELS[family])
    norms = {n for n, m in net.model.named_modules() if norm_kind(m)}
    report = apply_tuning(net, tune_config("layernorm", None, None))
    trained = {n.rsplit(".", 1)[0] for n in report.trainable}
    assert trained == norms  # every norm module (none unused in these families), nothing else
    for role, names in NORMS[family].items():
        assert names <= trained and {component_of(n, net.arch["components"]) for n in names} == {role}
    assert sum(report.modules.values()) == len(norms)
    roles = {component_of(n, net.arch["components"]) for n in norms}
    assert roles == ({"vision", "projector", "language"} if family in ("gemma3", "qwen2_vl", "qwen2_5_vl")
                     else {"vision", "language"})  # PaliGemma's and Idefics3's projectors have no norm
    for role in ("vision", "projector", "language"):
        if role not in roles:
            with pytest.raises(ConfigError, match=f"matched no parameter in components \\['{role}'\\]"):
                apply_tuning(build(TINY_MODELS[family]), tune_config("layernorm", [role], None))
            continue
        part = apply_tuning(build(TINY_MODELS[family]), tune_config("layernorm", [role], None))
        assert {component_of(n, net.arch["components"]) for n in part.trainable} == {role}


def test_gemma_rmsnorm_is_the_one_plus_weight_form_and_trains():
    net = build("medgemma_tiny")
    norm = net.model.get_submodule("model.language_model.layers.0.self_attn.q_norm")
    assert type(norm).__name__ == "Gemma3RMSNorm" and torch.all(norm.weight == 0)  # x * (1 + w): starts at w = 0
    report = apply_tuning(net, tune_config("layernorm", ["language"], None))
    assert "model.language_model.layers.0.self_attn.q_norm.weight" in report.trainable


@pytest.mark.parametrize("name", NEW)
def test_lora_defaults_to_the_language_models_projections(name):
    net = build(name)
    report = apply_tuning(net, tune_config("lora", None, None))
    assert report.trainable and {component_of(n, net.arch["components"]) for n in report.trainable} == {"language"}
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in report.trainable} == {"q_proj", "k_proj", "v_proj", "o_proj"}


def test_adapters_leave_out_qwens_conv3d_patch_embed():
    net = build("qwen2_vl_tiny")
    tune = dict(tune_config("lora", ["vision"], None), target_modules=["proj", "qkv"])  # patch_embed.proj is a Conv3d
    report = apply_tuning(net, tune)
    assert report.trainable and not any("patch_embed" in n for n in report.trainable)
    net = build("qwen2_vl_tiny")
    net.arch["no_adapters"] = ["model.visual.blocks.0"]  # what arch.no_adapters names, no adapter wraps
    report = apply_tuning(net, dict(tune_config("lora", ["vision"], None), target_modules=["qkv"]))
    assert {n.split(".lora_")[0] for n in report.trainable} == {"base_model.model.model.visual.blocks.1.attn.qkv"}


def test_an_arch_pattern_that_matches_nothing_names_the_family_and_the_pattern():
    net = build("medgemma_tiny")
    arch = dict(net.arch, components={**net.arch["components"], "projector": "model.projector"})
    with pytest.raises(ConfigError, match=r"family gemma3: arch.components.projector names 'model.projector'.*arch/gemma3.yaml"):
        check_arch(net.model, arch)
    with pytest.raises(ConfigError, match=r"family gemma3: arch.attention names .*LlamaAttention"):
        check_arch(net.model, dict(net.arch, attention=["LlamaAttention"]))
    with pytest.raises(Exception, match="arch.family='nope' is not known"):  # ConfigError, through hydra's instantiate
        build("medgemma_tiny", "model.arch.family=nope")


# -- from the command line: train, export, load with transformers alone -------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", NEW)
def test_each_family_trains_layernorm_and_lora_and_exports_what_it_trained(name, cli, cache, tmp_path, capsys):
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText

    status, out, err, run = cli(f"model={name}", "+tune=layernorm", "trainer.max_epochs=1", *TINY)
    assert status == 0, err
    net = load_run_model(run)["net"]
    trained = {n: p.detach() for n, p in net.model.named_parameters() if p.requires_grad}
    hf = export(run, "hf", tmp_path / "hf")
    plain = AutoModelForImageTextToText.from_pretrained(hf)
    weights = dict(plain.named_parameters())
    assert trained and all(torch.equal(weights[n], p) for n, p in trained.items())
    saved = load_file(run / "trained.safetensors")  # what medft reported training: the file and params/trainable
    assert set(saved) == set(trained) and all(torch.equal(weights[n], t) for n, t in saved.items())
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["params/trainable"] == sum(t.numel() for t in saved.values())
    norms = {n for n, m in plain.named_modules() if norm_kind(m)}
    assert {n.rsplit(".", 1)[0] for n in trained} == norms  # the norm modules hold exactly what medft trained
    assert metrics["params/modules/layernorm"] + metrics["params/modules/rmsnorm"] == len(norms)

    # ask answers as the run answered in its test
    from medft.cli import main
    from medft.data.sources import demo

    row = json.loads((run / "predictions.jsonl").read_text().splitlines()[0])
    images = {r["id"]: r["image"] for r in demo(str(cache / "demo"))["test"]}
    capsys.readouterr()
    main(["ask", str(run), f"image={images[row['id']]}", f"question={row['question']}"])
    assert capsys.readouterr().out.strip().splitlines()[-1] == row["prediction"]

    status, out, err, lora = cli(f"model={name}", "+tune=lora", "trainer.max_epochs=1", *TINY, run_dir=tmp_path / "lora")
    assert status == 0, err
    from peft import PeftModel

    adapter = export(lora, "peft", tmp_path / "peft")
    tuned = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(adapter / "base"), adapter)
    medft = load_run_model(lora)["net"].model
    ours = {n: p for n, p in medft.named_parameters() if "lora_" in n}
    theirs = dict(tuned.named_parameters())
    assert ours and all(torch.equal(p, theirs[n]) for n, p in ours.items())


@pytest.mark.parametrize("name", ["qwen2_vl_tiny", "qwen2_5_vl_tiny"])
def test_prefix_is_refused_where_peft_cannot_prefix_the_family(name):
    from medft.tuning import UnsupportedMode

    with pytest.raises(UnsupportedMode, match=f"tune=prefix: {name}: .*M-RoPE.*use lora, dora, ia3 or layernorm instead"):
        apply_tuning(build(name), tune_config("prefix", None, None))


def test_a_run_dir_from_before_llava_joined_the_family_still_builds():
    from omegaconf import OmegaConf

    from medft.models import build_model
    from medft.models.base import model_config
    from medft.runs.trust import trusted_model_config

    own = model_config("llava_tiny")
    old_arch = {k: v for k, v in own["arch"].items() if k not in ("family", "forward_inputs")}  # the arch of then
    node = {**OmegaConf.to_container(OmegaConf.create({"seed": 0, "dataset": {"task": "vqa"}, "model": own}).model, resolve=True),
            "_target_": "medft.models.llava.build_llava", "arch": old_arch}
    net = build_model(OmegaConf.create(trusted_model_config(node, "run")))
    assert type(net).__name__ == "ImageTextVLM" and net.family == "llava"
