"""Resume and determinism, end to end: a run killed with SIGKILL mid-epoch and resumed with
``resume=RUN_DIR`` ends with the same metrics.json as the same run never interrupted; the same
seed gives the same metrics twice."""

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from medft_testing import TINY, env_for, medft_train, start_paused, train_in_process

# Tiny and fast, but with what makes resuming hard: LoRA dropout (RNG), a shuffled loader, a
# cosine schedule, AdamW state, two epochs, and a kill part-way through the second one.
# 5 steps an epoch; last.ckpt every 2 steps and after each epoch: 2, 4, 5, 6, 8, 10.
RUN = [
    "+tune=lora",
    *TINY,
    "trainer.max_epochs=2",
    "checkpoint.every_n_steps=2",
    "trainer.deterministic=true",
    "+callbacks.pause._target_=medft_testing.PauseAtStep",
]


def test_loader_position_round_trips_through_the_datamodule(monkeypatch):
    """What a checkpoint stores of the train loader puts a new loader at the same batch."""
    from medft.data.datamodule import MedDataModule

    monkeypatch.setattr("medft.data.datamodule.load_views", lambda paths: None)  # no image files needed
    splits = {"train": [{"id": str(i), "image": ""} for i in range(10)], "test": [{"id": "t", "image": ""}]}

    def collate(rows):
        return {"ids": [r["id"] for r in rows]}

    def ids(batch):
        return batch["ids"]

    first = MedDataModule(splits, collate=collate, batch_size=3, seed=7)
    loader = first.train_dataloader()
    loader.sampler.set_epoch(1)
    batches = iter(loader)
    seen = [ids(next(batches)), ids(next(batches))]
    state = first.state_dict()
    assert state == {"train_loader": {"seed": 7, "epoch": 1, "served": 6}}
    epoch_1 = [ids(b) for b in loader]

    second = MedDataModule(splits, collate=collate, batch_size=3, seed=7)
    second.load_state_dict(state)  # before the loader exists, as when Lightning restores
    resumed = second.train_dataloader()
    resumed.sampler.set_epoch(1)  # Lightning sets the epoch again at the epoch's start
    assert seen + [ids(b) for b in resumed] == epoch_1  # the rest of epoch 1, in its order
    assert sorted(sum(epoch_1, []), key=int) == [str(i) for i in range(10)]
    assert [ids(b) for b in second.train_dataloader()] != epoch_1  # epoch 0 is shuffled differently


def metrics_of(run_dir: Path) -> dict:
    """metrics.json without what measures the process rather than the run: time/*, memory/* and
    checkpoint/bytes (checkpoints hold their run dir's path, whose length differs between runs)."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if not k.startswith(("time/", "memory/", "checkpoint/"))}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """The run never stopped (in this process: the killed runs below are separate processes)."""
    tmp = tmp_path_factory.mktemp("resume")
    assert train_in_process([*RUN, f"hydra.run.dir={tmp / 'uninterrupted'}"], tmp) == 0
    return tmp / "uninterrupted"


def test_same_seed_same_metrics(uninterrupted):
    run_dir = uninterrupted.parent / "again"
    assert train_in_process([*RUN, f"hydra.run.dir={run_dir}"], uninterrupted.parent) == 0
    first, second = metrics_of(uninterrupted), metrics_of(run_dir)
    assert first["train/steps"] == 10 and "test/acc" in first and "val/loss" in first
    assert first == second
    # the answers are the same too, not just their accuracy
    assert (uninterrupted / "predictions.jsonl").read_text() == (run_dir / "predictions.jsonl").read_text()


def run_until_killed(args: list[str], env: dict[str, str], run_dir: Path, pause_at: int) -> dict:
    """Start ``medft train ARGS``, SIGKILL it once ``pause_at`` steps are done; return last.ckpt."""
    marker = run_dir.parent / f"paused-at-{pause_at}"
    proc = start_paused(args, env, marker, pause_at)
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "metrics.json").exists()
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)


@pytest.mark.slow
def test_killed_twice_and_resumed_matches_uninterrupted(uninterrupted, tmp_path):
    """Killed after the epoch-end checkpoint of epoch 1, resumed; killed again mid-way through
    epoch 2 (a step after its checkpoint), resumed again: the result is the uninterrupted run's."""
    run_dir, env = tmp_path / "killed", env_for(uninterrupted.parent)
    last = run_until_killed([*RUN, f"hydra.run.dir={run_dir}"], env, run_dir, pause_at=6)
    assert (last["global_step"], last["epoch"]) == (5, 0)  # saved after epoch 1's validation
    # a run dir brings data only: the test's own callback is given again (it is ours), not replayed from it
    pause = next(a for a in RUN if a.startswith("+callbacks.pause._target_="))
    last = run_until_killed([f"resume={run_dir}", pause], env, run_dir, pause_at=9)
    assert (last["global_step"], last["epoch"]) == (8, 1)  # mid-way through epoch 2
    assert last["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["completed"] == 2

    resumed = medft_train([f"resume={run_dir}", pause], env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert f"Restoring states from the checkpoint path at {ckpt}" in resumed.stdout + resumed.stderr
    assert metrics_of(run_dir) == metrics_of(uninterrupted)
    assert (run_dir / "predictions.jsonl").read_text() == (uninterrupted / "predictions.jsonl").read_text()
    best = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    assert best["global_step"] == torch.load(uninterrupted / "checkpoints" / "best.ckpt", weights_only=True)["global_step"]
    assert not list(run_dir.rglob("*.tmp")), "a temp file was left behind"
    # the training curve survives both resumes: every row the uninterrupted run logged is there
    assert csv_rows(uninterrupted) <= csv_rows(run_dir)
    assert any(step == 4 and "val/acc" in keys for step, keys in csv_rows(run_dir))  # epoch 1, before the kills


def csv_rows(run_dir: Path) -> set[tuple[int, tuple[str, ...]]]:
    """(step, logged columns) of each row of csv/metrics.csv."""
    import csv

    with (run_dir / "csv" / "metrics.csv").open(newline="") as fh:
        return {(int(r["step"]), tuple(sorted(k for k, v in r.items() if v not in ("", None) and k != "step")))
                for r in csv.DictReader(fh)}
