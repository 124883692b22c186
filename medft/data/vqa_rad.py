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

Records, the val split, unique ids and the field rules come from :mod:`medft.data.common`, as for
every other dataset. Images are not opened here; only their paths are resolved.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from medft.data.answer_types import FROM_FILE
from medft.data.common import Splits, check_root, check_val_fraction, drop_reason, finish, read_json_list, text, vqa_record
from medft.data.drops import Ask, Drops, Loaded, loaded
from medft.util.errors import DataError

OSF_JSON = "VQA_RAD Dataset Public.json"
OSF_IMAGES = "VQA_RAD Image Folder"
SPLIT_FILES = {"train": "trainset.json", "val": "valset.json", "test": "testset.json"}
SPLIT_IMAGES = "images"
TEST_PHRASE_TYPES = {"test_freeform", "test_para"}

ABOUT = (
    f"'{OSF_JSON}' + '{OSF_IMAGES}/' (original release) "
    f"or 'trainset.json' + 'testset.json' [+ 'valset.json'] + '{SPLIT_IMAGES}/' (split layout)"
)
_LAYOUTS_HELP = f"either {ABOUT}, or the hub's data/{{train,test}}-*.parquet, or LLaVA-Med's train.json + test.json + images/"
# drop reason (medft.data.common.drop_reason) -> the count ``stats`` receives
_SKIPPED = {"not_text": "skipped_wrong_type", "empty": "skipped_empty", "no_image_name": "skipped_no_image"}


def load_vqa_rad(
    root: str | Path,
    val_fraction: float = 0.1,
    seed: int = 0,
    stats: dict | None = None,
    drops: Any = None,
) -> Splits:
    """Return ``{"train": [...], "val": [...], "test": [...]}`` records for the dataset at ``root``.

    ``val_fraction`` of train becomes val (deterministically for a given ``seed``) unless the
    layout has a ``valset.json``. If ``stats`` is a dict it receives ``layout``,
    ``skipped_empty`` (records without a question or answer), ``skipped_no_image``
    (records without an image name) and ``skipped_wrong_type`` (a question or answer that is no text).
    """
    check_val_fraction(val_fraction)
    root = check_root(root, _LAYOUTS_HELP)
    layout = detect_layout(root)
    counts = dict.fromkeys(_SKIPPED.values(), 0)

    if layout == "osf":
        image_dir = root / OSF_IMAGES
        raw = read_json_list(root / OSF_JSON)
        raw_splits = {
            "train": [r for r in raw if text(r.get("phrase_type")).lower() not in TEST_PHRASE_TYPES],
            "test": [r for r in raw if text(r.get("phrase_type")).lower() in TEST_PHRASE_TYPES],
        }
    else:
        image_dir = root / SPLIT_IMAGES
        raw_splits = {
            split: read_json_list(root / name)
            for split, name in SPLIT_FILES.items()
            if (root / name).is_file()
        }

    splits: Splits = {}
    for split, raws in raw_splits.items():
        records = splits[split] = []
        for i, r in enumerate(raws):
            id = text(r.get("qid")) or f"{split}-{i}"  # qid is "0" in one record, ints elsewhere
            name = text(r.get("image_name"))
            reason = drop_reason(r.get("question"), r.get("answer"), name)
            if reason:
                counts[_SKIPPED[reason]] += 1
                if drops is not None:
                    drops.add(split, reason, id)
                continue
            records.append(vqa_record(  # question_type may be compound: "POS, PRES"
                id, image_dir / name, name, r.get("question"), r.get("answer"), r.get("answer_type"),
                r.get("question_type"), r.get("image_organ"),
            ))
    # no split is required here: `medft data` and training name the split that ends up empty
    result = finish(splits, val_fraction, seed, f"VQA-RAD ({root})", required=())
    if stats is not None:
        stats.update(counts, layout=layout)
    return result


def is_vqa_rad(root: Path) -> bool:
    """Either release's annotation file is in ``root`` (:func:`load_vqa_rad` names what else is missing)."""
    return (root / SPLIT_FILES["train"]).is_file() or (root / OSF_JSON).is_file()


def read_vqa_rad(root: Path, ask: Ask) -> Loaded:
    """The ``vqa_rad`` layout of :mod:`medft.data.layouts`: either release, the skipped records logged."""
    stats: dict[str, Any] = {}
    drops = Drops()
    splits = load_vqa_rad(root, val_fraction=ask.val_fraction, seed=ask.split_seed, stats=stats, drops=drops)
    if stats["skipped_empty"] or stats["skipped_no_image"] or stats["skipped_wrong_type"]:
        logging.getLogger(__name__).warning(
            f"dataset {root}: skipped {stats['skipped_empty']} record(s) with an empty question or answer, "
            f"{stats['skipped_no_image']} without an image name and {stats['skipped_wrong_type']} whose question or "
            "answer is not text (a list, mapping or true/false)"
        )
    return loaded(splits, drops, FROM_FILE, stats["layout"])


def detect_layout(root: Path) -> str:
    """Return ``"split"`` or ``"osf"`` for a dataset folder; raise :class:`DataError` if neither."""
    if (root / SPLIT_FILES["train"]).is_file() and (root / SPLIT_FILES["test"]).is_file():
        _check_image_dir(root / SPLIT_IMAGES, root / SPLIT_FILES["train"])
        return "split"
    if (root / OSF_JSON).is_file():
        _check_image_dir(root / OSF_IMAGES, root / OSF_JSON)
        return "osf"
    raise DataError(f"no VQA-RAD dataset found in {root}: expected {_LAYOUTS_HELP}")


def _check_image_dir(image_dir: Path, annotations: Path) -> None:
    if not image_dir.is_dir():
        raise DataError(
            f"found {annotations} but no image folder {image_dir}: put the images named in the "
            f"annotations there"
        )
