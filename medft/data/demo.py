"""A small synthetic medical VQA dataset that a tiny model can learn in about a minute on CPU.

Each image is a grayscale "scan" of one organ template on a dark background, with noise:

* chest:   body outline, two dark lung fields, a bright spine and heart in the middle;
* head:    bright skull ring around the brain, midline and two small dark ventricles;
* abdomen: rounded body outline, a bright vertebra and two kidney blobs.

The templates are left-right symmetric, so the only asymmetry comes from 0-2 bright round
lesions, each entirely in the left or the right half. "Left" and "right" are as the viewer
sees the image (not the radiological patient-side convention).

Questions (CLOSED yes/no and OPEN) are answerable from the pixels alone:

====== ============ ================================ =========================
type   answer_type  question                         answer
====== ============ ================================ =========================
PRES   CLOSED       Is there a lesion?               yes / no
ORGAN  CLOSED       Is this an image of the chest?   yes / no (half of each)
ORGAN  OPEN         Which organ is shown?            chest / head / abdomen
COUNT  OPEN         How many lesions are there?      0 / 1 / 2
POS    CLOSED       Is the lesion on the left side?  yes / no   (one lesion only)
POS    OPEN         Which side is the lesion on?     left / right (one lesion only)
====== ============ ================================ =========================

Every image gets the first four questions; images with exactly one lesion also get one of
the two POS questions (4-5 per image). Most questions also have a paraphrase
(``phrase_type`` "para" instead of "freeform"), as in VQA-RAD.

The set is written in VQA-RAD's split layout (``trainset.json``, ``testset.json``,
``images/*.png``, same fields as the MEVF files) so :func:`medft.data.vqa_rad.load_vqa_rad`
reads it. Generation is deterministic: the same parameters give the same bytes.

Domains (``domain=``), for the study in miniature (pretrain on one, fine-tune on another):

* ``source``: the set described above (radiograph-like: dark background, bright bone, bright
  lesions, mild noise). The embedded pretrained model (``medft pretrain``) learns this one.
* ``ct``: another modality, same anatomy and questions: an inverted, gamma-curved intensity
  profile (air bright, bone dark, lesions dark), a coarse grainy texture and stronger noise.
* ``findings``: same modality, other anatomy and findings, other wording and answer vocabulary:
  chest, pelvis and neck; smaller "nodules"; "Which body region is imaged?", "How many nodules
  are visible?", sides answered "left side" / "right side".

Report domains (``task="report"``; ``REPORT_DOMAINS``, the study's report half): the same three
scenes and looks, each image with a findings-style report in its domain's reporting style instead
of questions (:mod:`medft.data.demo_report`: organ, lesion presence, count, side, size, brightness,
stock sentences, paraphrases), written in IU X-ray's R2Gen layout (``annotation.json`` with train
and test lists + ``images/*.png``) so :func:`medft.data.report_gen.load_r2gen` reads it. Lesions
come in two sizes and two brightnesses there (faint ones drawn darker), so that a report has more
to say than which organ it is.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from medft.data.demo_report import REPORT_VERSION, write_report
from medft.util.errors import ConfigError, DataError

DEMO_VERSION = 2  # 2: domains (source, ct, findings)
META_FILE = "demo_meta.json"
IMAGE_DIR = "images"
SPLIT_FILES = {"train": "trainset.json", "test": "testset.json"}
ANNOTATION_FILE = "annotation.json"  # task=report: R2Gen's {"train": [...], "val": [], "test": [...]}
TASKS = ("vqa", "report")
_DEMO_ENTRIES = {META_FILE, IMAGE_DIR, ANNOTATION_FILE, *SPLIT_FILES.values()}

ORGANS = ("chest", "head", "abdomen")
_ORGAN_CODES = {"chest": "CHEST", "head": "HEAD", "abdomen": "ABD"}  # VQA-RAD's image_organ
# Lesion counts are drawn from this pattern (45% none, 40% one, 15% two), shuffled per split,
# so "Is there a lesion?" is close to 50/50 and a third of images get a side question.
_LESION_COUNT_PATTERN = (0,) * 9 + (1,) * 8 + (2,) * 3

# Question wording per kind: (freeform, paraphrase) for the lesion domains (source, ct), then for
# the findings domain (other findings and wording, see the module docstring).
_WORDING = {
    "pres": (("Is there a lesion?", "Is a lesion present in this image?"), ("Is there a nodule?", "Can a nodule be seen?")),
    "organ_closed": (("Is this an image of the {organ}?", "Does this image show the {organ}?"),
                     ("Is the {organ} imaged here?", "Is this a {organ} image?")),
    "organ_open": (("Which organ is shown?", "What organ is shown in this image?"),
                   ("Which body region is imaged?", "What body region does this image show?")),
    "count": (("How many lesions are there?", "How many lesions are seen?"),
              ("How many nodules are visible?", "What is the number of nodules?")),
    "side_closed": (("Is the lesion on the {side} side?", "Is the lesion located on the {side}?"),
                    ("Is the nodule in the {side} half?", "Does the {side} half hold the nodule?")),
    "side_open": (("Which side is the lesion on?", "On which side is the lesion?"),
                  ("Which half holds the nodule?", "In which half is the nodule?")),
}
_TEMPLATES = {kind: lesion for kind, (lesion, _) in _WORDING.items()}
_FINDINGS_TEMPLATES = {kind: findings for kind, (_, findings) in _WORDING.items()}
_PARAPHRASE_RATE = 0.3

# domain -> organs, question wording, side answers, lesion radius range, image profile, and the
# random stream of its scenes (source: the original demo's, so `dataset=demo` keeps its bytes)
DOMAINS: dict[str, dict] = {
    "source": {"organs": ORGANS, "templates": _TEMPLATES, "side_answer": "{side}", "radius": (0.055, 0.08),
               "profile": "radiograph", "stream": ()},
    "ct": {"organs": ORGANS, "templates": _TEMPLATES, "side_answer": "{side}", "radius": (0.055, 0.08),
           "profile": "ct", "stream": (1,)},
    "findings": {"organs": ("chest", "pelvis", "neck"), "templates": _FINDINGS_TEMPLATES,
                 "side_answer": "{side} side", "radius": (0.04, 0.055), "profile": "radiograph", "stream": (2,)},
}
# task=report: domain -> reporting style (medft.data.demo_report.STYLES), lesion radius per size class,
# lesion intensity per brightness class (a faint lesion stands out less from the organ under it)
REPORT_DOMAINS: dict[str, dict] = {
    "source": {"style": "source", "sizes": {"small": (0.04, 0.05), "large": (0.075, 0.09)}},
    "ct": {"style": "ct", "sizes": {"small": (0.04, 0.05), "large": (0.075, 0.09)}},
    "findings": {"style": "findings", "sizes": {"small": (0.035, 0.045), "large": (0.06, 0.075)}},
}
BRIGHTNESS = {"bright": (230.0, 250.0), "faint": (165.0, 180.0)}


def ensure_demo(
    root: str | Path,
    n_train_images: int = 300,
    n_test_images: int = 60,
    image_size: int = 64,
    seed: int = 0,
    domain: str = "source",
    task: str = "vqa",
) -> Path:
    """Return ``root`` holding the demo dataset for these parameters, generating it if needed.

    An existing dataset is reused only if its ``demo_meta.json`` (written last) matches the
    parameters and all files are there. Otherwise it is generated into a sibling temporary
    folder and renamed into place, so an interrupted run never leaves a half-written ``root``.
    """
    params = _check_params(n_train_images, n_test_images, image_size, seed, domain, task)
    root = Path(root).expanduser().resolve()
    meta = _meta(params)
    if _is_complete(root, meta):
        return root
    _check_replaceable(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        generate_demo(tmp, **params)
        _move_into_place(tmp, root, meta)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def generate_demo(
    out_dir: str | Path, n_train_images: int, n_test_images: int, image_size: int, seed: int, domain: str = "source",
    task: str = "vqa",
) -> None:
    """Write the demo dataset into ``out_dir`` (created; must not hold another dataset)."""
    params = _check_params(n_train_images, n_test_images, image_size, seed, domain, task)
    spec = DOMAINS[domain]
    out_dir = Path(out_dir)
    (out_dir / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    if task == "report":
        _write_report_splits(out_dir, n_train_images, n_test_images, image_size, seed, domain)
        _write_json(out_dir / META_FILE, _meta(params))
        return
    next_qid = 1
    for split_index, (split, n_images) in enumerate((("train", n_train_images), ("test", n_test_images))):
        rng = np.random.default_rng([seed, split_index, *spec["stream"]])
        records = []
        for i, scene in enumerate(_make_scenes(rng, n_images, spec)):
            image_name = f"{split}_{i:04d}.png"
            pixels = render_scene(scene, image_size, rng, spec["profile"])
            Image.fromarray(pixels).save(out_dir / IMAGE_DIR / image_name)
            for question in _questions(scene, rng, spec):
                records.append(_annotation(next_qid, image_name, scene, question, split))
                next_qid += 1
        _write_json(out_dir / SPLIT_FILES[split], records)
    # Written last: its presence marks the folder as complete.
    _write_json(out_dir / META_FILE, _meta(params))


def _write_report_splits(out_dir: Path, n_train_images: int, n_test_images: int, image_size: int, seed: int,
                         domain: str) -> None:
    """task=report: one image and its report per record, in R2Gen's annotation.json (val is left to the
    loader, which carves it from train as for the VQA demo)."""
    spec, report_spec = DOMAINS[domain], REPORT_DOMAINS[domain]
    annotation: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for split_index, (split, n_images) in enumerate((("train", n_train_images), ("test", n_test_images))):
        rng = np.random.default_rng([seed, split_index, *spec["stream"], 7])  # 7: not a VQA set's stream
        for i, scene in enumerate(_report_scenes(rng, n_images, spec, report_spec)):
            image_name = f"{split}_{i:04d}.png"
            Image.fromarray(render_scene(scene, image_size, rng, spec["profile"])).save(out_dir / IMAGE_DIR / image_name)
            report = write_report(scene, report_spec["style"], rng)
            annotation[split].append({"id": f"{split}_{i:04d}", "report": report, "image_path": [image_name], "split": split})
    _write_json(out_dir / ANNOTATION_FILE, annotation)


def _report_scenes(rng: np.random.Generator, n_images: int, spec: dict, report_spec: dict) -> list[dict]:
    """The VQA demo's scenes, each with a size class and a brightness class (balanced, shuffled) that
    its lesions are drawn with and its report names."""
    scenes = _make_scenes(rng, n_images, spec)
    sizes = rng.permutation(np.resize(np.array(sorted(report_spec["sizes"])), n_images))
    brights = rng.permutation(np.resize(np.array(sorted(BRIGHTNESS)), n_images))
    for scene, size, bright in zip(scenes, sizes, brights):
        scene["size"], scene["bright"] = str(size), str(bright)
        for lesion in scene["lesions"]:
            lesion["r"] = float(rng.uniform(*report_spec["sizes"][str(size)]))
            lesion["value"] = float(rng.uniform(*BRIGHTNESS[str(bright)]))
    return scenes


# --- scenes --------------------------------------------------------------------------------


def _make_scenes(rng: np.random.Generator, n_images: int, spec: dict = DOMAINS["source"]) -> list[dict]:
    """Organ and lesions of each image.

    Organs, lesion counts and the side of single lesions are balanced, then shuffled, so that
    no answer is favoured by chance in a small set.
    """
    organ_names = spec["organs"]
    organs = rng.permutation(np.resize(np.arange(len(organ_names)), n_images))
    counts = rng.permutation(np.resize(np.array(_LESION_COUNT_PATTERN), n_images))
    single_sides = iter(rng.permutation(np.resize(["left", "right"], int(np.sum(counts == 1)))))
    scenes = []
    for organ, count in zip(organs, counts):
        if count == 1:
            sides = [str(next(single_sides))]
        else:
            sides = [str(s) for s in rng.choice(["left", "right"], size=int(count))]
        scenes.append({"organ": organ_names[int(organ)], "lesions": _place_lesions(rng, sides, spec["radius"])})
    return scenes


def _place_lesions(rng: np.random.Generator, sides: list[str], radius_range=(0.055, 0.08)) -> list[dict]:
    """One lesion per side given, in unit coordinates, wholly in the left (x < 0.5) or right half."""
    lesions = []
    for k, side in enumerate(sides):
        radius = rng.uniform(*radius_range)
        x = rng.uniform(0.25, 0.38)  # the lesion ends before the midline (x + r < 0.5)
        if len(sides) == 2 and sides[0] == sides[1]:
            # two lesions on one side: one in the upper band, one in the lower, no overlap
            y = rng.uniform(0.30, 0.42) if k == 0 else rng.uniform(0.60, 0.70)
        else:
            y = rng.uniform(0.35, 0.65)
        lesions.append({"side": side, "x": x if side == "left" else 1.0 - x, "y": y, "r": radius})
    return lesions


# --- rendering -----------------------------------------------------------------------------


def render_scene(scene: dict, size: int, rng: np.random.Generator, profile: str = "radiograph") -> np.ndarray:
    """Draw one scene as a ``size`` x ``size`` uint8 grayscale array in the ``profile``'s look
    (``radiograph``: as drawn, mild noise; ``ct``: see :func:`_ct_look`)."""
    canvas = _Canvas(size, scale=rng.uniform(0.92, 1.05), shift_y=rng.uniform(-0.03, 0.03))
    _ORGAN_PAINTERS[scene["organ"]](canvas)
    for lesion in scene["lesions"]:
        value = rng.uniform(225, 250)  # drawn even when the lesion brings its own: the VQA sets keep their bytes
        canvas.lesion(lesion["x"], lesion["y"], lesion["r"], value=lesion.get("value", value))
    gain = rng.uniform(0.85, 1.15)  # scanner/window variation, applied to the whole image
    if profile == "ct":
        return _ct_look(canvas.pixels * gain, rng)
    noisy = canvas.pixels * gain + rng.normal(0.0, 6.0, canvas.pixels.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def _ct_look(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Another modality's look: inverted gamma-curved intensities (air bright, bone and lesions
    dark), a coarse grain (noise at a quarter of the resolution, upsampled) and stronger noise."""
    size = pixels.shape[0]
    x = np.clip(pixels, 0, 255) / 255.0
    remapped = 255.0 * (1.0 - x ** 0.7) * 0.9 + 12.0
    coarse = rng.normal(0.0, 14.0, (size // 4 + 1, size // 4 + 1))
    grain = np.kron(coarse, np.ones((4, 4)))[:size, :size]
    noisy = remapped + grain + rng.normal(0.0, 10.0, pixels.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


class _Canvas:
    """A float image with anti-aliased ellipse painting in unit coordinates (0..1).

    Organ shapes are scaled about the centre and shifted only vertically, so the organ
    template stays left-right symmetric; lesions are painted in unscaled coordinates.
    """

    def __init__(self, size: int, scale: float, shift_y: float, background: float = 14.0):
        self.size = size
        self.scale = scale
        self.shift_y = shift_y
        centers = (np.arange(size) + 0.5) / size
        self.v, self.u = np.meshgrid(centers, centers, indexing="ij")  # v: rows (y), u: cols (x)
        self.pixels = np.full((size, size), background)

    def ellipse(self, x: float, y: float, rx: float, ry: float, value: float) -> None:
        """Paint an organ ellipse (template coordinates, scaled and shifted)."""
        s = self.scale
        self._paint(0.5 + (x - 0.5) * s, 0.5 + (y - 0.5) * s + self.shift_y, rx * s, ry * s, value)

    def mirrored(self, x: float, y: float, rx: float, ry: float, value: float) -> None:
        """Paint an ellipse and its mirror image across the vertical midline."""
        self.ellipse(x, y, rx, ry, value)
        self.ellipse(1.0 - x, y, rx, ry, value)

    def lesion(self, x: float, y: float, r: float, value: float) -> None:
        """A bright disc that only brightens (never darkens) what is under it."""
        alpha = self._coverage(x, y, r, r)
        self.pixels = np.maximum(self.pixels, self.pixels * (1 - alpha) + value * alpha)

    def _paint(self, x: float, y: float, rx: float, ry: float, value: float) -> None:
        alpha = self._coverage(x, y, rx, ry)
        self.pixels = self.pixels * (1 - alpha) + value * alpha

    def _coverage(self, x: float, y: float, rx: float, ry: float) -> np.ndarray:
        """Per-pixel coverage 0..1 of an ellipse, with a one-pixel soft edge."""
        dist = np.sqrt(((self.u - x) / rx) ** 2 + ((self.v - y) / ry) ** 2)  # 1 on the outline
        edge_px = min(rx, ry) * self.size  # radius in pixels: turns (1 - dist) into pixels
        return np.clip((1.0 - dist) * edge_px + 0.5, 0.0, 1.0)


def _paint_chest(c: _Canvas) -> None:
    c.ellipse(0.5, 0.55, 0.45, 0.42, 95)      # soft tissue of the thorax
    c.mirrored(0.31, 0.50, 0.15, 0.29, 35)    # lung fields (dark, full of air)
    c.ellipse(0.5, 0.55, 0.025, 0.36, 150)    # spine
    c.ellipse(0.5, 0.64, 0.10, 0.12, 125)     # heart


def _paint_head(c: _Canvas) -> None:
    c.ellipse(0.5, 0.5, 0.40, 0.45, 205)      # skull
    c.ellipse(0.5, 0.5, 0.35, 0.40, 90)       # brain
    c.ellipse(0.5, 0.5, 0.008, 0.36, 120)     # falx / midline
    c.mirrored(0.44, 0.48, 0.035, 0.09, 40)   # lateral ventricles


def _paint_abdomen(c: _Canvas) -> None:
    c.ellipse(0.5, 0.52, 0.46, 0.38, 85)      # body outline
    c.ellipse(0.5, 0.72, 0.07, 0.07, 170)     # vertebral body
    c.mirrored(0.29, 0.62, 0.07, 0.11, 120)   # kidneys


def _paint_pelvis(c: _Canvas) -> None:
    c.ellipse(0.5, 0.55, 0.46, 0.34, 90)      # soft tissue of the hips
    c.mirrored(0.30, 0.42, 0.15, 0.12, 175)   # iliac wings (bone)
    c.mirrored(0.30, 0.42, 0.10, 0.07, 90)    # ... hollowed
    c.ellipse(0.5, 0.50, 0.06, 0.10, 165)     # sacrum
    c.mirrored(0.22, 0.70, 0.06, 0.06, 185)   # femoral heads


def _paint_neck(c: _Canvas) -> None:
    c.ellipse(0.5, 0.5, 0.22, 0.46, 95)       # soft tissue of the neck
    c.ellipse(0.5, 0.5, 0.05, 0.44, 160)      # cervical spine
    c.ellipse(0.5, 0.5, 0.025, 0.40, 30)      # airway (dark)
    c.mirrored(0.37, 0.62, 0.04, 0.08, 125)   # thyroid lobes


_ORGAN_PAINTERS = {
    "chest": _paint_chest, "head": _paint_head, "abdomen": _paint_abdomen, "pelvis": _paint_pelvis, "neck": _paint_neck,
}


# --- questions -----------------------------------------------------------------------------


def _questions(scene: dict, rng: np.random.Generator, spec: dict = DOMAINS["source"]) -> list[dict]:
    """The 4-5 question/answer pairs of one scene (see the module docstring)."""
    organ, lesions, t = scene["organ"], scene["lesions"], spec["templates"]
    asked_organ = organ if rng.random() < 0.5 else str(rng.choice([o for o in spec["organs"] if o != organ]))
    out = [
        _qa(rng, t, "pres", "PRES", "CLOSED", _yes_no(lesions)),
        _qa(rng, t, "organ_closed", "ORGAN", "CLOSED", _yes_no(asked_organ == organ), organ=asked_organ),
        _qa(rng, t, "organ_open", "ORGAN", "OPEN", organ),
        _qa(rng, t, "count", "COUNT", "OPEN", str(len(lesions))),
    ]
    if len(lesions) == 1:
        side = lesions[0]["side"]
        if rng.random() < 0.5:
            asked_side = side if rng.random() < 0.5 else ("right" if side == "left" else "left")
            out.append(_qa(rng, t, "side_closed", "POS", "CLOSED", _yes_no(asked_side == side), side=asked_side))
        else:
            out.append(_qa(rng, t, "side_open", "POS", "OPEN", spec["side_answer"].format(side=side)))
    return out


def _qa(
    rng: np.random.Generator, templates: dict, kind: str, question_type: str, answer_type: str, answer: str, **fill
) -> dict:
    para = bool(rng.random() < _PARAPHRASE_RATE)
    return {
        "question": templates[kind][int(para)].format(**fill),
        "answer": answer,
        "answer_type": answer_type,
        "question_type": question_type,
        "para": para,
    }


def _yes_no(flag) -> str:
    return "yes" if flag else "no"


_ORGAN_CODES.update({"pelvis": "PELVIS", "neck": "NECK"})


def _annotation(qid: int, image_name: str, scene: dict, qa: dict, split: str) -> dict:
    """One record with the fields (and field order) of the MEVF VQA-RAD files."""
    phrase = "para" if qa["para"] else "freeform"
    return {
        "qid": qid,
        "image_name": image_name,
        "image_organ": _ORGAN_CODES[scene["organ"]],
        "answer": qa["answer"],
        "answer_type": qa["answer_type"],
        "question_type": qa["question_type"],
        "question": qa["question"],
        "phrase_type": phrase if split == "train" else f"test_{phrase}",
    }


# --- files ---------------------------------------------------------------------------------


def _check_params(n_train_images, n_test_images, image_size, seed, domain="source", task="vqa") -> dict:
    if domain not in DOMAINS:
        raise ConfigError(f"demo domain {domain!r} is not one of {', '.join(DOMAINS)}: set dataset.domain to one of them")
    if task not in TASKS:
        raise ConfigError(f"demo task {task!r} is not one of {', '.join(TASKS)}")
    params = {"n_train_images": n_train_images, "n_test_images": n_test_images, "image_size": image_size, "seed": seed}
    for name, value in params.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ConfigError(f"demo {name} must be an integer, got {value!r}")
    if n_train_images < 1 or n_test_images < 1:
        raise ConfigError(f"demo needs at least 1 train and 1 test image, got {n_train_images} and {n_test_images}")
    if not 32 <= image_size <= 1024:
        raise ConfigError(f"demo image_size must be between 32 and 1024 pixels, got {image_size}")
    if seed < 0:
        raise ConfigError(f"demo seed must be >= 0, got {seed}")
    # a VQA set's meta says no task: the sets generated before report domains existed stay complete
    return {**{k: int(v) for k, v in params.items()}, "domain": domain, **({"task": task} if task != "vqa" else {})}


def _meta(params: dict) -> dict:
    report = {"report_version": REPORT_VERSION} if params.get("task") == "report" else {}  # the reports' wording
    return {"generator": "medft.data.demo", "version": DEMO_VERSION, **params, **report}


def _is_complete(root: Path, meta: dict) -> bool:
    """True if ``root`` holds a finished demo set made with exactly these parameters."""
    try:
        with open(root / META_FILE, encoding="utf-8") as f:
            if json.load(f) != meta:
                return False
        n_images = sum(1 for p in os.scandir(root / IMAGE_DIR) if p.name.endswith(".png"))
    except (OSError, ValueError):
        return False
    expected = meta["n_train_images"] + meta["n_test_images"]
    files = [ANNOTATION_FILE] if meta.get("task") == "report" else SPLIT_FILES.values()
    return n_images == expected and all((root / name).is_file() for name in files)


def _check_replaceable(root: Path) -> None:
    """Refuse to overwrite a folder that is not (or not only) a demo dataset."""
    if not root.exists():
        return
    if not root.is_dir():
        raise DataError(f"demo dataset path {root} is a file: pass a new or empty folder")
    entries = set(os.listdir(root))
    if META_FILE not in entries and entries - _DEMO_ENTRIES:
        others = ", ".join(sorted(entries - _DEMO_ENTRIES)[:3])
        raise DataError(
            f"demo dataset folder {root} holds other files ({others}): pass a new or empty folder"
        )


def _move_into_place(tmp: Path, root: Path, meta: dict) -> None:
    """Rename the freshly generated ``tmp`` to ``root``, replacing an outdated demo set."""
    old = None
    if root.exists():
        old = root.with_name(f"{root.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(root, old)
    try:
        os.replace(tmp, root)
    except OSError:
        # Another process put a dataset there in the meantime; fine if it is the same one.
        if not _is_complete(root, meta):
            raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _write_json(path: Path, data) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
