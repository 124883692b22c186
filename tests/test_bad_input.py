"""Bad input gets one clear line, never a traceback: one test per row of the README's table.

These runs call the CLI's own entry point (``medft.cli.main``: argument rewriting, Hydra, the
task wrapper) inside the test process, so the heavy imports are paid once; the end-to-end runs
that need a fresh process (kill -9, secrets in the environment) are in test_resume.py and
test_security.py.
"""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from medft_testing import TINY, cache, cli, train_in_process  # noqa: F401 - fixtures
from PIL import Image

from medft.config.search import available
from medft.runs.checkpoint import check_compatible
from medft.util.errors import CheckpointError


def one_error_line(err: str) -> str:
    """stderr must hold exactly one medft error line and no traceback."""
    lines = [line for line in err.splitlines() if line.startswith("medft: error:")]
    assert len(lines) == 1, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    return lines[0]


# -- tiny datasets in VQA-RAD's split layout -----------------------------------------------
def gray(size=32, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (size, size), dtype=np.uint8)


IMAGE_MODES = {  # file name -> how to write it
    "gray.png": lambda p: Image.fromarray(gray()).save(p),
    "sixteen.png": lambda p: Image.fromarray(gray().astype(np.uint16) * 16).save(p),  # 12-bit values
    "cmyk.jpg": lambda p: Image.fromarray(np.stack([gray(seed=i) for i in range(3)], -1)).convert("CMYK").save(p),
    "rgba.png": lambda p: Image.fromarray(np.stack([gray(seed=i) for i in range(4)], -1)).save(p),
    "palette.png": lambda p: Image.fromarray(gray()).convert("P").save(p),
    "rgb.png": lambda p: Image.fromarray(np.stack([gray(seed=i) for i in range(3)], -1)).save(p),
}


def record(qid, image, question="Is there a lesion?", answer="yes", answer_type="CLOSED"):
    return {"qid": qid, "image_name": image, "question": question, "answer": answer,
            "answer_type": answer_type, "question_type": "PRES", "image_organ": "CHEST"}


def write_dataset(root: Path, train: list[dict], test: list[dict], images: dict) -> Path:
    (root / "images").mkdir(parents=True)
    for name, write in images.items():
        write(root / "images" / name)
    (root / "trainset.json").write_text(json.dumps(train))
    (root / "testset.json").write_text(json.dumps(test))
    return root


def small_set(root: Path, bad: dict | None = None) -> Path:
    """8 train and 2 test questions over the RGB/gray images, plus ``bad`` images in train."""
    images = {"rgb.png": IMAGE_MODES["rgb.png"], "gray.png": IMAGE_MODES["gray.png"], **(bad or {})}
    names = sorted(images)
    train = [record(i, names[i % len(names)]) for i in range(8)]
    return write_dataset(root, train, [record(100, "rgb.png"), record(101, "gray.png", answer="no")], images)


ON_SMALL_SET = [
    "+tune=layernorm", "dataset=vqa_rad", "dataset.val_fraction=0", "trainer.max_epochs=1",
    *(arg for arg in TINY if not arg.startswith("dataset.")),
]


# -- unknown names -> Hydra's list of choices ------------------------------------------------
@pytest.mark.parametrize("group", ["tune", "model", "dataset"])
def test_unknown_name_lists_the_available_ones(cli, group):
    status, _, err, _ = cli(f"{group}=no_such_{group}", *([] if group == "tune" else ["+tune=layernorm"]))
    assert status == 2
    line = one_error_line(err)
    assert f"{group}=no_such_{group}: no such {group} config (configs/{group}/no_such_{group}.yaml)" in line
    for name in available(group):
        assert name in line


# -- values out of range -> one line with key, value and range, before loading anything -----
@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["+tune=layernorm", "optim.lr=0"], "optim.lr=0 is out of range: it must be a number > 0"),
        (["+tune=layernorm", "optim.lr=-1e-3"], "optim.lr=-0.001 is out of range: it must be a number > 0"),
        (["+tune=lora", "tune.r=0"], "tune.r=0 is out of range: it must be a number > 0"),
        (["+tune=layernorm", "dataset.train_fraction=1.5"], "dataset.train_fraction=1.5 is out of range: it must be a number in (0, 1]"),
        (["+tune=layernorm", "dataset.train_fraction=0"], "dataset.train_fraction=0 is out of range: it must be a number in (0, 1]"),
        (["+tune=layernorm", "data.batch_size=0"], "data.batch_size=0 is out of range: it must be a number >= 1"),
    ],
)
def test_out_of_range_value_is_one_line_before_loading(cli, cache, overrides, expected):
    status, out, err, run_dir = cli(*overrides)
    assert status == 2
    assert one_error_line(err) == f"medft: error: {expected}"
    assert "dataset demo:" not in out and "trainable params" not in out  # no data, no model
    error_txt = (run_dir / "error.txt").read_text()
    assert error_txt.startswith(f"medft: error: {expected}\n") and "in validate" in error_txt  # the where


# -- dataset folder problems -> one line naming the path and the expected layout -------------
@pytest.mark.parametrize("problem", ["root missing", "annotations missing", "annotations not JSON"])
def test_bad_dataset_folder_names_path_and_layout(cli, tmp_path, problem):
    root = tmp_path / "vqa"
    if problem != "root missing":
        small_set(root)
        if problem == "annotations missing":
            (root / "trainset.json").unlink()
        else:
            (root / "trainset.json").write_text('[{"qid": 1, "question": "Is')  # half-copied
    status, out, err, _ = cli(*ON_SMALL_SET, f"dataset.root={root}")
    assert status == 2
    line = one_error_line(err)
    if problem == "annotations not JSON":
        assert f"annotation file {root / 'trainset.json'} is not valid JSON" in line
    else:
        assert f"{root}" in line and "trainset.json" in line and "testset.json" in line and "images/" in line
    assert "trainable params" not in out  # failed before the model was built


# -- bad image files -> one line naming the file, from the main process or a loader worker ----
@pytest.mark.parametrize(
    "problem, workers",
    [("missing", 0), ("truncated", 1), ("not an image", 0)],
)
def test_bad_image_names_the_file(cli, tmp_path, problem, workers):
    bad = tmp_path / "vqa" / "images" / "bad.png"

    def write_bad(path: Path) -> None:
        if problem == "truncated":
            Image.fromarray(gray(64)).save(path)
            path.write_bytes(path.read_bytes()[:200])
        elif problem == "not an image":
            path.write_text("<html>404 Not Found</html>")

    root = small_set(tmp_path / "vqa", bad={"bad.png": write_bad})
    if problem == "missing":
        bad.unlink(missing_ok=True)
    status, _, err, _ = cli(*ON_SMALL_SET, f"dataset.root={root}", f"data.num_workers={workers}")
    assert status == 2
    line = one_error_line(err)
    assert f"{bad}" in line  # missing files are found when the dataset loads, damaged ones when read
    assert {"missing": "not found", "truncated": "truncated", "not an image": "not an image"}[problem] in line
    assert "DataLoader worker" not in err


# -- odd image modes and odd records: converted / cast / skipped, and trained on -------------
@pytest.fixture(scope="module")
def odd_run(tmp_path_factory, cache):
    """One run over every odd image mode, with empty and integer-valued records."""
    tmp = tmp_path_factory.mktemp("odd")
    names = sorted(IMAGE_MODES)
    train = [record(i, names[i % len(names)]) for i in range(12)]
    train += [
        record(50, "gray.png", question=""),                        # empty question: skipped
        record(51, "gray.png", answer=""),                          # empty answer: skipped
        record(52, "gray.png", question="How many lesions?", answer=2, answer_type="OPEN"),  # int: cast
    ]
    test = [record(100 + i, name) for i, name in enumerate(names)]
    test.append(record(200, "cmyk.jpg", question="How many lesions?", answer=1, answer_type="OPEN"))
    root = write_dataset(tmp / "vqa", train, test, IMAGE_MODES)
    run_dir = tmp / "run"
    assert train_in_process([*ON_SMALL_SET, f"dataset.root={root}", f"hydra.run.dir={run_dir}"], tmp, cache) == 0
    return run_dir


def test_odd_image_modes_are_converted_and_trained_on(odd_run):
    modes = {}
    for name in IMAGE_MODES:
        with Image.open(odd_run.parent / "vqa" / "images" / name) as img:
            modes[name] = img.mode
    assert modes == {"gray.png": "L", "sixteen.png": "I;16", "cmyk.jpg": "CMYK", "rgba.png": "RGBA",
                     "palette.png": "P", "rgb.png": "RGB"}
    metrics = json.loads((odd_run / "metrics.json").read_text())
    assert metrics["train/steps"] == 2  # 13 usable records, batch 8
    predictions = [json.loads(line) for line in (odd_run / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 7  # every test image was read and answered (test limited to 1 batch of 8)


def test_empty_records_skipped_with_a_count_and_int_answers_cast(odd_run):
    log = (odd_run / "train.log").read_text()
    assert "skipped 2 record(s) with an empty question or answer" in log
    predictions = [json.loads(line) for line in (odd_run / "predictions.jsonl").read_text().splitlines()]
    assert {"id": "200", "answer": "1"}.items() <= next(p for p in predictions if p["id"] == "200").items()


# -- the loss becomes NaN -> stop with the step and a hint, keep the last good checkpoint -----
def test_nan_loss_stops_with_step_and_hint_and_keeps_checkpoint(cli, monkeypatch):
    monkeypatch.setattr("medft.config.validate.check_values", lambda cfg: None)  # optim.lr >= 10 is refused before training
    status, _, err, run_dir = cli("+tune=layernorm", *TINY, "optim.lr=1e30", "checkpoint.every_n_steps=1")
    assert status == 2
    line = one_error_line(err)
    assert line.startswith("medft: error: training loss became nan at step ")
    step = int(line.split(" at step ")[1].split(":")[0])
    assert "optim.lr" in line and "bf16" in line
    assert "loss became nan" in (run_dir / "error.txt").read_text()
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == step >= 1  # the state the NaN step started from, not after it
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values())
    assert not (run_dir / "metrics.json").exists()


# -- a checkpoint from another tune mode or model -> the differing keys, no partial load ------
@pytest.fixture(scope="module")
def layernorm_ckpt(tmp_path_factory, cache) -> Path:
    tmp = tmp_path_factory.mktemp("ln")
    args = ["+tune=layernorm", *TINY, "trainer.max_epochs=1", "test=false", f"hydra.run.dir={tmp / 'run'}"]
    assert train_in_process(args, tmp, cache) == 0
    return tmp / "run"


def test_checkpoint_from_another_tune_mode_is_refused(cli, layernorm_ckpt):
    ckpt = layernorm_ckpt / "checkpoints" / "last.ckpt"
    status, _, err, _ = cli("+tune=bitfit", *TINY, f"ckpt_path={ckpt}")
    assert status == 2
    line = one_error_line(err)
    assert "checkpoint does not match this run (checkpoint tune='layernorm', run tune='bitfit')" in line
    assert "trained key(s) missing, e.g. ['net.model." in line and "unexpected key(s), e.g. ['net.model." in line


def test_checkpoint_from_another_model_is_refused_on_resume(cli, layernorm_ckpt):
    status, _, err, _ = cli(f"resume={layernorm_ckpt}", "model.config.vision_config.num_hidden_layers=1",
                            run_dir=layernorm_ckpt)
    assert status == 2
    line = one_error_line(err)
    assert "checkpoint does not match this run (checkpoint tune='layernorm', run tune='layernorm')" in line
    assert "4 unexpected key(s), e.g. ['net.model.vision_model.encoder.layers.1.layer_norm1.bias'" in line


def test_shape_mismatch_is_listed():
    saved = {"a": torch.zeros(4), "b": torch.zeros(2, 2)}
    with pytest.raises(CheckpointError, match=r"1 key\(s\) with another shape \(checkpoint vs run\), e.g. \['b \(2, 2\) vs \(3, 2\)'\]"):
        check_compatible(saved, {"a": torch.Size([4]), "b": torch.Size([3, 2])}, "full", "full")
    check_compatible(saved, {"a": torch.Size([4]), "b": torch.Size([2, 2])}, "full", "full")  # same: no error


def test_damaged_checkpoint_is_one_line(cli, tmp_path):
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"PK\x03\x04 half a zip file")
    status, _, err, _ = cli("+tune=layernorm", *TINY, f"ckpt_path={ckpt}")
    assert status == 2
    assert f"checkpoint {ckpt} is truncated or not a torch checkpoint" in one_error_line(err)
    status, _, err, _ = cli("+tune=layernorm", *TINY, f"ckpt_path={tmp_path / 'nope.ckpt'}")
    assert status == 2 and "no such checkpoint file" in one_error_line(err)


# -- a failed job leaves error.txt; a multirun goes on, then exits 1 ----------------------------
def test_failed_job_leaves_error_txt_and_the_sweep_goes_on(cli, tmp_path):
    sweep = tmp_path / "sweep"
    status, _, err, _ = cli("-m", "+tune=layernorm", *TINY, "trainer.max_epochs=1", "+trainer.limit_train_batches=1", "test=false",
                            "optim.lr=-1,0.001", f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=${hydra.job.num}")
    assert status == 1, err[-3000:]
    assert f"medft: 1 of 2 jobs failed (error.txt in each): 0 — `medft report {sweep}` lists them" in err
    failed, succeeded = sweep / "0", sweep / "1"
    error_txt = (failed / "error.txt").read_text()
    assert error_txt.startswith("medft: error: optim.lr=-1 is out of range")
    assert "where:\nTraceback" in error_txt and "medft/config/validate.py" in error_txt
    assert not (failed / "metrics.json").exists()
    metrics = json.loads((succeeded / "metrics.json").read_text())
    assert metrics["params/trainable"] > 0 and not (succeeded / "error.txt").exists()
    assert math.isfinite(metrics["params/trainable_pct"])


def test_resume_of_a_folder_without_a_run_or_checkpoint_is_one_line(cli, tmp_path):
    status, _, err, _ = cli(f"resume={tmp_path / 'nowhere'}")
    assert status == 2
    assert f"resume={tmp_path / 'nowhere'}: {tmp_path / 'nowhere' / '.hydra' / 'overrides.yaml'} not found" in one_error_line(err)
    started = tmp_path / "started"
    (started / ".hydra").mkdir(parents=True)
    (started / ".hydra" / "overrides.yaml").write_text("- tune=layernorm\n")
    status, _, err, _ = cli(f"resume={started}")
    assert status == 2
    assert "the run stopped before its first save); start it again without resume=" in one_error_line(err)
