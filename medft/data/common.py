"""What every dataset loader shares: reading annotation files, making records, finishing splits.

Two record shapes leave the loaders (plain dicts; images are paths, never opened here):

* VQA:    ``{"id", "image", "image_name", "question", "answer", "answer_type", "question_type", "organ"}``
  (:func:`vqa_record`; ``image`` an absolute path, ``answer_type`` ``CLOSED`` or ``OPEN``);
* report: ``{"id", "image", "images", "views", "report"}``: ``images`` lists every view of the
  study, ``image`` is the first, ``views`` the ones the model sees (side by side when several).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

from medft.util.errors import ConfigError, DataError

Splits = dict[str, list[dict[str, Any]]]
SPLITS = ("train", "val", "test")
YES_NO = {"yes", "no"}
# The placeholder VQA-RAD uses for "no value". ("None" is a real answer there: keep it.)
MISSING = {"", "NULL"}


def check_root(root: str | Path, expected: str) -> Path:
    """``root`` as an absolute directory, or a DataError naming what was expected there."""
    path = Path(root).expanduser()
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is not a directory"
        raise DataError(f"dataset root {path} {what}: expected {expected}")
    return path.resolve()


def hub_blobs(root: Path) -> Path | None:
    """``<repo>/blobs`` of a Hugging Face cache snapshot holding ``root`` (``hf download`` stores files
    in ``datasets--owner--name/snapshots/REV/`` as symlinks into ``../../blobs``), else None."""
    for folder in (root, *root.parents):
        repo = folder.parent.parent
        if folder.parent.name == "snapshots" and repo.name.startswith(("datasets--", "models--")):
            return repo / "blobs" if (repo / "blobs").is_dir() else None
    return None


def data_roots(root: str | Path) -> list[Path]:
    """Where the files a dataset names may lie, symlinks resolved: its root (and a hub snapshot's blobs)."""
    path = Path(root).expanduser()
    blobs = hub_blobs(Path(os.path.abspath(path)))
    return [Path(os.path.realpath(path))] + ([Path(os.path.realpath(blobs))] if blobs else [])


def is_inside(path: str | Path, roots: list[Path]) -> bool:
    """Whether ``path``, symlinks resolved, lies in one of ``roots`` (from :func:`data_roots`)."""
    real = Path(os.path.realpath(path))
    return any(real == r or real.is_relative_to(r) for r in roots)


def check_inside(path: Path, root: Path, what: str = "annotation file") -> Path:
    """``path`` (a file the dataset's layout names) if it stays inside ``root``; else a one-line DataError."""
    if not is_inside(path, data_roots(root)):
        raise DataError(f"{what} {path} leads outside dataset.root {root} (-> {os.path.realpath(path)}): "
                        "a dataset's files must lie inside its root; copy the file there")
    return path


def read_json(path: Path) -> Any:
    """Parse a JSON annotation file; one-line DataError when it is unreadable."""
    from medft.util.safe_load import DATA_BYTES, MAX_DEPTH, depth_of

    try:
        if path.stat().st_size > DATA_BYTES:
            raise DataError(f"annotation file {path} is {path.stat().st_size:,} bytes, over the {DATA_BYTES:,} medft reads: "
                            "not an annotation file; restore the original file")
        with open(path, encoding="utf-8-sig") as f:  # a byte-order mark (Windows editors) is read, not refused
            data = json.load(f)
        if depth_of(data, MAX_DEPTH) > MAX_DEPTH:
            raise RecursionError
        return data
    except RecursionError:
        raise DataError(f"annotation file {path} is nested too deeply to be an annotation file: restore the original file") from None
    except json.JSONDecodeError as exc:
        raise DataError(
            f"annotation file {path} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}): "
            "restore the original file"
        ) from None
    except UnicodeDecodeError:
        raise DataError(f"annotation file {path} is not UTF-8 text: restore the original file") from None
    except OSError as exc:
        raise DataError(f"cannot read annotation file {path}: {exc.strerror or exc}") from None


def read_json_list(path: Path) -> list[dict[str, Any]]:
    """A JSON annotation file holding a list of question objects (VQA-RAD, SLAKE), or a one-line DataError."""
    data = read_json(path)
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataError(f"annotation file {path} must hold a JSON list of question objects: restore the original file")
    return data


def is_text(value: Any) -> bool:
    """Whether a question / answer field holds text: a string, a number (VQA-RAD has int answers) or null."""
    return value is None or (isinstance(value, (str, int, float)) and not isinstance(value, bool))


def text(value: Any) -> str:
    """A field as a stripped string; None and VQA-RAD's "NULL" placeholder become ""."""
    if value is None:
        return ""
    out = str(value).strip()
    return "" if out in MISSING else out


def drop_reason(question: Any, answer: Any, image_name: str | None = None) -> str:
    """Why a raw question / answer (/ image name, when given) makes no record, or "" when it makes one:
    ``not_text`` (a list, mapping or bool), ``empty``, ``no_image_name``: the reasons ``medft data`` counts."""
    if not (is_text(question) and is_text(answer)):
        return "not_text"
    if not text(question) or not text(answer):
        return "empty"
    return "no_image_name" if image_name is not None and not image_name else ""


def closed_if_yes_no(answer: str) -> str:
    return "CLOSED" if answer.strip().lower() in YES_NO else "OPEN"


def answer_type(value: Any, answer: str) -> str:
    """``CLOSED`` / ``OPEN`` from the file (any case, stray spaces), else inferred from yes/no."""
    kind = text(value).upper()
    return kind if kind in ("CLOSED", "OPEN") else closed_if_yes_no(answer)


def vqa_record(
    id: str, image: Path, image_name: str, question: Any, answer: Any, kind: Any = None,
    question_type: Any = "", organ: Any = "",
) -> dict[str, str] | None:
    """A VQA record, or None when the question or answer is empty or not text (a list, dict or bool)."""
    if not (is_text(question) and is_text(answer)):
        return None
    q, a = text(question), text(answer)
    if not q or not a:
        return None
    return {
        "id": str(id), "image": str(image), "image_name": image_name, "question": q, "answer": a,
        "answer_type": answer_type(kind, a), "question_type": text(question_type).upper(),
        "organ": text(organ).upper(),
    }


def report_record(id: str, images: list[Path], report: Any, views: str = "first") -> dict[str, Any] | None:
    """A report-generation record, or None when it has no report or no image.

    ``views``: ``first`` (the model sees the first view) or ``all`` (every view, side by side).
    """
    r = " ".join(text(report).split())
    if not r or not images:
        return None
    paths = [str(p) for p in images]
    return {"id": str(id), "image": paths[0], "images": paths, "views": paths if views == "all" else paths[:1], "report": r}


def check_val_fraction(val_fraction: float) -> None:
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ConfigError(f"dataset.val_fraction={val_fraction!r} must be in [0, 1)")


def carve_val(records: list[dict], val_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Split ``records`` into (train, val) with ``random.Random(seed)``; both keep file order.

    The validation set has ``round(len * val_fraction)`` records (at least one when the
    fraction is positive and there are two or more records; never all of them).
    """
    n = len(records)
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n >= 2:
        n_val = max(1, n_val)
    n_val = min(n_val, max(n - 1, 0))
    if n_val == 0:
        return list(records), []
    order = list(range(n))
    random.Random(seed).shuffle(order)
    val_idx = set(order[:n_val])
    train = [r for i, r in enumerate(records) if i not in val_idx]
    val = [r for i, r in enumerate(records) if i in val_idx]
    return train, val


def make_ids_unique(splits: Splits) -> dict[str, list[str]]:
    """Give every record across all splits a distinct id: repeats get ``-2``, ``-3``, ... Returns the ids
    renamed, per split (``medft data`` and the run's log list them: data/found/duplicate_id)."""
    seen: set[str] = set()
    renamed: dict[str, list[str]] = {}
    for split, records in splits.items():
        for rec in records:
            base = new = rec["id"]
            k = 2
            while new in seen:
                new = f"{base}-{k}"
                k += 1
            if new != base:
                renamed.setdefault(split, []).append(base)
            rec["id"] = new
            seen.add(new)
    return renamed


def finish(
    splits: dict[str, list[dict[str, Any]]],
    val_fraction: float,
    split_seed: int,
    where: str,
    required: tuple[str, ...] = ("train", "test"),
) -> Splits:
    """Carve val from train when the layout has none, make ids unique, reject the ``required`` splits
    left empty (VQA-RAD requires none: ``medft data`` / training say which split is unusable)."""
    check_val_fraction(val_fraction)
    splits = {k: list(v) for k, v in splits.items()}
    if not splits.get("val"):
        splits["train"], splits["val"] = carve_val(splits.get("train", []), val_fraction, split_seed)
    out = {name: splits.get(name, []) for name in SPLITS}
    for name in required:
        if not out[name]:
            raise DataError(f"the {name} split of {where} is empty: check dataset.root and the annotation files")
    result = Finished(out)
    result.renamed = make_ids_unique(out)  # said (medft.data.drops.loaded: data/found/duplicate_id), never in silence
    return result


class Finished(dict):
    """:func:`finish`'s splits, with the ids it renamed: ``renamed`` = ``{split: [id as given]}``."""

    renamed: dict[str, list[str]]

