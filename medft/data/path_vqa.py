"""PathVQA (He et al., 2020) in either published layout (auto-detected):

* the original release::

      root/qas/{train,val,test}/{split}_qa.pkl     a pickled list of {image, question, answer}
      root/images/{train,val,test}/<image>.jpg

* the Parquet release (Hugging Face), one or more shards per split, anywhere under ``root``::

      root/data/{train,validation,test}-*.parquet  columns image {bytes, path}, question, answer

  read through ``datasets`` by :mod:`medft.data.tables` (images written once into
  ``$MEDFT_CACHE_DIR/path_vqa/``), as are LLaVA-Med's files (:mod:`medft.data.llava`).

Yes/no answers are CLOSED, every other answer OPEN. Sizes: 19,654 / 6,259 / 6,719.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from medft.data.answer_types import YES_NO
from medft.data.common import Splits, check_root, closed_if_yes_no, drop_reason, finish, text, vqa_record
from medft.data.drops import Ask, Drops, Loaded, loaded
from medft.util.errors import DataError

PKL_SPLITS = {"train": "train", "val": "val", "test": "test"}
PARQUET_SPLITS = {"train": "train", "validation": "val", "val": "val", "test": "test"}
ABOUT = "qas/{train,val,test}/{split}_qa.pkl + images/{split}/<image>.jpg (original PathVQA release)"
EXPECTED = f"{ABOUT} or {{train,validation,test}}-*.parquet with columns image, question, answer (Parquet release)"


def is_path_vqa(root: Path) -> bool:
    return (root / "qas").is_dir()


def read_path_vqa(root: Path, ask: Ask) -> Loaded:
    """The ``path_vqa`` layout of :mod:`medft.data.layouts`: the pickles (yes/no answers CLOSED)."""
    drops = Drops()
    return loaded(load_path_vqa(root, ask.val_fraction, ask.split_seed, drops), drops, YES_NO, "PathVQA pickles + images/")


def load_path_vqa(root: str | Path, val_fraction: float = 0.1, seed: int = 0, drops: Any = None) -> Splits:
    """The original release (pickles); the other layouts are :mod:`medft.data.layouts`' other entries."""
    root = check_root(root, EXPECTED)
    if not (root / "qas").is_dir():
        raise DataError(f"no PathVQA dataset in {root}: expected {EXPECTED} or LLaVA-Med's train.json + test.json")
    return finish(_load_pickles(root, drops), val_fraction, seed, f"PathVQA ({root})")


# --- original release: pickles ---------------------------------------------------------------


def _load_pickles(root: Path, drops: Any = None) -> Splits:
    splits: Splits = {}
    for split, name in PKL_SPLITS.items():
        path = root / "qas" / name / f"{name}_qa.pkl"
        if not path.is_file():
            if split == "val":
                continue
            raise DataError(f"PathVQA annotation file {path} is missing: expected {EXPECTED}")
        image_dir = root / "images" / name
        if not image_dir.is_dir():
            raise DataError(f"found {path} but no image folder {image_dir}: expected {EXPECTED}")
        rows = _read_pickle(path)
        records = []
        for i, r in enumerate(rows):
            image = text(r.get("image"))
            id = f"{name}-{i}"
            reason = drop_reason(r.get("question"), r.get("answer"), image)
            if reason:
                if drops is not None:
                    drops.add(split, reason, id)
                continue
            file = image_dir / (image if Path(image).suffix else f"{image}.jpg")
            answer = text(r.get("answer"))
            records.append(vqa_record(id, file, file.name, r.get("question"), answer, closed_if_yes_no(answer)))
        splits[split] = records
    return splits


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles lists, dicts, strings and numbers only: a pickle naming any class or function (which
    unpickling would call: ``os.system``, ...) is refused, never run. A dataset is data, never code."""

    ALLOWED = {("collections", "OrderedDict")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it names {module}.{name}, not plain data; refused, never unpickled")


def _read_pickle(path: Path) -> list[dict]:
    """The release's ``{split}_qa.pkl``: a list of dicts (a pandas-free pickle), read as plain data only."""
    try:
        with open(path, "rb") as f:
            rows = _PlainUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError, ValueError, ModuleNotFoundError) as exc:
        raise DataError(f"annotation file {path} is not a readable pickle ({exc}): restore the original file") from None
    if isinstance(rows, dict):  # a dict of columns
        keys = list(rows)
        rows = [dict(zip(keys, vals)) for vals in zip(*(rows[k] for k in keys))]
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise DataError(f"annotation file {path} must hold a list of {{image, question, answer}} dicts")
    return rows
