"""The VQA-RAD loader on both real layouts, on a quirky fixture, and its errors."""

import json
from collections import Counter
from pathlib import Path

import pytest

from medft.data.vqa_rad import load_vqa_rad
from medft.util.errors import ConfigError, DataError

VQA_RAD = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "vqa_rad"
OSF = VQA_RAD / "osf"
MEVF = VQA_RAD / "mevf"
needs_osf = pytest.mark.skipif(not OSF.is_dir(), reason="shared VQA-RAD (osf) not present")
needs_mevf = pytest.mark.skipif(not MEVF.is_dir(), reason="shared VQA-RAD (mevf) not present")

FIELDS = {"id", "image", "image_name", "question", "answer", "answer_type", "question_type", "organ"}


def check_records(splits):
    """Invariants every loaded dataset must satisfy."""
    assert set(splits) == {"train", "val", "test"}
    records = [r for split in splits.values() for r in split]
    ids = [r["id"] for r in records]
    assert len(set(ids)) == len(ids), "ids are not unique"
    for r in records:
        assert set(r) == FIELDS
        assert all(isinstance(r[k], str) for k in FIELDS)
        assert r["answer_type"] in {"CLOSED", "OPEN"}
        assert r["question"] and r["answer"]
        assert Path(r["image"]).is_absolute()
    for image in {r["image"] for r in records}:
        assert Path(image).is_file(), image


@needs_osf
def test_original_release_layout():
    stats = {}
    splits = load_vqa_rad(OSF, stats=stats)
    check_records(splits)
    assert stats == {"layout": "osf", "skipped_empty": 0, "skipped_no_image": 0, "skipped_wrong_type": 0}
    assert len(splits["test"]) == 451
    assert Counter(r["answer_type"] for r in splits["test"]) == {"CLOSED": 272, "OPEN": 179}
    assert len(splits["train"]) + len(splits["val"]) == 2248 - 451
    assert len(splits["val"]) == round(0.1 * (2248 - 451))
    by_id = {r["id"]: r for s in splits.values() for r in s}
    assert by_id["0"]["question"] == "Are regions of the brain infarcted?"  # qid is the string "0"
    assert {"4", "2", "12"} <= {r["answer"] for r in by_id.values()}  # int answers became str


@needs_mevf
def test_split_layout():
    splits = load_vqa_rad(MEVF)
    check_records(splits)
    assert len(splits["train"]) + len(splits["val"]) == 3064
    assert len(splits["test"]) == 451
    assert Counter(r["answer_type"] for r in splits["test"]) == {"CLOSED": 272, "OPEN": 179}
    answers = {r["answer"] for s in splits.values() for r in s}
    assert "None" in answers  # a real answer, not a missing value


@needs_mevf
@needs_osf
def test_both_layouts_have_the_same_test_pairs():
    key = lambda r: (r["image_name"], r["question"])  # noqa: E731
    assert Counter(map(key, load_vqa_rad(OSF)["test"])) == Counter(map(key, load_vqa_rad(MEVF)["test"]))


@needs_mevf
def test_val_carving_is_deterministic():
    def val_ids(seed, fraction=0.1):
        return [r["id"] for r in load_vqa_rad(MEVF, val_fraction=fraction, seed=seed)["val"]]

    assert val_ids(0) == val_ids(0)
    assert val_ids(1) == val_ids(1)
    assert val_ids(0) != val_ids(1)
    assert val_ids(0, fraction=0.0) == []
    splits = load_vqa_rad(MEVF, val_fraction=0.2, seed=3)
    assert len(splits["val"]) == round(0.2 * 3064)
    assert not {r["id"] for r in splits["val"]} & {r["id"] for r in splits["train"]}


# --- a small fixture with every quirk of the real files --------------------------------------


def write_split_fixture(root: Path, train, test, val=None):
    (root / "images").mkdir(parents=True)
    (root / "images" / "a.jpg").write_bytes(b"not opened by the loader")
    (root / "trainset.json").write_text(json.dumps(train))
    (root / "testset.json").write_text(json.dumps(test))
    if val is not None:
        (root / "valset.json").write_text(json.dumps(val))


def raw(qid, question="Is it?", answer="yes", answer_type="CLOSED", **extra):
    rec = {"qid": qid, "image_name": "a.jpg", "image_organ": "CHEST", "answer": answer,
           "answer_type": answer_type, "question_type": "PRES", "question": question,
           "phrase_type": "freeform"}
    rec.update(extra)
    return rec


def test_quirks_of_the_real_files(tmp_path):
    train = [
        raw("0"),                                         # qid as a string
        raw(1, answer=12, answer_type="OPEN"),            # int answer
        raw(2, answer="No", answer_type="CLOSED "),       # trailing space
        raw(3, question=""),                              # empty question: skipped
        raw(4, answer="NULL"),                            # missing answer: skipped
        raw(5, question_type="POS, PRES", image_organ="NULL"),
        raw(6, answer="None", answer_type="OPEN"),        # "None" is a real answer
        {"qid": 7, "image_name": "a.jpg", "question": "What?", "answer": "Lung"},  # missing keys
        raw(8, answer=" yes ", answer_type="NULL"),
    ]
    test = [raw(1, answer="left", answer_type="open"), raw(100)]  # qid 1 repeats train's
    write_split_fixture(tmp_path, train, test)
    stats = {}
    splits = load_vqa_rad(tmp_path, val_fraction=0.0, stats=stats)
    assert stats["skipped_empty"] == 2
    check_records(splits)
    assert splits["val"] == []
    by_id = {r["id"]: r for r in splits["train"]}
    assert set(by_id) == {"0", "1", "2", "5", "6", "7", "8"}
    assert by_id["1"]["answer"] == "12" and by_id["1"]["answer_type"] == "OPEN"
    assert by_id["2"]["answer_type"] == "CLOSED"
    assert by_id["5"]["question_type"] == "POS, PRES" and by_id["5"]["organ"] == ""
    assert by_id["6"]["answer"] == "None"
    assert by_id["7"]["answer_type"] == "OPEN" and by_id["7"]["question_type"] == ""
    assert by_id["8"]["answer"] == "yes" and by_id["8"]["answer_type"] == "CLOSED"  # inferred
    assert by_id["0"]["image"] == str((tmp_path / "images" / "a.jpg").resolve())
    assert [r["id"] for r in splits["test"]] == ["1-2", "100"]
    assert splits["test"][0]["answer_type"] == "OPEN"


def test_val_file_is_used_when_present(tmp_path):
    write_split_fixture(tmp_path, [raw(i) for i in range(10)], [raw(20)], val=[raw(30), raw(31)])
    splits = load_vqa_rad(tmp_path, val_fraction=0.5)
    assert [r["id"] for r in splits["val"]] == ["30", "31"]
    assert len(splits["train"]) == 10


def test_original_layout_fixture(tmp_path):
    (tmp_path / "VQA_RAD Image Folder").mkdir()
    records = [raw(i, phrase_type=p) for i, p in enumerate(["freeform", "para", "test_freeform", "test_para"])]
    (tmp_path / "VQA_RAD Dataset Public.json").write_text(json.dumps(records))
    splits = load_vqa_rad(tmp_path, val_fraction=0.0)
    assert [r["id"] for r in splits["train"]] == ["0", "1"]
    assert [r["id"] for r in splits["test"]] == ["2", "3"]
    assert splits["test"][0]["image"].endswith("VQA_RAD Image Folder/a.jpg")


# --- errors ----------------------------------------------------------------------------------


def assert_one_line_naming(excinfo, path):
    message = str(excinfo.value)
    assert str(path) in message and "\n" not in message


def test_missing_root(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as excinfo:
        load_vqa_rad(missing)
    assert_one_line_naming(excinfo, missing)


def test_folder_with_neither_layout(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError) as excinfo:
        load_vqa_rad(tmp_path)
    assert_one_line_naming(excinfo, tmp_path)
    assert "trainset.json" in str(excinfo.value) and "VQA_RAD Dataset Public.json" in str(excinfo.value)


def test_invalid_json(tmp_path):
    write_split_fixture(tmp_path, [raw(1)], [raw(2)])
    (tmp_path / "testset.json").write_text('[{"qid": 1,')
    with pytest.raises(DataError) as excinfo:
        load_vqa_rad(tmp_path)
    assert_one_line_naming(excinfo, tmp_path / "testset.json")


def test_json_that_is_not_a_list(tmp_path):
    write_split_fixture(tmp_path, {"qid": 1}, [raw(2)])
    with pytest.raises(DataError) as excinfo:
        load_vqa_rad(tmp_path)
    assert_one_line_naming(excinfo, tmp_path / "trainset.json")


def test_missing_image_folder(tmp_path):
    (tmp_path / "VQA_RAD Dataset Public.json").write_text("[]")
    with pytest.raises(DataError) as excinfo:
        load_vqa_rad(tmp_path)
    assert_one_line_naming(excinfo, tmp_path / "VQA_RAD Image Folder")


def test_bad_val_fraction(tmp_path):
    write_split_fixture(tmp_path, [raw(1)], [raw(2)])
    with pytest.raises(ConfigError):
        load_vqa_rad(tmp_path, val_fraction=1.0)
