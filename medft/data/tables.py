"""VQA sets stored as tables, read through the ``datasets`` library (the ecosystem's reader):

* Parquet shards as the hub ships them, anywhere under ``root``::

      root/data/train-00000-of-00001-<hash>.parquet     (VQA-RAD: train / test)
      root/data/validation-00000-of-00001.parquet       (SLAKE, PathVQA: train / validation / test)

  columns ``image`` {bytes, path}, ``question``, ``answer`` and any others (``answer_type``,
  ``q_lang``, ``img_name``, ``qid``, ``content_type``, ``location``: SLAKE's every-column copy);
* Arrow files (``*.arrow``, a ``datasets`` cache) with the same columns;
* a ``save_to_disk`` folder (``dataset_dict.json`` + one folder per split) as ``dataset.root``;
* a hub id (``dataset.hub_id=owner/name``) found in the local Hugging Face cache, offline.

Images given as bytes are written once, one file per distinct image (named by its content hash),
into the image cache (``$MEDFT_CACHE_DIR/<dataset>/``) and read from there like any other image.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Iterator

from medft.data.answer_types import FROM_FILE, YES_NO
from medft.data.common import finish
from medft.data.drops import Ask, Drops, Loaded, loaded
from medft.util.errors import DataError
from medft.util.files import ensure_dir

SPLIT_NAMES = {"train": "train", "validation": "val", "validate": "val", "val": "val", "valid": "val", "test": "test"}
SUFFIXES = (".parquet", ".arrow")
ABOUT = "the hub's Parquet shards (data/{train,validation,test}-*.parquet), Arrow files or a save_to_disk folder"
CACHE_FIX = "set MEDFT_CACHE_DIR (or paths.cache_dir) to a folder you can write"


def has_tables(root: Path) -> bool:
    """``root`` holds Parquet / Arrow shards or a ``save_to_disk`` folder."""
    return (root / "dataset_dict.json").is_file() or (root / "state.json").is_file() or any(
        next(root.rglob(f"*{s}"), None) is not None for s in SUFFIXES
    )


def table_split(path: Path) -> str | None:
    """The split a shard belongs to, from its name (``train-00000-of-00002-ab12.parquet``) or its folder."""
    stem = path.name.split(".")[0].lower()
    for prefix, split in SPLIT_NAMES.items():
        if stem == prefix or stem.startswith(prefix + "-") or stem.startswith(prefix + "_"):
            return split
    for parent in path.parents:
        if parent.name.lower() in SPLIT_NAMES:
            return SPLIT_NAMES[parent.name.lower()]
    # a datasets cache: <name>-<split>[-NNNNN-of-NNNNN].arrow
    parts = stem.split("-")
    for part in parts[1:]:
        if part in SPLIT_NAMES:
            return SPLIT_NAMES[part]
    return None


def _hf_cache(cache_dir: Path | None) -> str | None:
    return str(cache_dir / "hf_datasets") if cache_dir else None


def read_tables(root: Path, cache_dir: Path | None = None) -> dict[str, Any]:
    """``{split: datasets.Dataset}`` of the tables under ``root`` (images left as bytes, not decoded)."""
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    if (root / "dataset_dict.json").is_file() or (root / "state.json").is_file():  # a save_to_disk folder
        try:
            loaded = datasets.load_from_disk(str(root))
        except Exception as exc:  # noqa: BLE001 - several error types for a damaged folder
            raise DataError(f"cannot read the save_to_disk folder {root}: {str(exc).splitlines()[0]}") from None
        if isinstance(loaded, datasets.Dataset):
            raise DataError(f"{root} is one saved split, not a DatasetDict: save_to_disk the whole DatasetDict (train/test)")
        out = {}
        for name, ds in loaded.items():
            split = SPLIT_NAMES.get(name.lower())
            if split is None:
                raise DataError(f"cannot tell which split {name!r} of {root} is: name the splits train, validation, test")
            out[split] = ds
        return {k: _undecoded(v) for k, v in out.items()}
    files: dict[str, dict[str, list[str]]] = {}
    for suffix in SUFFIXES:
        for shard in sorted(root.rglob(f"*{suffix}")):
            if any(part.startswith(".") for part in shard.relative_to(root).parts):
                continue  # medft's own image cache, hidden folders
            split = table_split(shard)
            if split is None:
                raise DataError(f"cannot tell the split of {shard}: name shards train-*, validation-* or test-*")
            files.setdefault(suffix, {}).setdefault(split, []).append(str(shard))
    if not files:
        raise DataError(f"no Parquet or Arrow files under {root}")
    if len(files) > 1:  # both: the Parquet shards are the download, Arrow a cache of it
        files = {".parquet": files[".parquet"]}
    suffix, data_files = next(iter(files.items()))
    try:
        dsd = datasets.load_dataset(suffix[1:], data_files=data_files, cache_dir=_hf_cache(cache_dir))
    except Exception as exc:  # noqa: BLE001 - pyarrow / datasets raise several types for a bad file
        raise DataError(f"cannot read the {suffix[1:]} files under {root}: {str(exc).splitlines()[0]}") from None
    return {split: _undecoded(ds) for split, ds in dsd.items()}


def _undecoded(ds: Any) -> Any:
    """Images as ``{bytes, path}``: medft decodes them itself, once, when it caches them."""
    import datasets

    if "image" in ds.features and isinstance(ds.features["image"], datasets.Image):
        ds = ds.cast_column("image", datasets.Image(decode=False))
    return ds


def rows(ds: Any, columns: list[str]) -> Iterator[dict[str, Any]]:
    for batch in ds.select_columns([c for c in columns if c in ds.column_names]).iter(batch_size=512):
        keys = list(batch)
        for values in zip(*(batch[k] for k in keys)):
            yield dict(zip(keys, values))


def cached_image(image: Any, cache: Path) -> tuple[Path | None, str]:
    """Write an embedded image once into ``cache`` (named by its content hash): (its path, its name).

    No bytes: (None, name). A ``path`` given without bytes is not followed (tables are data).
    """
    data = image.get("bytes") if isinstance(image, dict) else image if isinstance(image, bytes) else None
    name = str(image.get("path") or "") if isinstance(image, dict) else ""
    if not data:
        return None, name
    digest = hashlib.sha1(data).hexdigest()
    suffix = Path(name).suffix.lower() if name else ""
    path = cache / digest[:2] / f"{digest}{suffix if suffix in ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff') else '.jpg'}"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return path, name or path.name


VQA_COLUMNS = ["image", "question", "answer", "answer_type", "q_lang", "img_name", "qid", "id", "content_type",
               "question_type", "location", "organ"]


def load_table_vqa(
    root: Path, cache: Path, drops: Drops, lang: str | None = None, cache_dir: Path | None = None,
) -> tuple[dict[str, list[dict[str, Any]]], bool]:
    """VQA records from tables: (splits, whether the tables carry an answer_type column).

    ``lang`` keeps the rows whose ``q_lang`` is that language (SLAKE's every-column copy; a table
    without ``q_lang`` is taken as it is).
    """
    from medft.data.common import drop_reason, text, vqa_record

    tables = read_tables(root, cache_dir)
    typed = True
    splits: dict[str, list[dict[str, Any]]] = {}
    for split, ds in tables.items():
        missing = {"image", "question", "answer"} - set(ds.column_names)
        if missing:
            raise DataError(
                f"the {split} table under {root} has columns {sorted(ds.column_names)}; expected image, question, answer"
            )
        typed = typed and "answer_type" in ds.column_names
        records = splits.setdefault(split, [])
        for i, row in enumerate(rows(ds, VQA_COLUMNS)):
            if lang not in (None, "all") and "q_lang" in row and text(row["q_lang"]).lower() != lang:
                continue
            id = text(row.get("qid")) or text(row.get("id")) or f"{split}-{i}"
            reason = drop_reason(row["question"], row["answer"])
            if reason:
                drops.add(split, reason, id)
                continue
            path, name = cached_image(row["image"], cache)
            if path is None:
                drops.add(split, "missing_image", id)
                continue
            rec = vqa_record(
                id, path, text(row.get("img_name")) or name, row["question"], row["answer"],
                row.get("answer_type") if typed else None, row.get("content_type") or row.get("question_type") or "",
                row.get("location") or row.get("organ") or "",
            )
            records.append(rec)
    return splits, typed


def read_table_vqa(root: Path, ask: Ask) -> Loaded:
    """The ``tables`` layout of :mod:`medft.data.layouts`: embedded images cached under ``ask.cache_dir``
    (else ``root/.medft_images``); CLOSED / OPEN from an answer_type column, else by the yes/no rule."""
    cache_dir = Path(ask.cache_dir).expanduser() if ask.cache_dir else None
    if cache_dir:
        ensure_dir(ask.cache_dir, "the image cache (MEDFT_CACHE_DIR)", CACHE_FIX)
    drops = Drops()
    splits, typed = load_table_vqa(root, (cache_dir or root / ".medft_images") / ask.name, drops, ask.lang, cache_dir)
    splits = finish(splits, ask.val_fraction, ask.split_seed, f"{ask.title} ({root})")
    return loaded(splits, drops, FROM_FILE if typed else YES_NO,
                  "tables (Parquet / Arrow / save_to_disk) read with datasets")


# --- a hub id from the local cache -------------------------------------------------------------


def hub_snapshot(hub_id: str) -> Path:
    """The local folder of hub dataset ``hub_id`` (as ``hf download`` leaves it), never fetched.

    A one-line DataError naming the cache and the command that fills it when it is not there.
    """
    from huggingface_hub import constants, snapshot_download

    if "/" not in hub_id or hub_id.count("/") != 1 or hub_id.startswith(("/", ".")):
        raise DataError(f"dataset.hub_id={hub_id!r} is not a hub id: give owner/name, e.g. flaviagiammarino/vqa-rad")
    try:
        return Path(snapshot_download(hub_id, repo_type="dataset", local_files_only=True))
    except Exception:  # noqa: BLE001 - LocalEntryNotFoundError and friends: not in the cache
        raise DataError(
            f"hub dataset {hub_id} is not in the local cache {constants.HF_HUB_CACHE}: download it once with "
            f"`hf download {hub_id} --repo-type dataset` (or set HF_HUB_CACHE to where it is), or give dataset.root=DIR"
        ) from None
