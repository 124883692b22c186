"""One short training run per tune mode, in process: what the run dir holds and what changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medft.commands.train import train
from medft.tuning import MODE_ORDER

MODES = [m for m in MODE_ORDER if m != "prefix"]  # prefix (LLaVA only): tests/test_peft_modes.py


@pytest.mark.parametrize("mode", MODES)
def test_short_run_writes_a_self_describing_run_dir(make_cfg, mode):
    cfg = make_cfg(f"tune={mode}")
    metrics = train(cfg)
    run = Path(cfg.paths.output_dir)

    saved = json.loads((run / "metrics.json").read_text())
    assert saved["params/trainable"] == metrics["params/trainable"]
    for key in ("test/acc", "test/acc_closed", "test/acc_open", "params/total", "params/trainable_pct",
                "params/vision/trainable", "params/text/trainable", "params/decoder/trainable"):
        assert key in saved, key
    assert 0.0 <= saved["test/acc"] <= 1.0
    if mode == "full":
        assert saved["params/trainable"] == saved["params/total"]
    if mode == "frozen":
        assert saved["params/trainable"] == 0

    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 16  # one test batch (eval_batch_size=16)
    assert set(rows[0]) >= {"id", "question", "answer", "prediction", "answer_type", "correct"}
    acc = sum(r["correct"] for r in rows) / len(rows)
    assert acc == pytest.approx(saved["test/acc"])

    csv = (run / "csv" / "metrics.csv").read_text()
    assert "params/trainable" in csv
    if mode != "frozen":  # frozen: zero-shot, nothing is fit
        assert "train/loss" in csv and "val/acc" in csv


def test_only_trainable_parameters_change_and_are_checkpointed(make_cfg):
    from medft.models.blip import build_blip_vqa
    from tests.conftest import model_cfg

    cfg = make_cfg("tune=layernorm", "optim.lr=0.1")
    train(cfg)
    ckpt = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=False)
    state = ckpt["state_dict"]
    assert state and all(".LayerNorm." in k or "layer_norm" in k or "layernorm" in k for k in state)
    assert ckpt["medft"]["tune"] == "layernorm"

    fresh = build_blip_vqa(**model_cfg()).model.state_dict()  # same seed: the weights before training
    changed = [k for k, v in state.items() if not torch.equal(v, fresh[k.removeprefix("net.model.")])]
    assert changed, "no trained parameter moved"


def test_checkpoint_from_another_tune_mode_is_refused(make_cfg, tmp_path):
    from medft.util.errors import MedftError

    cfg = make_cfg("tune=layernorm")
    train(cfg)
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    other = make_cfg("tune=bitfit", f"ckpt_path={ckpt}")
    other.paths.output_dir = str(tmp_path / "other")
    with pytest.raises(SystemExit) as exit_info:
        train(other)
    assert exit_info.value.code == 2
    error = (tmp_path / "other" / "error.txt").read_text()
    assert "checkpoint does not match this run" in error and "tune='layernorm'" in error


@pytest.mark.parametrize("model", ["blip_report_tiny", "llava_tiny"])
def test_report_run_through_the_evaluator(make_cfg, tmp_path, model):
    """Both report-capable models feed the same evaluator: predictions and coco-free val metrics."""
    from medft.testing.fixtures import make_iu_xray

    root = make_iu_xray(tmp_path / "iu", sizes=(6, 2, 2))
    cfg = make_cfg("tune=layernorm", "dataset=iu_xray", f"model={model}", f"dataset.root={root}",
                   "dataset.max_new_tokens=4", "test=false")
    metrics = train(cfg)
    assert "val/bleu_4" in metrics and metrics["params/trainable"] > 0
