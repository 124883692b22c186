"""The demo's findings-style reports: what a radiologist would write about one synthetic scene.

A report describes what the image shows, in the reporting style of its domain (``STYLES``, read from
``demo_report_wording.yaml`` beside this file):

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

from importlib import resources

import numpy as np
import yaml

REPORT_VERSION = 2  # in a report set's demo_meta.json: a change of wording regenerates cached sets
# The wording is data (demo_report_wording.yaml, beside this file): style -> sentence kind -> (wording, paraphrase),
# style -> brightness class -> word, style -> organ -> its stock sentences
_WORDING = yaml.safe_load(resources.files(__package__).joinpath("demo_report_wording.yaml").read_text())
STYLES: dict[str, dict[str, list[str]]] = _WORDING["styles"]
BRIGHT_WORDS: dict[str, dict[str, str]] = _WORDING["bright_words"]
STOCK: dict[str, dict[str, list[list[str]]]] = _WORDING["stock"]
PARAPHRASE_RATE = 0.25


def write_report(scene: dict, style: str, rng: np.random.Generator) -> str:
    """The report of ``scene`` (organ, lesions with sides, ``size`` and ``bright`` classes) in ``style``."""
    words = STYLES[style]
    organ, lesions = scene["organ"], scene["lesions"]
    fill = {"organ": organ, "size": scene.get("size", ""), "bright": BRIGHT_WORDS[style].get(scene.get("bright", ""), "")}
    kinds: list[list[str]] = [words["header"], *STOCK[style][organ]]
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
