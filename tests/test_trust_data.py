"""Trust boundaries of a dataset (issue 12): an annotation file is data. Its image paths stay
inside dataset.root; its damage or odd shapes give one line, not a traceback, before training."""

import json
import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from medft.data.checks import prepare_splits
from medft.data.sources import load_splits
from test_bad_input import IMAGE_MODES, record, small_set, write_dataset  # noqa: F401


def vqa_rad_cfg(root: Path, **extra) -> OmegaConf:
    return OmegaConf.create({
        "name": "vqa_rad", "task": "vqa", "root": str(root), "skip_bad_images": False, **extra,
        "load": {"_target_": "medft.data.sources.vqa_rad", "root": str(root), "val_fraction": 0.0},
    })


def test_image_paths_that_leave_the_root_are_dropped_and_counted(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    IMAGE_MODES["rgb.png"](outside / "secret.png")
    root = small_set(tmp_path / "vqa")
    (root / "images" / "link.png").symlink_to(outside / "secret.png")
    train = json.loads((root / "trainset.json").read_text())
    train += [record(50, "../../outside/secret.png"), record(51, str(outside / "secret.png")), record(52, "link.png")]
    (root / "trainset.json").write_text(json.dumps(train))
    cfg = vqa_rad_cfg(root)
    splits, stats = prepare_splits(load_splits(cfg), cfg)
    assert stats["data/dropped/outside_root"] == 3
    assert len(splits["train"]) == 8
    assert not any("secret" in r["image"] or "link" in r["image"] for r in splits["train"])


def test_a_split_entirely_outside_the_root_is_an_error(tmp_path):
    from medft.errors import DataError

    outside = tmp_path / "outside.png"
    IMAGE_MODES["rgb.png"](outside)
    root = write_dataset(tmp_path / "vqa", [record(1, str(outside))], [record(2, "rgb.png")], {"rgb.png": IMAGE_MODES["rgb.png"]})
    cfg = vqa_rad_cfg(root)
    with pytest.raises(DataError, match="every image of the train split lies outside dataset.root"):
        prepare_splits(load_splits(cfg), cfg)
