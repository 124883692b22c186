"""Exact match for medical VQA: when a generated answer counts as right.

Answers are compared after :func:`normalize_answer`, the usual Med-VQA normalisation
(lower case, no punctuation or articles, number words as digits), so "Two." matches "2" and
"The left lung" matches "left lung". The accuracies (overall, CLOSED, OPEN) are
:mod:`medft.metrics.accuracy`'s.
"""

from __future__ import annotations

import re
from typing import Any

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


__all__ = ["normalize_answer", "is_correct"]
