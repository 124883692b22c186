"""Answer normalisation and VQA accuracy."""

import json
import math
from pathlib import Path

import pytest

from medft.metrics.accuracy import vqa_accuracy
from medft.metrics.vqa import is_correct, normalize_answer

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MEVF_TEST = SHARED_DATA / "vqa_rad" / "mevf" / "testset.json"


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Yes", "yes"),
        ("  NO ", "no"),
        ("X-ray", "xray"),
        ("x ray", "xray"),
        ("Plain film x-ray", "plain film xray"),
        ("two", "2"),
        ("Twenty", "20"),
        ("the left", "left"),
        ("A bullous lesion", "bullous lesion"),
        (5, "5"),
        (None, ""),
        ("3.5 cm.", "3.5 cm"),
        ("2.5cm x 1.7cm", "2.5cm x 1.7cm"),
        ("coronal plane?", "coronal plane"),
        ("Right-sided", "right sided"),
        ("On the patient's left", "on patients left"),
        ("1,000", "1000"),
        ("Skull \tcartilage  and medulla", "skull cartilage and medulla"),
    ],
)
def test_known_cases(raw, expected):
    assert normalize_answer(raw) == expected


def test_is_correct_ignores_case_punctuation_articles_and_number_words():
    assert is_correct("Two.", "2")
    assert is_correct("the Left lung", "left lung")
    assert is_correct("X-Ray", "xray")
    assert not is_correct("left", "right")
    assert not is_correct(None, "yes")
    assert not is_correct("3.5", "35")


@pytest.mark.skipif(not MEVF_TEST.is_file(), reason="shared VQA-RAD data not present")
def test_real_vqa_rad_answers_normalize_stably():
    answers = [r["answer"] for r in json.loads(MEVF_TEST.read_text(encoding="utf-8"))]
    assert len(answers) == 451
    for answer in answers:
        once = normalize_answer(answer)
        assert once, f"{answer!r} normalised to an empty string"
        assert normalize_answer(once) == once, f"not idempotent on {answer!r}"
        assert once == once.strip() and "  " not in once and once == once.lower()
    normalized = {str(a): normalize_answer(a) for a in answers}
    assert normalized["Yes"] == normalized["yes"] == "yes"
    assert normalized["x-ray"] == normalized["Xray"] == "xray"
    assert normalized["One"] == normalized["one"] == "1"


def test_vqa_accuracy_splits_closed_and_open():
    records = [
        {"prediction": "Yes", "answer": "yes", "answer_type": "CLOSED"},
        {"prediction": "no", "answer": "yes", "answer_type": "CLOSED"},
        {"prediction": "no", "answer": "No", "answer_type": "CLOSED "},  # trailing space
        {"prediction": "yes", "answer": "no", "answer_type": "closed"},
        {"prediction": "the chest", "answer": "Chest", "answer_type": "OPEN"},
        {"prediction": "head", "answer": "abdomen", "answer_type": "OPEN"},
        {"prediction": "two", "answer": 2, "answer_type": "OPEN"},
    ]
    acc = vqa_accuracy(records)
    assert (acc["n"], acc["n_closed"], acc["n_open"]) == (7, 4, 3)
    assert acc["acc"] == pytest.approx(4 / 7)
    assert acc["acc_closed"] == pytest.approx(2 / 4)
    assert acc["acc_open"] == pytest.approx(2 / 3)


def test_vqa_accuracy_of_an_empty_split_is_none():
    acc = vqa_accuracy([{"prediction": "yes", "answer": "yes", "answer_type": "CLOSED"}])
    assert acc == {"acc": 1.0, "acc_closed": 1.0, "acc_open": None, "n": 1, "n_closed": 1, "n_open": 0}
    empty = vqa_accuracy([])
    assert empty["acc"] is None and empty["n"] == 0
    assert not any(isinstance(v, float) and math.isnan(v) for v in empty.values())


def test_training_metric_and_vqa_accuracy_follow_one_rule():
    """The evaluator a run logs through and vqa_accuracy (rescoring, protocols) count the same way:
    answer types in any case / with spaces are CLOSED or OPEN, another type counts overall only."""
    from medft.metrics.evaluators import VQAEvaluator

    metas = [
        {"id": "1", "answer": "yes", "answer_type": "closed"},
        {"id": "2", "answer": "no", "answer_type": "CLOSED "},
        {"id": "3", "answer": "left lung", "answer_type": "OPEN"},
        {"id": "4", "answer": "2", "answer_type": ""},
    ]
    predictions = ["Yes", "yes", "the left lung", "two"]
    evaluator = VQAEvaluator()
    rows = evaluator.update(predictions, metas)
    logged = {k: float(v) for k, v in evaluator.compute().items()}
    acc = vqa_accuracy(rows)
    assert (acc["n"], acc["n_closed"], acc["n_open"]) == (4, 2, 1)
    assert logged == pytest.approx({k: acc[k] for k in ("acc", "acc_closed", "acc_open")})
    assert (acc["acc"], acc["acc_closed"], acc["acc_open"]) == (0.75, 0.5, 1.0)
