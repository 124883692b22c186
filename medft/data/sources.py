"""Dataset entry points named by ``configs/dataset/*.yaml`` (``dataset.load._target_``).

Each returns ``{"train": [...], "val": [...], "test": [...]}`` lists of records (see
``medft.data.vqa_rad`` for the record fields). Nothing here opens an image or builds a model.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

from medft.data.demo import ensure_demo
from medft.data.vqa_rad import load_vqa_rad
from medft.errors import ConfigError
from medft.files import ensure_dir

Splits = dict[str, list[dict[str, Any]]]
log = logging.getLogger(__name__)
CACHE_FIX = "set MEDFT_CACHE_DIR (or paths.cache_dir) to a folder you can write"


def subsample_train(splits: Splits, fraction: float, seed: int) -> Splits:
    """Keep a seeded ``fraction`` of the train split (data-scaling sweeps); val and test untouched."""
    if not 0.0 < float(fraction) <= 1.0:
        raise ConfigError(f"dataset.train_fraction={fraction} must be in (0, 1]")
    if fraction == 1.0:
        return splits
    train = list(splits["train"])
    random.Random(seed).shuffle(train)
    keep = max(1, round(len(train) * fraction))
    return {**splits, "train": sorted(train[:keep], key=lambda r: r["id"])}


def demo(root: str, val_fraction: float = 0.1, split_seed: int = 0, train_fraction: float = 1.0, **generator: Any) -> Splits:
    """The built-in synthetic VQA set: generated into ``root`` on first use, read as VQA-RAD."""
    ensure_dir(root, "the demo dataset's folder", CACHE_FIX)
    ensure_demo(Path(root).expanduser(), **generator)
    return vqa_rad(root, val_fraction, split_seed, train_fraction)


def vqa_rad(root: str, val_fraction: float = 0.1, split_seed: int = 0, train_fraction: float = 1.0) -> Splits:
    """VQA-RAD in either published layout (auto-detected)."""
    stats: dict[str, Any] = {}
    splits = load_vqa_rad(Path(root).expanduser(), val_fraction=val_fraction, seed=split_seed, stats=stats)
    if stats["skipped_empty"] or stats["skipped_no_image"] or stats["skipped_wrong_type"]:
        log.warning(
            f"dataset {root}: skipped {stats['skipped_empty']} record(s) with an empty question or answer, "
            f"{stats['skipped_no_image']} without an image name and {stats['skipped_wrong_type']} whose question or "
            "answer is not text (a list, mapping or true/false)"
        )
    return subsample_train(splits, train_fraction, split_seed)


def slake(root: str, lang: str = "en", val_fraction: float = 0.1, split_seed: int = 0, train_fraction: float = 1.0) -> Splits:
    """SLAKE: train.json / validate.json (or validation.json) / test.json + imgs/; ``lang`` en, zh or all."""
    from medft.data.slake import load_slake

    return subsample_train(load_slake(root, lang, val_fraction, split_seed), train_fraction, split_seed)


def path_vqa(
    root: str, val_fraction: float = 0.1, split_seed: int = 0, train_fraction: float = 1.0, cache_dir: str | None = None
) -> Splits:
    """PathVQA: the original pickles + images/, or the Parquet release (images cached in ``cache_dir``)."""
    from medft.data.path_vqa import load_path_vqa

    if cache_dir:
        ensure_dir(cache_dir, "the image cache (MEDFT_CACHE_DIR)", CACHE_FIX)

    return subsample_train(load_path_vqa(root, val_fraction, split_seed, cache_dir), train_fraction, split_seed)


def r2gen(
    root: str, name: str, val_fraction: float = 0.1, split_seed: int = 0, train_fraction: float = 1.0, views: str = "first"
) -> Splits:
    """IU X-ray / MIMIC-CXR report generation from an R2Gen-style annotation.json + images/."""
    from medft.data.reports import load_r2gen

    return subsample_train(load_r2gen(root, name, val_fraction, split_seed, views), train_fraction, split_seed)


def load_splits(dataset_cfg: Any, **overrides: Any) -> Splits:
    """Call ``dataset.load`` (its ``_target_`` is one of the functions above) with ``overrides``.

    A user error inside the loader (DataError, ConfigError) comes out as itself, not wrapped in
    Hydra's InstantiationException, so the CLI prints its one line.
    """
    import hydra
    from hydra.errors import InstantiationException

    from omegaconf import OmegaConf

    from medft.errors import MedftError

    if "root" in dataset_cfg and (OmegaConf.is_missing(dataset_cfg, "root") or dataset_cfg.root in (None, "", "???")):
        name = dataset_cfg.get("name", "the dataset")
        raise ConfigError(
            f"dataset.root is not set: add dataset.root=DIR, the folder holding your copy of {name} "
            f"(or set local.data.{name} in configs/local/default.yaml)"
        )
    try:
        return hydra.utils.call(dataset_cfg.load, **overrides)
    except InstantiationException as err:
        if isinstance(err.__cause__, MedftError):
            raise err.__cause__ from None
        raise
