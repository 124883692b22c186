"""Load VQA-RAD (and the synthetic demo set, which uses the same layout) into plain records.

Two on-disk layouts are recognised:

* the original release (OSF)::

      root/VQA_RAD Dataset Public.json
      root/VQA_RAD Image Folder/synpicNNNN.jpg

  The official test set is the records whose ``phrase_type`` is ``test_freeform`` or
  ``test_para`` (451 pairs); every other record is training data.

* the split layout used by most Med-VQA code (e.g. MEVF)::

      root/trainset.json
      root/testset.json
      root/valset.json      (optional)
      root/images/<image_name>

When both are present the split layout wins. When there is no validation file, a validation
split is carved out of train with ``random.Random(seed)``.

Each record is a plain dict::

    {"id": str, "image": absolute path str, "image_name": str, "question": str,
     "answer": str, "answer_type": "CLOSED" | "OPEN", "question_type": str, "organ": str}

Images are not opened here; only their paths are resolved.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from medft.errors import ConfigError, DataError

OSF_JSON = "VQA_RAD Dataset Public.json"
OSF_IMAGES = "VQA_RAD Image Folder"
SPLIT_FILES = {"train": "trainset.json", "val": "valset.json", "test": "testset.json"}
SPLIT_IMAGES = "images"
TEST_PHRASE_TYPES = {"test_freeform", "test_para"}

_LAYOUTS_HELP = (
    f"expected either '{OSF_JSON}' + '{OSF_IMAGES}/' (original release) "
    f"or 'trainset.json' + 'testset.json' [+ 'valset.json'] + '{SPLIT_IMAGES}/' (split layout), "
    "or the hub's data/{train,test}-*.parquet, or LLaVA-Med's train.json + test.json + images/"
)
# The placeholder VQA-RAD uses for "no value". ("None" is a real answer there: keep it.)
_MISSING = {"", "NULL"}
_YES_NO = {"yes", "no"}


def load_vqa_rad(
    root: str | Path,
    val_fraction: float = 0.1,
    seed: int = 0,
    stats: dict | None = None,
    drops: Any = None,
) -> dict[str, list[dict]]:
    """Return ``{"train": [...], "val": [...], "test": [...]}`` records for the dataset at ``root``.

    ``val_fraction`` of train becomes val (deterministically for a given ``seed``) unless the
    layout has a ``valset.json``. If ``stats`` is a dict it receives ``layout``,
    ``skipped_empty`` (records without a question or answer) and ``skipped_no_image``
    (records without an image name).
    """
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    root = _check_root(root)
    layout = detect_layout(root)
    counts = {"skipped_empty": 0, "skipped_no_image": 0, "skipped_wrong_type": 0}

    if layout == "osf":
        image_dir = root / OSF_IMAGES
        raw = _read_annotations(root / OSF_JSON)
        raw_splits = {
            "train": [r for r in raw if _text(r.get("phrase_type")).lower() not in TEST_PHRASE_TYPES],
            "test": [r for r in raw if _text(r.get("phrase_type")).lower() in TEST_PHRASE_TYPES],
        }
    else:
        image_dir = root / SPLIT_IMAGES
        raw_splits = {
            split: _read_annotations(root / name)
            for split, name in SPLIT_FILES.items()
            if (root / name).is_file()
        }

    splits: dict[str, list[dict]] = {}
    for split, raws in raw_splits.items():
        splits[split] = [
            rec
            for i, r in enumerate(raws)
            if (rec := _make_record(r, image_dir, f"{split}-{i}", counts, drops, split)) is not None
        ]
    if "val" not in splits:
        splits["train"], splits["val"] = carve_val(splits["train"], val_fraction, seed)

    result = {name: splits[name] for name in ("train", "val", "test")}
    _make_ids_unique(result)
    if stats is not None:
        stats.update(counts, layout=layout)
    return result


def detect_layout(root: Path) -> str:
    """Return ``"split"`` or ``"osf"`` for a dataset folder; raise :class:`DataError` if neither."""
    if (root / SPLIT_FILES["train"]).is_file() and (root / SPLIT_FILES["test"]).is_file():
        _check_image_dir(root / SPLIT_IMAGES, root / SPLIT_FILES["train"])
        return "split"
    if (root / OSF_JSON).is_file():
        _check_image_dir(root / OSF_IMAGES, root / OSF_JSON)
        return "osf"
    raise DataError(f"no VQA-RAD dataset found in {root}: {_LAYOUTS_HELP}")


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


def _check_root(root: str | Path) -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        raise DataError(f"dataset root {path} does not exist: {_LAYOUTS_HELP}")
    if not path.is_dir():
        raise DataError(f"dataset root {path} is not a directory: {_LAYOUTS_HELP}")
    return path.resolve()


def _check_image_dir(image_dir: Path, annotations: Path) -> None:
    if not image_dir.is_dir():
        raise DataError(
            f"found {annotations} but no image folder {image_dir}: put the images named in the "
            f"annotations there"
        )


def _read_annotations(path: Path) -> list[dict]:
    """Read a VQA-RAD annotation file: a JSON list of objects."""
    try:
        with open(path, encoding="utf-8-sig") as f:  # a byte-order mark (Windows editors) is read, not refused
            data = json.load(f)
    except RecursionError:
        raise DataError(f"annotation file {path} is nested too deeply to be a list of questions: restore the original file") from None
    except json.JSONDecodeError as exc:
        raise DataError(
            f"annotation file {path} is not valid JSON ({exc.msg} at line {exc.lineno} "
            f"column {exc.colno}): restore the original file"
        ) from None
    except UnicodeDecodeError:
        raise DataError(f"annotation file {path} is not UTF-8 text: restore the original file") from None
    except OSError as exc:
        raise DataError(f"cannot read annotation file {path}: {exc.strerror or exc}") from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataError(
            f"annotation file {path} must hold a JSON list of question objects: restore the original file"
        )
    return data


def is_text(value: Any) -> bool:
    """Whether a question / answer field holds text: a string, a number (VQA-RAD has int answers) or null."""
    return value is None or (isinstance(value, (str, int, float)) and not isinstance(value, bool))


def _text(value: Any) -> str:
    """A field value as a stripped string; ``None`` and the "NULL" placeholder become ""."""
    if value is None:
        return ""
    text = str(value).strip()
    return "" if text in _MISSING else text


def _make_record(
    raw: dict, image_dir: Path, fallback_id: str, counts: dict, drops: Any = None, split: str = ""
) -> dict | None:
    """Turn one raw annotation into a clean record, or ``None`` (counted, and its id noted in ``drops``)."""
    id = _text(raw.get("qid")) or fallback_id

    def drop(key: str, reason: str) -> None:
        counts[key] = counts.get(key, 0) + 1
        if drops is not None:
            drops.add(split, reason, id)

    if not (is_text(raw.get("question")) and is_text(raw.get("answer"))):  # a list, dict or bool is no text
        return drop("skipped_wrong_type", "not_text")
    question = _text(raw.get("question"))
    answer = _text(raw.get("answer"))  # some answers are ints in the release
    if not question or not answer:
        return drop("skipped_empty", "empty")
    image_name = _text(raw.get("image_name"))
    if not image_name:
        return drop("skipped_no_image", "no_image_name")
    return {
        "id": id,  # qid is "0" in one record, ints elsewhere
        "image": str(image_dir / image_name),
        "image_name": image_name,
        "question": question,
        "answer": answer,
        "answer_type": _answer_type(raw.get("answer_type"), answer),
        "question_type": _text(raw.get("question_type")).upper(),  # may be compound: "POS, PRES"
        "organ": _text(raw.get("image_organ")).upper(),
    }


def _answer_type(value: Any, answer: str) -> str:
    """``"CLOSED"`` or ``"OPEN"``; "CLOSED " (trailing space) is fixed, missing ones inferred."""
    kind = _text(value).upper()
    if kind in ("CLOSED", "OPEN"):
        return kind
    return "CLOSED" if answer.lower() in _YES_NO else "OPEN"


def _make_ids_unique(splits: dict[str, list[dict]]) -> None:
    """Give every record across all splits a distinct id: repeats get ``-2``, ``-3``, ..."""
    seen: set[str] = set()
    for records in splits.values():
        for rec in records:
            base = new = rec["id"]
            k = 2
            while new in seen:
                new = f"{base}-{k}"
                k += 1
            rec["id"] = new
            seen.add(new)
