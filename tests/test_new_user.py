"""What a new user tripped on (issue 10): typos, a GPU that is not there, colliding run dirs,
sweep dirs with '=' in their names, and ``medft eval`` given something other than a run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from medft_testing import TINY, cache, cli, env_for, medft_train  # noqa: F401 - fixtures

from tests.conftest import FAST

REPO = Path(__file__).resolve().parents[1]


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("medft: error:")]
    assert len(lines) == 1, err[-3000:]
    assert "Traceback" not in err and "HYDRA_FULL_ERROR" not in err, err[-3000:]
    return lines[0]


# -- typos: one line, exit 2, the nearest valid key, before any model is loaded ----------------
@pytest.mark.parametrize(
    "override, expected",
    [
        ("trainer.max_epoch=1", "trainer.max_epoch is not a config key: did you mean trainer.max_epochs?"),
        ("+trainer.max_epoch=1", "trainer.max_epoch is not an argument of Lightning's Trainer: did you mean trainer.max_epochs?"),
        ("+tune.rank=8", "tune.rank is not a key of tune=lora: valid keys: alpha, components, dropout, lr, lr_pretrained, lr_report, name, r, select, target_modules, use_dora"),
        ("+tune.alpah=8", "tune.alpah is not a key of tune=lora: did you mean tune.alpha?"),
        ("+optim.weight_decy=0.1", "optim.weight_decy is not a key of optim: did you mean optim.weight_decay?"),
        ("+data.batchsize=4", "data.batchsize is not a key of data: did you mean data.batch_size?"),
        ("+eval.closd=rank", "eval.closd is not a key of eval: did you mean eval.closed?"),
        ("+eval.generate.num_beam=2", "eval.generate.num_beam is not a generation option: did you mean eval.generate.num_beams?"),
        ("tune=lorra", "tune=lorra: no such tune config (configs/tune/lorra.yaml); did you mean lora? Choose one of:"),
        ("optim.lr=1e-3=2", "mismatched input '=' expecting <EOF>"),
    ],
)
def test_a_typo_is_one_line_with_exit_2_naming_the_nearest_key(cli, override, expected, monkeypatch):
    import medft.models

    def no_model(*a, **k):  # the check must come before any model is built
        raise AssertionError("a model was built before the config was checked")

    monkeypatch.setattr(medft.models, "build_model", no_model)
    args = [override] if override.startswith("tune=") else ["+tune=lora", override]
    status, _, err, _ = cli(*args)
    assert status == 2, err[-3000:]
    assert expected in one_error_line(err)


def test_trainer_gpu_without_a_gpu_is_one_line(cli, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    status, _, err, _ = cli("+tune=layernorm", "trainer=gpu")
    assert status == 2
    assert one_error_line(err) == (
        "medft: error: trainer.accelerator=gpu: no GPU found on this machine (torch.cuda.is_available() is False): "
        "use trainer=cpu, or run where a CUDA GPU and a CUDA build of torch are installed")


# -- run dirs: two runs started in the same second never share one -------------------------------
def test_two_runs_in_the_same_second_get_their_own_dirs(tmp_path):
    env = env_for(tmp_path)
    args = ["+tune=layernorm", *TINY, "trainer.max_epochs=1", "+trainer.limit_train_batches=1",
            "hydra.run.dir=${medft_claim:" + str(tmp_path / "logs" / "same") + "}"]
    cmd = [sys.executable, "-m", "medft.cli", "train", *args]
    procs = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    dirs = sorted(line.removeprefix("run dir: ") for out, _ in outs for line in out.splitlines() if line.startswith("run dir: "))
    assert dirs == [str(tmp_path / "logs" / "same"), str(tmp_path / "logs" / "same_2")]
    for d in dirs:
        assert json.loads((Path(d) / "metrics.json").read_text())["params/trainable"] > 0
        assert not (Path(d) / "error.txt").exists()


def test_claim_dir_is_atomic_and_remembered(tmp_path, monkeypatch):
    from medft.runs.trust import CLAIMS_ENV, claim_dir

    monkeypatch.delenv(CLAIMS_ENV, raising=False)
    (tmp_path / "t").mkdir()  # another run's dir
    first = claim_dir(str(tmp_path / "t"))
    assert first == str(tmp_path / "t_2") and Path(first).is_dir()
    assert claim_dir(str(tmp_path / "t")) == first  # Hydra resolving the same path again: the same dir
    monkeypatch.delenv(CLAIMS_ENV)
    assert claim_dir(str(tmp_path / "t")) == str(tmp_path / "t_3")  # another process: a new one


def test_the_default_run_dir_is_claimed():
    text = (REPO / "medft" / "configs" / "hydra" / "default.yaml").read_text()
    assert "dir: ${medft_claim:${paths.log_dir}/runs/" in text and "dir: ${medft_claim:${paths.log_dir}/multiruns/" in text


# -- sweep job dirs hold '=': ckpt=, ckpt_path= and resume= accept them as given ----------------
@pytest.fixture(scope="module")
def swept_run(tmp_path_factory, cache):
    """A run dir named like a sweep job's (``..._optim.lr=0.01``)."""
    root = tmp_path_factory.mktemp("swept")
    run = root / "layernorm_demo_blip_tiny_optim.lr=0.01"
    env = env_for(root, MEDFT_CACHE_DIR=str(cache))
    out = medft_train(["+tune=layernorm", *TINY, "trainer.max_epochs=1", "+trainer.limit_train_batches=2",
                       f"hydra.run.dir='{run}'"], env)
    assert out.returncode == 0, out.stderr[-3000:]
    return run, env


def test_eval_accepts_a_sweep_job_dir_with_equals(swept_run):
    run, env = swept_run
    out = subprocess.run([sys.executable, "-m", "medft.cli", "eval", f"ckpt={run}", "dataset=demo",
                          "+trainer.limit_test_batches=1", "data.eval_batch_size=8"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"evaluating {run} (trained.safetensors) on demo/test" in out.stdout


def test_ckpt_path_accepts_a_sweep_job_dir_with_equals(swept_run, tmp_path):
    run, env = swept_run
    out = medft_train(["+tune=layernorm", *TINY, "trainer.max_epochs=2", "+trainer.limit_train_batches=2",
                       f"ckpt_path={run}/checkpoints/last.ckpt", f"hydra.run.dir={tmp_path / 'next'}"], env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads((tmp_path / "next" / "metrics.json").read_text())["train/steps"] == 4


def test_eval_without_ckpt_key_and_on_a_folder_of_runs_is_one_line(swept_run):
    run, env = swept_run

    def medft_eval(*args):
        return subprocess.run([sys.executable, "-m", "medft.cli", "eval", *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=120)

    bare = medft_eval(str(run), "dataset=demo")
    assert bare.returncode == 2
    assert one_error_line(bare.stderr) == f"medft: error: {str(run)!r} is not an override: give the run as ckpt={run} (and dataset=<name>)"
    folder = medft_eval(f"ckpt={run.parent}", "dataset=demo")
    assert folder.returncode == 2
    line = one_error_line(folder.stderr)
    assert f"ckpt={run.parent} is not a run directory (no .hydra/config.yaml): give one run's directory, e.g. ckpt={run}" in line


# -- records: metrics.json, predictions.jsonl ----------------------------------------------------
def val_rows(run_dir: Path) -> list[dict]:
    import csv

    with (run_dir / "csv" / "metrics.csv").open(newline="") as fh:
        return [r for r in csv.DictReader(fh) if r.get("val/acc")]


def test_metrics_json_records_the_tested_checkpoints_validation(cli):
    # 4 epochs; val/acc ties at every epoch, so best.ckpt (the test's checkpoint) is epoch 0's
    status, _, err, run = cli("+tune=layernorm", *TINY, "trainer.max_epochs=4", "optim.lr=0.05")
    assert status == 0, err[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    rows = val_rows(run)
    assert len(rows) == 4
    best = max(range(len(rows)), key=lambda i: (float(rows[i]["val/acc"]), -i))  # the first of the best
    assert best != len(rows) - 1, "the case must have a best epoch before the last"
    assert metrics["val/epoch"] == int(rows[best]["epoch"]) == best
    assert metrics["val/acc"] == pytest.approx(float(rows[best]["val/acc"]))
    assert metrics["val/loss"] == pytest.approx(float(rows[best]["val/loss"]))
    assert metrics["last/val/loss"] == pytest.approx(float(rows[-1]["val/loss"]))
    assert metrics["val/loss"] != pytest.approx(metrics["last/val/loss"])


def test_predictions_keep_raw_answer_and_prediction_and_add_the_compared_forms(cli, tmp_path):
    import numpy as np
    from PIL import Image

    from medft.metrics.vqa import normalize_answer

    root = tmp_path / "rad"
    (root / "images").mkdir(parents=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / "images" / "a.png")

    def rec(qid, answer, kind):
        return {"qid": qid, "image_name": "a.png", "question": "Is there a lesion?", "answer": answer,
                "answer_type": kind, "question_type": "PRES", "image_organ": "CHEST"}

    train = [rec(i, "Yes", "CLOSED") for i in range(4)]
    (root / "trainset.json").write_text(json.dumps(train))
    (root / "testset.json").write_text(json.dumps([rec(100, "Yes", "CLOSED"), rec(101, "Left Lung.", "OPEN")]))
    status, _, err, run = cli("+tune=layernorm", "dataset=vqa_rad", f"dataset.root={root}", "dataset.val_fraction=0",
                              "trainer.max_epochs=1", "data.batch_size=4", "eval.generate.max_new_tokens=2")
    assert status == 0, err[-3000:]
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert [r["answer"] for r in rows] == ["Yes", "Left Lung."]  # exactly as given
    assert [r["answer_norm"] for r in rows] == ["yes", "left lung"]
    for r in rows:
        assert r["prediction_norm"] == normalize_answer(r["prediction"])
        assert r["correct"] == (r["prediction_norm"] == r["answer_norm"])


def test_transformers_long_sequence_warning_is_left_to_medfts_own_count(capfd):
    from medft.data.checks import count_truncated
    from medft.models.blip import build_blip_vqa
    from tests.conftest import model_cfg

    net = build_blip_vqa(**model_cfg())
    long = " ".join(["lesion"] * 600)  # longer than the tokenizer's model_max_length (512)
    counts = count_truncated({"train": [{"question": long}]}, net.tokenizer, {"question": 32})
    assert counts == {"question": 1}
    net.tokenizer(long)  # the model's own tokenizer calls later stay quiet too
    assert "Token indices sequence length is longer" not in capfd.readouterr().err


# -- terminal noise ---------------------------------------------------------------------------------
NOISE = ["litlogger", "LeafSpec", "is_gradient_checkpointing", "setup plugin", "anonymous setting",
         "\x1b[", "Token indices sequence length", "Run history:"]


def test_a_lora_run_with_wandb_prints_no_library_noise(run_cli, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    out = run_cli("train", "+tune=lora", "logger=wandb", *FAST)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    (run,) = [p.parent for p in (tmp_path / "logs").rglob("metrics.json")]
    text += (run / "train.log").read_text()
    assert [n for n in NOISE if n in text] == []
    assert "W&B run saved offline: upload it with `wandb sync " in out.stdout  # what is the user's business stays
    assert "trainable params:" in out.stdout and "test accuracy:" in out.stdout


def test_an_optuna_search_prints_no_plugin_setup(run_cli):
    out = run_cli("train", "+tune=layernorm", "hparams_search=lr_optuna", "hydra.sweeper.n_trials=1", *FAST)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    assert [n for n in NOISE if n in text] == []
    assert "Launching 1 jobs locally" in text  # Hydra's own line about the sweep stays
