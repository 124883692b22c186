"""`medft data`: per-split counts on the real VQA-RAD layouts and on every fixture layout."""

import json
from pathlib import Path

import pytest

from medft.testing.fixtures import make_iu_xray, make_path_vqa_parquet, make_slake
from medft.commands.data import main
from medft_testing import run_main

VQA_RAD = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "vqa_rad"
needs_vqa_rad = pytest.mark.skipif(not VQA_RAD.is_dir(), reason="shared VQA-RAD not present")


def run(capsys, *args):
    """(exit status, stdout, stderr) of `medft data ARGS`."""
    return run_main(main, capsys, *args)


def run_json(capsys, *args):
    status, out, err = run(capsys, *args, "format=json")
    assert status == 0, err
    return json.loads(out)


@needs_vqa_rad
@pytest.mark.parametrize("layout", ["osf", "mevf"])
def test_vqa_rad_test_split(capsys, layout):
    report = run_json(capsys, "dataset=vqa_rad", f"dataset.root={VQA_RAD / layout}", "decode=false")
    assert report["dataset"] == "vqa_rad"
    assert report["splits"]["test"] == {"n": 451, "closed": 272, "open": 179, "images": 203, "missing_images": 0}
    train = report["splits"]["train"]
    assert train["n"] == {"osf": 2248 - 451, "mevf": 3064}[layout]
    assert train["closed"] + train["open"] == train["n"]
    assert "val" not in report["splits"]
    assert report["val_from_train"] == round(0.1 * train["n"])


@needs_vqa_rad
def test_vqa_rad_text_output_decodes_images(capsys):
    status, out, _ = run(capsys, "dataset=vqa_rad", f"dataset.root={VQA_RAD / 'mevf'}")
    assert status == 0
    lines = out.splitlines()
    assert lines[2].split() == ["train", "3064", "1823", "1241", "314", "0"]
    assert lines[3].split() == ["test", "451", "272", "179", "203", "0"]
    assert "training carves 306 of the 3064 train samples" in out


def test_slake_fixture_and_lang(capsys, tmp_path):
    root = make_slake(tmp_path / "slake", val_name="validation.json")
    report = run_json(capsys, "dataset=slake", f"dataset.root={root}", "dataset.lang=all")
    assert report["splits"]["val"] == {"n": 9, "closed": 6, "open": 3, "images": 3, "missing_images": 0}
    assert "val_from_train" not in report


def test_parquet_fixture(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDFT_CACHE_DIR", str(tmp_path / "cache"))
    root = make_path_vqa_parquet(tmp_path / "pvqa")
    report = run_json(capsys, "dataset=path_vqa", f"dataset.root={root}")
    assert report["splits"]["train"] == {"n": 10, "closed": 6, "open": 4, "images": 5, "missing_images": 0}
    assert (tmp_path / "cache" / "path_vqa").is_dir()


def test_report_fixture_counts_every_view_and_bad_images(capsys, tmp_path):
    root = make_iu_xray(tmp_path / "iu")
    (root / "images" / "CXR1000_IM-2000" / "1.png").unlink()                  # missing
    (root / "images" / "CXR1001_IM-2001" / "0.png").write_bytes(b"\x89PNG\r\n")  # truncated
    status, out, _ = run(capsys, "dataset=iu_xray", f"dataset.root={root}", "format=json")
    assert status == 1  # some images are missing or unreadable
    report = json.loads(out)
    assert report["task"] == "report"
    assert report["splits"]["train"] == {"n": 8, "images": 16, "missing_images": 2}


def test_unrecognised_layout_names_the_expected_files(capsys, tmp_path):
    status, out, err = run(capsys, "dataset=iu_xray", f"dataset.root={tmp_path}")
    assert status == 2 and out == ""
    assert err.strip() == (
        f"medft: error: no IU X-ray dataset in {tmp_path}: expected annotation.json with train/val/test lists + "
        "images/ (R2Gen layout), or mimic-cxr-2.0.0-split.csv.gz + files/pXX/pSUBJECT/sSTUDY/ (MIMIC-CXR-JPG as "
        "PhysioNet ships it), or indiana_reports.csv + indiana_projections.csv + images (IU X-ray's Kaggle / OpenI "
        "CSVs); point dataset.root at the folder holding one of them"
    )


def test_usage_errors(capsys):
    status, _, err = run(capsys)
    assert status == 2 and "no dataset given" in err and "vqa_rad" in err
    status, _, err = run(capsys, "dataset=slake")
    assert status == 2 and "dataset.root is not set" in err
    status, _, err = run(capsys, "dataset=vqa_rad", "dataset.root=/x", "format=xml")
    assert status == 2 and "format='xml'" in err
