"""LLaVA-Med's published VQA scoring (``eval.protocol=llava_med``), reimplemented from its rules.

LLaVA-Med (and the papers that fine-tune it) score with ``llava/eval/run_eval.py`` and
``llava/eval/eval_metrics/{evaluate_metrics,glossary,utils}.py`` of microsoft/LLaVA-Med (v1 code,
commit 35c8c4af), not with exact match. The rules, as that code applies them, quirks included:

* **normalisation** (its ``normalize_word``, applied to the lower-cased answer and prediction):
  each of ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !`` is deleted when the *original* text has it
  next to a space, or has a digit-comma-digit anywhere, else replaced by a space; then a period
  not followed by a digit is deleted (its look-behind is written as a look-ahead, so "5." -> "5"
  and "3.5" stays; at most 32 of them, because ``re.UNICODE`` was passed as ``sub``'s count);
  words "none"/"zero".."ten" become digits ("none" -> "0"), articles a/an/the are dropped, a few
  contractions get their apostrophe ("dont" -> "don't"), and remaining commas go. Apostrophes,
  colons, "%", "*" and the like stay. The scorer normalises again inside each metric (twice in all).
* **CLOSED** (yes/no) questions: correct when the prediction *contains* "yes" or "no" as a
  substring and contains the whole ground truth as a substring. So "no" inside "normal" or
  "nodule" counts as saying "no", and a prediction "yes no" is right whatever the answer.
* **OPEN** questions, per question then averaged over OPEN questions:
  - recall / F1 (its ``calculate_f1score``): words are whitespace tokens with counts; a word of both
    adds its count *in the prediction* to the true positives, so a prediction that repeats a
    ground-truth word raises recall ("left left left" vs "left lung": 3 / (3 + 1) = 0.75). An empty
    prediction, or no shared word, scores 0.
  - candidate accuracy (its ``calculate_appearance_with_normalization``, printed as "open accuracy"):
    every candidate answer (LLaVA-Med: all answers of the dataset) gets the share of its distinct
    words that appear in the prediction; the first candidate with the highest share is the
    prediction's answer, correct when it equals the normalised ground truth. A prediction sharing
    no word with any candidate (an empty one included) picks the *first* candidate.
* Questions typed neither CLOSED nor OPEN are not scored. No CLOSED questions: closed accuracy 0.0
  (as the script); no OPEN questions: the OPEN metrics are absent (the script divides by zero).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

# glossary.py's tables: the same rules, written out here.
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
            "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}
_PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
_DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")
_PERIOD = re.compile(r"\.(?!\d)")  # the script's "(?!<=\d)(\.)(?!\d)": its first group never matches before a "."
_PERIODS_PER_PASS = 32  # period_strip.sub("", text, re.UNICODE): re.UNICODE (32) lands in `count`
# Only the lower-case keys can ever match (the words are lower-cased first); the script's
# capitalised ones ("Im", "Ive", "Id've") are dead entries, and "somebody'd" maps to "somebodyd".
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd", "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've", "somebodyll": "somebody'll", "somebodys": "somebody's",
    "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas",
    "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't",
    "whatll": "what'll", "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's",
    "whered": "where'd", "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}

METRICS = ("acc_closed", "recall_open", "f1_open", "open_candidate_acc")


def normalize_word(text: Any) -> str:
    """LLaVA-Med's ``normalize_word`` (see the module docstring for its rules)."""
    text = "" if text is None else str(text)
    out = text
    delete_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    for p in _PUNCT:  # each decision looks at the original text, not at the one being edited
        out = out.replace(p, "" if delete_all or p + " " in text or " " + p in text else " ")
    out = _PERIOD.sub("", out, count=_PERIODS_PER_PASS)
    words = [_NUMBERS.get(w, w) for w in out.lower().split()]
    words = [_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES]
    return " ".join(words).replace(",", "")


def _words(text: str) -> Counter:
    """``split_sentence(text, 1)``: lower-cased whitespace tokens with their counts."""
    return Counter(text.lower().split())


def f1_precision_recall(prediction: str, answer: str) -> tuple[float, float, float]:
    """``calculate_f1score``: ``(f1, precision, recall)`` of the (normalised) prediction's words."""
    pred, ref = _words(normalize_word(prediction)), _words(normalize_word(answer))
    if not pred or not ref:
        return 0.0, 0.0, 0.0
    tp = sum(n for w, n in pred.items() if w in ref)  # the prediction's count, not min(pred, ref)
    fp = sum(n for w, n in pred.items() if w not in ref)
    fn = sum(n for w, n in ref.items() if w not in pred)
    if tp == 0:
        return 0.0, 0.0, 0.0
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    return 2 * precision * recall / (precision + recall), precision, recall


def closed_hit(prediction: str, answer: str) -> bool:
    """A CLOSED answer: the prediction holds "yes" or "no" (substrings) and the ground truth (a substring)."""
    return ("yes" in prediction or "no" in prediction) and answer in prediction


class CandidateMatcher:
    """``calculate_appearance_with_normalization`` with the candidates normalised once."""

    def __init__(self, candidates: Sequence[Any]) -> None:
        if not candidates:
            raise ValueError("LLaVA-Med's open candidate accuracy needs at least one candidate answer")
        self.normalized = [normalize_word(str(c)) for c in candidates]
        self.word_sets = [set(_words(c)) for c in self.normalized]

    def answer(self, prediction: str) -> str:
        """The first candidate with the largest share of its distinct words found in the prediction."""
        pred = set(_words(normalize_word(prediction)))
        best, best_score = 0, -1.0
        for i, words in enumerate(self.word_sets):
            score = len(pred & words) / len(words) if words else 0.0
            if score > best_score:  # strictly greater: the first maximum wins, as list.index(max(...))
                best, best_score = i, score
        return self.normalized[best]

    def hit(self, prediction: str, answer: str) -> bool:
        return self.answer(prediction) == normalize_word(answer)


def score_rows(rows: Iterable[Mapping[str, Any]], candidates: Sequence[Any]) -> list[dict[str, Any]]:
    """Per-question scores: ``{"type": "CLOSED", "hit"}`` or ``{"type": "OPEN", "recall", "f1", "candidate_hit"}``
    (``None`` for a question of another type), in the order of ``rows`` (``answer``, ``prediction``,
    ``answer_type`` as in ``predictions.jsonl``)."""
    matcher: CandidateMatcher | None = None
    scores: list[dict[str, Any]] = []
    for row in rows:
        answer = normalize_word(str(row.get("answer") or "").lower())  # run_eval.py: .lower(), then normalize_word
        prediction = normalize_word(str(row.get("prediction") or "").lower())
        kind = row.get("answer_type")
        if kind == "CLOSED":
            scores.append({"type": "CLOSED", "hit": float(closed_hit(prediction, answer))})
        elif kind == "OPEN":
            matcher = matcher or CandidateMatcher(candidates)
            f1, _, recall = f1_precision_recall(prediction, answer)
            scores.append({"type": "OPEN", "recall": recall, "f1": f1,
                           "candidate_hit": float(matcher.hit(prediction, answer))})
        else:
            scores.append({"type": None})
    return scores


def aggregate(scores: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Means over the per-question scores: ``acc_closed`` (0.0 without CLOSED questions, as the script),
    ``recall_open``, ``f1_open``, ``open_candidate_acc`` (absent without OPEN questions)."""
    closed = [s["hit"] for s in scores if s["type"] == "CLOSED"]
    opened = [s for s in scores if s["type"] == "OPEN"]
    out = {"acc_closed": sum(closed) / len(closed) if closed else 0.0}
    if opened:
        n = len(opened)
        out.update({"recall_open": sum(s["recall"] for s in opened) / n, "f1_open": sum(s["f1"] for s in opened) / n,
                    "open_candidate_acc": sum(s["candidate_hit"] for s in opened) / n})
    return out


# metric -> the per-question score it averages and the questions it counts (aggregate's means, row by row)
_PER_QUESTION = {"acc_closed": ("hit", "CLOSED"), "recall_open": ("recall", "OPEN"), "f1_open": ("f1", "OPEN"),
                 "open_candidate_acc": ("candidate_hit", "OPEN")}


def per_question(rows: Iterable[Mapping[str, Any]], candidates: Sequence[Any]) -> dict[str, list[float]]:
    """Each metric's per-question values (NaN for a question it does not count), for bootstrap intervals."""
    scores = score_rows(rows, candidates)
    return {key: [s[field] if s["type"] == kind else math.nan for s in scores] for key, (field, kind) in _PER_QUESTION.items()}


def llava_med_scores(rows: Iterable[Mapping[str, Any]], candidates: Sequence[Any]) -> dict[str, float]:
    """LLaVA-Med's VQA scores of prediction rows against ``candidates`` (every answer of the dataset)."""
    return aggregate(score_rows(rows, candidates))


__all__ = ["METRICS", "CandidateMatcher", "aggregate", "closed_hit", "f1_precision_recall", "llava_med_scores",
           "normalize_word", "per_question", "score_rows"]
