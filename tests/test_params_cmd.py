"""``medft params``: full-size counts from the shipped architecture configs, offline, in seconds,
and the same numbers a training run logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from medft.config import CONFIG_DIR, normalize_overrides, register_resolvers
from medft.errors import ConfigError
from medft.params_cmd import count_modes, format_table, mode_names
from test_models import ONE_THREAD, build, save_checkpoint

REPO = Path(__file__).resolve().parents[1]


def params_cfg(*overrides: str):
    register_resolvers()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("params", normalize_overrides(list(overrides), "params"))


def counts(model: str, *overrides: str) -> dict:
    return count_modes(params_cfg(f"model={model}", *overrides).model, mode_names(None))


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
    from_dir = counts("llava_med", f"model.pretrained={ckpt}")  # meta device, from ckpt/config.json
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
    assert table[1].split() == ["mode", "trainable", "%", "vision", "text", "decoder"]
    rows = {line.split()[0]: line.split() for line in table[4:4 + len(result["modes"])]}
    assert list(rows) == list(result["modes"])
    assert rows["full"][1:3] == [f"{result['total']:,}", "100.0000"]


def test_cli_counts_llava_med_offline_in_seconds(tmp_path):
    env = {**os.environ, **ONE_THREAD, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "medft.cli", "params", "model=llava_med", "format=json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    elapsed = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["model"] == "llava_med" and result["total"] == 7_566_743_552
    assert set(result["modes"]) == set(mode_names(None))
    assert set(result["components"]) == {"vision", "projector", "language"}
    assert elapsed < 30, f"medft params took {elapsed:.1f} s"


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
