"""Choices that are data: a dataset layout and a scoring protocol are each one entry of a table
(medft.data.layouts.LAYOUTS, medft.metrics.protocols.PROTOCOLS); one added in a test is read,
resolved and printed like medft's own."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from medft.data import layouts, sources
from medft.data.answer_types import YES_NO
from medft.data.common import finish, vqa_record
from medft.data.drops import Drops, Loaded, loaded
from medft.metrics import protocols
from medft.metrics.evaluators import scores_line
from medft.metrics.protocols import Protocol, protocol_line, protocol_metrics, resolve_protocol
from medft.metrics.stats import vqa_scores
from medft.testing.fixtures import make_llava, make_vqa_rad_hub, write_image
from medft.util.errors import ConfigError, DataError

# --- layouts -------------------------------------------------------------------------------------


def make_pairs(root: Path, n_train: int = 8, n_test: int = 3) -> Path:
    """A made-up layout: pairs.csv (split, image, question, answer) + pictures/."""
    root.mkdir(parents=True)
    with open(root / "pairs.csv", "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["split", "image", "question", "answer"])
        for i in range(n_train + n_test):
            name = f"{i}.png"
            write_image(root / "pictures" / name, i)
            out.writerow(["train" if i < n_train else "test", name, f"is there a lesion {i}", "yes" if i % 2 else "no"])
    return root


def read_pairs(root: Path, ask: layouts.Ask) -> Loaded:
    drops = Drops()
    splits: dict[str, list] = {"train": [], "test": []}
    with open(root / "pairs.csv", newline="") as f:
        for i, row in enumerate(csv.DictReader(f)):
            if i == 10:
                drops.add("test", "empty", str(i))  # one record left out, counted as a loader must
                continue
            splits[row["split"]].append(vqa_record(str(i), root / "pictures" / row["image"], row["image"], row["question"],
                                                   row["answer"], None))
    return loaded(finish(splits, ask.val_fraction, ask.split_seed, f"{ask.title} ({root})"), drops, YES_NO, "pairs.csv")


PAIRS = layouts.Layout("pairs", "pairs.csv + pictures/ (a test's own layout)", lambda root: (root / "pairs.csv").is_file(),
                       read_pairs)


def test_a_layout_added_to_the_table_loads_through_the_dataset_function(tmp_path, monkeypatch):
    monkeypatch.setitem(layouts.LAYOUTS, "pairs", PAIRS)
    root = make_pairs(tmp_path / "pairs")
    splits = sources.vqa_rad(str(root), val_fraction=0.25, train_fraction=0.5, layouts=("vqa_rad", "pairs"))
    assert splits.layout == "pairs.csv" and splits.answer_types == YES_NO
    assert {k: len(v) for k, v in splits.items()} == {"train": 3, "val": 2, "test": 2}  # 6 train after val, halved
    assert splits.drops.ids == {"test": {"empty": ["10"]}}
    assert splits["test"][0]["image"] == str(root / "pictures" / "8.png")
    # the same from a dataset config, as `medft data` and training call it
    cfg = OmegaConf.create({"name": "mine", "load": {"_target_": "medft.data.sources.vqa_rad", "root": str(root),
                                                     "layouts": ["pairs"]}})
    again = sources.load_splits(cfg)
    assert again.layout == "pairs.csv" and len(again["train"]) + len(again["val"]) == 8
    assert sources.vqa_rad(str(root), layouts="pairs").layout == "pairs.csv"  # +dataset.load.layouts=pairs: one name


def test_none_detected_is_one_line_naming_the_root_and_every_layout_tried(tmp_path, monkeypatch):
    monkeypatch.setitem(layouts.LAYOUTS, "pairs", PAIRS)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as err:
        sources.path_vqa(str(tmp_path / "empty"), layouts=("pairs", "llava_med"))
    message = str(err.value)
    assert message == (f"no PathVQA dataset in {tmp_path / 'empty'}: expected pairs.csv + pictures/ (a test's own layout), "
                       "or LLaVA-Med's train.json + test.json + images/; point dataset.root at the folder holding one of them")
    with pytest.raises(ConfigError, match=r"dataset.load.layouts: \['nope'\] not known; use some of \['vqa_rad'"):
        sources.vqa_rad(str(tmp_path / "empty"), layouts=("nope",))


def test_the_first_layout_detected_in_the_datasets_order_is_read(tmp_path):
    root = make_llava(tmp_path / "both")  # LLaVA-Med's files ...
    make_vqa_rad_hub(root)  # ... and the hub's Parquet copy in one folder
    cache = str(tmp_path / "c")
    default = sources.vqa_rad(str(root), cache_dir=cache)  # vqa_rad, llava_med, tables
    assert default.layout == "LLaVA-Med train.json/test.json" and len(default["test"]) == 4
    tables_first = sources.vqa_rad(str(root), cache_dir=cache, layouts=("tables", "llava_med"))
    assert tables_first.layout.startswith("tables") and tables_first.answer_types == YES_NO
    assert {r["id"] for r in tables_first["test"]} != {r["id"] for r in default["test"]}


# --- scoring protocols ---------------------------------------------------------------------------


def _first_word(rows, candidates):
    """Right when the prediction's first word is the answer's (a made-up protocol)."""
    hits = [float(str(r.get("prediction") or "").split()[:1] == str(r.get("answer")).split()[:1]) for r in rows]
    return {"first_word": hits}


FIRST_WORD = Protocol(
    "first_word", "the first word only",
    lambda rows, candidates: {"first_word": sum(_first_word(rows, candidates)["first_word"]) / max(len(rows), 1)},
    (("first_word", "first word"),), _first_word,
)
ROWS = [{"id": "a", "answer": "left lung", "prediction": "left side", "answer_type": "OPEN"},
        {"id": "b", "answer": "no", "prediction": "yes", "answer_type": "CLOSED"}]


def test_a_protocol_added_to_the_table_is_resolved_scored_and_printed(monkeypatch):
    monkeypatch.setitem(protocols.PROTOCOLS, "first_word", FIRST_WORD)
    assert resolve_protocol("first_word", {"eval_protocol": "llava_med"}) == "first_word"  # eval.protocol=first_word
    assert resolve_protocol(None, {"eval_protocol": "first_word"}) == "first_word"  # a model config's default
    with pytest.raises(ConfigError, match="first_word \\(the first word only\\)"):
        resolve_protocol("vqa", {})
    metrics = protocol_metrics(ROWS, "first_word", None)
    assert metrics == {"test/acc": 0.0, "test/exact_acc_closed": 0.0, "test/exact_acc_open": 0.0,
                       "test/first_word": 0.5, "eval/protocol": "first_word"}
    assert protocol_line(metrics) == "test first_word: first word 0.500"
    assert scores_line("vqa", metrics).splitlines() == [
        "test accuracy: closed 0.000 | open 0.000 | overall 0.000", "test first_word: first word 0.500"]
    scores = vqa_scores(ROWS, "first_word")  # the intervals resample its per-question values
    assert scores.metrics == ["test/acc", "test/exact_acc_closed", "test/exact_acc_open", "test/first_word"]
    assert scores.point("test/first_word") == 0.5


def test_rescore_takes_a_protocol_of_the_table(monkeypatch, tmp_path, capsys):
    from medft.commands.rescore import rescore_main

    monkeypatch.setitem(protocols.PROTOCOLS, "first_word", FIRST_WORD)
    run = tmp_path / "run"
    run.mkdir()
    (run / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    metrics = rescore_main([f"rescore={run}", "eval.protocol=first_word", f"out={tmp_path / 'out'}"])
    assert metrics["test/first_word"] == 0.5 and metrics["eval/protocol"] == "first_word"
    assert "test first_word: first word 0.500" in capsys.readouterr().out
    with pytest.raises(ConfigError, match=r"eval.protocol=exact\|llava_med\|first_word and out=DIR"):
        rescore_main([f"rescore={run}", "protocol=first_word"])


def test_every_llava_model_config_states_its_protocol_and_every_stated_one_is_in_the_table():
    import yaml

    from medft.config.search import CONFIG_DIR

    stated = {}
    for path in sorted((CONFIG_DIR / "model").glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text())
        if "eval_protocol" in cfg:
            stated[path.stem] = cfg["eval_protocol"]
        if "arch/llava@arch" in (cfg.get("defaults") or []):  # LLaVA-Med's family scores the LLaVA-Med way
            assert cfg.get("eval_protocol") == "llava_med", path.name
    assert stated["llava_med"] == stated["llava_tiny"] == "llava_med" and stated["medgemma_4b"] == "exact"
    assert set(stated.values()) <= set(protocols.PROTOCOLS), stated
