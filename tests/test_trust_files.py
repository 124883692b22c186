"""Every file a dataset names obeys the root rule (issue 21), and a batch's decoded size is bounded.

* a MIMIC-CXR report text ``files/pXX/pSUBJECT/sSTUDY.txt`` symlinked out of dataset.root is never
  read: dropped and counted (``data/dropped/outside_root``), as images are; IU X-ray's CSVs likewise;
* a hub dataset as ``hf download`` stores it (files symlinked into ``../../blobs``) is accepted;
* 64 records naming one 9000 x 9000 PNG (78 KB on disk) are refused in one line from the headers,
  before anything is decoded (they took 7 GB and crashed).
"""

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from PIL import Image
from test_bad_input import small_set
from test_trust_data import vqa_rad_cfg

from medft.data import sources
from medft.data.checks import prepare_splits
from medft.testing.fixtures import make_iu_csv, make_mimic_official
from medft.util.errors import DataError


def test_a_report_text_symlinked_out_of_the_root_is_dropped_and_counted(tmp_path):
    root = make_mimic_official(tmp_path / "mimic")
    secret = tmp_path / "secret.txt"
    secret.write_text("FINDINGS: SECRET-FROM-OUTSIDE. IMPRESSION: none.")
    report = sorted((root / "files").rglob("s*.txt"))[0]
    report.unlink()
    report.symlink_to(secret)
    splits = sources.r2gen(str(root), "mimic_cxr")
    assert splits.drops.total("outside_root") == 1
    assert not any("SECRET" in r["report"] for rows in splits.values() for r in rows)
    cfg = OmegaConf.create({"name": "mimic_cxr", "task": "report", "root": str(root), "skip_bad_images": False})
    _, stats = prepare_splits(splits, cfg)
    assert stats["data/dropped/outside_root"] == 1


def test_an_annotation_csv_symlinked_out_of_the_root_is_one_line(tmp_path):
    root = make_iu_csv(tmp_path / "iu")
    elsewhere = tmp_path / "elsewhere.csv"
    shutil.move(root / "indiana_reports.csv", elsewhere)
    (root / "indiana_reports.csv").symlink_to(elsewhere)
    with pytest.raises(DataError, match="indiana_reports.csv leads outside dataset.root"):
        sources.r2gen(str(root), "iu_xray")


def as_hf_download(snapshot: Path) -> None:
    """Store a folder as ``hf download`` does: each file a relative symlink into ``<repo>/blobs/<sha256>``."""
    blobs = snapshot.parent.parent / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    for path in [p for p in snapshot.rglob("*") if p.is_file()]:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if not (blobs / digest).exists():
            shutil.move(path, blobs / digest)
        else:
            path.unlink()
        path.symlink_to(os.path.relpath(blobs / digest, path.parent))


def test_a_hub_cache_layout_with_files_symlinked_into_blobs_is_accepted(tmp_path):
    snapshot = tmp_path / "hub" / "datasets--someone--vqa" / "snapshots" / ("0" * 40)
    small_set(snapshot)
    as_hf_download(snapshot)
    assert os.readlink(snapshot / "images" / "rgb.png").startswith("../../../blobs/")
    cfg = vqa_rad_cfg(snapshot)
    splits, stats = prepare_splits(sources.load_splits(cfg), cfg)
    assert stats["data/dropped/outside_root"] == 0 and len(splits["train"]) == 8 and len(splits["test"]) == 2
    outside = tmp_path / "outside.png"  # a symlink out of the hub repo is still refused
    shutil.copy(snapshot / "images" / "rgb.png", outside)
    (snapshot / "images" / "rgb.png").unlink()
    (snapshot / "images" / "rgb.png").symlink_to(outside)
    splits, stats = prepare_splits(sources.load_splits(cfg), cfg)
    assert stats["data/dropped/outside_root"] == 5  # the train and test records of rgb.png


def test_a_batch_of_one_huge_png_is_refused_from_the_headers(tmp_path):
    import torch

    from medft.data.datamodule import RecordDataset
    from medft.data.images import set_max_pixels

    huge = tmp_path / "huge.png"
    Image.new("L", (9000, 9000)).save(huge, optimize=True)
    assert huge.stat().st_size < 200_000  # small on disk, 243 MB decoded as RGB
    records = [{"id": str(i), "image": str(huge), "question": "q", "answer": "a"} for i in range(64)]
    set_max_pixels(None)
    loader = torch.utils.data.DataLoader(RecordDataset(records), batch_size=64, collate_fn=lambda items: items)
    started = time.perf_counter()
    with pytest.raises(DataError, match=r"a batch of 64 samples holds 5,184,000,000 decoded pixels .* above "
                                         r"dataset.max_batch_pixels=1,000,000,000"):
        next(iter(loader))
    assert time.perf_counter() - started < 1.0  # nothing decoded
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (8, 8)).save(tiny)
    few = [{**r, "image": str(tiny)} for r in records]
    small = torch.utils.data.DataLoader(RecordDataset(few), batch_size=64, collate_fn=lambda items: items)
    assert [it["pil_image"].size for it in next(iter(small))] == [(8, 8)] * 64  # under the limit: served
    set_max_pixels(None, 64 * 64 - 1)
    try:
        with pytest.raises(DataError, match="holds 4,096 decoded pixels .* above dataset.max_batch_pixels=4,095 "):
            next(iter(small))
    finally:
        set_max_pixels(None)


# -- duplicated test ids: flagged, and paired by occurrence ---------------------------------------
def test_duplicated_test_ids_are_flagged_and_paired_by_occurrence(tmp_path, capsys):
    import numpy as np

    from medft.metrics.stats import RunScores, add_statistics

    outcomes = np.array([1.0, 0.0] * 10)  # each id twice: right the first time, wrong the second
    ids = [f"q{i // 2}" for i in range(20)]
    rows = [{"run": str(tmp_path / name), "status": "ok", "model": "m", "dataset": "d", "tune": tune, "test/acc": 0.5}
            for name, tune in (("full", "full"), ("lora", "lora"))]
    add_statistics(rows, "full", loader=lambda run, metrics: RunScores(ids, {"test/acc": outcomes}))
    lora = rows[1]
    assert lora["test/acc_delta_vs_ref"] == 0.0 and lora["test/acc_p_vs_ref"] == 1.0  # was 0.002 (paired with the last)

    from medft.commands.data import main

    root = small_set(tmp_path / "vqa")
    test = json.loads((root / "testset.json").read_text())
    test.append({**test[0], "question": "Another question?"})  # the same qid, another record
    (root / "testset.json").write_text(json.dumps(test))
    main(["dataset=vqa_rad", f"dataset.root={root}", "dataset.val_fraction=0"])
    out = capsys.readouterr().out
    assert "found in test: 1 record(s) whose id another record has (renamed ID-2, ID-3, ... in predictions.jsonl) " \
           "(e.g. 100): kept as published\n" in out + "\n"


# -- the embedded model's build: no orphan, no leftovers ----------------------------------------------
@pytest.mark.parametrize("raised", [RuntimeError("out of memory"), KeyboardInterrupt()])
def test_a_failed_or_interrupted_build_leaves_nothing_behind(tmp_path, monkeypatch, raised):
    """The recipe runs in this process (no child to orphan): a failure is one line for the run that needed
    the model, an interruption goes on up, and neither leaves its temp dir or a half-built model."""
    from medft.training import embedded
    from medft.util.errors import MedftError

    def recipe(out, run_dir, seed, cache_dir, config="pretrain"):
        (out / "model.safetensors").parent.mkdir(parents=True)
        (out / "model.safetensors").write_bytes(b"half")
        raise raised

    expected = MedftError if isinstance(raised, Exception) else KeyboardInterrupt
    with pytest.raises(expected) as caught:
        embedded.ensure_embedded(tmp_path, 0, recipe)
    if expected is MedftError:
        assert "building the embedded pretrained model failed (RuntimeError: out of memory)" in str(caught.value)
    assert [p.name for p in (tmp_path / "pretrained").iterdir()] == [f"{embedded.embedded_dir(tmp_path).name}.lock"]


def test_a_dead_builders_temp_dir_is_removed(tmp_path, monkeypatch):
    from medft.training import embedded

    target = embedded.embedded_dir(tmp_path)
    left = target.with_name(f"{target.name}.tmp-999999")
    (left / "model").mkdir(parents=True)
    (left / "model" / "weights.bin").write_bytes(b"x" * 1000)

    def build(target, version, cache_dir, seed, recipe, config="pretrain"):
        (target).mkdir()
        (target / embedded.INFO_FILE).write_text(json.dumps({"recipe_version": version}))
        return target

    monkeypatch.setattr(embedded, "build_embedded", build)
    assert embedded.ensure_embedded(tmp_path, 0, recipe=None) == target
    assert not left.exists()


def test_a_path_vqa_pickle_that_names_code_is_refused_not_run(tmp_path):
    import pickle

    from test_trust import Payload

    from medft.testing.fixtures import make_path_vqa_pickles

    root = make_path_vqa_pickles(tmp_path / "pvqa")
    from medft.data.path_vqa import load_path_vqa

    assert len(load_path_vqa(root)["test"]) == 5  # the release's plain pickles still load
    marker = tmp_path / "pwned"
    train = next((root / "qas" / "train").glob("*.pkl"))
    train.write_bytes(pickle.dumps([{"image": "x", "question": "q", "answer": "a", "x": Payload(marker)}]))
    with pytest.raises(DataError, match=r"is not a readable pickle \(it names posix.system, not plain data; refused"):
        load_path_vqa(root)
    assert not marker.exists()
