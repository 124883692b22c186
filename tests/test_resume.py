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
from medft_testing import REPO, TINY, env_for, medft_train

# Tiny and fast, but with what makes resuming hard: LoRA dropout (RNG), a shuffled loader, a
# cosine schedule, AdamW state, two epochs, and a kill part-way through the second one.
# 5 steps an epoch; last.ckpt every 2 steps and at each epoch end: 2, 4, 5, 6, 8, 10.
RUN = [
    "+tune=lora",
    *TINY,
    "trainer.max_epochs=2",
    "checkpoint.every_n_steps=2",
    "trainer.deterministic=true",
    "+callbacks.pause._target_=medft_testing.PauseAtStep",
]
CKPT_STEP, KILL_STEP = 8, 9  # killed one step after the checkpoint at step 3 of 5 in epoch 2
TIMING_KEYS = {"time/train_s"}


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
    assert first["train/steps"] == 10 and "test/acc" in first and "val/loss" in first
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
