"""Report-generation metrics the way R2Gen computes them (Chen et al., EMNLP 2020).

Reports are cleaned with R2Gen's rules (lowercase, list numbering and runs of ``_`` / spaces /
periods collapsed, punctuation removed, sentences joined by `` . ``), then scored by
pycocoevalcap: BLEU-1..4, METEOR (Java), ROUGE-L and CIDEr, one reference per report, no
PTB tokenization (as in R2Gen). SPICE is left out (it needs Stanford CoreNLP models).
"""

from __future__ import annotations

import atexit
import re
from typing import Any, Sequence

from medft.util.errors import MedftError

# R2Gen's sentence cleaner. The ``:-\[`` inside is a character *range* (':' .. '['), so hyphens
# are kept and ';', '<', '=', '>', '?', '@' are removed; kept as is to match published numbers.
_SENT_PUNCT = re.compile(r"[.,?;*!%^&_+():-\[\]{}]")
_LIST_NUMBERS = [("1. ", ""), (". 2. ", ". "), (". 3. ", ". "), (". 4. ", ". "), (". 5. ", ". "),
                 (" 2. ", ". "), (" 3. ", ". "), (" 4. ", ". "), (" 5. ", ". ")]


def clean_report(report: str) -> str:
    """R2Gen's ``clean_report_mimic_cxr`` (a superset of its IU X-ray cleaner) of one report."""
    text = str(report).replace("\n", " ")
    text = re.sub(r"_{2,}", "_", text)
    text = re.sub(r" {2,}", " ", text)
    text = re.sub(r"\.{2,}", ".", text)
    for old, new in _LIST_NUMBERS:
        text = text.replace(old, new)
    sentences = text.strip().lower().split(". ")
    tokens = [_clean_sentence(s) for s in sentences]
    return " ".join((" . ".join(t for t in tokens if t) + " .").split())  # R2Gen leaves double spaces


def _clean_sentence(sentence: str) -> str:
    for ch in ('"', "/", "\\", "'"):
        sentence = sentence.replace(ch, "")
    return _SENT_PUNCT.sub("", sentence.strip().lower())


def coco_scores(references: Sequence[str], generated: Sequence[str]) -> dict[str, float]:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr of cleaned ``generated`` against cleaned ``references``.

    Keys: bleu_1 .. bleu_4, meteor, rouge_l, cider. Empty generations are scored as "." (a
    scorer given an empty hypothesis fails). Needs Java for METEOR.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge

    if len(references) != len(generated):
        raise ValueError(f"{len(references)} references but {len(generated)} generated reports")
    if not references:
        return {}
    gts = {i: [clean_report(r)] for i, r in enumerate(references)}
    res = {i: [clean_report(g) if g.strip() else "."] for i, g in enumerate(generated)}
    out: dict[str, float] = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    out.update({f"bleu_{n}": float(b) for n, b in enumerate(bleu, start=1)})
    out["meteor"], _ = meteor_scorer(Meteor).compute_score(gts, res)
    out["rouge_l"], _ = Rouge().compute_score(gts, res)
    out["cider"], _ = Cider().compute_score(gts, res)
    return {k: float(v) for k, v in out.items()}


_METEOR: dict[str, Any] = {}  # "scorer": this process's METEOR


def meteor_scorer(meteor_class: type) -> Any:
    """This process's METEOR scorer, started on first use and reused: its Java subprocess takes 10-20 s to start
    (loading its paraphrase tables), then scores a test set in a fraction of a second, so a run tested on three
    sets, or a sweep worker's runs one after another, start it once. Stopped when the process exits."""
    scorer = _METEOR.get("scorer")
    proc = getattr(scorer, "meteor_p", None)
    if type(scorer) is meteor_class and (proc is None or proc.poll() is None):
        return scorer
    if scorer is not None:
        _close_meteor(scorer)
    try:
        scorer = meteor_class()
    except FileNotFoundError:
        raise MedftError("METEOR needs Java and `java` is not on PATH: install a Java runtime (e.g. openjdk-17-jre)") from None
    _METEOR["scorer"] = scorer
    return scorer


@atexit.register
def _close_scorer() -> None:
    if _METEOR.get("scorer") is not None:
        _close_meteor(_METEOR.pop("scorer"))


def _close_meteor(meteor) -> None:
    """Stop METEOR's Java subprocess now rather than at interpreter exit."""
    proc = getattr(meteor, "meteor_p", None)
    if proc is None:
        return
    with meteor.lock:
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream:
                stream.close()
        proc.kill()
        proc.wait()
