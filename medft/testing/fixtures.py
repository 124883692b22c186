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


# --- the copies people download today: hub Parquet, LLaVA-Med files, official report releases ---


def _hub_parquet(path: Path, rows: list[dict], extra_features: dict | None = None) -> None:
    """One shard as the hub writes it: ``image`` an Image feature stored as {bytes, path}, HF schema metadata."""
    import datasets

    feats = {"image": datasets.Image()}
    for k, v in rows[0].items():
        if k != "image":
            feats[k] = (extra_features or {}).get(k, datasets.Value("string"))
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = {k: [r[k] for r in rows] for k in feats}
    datasets.Dataset.from_dict(cols, features=datasets.Features(feats)).to_parquet(str(path))


VQA_RAD_HUB = {  # (image, question, answer) per split; quirks: a duplicate row, a rephrasing, an empty answer
    "train": [(0, "is there a fracture?", "no"), (0, "is there a fracture?", "no"), (0, "Is a fracture seen?", "no"),
              (1, "what organ is shown?", "brain"), (1, "where is the lesion?", "left temporal lobe"),
              (2, "is this an mri?", "yes"), (2, "how many lesions?", ""), (3, "is the heart enlarged?", "yes"),
              (4, "what modality is this?", "ct"), (5, "what is abnormal?", "pleural effusion")],
    "test": [(6, "is this a ct?", "yes"), (7, "what organ is shown?", "liver"), (2, "is this an mri?", "yes"),
             (8, "is there a mass?", "no")],
}


def make_vqa_rad_hub(root: Path) -> Path:
    """VQA-RAD as the hub's Parquet copy: data/{train,test}-00000-of-00001-<hash>.parquet, no answer_type."""
    for split, items in VQA_RAD_HUB.items():
        rows = [{"image": {"bytes": image_bytes(i), "path": None}, "question": q, "answer": a} for i, q, a in items]
        _hub_parquet(root / "data" / f"{split}-00000-of-00001-{'8f1c2a3b' if split == 'train' else '5d6e7f80'}.parquet", rows)
    return root


def make_vqa_rad_annotations(path: Path) -> Path:
    """The original VQA-RAD JSON for the hub fixture's questions (answer_type given, one open yes/no)."""
    rows = []
    for split, items in VQA_RAD_HUB.items():
        for k, (i, q, a) in enumerate(items):
            kind = "CLOSED" if a in ("yes", "no") else "OPEN"
            if q == "is the heart enlarged?":
                kind = "OPEN"  # the annotators' call differs from the yes/no rule
            rows.append({"qid": f"{split}{k}", "image_name": f"synpic{i}.jpg", "question": q, "answer": a,
                         "answer_type": kind, "phrase_type": "test_freeform" if split == "test" else "freeform"})
    path.write_text(json.dumps(rows))
    return path


def slake_rows(split_i: int, n: int, full: bool) -> list[dict]:
    rows = []
    for i in range(n):
        img_id = split_i * 100 + i
        base = {"img_id": img_id, "img_name": f"xmlab{img_id}/source.jpg", "location": "Lung", "modality": "CT",
                "base_type": "vqa", "triple": "['vhead', '_', '_']", "qid": 1000 * split_i + 2 * i}
        for lang, q, a, kind, content in (("en", f"Is this a CT scan {i}?", "Yes" if i % 2 else "No", "CLOSED", "Modality"),
                                          ("zh", f"这是CT吗 {i}?", "是" if i % 2 else "否", "CLOSED", "Modality"),
                                          ("en", f"Which organ is shown {i}?", "Lung", "OPEN", "Organ")):
            row = {"image": {"bytes": image_bytes(img_id), "path": f"xmlab{img_id}/source.jpg"}, "question": q, "answer": a}
            if full:
                row.update({**base, "q_lang": lang, "answer_type": kind, "content_type": content,
                            "qid": base["qid"] + (lang == "zh")})
            elif lang != "en":
                continue
            rows.append(row)
    return rows


def make_slake_hub(root: Path, sizes=(5, 2, 2), full: bool = False) -> Path:
    """SLAKE's hub Parquet copy: data/{train,validation,test}-0000N-of-0000M.parquet (train in two shards).

    ``full``: every original column plus the image bytes (English and Chinese questions); else the
    English image / question / answer copy."""
    from datasets import Value

    for split_i, (split, n) in enumerate(zip(("train", "validation", "test"), sizes)):
        rows = slake_rows(split_i, n, full)
        shards = 2 if split == "train" else 1
        per = -(-len(rows) // shards)
        for s in range(shards):
            _hub_parquet(root / "data" / f"{split}-{s:05d}-of-{shards:05d}.parquet", rows[s * per:(s + 1) * per],
                         {"img_id": Value("int64"), "qid": Value("int64")})
    return root


LLAVA_QA = [("Is there a fracture?", "no", "CLOSED"), ("What organ is shown?", "brain", "OPEN"),
            ("Is this an MRI?", "yes", "CLOSED"), ("Where is the lesion?", "left lobe", "OPEN")]


def make_llava(root: Path, sizes=(8, 4), misspelt: bool = True, image_dir: str = "images", ext: str = ".jpg") -> Path:
    """LLaVA-Med's downstream train.json / test.json + an image folder; ``misspelt``: test.json uses ``conversatons``."""
    k = 0
    for split, n in zip(("train", "test"), sizes):
        rows = []
        for i in range(n):
            q, a, kind = LLAVA_QA[i % len(LLAVA_QA)]
            name = f"img_{k // 2:03d}{ext}"
            write_image(root / image_dir / name, k // 2)
            key = "conversatons" if misspelt and split == "test" else "conversations"
            rows.append({"id": f"{split}_{i}", "image": name, "answer_type": kind,
                         key: [{"from": "human", "value": f"<image>\n{q}"}, {"from": "gpt", "value": a}]})
            k += 1
        (root / f"{split}.json").write_text(json.dumps(rows, indent=1))
    return root


MIMIC_REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___ year old man with cough.

 COMPARISON:  None.
{findings}
 IMPRESSION:
 
 {impression}
"""


def make_mimic_official(root: Path, sizes=(6, 2, 3)) -> Path:
    """MIMIC-CXR-JPG as PhysioNet ships it, with the reports from the MIMIC-CXR database.

    Each study has a PA and a lateral JPG; the last train study has no FINDINGS section."""
    import csv
    import gzip

    split_rows, meta_rows, k = [], [], 0
    for split, n in zip(("train", "validate", "test"), sizes):
        for i in range(n):
            subject, study = 10000032 + k, 50414267 + k
            study_dir = root / "files" / f"p{str(subject)[:2]}" / f"p{subject}"
            for v, view in enumerate(("LATERAL", "PA")):  # lateral first in the CSV: medft puts the frontal first
                dicom = f"{k:08d}-{v:08x}-1f2e3d4c-5b6a7980"
                write_image(study_dir / f"s{study}" / f"{dicom}.jpg", 2 * k + v)
                split_rows.append({"dicom_id": dicom, "study_id": study, "subject_id": subject, "split": split})
                meta_rows.append({"dicom_id": dicom, "subject_id": subject, "study_id": study,
                                  "PerformedProcedureStepDescription": "CHEST (PA AND LAT)", "ViewPosition": view,
                                  "Rows": 24, "Columns": 24})
            no_findings = split == "train" and i == n - 1
            findings = "" if no_findings else f"\n FINDINGS:\n \n {REPORTS[k % len(REPORTS)]}\n"
            (study_dir / f"s{study}.txt").write_text(MIMIC_REPORT.format(findings=findings, impression=f"No acute process {k}."))
            k += 1
    for name, rows in (("mimic-cxr-2.0.0-split.csv.gz", split_rows), ("mimic-cxr-2.0.0-metadata.csv.gz", meta_rows)):
        with gzip.open(root / name, "wt", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return root


def make_iu_csv(root: Path, n: int = 12) -> Path:
    """IU X-ray as Kaggle's CSVs: indiana_reports.csv, indiana_projections.csv, images/images_normalized/.

    Study 3 has no findings (only an impression)."""
    import csv

    reports, projections = [], []
    for k in range(1, n + 1):
        reports.append({"uid": k, "MeSH": "normal", "Problems": "normal", "image": "Xray Chest PA and Lateral",
                        "indication": "Positive TB test", "comparison": "None.",
                        "findings": "" if k == 3 else REPORTS[k % len(REPORTS)], "impression": "Normal chest x-XXXX."})
        for v, proj in enumerate(("Frontal", "Lateral")):
            name = f"{k}_IM-{1000 + k}-{1001 + v}.dcm.png"
            write_image(root / "images" / "images_normalized" / name, 2 * k + v)
            projections.append({"uid": k, "filename": name, "projection": proj})
    for name, rows in (("indiana_reports.csv", reports), ("indiana_projections.csv", projections)):
        with open(root / name, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return root


def make_hub_cache(cache: Path, hub_id: str, build) -> Path:
    """A hub dataset as ``hf download`` leaves it in HF_HUB_CACHE: refs/main + snapshots/<sha>/...

    ``build(folder)`` writes the repository's files into the snapshot folder."""
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"datasets--{hub_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(sha)
    build(repo / "snapshots" / sha)
    return repo / "snapshots" / sha
