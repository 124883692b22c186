"""Trust boundaries of a dataset (issue 12): an annotation file is data. Its image paths stay
inside dataset.root; its damage or odd shapes give one line, not a traceback, before training."""

import json
import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from test_bad_input import IMAGE_MODES, record, small_set, write_dataset  # noqa: F401

from medft.data.checks import prepare_splits
from medft.data.sources import load_splits


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
    from medft.util.errors import DataError

    outside = tmp_path / "outside.png"
    IMAGE_MODES["rgb.png"](outside)
    root = write_dataset(tmp_path / "vqa", [record(1, str(outside))], [record(2, "rgb.png")], {"rgb.png": IMAGE_MODES["rgb.png"]})
    cfg = vqa_rad_cfg(root)
    with pytest.raises(DataError, match="every image of the train split lies outside dataset.root"):
        prepare_splits(load_splits(cfg), cfg)


def test_medft_data_counts_images_outside_the_root(tmp_path, capsys):
    from medft.commands.data import main

    root = small_set(tmp_path / "vqa")
    train = json.loads((root / "trainset.json").read_text()) + [record(50, "/etc/hostname")]
    (root / "trainset.json").write_text(json.dumps(train))
    main(["dataset=vqa_rad", f"dataset.root={root}", "format=json"])
    out = capsys.readouterr()
    report = json.loads(out.out)
    assert report["dropped"] == {"train": {"outside_root": 1}} and report["splits"]["train"]["n"] == 8
    assert "dropped 1 sample(s) whose image path leaves dataset.root" in out.err


# -- damaged or odd annotation files ---------------------------------------------------------
def test_a_byte_order_mark_is_read(tmp_path):
    root = small_set(tmp_path / "vqa")
    (root / "trainset.json").write_bytes(b"\xef\xbb\xbf" + (root / "trainset.json").read_bytes())
    assert len(load_splits(vqa_rad_cfg(root))["train"]) == 8


def test_deeply_nested_annotation_json_is_one_line(tmp_path):
    from medft.util.errors import DataError

    root = small_set(tmp_path / "vqa")
    (root / "trainset.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataError, match="trainset.json is nested too deeply"):
        load_splits(vqa_rad_cfg(root))


def test_questions_and_answers_that_are_not_text_are_dropped_and_counted(tmp_path, caplog):
    root = small_set(tmp_path / "vqa")
    train = json.loads((root / "trainset.json").read_text())
    train += [record(60, "rgb.png", question=["Is", "there"]), record(61, "rgb.png", answer={"a": 1}),
              record(62, "rgb.png", answer=True), record(63, "rgb.png", answer=3)]
    (root / "trainset.json").write_text(json.dumps(train))
    splits = load_splits(vqa_rad_cfg(root))
    texts = [(r["question"], r["answer"]) for r in splits["train"]]
    assert len(texts) == 9 and ("Is there a lesion?", "3") in texts  # ints are still cast (VQA-RAD has them)
    assert not any("[" in q or "{" in a or a == "True" for q, a in texts)
    assert "3 whose question or answer is not text" in caplog.text


def test_an_empty_test_image_is_found_before_training(tmp_path):
    from medft.util.errors import DataError

    root = small_set(tmp_path / "vqa")
    (root / "images" / "empty.png").write_bytes(b"")
    test = json.loads((root / "testset.json").read_text()) + [record(102, "empty.png")]
    (root / "testset.json").write_text(json.dumps(test))
    cfg = vqa_rad_cfg(root)
    with pytest.raises(DataError, match=r"empty.png is empty \(0 bytes\) \(1 image\(s\) missing or empty, used by 1"):
        prepare_splits(load_splits(cfg), cfg)
    cfg.skip_bad_images = True
    splits, stats = prepare_splits(load_splits(cfg), cfg)
    assert stats["data/skipped_missing_images"] == 1 and len(splits["test"]) == 2


def png_header(width: int, height: int) -> bytes:
    """The first bytes of a PNG of that size (enough for Pillow to read its size)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def test_a_huge_image_is_called_too_large_with_the_limit(tmp_path):
    from medft.data.images import load_rgb, set_max_pixels
    from medft.util.errors import DataError

    huge = tmp_path / "huge.png"
    huge.write_bytes(png_header(20000, 20000))
    with pytest.raises(DataError, match=r"huge.png: too large \(20000 x 20000 = 400,000,000 pixels, above "
                                        r"dataset.max_image_pixels=100,000,000\)"):
        load_rgb(huge)
    small = tmp_path / "small.png"
    IMAGE_MODES["rgb.png"](small)
    try:
        set_max_pixels(100)
        with pytest.raises(DataError, match=r"too large \(32 x 32 = 1,024 pixels, above dataset.max_image_pixels=100\)"):
            load_rgb(small)
    finally:
        set_max_pixels(None)
    assert load_rgb(small).size == (32, 32)


def test_medft_data_exits_1_when_the_train_split_ends_up_empty(tmp_path, capsys):
    from medft.commands.data import main

    root = write_dataset(tmp_path / "vqa", [record(1, "rgb.png", question="")], [record(2, "rgb.png")],
                         {"rgb.png": IMAGE_MODES["rgb.png"]})
    with pytest.raises(SystemExit) as exit_:
        main(["dataset=vqa_rad", f"dataset.root={root}"])
    assert exit_.value.code == 1
    assert "the train split of vqa_rad at" in capsys.readouterr().err


def test_slake_questions_that_are_not_text_are_dropped_and_counted(tmp_path, caplog):
    from medft.data.slake import load_slake
    from medft.testing.fixtures import make_slake

    root = make_slake(tmp_path / "slake")
    rows = json.loads((root / "train.json").read_text(encoding="utf-8"))
    n = len([r for r in rows if r["q_lang"] == "en"])
    rows[0] = {**rows[0], "q_lang": "en", "question": ["Is", "there"]}
    rows[1] = {**rows[1], "q_lang": "en", "answer": False}
    (root / "train.json").write_text(json.dumps(rows), encoding="utf-8")
    train = load_slake(root, "en", 0.0, 0)["train"]
    assert len(train) == n - 1  # row 0 (English) is dropped; row 1 (Chinese, made English) too
    assert not any(r["question"].startswith("[") or r["answer"] in ("False", "false") for r in train)
    assert "skipped 2 record(s)" in caplog.text
