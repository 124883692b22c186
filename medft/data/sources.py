"""Dataset entry points named by ``configs/dataset/*.yaml`` (``dataset.load._target_``).

Each returns ``{"train": [...], "val": [...], "test": [...]}`` lists of records (see
``medft.data.common`` for the record fields). Nothing here opens an image or builds a model.
Each lists the layouts (:mod:`medft.data.layouts`) its dataset comes in, first match first
(``+dataset.load.layouts=[...]`` overrides the list); :func:`load_layout` reads the first one found.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Sequence

from medft.data.common import check_root
from medft.data.demo import ensure_demo
from medft.data.drops import Ask, Loaded, carry, find_duplicates, loaded
from medft.data.layouts import LAYOUTS
from medft.data.report_gen import NAMES
from medft.data.slake import LANGS as SLAKE_LANGS
from medft.data.tables import CACHE_FIX
from medft.util.errors import ConfigError, DataError
from medft.util.files import ensure_dir

Splits = dict[str, list[dict[str, Any]]]


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


def load_layout(root: str, layouts: Sequence[str], ask: Ask, train_fraction: float = 1.0) -> Splits:
    """The splits at ``root`` in the first of ``layouts`` (names in :data:`medft.data.layouts.LAYOUTS`)
    whose ``detect`` says yes, with the layout they were read in; then ``train_fraction`` of train."""
    layouts = [layouts] if isinstance(layouts, str) else list(layouts)  # dataset.load.layouts=tables: one name
    unknown = [name for name in layouts if name not in LAYOUTS]
    if unknown:
        raise ConfigError(f"dataset.load.layouts: {unknown} not known; use some of {list(LAYOUTS)}")
    tried = [LAYOUTS[name] for name in layouts]
    expected = ", or ".join(layout.about for layout in tried)
    path = Path(root).expanduser()
    check_root(path, expected)
    layout = next((layout for layout in tried if layout.detect(path)), None)
    if layout is None:
        raise DataError(f"no {ask.title} dataset in {path}: expected {expected}; point dataset.root at the folder "
                        "holding one of them")
    splits = layout.load(path, ask)
    if not isinstance(splits, Loaded):  # plain splits: nothing dropped, no CLOSED / OPEN rule to report
        splits = loaded(splits)
    splits.layout = splits.layout or layout.name
    return subsample_train(splits, train_fraction, ask.split_seed)


def demo(root: str, val_fraction: float = 0.1, split_seed: int = 0, train_fraction: float = 1.0,
         cache_dir: str | None = None, **generator: Any) -> Splits:
    """The built-in synthetic VQA set: generated into ``root`` on first use, read as VQA-RAD. A ``root``
    outside ``cache_dir`` (paths.cache_dir) is never generated: it must exist (a mistyped path is an error)."""
    ensure_demo_root(root, cache_dir, generator)
    return vqa_rad(root, val_fraction, split_seed, train_fraction)


def demo_report(root: str, name: str, val_fraction: float = 0.1, split_seed: int = 0, train_fraction: float = 1.0,
                cache_dir: str | None = None, **generator: Any) -> Splits:
    """The built-in synthetic report set (``task="report"`` of :mod:`medft.data.demo`): generated as the VQA
    demo is (same guard on ``root``), read as IU X-ray (R2Gen's annotation.json)."""
    ensure_demo_root(root, cache_dir, {**generator, "task": "report"})
    return r2gen(root, name, val_fraction, split_seed, train_fraction, layouts=("r2gen",))


def ensure_demo_root(root: str, cache_dir: str | None, generator: dict[str, Any]) -> None:
    """Generate the demo set of ``generator``'s parameters into ``root`` unless it is there; a ``root`` outside
    ``cache_dir`` (paths.cache_dir) is never generated: it must exist (a mistyped path is an error)."""
    path = Path(root).expanduser().resolve()
    if cache_dir and not path.exists() and not path.is_relative_to(Path(cache_dir).expanduser().resolve()):
        raise DataError(
            f"dataset.root={root} does not exist: a demo set is generated only under paths.cache_dir "
            f"({cache_dir}); leave dataset.root at its default, or point it at an existing demo set"
        )
    ensure_dir(root, "the demo dataset's folder", CACHE_FIX)
    ensure_demo(Path(root).expanduser(), **generator)


def vqa_rad(
    root: str, val_fraction: float = 0.1, split_seed: int = 0, train_fraction: float = 1.0, cache_dir: str | None = None,
    layouts: Sequence[str] = ("vqa_rad", "llava_med", "tables"),
) -> Splits:
    """VQA-RAD in any layout it is downloaded in (auto-detected): the OSF release, the split layout,
    the hub's Parquet copy, LLaVA-Med's files, a save_to_disk folder."""
    ask = Ask("vqa_rad", "VQA-RAD", val_fraction, split_seed, cache_dir)
    return load_layout(root, layouts, ask, train_fraction)


def slake(
    root: str, lang: str = "en", val_fraction: float = 0.1, split_seed: int = 0, train_fraction: float = 1.0,
    cache_dir: str | None = None, layouts: Sequence[str] = ("llava_med", "tables", "slake"),
) -> Splits:
    """SLAKE: train.json / validate.json (or validation.json) / test.json + imgs/; ``lang`` en, zh or all;
    or the hub's Parquet copies, LLaVA-Med's files, a save_to_disk folder."""
    if lang not in SLAKE_LANGS:
        raise ConfigError(f"dataset.lang={lang!r} is not known; use one of {list(SLAKE_LANGS)}")
    ask = Ask("slake", "SLAKE", val_fraction, split_seed, cache_dir, lang=lang)
    return load_layout(root, layouts, ask, train_fraction)


def path_vqa(
    root: str, val_fraction: float = 0.1, split_seed: int = 0, train_fraction: float = 1.0, cache_dir: str | None = None,
    layouts: Sequence[str] = ("path_vqa", "llava_med", "tables"),
) -> Splits:
    """PathVQA: the original pickles + images/, or the Parquet release (images cached in ``cache_dir``)."""
    ask = Ask("path_vqa", "PathVQA", val_fraction, split_seed, cache_dir)
    return load_layout(root, layouts, ask, train_fraction)


def r2gen(
    root: str, name: str, val_fraction: float = 0.1, split_seed: int = 0, train_fraction: float = 1.0, views: str = "first",
    report_section: str = "findings", layouts: Sequence[str] = ("r2gen", "mimic_cxr_jpg", "iu_xray_csv"),
) -> Splits:
    """IU X-ray / MIMIC-CXR report generation: an R2Gen-style annotation.json + images/, MIMIC-CXR-JPG as
    PhysioNet ships it (split / metadata CSVs, files/, the reports), or IU X-ray's Kaggle / OpenI CSVs."""
    ask = Ask(name, NAMES.get(name, name), val_fraction, split_seed, views=views, report_section=report_section)
    return load_layout(root, layouts, ask, train_fraction)


def load_splits(dataset_cfg: Any, **overrides: Any) -> Splits:
    """Call ``dataset.load`` (its ``_target_`` is one of the functions above) with ``overrides``.

    A user error inside the loader (DataError, ConfigError) comes out as itself, not wrapped in
    Hydra's InstantiationException, so the CLI prints its one line.
    """
    import hydra
    from hydra.errors import InstantiationException
    from omegaconf import OmegaConf

    from medft.util.errors import MedftError

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
