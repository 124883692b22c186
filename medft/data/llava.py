"""LLaVA-Med's downstream VQA files (VQA-RAD, SLAKE, PathVQA), as its repository releases them::

    root/train.json      [{"id", "image", "answer_type",
    root/test.json         "conversations": [{"from": "human", "value": "<image>\\nQ"}, {"from": "gpt", "value": "A"}]}]
    root/<image folder>/<image>    (images/, imgs/, or the files beside the JSON)

Some released files spell the key ``conversatons``; both are read. The question is the human turn
without the ``<image>`` token, the answer the first gpt turn. ``answer_type`` CLOSED / OPEN as given
(yes/no rule where absent).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medft.data.answer_types import FROM_FILE
from medft.data.common import drop_reason, finish, read_json, text, vqa_record
from medft.data.drops import Ask, Drops, Loaded, loaded
from medft.util.errors import DataError

FILES = {"train": ("train.json",), "val": ("val.json", "valid.json", "validation.json"), "test": ("test.json",)}
IMAGE_DIRS = ("images", "imgs", "image", "img", ".")
CONV_KEYS = ("conversations", "conversatons")
ABOUT = "LLaVA-Med's train.json + test.json + images/"


def _rows(path: Path) -> list[dict[str, Any]] | None:
    data = read_json(path)
    if isinstance(data, list) and data and isinstance(data[0], dict) and any(k in data[0] for k in CONV_KEYS):
        if not all(isinstance(r, dict) for r in data):
            raise DataError(f"annotation file {path} must hold a JSON list of LLaVA-Med records: restore the original file")
        return data
    return None


def is_llava(root: Path) -> bool:
    """``root`` holds LLaVA-Med's train.json / test.json (records with ``conversations``)."""
    path = root / "train.json"
    if not path.is_file() or not (root / "test.json").is_file():
        return False
    try:
        with open(path, encoding="utf-8-sig") as f:
            head = f.read(4096)
    except OSError:
        return False
    return any(f'"{k}"' in head for k in CONV_KEYS)


def _image_dir(root: Path, names: list[str]) -> Path:
    """The folder the image names resolve in: the first of IMAGE_DIRS holding the first named images."""
    probe = [n for n in names if n][:20]
    for d in IMAGE_DIRS:
        folder = (root / d).resolve()
        if folder.is_dir() and probe and sum((folder / n).is_file() for n in probe) >= max(1, len(probe) // 2):
            return folder
    present = [d for d in IMAGE_DIRS[:-1] if (root / d).is_dir()]
    if present:
        return (root / present[0]).resolve()
    raise DataError(
        f"found LLaVA-Med's train.json in {root} but no image folder: put the images it names in {root}/images/"
    )


def _turns(r: dict[str, Any]) -> tuple[Any, Any]:
    conv = next((r[k] for k in CONV_KEYS if k in r), None)
    if not isinstance(conv, list):
        return None, None
    human = next((t.get("value") for t in conv if isinstance(t, dict) and t.get("from") == "human"), None)
    gpt = next((t.get("value") for t in conv if isinstance(t, dict) and t.get("from") == "gpt"), None)
    if isinstance(human, str):
        human = human.replace("<image>", "").strip()
    return human, gpt


def load_llava(root: Path, drops: Drops) -> dict[str, list[dict[str, Any]]]:
    raw: dict[str, list[dict[str, Any]]] = {}
    for split, names in FILES.items():
        path = next((root / n for n in names if (root / n).is_file()), None)
        if path is None:
            continue
        data = _rows(path)
        if data is None:
            raise DataError(f"{path} holds no LLaVA-Med records (objects with 'conversations'): restore the original file")
        raw[split] = data
    image_dir = _image_dir(root, [text(r.get("image")) for rows in raw.values() for r in rows])
    splits: dict[str, list[dict[str, Any]]] = {}
    for split, data in raw.items():
        records = []
        for i, r in enumerate(data):
            id = text(r.get("id")) or f"{split}-{i}"
            q, a = _turns(r)
            name = text(r.get("image"))
            reason = drop_reason(q, a, name)
            if reason:
                drops.add(split, reason, id)
                continue
            records.append(vqa_record(id, image_dir / name, name, q, a, r.get("answer_type")))
        splits[split] = records
    return splits


def read_llava(root: Path, ask: Ask) -> Loaded:
    """The ``llava_med`` layout of :mod:`medft.data.layouts` (CLOSED / OPEN from the files' answer_type)."""
    drops = Drops()
    splits = finish(load_llava(root, drops), ask.val_fraction, ask.split_seed, f"{ask.title} ({root})")
    return loaded(splits, drops, FROM_FILE, "LLaVA-Med train.json/test.json")
