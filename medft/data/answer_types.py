"""Which rule made a record CLOSED or OPEN, and ``dataset.answer_types_from=PATH``.

A layout with an ``answer_type`` field keeps it (``from the annotations``). A layout without one
(the hub's Parquet copies of VQA-RAD and PathVQA) gets the rule the literature uses: CLOSED when
the answer is yes or no, else OPEN (``yes/no rule``). With the original annotations at hand,
``dataset.answer_types_from=PATH`` (a JSON file of question objects, or a folder of them: VQA-RAD's
``VQA_RAD Dataset Public.json`` or trainset/testset.json, SLAKE's train/validate/test.json) joins
their answer_type on (question, answer); records it does not match keep the yes/no rule.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from medft.data.common import closed_if_yes_no, read_json, text
from medft.util.errors import DataError

FROM_FILE = "from the annotations (answer_type)"
YES_NO = "yes/no rule (CLOSED iff the answer is yes or no; the layout has no answer_type)"


def _key(question: Any, answer: Any) -> tuple[str, str]:
    return " ".join(text(question).lower().split()), " ".join(text(answer).lower().split())


def _annotation_rows(path: Path) -> list[dict[str, Any]]:
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    rows: list[dict[str, Any]] = []
    for file in files:
        data = read_json(file)
        if isinstance(data, list):
            rows.extend(r for r in data if isinstance(r, dict))
    return rows


def join_answer_types(splits: dict[str, list[dict[str, Any]]], path: str | Path) -> str:
    """Set each record's answer_type from the annotations at ``path`` (matched on question + answer).

    Returns the rule line for ``medft data`` / ``metrics.json``.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"dataset.answer_types_from={path} does not exist: give the original annotation file or folder")
    votes: dict[tuple[str, str], Counter] = {}
    for r in _annotation_rows(path):
        kind = text(r.get("answer_type")).upper()
        if kind in ("CLOSED", "OPEN"):
            votes.setdefault(_key(r.get("question"), r.get("answer")), Counter())[kind] += 1
    if not votes:
        raise DataError(f"dataset.answer_types_from={path} holds no question objects with an answer_type: give the original annotations")
    matched = total = 0
    for records in splits.values():
        for rec in records:
            total += 1
            hit = votes.get(_key(rec["question"], rec["answer"]))
            if hit:
                rec["answer_type"] = hit.most_common(1)[0][0]
                matched += 1
            else:
                rec["answer_type"] = closed_if_yes_no(rec["answer"])
    return f"joined from {path} on question + answer: {matched} of {total} matched, the rest by the yes/no rule"
