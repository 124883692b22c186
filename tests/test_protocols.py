"""eval.protocol=llava_med: LLaVA-Med's run_eval.py rules (v1 code, commit 35c8c4af), quirks included,
pinned from the rules as that code writes them; and the protocol end to end (train, eval rescore=)."""

from __future__ import annotations

import json

import pytest
from medft_testing import TINY, cache, cli  # noqa: F401 - fixtures

from medft.metrics.llava_med import CandidateMatcher, closed_hit, f1_precision_recall, llava_med_scores, normalize_word
from medft.metrics.protocols import dataset_candidates, protocol_metrics, resolve_protocol
from medft.util.errors import ConfigError


def closed(prediction: str, answer: str) -> bool:
    """The script's path for a CLOSED row: lower(), normalize_word, then the yes/no rule."""
    return closed_hit(normalize_word(prediction.lower()), normalize_word(answer.lower()))


@pytest.mark.parametrize(("text", "expected"), [
    ("The left lung.", "left lung"),        # articles dropped, a period not before a digit deleted
    ("3.5 cm", "3.5 cm"),                   # a period before a digit stays
    ("none", "0"), ("Two", "2"),            # number words (and "none") become digits
    ("x-ray", "x ray"),                     # "-" with no space beside it becomes a space ...
    ("x - ray", "x ray"),                   # ... and is deleted when one is beside it
    ("1,000 (cells)", "1000 cells"),        # a digit-comma-digit anywhere: every punctuation mark is deleted
    ("right/left", "right left"),
    ("dont", "don't"),                      # contractions get their apostrophe
    ("patient's: 5%", "patient's: 5%"),     # apostrophes, colons and % are not in its list
    ("a." * 40, "a" * 33 + ".a" * 7 + "."),  # at most 32 periods per pass (re.UNICODE passed as count)
    ("", ""),
])
def test_normalize_word(text, expected):
    assert normalize_word(text) == expected


def test_closed_rule_is_substring_containment():
    assert closed("yes", "yes") and closed("No.", "no")
    assert not closed("yes", "no") and not closed("no", "yes")
    # "no" inside another word counts as saying no, and as containing the ground truth "no"
    assert closed("normal", "no") and closed("nodule seen", "no")
    assert not closed("normal", "yes")  # holds "no", but not "yes"
    assert closed("yes no", "yes") and closed("yes no", "no")  # both words: right whatever the answer
    assert not closed("", "no") and not closed("maybe", "yes")
    assert closed("yes, there is", "yes")


def test_open_recall_counts_the_predictions_repeats():
    f1, precision, recall = f1_precision_recall("left left left", "left lung")
    assert recall == pytest.approx(3 / 4)  # tp = 3 (the prediction's count of "left"), fn = 1 ("lung")
    assert precision == 1.0 and f1 == pytest.approx(2 * 0.75 / 1.75)
    assert f1_precision_recall("left", "left lung") == pytest.approx((2 / 3, 1.0, 0.5))
    assert f1_precision_recall("the left lung", "Left lung") == (1.0, 1.0, 1.0)
    assert f1_precision_recall("", "left lung") == (0.0, 0.0, 0.0)  # empty prediction
    assert f1_precision_recall("right", "left lung") == (0.0, 0.0, 0.0)


def test_open_candidate_accuracy_takes_the_first_best_candidate():
    matcher = CandidateMatcher(["yes", "left", "left lung", "right lung", "2"])
    assert matcher.answer("the left lung is affected") == "left"  # 1/1 = first max, before "left lung" (2/2)
    assert matcher.answer("right lung") == "right lung"           # 2/2 beats "left lung" (1/2)
    assert matcher.answer("two") == "2"                           # both sides normalised
    assert matcher.answer("") == "yes"                            # no word shared: the first candidate
    assert matcher.answer("kidney") == "yes"
    assert matcher.hit("", "yes") and not matcher.hit("", "left")


def test_scores_average_per_type_and_ignore_other_types():
    rows = [
        {"answer": "no", "prediction": "normal", "answer_type": "CLOSED"},        # quirk: a hit
        {"answer": "yes", "prediction": "no", "answer_type": "CLOSED"},
        {"answer": "left lung", "prediction": "left left left", "answer_type": "OPEN"},
        {"answer": "liver", "prediction": "", "answer_type": "OPEN"},
        {"answer": "x", "prediction": "x", "answer_type": "OTHER"},               # not scored
    ]
    scores = llava_med_scores(rows, ["liver", "left lung", "yes", "no"])
    assert scores["acc_closed"] == 0.5
    assert scores["recall_open"] == pytest.approx((0.75 + 0.0) / 2)
    assert scores["f1_open"] == pytest.approx((2 * 0.75 / 1.75) / 2)
    # "left left left" -> "left lung" (1/2 of its words; "liver" 0) right; "" -> the first candidate "liver": right
    assert scores["open_candidate_acc"] == 1.0
    assert llava_med_scores(rows[:2], ["yes"]).keys() == {"acc_closed"}  # no OPEN questions: no OPEN metrics
    assert llava_med_scores(rows[2:4], ["liver"])["acc_closed"] == 0.0  # no CLOSED questions: 0.0, as the script


def test_protocol_metrics_keep_exact_overall_accuracy():
    rows = [{"answer": "no", "prediction": "normal", "answer_type": "CLOSED"},
            {"answer": "left lung", "prediction": "left lung", "answer_type": "OPEN"}]
    exact = protocol_metrics(rows, "exact", None)
    assert exact == {"test/acc": 0.5, "test/acc_closed": 0.0, "test/acc_open": 1.0, "eval/protocol": "exact"}
    llava = protocol_metrics(rows, "llava_med", ["left lung"])
    assert llava["test/acc"] == 0.5 and llava["eval/protocol"] == "llava_med"
    assert llava["test/acc_closed"] == 1.0 and llava["test/exact_acc_closed"] == 0.0
    assert llava["test/exact_acc_open"] == 1.0 and "test/acc_open" not in llava
    assert llava["test/recall_open"] == llava["test/f1_open"] == llava["test/open_candidate_acc"] == 1.0


def test_protocol_defaults_and_errors():
    assert resolve_protocol(None, {"eval_protocol": "llava_med"}) == "llava_med"
    # runs from before the key: the model config of that name says it; the builder's name decides nothing
    assert resolve_protocol(None, {"_target_": "medft.models.llava.build_llava", "name": "llava_tiny"}) == "llava_med"
    assert resolve_protocol(None, {"_target_": "medft.models.llava.build_llava", "name": "someone_elses"}) == "exact"
    assert resolve_protocol(None, {"_target_": "medft.models.blip.build_blip_vqa"}) == "exact"
    assert resolve_protocol("exact", {"eval_protocol": "llava_med"}) == "exact"
    with pytest.raises(ConfigError, match="eval.protocol='vqa'.*exact.*llava_med"):
        resolve_protocol("vqa", {})
    splits = {"test": [{"answer": "c"}, {"answer": "a"}], "train": [{"answer": "a"}, {"answer": "b"}], "val": [{"answer": "b"}]}
    assert dataset_candidates(splits) == ["a", "b", "c"]  # train, val, test order, first appearance


def test_llava_run_records_both_protocols_and_rescore_reproduces_them(cli, tmp_path, capsys):
    status, out, err, run = cli("model=llava_tiny", "+tune=layernorm", "trainer.max_epochs=1", *TINY)
    assert status == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["eval/protocol"] == "llava_med"
    for key in ("test/acc", "test/acc_closed", "test/recall_open", "test/f1_open", "test/open_candidate_acc",
                "test/exact_acc_closed", "test/exact_acc_open"):
        assert key in metrics, key
    assert "test llava_med: closed" in out
    candidates = json.loads((run / "candidates.json").read_text())["answers"]
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert {r["answer"] for r in rows} <= set(candidates) and len(candidates) > len({r["answer"] for r in rows})
    expected = protocol_metrics(rows, "llava_med", candidates)
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value) if isinstance(value, float) else metrics[key] == value

    from medft.cli import main

    for protocol in ("llava_med", "exact"):
        main(["eval", f"rescore={run}", f"eval.protocol={protocol}", f"out={tmp_path / protocol}"])
        rescored = json.loads((tmp_path / protocol / "metrics.json").read_text())
        assert rescored["eval/protocol"] == protocol and rescored["eval/candidates"] == "candidates.json"
        assert rescored["test/acc"] == pytest.approx(metrics["test/acc"])
    assert "test llava_med: closed" in capsys.readouterr().out
    llava = json.loads((tmp_path / "llava_med" / "metrics.json").read_text())
    assert {k: v for k, v in llava.items() if k.startswith("test/")} == pytest.approx(
        {k: v for k, v in metrics.items() if k.startswith("test/")})
    exact = json.loads((tmp_path / "exact" / "metrics.json").read_text())
    assert exact["test/acc_closed"] == pytest.approx(metrics["test/exact_acc_closed"])


def test_blip_run_defaults_to_exact_and_bad_protocol_is_one_line(cli):
    status, out, err, run = cli("+tune=layernorm", "trainer.max_epochs=1", *TINY)
    assert status == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["eval/protocol"] == "exact" and "test/recall_open" not in metrics
    status, out, err, _ = cli("+tune=layernorm", "eval.protocol=vqa", *TINY, run_dir=run.parent / "bad_protocol")
    assert status == 2 and "eval.protocol='vqa' is not known" in err and len(err.strip().splitlines()) == 1
