"""Radiology report generation sets in the R2Gen layout (Chen et al., EMNLP 2020)::

    root/annotation.json      {"train": [...], "val": [...], "test": [...]}
    root/images/...

Each record is ``{"id", "report", "image_path": [..], "split"}``; MIMIC-CXR's also carry
``study_id`` and ``subject_id`` and point at ``pXX/pSUBJECT/sSTUDY/<dicom>.jpg``, IU X-ray's at two
views ``CXR<N>_IM-<M>/0.png`` and ``1.png``. Records become ``{"id", "image", "images", "report"}``
with ``image`` the first view and ``views`` the ones the model sees.
"""

from __future__ import annotations

from pathlib import Path

from medft.data.common import Splits, check_root, finish, read_json, report_record, text
from medft.errors import ConfigError, DataError

ANNOTATION = "annotation.json"
IMAGE_DIR = "images"
NAMES = {"iu_xray": "IU X-ray", "mimic_cxr": "MIMIC-CXR"}


VIEWS = ("first", "all")


def load_r2gen(
    root: str | Path, name: str = "iu_xray", val_fraction: float = 0.1, seed: int = 0, views: str = "first"
) -> Splits:
    """``{"train", "val", "test"}`` report records from an R2Gen-style ``annotation.json``.

    ``views``: ``first`` (the model sees a study's first image) or ``all`` (all of them side by
    side, e.g. IU X-ray's frontal and lateral view, as R2Gen encodes both).
    """
    if views not in VIEWS:
        raise ConfigError(f"dataset.views={views!r} is not known; use one of {list(VIEWS)}")
    title = NAMES.get(name, name)
    expected = f"{ANNOTATION} with train/val/test lists + {IMAGE_DIR}/ ({title}, R2Gen layout)"
    root = check_root(root, expected)
    path = root / ANNOTATION
    if not path.is_file():
        raise DataError(f"no {title} dataset in {root}: {ANNOTATION} missing; expected {expected}")
    if not (root / IMAGE_DIR).is_dir():
        raise DataError(f"found {path} but no image folder {root / IMAGE_DIR}: expected {expected}")
    data = read_json(path)
    if not isinstance(data, dict) or not any(isinstance(data.get(s), list) for s in ("train", "test")):
        raise DataError(f"annotation file {path} must hold {{\"train\": [...], \"val\": [...], \"test\": [...]}}")
    splits = {}
    for split in ("train", "val", "test"):
        rows = data.get(split) or []
        records = []
        for i, r in enumerate(rows):
            if not isinstance(r, dict):
                continue
            paths = r.get("image_path") or []
            paths = [paths] if isinstance(paths, str) else paths
            rec = report_record(
                text(r.get("id")) or f"{split}-{i}",
                [root / IMAGE_DIR / text(p) for p in paths if text(p)],
                r.get("report"),
                views,
            )
            if rec is not None:
                records.append(rec)
        splits[split] = records
    return finish(splits, val_fraction, seed, f"{title} ({root})")
