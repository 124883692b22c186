"""End to end in subprocesses: report generation on an IU X-ray fixture (bad images skipped), `medft eval`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from medft.testing.fixtures import make_iu_xray
from medft.util.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
COCO_KEYS = {f"test/{k}" for k in ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider")}
pytestmark = pytest.mark.slow


def medft(tmp_path, *args, timeout=300):
    env = {**os.environ, "MEDFT_LOG_DIR": str(tmp_path / "logs"), "MEDFT_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, "-m", "medft.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def only_run_dir(pattern: Path) -> Path:
    dirs = sorted(pattern.parent.glob(pattern.name))
    assert len(dirs) == 1, dirs
    return dirs[0]


def test_report_generation_run_writes_coco_metrics(tmp_path):
    root = make_iu_xray(tmp_path / "iu", sizes=(8, 2, 3))
    (root / "images" / "CXR1000_IM-2000" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")  # unreadable
    (root / "images" / "CXR1001_IM-2001" / "0.png").unlink()                                # missing
    proc = medft(tmp_path, "train", "dataset=iu_xray", f"dataset.root={root}", "+tune=layernorm",
                 "trainer.max_epochs=1", "data.batch_size=4", "dataset.max_new_tokens=12",
                 "dataset.skip_bad_images=true", "callbacks.progress_bar.refresh_rate=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "skipping 1 sample(s) whose image is missing" in proc.stdout
    assert "skipped 1 sample(s) whose image is unreadable" in proc.stdout
    assert "test report scores: bleu_1" in proc.stdout
    run = only_run_dir(tmp_path / "logs" / "runs" / "layernorm_iu_xray_blip_report_tiny" / "*")
    metrics = json.loads((run / "metrics.json").read_text())
    assert COCO_KEYS <= set(metrics) and "val/bleu_4" in metrics
    assert all(0.0 <= metrics[k] <= 10.0 for k in COCO_KEYS)
    assert metrics["data/skipped_missing_images"] == 1 and metrics["data/skipped_unreadable_images"] == 1
    assert metrics["params/trainable"] < metrics["params/total"]
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert [set(r) for r in rows] == [{"id", "reference", "generated"}] * 3
    assert rows[0]["id"] == "CXR1010_IM-2010" and rows[0]["reference"].startswith("Heart size normal")


def test_eval_reproduces_the_runs_own_test_predictions(tmp_path):
    """`medft eval` on the run's own dataset rebuilds model + tune and loads the trained params."""
    fast = ["debug=fast", "data.eval_batch_size=16", "callbacks.progress_bar.refresh_rate=0"]
    proc = medft(tmp_path, "train", "+tune=lora", "optim.lr=0.05", *fast)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = only_run_dir(tmp_path / "logs" / "runs" / "lora_demo_blip_tiny" / "*")
    proc = medft(tmp_path, "eval", f"ckpt={run}", "dataset=demo", "+trainer.limit_test_batches=2", fast[1],
                 "eval.protocol=llava_med")  # BLIP defaults to exact; the key re-scores the LLaVA-Med way
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = only_run_dir(tmp_path / "logs" / "evals" / "demo" / "*")
    trained = json.loads((run / "metrics.json").read_text())
    evaluated = json.loads((out / "metrics.json").read_text())
    assert evaluated["test/acc"] == pytest.approx(trained["test/acc"])
    assert evaluated["eval/tune"] == "lora" and evaluated["eval/ckpt"].endswith("trained.safetensors")
    assert (out / "predictions.jsonl").read_text() == (run / "predictions.jsonl").read_text()
    assert trained["eval/protocol"] == "exact" and evaluated["eval/protocol"] == "llava_med"
    assert "test/recall_open" in evaluated and evaluated["test/exact_acc_closed"] == pytest.approx(trained["test/acc_closed"])
    assert "test llava_med: closed" in proc.stdout and (out / "candidates.json").is_file()
    # the same run on a report dataset: refused before any model is built
    from medft.models import check_task
    from medft.training.pipeline import resolve_run, run_model_config

    assert resolve_run(run / "checkpoints" / "last.ckpt") == (run, run / "checkpoints" / "last.ckpt")
    assert resolve_run(run) == (run, run / "trained.safetensors")  # preferred over the Lightning checkpoints
    model_cfg, tune = run_model_config(run, OmegaConf.create({"paths": {}}))
    assert model_cfg.name == "blip_tiny" and tune["name"] == "lora"
    with pytest.raises(ConfigError, match="is a report dataset: evaluate it on a vqa dataset"):
        check_task(model_cfg, OmegaConf.create({"name": "iu_xray", "task": "report"}), run=run.name)
