"""Checks between loading records and training on them: missing images, text lengths, summaries.

* :func:`drop_missing_images` — before any model is built: a record whose image file is absent is
  an error naming the file, or (``dataset.skip_bad_images=true``) is dropped and counted.
  Unreadable (corrupt) files are found while training, by :class:`medft.data.datamodule.RecordDataset`.
* :func:`count_truncated` — how many questions / reports are longer than the model's maximum.
* :func:`summarize` — what ``medft data`` prints: per split n, CLOSED / OPEN, distinct images and
  missing or unreadable images.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medft.data.drops import ANSWER_TYPES_KEY
from medft.data.images import load_rgb, set_max_pixels
from medft.util.errors import DataError

if TYPE_CHECKING:
    from medft.models.base import MedVLM

Splits = dict[str, list[dict[str, Any]]]


def drop_missing_images(splits: Splits, skip: bool) -> tuple[Splits, dict[str, int]]:
    """Return splits without records whose image is missing, and ``{split: n_dropped}``.

    With ``skip`` false the first missing image is a DataError (with how many are missing).
    """
    exists: dict[str, bool] = {}
    out: Splits = {}
    dropped: dict[str, int] = {}
    for split, records in splits.items():
        keep = []
        for rec in records:
            for path in rec.get("views") or [rec["image"]]:
                if path not in exists:
                    exists[path] = _present(path)
            if all(exists[p] for p in rec.get("views") or [rec["image"]]):
                keep.append(rec)
        dropped[split] = len(records) - len(keep)
        out[split] = keep
    missing = sorted(p for p, ok in exists.items() if not ok)
    if missing and not skip:
        n = sum(dropped.values())
        what = "is empty (0 bytes)" if Path(missing[0]).is_file() else "not found"
        raise DataError(
            f"image {missing[0]} {what} ({len(missing)} image(s) missing or empty, used by {n} sample(s)): restore the "
            "images, or set dataset.skip_bad_images=true to skip those samples"
        )
    for split in ("train", "test"):
        if split in out and splits.get(split) and not out[split]:
            raise DataError(f"every image of the {split} split is missing: check dataset.root")
    return out, dropped


def allowed_roots(dataset_cfg: Any) -> list[Path]:
    """Where a dataset's images may lie: ``dataset.root`` (and the Parquet image cache), symlinks resolved."""
    from medft.data.common import data_roots
    from medft.data.sources import resolved_root

    roots = data_roots(resolved_root(dataset_cfg))  # a hub snapshot's files are symlinks into its blobs/
    load = dataset_cfg.get("load") or {}
    if load.get("cache_dir"):
        roots.append(Path(os.path.realpath(Path(str(load.get("cache_dir"))).expanduser())))
    return roots


def drop_outside_root(splits: Splits, roots: list[Path], file: Any = None) -> tuple[Splits, int]:
    """Drop (and count) the records whose image path, symlinks resolved, leaves every one of ``roots``.

    Image paths come from annotation files, which are data: ``../../x.png``, an absolute path or a
    symlink out of the dataset folder is never read. Says how many and one example on stdout.
    """
    inside: dict[str, bool] = {}

    def ok(path: str) -> bool:
        if path not in inside:
            real = Path(os.path.realpath(path))
            inside[path] = any(real == r or real.is_relative_to(r) for r in roots)
        return inside[path]

    out = {split: [r for r in records if all(ok(p) for p in r.get("views") or r.get("images") or [r["image"]])]
           for split, records in splits.items()}
    n = sum(len(splits[k]) - len(out[k]) for k in splits)
    for split in ("train", "test"):
        if splits.get(split) and not out.get(split):
            example = next(p for p, good in inside.items() if not good)
            raise DataError(
                f"every image of the {split} split lies outside dataset.root {roots[0]} (e.g. {example}): "
                "annotation files may only name images inside the dataset root"
            )
    if n:
        example = next(p for p, good in inside.items() if not good)
        print(
            f"dropped {n} sample(s) whose image path leaves dataset.root {roots[0]} (e.g. {example} -> "
            f"{os.path.realpath(example)}): annotation files may only name images inside the dataset root",
            file=file,
        )
    return out, n


def _present(path: str) -> bool:
    """The image file exists and is not empty (a 0-byte file is found here, before training)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return os.path.isfile(path) and st.st_size > 0


def count_truncated(splits: Splits, tokenizer: Any, limits: dict[str, int]) -> dict[str, int]:
    """``{field: n}``: records (all splits) whose ``field`` has more tokens than its limit."""
    out = {}
    # medft counts and reports truncation itself: transformers' "Token indices sequence length is longer" is redundant
    getattr(tokenizer, "deprecation_warnings", {})["sequence-length-is-longer-than-the-specified-maximum"] = True
    for field, limit in limits.items():
        texts = [r[field] for records in splits.values() for r in records if field in r]
        if not texts:
            continue
        lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]]
        out[field] = sum(n > limit for n in lengths)
    return out


def summarize(splits: Splits, decode: bool = True) -> dict[str, dict[str, int]]:
    """Per split: n, closed / open (VQA), distinct images, and missing or unreadable images.

    ``decode`` opens every image fully (finds truncated files); otherwise only existence is checked.
    """
    images = {split: {p for r in records for p in r.get("images", [r["image"]])} for split, records in splits.items()}
    every = sorted(set().union(*images.values()))
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # Pillow decodes outside the GIL
        status = dict(zip(every, pool.map(_readable if decode else _exists, every, chunksize=64)))
    out = {}
    for split, records in splits.items():
        row: dict[str, int] = {"n": len(records)}
        if records and "answer_type" in records[0]:
            kinds = Counter(r["answer_type"] for r in records)
            row.update(closed=kinds.get("CLOSED", 0), open=kinds.get("OPEN", 0))
        row.update(images=len(images[split]), missing_images=sum(not status[p] for p in images[split]))
        out[split] = row
    return out


def _exists(path: str) -> bool:
    return _present(path)


def _readable(path: str) -> bool:
    try:
        load_rgb(path)
    except DataError:
        return False
    return True


# --- the steps medft train / medft eval run ---------------------------------------------------


def prepare_splits(splits: Splits, dataset_cfg: Any) -> tuple[Splits, dict[str, int]]:
    """Missing images (error or skipped per ``dataset.skip_bad_images``); returns the data stats."""
    from medft.data.drops import drop_lines
    from medft.data.drops import stats as drop_stats

    skip = bool(dataset_cfg.get("skip_bad_images", False))
    set_max_pixels(dataset_cfg.get("max_image_pixels"), dataset_cfg.get("max_batch_pixels"))
    loaded_stats = drop_stats(splits)  # what the loader dropped or found (data/dropped/<reason>, data/found/<reason>)
    for line in drop_lines(splits):
        print(line)
    if loaded_stats.get(ANSWER_TYPES_KEY):
        print(f"CLOSED / OPEN: {loaded_stats[ANSWER_TYPES_KEY]}")
    splits, outside = drop_outside_root(splits, allowed_roots(dataset_cfg))
    splits, dropped = drop_missing_images(splits, skip)
    n = sum(dropped.values())
    if n:
        print(f"skipping {n} sample(s) whose image is missing or empty (dataset.skip_bad_images=true)")
    return splits, {**loaded_stats, "data/skipped_missing_images": n, "data/dropped/outside_root": loaded_stats.get("data/dropped/outside_root", 0) + outside,
                    "data/dropped/missing_image": loaded_stats.get("data/dropped/missing_image", 0) + n}


def check_model_fits(net: MedVLM, dataset_cfg: Any, splits: Splits) -> dict[str, int]:
    """The model does the dataset's task; count (and say) how many texts will be truncated."""
    net.check_dataset(dataset_cfg)
    out = {}
    limits = net.text_limits
    total = sum(len(v) for v in splits.values())
    for field, n in count_truncated(splits, net.tokenizer, limits).items():
        out[f"data/truncated_{field}"] = n
        if n:
            print(f"truncating {n} of {total} {field}s (all splits) to the model's maximum of {limits[field]} tokens")
    return out


def finish_data_stats(stats: dict[str, int], datamodule: Any) -> dict[str, int]:
    """Add the samples skipped for unreadable images during the run, and say so at the end."""
    bad = getattr(datamodule, "bad_images", {}) or {}
    stats = {**stats, "data/skipped_unreadable_images": len(bad), "data/dropped/unreadable_image": len(bad)}
    if bad:
        first = next(iter(bad.values()))
        print(f"skipped {len(bad)} sample(s) whose image is unreadable, e.g. {first} (dataset.skip_bad_images=true)")
    skipped = stats.get("data/skipped_missing_images", 0) + len(bad)
    if skipped:
        print(f"skipped {skipped} sample(s) with a missing or unreadable image in all")
    return stats
