"""Nothing dropped silently: every record a loader leaves out is counted per reason, with its id.

A loader is given an :class:`Ask` (what the dataset's config asks of it) and fills a :class:`Drops` while it reads; :func:`loaded` returns its splits as a
:class:`Loaded` dict that carries the drops, the duplicates / train-test overlaps found, the rule
that gave CLOSED / OPEN, and the layout read. ``medft data`` prints them (text and JSON), training
puts them in the log and ``metrics.json`` as ``data/dropped/<reason>``.

Reasons: ``empty`` (question, answer or report empty), ``not_text`` (a question or answer that is a
list, mapping or true/false), ``no_image_name``, ``missing_image``, ``unreadable_image``,
``no_section`` (a report without the section asked for), ``duplicate`` (the same image, question and
answer twice in a split), ``train_test_overlap`` (a train record that is also a test record),
``outside_root`` (an image path leaving dataset.root).

Duplicates and overlaps are found always and *reported*; they are removed (and then counted as
dropped) only with ``dataset.dedupe=true``: published splits stay as published unless asked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from medft.runs.layout import RELATIVE

EXAMPLES = 3  # ids shown per reason

Splits = dict[str, list[dict[str, Any]]]


class Drops:
    """``{split: {reason: [ids]}}`` of the records left out."""

    def __init__(self) -> None:
        self.ids: dict[str, dict[str, list[str]]] = {}

    def add(self, split: str, reason: str, id: Any) -> None:
        self.ids.setdefault(split, {}).setdefault(reason, []).append(str(id))

    def merge(self, other: "Drops") -> None:
        for split, reasons in other.ids.items():
            for reason, ids in reasons.items():
                self.ids.setdefault(split, {}).setdefault(reason, []).extend(ids)

    def total(self, reason: str) -> int:
        return sum(len(r.get(reason, [])) for r in self.ids.values())


class Loaded(dict):
    """A loader's ``{"train", "val", "test"}`` records plus what was dropped and how CLOSED / OPEN was decided."""

    drops: Drops
    kept: dict[str, dict[str, list[str]]]  # duplicate / train_test_overlap found and kept: {reason: {split: ids}}
    answer_types: str
    layout: str


# metrics.json: which rule made the records CLOSED or OPEN, in words (text, not a number)
ANSWER_TYPES_KEY = "data/answer_types"

def loaded(splits: Splits, drops: Drops | None = None, answer_types: str = "", layout: str = "") -> Loaded:
    out = Loaded(splits)
    out.drops = drops or Drops()
    renamed = getattr(splits, "renamed", None)  # medft.data.common.finish: ids it made unique
    out.kept = dict(splits.kept) if isinstance(splits, Loaded) else ({"duplicate_id": renamed} if renamed else {})
    out.answer_types = answer_types
    out.layout = layout
    return out


def info_of(splits: Splits) -> Loaded | None:
    return splits if isinstance(splits, Loaded) else None


def carry(src: Splits, dst: Splits) -> Splits:
    """``dst`` (a new dict made from ``src``) with ``src``'s drops and rules, when it has them."""
    if not isinstance(src, Loaded) or isinstance(dst, Loaded) and dst is src:
        return dst
    out = loaded(dst, src.drops, src.answer_types, src.layout)
    out.kept = src.kept
    return out


def _image_key(path: str) -> str:
    """An image's identity: its path (cheap for MIMIC-CXR's 377,110 images; cached tables are content-named)."""
    return os.path.normpath(path)


def find_duplicates(splits: Splits, remove: bool) -> Splits:
    """Find records with the same image, question and answer twice (in test, or in train + val), and
    train / val records that are also test records; remove them (counted as dropped) only when ``remove``.

    Images are compared by path (Parquet images are cached under their content hash, so two copies
    of one picture there are one image).
    """
    if not isinstance(splits, Loaded):
        splits = loaded(splits)
    keys: dict[str, str] = {}

    def key(rec: dict[str, Any]) -> tuple:
        paths = rec.get("views") or [rec["image"]]
        imgs = tuple(keys.setdefault(p, _image_key(p)) for p in paths)
        text = (rec.get("question", "").strip().lower(), rec.get("answer", rec.get("report", "")).strip().lower())
        return imgs + text

    found: dict[str, dict[str, list[str]]] = {"duplicate": {}, "train_test_overlap": {},
                                              "duplicate_id": {s: list(v) for s, v in splits.kept.get("duplicate_id", {}).items()}}
    out: dict[str, list[dict[str, Any]]] = {}
    test_keys = {key(r) for r in splits.get("test", [])}
    seen_by: dict[str, set[tuple]] = {}
    for split, records in splits.items():
        # train and val are one pool (val is often carved from train): a pair split between them is a duplicate too
        seen = seen_by.setdefault("test" if split == "test" else "train", set())
        keep, ids = [], set()
        for rec in records:
            if rec["id"] in ids:  # another record has this id (a loader without finish()): flagged, kept
                found["duplicate_id"].setdefault(split, []).append(rec["id"])
            ids.add(rec["id"])
            k = key(rec)
            if k in seen:
                found["duplicate"].setdefault(split, []).append(rec["id"])
                if remove:
                    continue
            elif split != "test" and k in test_keys:
                found["train_test_overlap"].setdefault(split, []).append(rec["id"])
                if remove:
                    continue
            seen.add(k)
            keep.append(rec)
        out[split] = keep
    result = carry(splits, out)
    if remove:
        for reason, per_split in found.items():
            if reason == "duplicate_id":
                continue
            for split, ids in per_split.items():
                for id in ids:
                    result.drops.add(split, reason, id)
        result.kept = {"duplicate_id": found["duplicate_id"]} if found["duplicate_id"] else {}
    else:
        result.kept = {reason: per_split for reason, per_split in found.items() if per_split}
    return result


def dropped_summary(splits: Splits) -> dict[str, dict[str, Any]]:
    """``{split: {reason: n}}`` and ``{split: {reason: [first ids]}}`` for ``medft data``."""
    info = info_of(splits)
    if info is None:
        return {}
    return {split: {reason: len(ids) for reason, ids in reasons.items()} for split, reasons in info.drops.ids.items()}


def examples(splits: Splits) -> dict[str, dict[str, list[str]]]:
    info = info_of(splits)
    if info is None:
        return {}
    return {split: {reason: ids[:EXAMPLES] for reason, ids in reasons.items()} for split, reasons in info.drops.ids.items()}


def drop_lines(splits: Splits) -> list[str]:
    """One line per reason: what was dropped (and what was found but kept), with the first ids."""
    info = info_of(splits)
    if info is None:
        return []
    lines = []
    reasons = sorted({r for per in info.drops.ids.values() for r in per})
    for reason in reasons:
        per = {s: r[reason] for s, r in info.drops.ids.items() if r.get(reason)}
        n = sum(len(v) for v in per.values())
        first = [i for ids in per.values() for i in ids][:EXAMPLES]
        where = ", ".join(f"{s} {len(v)}" for s, v in per.items())
        lines.append(f"dropped {n} record(s): {REASONS.get(reason, reason)} ({where}; e.g. {', '.join(first)})")
    for reason, per in info.kept.items():
        n = sum(len(v) for v in per.values())
        first = [i for ids in per.values() for i in ids][:EXAMPLES]
        where = ", ".join(f"{s} {len(v)}" for s, v in per.items())
        lines.append(
            f"found {n} {REASONS[reason]} ({where}; e.g. {', '.join(first)}): kept as published"
            + ("" if reason == "duplicate_id" else "; dataset.dedupe=true removes them")
        )
    return lines


def stats(splits: Splits) -> dict[str, Any]:
    """``data/dropped/<reason>`` (all splits), ``data/found/<reason>`` (kept) and ``data/answer_types``."""
    info = info_of(splits)
    if info is None:
        return {}
    out: dict[str, Any] = {}
    for per in info.drops.ids.values():
        for reason, ids in per.items():
            out[f"data/dropped/{reason}"] = out.get(f"data/dropped/{reason}", 0) + len(ids)
    for reason, per in info.kept.items():
        out[f"data/found/{reason}"] = sum(len(v) for v in per.values())
    if info.answer_types:
        out[ANSWER_TYPES_KEY] = info.answer_types
    return out


REASONS = {
    "empty": "empty question, answer or report",
    "not_text": "question or answer not text (a list, mapping or true/false)",
    "no_image_name": "no image name",
    "missing_image": "image missing or empty",
    "unreadable_image": "image unreadable",
    "no_section": "report without the section asked for (dataset.report_section)",
    "duplicate": "duplicate(s) (same image, question and answer twice, in test or in train + val)",
    "train_test_overlap": "train/test overlap(s) (a train or val record that is also a test record)",
    "duplicate_id": f"record(s) whose id another record has (renamed ID-2, ID-3, ... in {RELATIVE.predictions})",
    "outside_root": "image or report file outside dataset.root",
    "no_view": "no image of the views asked for (dataset.views)",
}


@dataclass(frozen=True)
class Ask:
    """What a dataset's config asks of a layout's loader (its options; a loader uses those it knows)."""

    name: str  # the dataset: ``iu_xray``, or the image cache's folder for tables
    title: str  # how messages name it: ``VQA-RAD``
    val_fraction: float = 0.1
    split_seed: int = 0
    cache_dir: str | None = None
    lang: str | None = None  # SLAKE's questions: en, zh, all
    views: str = "first"  # report sets: first, all
    report_section: str = "findings"  # report sets' official releases: findings, impression, both
