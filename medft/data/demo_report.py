"""The demo's findings-style reports: what a radiologist would write about one synthetic scene.

A report describes what the image shows, in the reporting style of its domain (``STYLES``):

* which organ or body region (a stock sentence or two that every study of that organ carries);
* whether there is a lesion, and if so how many (one or two), which side (as the viewer sees the
  image), their size (small / large) and brightness (bright / faint, in the style's words);
* a normal study's stock sentences;
* each sentence in one of two wordings (a templated paraphrase, drawn per sentence), so that the
  wording varies as in real reports.

Styles differ in vocabulary and structure, as reports of different departments do:

* ``source`` (radiograph reports): "the heart is normal in size . the lungs are normal . there is
  a large bright lesion in the left chest ."
* ``ct`` (another modality's reports: the source's anatomy sentences, its own header, findings words and
  impression): "ct of the chest . the heart is normal in size . the lungs are normal . a large hypodense
  mass is present in the left chest . impression : abnormal chest ."
* ``findings`` (other anatomy, nodules): "study of the pelvis . one small dense nodule is visible
  on the right side . impression : abnormal ."

Every word is one token of the offline tokenizer (:mod:`medft.models.tokenizer`), so a report of
~25 words is ~30 tokens. :mod:`medft.data.demo` draws the scenes and writes the files.
"""

from __future__ import annotations

import numpy as np

REPORT_VERSION = 2  # in a report set's demo_meta.json: a change of wording here regenerates cached sets
# style -> sentence kind -> (wording, paraphrase); {organ}, {side}, {size}, {bright} are filled in
STYLES: dict[str, dict[str, tuple[str, str]]] = {
    "source": {
        "header": ("", ""),
        "none": ("no lesion is seen .", "there is no lesion ."),
        "one": ("there is a {size} {bright} lesion in the {side} {organ} .", "a {size} {bright} lesion is seen on the {side} side ."),
        "two_one_side": ("there are two {size} {bright} lesions in the {side} {organ} .",
                         "two {size} {bright} lesions are seen on the {side} side ."),
        "two_both_sides": ("there are {size} {bright} lesions on both sides .", "bilateral {size} {bright} lesions are seen ."),
        "closing_normal": ("", ""),
        "closing_abnormal": ("", ""),
    },
    "ct": {
        "header": ("ct of the {organ} .", "axial ct of the {organ} ."),
        "none": ("no mass is present .", "there is no mass ."),
        "one": ("a {size} {bright} mass is present in the {side} {organ} .", "there is a {size} {bright} mass on the {side} side ."),
        "two_one_side": ("two {size} {bright} masses are present in the {side} {organ} .",
                         "there are two {size} {bright} masses on the {side} side ."),
        "two_both_sides": ("bilateral {size} {bright} masses are present .", "there are {size} {bright} masses on both sides ."),
        "closing_normal": ("impression : normal {organ} .", "impression : no abnormality ."),
        "closing_abnormal": ("impression : abnormal {organ} .", "impression : abnormal {organ} study ."),
    },
    "findings": {
        "header": ("study of the {organ} .", "{organ} study ."),
        "none": ("no nodules are visible .", "there are no nodules ."),
        "one": ("one {size} {bright} nodule is visible on the {side} side .", "there is one {size} {bright} nodule on the {side} side ."),
        "two_one_side": ("two {size} {bright} nodules are visible on the {side} side .",
                         "there are two {size} {bright} nodules on the {side} side ."),
        "two_both_sides": ("{size} {bright} nodules are visible on both sides .", "there are {size} {bright} nodules on both sides ."),
        "closing_normal": ("impression : normal .", "impression : no abnormality ."),
        "closing_abnormal": ("impression : abnormal .", "impression : abnormal study ."),
    },
}
# style -> brightness class -> word (a faint lesion is one drawn darker: see demo.REPORT_DOMAINS)
BRIGHT_WORDS = {"source": {"bright": "bright", "faint": "mild"}, "ct": {"bright": "hypodense", "faint": "mild"},
                "findings": {"bright": "dense", "faint": "mild"}}
# style -> organ -> its stock sentences (wording, paraphrase), written in every study of that organ
STOCK: dict[str, dict[str, tuple[tuple[str, str], ...]]] = {
    "source": {
        "chest": (("the heart is normal in size .", "heart size is normal ."), ("the lungs are normal .", "normal lungs .")),
        "head": (("the skull is normal .", "normal skull ."), ("the brain is normal in size .", "brain size is normal .")),
        "abdomen": (("the kidneys are normal in size .", "kidney size is normal ."), ("the spine is normal .", "normal spine .")),
    },
    "ct": {},  # the source's (below)
    "findings": {organ: () for organ in ("chest", "pelvis", "neck")},
}
STOCK["ct"] = STOCK["source"]
PARAPHRASE_RATE = 0.25


def write_report(scene: dict, style: str, rng: np.random.Generator) -> str:
    """The report of ``scene`` (organ, lesions with sides, ``size`` and ``bright`` classes) in ``style``."""
    words = STYLES[style]
    organ, lesions = scene["organ"], scene["lesions"]
    fill = {"organ": organ, "size": scene.get("size", ""), "bright": BRIGHT_WORDS[style].get(scene.get("bright", ""), "")}
    kinds: list[tuple[str, str]] = [words["header"], *STOCK[style][organ]]
    sides = sorted({lesion["side"] for lesion in lesions})
    if not lesions:
        kinds.append(words["none"])
    elif len(lesions) == 1:
        kinds.append(words["one"])
    else:
        kinds.append(words["two_one_side"] if len(sides) == 1 else words["two_both_sides"])
    kinds.append(words["closing_abnormal"] if lesions else words["closing_normal"])
    if len(sides) == 1:
        fill["side"] = sides[0]
    sentences = []
    for wording in kinds:
        para = bool(rng.random() < PARAPHRASE_RATE)
        if wording[int(para)]:
            sentences.append(wording[int(para)].format(**fill))
    return " ".join(sentences)
