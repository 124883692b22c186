"""Radiology report generation sets in the R2Gen layout (Chen et al., EMNLP 2020)::

    root/annotation.json      {"train": [...], "val": [...], "test": [...]}
    root/images/...

Each record is ``{"id", "report", "image_path": [..], "split"}``; MIMIC-CXR's also carry
``study_id`` and ``subject_id`` and point at ``pXX/pSUBJECT/sSTUDY/<dicom>.jpg``, IU X-ray's at two
views ``CXR<N>_IM-<M>/0.png`` and ``1.png``. Records become ``{"id", "image", "images", "report"}``
with ``image`` the first view and ``views`` the ones the model sees.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from medft.data.common import Splits, check_inside, check_root, data_roots, finish, is_inside, read_json, report_record, text
from medft.data.drops import Ask, Drops, Loaded, loaded
from medft.util.errors import ConfigError, DataError

ANNOTATION = "annotation.json"
IMAGE_DIR = "images"
NAMES = {"iu_xray": "IU X-ray", "mimic_cxr": "MIMIC-CXR"}
VIEWS = ("first", "all")
ABOUT = f"{ANNOTATION} with train/val/test lists + {IMAGE_DIR}/ (R2Gen layout)"


def is_r2gen(root: Path) -> bool:
    return (root / ANNOTATION).is_file()


def read_r2gen(root: Path, ask: Ask) -> Loaded:
    """The ``r2gen`` layout of :mod:`medft.data.layouts` (its loader leaves nothing out it would count)."""
    return loaded(load_r2gen(root, ask.name, ask.val_fraction, ask.split_seed, ask.views), None, "", "R2Gen annotation.json")


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


# --- the official releases: MIMIC-CXR-JPG (PhysioNet) and IU X-ray's CSVs (Kaggle / OpenI) ---------

SECTIONS = ("findings", "impression", "both")
MIMIC_SPLIT = "mimic-cxr-2.0.0-split.csv.gz"
MIMIC_META = "mimic-cxr-2.0.0-metadata.csv.gz"
IU_REPORTS = "indiana_reports.csv"
IU_PROJECTIONS = "indiana_projections.csv"
FRONTAL = ("PA", "AP", "FRONTAL")
MIMIC_ABOUT = f"{MIMIC_SPLIT} + files/pXX/pSUBJECT/sSTUDY/ (MIMIC-CXR-JPG as PhysioNet ships it)"
IU_ABOUT = f"{IU_REPORTS} + {IU_PROJECTIONS} + images (IU X-ray's Kaggle / OpenI CSVs)"
_HEADER = re.compile(r"^\s*([A-Z][A-Z &/]{2,}):", re.MULTILINE)


def report_sections(text_: str) -> dict[str, str]:
    """A free-text radiology report's ``FINDINGS:`` / ``IMPRESSION:`` sections (lower-case keys), whitespace joined."""
    heads = list(_HEADER.finditer(text_))
    out: dict[str, str] = {}
    for k, m in enumerate(heads):
        end = heads[k + 1].start() if k + 1 < len(heads) else len(text_)
        body = " ".join(text_[m.end():end].split())
        if body:
            out[m.group(1).strip().lower()] = body
    return out


def pick_section(findings: str, impression: str, section: str) -> str:
    if section == "findings":
        return findings
    if section == "impression":
        return impression
    return " ".join(p for p in (findings, impression) if p) if findings and impression else ""


def _read_csv(path: Path) -> list[dict[str, str]]:
    import csv
    import gzip

    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8-sig", newline="") as f:
            return list(csv.DictReader(f))
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {path}: {exc}: restore the original file") from None


REPORT_BYTES = 1 << 20  # one study's free-text report: a few KB


def read_report(path: Path) -> str:
    """A report text file (at most REPORT_BYTES: more is not a report), undecodable bytes replaced."""
    with open(path, "rb") as fh:
        data = fh.read(REPORT_BYTES + 1)
    if len(data) > REPORT_BYTES:
        raise DataError(f"report file {path} is over {REPORT_BYTES:,} bytes: not a report; restore the original file")
    return data.decode("utf-8", errors="replace")


def is_mimic_official(root: Path) -> bool:
    return (root / MIMIC_SPLIT).is_file()


def load_mimic_official(root: Path, views: str, section: str, drops) -> dict[str, list[dict]]:
    """MIMIC-CXR-JPG as PhysioNet ships it: the split CSV, the metadata CSV (ViewPosition), the JPGs under
    files/pXX/pSUBJECT/sSTUDY/ and the reports files/pXX/pSUBJECT/sSTUDY.txt (or mimic-cxr-reports/files/...)."""
    rows = _read_csv(check_inside(root / MIMIC_SPLIT, root))
    if rows and not {"dicom_id", "study_id", "subject_id", "split"} <= set(rows[0]):
        raise DataError(f"{root / MIMIC_SPLIT} has columns {sorted(rows[0])}; expected dicom_id, study_id, subject_id, split")
    view_of = {}
    if (root / MIMIC_META).is_file():
        view_of = {r.get("dicom_id", ""): text(r.get("ViewPosition")).upper() for r in _read_csv(check_inside(root / MIMIC_META, root))}
    studies: dict[tuple[str, str, str], list[str]] = {}
    for r in rows:
        split = {"validate": "val", "validation": "val"}.get(text(r["split"]).lower(), text(r["split"]).lower())
        studies.setdefault((split, text(r["subject_id"]), text(r["study_id"])), []).append(text(r["dicom_id"]))
    report_dirs = [root / "files", root / "mimic-cxr-reports" / "files"]
    roots = data_roots(root)
    splits: dict[str, list[dict]] = {}
    for (split, subject, study), dicoms in studies.items():
        if split not in ("train", "val", "test"):
            continue
        rel = Path(f"p{subject[:2]}") / f"p{subject}"
        id = f"s{study}"
        report_file = next((d / rel / f"s{study}.txt" for d in report_dirs if (d / rel / f"s{study}.txt").is_file()), None)
        if report_file is None:
            drops.add(split, "empty", id)  # no report file for the study
            continue
        if not is_inside(report_file, roots):  # a symlink out of the root: never read
            drops.add(split, "outside_root", id)
            continue
        sections = report_sections(read_report(report_file))
        report = pick_section(sections.get("findings", ""), sections.get("impression", ""), section)
        if not report:
            drops.add(split, "no_section", id)
            continue
        dicoms = sorted(dicoms, key=lambda d: (view_of.get(d, "") not in FRONTAL, view_of.get(d, "") == "", d))
        images = [root / "files" / rel / f"s{study}" / f"{d}.jpg" for d in dicoms]
        rec = report_record(id, images, report, views)
        splits.setdefault(split, []).append(rec)
    return splits


def is_iu_csv(root: Path) -> bool:
    return (root / IU_REPORTS).is_file() and (root / IU_PROJECTIONS).is_file()


def _iu_image_dir(root: Path, names: list[str]) -> Path:
    probe = names[:10]
    for d in ("images/images_normalized", "images_normalized", "images", "NLMCXR_png", "."):
        folder = root / d
        if folder.is_dir() and probe and any((folder / n).is_file() for n in probe):
            return folder.resolve()
    raise DataError(
        f"found {IU_REPORTS} in {root} but none of its images (e.g. {probe[0] if probe else '?'}): put them in "
        f"{root}/images/images_normalized/ as Kaggle ships them, or {root}/images/"
    )


def load_iu_csv(root: Path, views: str, section: str, seed: int, drops) -> dict[str, list[dict]]:
    """IU X-ray as the Kaggle / OpenI CSVs: indiana_reports.csv (uid, findings, impression, ...),
    indiana_projections.csv (uid, filename, projection) + the images. There is no official split:
    studies are split 70 / 10 / 20 % train / val / test by ``seed`` (R2Gen's proportions)."""
    import random

    reports = _read_csv(check_inside(root / IU_REPORTS, root))
    projections = _read_csv(check_inside(root / IU_PROJECTIONS, root))
    if reports and not {"uid", "findings", "impression"} <= set(reports[0]):
        raise DataError(f"{root / IU_REPORTS} has columns {sorted(reports[0])}; expected uid, findings, impression, ...")
    if projections and not {"uid", "filename", "projection"} <= set(projections[0]):
        raise DataError(f"{root / IU_PROJECTIONS} has columns {sorted(projections[0])}; expected uid, filename, projection")
    files: dict[str, list[tuple[str, str]]] = {}
    for p in projections:
        files.setdefault(text(p["uid"]), []).append((text(p["projection"]).upper(), text(p["filename"])))
    image_dir = _iu_image_dir(root, [f for v in files.values() for _, f in v])
    uids = sorted({text(r["uid"]) for r in reports}, key=lambda u: (len(u), u))
    order = list(uids)
    random.Random(seed).shuffle(order)
    n = len(order)
    split_of = {u: "test" for u in order[: round(n * 0.2)]}
    split_of.update({u: "val" for u in order[round(n * 0.2): round(n * 0.3)]})
    splits: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for r in reports:
        uid = text(r["uid"])
        split = split_of.get(uid, "train")
        report = pick_section(text(r.get("findings")), text(r.get("impression")), section)
        if not report:
            drops.add(split, "no_section", uid)
            continue
        views_ = sorted(files.get(uid, []), key=lambda v: (v[0] != "FRONTAL", v[1]))
        if not views_:
            drops.add(split, "no_image_name", uid)
            continue
        splits[split].append(report_record(uid, [image_dir / f for _, f in views_], report, views))
    return splits


def _read_official(root: Path, ask: Ask, load: Callable[..., dict[str, list[dict]]], layout: str) -> Loaded:
    """An official release (``load``: MIMIC-CXR-JPG or IU X-ray's CSVs) with ``ask``'s views and report section."""
    if ask.report_section not in SECTIONS:
        raise ConfigError(f"dataset.report_section={ask.report_section!r} is not known; use one of {list(SECTIONS)}")
    if ask.views not in VIEWS:
        raise ConfigError(f"dataset.views={ask.views!r} is not known; use one of {list(VIEWS)}")
    drops = Drops()
    root = root.resolve()
    splits = finish(load(root, drops), ask.val_fraction, ask.split_seed, f"{NAMES.get(ask.name, ask.name)} ({root})")
    return loaded(splits, drops, "", f"{layout}, report section: {ask.report_section}")


def read_mimic_official(root: Path, ask: Ask) -> Loaded:
    """The ``mimic_cxr_jpg`` layout of :mod:`medft.data.layouts`."""
    return _read_official(root, ask, lambda root, drops: load_mimic_official(root, ask.views, ask.report_section, drops),
                          "MIMIC-CXR-JPG (PhysioNet)")


def read_iu_csv(root: Path, ask: Ask) -> Loaded:
    """The ``iu_xray_csv`` layout of :mod:`medft.data.layouts` (studies split by ``ask.split_seed``)."""
    return _read_official(
        root, ask, lambda root, drops: load_iu_csv(root, ask.views, ask.report_section, ask.split_seed, drops),
        "IU X-ray CSVs (Kaggle / OpenI)")
