"""PathVQA (He et al., 2020) in either published layout (auto-detected):

* the original release::

      root/qas/{train,val,test}/{split}_qa.pkl     a pickled list of {image, question, answer}
      root/images/{train,val,test}/<image>.jpg

* the Parquet release (Hugging Face), one or more shards per split, anywhere under ``root``::

      root/data/{train,validation,test}-*.parquet  columns image {bytes, path}, question, answer

  Parquet images are embedded bytes: they are written once, one file per distinct image, into
  ``cache_dir`` (``$MEDFT_CACHE_DIR/path_vqa/...``) so that training reads them like any other.

Yes/no answers are CLOSED, every other answer OPEN. Sizes: 19,654 / 6,259 / 6,719.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import Any

from medft.data.common import Splits, check_root, closed_if_yes_no, finish, is_text, text, vqa_record
from medft.errors import DataError

PKL_SPLITS = {"train": "train", "val": "val", "test": "test"}
PARQUET_SPLITS = {"train": "train", "validation": "val", "val": "val", "test": "test"}
EXPECTED = (
    "qas/{train,val,test}/{split}_qa.pkl + images/{split}/<image>.jpg (original PathVQA release) "
    "or {train,validation,test}-*.parquet with columns image, question, answer (Parquet release)"
)


def load_path_vqa(root: str | Path, val_fraction: float = 0.1, seed: int = 0, cache_dir: str | Path | None = None) -> Splits:
    root = check_root(root, EXPECTED)
    if (root / "qas").is_dir():
        splits = _load_pickles(root)
    else:
        shards = sorted(root.rglob("*.parquet"))
        if not shards:
            raise DataError(f"no PathVQA dataset in {root}: expected {EXPECTED}")
        cache = Path(cache_dir).expanduser() if cache_dir else root / ".medft_images"
        splits = _load_parquet(shards, cache / "path_vqa")
    return finish(splits, val_fraction, seed, f"PathVQA ({root})")


def _record(id: str, image: Path, question: Any, answer: Any, name: str = "") -> dict | None:
    if not (is_text(question) and is_text(answer)):  # a list, mapping or bool is no text: dropped
        return None
    answer = text(answer)
    return vqa_record(id, image, name or image.name, question, answer, closed_if_yes_no(answer))


# --- original release: pickles ---------------------------------------------------------------


def _load_pickles(root: Path) -> Splits:
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
            if not image:
                continue
            file = image if Path(image).suffix else f"{image}.jpg"
            rec = _record(f"{name}-{i}", image_dir / file, r.get("question"), r.get("answer"))
            if rec is not None:
                records.append(rec)
        splits[split] = records
    return splits


def _read_pickle(path: Path) -> list[dict]:
    """The release's ``{split}_qa.pkl``: a list of dicts (a pandas-free pickle; trusted local data)."""
    try:
        with open(path, "rb") as f:
            rows = pickle.load(f)  # noqa: S301 - the user's own copy of the published file
    except (pickle.UnpicklingError, EOFError, ValueError, ModuleNotFoundError) as exc:
        raise DataError(f"annotation file {path} is not a readable pickle ({exc}): restore the original file") from None
    if isinstance(rows, dict):  # a dict of columns
        keys = list(rows)
        rows = [dict(zip(keys, vals)) for vals in zip(*(rows[k] for k in keys))]
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise DataError(f"annotation file {path} must hold a list of {{image, question, answer}} dicts")
    return rows


# --- Parquet release --------------------------------------------------------------------------


def parquet_split(path: Path) -> str | None:
    """The split a shard belongs to, from its name: ``train-00000-of-00002.parquet`` -> train."""
    stem = path.name.split(".")[0].lower()
    for prefix, split in PARQUET_SPLITS.items():
        if stem == prefix or stem.startswith(prefix + "-") or stem.startswith(prefix + "_"):
            return split
    parent = path.parent.name.lower()
    return PARQUET_SPLITS.get(parent)


def _load_parquet(shards: list[Path], cache: Path) -> Splits:
    import pyarrow.parquet as pq

    splits: Splits = {}
    for shard in shards:
        split = parquet_split(shard)
        if split is None:
            raise DataError(f"cannot tell the split of {shard}: name shards train-*, validation-* or test-*")
        try:
            table = pq.ParquetFile(shard)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
            raise DataError(f"cannot read Parquet file {shard}: {str(exc).splitlines()[0]}") from None
        columns = set(table.schema_arrow.names)
        if not {"image", "question", "answer"} <= columns:
            raise DataError(f"Parquet file {shard} has columns {sorted(columns)}; expected image, question, answer")
        records = splits.setdefault(split, [])
        row = 0
        for batch in table.iter_batches(batch_size=512, columns=["image", "question", "answer"]):
            for item in batch.to_pylist():
                image = _cached_image(item["image"], cache)
                name = text((item["image"] or {}).get("path")) if isinstance(item["image"], dict) else ""
                rec = _record(f"{shard.stem}-{row}", image, item["question"], item["answer"], name)
                row += 1
                if rec is not None:
                    records.append(rec)
    return splits


def _cached_image(image: Any, cache: Path) -> Path:
    """Write an embedded image once into ``cache`` (named by its content hash) and return its path."""
    data = image.get("bytes") if isinstance(image, dict) else image
    if not data:
        return cache / "missing" / str((image or {}).get("path") or "no-image")  # counted as missing later
    digest = hashlib.sha1(data).hexdigest()
    suffix = Path(str(image.get("path") or "")).suffix.lower() if isinstance(image, dict) else ""
    path = cache / digest[:2] / f"{digest}{suffix or '.jpg'}"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return path
