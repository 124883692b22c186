"""Resume and determinism, end to end: a run killed with SIGKILL mid-epoch and resumed with
``resume=RUN_DIR`` ends with the same metrics.json as the same run never interrupted; the same
seed gives the same metrics twice."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

# Tiny and fast, but with what makes resuming hard: LoRA dropout (RNG), a shuffled loader, a
# cosine schedule, AdamW state, two epochs, and a kill mid-way through the second one.
# 60 train samples / batch 8 = 8 steps an epoch; last.ckpt every 3 steps: 3, 6, 8 (epoch end), 9, 12 ...
RUN = [
    "+tune=lora",
    "dataset.train_fraction=0.05",
    "data.batch_size=8",
    "data.eval_batch_size=8",
    "trainer.max_epochs=2",
    "checkpoint.every_n_steps=3",
    "+trainer.limit_val_batches=1",
    "+trainer.limit_test_batches=1",
    "eval.generate.max_new_tokens=2",
    "trainer.deterministic=true",
    "callbacks.progress_bar.refresh_rate=0",
    "+callbacks.pause._target_=medft_test_callbacks.PauseAtStep",
]
CKPT_STEP, KILL_STEP = 12, 14  # killed two steps after the mid-epoch checkpoint of epoch 2
TIMING_KEYS = {"time/train_s"}


def env_for(tmp: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, MEDFT_LOG_DIR=str(tmp / "logs"), MEDFT_CACHE_DIR=str(tmp / "cache"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def medft_train(args: list[str], env: dict[str, str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "medft.cli", "train", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, **kwargs,
    )


def metrics_of(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if k not in TIMING_KEYS}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("resume")
    run_dir = tmp / "uninterrupted"
    proc = medft_train([*RUN, f"hydra.run.dir={run_dir}"], env_for(tmp))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def test_same_seed_same_metrics(uninterrupted, tmp_path):
    run_dir = tmp_path / "again"
    proc = medft_train([*RUN, f"hydra.run.dir={run_dir}"], env_for(uninterrupted.parent))
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, second = metrics_of(uninterrupted), metrics_of(run_dir)
    assert first["train/steps"] == 16 and "test/acc" in first and "val/loss" in first
    assert first == second
    # the answers are the same too, not just their accuracy
    assert (uninterrupted / "predictions.jsonl").read_text() == (run_dir / "predictions.jsonl").read_text()


def test_killed_mid_epoch_and_resumed_matches_uninterrupted(uninterrupted, tmp_path):
    run_dir, marker = tmp_path / "killed", tmp_path / "paused"
    env = env_for(uninterrupted.parent, MEDFT_TEST_PAUSE_AT_STEP=str(KILL_STEP), MEDFT_TEST_PAUSE_MARKER=str(marker))
    proc = subprocess.Popen(
        [sys.executable, "-m", "medft.cli", "train", *RUN, f"hydra.run.dir={run_dir}"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert proc.poll() is None, f"run ended before the pause: {proc.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, "run never reached the pause step"
        time.sleep(0.2)
    last = run_dir / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)
    assert state["global_step"] == CKPT_STEP and state["epoch"] == 1  # mid-way through the 2nd epoch
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "metrics.json").exists()

    resumed = medft_train([f"resume={run_dir}"], env_for(uninterrupted.parent))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Restoring states from the checkpoint path at {last}" in resumed.stdout + resumed.stderr
    assert metrics_of(run_dir) == metrics_of(uninterrupted)
    assert (run_dir / "predictions.jsonl").read_text() == (uninterrupted / "predictions.jsonl").read_text()
    assert not list(run_dir.rglob("*.tmp")), "a temp file was left behind"
