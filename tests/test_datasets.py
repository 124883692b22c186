"""Every dataset layout, built in its exact published format in tmp_path, through the real loaders."""

import pickle
from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from PIL import Image

from medft.data import sources
from medft.data.checks import count_truncated, drop_missing_images
from medft.data.images import load_rgb
from medft.testing.fixtures import make_iu_xray, make_mimic_cxr, make_path_vqa_parquet, make_path_vqa_pickles, make_slake, write_image
from medft.util.errors import ConfigError, DataError

VQA_FIELDS = {"id", "image", "image_name", "question", "answer", "answer_type", "question_type", "organ"}
REPORT_FIELDS = {"id", "image", "images", "views", "report"}


def check(splits, fields):
    assert set(splits) == {"train", "val", "test"}
    records = [r for s in splits.values() for r in s]
    assert len({r["id"] for r in records}) == len(records), "ids not unique"
    for r in records:
        assert set(r) == fields
        assert Path(r["image"]).is_file(), r["image"]
        assert load_rgb(r["image"]).mode == "RGB"
        if "answer_type" in r:
            assert r["answer_type"] in {"CLOSED", "OPEN"} and isinstance(r["answer"], str)


# --- SLAKE -----------------------------------------------------------------------------------


@pytest.mark.parametrize("val_name", ["validate.json", "validation.json"])
def test_slake_english_by_default(tmp_path, val_name):
    root = make_slake(tmp_path / "slake", val_name=val_name)
    splits = sources.slake(str(root))
    check(splits, VQA_FIELDS)
    # per image: one English CLOSED question, one English OPEN (int answer); the Chinese ones dropped
    assert {k: len(v) for k, v in splits.items()} == {"train": 12, "val": 6, "test": 6}
    assert Counter(r["answer_type"] for r in splits["test"]) == {"CLOSED": 3, "OPEN": 3}
    assert {"0", "1", "2"} <= {r["answer"] for r in splits["test"]}  # int answers became strings
    first = splits["test"][0]
    assert first["image"].endswith("imgs/xmlab200/source.jpg") and first["organ"] == "LUNG"


def test_slake_languages(tmp_path):
    root = make_slake(tmp_path / "slake")
    zh = sources.slake(str(root), lang="zh")
    both = sources.slake(str(root), lang="all")
    assert {k: len(v) for k, v in zh.items()} == {"train": 6, "val": 3, "test": 3}
    assert all(r["answer"] in {"是", "否"} for r in zh["train"])
    assert {k: len(v) for k, v in both.items()} == {"train": 18, "val": 9, "test": 9}
    with pytest.raises(ConfigError, match="dataset.lang='fr'"):
        sources.slake(str(root), lang="fr")


def test_slake_without_validation_file_carves_val(tmp_path):
    root = make_slake(tmp_path / "slake")
    (root / "validate.json").unlink()
    splits = sources.slake(str(root), val_fraction=0.25)
    assert len(splits["train"]) + len(splits["val"]) == 12 and len(splits["val"]) == 3


def test_slake_missing_files_are_named(tmp_path):
    root = make_slake(tmp_path / "slake")
    (root / "test.json").unlink()
    with pytest.raises(DataError, match=r"test.json missing; expected train.json, validate.json"):
        sources.slake(str(root))


# --- PathVQA ---------------------------------------------------------------------------------


def test_path_vqa_pickles(tmp_path):
    root = make_path_vqa_pickles(tmp_path / "pvqa")
    splits = sources.path_vqa(str(root))
    check(splits, VQA_FIELDS)
    assert {k: len(v) for k, v in splits.items()} == {"train": 10, "val": 5, "test": 5}
    by_answer = {r["answer"]: r["answer_type"] for r in splits["train"]}
    assert by_answer == {"yes": "CLOSED", "no": "CLOSED", "Yes": "CLOSED", "the liver": "OPEN",
                         "hepatocellular carcinoma": "OPEN"}
    assert splits["test"][0]["image"].endswith("images/test/test_0000.jpg")


def test_path_vqa_parquet_matches_pickles(tmp_path):
    root = make_path_vqa_parquet(tmp_path / "pvqa_pq")
    splits = sources.path_vqa(str(root), cache_dir=str(tmp_path / "cache"))
    check(splits, VQA_FIELDS)
    assert {k: len(v) for k, v in splits.items()} == {"train": 10, "val": 5, "test": 5}
    assert Counter(r["answer_type"] for r in splits["train"]) == {"CLOSED": 6, "OPEN": 4}
    # embedded images are cached once per distinct image, under the cache dir
    assert len({r["image"] for r in splits["train"]}) == 5
    assert all(r["image"].startswith(str(tmp_path / "cache")) for r in splits["train"])
    assert splits["train"][0]["image_name"] == "train_0000.jpg"
    again = sources.path_vqa(str(root), cache_dir=str(tmp_path / "cache"))
    assert again == splits


def test_path_vqa_unrecognised_layout(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"qas/\{train,val,test\}/\{split\}_qa.pkl .*-\*.parquet"):
        sources.path_vqa(str(tmp_path / "empty"))


def test_path_vqa_bad_pickle(tmp_path):
    root = make_path_vqa_pickles(tmp_path / "pvqa")
    (root / "qas" / "train" / "train_qa.pkl").write_bytes(pickle.dumps("not a list"))
    with pytest.raises(DataError, match="train_qa.pkl must hold a list"):
        sources.path_vqa(str(root))


# --- R2Gen: IU X-ray, MIMIC-CXR --------------------------------------------------------------


def test_iu_xray_two_views(tmp_path):
    root = make_iu_xray(tmp_path / "iu")
    splits = sources.r2gen(str(root), "iu_xray")
    check(splits, REPORT_FIELDS)
    assert {k: len(v) for k, v in splits.items()} == {"train": 8, "val": 2, "test": 3}
    rec = splits["train"][0]
    assert rec["id"] == "CXR1000_IM-2000"
    assert [Path(p).name for p in rec["images"]] == ["0.png", "1.png"] and rec["image"] == rec["images"][0]
    assert rec["views"] == rec["images"][:1]
    # the fixture's views cycle through 8-bit gray, 16-bit and RGBA PNGs: all come out RGB
    assert {Image.open(p).mode for r in splits["train"] for p in r["images"]} >= {"L", "I;16", "RGBA"}


def test_iu_xray_both_views_side_by_side(tmp_path):
    from medft.data.datamodule import RecordDataset

    root = make_iu_xray(tmp_path / "iu")
    Image.new("L", (30, 48)).save(root / "images" / "CXR1000_IM-2000" / "1.png")  # a taller lateral view
    splits = sources.r2gen(str(root), "iu_xray", views="all")
    rec = splits["train"][0]
    assert rec["views"] == rec["images"] and len(rec["views"]) == 2
    image = RecordDataset(splits["train"])[0]["pil_image"]
    assert (image.mode, image.size) == ("RGB", (24 + 15, 24))  # 24x24 frontal + lateral scaled to 15x24
    with pytest.raises(ConfigError, match="dataset.views='both'"):
        sources.r2gen(str(root), "iu_xray", views="both")
    (root / "images" / "CXR1001_IM-2001" / "1.png").unlink()  # a missing second view drops the study
    kept, dropped = drop_missing_images(splits, skip=True)
    assert dropped["train"] == 1 and "CXR1001_IM-2001" not in {r["id"] for r in kept["train"]}


def test_mimic_cxr_layout(tmp_path):
    root = make_mimic_cxr(tmp_path / "mimic")
    splits = sources.r2gen(str(root), "mimic_cxr")
    check(splits, REPORT_FIELDS)
    rec = splits["test"][0]
    assert "/images/p10/p100000" in rec["image"] and "\n" not in rec["report"]
    assert {Image.open(r["image"]).mode for r in splits["train"]} >= {"CMYK", "L"}


def test_r2gen_errors(tmp_path):
    root = make_iu_xray(tmp_path / "iu")
    (root / "annotation.json").write_text('{"train": [], "val": [], "test": []}')
    with pytest.raises(DataError, match="train split of IU X-ray .* is empty"):
        sources.r2gen(str(root), "iu_xray")
    (root / "annotation.json").unlink()
    # no layout of the three detected: one line naming each (the old message named only R2Gen's)
    with pytest.raises(DataError, match=r"no IU X-ray dataset in .*/iu: expected annotation.json with train/val/test "
                                        r".*, or mimic-cxr-2.0.0-split.csv.gz .*, or indiana_reports.csv .*; point dataset.root"):
        sources.r2gen(str(root), "iu_xray")
    with pytest.raises(DataError, match="does not exist"):
        sources.r2gen(str(tmp_path / "nowhere"), "mimic_cxr")


def test_load_splits_unwraps_user_errors(tmp_path):
    cfg = OmegaConf.create({"load": {"_target_": "medft.data.sources.r2gen", "root": str(tmp_path), "name": "iu_xray"}})
    with pytest.raises(DataError, match="expected annotation.json with train/val/test"):
        sources.load_splits(cfg)


def test_train_fraction_subsamples_every_loader(tmp_path):
    root = make_iu_xray(tmp_path / "iu", sizes=(20, 2, 2))
    half = sources.r2gen(str(root), "iu_xray", train_fraction=0.5, split_seed=1)
    assert len(half["train"]) == 10
    assert half == sources.r2gen(str(root), "iu_xray", train_fraction=0.5, split_seed=1)


# --- missing images, truncation ---------------------------------------------------------------


def test_missing_image_is_an_error_or_skipped(tmp_path):
    root = make_slake(tmp_path / "slake")
    splits = sources.slake(str(root))
    gone = Path(splits["train"][0]["image"])
    gone.unlink()
    with pytest.raises(DataError, match=rf"image {gone} not found .*dataset.skip_bad_images=true"):
        drop_missing_images(splits, skip=False)
    kept, dropped = drop_missing_images(splits, skip=True)
    assert dropped == {"train": 2, "val": 0, "test": 0}  # that image had two English questions
    assert len(kept["train"]) == len(splits["train"]) - 2


def test_truncation_is_counted(tmp_path):
    from medft.models.tokenizer import build_offline_tokenizer

    splits = {"train": [{"question": "is there a lesion"}, {"question": " ".join(["lesion"] * 40)}], "test": []}
    assert count_truncated(splits, build_offline_tokenizer(), {"question": 32}) == {"question": 1}


def test_corrupt_image_fixture_modes(tmp_path):
    for i in range(5):
        assert load_rgb(write_image(tmp_path / f"{i}.png", i)).mode == "RGB"


# --- one data layer: the shared record / split code depends on no dataset -------------------------

SHARED = {"check_root", "read_json", "read_json_list", "is_text", "text", "_text", "drop_reason", "vqa_record",
          "report_record", "carve_val", "make_ids_unique", "_make_ids_unique", "finish", "check_val_fraction"}


def test_the_shared_data_module_imports_no_dataset_module():
    import ast
    import subprocess
    import sys

    import medft.data.common as common

    tree = ast.parse(Path(common.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not [m for m in imported if m and m.startswith("medft.data")], imported
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, medft.data.common; print(sorted(m for m in sys.modules if m.startswith('medft.data.')))"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert loaded.strip() == "['medft.data.common']"


def test_records_and_splits_are_made_in_the_shared_module_only():
    import ast

    data = Path(sources.__file__).parent
    for path in sorted(data.glob("*.py")):
        if path.name == "common.py":
            continue
        defined = {n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef)}
        assert not defined & SHARED, f"{path.name} re-implements {sorted(defined & SHARED)} of medft.data.common"
