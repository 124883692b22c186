"""``medft ask RUN_DIR image=PATH question="..."``: answer questions about an image with a trained run.

    medft ask logs/runs/lora_vqa_rad_blip_tiny/<time> image=chest.png question="is there a lesion?"
    medft ask RUN_DIR questions=questions.jsonl          # lines {"image": PATH, "question": "..."}
    medft ask RUN_DIR questions=q.jsonl image=chest.png  # image= is the default of lines without one
    medft ask logs/runs/layernorm_iu_xray_blip_report_tiny/<time> image=cxr.png   # report models: the report

The run's model and trained parameters are rebuilt as ``medft eval`` rebuilds them
(:func:`medft.training.pipeline.load_run_model`) and answers are decoded with the run's own ``eval.generate``
settings. One question prints its answer; a questions file prints one JSON line per question
(``image``, ``question``, ``answer``). Images are read as ``medft train`` reads them (any mode -> RGB).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from medft.util.errors import ConfigError

DEFAULT_GENERATE = {"max_new_tokens": 8, "num_beams": 1, "min_new_tokens": 1}


def run_generate_kwargs(run_dir: Path, task: str) -> dict[str, Any]:
    """The run's ``eval.generate`` (plain values from its config), else medft's defaults."""
    from omegaconf import OmegaConf

    from medft.config.resolvers import register_resolvers

    register_resolvers()
    from medft.runs.trust import read_run_config

    cfg = OmegaConf.create(read_run_config(run_dir))  # bounded, parsed, unsafe resolvers defused
    try:
        node = OmegaConf.select(cfg, "eval.generate")
        values = OmegaConf.to_container(node, resolve=True) if node is not None else {}
    except Exception:  # noqa: BLE001 - an old or odd config: fall back to the defaults
        values = {}
    out = dict(DEFAULT_GENERATE, **{k: v for k, v in (values or {}).items() if isinstance(v, (int, float, str, bool))})
    if task == "report" and "max_new_tokens" not in (values or {}):
        out["max_new_tokens"] = 60
    return out


def run_task(run: str | Path) -> str:
    """``vqa`` or ``report``: the run's dataset task, read from its config as plain YAML."""
    from medft.runs.trust import read_run_config
    from medft.training.pipeline import resolve_run

    run_dir, _ = resolve_run(run)
    cfg = read_run_config(run_dir)
    return str((cfg.get("dataset") or {}).get("task") or "vqa")


def read_questions(path: Path, default_image: str | None) -> list[dict[str, str]]:
    if not path.is_file():
        raise ConfigError(f"questions={path}: no such file (JSON lines with \"question\" and \"image\")")
    items = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            raise ConfigError(f"{path}:{n} is not a JSON line: write {{\"image\": PATH, \"question\": \"...\"}}") from None
        if not isinstance(item, dict) or not item.get("question"):
            raise ConfigError(f"{path}:{n} has no \"question\"")
        image = item.get("image") or default_image
        if not image:
            raise ConfigError(f"{path}:{n} has no \"image\" and no image= was given")
        items.append({"image": str(image), "question": str(item["question"])})
    if not items:
        raise ConfigError(f"questions={path} holds no questions")
    return items


def ask(run: str | Path, items: list[dict[str, str]], batch_size: int = 16) -> list[dict[str, str]]:
    """Answer ``items`` (``image``, and ``question`` for VQA models) with the run's model."""
    from medft.data.images import load_rgb
    from medft.training.pipeline import load_run_model

    images = {item["image"]: load_rgb(Path(item["image"]).expanduser()) for item in items}  # before the model
    loaded = load_run_model(run)
    net = loaded["net"]
    kwargs = run_generate_kwargs(loaded["run_dir"], net.task)
    answers: list[str] = []
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        if net.task == "report":
            records = [{"id": str(i), "report": "", "image": it["image"], "pil_image": images[it["image"]]}
                       for i, it in enumerate(chunk)]
        else:
            records = [{"id": str(i), "question": it["question"], "answer": "", "answer_type": "OPEN", "image": it["image"],
                        "pil_image": images[it["image"]]} for i, it in enumerate(chunk)]
        answers.extend(net.generate(net.collate(records), **kwargs))
    key = "report" if net.task == "report" else "answer"
    return [{**item, key: answer} for item, answer in zip(items, answers)]


def main(args: list[str] | None = None) -> None:
    from medft.training.pipeline import parse_run_args

    args = sys.argv[1:] if args is None else list(args)
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return
    run, opts = parse_run_args(args, "ask", ("image", "question", "questions"))
    task = run_task(run)
    if opts.get("questions"):
        items = read_questions(Path(opts["questions"]).expanduser(), opts.get("image"))
    elif opts.get("image"):
        items = [{"image": opts["image"], "question": opts.get("question", "")}]
    else:
        raise ConfigError("give image=PATH and question=\"...\" (or questions=FILE.jsonl): medft ask RUN_DIR image=x.png question=\"...\"")
    if task == "vqa" and not all(item["question"] for item in items):
        raise ConfigError("this run answers questions: add question=\"...\" (report runs take image= alone)")
    results = ask(run, items)
    if opts.get("questions"):
        for row in results:
            print(json.dumps(row))
        return
    row = results[0]
    if "report" in row:
        print(row["report"])
    else:
        print(row["answer"])
