"""SLAKE (Liu et al., ISBI 2021) in its published layout::

    root/train.json
    root/validate.json        (some copies name it validation.json)
    root/test.json
    root/imgs/xmlab<N>/source.jpg

Each file is a JSON list of objects with img_id, img_name ("xmlab0/source.jpg"), question,
answer, q_lang ("en" / "zh"), location, modality, answer_type, base_type, content_type, triple
and qid; the key order differs between files, some answers are numbers. ``lang`` picks the
English questions (``en``, the usual benchmark: 4,919 / 1,053 / 1,061), the Chinese ones
(``zh``) or both (``all``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from medft.data.answer_types import FROM_FILE
from medft.data.common import Splits, check_root, drop_reason, finish, read_json_list, text, vqa_record
from medft.data.drops import Ask, Drops, Loaded, loaded
from medft.util.errors import ConfigError, DataError

SPLIT_FILES = {"train": ("train.json",), "val": ("validate.json", "validation.json"), "test": ("test.json",)}
IMAGE_DIR = "imgs"
LANGS = ("en", "zh", "all")
ABOUT = "train.json, validate.json (or validation.json), test.json and imgs/xmlab<N>/source.jpg (SLAKE)"
EXPECTED = f"{ABOUT}, or the hub's data/{{train,validation,test}}-*.parquet, or LLaVA-Med's train.json + test.json + images/"


def is_slake(root: Path) -> bool:
    """One of SLAKE's annotation files is in ``root`` (:func:`load_slake` names what else is missing)."""
    return any((root / name).is_file() for names in SPLIT_FILES.values() for name in names)


def read_slake(root: Path, ask: Ask) -> Loaded:
    """The ``slake`` layout of :mod:`medft.data.layouts`: the questions in ``ask.lang``."""
    drops = Drops()
    return loaded(load_slake(root, ask.lang or "en", ask.val_fraction, ask.split_seed, drops), drops, FROM_FILE,
                  "SLAKE json + imgs/")


def load_slake(root: str | Path, lang: str = "en", val_fraction: float = 0.1, seed: int = 0, drops: Any = None) -> Splits:
    """``{"train", "val", "test"}`` VQA records of the SLAKE questions in ``lang``."""
    if lang not in LANGS:
        raise ConfigError(f"dataset.lang={lang!r} is not known; use one of {list(LANGS)}")
    root = check_root(root, EXPECTED)
    files = {split: next((root / n for n in names if (root / n).is_file()), None) for split, names in SPLIT_FILES.items()}
    missing = [SPLIT_FILES[s][0] for s in ("train", "test") if files[s] is None]
    if missing:
        raise DataError(f"no SLAKE dataset in {root}: {', '.join(missing)} missing; expected {EXPECTED}")
    if not (root / IMAGE_DIR).is_dir():
        raise DataError(f"found SLAKE annotations in {root} but no image folder {root / IMAGE_DIR}: expected {EXPECTED}")
    splits = {}
    skipped = 0
    for split, path in files.items():
        if path is None:
            continue
        records = splits[split] = []
        for i, r in enumerate(read_json_list(path)):
            if lang != "all" and text(r.get("q_lang")).lower() != lang:
                continue
            name = text(r.get("img_name"))
            id = text(r.get("qid")) or f"{split}-{i}"
            reason = drop_reason(r.get("question"), r.get("answer"), name)
            if reason:
                skipped += 1
                if drops is not None:
                    drops.add(split, reason, id)
                continue
            records.append(vqa_record(
                id, root / IMAGE_DIR / name, name, r.get("question"), r.get("answer"), r.get("answer_type"),
                r.get("content_type"), r.get("location"),
            ))
    if skipped:
        logging.getLogger(__name__).warning(
            f"dataset {root}: skipped {skipped} record(s) with an empty question, answer or image name, or a "
            "question or answer that is not text (a list, mapping or true/false)"
        )
    return finish(splits, val_fraction, seed, f"SLAKE ({root}, lang={lang})")
