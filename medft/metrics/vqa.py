"""Exact-match accuracy for medical VQA, overall and split into CLOSED / OPEN questions.

Answers are compared after :func:`normalize_answer`, the usual Med-VQA normalisation
(lower case, no punctuation or articles, number words as digits), so "Two." matches "2" and
"The left lung" matches "left lung".
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

_NUMBER_WORDS = {
    word: str(i)
    for i, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen "
        "fourteen fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
}
_ARTICLES = {"a", "an", "the"}

_APOSTROPHES = re.compile(r"['\u2019`]")                 # patient's -> patients
_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")  # 1,000 -> 1000
_STRAY_PERIOD = re.compile(r"(?<!\d)\.|\.(?!\d)")         # keep "3.5", drop other periods
_OTHER_PUNCT = re.compile(r"[^\w\s.]|_")                 # anything not letter/digit/space/period
_XRAY = re.compile(r"\bx ray(s?)\b")                     # "x ray" / "x-ray" -> "xray"


def normalize_answer(answer: Any) -> str:
    """Normalise an answer for exact-match comparison (idempotent).

    ``str()`` of the input (``None`` becomes ""), lower case, punctuation removed (a period
    between two digits is kept, so "3.5" stays "3.5"), "x-ray" / "x ray" -> "xray", number
    words zero..twenty -> digits, articles a/an/the dropped, whitespace collapsed.
    """
    text = "" if answer is None else str(answer).lower()
    text = _APOSTROPHES.sub("", text)
    text = _THOUSANDS_COMMA.sub("", text)
    text = _STRAY_PERIOD.sub(" ", text)
    text = _OTHER_PUNCT.sub(" ", text)  # hyphens, slashes, commas, ... become spaces
    tokens = [_NUMBER_WORDS.get(tok, tok) for tok in text.split() if tok not in _ARTICLES]
    return _XRAY.sub(r"xray\1", " ".join(tokens))


def is_correct(prediction: Any, answer: Any) -> bool:
    """True when the prediction equals the answer after :func:`normalize_answer`."""
    return normalize_answer(prediction) == normalize_answer(answer)


def vqa_accuracy(records: Iterable[Mapping[str, Any]]) -> dict[str, float | int | None]:
    """Exact-match accuracy of ``records`` (dicts with prediction, answer, answer_type).

    Returns ``{"acc", "acc_closed", "acc_open", "n", "n_closed", "n_open"}``. An accuracy over
    zero records is ``None`` (not 0, not NaN) so that "no OPEN questions" is not mistaken for
    "all OPEN questions wrong". Records whose answer_type is neither CLOSED nor OPEN count
    only towards the overall accuracy.
    """
    n = {"all": 0, "CLOSED": 0, "OPEN": 0}
    hits = {"all": 0, "CLOSED": 0, "OPEN": 0}
    for rec in records:
        kind = str(rec.get("answer_type") or "").strip().upper()
        correct = is_correct(rec.get("prediction"), rec.get("answer"))
        for key in ("all", kind) if kind in ("CLOSED", "OPEN") else ("all",):
            n[key] += 1
            hits[key] += int(correct)
    return {
        "acc": _ratio(hits["all"], n["all"]),
        "acc_closed": _ratio(hits["CLOSED"], n["CLOSED"]),
        "acc_open": _ratio(hits["OPEN"], n["OPEN"]),
        "n": n["all"],
        "n_closed": n["CLOSED"],
        "n_open": n["OPEN"],
    }


def _ratio(hits: int, total: int) -> float | None:
    return None if total == 0 else hits / total


__all__ = ["normalize_answer", "is_correct", "vqa_accuracy"]
