"""Several devices: CPU processes (trainer=ddp, gloo) score the whole test set, each sample once
(the DistributedSampler's padding dropped), and only rank zero writes the run dir: metrics.json and
predictions.jsonl are those of a single-process run on the same data."""

import json

import pytest
from medft_testing import env_for, medft_train

# zero-shot (nothing trained, so both runs hold the same weights): the demo's 4 test questions of one
# image, 2 a batch. Over 2 processes (2 + 2) nothing is padded; over 3 (2 + 2 + 2) the sampler repeats
# the first 2 questions, which must not be scored twice.
SMALL = [
    "+tune=frozen",
    "+dataset.load.n_train_images=2",
    "+dataset.load.n_test_images=1",
    "data.eval_batch_size=2",
    "eval.generate.max_new_tokens=2",
    "callbacks.progress_bar.refresh_rate=0",
]
DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.precision=32-true"]


def run_files(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    kept = {k: v for k, v in metrics.items() if k.startswith(("test/", "params/", "data/"))}
    return kept, (run_dir / "predictions.jsonl").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("devices", [2, 3])
def test_several_processes_score_the_test_set_like_one(devices, tmp_path):
    env = env_for(tmp_path)
    single = medft_train([*SMALL, f"hydra.run.dir={tmp_path / 'single'}"], env)
    assert single.returncode == 0, single.stderr[-3000:]
    metrics, predictions = run_files(tmp_path / "single")
    assert len(predictions.splitlines()) == 4

    ddp = medft_train([*SMALL, *DDP, f"trainer.devices={devices}", f"hydra.run.dir={tmp_path / 'ddp'}"], env)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert f"MEMBER: {devices}/{devices}" in ddp.stdout + ddp.stderr  # that many processes ran
    ddp_metrics, ddp_predictions = run_files(tmp_path / "ddp")
    assert ddp_predictions == predictions  # every question once, in the test set's order
    assert ddp_metrics == metrics and "test/acc" in metrics
    assert json.loads((tmp_path / "ddp" / "status.json").read_text())["state"] == "finished"
    # the other ranks keep only their Hydra log (train_ddp_process_N.log) in the run dir
    assert sorted(p.name for p in (tmp_path / "ddp").glob("train*.log")) == [
        "train.log", *(f"train_ddp_process_{rank}.log" for rank in range(1, devices))]
