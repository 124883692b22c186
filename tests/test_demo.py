"""The synthetic demo set: deterministic, cached, readable by load_vqa_rad, answers in the pixels."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from medft.data.demo import META_FILE, ensure_demo
from medft.data.images import load_rgb
from medft.data.vqa_rad import load_vqa_rad
from medft.util.errors import DataError

SMALL = {"n_train_images": 60, "n_test_images": 20, "image_size": 64, "seed": 0}
MEVF_FIELDS = {"qid", "image_name", "image_organ", "answer", "answer_type", "question_type", "question", "phrase_type"}


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root, relative path -> bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def default_demo(tmp_path_factory):
    """The default-size demo set, generated once for this module."""
    return ensure_demo(tmp_path_factory.mktemp("demo") / "demo")


def test_generation_is_deterministic(tmp_path):
    a = ensure_demo(tmp_path / "a", **SMALL)
    b = ensure_demo(tmp_path / "b", **SMALL)
    snap_a, snap_b = snapshot(a), snapshot(b)
    assert len([k for k in snap_a if k.endswith(".png")]) == 80
    assert snap_a == snap_b
    c = ensure_demo(tmp_path / "c", **{**SMALL, "seed": 1})
    assert snapshot(c)["trainset.json"] != snap_a["trainset.json"]
    assert not list(tmp_path.glob("*.tmp-*")), "temporary folder left behind"


def test_second_call_reuses_a_complete_set(tmp_path):
    root = ensure_demo(tmp_path / "demo", **SMALL)
    marker = root / "images" / "marker.txt"  # would vanish if the folder were regenerated
    marker.write_text("still here")
    assert ensure_demo(tmp_path / "demo", **SMALL) == root
    assert marker.exists()


def test_incomplete_or_different_set_is_regenerated(tmp_path):
    root = ensure_demo(tmp_path / "demo", **SMALL)
    expected = snapshot(root)
    (root / META_FILE).unlink()  # as if generation had stopped before the end
    (root / "testset.json").write_text("[]")
    ensure_demo(root, **SMALL)
    assert snapshot(root) == expected

    ensure_demo(root, **{**SMALL, "n_test_images": 10})
    meta = json.loads((root / META_FILE).read_text())
    assert meta["n_test_images"] == 10
    assert len(list((root / "images").glob("test_*.png"))) == 10


def test_refuses_to_overwrite_an_unrelated_folder(tmp_path):
    (tmp_path / "my_notes.txt").write_text("precious")
    with pytest.raises(DataError, match=str(tmp_path)):
        ensure_demo(tmp_path, **SMALL)
    assert (tmp_path / "my_notes.txt").read_text() == "precious"


def test_files_use_the_vqa_rad_split_layout(default_demo):
    train = json.loads((default_demo / "trainset.json").read_text())
    test = json.loads((default_demo / "testset.json").read_text())
    assert all(set(r) == MEVF_FIELDS for r in train + test)
    assert {r["phrase_type"] for r in test} <= {"test_freeform", "test_para"}
    assert {r["image_organ"] for r in train} == {"CHEST", "HEAD", "ABD"}


def test_load_vqa_rad_reads_the_default_set(default_demo):
    stats = {}
    splits = load_vqa_rad(default_demo, val_fraction=0.1, stats=stats)
    assert stats["layout"] == "split" and stats["skipped_empty"] == 0
    n_train = len(splits["train"]) + len(splits["val"])
    assert 1200 <= n_train <= 1400 and 240 <= len(splits["test"]) <= 300
    for split in splits.values():
        kinds = Counter(r["answer_type"] for r in split)
        assert kinds["CLOSED"] > 0 and kinds["OPEN"] > 0
        closed = Counter(r["answer"] for r in split if r["answer_type"] == "CLOSED")
        assert set(closed) == {"yes", "no"}
        assert 0.35 <= closed["yes"] / sum(closed.values()) <= 0.65
    answers = {r["answer"] for s in splits.values() for r in s}
    assert {"chest", "head", "abdomen", "left", "right", "0", "1", "2"} <= answers
    assert {r["question_type"] for s in splits.values() for r in s} == {"PRES", "POS", "ORGAN", "COUNT"}
    image = load_rgb(splits["test"][0]["image"])
    assert image.size == (64, 64)


def test_images_carry_the_answers(default_demo):
    records = [r for s in load_vqa_rad(default_demo, val_fraction=0.0).values() for r in s]
    side = [r for r in records if r["question_type"] == "POS" and r["answer_type"] == "OPEN"]
    assert len(side) >= 40
    for r in side[:60]:
        gray = np.asarray(load_rgb(r["image"]), dtype=float).mean(axis=2)
        half = gray.shape[1] // 2
        left, right = gray[:, :half].mean(), gray[:, half:].mean()
        brighter = "left" if left > right else "right"
        assert brighter == r["answer"], f"{r['image']}: lesion said {r['answer']}, brighter half is {brighter}"

    # lesions are the brightest things in chest and abdomen images (the skull ring of a
    # head image is about as bright, so heads are left out)
    count = {r["image"]: r["answer"] for r in records if r["question_type"] == "COUNT" and r["organ"] != "HEAD"}
    peaks = {"0": [], "1": [], "2": []}
    for image, n in list(count.items())[:90]:
        peaks[n].append(np.asarray(load_rgb(image))[..., 0].max())
    assert np.mean(peaks["1"]) > np.mean(peaks["0"]) + 30
    assert np.mean(peaks["2"]) > np.mean(peaks["0"]) + 30
