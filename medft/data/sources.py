"""Dataset entry points named by ``configs/dataset/*.yaml`` (``dataset.load._target_``).

Each returns ``{"train": [...], "val": [...], "test": [...]}`` lists of records (see
``medft.data.common`` for the record fields). Nothing here opens an image or builds a model.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

from medft.data.demo import ensure_demo
from medft.data.drops import Drops, carry, find_duplicates, loaded
from medft.data.vqa_rad import load_vqa_rad
from medft.errors import ConfigError, DataError
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
    return carry(splits, {**splits, "train": sorted(train[:keep], key=lambda r: r["id"])})


def other_vqa_layout(
    root: Path, name: str, title: str, val_fraction: float, split_seed: int, cache_dir: str | None, lang: str | None = None
) -> Splits | None:
    """LLaVA-Med's train.json/test.json, or tables (the hub's Parquet, Arrow, a save_to_disk folder), or None."""
    from medft.data.answer_types import FROM_FILE, YES_NO
    from medft.data.common import finish
    from medft.data.llava import is_llava, load_llava
    from medft.data.tables import has_tables, load_table_vqa

    drops = Drops()
    if is_llava(root):
        splits, rule, layout = load_llava(root, drops), FROM_FILE, "LLaVA-Med train.json/test.json"
    elif has_tables(root):
        cache = Path(cache_dir).expanduser() if cache_dir else root / ".medft_images"
        if cache_dir:
            ensure_dir(cache_dir, "the image cache (MEDFT_CACHE_DIR)", CACHE_FIX)
        splits, typed = load_table_vqa(root, cache / name, drops, lang, Path(cache_dir).expanduser() if cache_dir else None)
        rule, layout = (FROM_FILE if typed else YES_NO), "tables (Parquet / Arrow / save_to_disk) read with datasets"
    else:
        return None
    return loaded(finish(splits, val_fraction, split_seed, f"{title} ({root})"), drops, rule, layout)


def demo(root: str, val_fraction: float = 0.1, split_seed: int = 0, train_fraction: float = 1.0,
         cache_dir: str | None = None, **generator: Any) -> Splits:
    """The built-in synthetic VQA set: generated into ``root`` on first use, read as VQA-RAD. A ``root``
    outside ``cache_dir`` (paths.cache_dir) is never generated: it must exist (a mistyped path is an error)."""
    path = Path(root).expanduser().resolve()
    if cache_dir and not path.exists() and not path.is_relative_to(Path(cache_dir).expanduser().resolve()):
        raise DataError(
            f"dataset.root={root} does not exist: a demo set is generated only under paths.cache_dir "
            f"({cache_dir}); leave dataset.root at its default, or point it at an existing demo set"
        )
    ensure_dir(root, "the demo dataset's folder", CACHE_FIX)
    ensure_demo(Path(root).expanduser(), **generator)
    return vqa_rad(root, val_fraction, split_seed, train_fraction)


def vqa_rad(
    root: str, val_fraction: float = 0.1, split_seed: int = 0, train_fraction: float = 1.0, cache_dir: str | None = None
) -> Splits:
    """VQA-RAD in any layout it is downloaded in (auto-detected): the OSF release, the split layout,
    the hub's Parquet copy, LLaVA-Med's files, a save_to_disk folder."""
    from medft.data.answer_types import FROM_FILE
    from medft.data.vqa_rad import OSF_JSON, SPLIT_FILES

    path = Path(root).expanduser()
    classic = (path / SPLIT_FILES["train"]).is_file() or (path / OSF_JSON).is_file()
    if path.is_dir() and not classic:
        other = other_vqa_layout(path, "vqa_rad", "VQA-RAD", val_fraction, split_seed, cache_dir)
        if other is not None:
            return subsample_train(other, train_fraction, split_seed)
    stats: dict[str, Any] = {}
    drops = Drops()
    splits = load_vqa_rad(path, val_fraction=val_fraction, seed=split_seed, stats=stats, drops=drops)
    splits = loaded(splits, drops, FROM_FILE, stats["layout"])
    if stats["skipped_empty"] or stats["skipped_no_image"] or stats["skipped_wrong_type"]:
        log.warning(
            f"dataset {root}: skipped {stats['skipped_empty']} record(s) with an empty question or answer, "
            f"{stats['skipped_no_image']} without an image name and {stats['skipped_wrong_type']} whose question or "
            "answer is not text (a list, mapping or true/false)"
        )
    return subsample_train(splits, train_fraction, split_seed)


def slake(
    root: str, lang: str = "en", val_fraction: float = 0.1, split_seed: int = 0, train_fraction: float = 1.0,
    cache_dir: str | None = None,
) -> Splits:
    """SLAKE: train.json / validate.json (or validation.json) / test.json + imgs/; ``lang`` en, zh or all;
    or the hub's Parquet copies, LLaVA-Med's files, a save_to_disk folder."""
    from medft.data.answer_types import FROM_FILE
    from medft.data.slake import LANGS, load_slake

    if lang not in LANGS:
        raise ConfigError(f"dataset.lang={lang!r} is not known; use one of {list(LANGS)}")
    path = Path(root).expanduser()
    if path.is_dir():
        other = other_vqa_layout(path, "slake", "SLAKE", val_fraction, split_seed, cache_dir, lang)
        if other is not None:
            return subsample_train(other, train_fraction, split_seed)
    drops = Drops()
    splits = loaded(load_slake(root, lang, val_fraction, split_seed, drops), drops, FROM_FILE, "SLAKE json + imgs/")
    return subsample_train(splits, train_fraction, split_seed)


def path_vqa(
    root: str, val_fraction: float = 0.1, split_seed: int = 0, train_fraction: float = 1.0, cache_dir: str | None = None
) -> Splits:
    """PathVQA: the original pickles + images/, or the Parquet release (images cached in ``cache_dir``)."""
    from medft.data.answer_types import YES_NO
    from medft.data.path_vqa import load_path_vqa

    path = Path(root).expanduser()
    if path.is_dir() and not (path / "qas").is_dir():
        other = other_vqa_layout(path, "path_vqa", "PathVQA", val_fraction, split_seed, cache_dir)
        if other is not None:
            return subsample_train(other, train_fraction, split_seed)
    drops = Drops()
    splits = loaded(load_path_vqa(root, val_fraction, split_seed, drops), drops, YES_NO, "PathVQA pickles + images/")
    return subsample_train(splits, train_fraction, split_seed)


def r2gen(
    root: str, name: str, val_fraction: float = 0.1, split_seed: int = 0, train_fraction: float = 1.0, views: str = "first",
    report_section: str = "findings",
) -> Splits:
    """IU X-ray / MIMIC-CXR report generation: an R2Gen-style annotation.json + images/, MIMIC-CXR-JPG as
    PhysioNet ships it (split / metadata CSVs, files/, the reports), or IU X-ray's Kaggle / OpenI CSVs."""
    from medft.data.common import finish
    from medft.data.report_gen import (
        NAMES, SECTIONS, VIEWS, is_iu_csv, is_mimic_official, load_iu_csv, load_mimic_official, load_r2gen,
    )

    path = Path(root).expanduser()
    if path.is_dir() and not (path / "annotation.json").is_file() and (is_mimic_official(path) or is_iu_csv(path)):
        if report_section not in SECTIONS:
            raise ConfigError(f"dataset.report_section={report_section!r} is not known; use one of {list(SECTIONS)}")
        if views not in VIEWS:
            raise ConfigError(f"dataset.views={views!r} is not known; use one of {list(VIEWS)}")
        drops = Drops()
        path = path.resolve()
        if is_mimic_official(path):
            splits, layout = load_mimic_official(path, views, report_section, drops), "MIMIC-CXR-JPG (PhysioNet)"
        else:
            splits, layout = load_iu_csv(path, views, report_section, split_seed, drops), "IU X-ray CSVs (Kaggle / OpenI)"
        out = finish(splits, val_fraction, split_seed, f"{NAMES.get(name, name)} ({path})")
        return subsample_train(loaded(out, drops, "", f"{layout}, report section: {report_section}"), train_fraction, split_seed)
    return subsample_train(loaded(load_r2gen(root, name, val_fraction, split_seed, views), None, "", "R2Gen annotation.json"),
                           train_fraction, split_seed)


def load_splits(dataset_cfg: Any, **overrides: Any) -> Splits:
    """Call ``dataset.load`` (its ``_target_`` is one of the functions above) with ``overrides``.

    A user error inside the loader (DataError, ConfigError) comes out as itself, not wrapped in
    Hydra's InstantiationException, so the CLI prints its one line.
    """
    import hydra
    from hydra.errors import InstantiationException

    from omegaconf import OmegaConf

    from medft.errors import MedftError

    hub_id = dataset_cfg.get("hub_id") if "hub_id" in dataset_cfg else None
    if hub_id:  # the root is the hub dataset's folder in the local cache (never fetched)
        overrides.setdefault("root", str(resolved_root(dataset_cfg)))
    elif "root" in dataset_cfg and (OmegaConf.is_missing(dataset_cfg, "root") or dataset_cfg.root in (None, "", "???")):
        name = dataset_cfg.get("name", "the dataset")
        raise ConfigError(
            f"dataset.root is not set: add dataset.root=DIR, the folder holding your copy of {name} "
            f"(or set local.data.{name} in configs/local/default.yaml), or dataset.hub_id=owner/name for a copy "
            "in the local Hugging Face cache"
        )
    try:
        splits = hydra.utils.call(dataset_cfg.load, **overrides)
    except InstantiationException as err:
        if isinstance(err.__cause__, MedftError):
            raise err.__cause__ from None
        raise
    if not isinstance(splits, dict) or not hasattr(splits, "drops"):
        splits = loaded(splits)
    types_from = dataset_cfg.get("answer_types_from") if "answer_types_from" in dataset_cfg else None
    if types_from and dataset_cfg.get("task", "vqa") == "vqa":
        from medft.data.answer_types import join_answer_types

        splits.answer_types = join_answer_types(splits, types_from)
    return find_duplicates(splits, remove=bool(dataset_cfg.get("dedupe", False)))


def resolved_root(dataset_cfg: Any) -> Path:
    """``dataset.root``, or the local cache folder of ``dataset.hub_id`` when that is given."""
    from omegaconf import OmegaConf

    hub_id = dataset_cfg.get("hub_id") if "hub_id" in dataset_cfg else None
    if hub_id:
        from medft.data.tables import hub_snapshot

        return hub_snapshot(str(hub_id))
    if OmegaConf.is_missing(dataset_cfg, "root"):
        return Path("???")
    return Path(str(dataset_cfg.root)).expanduser()
