"""What every dataset loader shares: reading annotation files, making records, finishing splits.

Two record shapes leave the loaders (plain dicts; images are paths, never opened here):

* VQA:    ``{"id", "image", "image_name", "question", "answer", "answer_type", "question_type", "organ"}``
  (the shape :mod:`medft.data.vqa_rad` defines);
* report: ``{"id", "image", "images", "views", "report"}``: ``images`` lists every view of the
  study, ``image`` is the first, ``views`` the ones the model sees (side by side when several).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medft.data.vqa_rad import _make_ids_unique, _text, carve_val, is_text
from medft.errors import ConfigError, DataError

Splits = dict[str, list[dict[str, Any]]]
SPLITS = ("train", "val", "test")
YES_NO = {"yes", "no"}


def check_root(root: str | Path, expected: str) -> Path:
    """``root`` as an absolute directory, or a DataError naming what was expected there."""
    path = Path(root).expanduser()
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is not a directory"
        raise DataError(f"dataset root {path} {what}: expected {expected}")
    return path.resolve()


def read_json(path: Path) -> Any:
    """Parse a JSON annotation file; one-line DataError when it is unreadable."""
    try:
        with open(path, encoding="utf-8-sig") as f:  # a byte-order mark (Windows editors) is read, not refused
            return json.load(f)
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


def text(value: Any) -> str:
    """A field as a stripped string; None and VQA-RAD's "NULL" placeholder become ""."""
    return _text(value)


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


def finish(
    splits: dict[str, list[dict[str, Any]]],
    val_fraction: float,
    split_seed: int,
    where: str,
) -> Splits:
    """Carve val from train when the layout has none, make ids unique, reject empty splits."""
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ConfigError(f"dataset.val_fraction={val_fraction!r} must be in [0, 1)")
    splits = {k: list(v) for k, v in splits.items()}
    if not splits.get("val"):
        splits["train"], splits["val"] = carve_val(splits.get("train", []), val_fraction, split_seed)
    out = {name: splits.get(name, []) for name in SPLITS}
    for name in ("train", "test"):
        if not out[name]:
            raise DataError(f"the {name} split of {where} is empty: check dataset.root and the annotation files")
    _make_ids_unique(out)
    return out

