"""``medft params``: full-size counts from the shipped architecture configs, offline, in seconds,
and the same numbers a training run logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from test_models import ONE_THREAD, build, save_checkpoint

from medft.commands.params import count_modes, format_table, mode_names
from medft.config.overrides import normalize_overrides
from medft.config.resolvers import register_resolvers
from medft.config.search import CONFIG_DIR
from medft.util.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def params_cfg(*overrides: str):
    register_resolvers()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("params", normalize_overrides(list(overrides), "params"))


def counts(model: str, *overrides: str) -> dict:
    cfg = params_cfg(f"model={model}", *overrides)
    modes = mode_names(list(cfg.modes) if cfg.modes else None)
    return count_modes(cfg.model, modes, cfg.components, cfg.lora_r, cfg.norm_params)


def test_llava_med_counts_follow_from_the_published_architecture():
    result = counts("llava_med")
    hidden, kv, layers, vocab, inter = 4096, 1024, 32, 32064, 14336
    vision_hidden, vision_layers = 1024, 24
    modes = result["modes"]
    assert result["total"] == 7_566_743_552  # 7.57B: CLIP ViT-L/14-336 + projector + Mistral-7B
    comps = result["components"]
    assert comps["projector"]["total"] == (1024 * hidden + hidden) + (hidden * hidden + hidden)
    assert comps["language"]["total"] == 7_242_256_384
    # LoRA r=8 on q/k/v/o of every Mistral layer; k and v project to the 8 KV heads (1024)
    r = 8
    assert modes["lora"]["trainable"] == layers * r * (2 * (hidden + hidden) + 2 * (hidden + kv))
    assert comps["vision"]["trainable"]["lora"] == 0
    # norms: CLIP pre_layrnorm + 2 per used layer (23 of 24); Mistral 2 per layer + the final norm
    assert modes["layernorm"]["trainable"] == (1 + 2 * (vision_layers - 1)) * 2 * vision_hidden + (2 * layers + 1) * hidden
    assert modes["layernorm"]["modules"] == {"layernorm": 47, "rmsnorm": 65}
    assert 0.001 < modes["layernorm"]["pct"] < 0.01
    # full trains everything but the last vision layer and post_layernorm (never used: feature layer -2)
    last_layer = 4 * (vision_hidden * vision_hidden + vision_hidden) + 2 * vision_hidden * 4096 + 4096 + vision_hidden \
        + 2 * 2 * vision_hidden
    assert result["total"] - modes["full"]["trainable"] == last_layer + 2 * vision_hidden
    assert result["unused"] == ["model.vision_tower.encoder.layers.23", "model.vision_tower.post_layernorm"]
    assert modes["ffn"]["trainable"] > modes["attention"]["trainable"] > modes["lora"]["trainable"]
    assert modes["frozen"]["trainable"] == 0 and comps["language"]["trainable"]["bitfit"] == 0  # Mistral: no biases
    assert vocab * hidden * 2 < comps["language"]["total"]


def test_blip_counts_follow_from_the_published_architecture():
    vqa, report = counts("blip_vqa"), counts("blip_report")
    # blip-vqa-base: 361.2M (the hub's 385M counts the tied decoder embedding twice)
    assert vqa["total"] == 361_230_140
    assert report["total"] == 223_971_644
    assert vqa["components"]["vision"]["total"] == report["components"]["vision"]["total"] == 86_090_496
    for result in (vqa, report):
        modes = result["modes"]
        assert 0.01 < modes["layernorm"]["pct"] < 0.1  # a few hundredths of a percent
        assert modes["layernorm"]["modules"]["rmsnorm"] == 0
        assert modes["full"]["trainable"] == result["total"] and result["unused"] == []
        assert result["components"]["vision"]["trainable"]["lora"] == 0  # query/value live in the text side
    # LoRA r=8 on query/value of self- and cross-attention, 12 layers, text encoder and decoder
    assert vqa["modes"]["lora"]["trainable"] == 2 * 12 * 4 * 8 * (768 + 768)
    assert vqa["modes"]["layernorm"]["modules"]["layernorm"] == 25 + 37 + 38


def test_a_local_checkpoint_is_counted_from_its_config_json(tmp_path):
    ckpt = save_checkpoint(build("llava_tiny"), tmp_path / "ckpt")
    from_dir = counts("llava_med", f"model.pretrained={ckpt}", "model.dtype=float32")  # meta device, from ckpt/config.json
    built = counts("llava_tiny")  # the real tiny model
    assert from_dir["modes"] == built["modes"] and from_dir["total"] == built["total"]
    assert from_dir["components"] == built["components"]


def test_unknown_checkpoint_or_mode_is_a_one_line_error():
    with pytest.raises(ConfigError, match="no architecture config for model.pretrained='someone/unknown'"):
        counts("llava_med", "model.pretrained=someone/unknown")
    with pytest.raises(ConfigError, match="unknown mode"):
        mode_names(["layernorm", "prefix_tuning"])


def test_table_lists_every_mode_and_component():
    result = counts("blip_tiny")
    table = format_table(result).splitlines()
    assert table[0].startswith("blip_tiny (random weights): ")
    assert table[1].split() == ["mode", "trainable", "%", "vision", "text", "decoder", "GiB"]
    rows = {line.split()[0]: line.split() for line in table[4:4 + len(result["modes"])]}
    assert list(rows) == list(result["modes"])
    assert rows["full"][1:3] == [f"{result['total']:,}", "100.0000"]


def test_cli_counts_llava_med_offline_without_building_its_weights(tmp_path):
    """7.6B parameters counted on the meta device: the process never holds the weights (15 GB in bf16).
    Measured by memory, not time (speed belongs to benchmarks)."""
    import resource

    env = {**os.environ, **ONE_THREAD, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run(
        [sys.executable, "-m", "medft.cli", "params", "model=llava_med", "format=json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["model"] == "llava_med" and result["total"] == 7_566_743_552
    assert set(result["modes"]) == set(mode_names(None))
    assert set(result["components"]) == {"vision", "projector", "language"}
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # the largest child so far, KiB
    assert peak_gb < 4, f"a medft child process peaked at {peak_gb:.1f} GB: were the weights built?"


def test_training_run_logs_the_same_counts(tmp_path):
    """metrics.json params/* of a real `medft train` run == `medft params` for that model and mode."""
    env = {**os.environ, **ONE_THREAD, "MEDFT_LOG_DIR": str(tmp_path / "logs"), "MEDFT_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "medft.cli", "train", "model=llava_tiny", "+tune=layernorm", "debug=fast",
           "data.batch_size=8", "data.eval_batch_size=16"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dirs = list((tmp_path / "logs").rglob("metrics.json"))
    assert len(run_dirs) == 1
    metrics = json.loads(run_dirs[0].read_text())
    expected = counts("llava_tiny")
    assert metrics["params/total"] == expected["total"]
    assert metrics["params/trainable"] == expected["modes"]["layernorm"]["trainable"]
    assert metrics["params/trainable_pct"] == pytest.approx(expected["modes"]["layernorm"]["pct"])
    assert metrics["params/modules/layernorm"] == 3 and metrics["params/modules/rmsnorm"] == 5
    for comp, c in expected["components"].items():
        assert metrics[f"params/{comp}/trainable"] == c["trainable"]["layernorm"]
    assert "test/acc" in metrics
    predictions = (run_dirs[0].parent / "predictions.jsonl").read_text().splitlines()
    assert predictions and {"id", "question", "answer", "prediction"} <= set(json.loads(predictions[0]))


def peft_trainable(hub_id: str, config) -> int:
    """peft's own count for ``config`` on the shipped architecture, on the meta device (medft not involved)."""
    from peft import get_peft_model

    from medft.models.loading import arch_config, build_on_meta

    return get_peft_model(build_on_meta(arch_config(hub_id, False)), config).get_nb_trainable_parameters()[0]


def test_new_modes_on_llava_med_match_peft_on_the_meta_device():
    from peft import IA3Config, LoraConfig, PrefixTuningConfig

    hub, result = "chaoyinshe/llava-med-v1.5-mistral-7b-hf", counts("llava_med", "modes=[ia3,dora,prefix]")
    modes, layers, hidden, kv, inter = result["modes"], 32, 4096, 1024, 14336
    lm = r".*language_model\..*\."
    assert modes["ia3"]["trainable"] == peft_trainable(hub, IA3Config(
        target_modules=lm + "(k_proj|v_proj|down_proj)", feedforward_modules=r".*\.down_proj")) \
        == layers * (kv + kv + inter) == 524_288  # k, v scale their outputs; down_proj its input
    assert modes["dora"]["trainable"] == peft_trainable(hub, LoraConfig(
        r=8, lora_alpha=32, target_modules=lm + "(q_proj|k_proj|v_proj|o_proj)", use_dora=True)) \
        == 7_143_424
    assert modes["dora"]["trainable"] == 6_815_744 + layers * (hidden + kv + kv + hidden)  # lora + a magnitude per output
    assert modes["prefix"]["trainable"] == peft_trainable(hub, PrefixTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=20)) == 20 * layers * 2 * kv == 1_310_720  # 8 KV heads x 128
    for mode in ("ia3", "dora", "prefix"):
        assert result["components"]["language"]["trainable"][mode] == modes[mode]["trainable"]


def test_new_modes_on_blip_vqa_match_peft_on_the_meta_device():
    from peft import IA3Config, LoraConfig

    hub, result = "Salesforce/blip-vqa-base", counts("blip_vqa", "modes=[ia3,dora,prefix]")
    modes, ffn = result["modes"], r".*\.mlp\.fc2|.*\.layer\.\d+\.output\.dense"  # the FFN's output dense, not attention's
    assert modes["ia3"]["trainable"] == peft_trainable(hub, IA3Config(
        target_modules=r"text_(encoder|decoder)\..*\.self\.(key|value)|" + ffn, feedforward_modules=ffn)) \
        == 12 * (3072 + 2 * (2 * 2 * 768 + 3072)) == 184_320  # vision fc2 in; text self+cross k, v out, FFN in
    assert result["components"]["vision"]["trainable"]["ia3"] == 12 * 3072
    assert modes["dora"]["trainable"] == peft_trainable(hub, LoraConfig(
        r=8, lora_alpha=32, target_modules=["query", "value"], use_dora=True)) == 1_179_648 + 2 * 12 * 4 * 768
    assert modes["prefix"]["trainable"] is None and "use lora, dora, ia3 or layernorm instead" in modes["prefix"]["unsupported"]
    assert all(c["trainable"]["prefix"] is None for c in result["components"].values())


@pytest.mark.parametrize(("model", "weight", "bias"), [
    ("llava_med", 47 * 1024 + 65 * 4096, 47 * 1024),  # CLIP LayerNorms have both; Mistral's RMSNorms a gain only
    ("blip_vqa", 153_600 // 2, 153_600 // 2),
])
def test_norm_params_counts_each_half(model, weight, bias):
    for half, n in (("weight", weight), ("bias", bias), ("both", weight + bias)):
        assert counts(model, "modes=[layernorm]", f"norm_params={half}")["modes"]["layernorm"]["trainable"] == n


def test_cli_table_for_blip_vqa_lists_every_mode_and_why_prefix_is_not(tmp_path):
    env = {**os.environ, **ONE_THREAD, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run([sys.executable, "-m", "medft.cli", "params", "model=blip_vqa"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines()[4:] if line.split()}
    assert rows["ia3"][1:3] == ["184,320", "0.0510"] and rows["dora"][1] == "1,253,376"
    assert rows["prefix"][1:] == ["-"] * 6
    assert [m for m in rows if m in mode_names(None)] == mode_names(None)
    assert "prefix: not available: peft's prefix tuning needs a decoder-only language model" in proc.stdout


# -- the image-text-to-text models at full size (issue #24): counted from their shipped config.json ----------


def reference_total(hub_id: str) -> int:
    """transformers' own AutoModelForImageTextToText for the shipped config, on the meta device (no medft code)."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(CONFIG_DIR / "model" / "arch" / hub_id))
    return sum(p.numel() for p in model.parameters())


def test_medgemma_4b_counts_follow_from_the_published_architecture():
    result = counts("medgemma_4b", "modes=[layernorm,lora,bitfit,full]")
    assert result["total"] == reference_total("google/medgemma-4b-it") == 4_300_079_472  # the hub's 4.3B
    comps, modes = result["components"], result["modes"]
    vision, hidden, layers, vision_layers = 1152, 2560, 34, 27
    assert comps["projector"]["total"] == vision * hidden + vision  # mm_input_projection_weight + soft-embedding norm
    # SigLIP: 2 LayerNorms a layer + post_layernorm (weight and bias); Gemma 3: input, post-attention,
    # pre- and post-feed-forward norms and q_norm/k_norm (head_dim 256) a layer, the final norm; the projector's norm
    assert modes["layernorm"]["modules"] == {"layernorm": 2 * vision_layers + 1, "rmsnorm": 6 * layers + 2}
    assert comps["vision"]["trainable"]["layernorm"] == (2 * vision_layers + 1) * 2 * vision
    assert comps["projector"]["trainable"]["layernorm"] == vision
    assert comps["language"]["trainable"]["layernorm"] == layers * (4 * hidden + 2 * 256) + hidden
    # LoRA r=8 on q (8 heads x 256), k, v (4 KV heads x 256), o of every language layer
    assert modes["lora"]["trainable"] == layers * 8 * ((hidden + 2048) + 2 * (hidden + 1024) + (2048 + hidden))
    assert comps["language"]["trainable"]["bitfit"] == 0 and comps["vision"]["trainable"]["bitfit"] > 0  # Gemma: no biases
    assert modes["full"]["trainable"] == result["total"] and result["unused"] == []


def test_lingshu_7b_counts_follow_from_the_published_architecture():
    result = counts("lingshu_7b", "modes=[layernorm,lora]")
    assert result["total"] == reference_total("lingshu-medical-mllm/Lingshu-7B") == 8_292_166_656  # the hub's 8.29B
    comps, modes = result["components"], result["modes"]
    hidden, layers, vision, blocks = 3584, 28, 1280, 32
    # Qwen2.5-VL's vision blocks and the merger's ln_q are RMSNorms (a gain only), as the language model's
    assert modes["layernorm"]["modules"] == {"layernorm": 0, "rmsnorm": 2 * blocks + 1 + 2 * layers + 1}
    assert comps["vision"]["trainable"]["layernorm"] == 2 * blocks * vision
    assert comps["projector"]["trainable"]["layernorm"] == vision  # visual.merger.ln_q counts as projector
    assert comps["language"]["trainable"]["layernorm"] == (2 * layers + 1) * hidden
    assert comps["projector"]["total"] == vision + (4 * vision) ** 2 + 4 * vision + 4 * vision * hidden + hidden
    assert modes["lora"]["trainable"] == layers * 8 * (2 * (hidden + hidden) + 2 * (hidden + 512))  # 4 KV heads x 128


def test_medvlm_r1_counts_follow_from_the_published_architecture():
    result = counts("medvlm_r1", "modes=[layernorm]")
    assert result["total"] == reference_total("JZPeterPan/MedVLM-R1") == 2_208_985_600  # Qwen2-VL-2B: 2.21B
    comps, modes = result["components"], result["modes"]
    # Qwen2-VL's vision blocks use LayerNorm (weight and bias), the merger's ln_q too
    assert modes["layernorm"]["modules"] == {"layernorm": 2 * 32 + 1, "rmsnorm": 2 * 28 + 1}
    assert comps["vision"]["trainable"]["layernorm"] == 2 * 32 * 2 * 1280
    assert comps["projector"]["trainable"]["layernorm"] == 2 * 1280
    assert comps["language"]["trainable"]["layernorm"] == (2 * 28 + 1) * 1536


@pytest.mark.parametrize("model", ["medgemma_4b", "lingshu_7b"])
def test_cli_counts_the_image_text_models_offline(model, tmp_path):
    env = {**os.environ, **ONE_THREAD, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run([sys.executable, "-m", "medft.cli", "params", f"model={model}", "format=json"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert set(result["components"]) == {"vision", "projector", "language"}
    assert sum(c["total"] for c in result["components"].values()) == result["total"]  # every parameter has a role
    assert set(result["modes"]) == set(mode_names(None))


def test_docs_params_table_is_the_commands_output():
    """docs/params.md's side-by-side table: every count and share is what `medft params` prints today."""
    text = (REPO / "docs" / "params.md").read_text()
    section = text.split("## Four models side by side", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    rows = [[c.strip() for c in line.strip().strip("|").split(" | ")] for line in section.splitlines() if line.startswith("| `")]
    models = ["medgemma_4b", "lingshu_7b", "llava_med", "blip_vqa"]
    results = {m: counts(m) for m in models}
    assert [row[0].strip("`") for row in rows] == mode_names(None)
    for row in rows:
        mode = row[0].strip("`")
        for model, cell in zip(models, row[1:]):
            entry = results[model]["modes"][mode]
            if entry["trainable"] is None:
                assert cell.startswith("not available"), (model, mode, cell)
            elif mode == "frozen":
                assert cell == "0"
            else:
                assert cell == f"{entry['trainable']:,} ({entry['pct']:.4f}%)", (model, mode, cell)
    totals = next(line for line in section.splitlines() if line.startswith("| all parameters"))
    assert totals.strip("| ").split(" | ")[1:] == [f"{results[m]['total']:,}" for m in models]
