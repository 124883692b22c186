"""Several devices: two CPU processes (trainer=ddp, gloo) score the whole test set, each sample once
(the DistributedSampler's padding dropped), and only rank zero writes the run dir: metrics.json and
predictions.jsonl are those of a single-process run on the same data."""

import json

import pytest
from medft_testing import env_for, medft_train

# zero-shot (nothing trained, so both runs hold the same weights): 5 test questions, 2 a batch, over
# 2 processes = 3 + 3 with one padded sample that must not be scored
SMALL = [
    "+tune=frozen",
    "+dataset.load.n_train_images=2",
    "+dataset.load.n_test_images=1",
    "data.eval_batch_size=2",
    "eval.generate.max_new_tokens=2",
    "callbacks.progress_bar.refresh_rate=0",
]
DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"]


def run_files(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    kept = {k: v for k, v in metrics.items() if k.startswith(("test/", "params/", "data/"))}
    return kept, (run_dir / "predictions.jsonl").read_text()


@pytest.mark.slow
def test_two_processes_score_the_test_set_like_one(tmp_path):
    env = env_for(tmp_path)
    single = medft_train([*SMALL, f"hydra.run.dir={tmp_path / 'single'}"], env)
    assert single.returncode == 0, single.stderr[-3000:]
    metrics, predictions = run_files(tmp_path / "single")
    n = len(predictions.splitlines())
    assert n % 2 == 1, f"{n} test questions: an odd count makes the sampler pad"

    ddp = medft_train([*SMALL, *DDP, f"hydra.run.dir={tmp_path / 'ddp'}"], env)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in ddp.stdout + ddp.stderr  # two processes ran
    ddp_metrics, ddp_predictions = run_files(tmp_path / "ddp")
    assert ddp_predictions == predictions  # every question once, in the test set's order
    assert ddp_metrics == metrics and "test/acc" in metrics
    assert json.loads((tmp_path / "ddp" / "status.json").read_text())["state"] == "finished"
    assert not list((tmp_path / "ddp").glob("train_ddp_process_*"))  # rank 1 left the run dir to rank 0
