"""Issue 14: the copies researchers download today, built here in their exact shapes (never downloaded):
the hub's Parquet (VQA-RAD, SLAKE, PathVQA), LLaVA-Med's files, a save_to_disk folder, a hub id in the
local cache, MIMIC-CXR-JPG as PhysioNet ships it, IU X-ray's CSVs. Every drop counted by reason."""

import json
from collections import Counter
from pathlib import Path

import pytest
from medft_testing import cache, cli  # noqa: F401 - fixtures
from test_datasets import REPORT_FIELDS, VQA_FIELDS, check

from medft.data import sources
from medft.data.answer_types import YES_NO
from medft.testing.fixtures import LLAVA_QA, make_hub_cache, make_iu_csv, make_llava, make_mimic_official, make_slake_hub, make_vqa_rad_annotations, make_vqa_rad_hub
from medft.util.errors import DataError


def medft_data(capsys, *args):
    """``medft data ARGS format=json`` -> (exit status, report, stderr)."""
    from medft.commands.data import main

    status = 0
    try:
        main([*args, "format=json"])
    except SystemExit as exit_:
        status = exit_.code
    out = capsys.readouterr()
    return status, json.loads(out.out) if out.out.strip() else None, out.err


def medft_data_text(capsys, *args):
    from medft.commands.data import main

    main(list(args))
    return capsys.readouterr().out


# --- VQA-RAD from the hub's Parquet copy ---------------------------------------------------------


def test_vqa_rad_hub_parquet_counts_drops_and_reports_duplicates(tmp_path, capsys):
    root = make_vqa_rad_hub(tmp_path / "vqa-rad")
    assert sorted(p.name for p in (root / "data").iterdir()) == [
        "test-00000-of-00001-5d6e7f80.parquet", "train-00000-of-00001-8f1c2a3b.parquet"]
    status, report, _ = medft_data(capsys, "dataset=vqa_rad", f"dataset.root={root}", f"paths.cache_dir={tmp_path / 'c'}")
    assert status == 0
    assert report["splits"]["train"]["n"] == 9 and report["splits"]["test"]["n"] == 4  # one empty answer dropped
    assert report["splits"]["train"]["closed"] == 5 and report["splits"]["train"]["open"] == 4
    assert report["dropped"] == {"train": {"empty": 1}}
    assert report["dropped_ids"] == {"train": {"empty": ["train-6"]}}
    assert report["found"]["duplicate"]["train"]["n"] == 1
    assert report["found"]["train_test_overlap"]["train"]["n"] == 1
    assert report["answer_types"] == YES_NO and "tables" in report["layout"]
    text = medft_data_text(capsys, "dataset=vqa_rad", f"dataset.root={root}", f"paths.cache_dir={tmp_path / 'c'}")
    assert "dropped from train: 1 empty question, answer or report (e.g. train-6)" in text
    assert "found in train: 1 duplicate(s)" in text and "dataset.dedupe=true removes them" in text
    assert "CLOSED / OPEN: yes/no rule" in text
    # the images were decoded once into the cache, one file per distinct picture
    cached = sorted((tmp_path / "c" / "vqa_rad").rglob("*.jpg"))
    assert len(cached) == 9
    stamps = [p.stat().st_mtime_ns for p in cached]
    medft_data(capsys, "dataset=vqa_rad", f"dataset.root={root}", f"paths.cache_dir={tmp_path / 'c'}")
    assert [p.stat().st_mtime_ns for p in cached] == stamps


def test_dedupe_removes_duplicates_and_overlaps_and_counts_them(tmp_path, capsys):
    root = make_vqa_rad_hub(tmp_path / "vqa-rad")
    _, report, _ = medft_data(capsys, "dataset=vqa_rad", f"dataset.root={root}", f"paths.cache_dir={tmp_path / 'c'}",
                              "dataset.dedupe=true")
    assert report["splits"]["train"]["n"] == 7 and report["splits"]["test"]["n"] == 4
    assert report["dropped"] == {"train": {"empty": 1, "duplicate": 1, "train_test_overlap": 1}}
    assert report["found"] == {}


def test_answer_types_from_joins_the_original_annotations(tmp_path, capsys):
    root = make_vqa_rad_hub(tmp_path / "vqa-rad")
    ann = make_vqa_rad_annotations(tmp_path / "VQA_RAD Dataset Public.json")
    _, report, _ = medft_data(capsys, "dataset=vqa_rad", f"dataset.root={root}", f"paths.cache_dir={tmp_path / 'c'}",
                              f"dataset.answer_types_from={ann}")
    assert report["splits"]["train"]["closed"] == 4 and report["splits"]["train"]["open"] == 5  # "heart enlarged?" is OPEN
    assert report["answer_types"].startswith(f"joined from {ann}") and "13 of 13 matched" in report["answer_types"]
    status, _, err = medft_data(capsys, "dataset=vqa_rad", f"dataset.root={root}", f"dataset.answer_types_from={tmp_path / 'no'}")
    assert status == 2 and "dataset.answer_types_from=" in err and "does not exist" in err


# --- SLAKE from the hub ----------------------------------------------------------------------------


def test_slake_hub_english_copy(tmp_path):
    root = make_slake_hub(tmp_path / "slake")
    assert (root / "data" / "train-00001-of-00002.parquet").is_file()
    splits = sources.slake(str(root), cache_dir=str(tmp_path / "c"))
    check(splits, VQA_FIELDS)
    assert {k: len(v) for k, v in splits.items()} == {"train": 10, "val": 4, "test": 4}
    assert splits.answer_types == YES_NO


def test_slake_hub_copy_with_every_column(tmp_path):
    root = make_slake_hub(tmp_path / "slake", full=True)
    en = sources.slake(str(root), cache_dir=str(tmp_path / "c"))
    check(en, VQA_FIELDS)
    assert {k: len(v) for k, v in en.items()} == {"train": 10, "val": 4, "test": 4}
    assert en.answer_types.startswith("from the annotations")
    assert Counter(r["organ"] for r in en["train"]) == {"LUNG": 10}
    assert {r["image_name"] for r in en["train"]} >= {"xmlab0/source.jpg"}
    both = sources.slake(str(root), lang="all", cache_dir=str(tmp_path / "c"))
    assert len(both["train"]) == 15


# --- LLaVA-Med's downstream files ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["vqa_rad", "slake", "path_vqa"])
def test_llava_med_files_with_the_misspelt_key(tmp_path, name):
    root = make_llava(tmp_path / name)
    assert "conversatons" in (root / "test.json").read_text()
    splits = getattr(sources, name)(str(root), cache_dir=str(tmp_path / "c"))
    check(splits, VQA_FIELDS)
    assert {k: len(v) for k, v in splits.items()} == {"train": 7, "val": 1, "test": 4}
    rec = next(r for r in splits["test"] if r["id"] == "test_1")
    assert (rec["question"], rec["answer"], rec["answer_type"]) == LLAVA_QA[1]
    assert "<image>" not in rec["question"]


def test_llava_med_drops_are_counted(tmp_path, capsys):
    root = make_llava(tmp_path / "vqa_rad")
    rows = json.loads((root / "train.json").read_text())
    rows[0]["conversations"][1]["value"] = ""
    rows[1]["image"] = ""
    (root / "train.json").write_text(json.dumps(rows))
    _, report, _ = medft_data(capsys, "dataset=vqa_rad", f"dataset.root={root}")
    assert report["dropped"] == {"train": {"empty": 1, "no_image_name": 1}}
    assert report["dropped_ids"]["train"] == {"empty": ["train_0"], "no_image_name": ["train_1"]}


# --- save_to_disk, the hub cache -------------------------------------------------------------------


def test_save_to_disk_folder_as_root(tmp_path):
    import datasets

    hub = make_vqa_rad_hub(tmp_path / "hub")
    dsd = datasets.load_dataset("parquet", data_files={"train": str(next((hub / "data").glob("train-*"))),
                                                       "test": str(next((hub / "data").glob("test-*")))},
                                cache_dir=str(tmp_path / "hf"))
    dsd.save_to_disk(str(tmp_path / "saved"))
    splits = sources.vqa_rad(str(tmp_path / "saved"), cache_dir=str(tmp_path / "c"))
    check(splits, VQA_FIELDS)
    assert len(splits["train"]) + len(splits["val"]) == 9 and len(splits["test"]) == 4


def test_hub_id_from_the_local_cache_offline(tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    make_hub_cache(tmp_path / "hub", "flaviagiammarino/vqa-rad", make_vqa_rad_hub)
    status, report, _ = medft_data(capsys, "dataset=vqa_rad", "dataset.hub_id=flaviagiammarino/vqa-rad",
                                   f"paths.cache_dir={tmp_path / 'c'}")
    assert status == 0 and report["splits"]["test"]["n"] == 4 and "snapshots" in report["root"]
    status, _, err = medft_data(capsys, "dataset=vqa_rad", "dataset.hub_id=someone/absent")
    assert status == 2
    assert f"hub dataset someone/absent is not in the local cache {tmp_path / 'hub'}" in err
    assert "`hf download someone/absent --repo-type dataset`" in err and len(err.strip().splitlines()) == 1


# --- report sets as released ---------------------------------------------------------------------


def test_mimic_cxr_jpg_official_layout(tmp_path, capsys):
    root = make_mimic_official(tmp_path / "mimic-cxr-jpg")
    splits = sources.r2gen(str(root), "mimic_cxr")
    check(splits, REPORT_FIELDS)
    assert {k: len(v) for k, v in splits.items()} == {"train": 5, "val": 2, "test": 3}
    assert splits.drops.ids == {"train": {"no_section": ["s50414272"]}}
    rec = splits["train"][0]
    assert rec["report"] == "The heart is normal in size. The mediastinum is unremarkable. The lungs are clear."
    assert "-00000001-" in Path(rec["views"][0]).name  # the PA view first (the CSV lists the lateral first)
    imp = sources.r2gen(str(root), "mimic_cxr", report_section="impression")
    assert len(imp["train"]) == 6 and imp["train"][0]["report"] == "No acute process 0."
    both = sources.r2gen(str(root), "mimic_cxr", report_section="both", views="all")
    assert both["train"][0]["report"].endswith("clear. No acute process 0.") and len(both["train"][0]["views"]) == 2
    status, report, _ = medft_data(capsys, "dataset=mimic_cxr", f"dataset.root={root}")
    assert status == 0 and report["dropped"] == {"train": {"no_section": 1}}


def test_iu_xray_csvs(tmp_path):
    root = make_iu_csv(tmp_path / "iu")
    splits = sources.r2gen(str(root), "iu_xray", views="all")
    check(splits, REPORT_FIELDS)
    assert sum(len(v) for v in splits.values()) == 11 and splits.drops.total("no_section") == 1
    rec = splits["train"][0]
    assert [Path(p).name.split("-")[-1] for p in rec["views"]] == ["1001.dcm.png", "1002.dcm.png"] or \
        Path(rec["views"][0]).name.endswith(f"{1001 + int(rec['id'])}.dcm.png")
    assert len(sources.r2gen(str(root), "iu_xray", report_section="impression")["train"]) + 2 >= 7


def test_unknown_report_section_is_one_line(tmp_path):
    from medft.util.errors import ConfigError

    root = make_iu_csv(tmp_path / "iu")
    with pytest.raises(ConfigError, match="dataset.report_section='summary' is not known"):
        sources.r2gen(str(root), "iu_xray", report_section="summary")


# --- one short run per layout, and metrics.json --------------------------------------------------

LAYOUTS = {
    "vqa_rad_hub": ("vqa_rad", make_vqa_rad_hub),
    "slake_hub_full": ("slake", lambda p: make_slake_hub(p, full=True)),
    "llava_path_vqa": ("path_vqa", make_llava),
    "mimic_official": ("mimic_cxr", make_mimic_official),
    "iu_csv": ("iu_xray", make_iu_csv),
}


@pytest.mark.slow
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_each_layout_trains_one_short_run(tmp_path, cli, layout):
    name, make = LAYOUTS[layout]
    root = make(tmp_path / layout)
    model = ["model=blip_tiny"] if name in ("vqa_rad", "slake", "path_vqa") else []
    status, out, err, run = cli("+tune=layernorm", f"dataset={name}", f"dataset.root={root}", *model, "debug=fast",
                                "data.batch_size=4", "eval.generate.max_new_tokens=2", "callbacks.progress_bar.refresh_rate=0")
    assert status == 0, err[-2000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert "test/loss" in metrics or any(k.startswith("test/") for k in metrics)
    if layout == "vqa_rad_hub":
        assert metrics["data/dropped/empty"] == 1 and metrics["data/found/duplicate"] == 1
        assert metrics["data/answer_types"] == YES_NO
        assert "dropped 1 record(s): empty question, answer or report (train 1; e.g. train-6)" in out
    if layout == "mimic_official":
        assert metrics["data/dropped/no_section"] == 1


# --- the real VQA-RAD, converted to the hub's layout ------------------------------------------------

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "vqa_rad" / "osf"


def osf_to_hub(osf: Path, out: Path) -> Path:
    """What the hub's makers did: the OSF release's train / test (phrase_type) as Parquet with the image bytes."""
    from medft.data.vqa_rad import OSF_IMAGES, OSF_JSON, TEST_PHRASE_TYPES
    from medft.testing.fixtures import _hub_parquet

    raw = json.loads((osf / OSF_JSON).read_text())
    blobs: dict[str, bytes] = {}
    for split, test in (("train", False), ("test", True)):
        rows = [{"image": {"bytes": blobs.setdefault(r["image_name"], (osf / OSF_IMAGES / r["image_name"]).read_bytes()),
                           "path": None},
                 "question": str(r["question"]), "answer": str(r["answer"])}
                for r in raw if (str(r.get("phrase_type", "")).lower() in TEST_PHRASE_TYPES) == test]
        _hub_parquet(out / "data" / f"{split}-00000-of-00001-0a1b2c3d.parquet", rows)
    return out


@pytest.mark.skipif(not REAL.is_dir(), reason="the real VQA-RAD is not in ../shared/data")
def test_real_vqa_rad_in_the_hub_layout(tmp_path, capsys):
    root = osf_to_hub(REAL, tmp_path / "vqa-rad")
    osf = sources.vqa_rad(str(REAL), val_fraction=0.0)
    hub = sources.find_duplicates(sources.vqa_rad(str(root), val_fraction=0.0, cache_dir=str(tmp_path / "c")), remove=False)
    assert len(hub["test"]) == len(osf["test"]) == 451
    key = lambda r: (r["question"].lower(), r["answer"].lower())  # noqa: E731
    assert sorted(map(key, hub["test"])) == sorted(map(key, osf["test"]))
    assert len(hub["train"]) == len(osf["train"])  # train as read: nothing removed unless dataset.dedupe=true
    assert hub.kept["duplicate"]["train"] and hub.answer_types == YES_NO
    deduped = sources.find_duplicates(hub, remove=True)
    assert len(deduped["train"]) < len(hub["train"]) and deduped.drops.total("duplicate") == len(hub.kept["duplicate"]["train"])


@pytest.mark.slow
@pytest.mark.skipif(not REAL.is_dir(), reason="the real VQA-RAD is not in ../shared/data")
def test_a_run_trains_from_the_real_vqa_rad_in_the_hub_layout(tmp_path, cli):
    root = osf_to_hub(REAL, tmp_path / "vqa-rad")
    status, out, err, run = cli("+tune=layernorm", "dataset=vqa_rad", f"dataset.root={root}", "debug=fast",
                                "data.batch_size=8", "eval.generate.max_new_tokens=2",
                                "callbacks.progress_bar.refresh_rate=0")
    assert status == 0, err[-2000:]
    assert "dataset vqa_rad: train 1617, val 180, test 451" in out  # 1,797 as published, val carved
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["data/found/duplicate"] == 3 and metrics["data/found/train_test_overlap"] == 1
    assert metrics["data/answer_types"] == YES_NO and 0.0 <= metrics["test/acc"] <= 1.0
