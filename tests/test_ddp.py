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
    assert json.loads((tmp_path / "ddp" / "status.json").read_text())["state"] == "ok"
    # the other ranks keep only their Hydra log (train_ddp_process_N.log) in the run dir
    assert sorted(p.name for p in (tmp_path / "ddp").glob("train*.log")) == [
        "train.log", *(f"train_ddp_process_{rank}.log" for rank in range(1, devices))]


def test_gather_rows_drops_the_samplers_padding(monkeypatch):
    """The rows of 3 ranks over 4 samples (the sampler repeats samples 0 and 1): 4 rows, in order."""
    from types import SimpleNamespace

    import torch.distributed as dist
    from torch.utils.data import DistributedSampler

    from medft.training.module import gather_rows

    data = [{"id": f"q{i}"} for i in range(4)]
    shards = [[data[i] for i in DistributedSampler(data, num_replicas=3, rank=r, shuffle=False)] for r in range(3)]
    assert [len(s) for s in shards] == [2, 2, 2] and shards[1][1] == data[0]  # padded with the first samples

    def all_gather_object(out, mine):  # what every rank would send: (position, row) of its shard
        out[:] = [[(i * 3 + r, row) for i, row in enumerate(shards[r])] for r in range(3)]

    monkeypatch.setattr(dist, "all_gather_object", all_gather_object)
    loader = SimpleNamespace(sampler=DistributedSampler(data, num_replicas=3, rank=0, shuffle=False))
    trainer = SimpleNamespace(test_dataloaders=loader, world_size=3, global_rank=0)
    assert gather_rows(shards[0], trainer) == data
    loader.sampler = None  # no DistributedSampler: every rank scored the whole set; rank zero's rows
    assert gather_rows(shards[0], trainer) == shards[0]


def test_report_scores_from_gathered_rows_equal_the_direct_ones():
    from medft.metrics.evaluators import ReportEvaluator, VQAEvaluator

    metas = [{"id": str(i), "report": r} for i, r in enumerate(["no acute disease.", "heart size is normal.", "clear lungs."])]
    generated = ["no acute disease.", "the heart is normal.", "lungs are clear."]
    direct = ReportEvaluator()
    rows = direct.update(generated, metas)
    again = ReportEvaluator()
    again.load_rows(rows)
    assert float(again.compute()["bleu_4"]) == float(direct.compute()["bleu_4"])
    vqa = VQAEvaluator()
    vqa_rows = vqa.update(["yes", "no"], [{"answer": "yes", "answer_type": "CLOSED"}, {"answer": "2", "answer_type": "OPEN"}])
    reloaded = VQAEvaluator()
    reloaded.load_rows(vqa_rows)
    assert {k: float(v) for k, v in reloaded.compute().items()} == {"acc": 0.5, "acc_closed": 1.0, "acc_open": 0.0}


def test_also_test_predictions_are_written_by_rank_zero_only(make_cfg, tmp_path):
    """``also_test.NAME=DATASET`` under several processes: every rank holds the gathered rows
    (MedVLMModule.on_test_epoch_end), only rank zero writes predictions_NAME.jsonl (as predictions.jsonl)."""
    from types import SimpleNamespace

    from medft.training.pipeline import test_on

    cfg = make_cfg("tune=frozen")  # the run's paths.*: test_on loads configs/dataset/demo.yaml into its cache_dir
    rows = [{"id": "q0", "answer": "yes", "prediction": "yes"}]
    module, net = SimpleNamespace(predictions=rows), SimpleNamespace(collate=lambda batch: batch, task="vqa")
    for rank in (1, 0):
        out = tmp_path / f"rank{rank}"
        out.mkdir()
        trainer = SimpleNamespace(test=lambda *a, **k: None, callback_metrics={"test/acc": 1.0}, is_global_zero=rank == 0)
        assert test_on(cfg, "shift", "demo", trainer, module, net, out) == {"shift/acc": 1.0}
        assert sorted(p.name for p in out.iterdir()) == ([] if rank else ["predictions_shift.jsonl"])
    assert json.loads((tmp_path / "rank0" / "predictions_shift.jsonl").read_text()) == rows[0]
