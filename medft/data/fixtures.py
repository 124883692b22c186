"""Tiny copies of every published dataset layout, written in the exact format (quirks included).

Nothing here is real data: images are random pixels in the modes real files come in (8-bit
grayscale, 16-bit PNG, CMYK JPEG, RGBA PNG, RGB), text is made up. MIMIC-CXR especially is
never shipped; its fixture only mimics the R2Gen annotation format and the pXX/pSUBJECT/sSTUDY tree.
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

MODES = ("L", "I;16", "CMYK", "RGBA", "RGB")


def write_image(path: Path, index: int, size: int = 24) -> Path:
    """A random image; its pixel mode cycles through MODES (CMYK only as JPEG)."""
    rng = np.random.default_rng(index)
    mode = MODES[index % len(MODES)]
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "L":
        img = Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8))
    elif mode == "I;16":
        img = Image.fromarray(rng.integers(0, 4096, (size, size), dtype=np.uint16))
    else:
        channels = len(mode)
        img = Image.fromarray(rng.integers(0, 256, (size, size, min(channels, 4)), dtype=np.uint8), "RGBA" if channels == 4 else "RGB")
        if mode == "CMYK":
            img = img.convert("CMYK")
    if path.suffix == ".jpg" and img.mode not in ("L", "RGB", "CMYK"):
        img = img.convert("RGB")
    if path.suffix == ".png" and img.mode == "CMYK":
        img = img.convert("RGB")
    img.save(path)
    return path


def image_bytes(index: int) -> bytes:
    rng = np.random.default_rng(index)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


# --- SLAKE -----------------------------------------------------------------------------------

SLAKE_KEYS = ["img_id", "img_name", "question", "answer", "q_lang", "location", "modality",
              "answer_type", "base_type", "content_type", "triple", "qid"]


def make_slake(root: Path, sizes=(6, 3, 3), val_name: str = "validate.json") -> Path:
    """SLAKE: every question in English and Chinese; key order differs per file; some int answers."""
    qid = 0
    for split_i, (split, n) in enumerate(zip(("train", "val", "test"), sizes)):
        rows = []
        for i in range(n):
            img_id = split_i * 100 + i
            name = f"xmlab{img_id}/source.jpg"
            write_image(root / "imgs" / name, img_id)
            for lang, q, a in (("en", f"Is this a CT scan {i}?", "Yes" if i % 2 else "No"),
                               ("zh", f"这是CT吗 {i}?", "是" if i % 2 else "否")):
                rows.append({"img_id": img_id, "img_name": name, "question": q, "answer": a, "q_lang": lang,
                             "location": "Lung", "modality": "CT", "answer_type": "CLOSED", "base_type": "vqa",
                             "content_type": "Modality", "triple": ["vhead", "_", "_"], "qid": qid})
                qid += 1
            rows.append({"img_id": img_id, "img_name": name, "question": f"How many lesions {i}?", "answer": i,
                         "q_lang": "en", "location": "Lung", "modality": "CT", "answer_type": "OPEN",
                         "base_type": "vqa", "content_type": "Quantity", "triple": ["vhead", "_", "_"], "qid": qid})
            qid += 1
        keys = SLAKE_KEYS if split_i % 2 == 0 else list(reversed(SLAKE_KEYS))  # key order varies
        rows = [{k: r[k] for k in keys} for r in rows]
        fname = {"train": "train.json", "val": val_name, "test": "test.json"}[split]
        (root / fname).write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    return root


# --- PathVQA ---------------------------------------------------------------------------------


def pvqa_rows(split: str, n: int) -> list[dict]:
    answers = ["yes", "no", "Yes", "the liver", "hepatocellular carcinoma"]
    return [{"image": f"{split}_{i // 2:04d}", "question": f"what is shown {i}?", "answer": answers[i % len(answers)]}
            for i in range(n)]


def make_path_vqa_pickles(root: Path, sizes=(10, 5, 5)) -> Path:
    for k, (split, n) in enumerate(zip(("train", "val", "test"), sizes)):
        rows = pvqa_rows(split, n)
        (root / "qas" / split).mkdir(parents=True, exist_ok=True)
        with open(root / "qas" / split / f"{split}_qa.pkl", "wb") as f:
            pickle.dump(rows, f)
        for j, name in enumerate(sorted({r["image"] for r in rows})):
            write_image(root / "images" / split / f"{name}.jpg", 10 * k + j)
    return root


def make_path_vqa_parquet(root: Path, sizes=(10, 5, 5)) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "data").mkdir(parents=True, exist_ok=True)
    for k, (split, n) in enumerate(zip(("train", "validation", "test"), sizes)):
        rows = pvqa_rows(split, n)
        images = [{"bytes": image_bytes(100 * k + i // 2), "path": f"{r['image']}.jpg"} for i, r in enumerate(rows)]
        table = pa.table({
            "image": images,
            "question": [r["question"] for r in rows],
            "answer": [r["answer"] for r in rows],
        })
        pq.write_table(table, root / "data" / f"{split}-00000-of-00001.parquet")
    return root


# --- R2Gen: IU X-ray and MIMIC-CXR -----------------------------------------------------------

REPORTS = [
    "The heart is normal in size. The mediastinum is unremarkable. The lungs are clear.",
    "1. No acute cardiopulmonary abnormality. 2. Stable XXXX opacity in the left lung base.",
    "Heart size normal. No pleural effusion or pneumothorax.. Degenerative changes of the spine.",
    "The cardiomediastinal silhouette is within normal limits. No focal consolidation.",
]


def make_iu_xray(root: Path, sizes=(8, 2, 3)) -> Path:
    data, k = {}, 0
    for split, n in zip(("train", "val", "test"), sizes):
        rows = []
        for i in range(n):
            study = f"CXR{1000 + k}_IM-{2000 + k}"
            paths = [f"{study}/0.png", f"{study}/1.png"]
            for v, p in enumerate(paths):
                write_image(root / "images" / p, 2 * k + v)
            rows.append({"id": study, "report": REPORTS[k % len(REPORTS)], "image_path": paths, "split": split})
            k += 1
        data[split] = rows
    (root / "annotation.json").write_text(json.dumps(data))
    return root


def make_mimic_cxr(root: Path, sizes=(8, 2, 3)) -> Path:
    data, k = {}, 0
    for split, n in zip(("train", "val", "test"), sizes):
        rows = []
        for i in range(n):
            subject, study = 10000032 + k, 50414267 + k
            dicom = f"{k:08d}-2c8d3b0a-1f2e3d4c-5b6a7980-abcdef01"
            path = f"p{str(subject)[:2]}/p{subject}/s{study}/{dicom}.jpg"
            write_image(root / "images" / path, k)
            rows.append({"id": dicom, "study_id": study, "subject_id": subject,
                         "report": REPORTS[k % len(REPORTS)].replace(". ", ".\n "), "image_path": [path], "split": split})
            k += 1
        data[split] = rows
    (root / "annotation.json").write_text(json.dumps(data))
    return root
